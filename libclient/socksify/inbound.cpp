#include "inbound.hpp"

#include <sys/socket.h>

#include <algorithm>

namespace s5::socksify {

using s5::wire::Endpoint;

Endpoint as_seen_by(const Endpoint& e, int family) {
    const Endpoint u = e.unmapped();
    if (family == AF_INET) return u.family == AF_INET ? u : Endpoint{};
    if (u.family == AF_INET6) return u;
    Endpoint m;
    m.family = AF_INET6;
    m.ip[10] = 0xff;
    m.ip[11] = 0xff;
    std::copy_n(u.ip.begin(), 4, m.ip.begin() + 12);
    m.port = u.port;
    return m;
}

Inbound classify_inbound(const Endpoint& from, std::span<const uint8_t> datagram, std::span<const Endpoint> relays,
                         const Endpoint* peer, int family) {
    Inbound v;
    const Endpoint src = from.unmapped();
    const bool from_relay = src.family != 0 && std::find(relays.begin(), relays.end(), src) != relays.end();
    if (!from_relay) {
        if (peer) {
            v.kind = Inbound::Kind::NotFromRelay;
            return v;
        }
        v.sender = as_seen_by(src, family);
        if (v.sender.family == 0) return v;  // Drop
        v.kind = Inbound::Kind::Deliver;
        v.length = datagram.size();
        return v;
    }
    auto h = s5::wire::decode_udp_header(datagram);
    if (!h || h->frag != 0) return v;  // Drop: we never fragment, so no reply is a fragment
    const Endpoint sender = h->src.unmapped();
    if (peer && !(sender == *peer)) return v;  // a connected socket hears its peer only
    v.sender = as_seen_by(sender, family);
    if (v.sender.family == 0) return v;
    v.kind = Inbound::Kind::Deliver;
    v.offset = h->header_len;
    v.length = datagram.size() - h->header_len;
    return v;
}

}  // namespace s5::socksify
