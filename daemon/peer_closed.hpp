// Whether the other end of a stream or seqpacket socket has gone, looked at
// now (a MSG_PEEK read), before the event loop gets to its EOF event.
#pragma once

#include <sys/socket.h>

#include <cerrno>

namespace s5d {

// EOF or an error: gone. Bytes waiting, or nothing to read yet: still there.
inline bool peer_closed(int fd) {
    char c;
    ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

}  // namespace s5d
