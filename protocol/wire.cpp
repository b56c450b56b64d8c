#include "wire.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace s5::wire {
namespace {

// ---- Byte helpers ------------------------------------------------------------
// Explicit shifts rather than htons()/memcpy: independent of host byte order
// and of the alignment of the buffers we are handed.

void put16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}

void put32(uint8_t* p, uint32_t v) {
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

uint32_t get32(const uint8_t* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// "bad version 0x04 in method reply": the hex byte is what an operator needs
// to tell a SOCKS4 server or an HTTP proxy from a garbled stream.
std::string byte_error(const char* what, uint8_t byte, const char* where) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s 0x%02x in %s", what, byte, where);
    return buf;
}

template <typename T>
Decoded<T> need_more() {
    Decoded<T> d;
    d.need_more = true;
    return d;
}

template <typename T>
Decoded<T> failure(std::string why) {
    Decoded<T> d;
    d.error = std::move(why);
    return d;
}

template <typename T>
Decoded<T> success(T value, size_t consumed) {
    Decoded<T> d;
    d.value = std::move(value);
    d.consumed = consumed;
    return d;
}

// SOCKS ATYP for an address length, and back. 0 = no such type.
size_t atyp_ip_len(uint8_t atyp) {
    switch (atyp) {
        case kAtypIPv4: return 4;
        case kAtypIPv6: return 16;
        default: return 0;
    }
}

uint8_t atyp_for(const Endpoint& ep) { return ep.family == AF_INET6 ? kAtypIPv6 : kAtypIPv4; }

// Appends ATYP | ADDR | PORT. An unset endpoint goes out as 0.0.0.0:port,
// the "I don't know yet" address RFC 1928 allows in a UDP ASSOCIATE request.
void append_address(std::vector<uint8_t>& out, const Endpoint& ep) {
    const size_t len = ep.family == AF_INET6 ? 16 : 4;
    out.push_back(atyp_for(ep));
    if (ep.ip_len() == len)
        out.insert(out.end(), ep.ip.begin(), ep.ip.begin() + static_cast<long>(len));
    else
        out.insert(out.end(), len, 0);
    uint8_t port[2];
    put16(port, ep.port);
    out.insert(out.end(), port, port + 2);
}

// ---- Lease event layout ---------------------------------------------------
// Offsets of the record documented in wire.hpp.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffType = 5;
constexpr size_t kOffFlags = 6;
constexpr uint8_t kFlagSocket = 0x01;
constexpr size_t kOffGeneration = 8;
constexpr size_t kOffRelayFamily = 12;
constexpr size_t kOffRelayPort = 13;
constexpr size_t kOffRelayIp = 15;
constexpr size_t kOffSourceFamily = 31;
constexpr size_t kOffSourceIp = 32;
constexpr size_t kOffErrno = 48;
constexpr size_t kOffS5Errno = 52;
constexpr size_t kLeaseEventUsed = 56;
static_assert(kLeaseEventUsed <= kLeaseEventSize);

constexpr char kLeaseMagic[4] = {'S', '5', 'L', 'E'};

// Families travel as 0/4/6 rather than AF_* values so the record does not
// depend on the numbering of the platform that wrote it.
uint8_t family_to_wire(int family) {
    switch (family) {
        case AF_INET: return 4;
        case AF_INET6: return 6;
        default: return 0;
    }
}

std::optional<int> family_from_wire(uint8_t f) {
    switch (f) {
        case 0: return 0;
        case 4: return AF_INET;
        case 6: return AF_INET6;
        default: return std::nullopt;
    }
}

// Writes family and IP (only ip_len() bytes; the rest of the field stays
// zero, so a stale tail in Endpoint::ip never leaks onto the wire).
void put_family_ip(uint8_t* rec, size_t off_family, size_t off_ip, const Endpoint& ep) {
    rec[off_family] = family_to_wire(ep.family);
    std::copy_n(ep.ip.begin(), ep.ip_len(), rec + off_ip);
}

std::optional<Endpoint> get_family_ip(const uint8_t* rec, size_t off_family, size_t off_ip) {
    auto family = family_from_wire(rec[off_family]);
    if (!family) return std::nullopt;
    Endpoint ep;
    ep.family = *family;
    std::copy_n(rec + off_ip, ep.ip_len(), ep.ip.begin());
    return ep;
}

bool known_event_type(uint8_t t) {
    switch (static_cast<LeaseEventType>(t)) {
        case LeaseEventType::Ready:
        case LeaseEventType::Renewed:
        case LeaseEventType::Lost:
        case LeaseEventType::Renewing: return true;
    }
    return false;
}

}  // namespace

