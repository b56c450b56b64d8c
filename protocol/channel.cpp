#include "channel.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace s5::channel {
namespace {

constexpr uint8_t kRequestMagic[4] = {'S', '5', 'R', 'Q'};
constexpr uint8_t kReplyMagic[4] = {'S', '5', 'R', 'P'};
constexpr uint8_t kFlagNonblocking = 1;
constexpr uint8_t kFlagServer = 2;

// Request offsets.
constexpr size_t kQVersion = 4, kQFlags = 5, kQDstFamily = 6, kQServerFamily = 7, kQDstPort = 8,
                 kQServerPort = 10, kQTimeout = 12, kQRendezvous = 16, kQToken = 20, kQDstIp = 28,
                 kQServerIp = 44, kQReserved = 60;
// Reply offsets.
constexpr size_t kPVersion = 4, kPStatus = 5, kPRelayFamily = 6, kPReserved1 = 7, kPRelayPort = 8, kPNameLen = 10,
                 kPMessageLen = 12, kPReserved2 = 14, kPToken = 16, kPLeaseId = 24, kPRelayIp = 32;
static_assert(kQReserved + 4 == kRequestSize);
static_assert(kPRelayIp + 16 == kReplyHeaderSize);

void put16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
void put32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
void put64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = v << 8 | p[i];
    return v;
}
uint64_t get64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
    return v;
}

uint8_t family_byte(const s5::wire::Endpoint& ep) {
    return ep.family == AF_INET ? 4 : ep.family == AF_INET6 ? 6 : 0;
}

void put_ip(uint8_t* p, const s5::wire::Endpoint& ep) {
    std::memcpy(p, ep.ip.data(), ep.ip_len());
}

bool all_zero(const uint8_t* p, size_t n) {
    return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// A family byte and its 16 address bytes: nullopt for an unknown family or
// non-zero bytes past an IPv4 address; an unset Endpoint for family 0 with
// all-zero bytes.
std::optional<s5::wire::Endpoint> get_ep(uint8_t family, const uint8_t* ip, uint16_t port) {
    s5::wire::Endpoint ep;
    if (family == 0) {
        if (!all_zero(ip, 16) || port != 0) return std::nullopt;
        return ep;
    }
    if (family != 4 && family != 6) return std::nullopt;
    const size_t len = family == 4 ? 4 : 16;
    if (!all_zero(ip + len, 16 - len)) return std::nullopt;
    ep.family = family == 4 ? AF_INET : AF_INET6;
    std::memcpy(ep.ip.data(), ip, len);
    ep.port = port;
    return ep;
}

// At most `max` bytes of `s`, not splitting a UTF-8 sequence.
std::string_view cut(const std::string& s, size_t max) {
    if (s.size() <= max) return s;
    size_t n = max;
    while (n > 0 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) --n;
    return std::string_view(s).substr(0, n);
}

}  // namespace

std::array<uint8_t, kRequestSize> encode_request(const Request& r) {
    std::array<uint8_t, kRequestSize> m{};
    std::copy(std::begin(kRequestMagic), std::end(kRequestMagic), m.begin());
    m[kQVersion] = kVersion;
    m[kQFlags] = static_cast<uint8_t>((r.nonblocking ? kFlagNonblocking : 0) | (r.server ? kFlagServer : 0));
    m[kQDstFamily] = family_byte(r.dst);
    put16(&m[kQDstPort], r.dst.port);
    put_ip(&m[kQDstIp], r.dst);
    if (r.server) {
        m[kQServerFamily] = family_byte(*r.server);
        put16(&m[kQServerPort], r.server->port);
        put_ip(&m[kQServerIp], *r.server);
    }
    put32(&m[kQTimeout], r.timeout_ms);
    put32(&m[kQRendezvous], r.rendezvous_len);
    put64(&m[kQToken], r.token);
    return m;
}

