// libFuzzer target: s5::config::parse (daemon/config.hpp) on arbitrary text.
// It must never crash or throw; an error names a path and a reason on one
// line; an accepted config satisfies what docs/design.md §6 and config.hpp
// promise. Violations call __builtin_trap().

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "config.hpp"

namespace {

namespace wire = s5::wire;
using namespace s5::config;

#define CHECK(cond)                    \
    do {                               \
        if (!(cond)) __builtin_trap(); \
    } while (0)

bool valid_name(const std::string& n) {
    if (n.empty() || n.size() > 64) return false;
    for (char c : n)
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    return true;
}

bool one_line(const std::string& s) {
    for (unsigned char c : s)
        if (c < 0x20 || c == 0x7f) return false;
    return true;
}

void check_ip(const wire::Endpoint& e) {
    CHECK(e.family == AF_INET || e.family == AF_INET6);
    CHECK(!e.is_unspecified());
}

void check_config(const Config& c) {
    CHECK(!c.servers.empty());
    std::set<std::string> names;
    for (const Server& s : c.servers) {
        CHECK(valid_name(s.name));
        CHECK(names.insert(s.name).second);  // unique
        check_ip(s.endpoint);
        CHECK(s.endpoint.port != 0);
        CHECK(c.find_server(s.name) == &s);
        CHECK(c.find_server(s.endpoint) != nullptr);
        if (s.auth.method == AuthMethod::Username) {
            CHECK(!s.auth.username.empty() && s.auth.username.size() <= 255);
            CHECK(s.auth.password_file.empty() || s.auth.password_file[0] == '/');
        } else {
            CHECK(s.auth.username.empty() && s.auth.password_file.empty());
        }
        CHECK(s.auth.password.empty());  // parse() reads no files
        if (s.relay_address_override) {
            check_ip(*s.relay_address_override);
            CHECK(s.relay_address_override->port == 0);
        }
    }
    std::set<std::pair<std::vector<uint8_t>, unsigned>> dests;
    for (const Route& r : c.routes) {
        const wire::Endpoint& n = r.destination.network;
        CHECK(n.family == AF_INET || n.family == AF_INET6);
        const unsigned max = n.family == AF_INET ? 32 : 128;
        CHECK(r.destination.length <= max);
        // Host bits are zero.
        for (unsigned bit = r.destination.length; bit < max; ++bit) CHECK(!(n.ip[bit / 8] & (0x80u >> (bit % 8))));
        CHECK(dests.insert({n.ip_bytes(), r.destination.length}).second);  // unique
        CHECK(!r.servers.empty());
        std::set<std::string> seen;
        for (const std::string& name : r.servers) {
            CHECK(c.find_server(name) != nullptr);  // route servers exist
            CHECK(seen.insert(name).second);
        }
        // The network is in its own prefix, and route_for picks a route at
        // least as specific.
        CHECK(r.destination.contains(n));
        const Route* best = c.route_for(n);
        CHECK(best != nullptr && best->destination.length >= r.destination.length);
        CHECK(best->destination.contains(n));
    }
    CHECK(c.pool.min_idle <= c.pool.max_associations);
    CHECK(c.pool.max_associations >= 1 && c.pool.max_associations <= 1000000);
    CHECK(c.pool.max_idle_age_s >= 1 && c.pool.max_idle_age_s <= 86400);
    CHECK(c.keepalive.idle_s >= 1 && c.keepalive.idle_s <= 32767);
    CHECK(c.keepalive.interval_s >= 1 && c.keepalive.interval_s <= 32767);
    CHECK(c.keepalive.count >= 1 && c.keepalive.count <= 127);
    CHECK(c.lease_grace_s <= 86400);
    CHECK(c.limits.leases_per_uid >= 1 && c.limits.leases_per_uid <= c.limits.leases_total);
    CHECK(c.limits.leases_total <= 1000000);
    for (const std::string& g : c.allowed_groups) CHECK(!g.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    Result<Config> r = parse(text);  // an exception escaping here aborts: a finding
    if (!r.ok()) {
        CHECK(!r.error.path.empty() && !r.error.reason.empty());
        CHECK(one_line(r.error.path) && one_line(r.error.reason));
        return 0;
    }
    check_config(*r.value);
    // Parsing is deterministic.
    Result<Config> again = parse(text);
    CHECK(again.ok() && again.value->servers.size() == r.value->servers.size() &&
          again.value->routes.size() == r.value->routes.size());
    return 0;
}
