// Logging: one line per event. To the journal with structured fields
// (S5_SERVER=, S5_LEASE=, S5_UID=) when stderr is the journal or the target
// is "journal", else to stderr. Level and target can be changed at run time
// (org.freedesktop.LogControl1, see log_control.cpp).
// Never pass a password or other secret to these functions.
#pragma once

#include <cstdarg>
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

void vemit(Level l, const Fields& fields, const char* fmt, va_list ap);

#define S5_LOG_FN(name, level)                                                                     \
    inline void name(const char* fmt, ...) __attribute__((format(printf, 1, 2)));                  \
    inline void name(const char* fmt, ...) {                                                       \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        vemit(level, {}, fmt, ap);                                                                 \
        va_end(ap);                                                                                \
    }                                                                                              \
    inline void name(const Fields& f, const char* fmt, ...) __attribute__((format(printf, 2, 3))); \
    inline void name(const Fields& f, const char* fmt, ...) {                                      \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        vemit(level, f, fmt, ap);                                                                  \
        va_end(ap);                                                                                \
    }
S5_LOG_FN(error, Level::Error)
S5_LOG_FN(warning, Level::Warning)
S5_LOG_FN(notice, Level::Notice)
S5_LOG_FN(info, Level::Info)
S5_LOG_FN(debug, Level::Debug)
#undef S5_LOG_FN

}  // namespace s5d::log
