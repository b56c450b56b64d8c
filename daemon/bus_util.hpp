// What every object's bus glue shares: the object paths and interface
// names, D-Bus errors from s5::err codes (the one place they are mapped is
// protocol/errors.cpp), and the guards that make every handler answer
// instead of letting an exception unwind into libsystemd's C frames
// (sdbus-c++ 1.2.0 only turns sdbus::Error into a reply).
#pragma once

#include <sdbus-c++/sdbus-c++.h>

#include <cstdint>
#include <string>
#include <vector>

#include "errors.hpp"
#include "log.hpp"
#include "wire.hpp"

namespace s5d::busutil {

using s5::err::Code;

inline constexpr const char* kManagerPath = "/org/s5broker/Broker1";
inline constexpr const char* kManagerIface = "org.s5broker.Broker1.Manager";
inline constexpr const char* kServerIface = "org.s5broker.Broker1.Server";
inline constexpr const char* kLeaseIface = "org.s5broker.Broker1.Lease";

inline sdbus::Error bus_error(Code c, const std::string& message) {
    return sdbus::Error(s5::err::full_name(c), message);
}

inline sdbus::Error invalid_args(const std::string& message) { return bus_error(Code::InvalidArgs, message); }

// Replies to a deferred call with an error; a reply that cannot be sent
// (the caller left, the bus is gone) is logged and dropped.
template <typename Result>
void reply_error(const Result& res, Code code, const std::string& message) {
    try {
        res.returnError(bus_error(code, message));
    } catch (...) {
        log_warning("cannot send an error reply: %s", message.c_str());
    }
}

// Runs a synchronous handler body; anything that is not already an
// sdbus::Error becomes a ServerFailure reply instead of unwinding into C.
template <typename F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const sdbus::Error&) {
        throw;
    } catch (const std::exception& e) {
        log_error("%s: %s", what, e.what());
        throw bus_error(Code::ServerFailure, std::string(what) + ": internal error");
    } catch (...) {
        log_error("%s: unknown exception", what);
        throw bus_error(Code::ServerFailure, std::string(what) + ": internal error");
    }
}

inline s5::wire::Endpoint endpoint_arg(const std::vector<uint8_t>& ip, uint16_t port, const char* name) {
    auto ep = s5::wire::Endpoint::from_bytes(ip, port);
    if (!ep)
        throw invalid_args(std::string(name) + " must be 4 (IPv4) or 16 (IPv6) bytes, got " +
                           std::to_string(ip.size()));
    return *ep;
}

inline sdbus::Struct<std::vector<uint8_t>, uint16_t> relay_struct(const s5::wire::Endpoint& ep) {
    return sdbus::Struct<std::vector<uint8_t>, uint16_t>(ep.ip_bytes(), ep.port);
}

}  // namespace s5d::busutil
