#include "fd_reserve.hpp"

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace s5d {

namespace {

// The limit as last read, and when (CLOCK_MONOTONIC_COARSE, no system call).
// It can be changed at run time (prlimit), so it is read again once a
// second, and always when a descriptor comes near it.
rlim_t g_limit = 0;
int64_t g_read_at_ns = INT64_MIN / 2;

int64_t coarse_now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

bool below_reserve(int fd, rlim_t limit) {
    return limit > static_cast<rlim_t>(kFdReserve) && static_cast<rlim_t>(fd) < limit - static_cast<rlim_t>(kFdReserve);
}

}  // namespace

int outside_reserve(int fd) {
    if (fd < 0) return fd;
    const int64_t now = coarse_now_ns();
    // Within a second of the last read and well clear of that limit: fine
    // (the single-threaded daemon is the only caller).
    if (now - g_read_at_ns < 1'000'000'000 && below_reserve(fd + static_cast<int>(kFdReserve), g_limit)) return fd;
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return fd;
    g_limit = rl.rlim_cur;
    g_read_at_ns = now;
    if (below_reserve(fd, rl.rlim_cur)) return fd;
    ::close(fd);
    errno = EMFILE;
    return -1;
}

}  // namespace s5d