// ---- Endpoint ----------------------------------------------------------------

size_t Endpoint::ip_len() const {
    switch (family) {
        case AF_INET: return 4;
        case AF_INET6: return 16;
        default: return 0;
    }
}

std::vector<uint8_t> Endpoint::ip_bytes() const {
    return {ip.begin(), ip.begin() + static_cast<long>(ip_len())};
}

bool Endpoint::is_loopback() const {
    const Endpoint e = unmapped();
    if (e.family == AF_INET) return e.ip[0] == 127;
    static constexpr std::array<uint8_t, 16> kOne{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return e.family == AF_INET6 && std::equal(kOne.begin(), kOne.end(), e.ip.begin());
}

bool Endpoint::is_unspecified() const {
    // An unset endpoint is not an address at all, so not "unspecified" either.
    const size_t len = ip_len();
    return len != 0 && std::all_of(ip.begin(), ip.begin() + static_cast<long>(len),
                                   [](uint8_t b) { return b == 0; });
}

bool Endpoint::is_v4_mapped() const {
    static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return family == AF_INET6 && std::memcmp(ip.data(), kPrefix, sizeof kPrefix) == 0;
}

Endpoint Endpoint::unmapped() const {
    if (!is_v4_mapped()) return *this;
    Endpoint v4;
    v4.family = AF_INET;
    std::memcpy(v4.ip.data(), ip.data() + 12, 4);
    v4.port = port;
    return v4;
}

bool same_leading_bits(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, unsigned bits) {
    const unsigned whole = bits / 8;
    if (std::memcmp(a.data(), b.data(), whole) != 0) return false;
    if (bits % 8 == 0) return true;
    const auto mask = static_cast<uint8_t>(0xFF << (8 - bits % 8));
    return (a[whole] & mask) == (b[whole] & mask);
}

std::string Endpoint::to_string() const {
    char text[INET6_ADDRSTRLEN];
    if (ip_len() == 0 || !inet_ntop(family, ip.data(), text, sizeof text)) return "(unset)";
    // Brackets keep the port apart from an IPv6 address (RFC 3986 style).
    char out[INET6_ADDRSTRLEN + 16];
    if (family == AF_INET6)
        std::snprintf(out, sizeof out, "[%s]:%u", text, unsigned{port});
    else
        std::snprintf(out, sizeof out, "%s:%u", text, unsigned{port});
    return out;
}

std::optional<Endpoint> Endpoint::from_bytes(std::span<const uint8_t> bytes, uint16_t port) {
    Endpoint ep;
    if (bytes.size() == 4)
        ep.family = AF_INET;
    else if (bytes.size() == 16)
        ep.family = AF_INET6;
    else
        return std::nullopt;
    std::copy(bytes.begin(), bytes.end(), ep.ip.begin());
    ep.port = port;
    return ep;
}

std::optional<Endpoint> Endpoint::from_sockaddr(const sockaddr* sa, size_t len) {
    if (!sa || len < sizeof(sa_family_t)) return std::nullopt;
    // Copy out rather than cast: callers may hand us any buffer alignment.
    sa_family_t family;
    std::memcpy(&family, reinterpret_cast<const char*>(sa) + offsetof(sockaddr, sa_family), sizeof family);
    if (family == AF_INET && len >= sizeof(sockaddr_in)) {
        sockaddr_in sin;
        std::memcpy(&sin, sa, sizeof sin);
        return from_bytes({reinterpret_cast<const uint8_t*>(&sin.sin_addr), 4}, ntohs(sin.sin_port));
    }
    if (family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, sa, sizeof sin6);
        return from_bytes({reinterpret_cast<const uint8_t*>(&sin6.sin6_addr), 16}, ntohs(sin6.sin6_port));
    }
    return std::nullopt;
}

std::optional<Endpoint> Endpoint::parse_ip(std::string_view text, uint16_t port) {
    // inet_pton wants a C string: an embedded NUL would silently cut the
    // input short ("1.2.3.4\0junk"), and anything longer than the longest
    // literal cannot be an address.
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN || text.find('\0') != std::string_view::npos)
        return std::nullopt;
    const std::string s(text);
    uint8_t buf[16];
    // glibc's inet_pton is strict: dotted quad only for AF_INET, and no
    // brackets, ports, zone ids or surrounding spaces for AF_INET6.
    if (inet_pton(AF_INET, s.c_str(), buf) == 1) return from_bytes({buf, 4}, port);
    if (inet_pton(AF_INET6, s.c_str(), buf) == 1) return from_bytes({buf, 16}, port);
    return std::nullopt;
}

