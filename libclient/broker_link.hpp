// libs5client's link to s5brokerd. One D-Bus connection per process, made on
// first use and shared by every thread in turn (a FIFO ticket lock: a plain
// mutex let one thread starve the others, design.md §9); re-made after the
// bus daemon went away.
//
// A non-blocking call never waits for the shared connection: if another
// call is on it (or threads are waiting for it), it runs on a private
// connection instead (a few idle ones are kept for the next such call), so
// it costs at most its own round trip to the broker, which answers a
// non-blocking request at once.
//
// fork() never waits for a call in flight: no lock is held across fork.
// The child forgets (without closing: the sockets are shared with the
// parent) every connection and lock state it inherited, and makes its own
// connection on first use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "unique_fd.hpp"
#include "wire.hpp"

namespace s5::client {

struct AssociateOutcome {
    bool ok = false;
    // ok:
    s5::UniqueFd lease_fd;
    s5::wire::Endpoint relay;   // unset when pending
    bool pending = false;       // nonblocking and no association ready yet
    // !ok: the D-Bus error name and message (or a synthetic one when the
    // bus itself is unreachable).
    std::string error_name;
    std::string error_message;
};

// Associate(dst, server or "route by dst", {timeout_ms, nonblocking}): on
// the process's private channel when the broker can answer it at once
// (broker_channel.hpp), else on the bus.
// With `nonblocking` the broker may answer at once with an empty relay: the
// lease is pending and its fd will carry Ready or Lost; and the call does
// not wait for other threads' calls (see above).
// `rendezvous_len` is the caller's DstLen: the broker refuses (InvalidArgs,
// before making a lease) when the relay would not fit it.
AssociateOutcome broker_associate(const s5::wire::Endpoint& dst, const s5::wire::Endpoint* server,
                                  uint32_t timeout_ms, bool nonblocking = false, size_t rendezvous_len = SIZE_MAX);

struct GetServerOutcome {
    bool ok = false;
    std::string name;
    s5::wire::Endpoint server;
    std::string error_name;
    std::string error_message;
};

// GetServer(dst): the configured server an Associate without one would use.
GetServerOutcome broker_get_server(const s5::wire::Endpoint& dst);

}  // namespace s5::client
