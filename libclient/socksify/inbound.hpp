// What the shim does with one datagram that arrived on a socket it proxies
// (pure: no I/O, a fuzz target). A datagram from a current relay of one of
// the socket's leases is SOCKS-framed: its header is stripped and its
// sender is the one the header names. Any other datagram came straight from
// its sender (a destination routed NONE answers directly) and is delivered
// as it is -- unless the application connect()ed the socket to a proxied
// peer, which only ever answers through a relay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "wire.hpp"

namespace s5::socksify {

struct Inbound {
    enum class Kind {
        Deliver,       // bytes [offset, offset + length) from `sender`
        Drop,          // malformed, fragmented, or not from the connected peer
        NotFromRelay,  // a direct datagram on a socket connected to a proxied peer
    };
    Kind kind = Kind::Drop;
    size_t offset = 0;
    size_t length = 0;
    s5::wire::Endpoint sender;   // as the application must see it (see `family`)
};

// `from`: the datagram's source; `relays`: the socket's relays, unmapped
// (a.b.c.d, never ::ffff:a.b.c.d); `peer`: the proxied peer the socket is
// connected to, unmapped, or nullptr; `family`: the socket's (an AF_INET6
// socket sees IPv4 senders as ::ffff:a.b.c.d; an AF_INET socket cannot be
// shown an IPv6 sender: Drop).
Inbound classify_inbound(const s5::wire::Endpoint& from, std::span<const uint8_t> datagram,
                         std::span<const s5::wire::Endpoint> relays, const s5::wire::Endpoint* peer, int family);

// `e` as a socket of `family` names it: IPv4 on AF_INET6 as ::ffff:a.b.c.d.
// Unset when it cannot be (IPv6 on an AF_INET socket).
s5::wire::Endpoint as_seen_by(const s5::wire::Endpoint& e, int family);

}  // namespace s5::socksify