size_t Endpoint::to_sockaddr(sockaddr_storage& out) const {
    // Zeroed so sin_zero / sin6_flowinfo / sin6_scope_id are never stack junk.
    std::memset(&out, 0, sizeof out);
    if (family == AF_INET) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        std::memcpy(&sin.sin_addr, ip.data(), 4);
        std::memcpy(&out, &sin, sizeof sin);
        return sizeof sin;
    }
    if (family == AF_INET6) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        std::memcpy(&sin6.sin6_addr, ip.data(), 16);
        std::memcpy(&out, &sin6, sizeof sin6);
        return sizeof sin6;
    }
    return 0;
}

// ---- Client -> server --------------------------------------------------------

std::vector<uint8_t> encode_greeting(uint8_t method) { return {kVersion, 1, method}; }

bool userpass_fits(std::string_view user, std::string_view password) {
    // RFC 1929 length fields are one byte and 0 is not a valid length.
    auto fits = [](std::string_view s) { return !s.empty() && s.size() <= 255; };
    return fits(user) && fits(password);
}

std::optional<SecretBytes> encode_userpass(std::string_view user, std::string_view password) {
    if (!userpass_fits(user, password)) return std::nullopt;
    SecretBytes out;
    out.reserve(3 + user.size() + password.size());
    out.push_back(kAuthVersion);
    out.push_back(static_cast<uint8_t>(user.size()));
    out.insert(out.end(), user.begin(), user.end());
    out.push_back(static_cast<uint8_t>(password.size()));
    out.insert(out.end(), password.begin(), password.end());
    return out;
}

std::vector<uint8_t> encode_udp_associate(const Endpoint& dst) {
    std::vector<uint8_t> out{kVersion, kCmdUdpAssociate, 0x00};
    out.reserve(3 + 1 + 16 + 2);
    append_address(out, dst);
    return out;
}

// ---- Server -> client --------------------------------------------------------
// Each decoder validates a field as soon as it has arrived, so a garbage
// first byte fails at once instead of waiting for bytes that never come.

Decoded<MethodReply> decode_method_reply(std::span<const uint8_t> in) {
    if (in.empty()) return need_more<MethodReply>();
    if (in[0] != kVersion) return failure<MethodReply>(byte_error("bad version", in[0], "method reply"));
    if (in.size() < 2) return need_more<MethodReply>();
    return success(MethodReply{in[1]}, 2);
}

Decoded<AuthReply> decode_auth_reply(std::span<const uint8_t> in) {
    if (in.empty()) return need_more<AuthReply>();
    // RFC 1929 says VER=1; some servers echo the SOCKS version instead.
    if (in[0] != kAuthVersion && in[0] != kVersion)
        return failure<AuthReply>(byte_error("bad version", in[0], "auth reply"));
    if (in.size() < 2) return need_more<AuthReply>();
    return success(AuthReply{in[1]}, 2);
}

Decoded<Reply> decode_reply(std::span<const uint8_t> in) {
    constexpr size_t kFixed = 4;  // VER REP RSV ATYP
    if (in.empty()) return need_more<Reply>();
    if (in[0] != kVersion) return failure<Reply>(byte_error("bad version", in[0], "reply"));
    if (in.size() < kFixed) return need_more<Reply>();

    Reply r;
    r.rep = in[1];
    r.atyp = in[3];
    if (r.atyp == kAtypDomain) {
        // The length byte itself must arrive before we know the total.
        if (in.size() < kFixed + 1) return need_more<Reply>();
        const size_t name_len = in[kFixed];
        const size_t total = kFixed + 1 + name_len + 2;
        if (in.size() < total) return need_more<Reply>();
        r.bnd_name.assign(reinterpret_cast<const char*>(&in[kFixed + 1]), name_len);
        // No address to go with it, but the port is still the relay's port.
        r.bnd.port = get16(&in[kFixed + 1 + name_len]);
        return success(std::move(r), total);
    }
    const size_t ip_len = atyp_ip_len(r.atyp);
    if (ip_len == 0) return failure<Reply>(byte_error("unknown address type", r.atyp, "reply"));
    const size_t total = kFixed + ip_len + 2;
    if (in.size() < total) return need_more<Reply>();
    r.bnd = *Endpoint::from_bytes(in.subspan(kFixed, ip_len), get16(&in[kFixed + ip_len]));
    return success(std::move(r), total);
}

