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

// ---- D-Bus error names, as a client of the broker sees them ----------------
//
// The one classification of an error name a call to the broker can end
// with (libs5client and s5brokerctl both use it): ours, the bus daemon's
// org.freedesktop.DBus.Error.*, sd-bus's System.Error.* for a dead
// connection, systemd's for a failed activation, or kNoBus.

// Made up by libs5client when it cannot reach the bus at all.
inline constexpr std::string_view kNoBusError = "org.s5broker.Client.Error.NoBus";

enum class BusFailure {
    Broker,            // org.s5broker.Broker1.Error.*: the broker's answer
    ConnectionLost,    // our bus connection died, and the call with it:
                       // worth once more on a new connection; if that fails
                       // too, the bus is unreachable (as NotOnBus)
    NotOnBus,          // no broker: its name has no owner, or no bus (kNoBus)
    ActivationFailed,  // the bus or systemd could not start the broker
    NotTheBroker,      // the name's owner lacks our object, interface or method
    AccessDenied,      // the bus policy (or the broker) refused the caller
    Timeout,           // no reply in time
    Limits,            // the bus daemon's limits or memory
    InvalidArgs,       // the call was malformed
    Other,             // anything else: the broker failed to serve the call
};

BusFailure classify_dbus_error(std::string_view name);

// What the library reports for a D-Bus error name it received (any name:
// ours, org.freedesktop.DBus.Error.*, or unknown).
struct Mapped { int err; int s5err; };
Mapped from_dbus_name(std::string_view name);

// Text for socks5_strerror(): S5_E* codes, else strerror-like text.
const char* s5_text(int s5err);

}  // namespace s5::err
