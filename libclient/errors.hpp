// The one table that ties together a failure's D-Bus error name (what the
// broker replies), the errno and socks5_errno the library reports, and the
// SOCKS REP code or connect(2) errno the broker saw. Both sides use it, so the
// mapping of docs/design.md §3 lives in exactly one place.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace s5::err {

inline constexpr std::string_view kErrorPrefix = "org.s5broker.Broker1.Error.";

enum class Code {
    ServerFailure,            // REP 1 or unassigned REP
    RulesetRejected,          // REP 2
    NetworkUnreachable,       // REP 3
    HostUnreachable,          // REP 4
    ConnectionRefused,        // REP 5
    TtlExpired,               // REP 6
    CommandNotSupported,      // REP 7
    AddressTypeNotSupported,  // REP 8
    NoServer,                 // no configured/matching server
    AuthFailed,               // method or RFC 1929 credentials refused
    Timeout,                  // association not ready within its deadline
    QuotaExceeded,            // lease limits
    InvalidArgs,              // malformed call
    // The broker's own TCP connect to the SOCKS server failed (no SOCKS reply
    // involved, so socks5_errno is 0). Extensions to docs/design.md §5.
    ServerConnectionRefused,
    ServerTimeout,
    ServerNetworkUnreachable,
    ServerHostUnreachable,
    ServerNetworkDown,
    ServerAddressNotAvailable,
    ProtocolError,            // malformed or unexpected SOCKS reply
    Lost,                     // lease lost (no healthy server within grace)
};

struct Info {
    Code code;
    std::string_view name;    // suffix after kErrorPrefix
    int err;                  // errno for the library
    int s5err;                // socks5_errno for the library (0 = none)
};

const Info& info(Code c);
std::string full_name(Code c);                       // "org.s5broker.Broker1.Error.Timeout"

Code from_rep(unsigned rep);                          // REP != 0 -> code
// errno of a failed connect()/socket I/O to the SOCKS server -> code.
Code from_connect_errno(int e);

// What the library reports for a D-Bus error name it received (any name:
// ours, org.freedesktop.DBus.Error.*, or unknown).
struct Mapped { int err; int s5err; };
Mapped from_dbus_name(std::string_view name);

// Text for socks5_strerror(): S5_E* codes, else strerror-like text.
const char* s5_text(int s5err);

}  // namespace s5::err
