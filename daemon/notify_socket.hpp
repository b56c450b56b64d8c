// One datagram socket to the service manager's notification socket
// ($NOTIFY_SOCKET), made once and kept, for the fd store's many messages
// (FDSTORE=1 with a descriptor, FDSTOREREMOVE=1): sd_pid_notify_with_fds()
// makes, tunes and closes a socket for every message, about ten system
// calls each, and every lease and pooled association stores one descriptor
// and later drops it.
//
// Falls back to sd_pid_notify_with_fds() whenever the kept socket cannot
// be made or a send on it fails (the manager re-executed and bound its
// socket anew: the next message connects again), so nothing is lost by
// using it. Addresses other than a path or an abstract name ("@...") are
// always left to libsystemd.
#pragma once

#include <chrono>
#include <string>

#include "unique_fd.hpp"

namespace s5d {

class NotifySocket {
public:
    // $NOTIFY_SOCKET as it is now; no socket until the first send.
    NotifySocket();
    // Like sd_pid_notify_with_fds(0, 0, msg, &fd, fd >= 0): > 0 sent,
    // 0 no service manager, < 0 -errno.
    int send(const std::string& msg, int fd = -1);

private:
    bool connect();
    int send_kept(const std::string& msg, int fd);

    std::string address_;
    s5::UniqueFd fd_;
    std::chrono::steady_clock::time_point retry_at_{};
};

}  // namespace s5d
