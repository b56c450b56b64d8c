#include "errors.hpp"

#include <array>
#include <cerrno>
#include <cstring>

#include "s5broker/socks5.h"

namespace s5::err {
namespace {

// Order must follow enum Code.
constexpr std::array<Info, 21> kTable{{
    {Code::ServerFailure, "ServerFailure", ECONNREFUSED, S5_ESRVFAIL},
    {Code::RulesetRejected, "RulesetRejected", EACCES, S5_EPERM},
    {Code::NetworkUnreachable, "NetworkUnreachable", ENETUNREACH, S5_ENETUNREACH},
    {Code::HostUnreachable, "HostUnreachable", EHOSTUNREACH, S5_EHOSTUNREACH},
    {Code::ConnectionRefused, "ConnectionRefused", ECONNREFUSED, S5_ECONNREFUSED},
    {Code::TtlExpired, "TtlExpired", ETIMEDOUT, S5_ETIMEDOUT},
    {Code::CommandNotSupported, "CommandNotSupported", EOPNOTSUPP, S5_EOPNOTSUPP},
    {Code::AddressTypeNotSupported, "AddressTypeNotSupported", EAFNOSUPPORT, S5_EAFNOSUPPORT},
    {Code::NoServer, "NoServer", ENOENT, S5_ENOSERV},
    {Code::AuthFailed, "AuthFailed", EACCES, S5_EPERM},
    {Code::Timeout, "Timeout", ETIMEDOUT, 0},
    {Code::QuotaExceeded, "QuotaExceeded", ENOSPC, 0},
    {Code::InvalidArgs, "InvalidArgs", EINVAL, 0},
    {Code::ServerConnectionRefused, "ServerConnectionRefused", ECONNREFUSED, 0},
    {Code::ServerTimeout, "ServerTimeout", ETIMEDOUT, 0},
    {Code::ServerNetworkUnreachable, "ServerNetworkUnreachable", ENETUNREACH, 0},
    {Code::ServerHostUnreachable, "ServerHostUnreachable", EHOSTUNREACH, 0},
    {Code::ServerNetworkDown, "ServerNetworkDown", ENETDOWN, 0},
    {Code::ServerAddressNotAvailable, "ServerAddressNotAvailable", EADDRNOTAVAIL, 0},
    {Code::ProtocolError, "ProtocolError", EPROTO, S5_EPROTO},
    {Code::Lost, "Lost", ENOTCONN, S5_ELOST},
}};

constexpr bool table_in_order() {
    for (size_t i = 0; i < kTable.size(); ++i)
        if (static_cast<size_t>(kTable[i].code) != i) return false;
    return true;
}
static_assert(table_in_order(), "kTable must follow enum Code");

}  // namespace

const Info& info(Code c) { return kTable[static_cast<size_t>(c)]; }

std::string full_name(Code c) { return std::string(kErrorPrefix) + std::string(info(c).name); }

Code from_rep(unsigned rep) {
    switch (rep) {
        case 2: return Code::RulesetRejected;
        case 3: return Code::NetworkUnreachable;
        case 4: return Code::HostUnreachable;
        case 5: return Code::ConnectionRefused;
        case 6: return Code::TtlExpired;
        case 7: return Code::CommandNotSupported;
        case 8: return Code::AddressTypeNotSupported;
        default: return Code::ServerFailure;  // 1 and every unassigned value
    }
}

Code from_connect_errno(int e) {
    switch (e) {
        case ECONNREFUSED: return Code::ServerConnectionRefused;
        case ETIMEDOUT: return Code::ServerTimeout;
        case ENETUNREACH: return Code::ServerNetworkUnreachable;
        case EHOSTUNREACH: return Code::ServerHostUnreachable;
        case ENETDOWN: return Code::ServerNetworkDown;
        case EADDRNOTAVAIL: return Code::ServerAddressNotAvailable;
        // The server hung up mid-handshake (reset, as a killed one does):
        // it failed, but sent nothing malformed (ProtocolError is for that),
        // the same as a plain EOF there.
        case ECONNRESET:
        case EPIPE: return Code::ServerFailure;
        default: return Code::ServerFailure;
    }
}

BusFailure classify_dbus_error(std::string_view name) {
    if (name.starts_with(kErrorPrefix)) return BusFailure::Broker;
    if (name == kNoBusError || name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
        name == "org.freedesktop.DBus.Error.NameHasNoOwner")
        return BusFailure::NotOnBus;
    // sd-bus's names for a connection that is gone (ENOTCONN, ECONNRESET,
    // EPIPE; ECHILD after fork) and the bus daemon's for "not connected".
    if (name == "org.freedesktop.DBus.Error.Disconnected" || name == "org.freedesktop.DBus.Error.NoServer" ||
        name == "org.freedesktop.DBus.Error.NotConnected" || name == "System.Error.ENOTCONN" ||
        name == "System.Error.ECONNRESET" || name == "System.Error.EPIPE" || name == "System.Error.ECHILD")
        return BusFailure::ConnectionLost;
    // dbus-daemon's own Spawn.* errors, or the error systemd gave for the
    // unit (org.freedesktop.systemd1.*: NoSuchUnit, UnitMasked, a start job
    // that failed, e.g. on a bad configuration).
    if (name.starts_with("org.freedesktop.DBus.Error.Spawn.") || name.starts_with("org.freedesktop.systemd1."))
        return BusFailure::ActivationFailed;
    if (name == "org.freedesktop.DBus.Error.UnknownObject" || name == "org.freedesktop.DBus.Error.UnknownMethod" ||
        name == "org.freedesktop.DBus.Error.UnknownInterface")
        return BusFailure::NotTheBroker;
    if (name == "org.freedesktop.DBus.Error.AccessDenied" || name == "org.freedesktop.DBus.Error.AuthFailed")
        return BusFailure::AccessDenied;
    if (name == "org.freedesktop.DBus.Error.NoReply" || name == "org.freedesktop.DBus.Error.Timeout" ||
        name == "org.freedesktop.DBus.Error.TimedOut")
        return BusFailure::Timeout;
    if (name == "org.freedesktop.DBus.Error.LimitsExceeded" || name == "org.freedesktop.DBus.Error.NoMemory")
        return BusFailure::Limits;
    if (name == "org.freedesktop.DBus.Error.InvalidArgs") return BusFailure::InvalidArgs;
    return BusFailure::Other;
}

Mapped from_dbus_name(std::string_view name) {
    switch (classify_dbus_error(name)) {
        case BusFailure::Broker: {
            std::string_view suffix = name.substr(kErrorPrefix.size());
            for (const Info& i : kTable)
                if (i.name == suffix) return {i.err, i.s5err};
            return {ECONNREFUSED, S5_ESRVFAIL};  // a newer broker's unknown error
        }
        // No broker to ask: not running, not startable, not reachable, or
        // not ours.
        case BusFailure::ConnectionLost:
        case BusFailure::NotOnBus:
        case BusFailure::ActivationFailed:
        case BusFailure::NotTheBroker: return {ECONNREFUSED, S5_ENOSERV};
        case BusFailure::AccessDenied: return {EACCES, 0};
        case BusFailure::Timeout: return {ETIMEDOUT, 0};
        case BusFailure::Limits: return {ENOSPC, 0};
        case BusFailure::InvalidArgs: return {EINVAL, 0};
        case BusFailure::Other: break;
    }
    // org.freedesktop.DBus.Error.Failed, a name no one documented: the
    // broker failed to serve the call. Documented in socks5udp_associate(3),
    // ERRORS.
    return {EIO, S5_ESRVFAIL};
}

const char* s5_text(int s5err) {
    switch (s5err) {
        case 0: return "Success";
        case S5_ESRVFAIL: return "General SOCKSv5 server failure";
        case S5_EPERM: return "SOCKSv5 server ruleset rejection or authentication refused";
        case S5_ENETUNREACH: return "SOCKSv5 server could not reach target network";
        case S5_EHOSTUNREACH: return "SOCKSv5 server could not reach target host";
        case S5_ECONNREFUSED: return "SOCKSv5 server connection request refused by target host";
        case S5_ETIMEDOUT: return "SOCKSv5 server connection failure due to TTL expiry";
        case S5_EOPNOTSUPP: return "Command not supported by SOCKSv5 server";
        case S5_EAFNOSUPPORT: return "Address family not supported by SOCKSv5 server";
        case S5_ENOSERV: return "No SOCKSv5 server found (none configured or matching, or s5brokerd is not running)";
        case S5_ELOST: return "SOCKSv5 association lost and could not be renewed";
        case S5_EPROTO: return "Malformed reply from SOCKSv5 server";
        case S5_ERENEWING: return "SOCKSv5 association is being renewed, try again when the lease is readable";
        default: {
            // errno values are accepted too; strerrordesc_np is thread-safe
            // where strerror is not (unknown numbers use a static buffer).
            const char* d = strerrordesc_np(s5err);
            return d ? d : "Unknown error";
        }
    }
}

}  // namespace s5::err
