// Logging to stderr, one line per event. Under systemd (JOURNAL_STREAM set)
// each line carries a "<N>" syslog priority prefix that journald parses.
// Never pass a password or other secret to these functions.
#pragma once

#include <cstdarg>

namespace s5d::log {

enum class Level { Error = 3, Warning = 4, Notice = 5, Info = 6, Debug = 7 };

void set_max_level(Level l);
Level max_level();
void init_from_environment();                // JOURNAL_STREAM -> prefixes

void emit(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void vemit(Level l, const char* fmt, va_list ap);

#define S5_LOG_FN(name, level)                                                    \
    inline void name(const char* fmt, ...) __attribute__((format(printf, 1, 2))); \
    inline void name(const char* fmt, ...) {                                      \
        va_list ap;                                                               \
        va_start(ap, fmt);                                                        \
        vemit(level, fmt, ap);                                                    \
        va_end(ap);                                                               \
    }
S5_LOG_FN(error, Level::Error)
S5_LOG_FN(warning, Level::Warning)
S5_LOG_FN(notice, Level::Notice)
S5_LOG_FN(info, Level::Info)
S5_LOG_FN(debug, Level::Debug)
#undef S5_LOG_FN

}  // namespace s5d::log
