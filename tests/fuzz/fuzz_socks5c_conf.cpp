// libFuzzer target: s5::socks5c::parse (protocol/socks5c_conf.hpp) on
// arbitrary text, the whole input being the file. It must never crash,
// throw, leak or loop; an error names the file and a line within the input,
// on one line; an accepted file satisfies what socks5c_conf.hpp promises,
// and matching a few destinations (each record's own network among them)
// with a resolver returning a fixed name obeys the matching rules.
// Violations call __builtin_trap().

#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "socks5c_conf.hpp"

namespace {

namespace wire = s5::wire;
using namespace s5::socks5c;

#define CHECK(cond)                    \
    do {                               \
        if (!(cond)) __builtin_trap(); \
    } while (0)

constexpr std::string_view kFile = "/etc/socks5c.conf";
constexpr std::string_view kName = "Host.Lab.Example.COM.";

bool one_line(const std::string& s) {
    return std::none_of(s.begin(), s.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c < 0x20 || c == 0x7f;
    });
}

void check_target(const Target& t) {
    if (t.direct) return;
    CHECK(t.server.family == AF_INET || t.server.family == AF_INET6);
    CHECK(!t.server.is_unspecified());
    CHECK(t.server.port != 0);
}

// ::ffff:a.b.c.d as a.b.c.d, as match() sees it.
wire::Endpoint unmapped(const wire::Endpoint& e) {
    if (e.family != AF_INET6 || e.ip[10] != 0xff || e.ip[11] != 0xff ||
        !std::all_of(e.ip.begin(), e.ip.begin() + 10, [](uint8_t b) { return b == 0; }))
        return e;
    return *wire::Endpoint::from_bytes({e.ip.data() + 12, 4}, e.port);
}

wire::Endpoint ip(const char* text) { return *wire::Endpoint::parse_ip(text, 7); }

// match() with a resolver that counts: at most one call, none without
// fragments; the route is one of the records or the implied default.
Route checked_match(const Socks5cConf& c, const wire::Endpoint& dst, std::string_view name) {
    int calls = 0;
    const ResolveFn resolve = [&](const wire::Endpoint& e) -> std::optional<std::string> {
        ++calls;
        CHECK(e.family == AF_INET || e.family == AF_INET6);
        return std::string(name);
    };
    const Route r = c.match(dst, resolve);
    CHECK(calls <= 1);
    if (!c.has_fragments() || dst.family == 0) CHECK(calls == 0);
    check_target(r.target);
    if (r.line == 0) {
        CHECK(r.direct() && !r.by_fragment);
    } else if (r.by_fragment) {
        std::string n(name);
        std::transform(n.begin(), n.end(), n.begin(), [](char ch) {
            return ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch - 'A' + 'a') : ch;
        });
        if (!n.ends_with('.')) n += '.';
        bool found = false;
        for (const FragmentRecord& f : c.fragments())
            found = found || (f.line == r.line && f.target == r.target && n.find(f.fragment) != std::string::npos);
        CHECK(found);
    } else {
        bool found = false;
        const wire::Endpoint as_matched = unmapped(dst);
        for (const AddressRecord& a : c.addresses())
            found = found || (a.line == r.line && a.target == r.target && a.contains(as_matched));
        CHECK(found);
    }
    return r;
}

void check_conf(const Socks5cConf& c, size_t lines) {
    for (const AddressRecord& a : c.addresses()) {
        CHECK(a.network.family == AF_INET || a.network.family == AF_INET6);
        const unsigned max = a.network.family == AF_INET ? 32 : 128;
        CHECK(a.length <= max);
        CHECK(a.network.port == 0);
        for (unsigned bit = a.length; bit < max; ++bit) CHECK(!(a.network.ip[bit / 8] & (0x80u >> (bit % 8))));
        CHECK(a.line >= 1 && a.line <= lines);
        check_target(a.target);
        CHECK(a.contains(a.network));
        // Without a name, the record's own network gets a record at least as
        // specific (the longest prefix wins).
        const Route r = c.match(a.network, ResolveFn{});
        CHECK(!r.by_fragment && r.line != 0);
        unsigned best = 0;
        for (const AddressRecord& b : c.addresses())
            if (b.line == r.line) best = b.length;
        CHECK(best >= a.length);
        checked_match(c, a.network, kName);
    }
    for (const FragmentRecord& f : c.fragments()) {
        CHECK(!f.fragment.empty() && f.fragment.size() <= kMaxFragmentLength);
        CHECK(f.line >= 1 && f.line <= lines);
        check_target(f.target);
        for (char ch : f.fragment) CHECK(!(ch >= 'A' && ch <= 'Z'));
        // Its own text as the name: a fragment at least as long wins.
        const Route r = checked_match(c, ip("192.0.2.1"), f.fragment);
        CHECK(r.by_fragment);
        for (const FragmentRecord& g : c.fragments())
            if (g.line == r.line) CHECK(g.fragment.size() >= f.fragment.size());
    }
    for (const char* dst : {"192.0.2.1", "10.1.2.3", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::",
                            "::ffff:10.1.2.3", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"})
        checked_match(c, ip(dst), kName);
    checked_match(c, ip("2001:db8::1"), "");
    checked_match(c, wire::Endpoint{}, kName);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
    Result r = parse(text, kFile);  // an exception escaping here aborts: a finding
    if (!r.ok()) {
        CHECK(r.error.file == kFile);
        CHECK(r.error.line >= 1 && r.error.line <= lines);
        CHECK(!r.error.reason.empty() && one_line(r.error.reason));
        CHECK(r.error.err == 0);
        const std::string s = r.error.to_string();
        CHECK(s.starts_with(std::string(kFile) + ":" + std::to_string(r.error.line) + ": "));
        return 0;
    }
    check_conf(*r.value, lines);
    // Parsing is deterministic.
    Result again = parse(text, kFile);
    CHECK(again.ok() && again.value->addresses().size() == r.value->addresses().size() &&
          again.value->fragments().size() == r.value->fragments().size());
    return 0;
}
