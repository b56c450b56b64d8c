// libs5client's link to s5brokerd: one D-Bus connection per process, made on
// first use, reused by every thread in turn (a FIFO ticket lock: a plain
// mutex let one thread starve the others, design.md §9), re-made after
// fork() and after the bus daemon went away.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "unique_fd.hpp"
#include "wire.hpp"

namespace s5::client {

struct AssociateOutcome {
    bool ok = false;
    // ok:
    std::string lease_path;
    s5::UniqueFd lease_fd;
    s5::wire::Endpoint relay;
    // !ok: the D-Bus error name and message (or a synthetic one when the
    // bus itself is unreachable).
    std::string error_name;
    std::string error_message;
};

AssociateOutcome broker_associate(const s5::wire::Endpoint& dst, const s5::wire::Endpoint* server,
                                  uint32_t timeout_ms);

inline constexpr const char* kNoBusError = "org.s5broker.Client.Error.NoBus";

}  // namespace s5::client
