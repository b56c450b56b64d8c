#include "log.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace s5d::log {
namespace {

Level g_max = Level::Info;
bool g_prefix = false;

const char* level_name(Level l) {
    switch (l) {
        case Level::Error: return "error";
        case Level::Warning: return "warning";
        case Level::Notice: return "notice";
        case Level::Info: return "info";
        case Level::Debug: return "debug";
    }
    return "?";
}

}  // namespace

void set_max_level(Level l) { g_max = l; }
Level max_level() { return g_max; }

void init_from_environment() { g_prefix = std::getenv("JOURNAL_STREAM") != nullptr; }

void vemit(Level l, const char* fmt, va_list ap) {
    if (static_cast<int>(l) > static_cast<int>(g_max)) return;
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    // One event, one line: a peer-supplied string must not forge more lines.
    for (char* p = buf; *p; ++p)
        if (*p == '\n' || *p == '\r') *p = ' ';
    if (g_prefix)
        std::fprintf(stderr, "<%d>%s\n", static_cast<int>(l), buf);
    else
        std::fprintf(stderr, "s5brokerd[%s]: %s\n", level_name(l), buf);
}

void emit(Level l, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vemit(l, fmt, ap);
    va_end(ap);
}

}  // namespace s5d::log