std::string_view rep_text(uint8_t rep) {
    // Wording of RFC 1928 §6.
    switch (rep) {
        case 0: return "succeeded";
        case 1: return "general SOCKS server failure";
        case 2: return "connection not allowed by ruleset";
        case 3: return "Network unreachable";
        case 4: return "Host unreachable";
        case 5: return "Connection refused";
        case 6: return "TTL expired";
        case 7: return "Command not supported";
        case 8: return "Address type not supported";
        default: return "unassigned reply code";
    }
}

// ---- UDP datagram header -----------------------------------------------------

size_t encode_udp_header(const Endpoint& dst, std::span<uint8_t, kUdpHeaderMax> out) {
    const size_t ip_len = dst.ip_len();
    if (ip_len == 0) return 0;
    out[0] = 0;  // RSV
    out[1] = 0;
    out[2] = 0;  // FRAG: we never fragment
    out[3] = atyp_for(dst);
    std::copy_n(dst.ip.begin(), ip_len, out.begin() + 4);
    put16(&out[4 + ip_len], dst.port);
    return 4 + ip_len + 2;
}

std::optional<UdpHeader> decode_udp_header(std::span<const uint8_t> in) {
    if (in.size() < 4) return std::nullopt;
    // RSV != 0 means this is not a SOCKS datagram (or a future format).
    if (in[0] != 0 || in[1] != 0) return std::nullopt;
    // Names are rejected: a relay only ever reports the IP it received from.
    const size_t ip_len = atyp_ip_len(in[3]);
    if (ip_len == 0) return std::nullopt;
    const size_t len = 4 + ip_len + 2;
    if (in.size() < len) return std::nullopt;
    UdpHeader h;
    h.frag = in[2];  // kept so the caller can apply its own FRAG policy
    h.src = *Endpoint::from_bytes(in.subspan(4, ip_len), get16(&in[4 + ip_len]));
    h.header_len = len;
    return h;
}

// ---- Lease events --------------------------------------------------------------

std::array<uint8_t, kLeaseEventSize> encode_lease_event(const LeaseEvent& ev) {
    std::array<uint8_t, kLeaseEventSize> rec{};  // reserved bytes stay zero
    std::copy(std::begin(kLeaseMagic), std::end(kLeaseMagic), rec.begin() + kOffMagic);
    rec[kOffVersion] = kLeaseEventVersion;
    rec[kOffType] = static_cast<uint8_t>(ev.type);
    rec[kOffFlags] = ev.socket ? kFlagSocket : 0;
    put32(&rec[kOffGeneration], ev.generation);
    put_family_ip(rec.data(), kOffRelayFamily, kOffRelayIp, ev.relay);
    put16(&rec[kOffRelayPort], ev.relay.port);
    put_family_ip(rec.data(), kOffSourceFamily, kOffSourceIp, ev.source);  // source port: not carried
    put32(&rec[kOffErrno], static_cast<uint32_t>(ev.err));
    put32(&rec[kOffS5Errno], static_cast<uint32_t>(ev.s5err));
    return rec;
}

std::optional<LeaseEvent> decode_lease_event(std::span<const uint8_t> in) {
    if (in.size() != kLeaseEventSize) return std::nullopt;
    if (!std::equal(std::begin(kLeaseMagic), std::end(kLeaseMagic), in.begin() + kOffMagic)) return std::nullopt;
    if (in[kOffVersion] != kLeaseEventVersion) return std::nullopt;
    if (!known_event_type(in[kOffType])) return std::nullopt;
    auto relay = get_family_ip(in.data(), kOffRelayFamily, kOffRelayIp);
    auto source = get_family_ip(in.data(), kOffSourceFamily, kOffSourceIp);
    if (!relay || !source) return std::nullopt;

    LeaseEvent ev;
    ev.type = static_cast<LeaseEventType>(in[kOffType]);
    // Unknown flag bits are a newer broker's, and mean nothing here.
    ev.socket = (in[kOffFlags] & kFlagSocket) != 0;
    ev.generation = get32(&in[kOffGeneration]);
    ev.relay = *relay;
    ev.relay.port = get16(&in[kOffRelayPort]);
    ev.source = *source;
    ev.err = static_cast<int32_t>(get32(&in[kOffErrno]));
    ev.s5err = static_cast<int32_t>(get32(&in[kOffS5Errno]));
    return ev;
}

}  // namespace s5::wire
