// libFuzzer target: the RFC 1928 UDP header (wire::decode_udp_header, used by
// socks5udp_recvfrom), the receive-side deframing of libclient/datagram.hpp,
// and s5socksify's verdict on an inbound datagram
// (libclient/socksify/inbound.hpp).
//
// Input layout:
//   byte 0    options: bits 0..3 pick the receive buffer length, bit 4
//             MSG_TRUNC, bit 5 MSG_PEEK, bit 6 send from a socket that is
//             not the relay (the datagram must be dropped)
//   rest      one datagram as a relay would send it
//
// Pure part: decode the datagram (and the whole input); if it decodes,
// re-encode the source endpoint and compare with the prefix it came from.
// Socket part: recv_deframed() has no pure core (the header is split across
// iovecs inside recvmsg()), so the datagram really goes over loopback UDP
// from a socket registered as a lease's relay, and what recv_deframed()
// returns is compared with what the pure decoder says.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <array>
#include <span>
#include <vector>

#include "datagram.hpp"
#include "inbound.hpp"
#include "lease_table.hpp"
#include "wire.hpp"

namespace {

namespace wire = s5::wire;

#define CHECK(cond)                    \
    do {                               \
        if (!(cond)) __builtin_trap(); \
    } while (0)

void check_pure(std::span<const uint8_t> in) {
    auto h = wire::decode_udp_header(in);
    if (!h) {
        // Exactly the documented reasons: short, RSV != 0, ATYP not 1/4.
        const bool known_atyp = in.size() >= 4 && (in[3] == wire::kAtypIPv4 || in[3] == wire::kAtypIPv6);
        const size_t need = known_atyp ? (in[3] == wire::kAtypIPv4 ? 10 : 22) : 0;
        CHECK(in.size() < 4 || in[0] != 0 || in[1] != 0 || !known_atyp || in.size() < need);
        return;
    }
    CHECK(in.size() >= 4 && in[0] == 0 && in[1] == 0);
    CHECK(h->frag == in[2]);
    CHECK(h->header_len <= in.size() && h->header_len <= wire::kUdpHeaderMax);
    if (in[3] == wire::kAtypIPv4) {
        CHECK(h->header_len == 10 && h->src.family == AF_INET);
    } else {
        CHECK(in[3] == wire::kAtypIPv6);
        CHECK(h->header_len == 22 && h->src.family == AF_INET6);
    }
    // Round trip: the encoder writes the same header with FRAG = 0.
    std::array<uint8_t, wire::kUdpHeaderMax> out{};
    const size_t n = wire::encode_udp_header(h->src, std::span<uint8_t, wire::kUdpHeaderMax>(out));
    CHECK(n == h->header_len);
    CHECK(out[2] == 0);
    CHECK(out[0] == in[0] && out[1] == in[1] && out[3] == in[3]);
    CHECK(std::memcmp(out.data() + 4, in.data() + 4, n - 4) == 0);
    // And decoding the re-encoded header gives the same endpoint.
    auto again = wire::decode_udp_header(std::span<const uint8_t>(out.data(), n));
    CHECK(again && again->src == h->src && again->header_len == n && again->frag == 0);
    // Trailing payload never changes the header.
    auto shorter = wire::decode_udp_header(in.first(h->header_len));
    CHECK(shorter && shorter->src == h->src && shorter->frag == h->frag);
    // sockaddr round trip of the source.
    sockaddr_storage ss;
    const size_t slen = h->src.to_sockaddr(ss);
    CHECK(slen == (h->src.family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)));
    auto back = wire::Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), slen);
    CHECK(back && *back == h->src);
}

// The shim's classify_inbound(): from the relay, from a stranger, with and
// without a connected peer, on both socket families. A delivered range lies
// inside the datagram, a relay's datagram is delivered exactly when it
// decodes unfragmented (and, connected, names the peer), a stranger's is
// delivered whole exactly when no peer is set.
void check_inbound(uint8_t opts, std::span<const uint8_t> dgram) {
    using s5::socksify::Inbound;
    const auto relay = *wire::Endpoint::parse_ip("127.0.0.1", 40000);
    const auto stranger = *wire::Endpoint::parse_ip("127.0.0.1", 40001);
    const std::array<wire::Endpoint, 1> relays{relay};
    const auto h = wire::decode_udp_header(dgram);
    const wire::Endpoint peer = h ? h->src.unmapped() : relay;
    for (int family : {AF_INET, AF_INET6}) {
        for (bool connected : {false, true}) {
            const bool from_relay = !(opts & 64);
            const wire::Endpoint* p = connected ? &peer : nullptr;
            auto v = s5::socksify::classify_inbound(from_relay ? relay : stranger, dgram, relays, p, family);
            if (v.kind == Inbound::Kind::Deliver) {
                CHECK(v.offset <= dgram.size() && v.length == dgram.size() - v.offset);
                CHECK(v.sender.family == family);
            }
            if (from_relay) {
                const bool ok = h && h->frag == 0 && (family == AF_INET6 || h->src.unmapped().family == AF_INET);
                CHECK((v.kind == Inbound::Kind::Deliver) == ok);
                if (ok) CHECK(v.offset == h->header_len);
            } else {
                CHECK(v.kind == (connected ? Inbound::Kind::NotFromRelay : Inbound::Kind::Deliver));
                if (!connected) CHECK(v.offset == 0);
            }
        }
    }
}

