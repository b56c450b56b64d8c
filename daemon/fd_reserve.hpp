// A reserve of file descriptors the broker never spends on associations
// and leases, so that when it runs short it can still answer the caller,
// log, reply on the bus, notify systemd and answer the bus daemon's credential replies
// (and a sanitizer build can still probe memory, which takes a pipe()).
//
// Linux hands out the lowest free descriptor number, so a new descriptor
// numbered at or above (soft RLIMIT_NOFILE - kFdReserve) means fewer than
// kFdReserve are left: one comparison per new descriptor, no counting.
#pragma once

#include <cerrno>

namespace s5d {

inline constexpr int kFdReserve = 16;

// Returns `fd` when it lies below the reserve; otherwise closes it and
// returns -1 with errno EMFILE, as if the limit had been reached. A
// negative `fd` is returned as is (errno untouched).
int outside_reserve(int fd);

// The errno of a descriptor the broker could not have (the process's or the
// system's table full, or the reserve reached): the broker's shortage, which
// callers hear as QuotaExceeded, never a server's fault.
inline bool out_of_descriptors(int e) { return e == EMFILE || e == ENFILE; }

}  // namespace s5d