std::optional<Request> decode_request(std::span<const uint8_t> in) {
    if (in.size() != kRequestSize) return std::nullopt;
    if (!std::equal(std::begin(kRequestMagic), std::end(kRequestMagic), in.begin())) return std::nullopt;
    if (in[kQVersion] != kVersion) return std::nullopt;
    const uint8_t flags = in[kQFlags];
    if (flags & ~(kFlagNonblocking | kFlagServer)) return std::nullopt;
    if (!all_zero(&in[kQReserved], 4)) return std::nullopt;
    Request r;
    auto dst = get_ep(in[kQDstFamily], &in[kQDstIp], get16(&in[kQDstPort]));
    if (!dst || dst->family == 0) return std::nullopt;
    r.dst = *dst;
    auto server = get_ep(in[kQServerFamily], &in[kQServerIp], get16(&in[kQServerPort]));
    if (!server) return std::nullopt;
    if ((flags & kFlagServer) != (server->family != 0 ? kFlagServer : 0)) return std::nullopt;
    if (server->family != 0) r.server = *server;
    r.nonblocking = (flags & kFlagNonblocking) != 0;
    r.timeout_ms = get32(&in[kQTimeout]);
    r.rendezvous_len = get32(&in[kQRendezvous]);
    r.token = get64(&in[kQToken]);
    return r;
}

std::vector<uint8_t> encode_reply(const Reply& r) {
    const std::string_view name = cut(r.error_name, kMaxNameLen);
    const std::string_view message = cut(r.error_message, kMaxMessageLen);
    std::vector<uint8_t> m(kReplyHeaderSize + name.size() + message.size(), 0);
    std::copy(std::begin(kReplyMagic), std::end(kReplyMagic), m.begin());
    m[kPVersion] = kVersion;
    m[kPStatus] = static_cast<uint8_t>(r.status);
    m[kPRelayFamily] = family_byte(r.relay);
    if (r.relay.family) {
        put16(&m[kPRelayPort], r.relay.port);
        put_ip(&m[kPRelayIp], r.relay);
    }
    put16(&m[kPNameLen], static_cast<uint16_t>(name.size()));
    put16(&m[kPMessageLen], static_cast<uint16_t>(message.size()));
    put64(&m[kPToken], r.token);
    put64(&m[kPLeaseId], r.lease_id);
    std::copy(name.begin(), name.end(), m.begin() + kReplyHeaderSize);
    std::copy(message.begin(), message.end(), m.begin() + kReplyHeaderSize + name.size());
    return m;
}

std::optional<Reply> decode_reply(std::span<const uint8_t> in) {
    if (in.size() < kReplyHeaderSize || in.size() > kReplyMax) return std::nullopt;
    if (!std::equal(std::begin(kReplyMagic), std::end(kReplyMagic), in.begin())) return std::nullopt;
    if (in[kPVersion] != kVersion || in[kPReserved1] != 0 || !all_zero(&in[kPReserved2], 2)) return std::nullopt;
    const size_t name_len = get16(&in[kPNameLen]), message_len = get16(&in[kPMessageLen]);
    if (name_len > kMaxNameLen || message_len > kMaxMessageLen) return std::nullopt;
    if (kReplyHeaderSize + name_len + message_len != in.size()) return std::nullopt;
    auto relay = get_ep(in[kPRelayFamily], &in[kPRelayIp], get16(&in[kPRelayPort]));
    if (!relay) return std::nullopt;
    Reply r;
    r.status = static_cast<Status>(in[kPStatus]);
    r.token = get64(&in[kPToken]);
    r.lease_id = get64(&in[kPLeaseId]);
    r.relay = *relay;
    const char* text = reinterpret_cast<const char*>(in.data() + kReplyHeaderSize);
    r.error_name.assign(text, name_len);
    r.error_message.assign(text + name_len, message_len);
    switch (r.status) {
        case Status::Granted:
            if (r.relay.family == 0 || name_len || message_len) return std::nullopt;
            break;
        case Status::Pending:
        case Status::WouldWait:
            if (r.relay.family != 0 || name_len || message_len) return std::nullopt;
            if (r.status == Status::WouldWait && r.lease_id != 0) return std::nullopt;
            break;
        case Status::Failed:
            if (r.relay.family != 0 || name_len == 0 || r.lease_id != 0) return std::nullopt;
            break;
        default:
            return std::nullopt;
    }
    return r;
}

}  // namespace s5::channel
