#include "shim_log.hpp"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <set>
#include <string>

#include "real_calls.hpp"

namespace s5::socksify {

bool debug_enabled() {
    static const bool on = [] {
        const char* v = getenv("S5SOCKSIFY_DEBUG");
        return v && *v && strcmp(v, "0") != 0;
    }();
    return on;
}

namespace {

std::string format(const char* fmt, va_list ap) {
    char buf[512];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    std::string s = "s5socksify: ";
    s.append(buf, n < 0 ? 0 : (static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n) : sizeof buf - 1));
    s += '\n';
    return s;
}

void emit(const std::string& s) {
    Inside in;
    (void)real::write(2, s.data(), s.size());
}

}  // namespace

void note(const char* fmt, ...) {
    if (!debug_enabled()) return;
    va_list ap;
    va_start(ap, fmt);
    std::string s = format(fmt, ap);
    va_end(ap);
    emit(s);
}

void warn_once(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = format(fmt, ap);
    va_end(ap);
    static std::mutex m;
    static auto* said = new std::set<std::string>;
    {
        std::lock_guard<std::mutex> g(m);
        if (said->size() > 64 || !said->insert(s).second) return;
    }
    emit(s);
}

}  // namespace s5::socksify
