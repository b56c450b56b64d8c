#include "relay_policy.hpp"

#include <sys/socket.h>

#include <array>

namespace s5d {

namespace {

using s5::wire::Endpoint;

// Mapped spellings (::ffff:a.b.c.d) are judged as the IPv4 address they are.

bool is_multicast(const Endpoint& raw) {
    const Endpoint e = raw.unmapped();
    if (e.family == AF_INET) return (e.ip[0] & 0xf0) == 0xe0;   // 224.0.0.0/4
    return e.family == AF_INET6 && e.ip[0] == 0xff;              // ff00::/8
}

bool is_broadcast(const Endpoint& raw) {
    const Endpoint e = raw.unmapped();
    return e.family == AF_INET && e.ip[0] == 255 && e.ip[1] == 255 && e.ip[2] == 255 && e.ip[3] == 255;
}

}  // namespace

std::optional<std::string> relay_refusal(const Endpoint& relay, const Endpoint& server) {
    if (relay.family != server.family) return "is not of the server's address family";
    if (relay.is_unspecified() || relay.unmapped().is_unspecified()) return "is unspecified";
    if (is_multicast(relay)) return "is multicast";
    if (is_broadcast(relay)) return "is the broadcast address";
    if (relay.is_loopback() && !server.is_loopback()) return "is on loopback, and the server is not";
    return std::nullopt;
}

}  // namespace s5d
