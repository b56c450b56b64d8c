// The private channel between libs5client and s5brokerd (docs/design.md
// §5a): one SOCK_SEQPACKET socket per process, handed out by the bus method
// OpenChannel. Each Associate is then one request message and one reply
// message on it; a reply that grants a lease carries the lease fd as
// SCM_RIGHTS. No bus daemon on the way, so no routing and no fd passing
// through a third process.
//
// The channel serves only what the broker can answer at once: a pooled
// association, a pending lease for a non-blocking call, or an error. A
// blocking request that would have to wait for an association is answered
// WouldWait, and the library makes the same request on the bus, where the
// waiting (with its time-out and its cancellation when the caller leaves)
// is implemented once.
//
// Both messages are fixed layouts, big-endian like the lease events:
//
// Request, exactly kRequestSize bytes:
//   magic "S5RQ" | version(1) | flags(1) | dst family(1) | server family(1)
//   | dst port(2) | server port(2) | timeout_ms(4) | rendezvous_len(4)
//   | token(8) | dst ip(16) | server ip(16) | reserved(4, zero)
//   flags: bit 0 nonblocking, bit 1 a server is named (else route by dst).
//   An IPv4 address fills the first 4 of its 16 bytes; the rest are zero.
//
// Reply, kReplyHeaderSize bytes and then the error's name and message:
//   magic "S5RP" | version(1) | status(1) | relay family(1) | reserved(1)
//   | relay port(2) | name length(2) | message length(2) | reserved(2)
//   | token(8) | lease id(8) | relay ip(16) | name | message
//
// The token is the requester's: the broker echoes it, so a reply is never
// taken for another request's.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "wire.hpp"

namespace s5::channel {

inline constexpr size_t kRequestSize = 64;
inline constexpr size_t kReplyHeaderSize = 48;
inline constexpr size_t kMaxNameLen = 255;
inline constexpr size_t kMaxMessageLen = 512;
inline constexpr size_t kReplyMax = kReplyHeaderSize + kMaxNameLen + kMaxMessageLen;
inline constexpr uint8_t kVersion = 1;

struct Request {
    uint64_t token = 0;
    s5::wire::Endpoint dst;                       // family and ip; port as given
    std::optional<s5::wire::Endpoint> server;     // nullopt: route by dst
    uint32_t timeout_ms = 0;                      // 0: the broker's default
    uint32_t rendezvous_len = UINT32_MAX;         // UINT32_MAX: any
    bool nonblocking = false;
    bool operator==(const Request&) const = default;
};

enum class Status : uint8_t {
    Granted = 1,     // lease fd attached, relay set
    Pending = 2,     // lease fd attached, no relay yet (non-blocking request)
    Failed = 3,      // error name and message set, no fd
    WouldWait = 4,   // no association ready: ask on the bus
};

struct Reply {
    uint64_t token = 0;
    Status status = Status::Failed;
    uint64_t lease_id = 0;                        // Granted, Pending
    s5::wire::Endpoint relay;                     // Granted
    std::string error_name;                       // Failed: a D-Bus error name
    std::string error_message;                    // Failed
    bool operator==(const Reply&) const = default;
};

std::array<uint8_t, kRequestSize> encode_request(const Request& r);
// nullopt unless exactly kRequestSize bytes with the right magic and
// version, no unknown flag, a dst of AF_INET or AF_INET6, a server family
// exactly when flag bit 1 says so, and zero in every unused byte (so that
// one request has one encoding).
std::optional<Request> decode_request(std::span<const uint8_t> in);

// Names and messages longer than their maximum are cut (a message at a
// UTF-8 character boundary).
std::vector<uint8_t> encode_reply(const Reply& r);
// nullopt unless the header is well formed and the lengths add up exactly:
// Granted with a relay, Pending and WouldWait with none, Failed with a
// name; no name or message on any other status.
std::optional<Reply> decode_reply(std::span<const uint8_t> in);

}  // namespace s5::channel
