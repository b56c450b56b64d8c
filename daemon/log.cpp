#include "log.hpp"

#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "one_line.hpp"

#include <array>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace s5d::log {
namespace {

Level g_max = Level::Info;
Target g_target = Target::Auto;
bool g_stderr_is_journal = false;

constexpr std::array<const char*, 8> kLevelNames{"emerg", "alert", "crit", "err",
                                                 "warning", "notice", "info", "debug"};

// JOURNAL_STREAM=dev:ino names the journal stream systemd connected to
// stderr; it only counts if stderr is still that stream.
bool stderr_is_journal() {
    const char* js = std::getenv("JOURNAL_STREAM");
    if (!js) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st;
    return fstat(2, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

bool to_journal() {
    return g_target == Target::Journal || (g_target == Target::Auto && g_stderr_is_journal);
}

}  // namespace

void set_max_level(Level l) { g_max = l; }
Level max_level() { return g_max; }
void set_target(Target t) { g_target = t; }
Target target() { return g_target; }
void init_from_environment() { g_stderr_is_journal = stderr_is_journal(); }

bool parse_level(const std::string& s, Level& out) {
    for (size_t i = 0; i < kLevelNames.size(); ++i) {
        if (s != kLevelNames[i]) continue;
        // emerg..err all map to our most severe level.
        out = i <= 3 ? Level::Error : static_cast<Level>(i);
        return true;
    }
    return false;
}

std::string level_name(Level l) { return kLevelNames[static_cast<size_t>(l)]; }

bool parse_target(const std::string& s, Target& out) {
    if (s == "auto") out = Target::Auto;
    else if (s == "console") out = Target::Console;
    else if (s == "journal") out = Target::Journal;
    else if (s == "null") out = Target::Null;
    else return false;
    return true;
}

std::string target_name(Target t) {
    switch (t) {
        case Target::Auto: return "auto";
        case Target::Console: return "console";
        case Target::Journal: return "journal";
        case Target::Null: return "null";
    }
    return "auto";
}

namespace {

// meson compiles from the build directory, so __FILE__ is "../daemon/x.cpp":
// the journal gets the path inside the source tree.
const char* source_path(const char* file) {
    while (std::strncmp(file, "../", 3) == 0) file += 3;
    return file;
}

void vemit(Level l, Site site, const Fields& fields, const char* fmt, va_list ap) {
    if (static_cast<int>(l) > static_cast<int>(g_max) || g_target == Target::Null) return;
    char raw[1024];
    vsnprintf(raw, sizeof raw, fmt, ap);
    // One event, one line: a peer-supplied string must not forge more lines.
    const std::string line = s5::one_line(raw);
    const char* buf = line.c_str();
    if (to_journal()) {
        std::vector<std::string> items{std::string("MESSAGE=") + buf,
                                       "PRIORITY=" + std::to_string(static_cast<int>(l)),
                                       "SYSLOG_IDENTIFIER=s5brokerd",
                                       std::string("CODE_FILE=") + source_path(site.file),
                                       "CODE_LINE=" + std::to_string(site.line),
                                       std::string("CODE_FUNC=") + site.func};
        for (const auto& [k, v] : fields) items.push_back(std::string(k) + "=" + v);
        std::vector<iovec> iov;
        for (auto& s : items) iov.push_back({s.data(), s.size()});
        if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0) return;
        // No journal after all: fall through to stderr.
    }
    // " [K=V K=V]" after the message. Appended piece by piece: GCC 12 at -O3
    // warns (-Wrestrict, a false positive) on "literal" + std::string&&.
    std::string extra;
    for (const auto& [k, v] : fields) {
        extra += extra.empty() ? " [" : " ";
        extra += k;
        extra += '=';
        extra += v;
    }
    if (!extra.empty()) extra += ']';
    std::fprintf(stderr, "s5brokerd[%s]: %s%s\n", kLevelNames[static_cast<size_t>(l)], buf, extra.c_str());
}

}  // namespace

void emit(Level l, Site site, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vemit(l, site, {}, fmt, ap);
    va_end(ap);
}

void emit(Level l, Site site, const Fields& fields, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vemit(l, site, fields, fmt, ap);
    va_end(ap);
}

}  // namespace s5d::log
