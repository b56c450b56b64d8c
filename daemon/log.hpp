// Logging: one line per event. To the journal with structured fields
// (S5_SERVER=, S5_LEASE=, S5_UID=) when stderr is the journal or the target
// is "journal", else to stderr. Level and target can be changed at run time
// (org.freedesktop.LogControl1, see log_control.cpp).
// Never pass a password or other secret to these functions.
//
// Call the log_error() ... log_debug() macros at the end of this file.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace s5d::log {

// syslog priorities
enum class Level { Error = 3, Warning = 4, Notice = 5, Info = 6, Debug = 7 };
enum class Target { Auto, Console, Journal, Null };

void set_max_level(Level l);
Level max_level();
void set_target(Target t);
Target target();
void init_from_environment();                // JOURNAL_STREAM -> journal under Auto

// "debug" <-> Level::Debug, and the other syslog names; false if unknown.
bool parse_level(const std::string& s, Level& out);
std::string level_name(Level l);             // "err", "warning", ...
bool parse_target(const std::string& s, Target& out);
std::string target_name(Target t);

// Journal fields of one event ("S5_LEASE", "42").
using Fields = std::vector<std::pair<const char*, std::string>>;

// Where an event was logged from: the journal's CODE_FILE=, CODE_LINE=
// and CODE_FUNC= name the caller, not this file (hence the macros below).
struct Site {
    const char* file;
    int line;
    const char* func;
};

void emit(Level l, Site site, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
void emit(Level l, Site site, const Fields& fields, const char* fmt, ...) __attribute__((format(printf, 4, 5)));

}  // namespace s5d::log

// log_error("fmt", ...) or log_error(fields, "fmt", ...), and so on for
// each level: printf-checked, with the call site recorded.
#define S5_LOG_SITE (::s5d::log::Site{__FILE__, __LINE__, __func__})
#define log_error(...) ::s5d::log::emit(::s5d::log::Level::Error, S5_LOG_SITE, __VA_ARGS__)
#define log_warning(...) ::s5d::log::emit(::s5d::log::Level::Warning, S5_LOG_SITE, __VA_ARGS__)
#define log_notice(...) ::s5d::log::emit(::s5d::log::Level::Notice, S5_LOG_SITE, __VA_ARGS__)
#define log_info(...) ::s5d::log::emit(::s5d::log::Level::Info, S5_LOG_SITE, __VA_ARGS__)
#define log_debug(...) ::s5d::log::emit(::s5d::log::Level::Debug, S5_LOG_SITE, __VA_ARGS__)
