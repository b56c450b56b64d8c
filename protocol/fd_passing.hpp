// Descriptors passed over AF_UNIX sockets (SCM_RIGHTS), the way every
// message of ours carries them: at most one. OneFd is the control space for
// attaching one to a message being sent; take_passed_fd() takes the one a
// received message carried and closes any others a peer put in.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

#include "unique_fd.hpp"

namespace s5 {

class OneFd {
public:
    // Points `msg` at this control space, holding `fd`. Lives as long as
    // `msg` is sent with it.
    void attach(msghdr& msg, int fd) {
        std::memset(buf_, 0, sizeof buf_);
        msg.msg_control = buf_;
        msg.msg_controllen = sizeof buf_;
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }

private:
    alignas(cmsghdr) char buf_[CMSG_SPACE(sizeof(int))];
};

// From `msg` as recvmsg() filled it: the first descriptor, owned; every
// other one closed. `count` (if given) gets how many arrived.
inline UniqueFd take_passed_fd(msghdr& msg, size_t* count = nullptr) {
    UniqueFd first;
    size_t n = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t in_this = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < in_this; ++i, ++n) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (!first)
                first.reset(fd);
            else
                ::close(fd);
        }
    }
    if (count) *count = n;
    return first;
}

}  // namespace s5
