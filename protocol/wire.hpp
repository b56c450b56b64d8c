// SOCKS5 wire codec (RFC 1928, RFC 1929) and the broker's lease-event record.
//
// Pure functions: no I/O, no allocation beyond the returned vectors. The same
// code serves s5brokerd (control connections) and libs5client (UDP header,
// lease events, direct mode), so a fix here fixes both sides.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct sockaddr;
struct sockaddr_storage;

#include "secret.hpp"

namespace s5::wire {

inline constexpr uint8_t kVersion = 0x05;
inline constexpr uint8_t kAuthVersion = 0x01;  // RFC 1929 sub-negotiation
inline constexpr uint8_t kMethodNone = 0x00;
inline constexpr uint8_t kMethodUsername = 0x02;
inline constexpr uint8_t kMethodNoAcceptable = 0xFF;
inline constexpr uint8_t kCmdUdpAssociate = 0x03;
inline constexpr uint8_t kAtypIPv4 = 0x01;
inline constexpr uint8_t kAtypDomain = 0x03;
inline constexpr uint8_t kAtypIPv6 = 0x04;

// An IP endpoint as the bus and the wire carry it: raw network-order bytes.
struct Endpoint {
    int family = 0;                     // AF_INET or AF_INET6; 0 = unset
    std::array<uint8_t, 16> ip{};       // first 4 bytes used for AF_INET
    uint16_t port = 0;                  // host order

    size_t ip_len() const;              // 4, 16, or 0 when unset
    std::vector<uint8_t> ip_bytes() const;
    bool is_unspecified() const;        // 0.0.0.0 or ::
    bool is_loopback() const;           // 127.0.0.0/8 or ::1 (mapped spellings too)
    bool is_v4_mapped() const;          // ::ffff:a.b.c.d
    Endpoint unmapped() const;          // ::ffff:a.b.c.d as a.b.c.d; anything else as is
    std::string to_string() const;      // "1.2.3.4:80", "[::1]:80"
    bool operator==(const Endpoint&) const = default;

