// Which relay addresses (a server's BND.ADDR in its UDP ASSOCIATE reply)
// the broker hands to applications. A configured SOCKS server is trusted to
// relay, not to aim every client's datagrams anywhere it likes: a relay on
// loopback (when the server is not), multicast, broadcast, unspecified, or
// of another address family than the server is refused as a protocol error
// of that association. relay_address_override is the explicit way out for a
// server whose real relay address is none of its business to tell (NAT).
// Pure: no I/O.
#pragma once

#include <optional>
#include <string>

#include "wire.hpp"

namespace s5d {

// nullopt: acceptable; else why not ("is multicast", ...).
std::optional<std::string> relay_refusal(const s5::wire::Endpoint& relay, const s5::wire::Endpoint& server);

}  // namespace s5d
