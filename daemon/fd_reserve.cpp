#include "fd_reserve.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

namespace s5d {

int outside_reserve(int fd) {
    if (fd < 0) return fd;
    rlimit rl{};
    // Read every time: the limit can be raised at run time (prlimit).
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return fd;
    if (rl.rlim_cur > static_cast<rlim_t>(kFdReserve) &&
        static_cast<rlim_t>(fd) < rl.rlim_cur - static_cast<rlim_t>(kFdReserve))
        return fd;
    ::close(fd);
    errno = EMFILE;
    return -1;
}

}  // namespace s5d