struct Rig {
    int relay = -1;     // sends as the relay of an active lease
    int stranger = -1;  // sends from another port: not a relay
    int app = -1;       // the application's socket, receives
    int lease[2] = {-1, -1};
    sockaddr_in app_addr{};
    s5::client::LeaseTable table;

    static int bound_udp(sockaddr_in& addr) {
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) std::abort();
        addr = {};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) std::abort();
        socklen_t len = sizeof addr;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) std::abort();
        int big = 1 << 20;
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        return fd;
    }

    Rig() {
        sockaddr_in relay_addr, other;
        relay = bound_udp(relay_addr);
        stranger = bound_udp(other);
        app = bound_udp(app_addr);
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, lease) < 0) std::abort();
        auto ep = wire::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&relay_addr), sizeof relay_addr);
        if (!ep || !table.add(lease[0], lease[0], &*ep)) std::abort();
        if (!table.is_current_relay(*ep)) std::abort();
    }
};

Rig& rig() {
    static Rig* r = new Rig;  // lives for the process; never a leak report
    return *r;
}

void check_socket_path(uint8_t opts, std::span<const uint8_t> dgram) {
    Rig& r = rig();
    static const size_t kLens[16] = {0, 1, 2, 9, 11, 12, 13, 21, 22, 23, 33, 64, 100, 1000, 4096, 65535};
    const size_t len = kLens[opts & 15];
    const bool trunc = opts & 16;
    const bool peek = opts & 32;
    const bool from_stranger = opts & 64;

    const int sender = from_stranger ? r.stranger : r.relay;
    ssize_t s = ::sendto(sender, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&r.app_addr),
                         sizeof r.app_addr);
    CHECK(s == static_cast<ssize_t>(dgram.size()));

    std::vector<uint8_t> buf(len + 1, 0xA5);  // one guard byte past `len`
    sockaddr_storage from;
    std::memset(&from, 0xEE, sizeof from);
    // Also a short `from`, which must be truncated, not overrun.
    socklen_t fromlen = (opts & 128) ? 8 : sizeof from;
    const socklen_t fromcap = fromlen;
    const int flags = MSG_DONTWAIT | (trunc ? MSG_TRUNC : 0) | (peek ? MSG_PEEK : 0);
    errno = 0;
    ssize_t n = s5::client::recv_deframed(r.app, buf.data(), len, flags, reinterpret_cast<sockaddr*>(&from), &fromlen,
                                          r.table);
    const int saved = errno;
    if (peek && n >= 0) {
        // A peeked datagram stays queued: take it off.
        char sink;
        (void)::recv(r.app, &sink, 1, MSG_DONTWAIT);
    }
    // Nothing may be left behind for the next input.
    char sink;
    CHECK(::recv(r.app, &sink, 1, MSG_DONTWAIT) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    CHECK(buf[len] == 0xA5);

    auto h = wire::decode_udp_header(dgram);
    const bool keep = !from_stranger && h && h->frag == 0;
    if (!keep) {
        CHECK(n == -1 && (saved == EAGAIN || saved == EWOULDBLOCK));
        return;
    }
    const size_t payload = dgram.size() - h->header_len;
    const size_t delivered = std::min(payload, len);
    CHECK(n == static_cast<ssize_t>(trunc ? payload : delivered));
    CHECK(std::memcmp(buf.data(), dgram.data() + h->header_len, delivered) == 0);
    sockaddr_storage want;
    const size_t wlen = h->src.to_sockaddr(want);
    CHECK(fromlen == wlen);
    const size_t shown = std::min<size_t>(fromcap, wlen);
    CHECK(std::memcmp(&from, &want, shown) == 0);
    // Bytes of `from` past the caller's length are untouched.
    for (size_t i = shown; i < sizeof from; ++i) CHECK(reinterpret_cast<uint8_t*>(&from)[i] == 0xEE);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    check_pure(in);
    if (size < 1) return 0;
    std::span<const uint8_t> dgram = in.subspan(1);
    check_pure(dgram);
    check_inbound(in[0], dgram);
    if (dgram.size() > 4096) return 0;
    check_socket_path(in[0], dgram);
    return 0;
}