    // From raw bytes as on the bus; nullopt unless 4 or 16 bytes.
    static std::optional<Endpoint> from_bytes(std::span<const uint8_t> ip, uint16_t port);
    // From a sockaddr_in / sockaddr_in6; nullopt for other families or a
    // length too short for the family.
    static std::optional<Endpoint> from_sockaddr(const sockaddr* sa, size_t len);
    // Parse "1.2.3.4" or "2001:db8::1" (no brackets, no port).
    static std::optional<Endpoint> parse_ip(std::string_view text, uint16_t port = 0);
    // Writes a sockaddr_in/sockaddr_in6; returns its length.
    size_t to_sockaddr(sockaddr_storage& out) const;
};

// Whether the first `bits` bits of two addresses agree (prefix matching of
// routes and socks5c.conf records).
bool same_leading_bits(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, unsigned bits);

// ---- Client -> server -----------------------------------------------------

// VER | NMETHODS | METHODS: offers exactly the one method we are configured for.
std::vector<uint8_t> encode_greeting(uint8_t method);

// RFC 1929: VER=1 | ULEN | UNAME | PLEN | PASSWD. nullopt when either field is
// empty or longer than 255 bytes.
// Whether RFC 1929 can carry them (1..255 bytes each).
bool userpass_fits(std::string_view user, std::string_view password);
// The RFC 1929 request, in secret memory (secret.hpp): it holds the password.
std::optional<SecretBytes> encode_userpass(std::string_view user, std::string_view password);

// VER | CMD=3 | RSV | ATYP | DST.ADDR | DST.PORT for UDP ASSOCIATE. `dst` is
// the address the client will send from (design.md §7), not the target.
std::vector<uint8_t> encode_udp_associate(const Endpoint& dst);

// ---- Server -> client -----------------------------------------------------

// Result of an incremental decode: the caller feeds everything received so
// far; `need_more` means "call again with more bytes"; otherwise either
// `error` is non-empty (malformed, a human-readable reason) or the value is
// set and `consumed` bytes belong to it.
template <typename T>
struct Decoded {
    bool need_more = false;
    std::string error;
    std::optional<T> value;
    size_t consumed = 0;
};

struct MethodReply { uint8_t method = kMethodNoAcceptable; };
// VER | METHOD. Error when VER != 5.
Decoded<MethodReply> decode_method_reply(std::span<const uint8_t> in);

struct AuthReply { uint8_t status = 0xFF; bool ok() const { return status == 0; } };
// VER | STATUS. Accepts VER 1 (RFC 1929) and, leniently, 5 (some servers).
Decoded<AuthReply> decode_auth_reply(std::span<const uint8_t> in);

struct Reply {
    uint8_t rep = 0xFF;       // 0 = succeeded; 1..8 RFC 1928; anything else = unassigned
    uint8_t atyp = 0;
    Endpoint bnd;             // set for ATYP 1 and 4
    std::string bnd_name;     // set for ATYP 3 (domain name, may be empty)
};
// VER | REP | RSV | ATYP | BND.ADDR | BND.PORT. Errors: VER != 5, unknown
// ATYP. RSV is ignored (RFC says 0, servers vary).
Decoded<Reply> decode_reply(std::span<const uint8_t> in);

// Human text for a REP code ("general SOCKS server failure", ...).
std::string_view rep_text(uint8_t rep);

// ---- UDP datagram header (RFC 1928 §7) --------------------------------------

inline constexpr size_t kUdpHeaderMax = 22;     // RSV(2) FRAG ATYP IPv6(16) PORT(2)

// Writes RSV=0 | FRAG=0 | ATYP | DST.ADDR | DST.PORT into `out`; returns the
// header length (10 for IPv4, 22 for IPv6), 0 when `dst` is unset.
size_t encode_udp_header(const Endpoint& dst, std::span<uint8_t, kUdpHeaderMax> out);

struct UdpHeader {
    uint8_t frag = 0;
    Endpoint src;             // ATYP 1/4 only; datagrams with names are rejected
    size_t header_len = 0;    // payload starts here
};
// nullopt when short, RSV != 0, ATYP unknown or a domain name.
std::optional<UdpHeader> decode_udp_header(std::span<const uint8_t> in);

// ---- Lease events (broker -> library over the lease fd) -------------------
//
// A fixed-size record, one per SOCK_SEQPACKET message:
//   magic "S5LE" | version(1) | type(1) | flags(1) | reserved(1) | generation(4, BE)
//   | relay family(1) | relay port(2, BE) | relay ip(16)
//   | source family(1) | source ip(16)
//   | errno(4, BE) | s5errno(4, BE) | reserved to kLeaseEventSize.

inline constexpr size_t kLeaseEventSize = 64;
inline constexpr uint8_t kLeaseEventVersion = 1;

enum class LeaseEventType : uint8_t {
    Ready = 1,      // association (gen 1) is usable
    Renewed = 2,    // moved to a new association; relay/source changed
    Lost = 3,       // gone for good; errno / s5errno say why
    // The association of `generation` ended (its control connection
    // dropped) and the broker is looking for another: datagrams sent now
    // would go to a dead relay. Relay and source are those of the ended
    // association (so the record stands in for a Ready/Renewed it replaced
    // when the application's end was full). Renewed or Lost follows.
    // Brokers before this type never send it; libraries before it skip it.
    Renewing = 4,
};

struct LeaseEvent {
    LeaseEventType type = LeaseEventType::Ready;
    uint32_t generation = 0;
    Endpoint relay;           // where to send datagrams (Ready, Renewed; Renewing: the old one)
    Endpoint source;          // IP the app must send from (port unused)
    int32_t err = 0;          // errno for Lost
    int32_t s5err = 0;        // socks5_errno for Lost
    // Ready/Renewed: the association's UDP socket, which the broker bound
    // to `source` and named as the request's DST (the claim design,
    // design.md §7), rides with this record as SCM_RIGHTS. Without it
    // (claim "first_datagram", or brokers before it) the association takes
    // the first datagram from `source`'s IP. Flags bit 0; libraries before
    // it ignore the byte (and the kernel closes the descriptor they did not
    // ask for).
    bool socket = false;
    bool operator==(const LeaseEvent&) const = default;
};

std::array<uint8_t, kLeaseEventSize> encode_lease_event(const LeaseEvent& ev);
// nullopt unless exactly kLeaseEventSize bytes with the right magic, version
// and a known type, and families that are 0, AF_INET or AF_INET6.
std::optional<LeaseEvent> decode_lease_event(std::span<const uint8_t> in);

}  // namespace s5::wire
