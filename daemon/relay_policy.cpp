#include "relay_policy.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>

namespace s5d {

namespace {

using s5::wire::Endpoint;

// ::ffff:a.b.c.d as a.b.c.d, so that a mapped spelling is judged as IPv4.
Endpoint as_ipv4_if_mapped(const Endpoint& e) {
    static constexpr std::array<uint8_t, 12> kMapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (e.family != AF_INET6 || !std::equal(kMapped.begin(), kMapped.end(), e.ip.begin())) return e;
    Endpoint v4;
    v4.family = AF_INET;
    std::copy(e.ip.begin() + 12, e.ip.end(), v4.ip.begin());
    v4.port = e.port;
    return v4;
}

bool is_loopback(const Endpoint& raw) {
    const Endpoint e = as_ipv4_if_mapped(raw);
    if (e.family == AF_INET) return e.ip[0] == 127;
    static constexpr std::array<uint8_t, 16> kOne{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return e.family == AF_INET6 && std::equal(kOne.begin(), kOne.end(), e.ip.begin());
}

bool is_multicast(const Endpoint& raw) {
    const Endpoint e = as_ipv4_if_mapped(raw);
    if (e.family == AF_INET) return (e.ip[0] & 0xf0) == 0xe0;   // 224.0.0.0/4
    return e.family == AF_INET6 && e.ip[0] == 0xff;              // ff00::/8
}

bool is_broadcast(const Endpoint& raw) {
    const Endpoint e = as_ipv4_if_mapped(raw);
    return e.family == AF_INET && e.ip[0] == 255 && e.ip[1] == 255 && e.ip[2] == 255 && e.ip[3] == 255;
}

}  // namespace

std::optional<std::string> relay_refusal(const Endpoint& relay, const Endpoint& server) {
    if (relay.family != server.family) return "is not of the server's address family";
    if (relay.is_unspecified() || as_ipv4_if_mapped(relay).is_unspecified()) return "is unspecified";
    if (is_multicast(relay)) return "is multicast";
    if (is_broadcast(relay)) return "is the broadcast address";
    if (is_loopback(relay) && !is_loopback(server)) return "is on loopback, and the server is not";
    return std::nullopt;
}

}  // namespace s5d
