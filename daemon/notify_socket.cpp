#include "notify_socket.hpp"

#include "fd_passing.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace s5d {

NotifySocket::NotifySocket() {
    const char* a = std::getenv("NOTIFY_SOCKET");
    if (a && (a[0] == '/' || a[0] == '@') && std::strlen(a) < sizeof(sockaddr_un::sun_path)) address_ = a;
}

bool NotifySocket::connect() {
    if (address_.empty()) return false;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, address_.data(), address_.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';   // abstract: the name is exactly the bytes after '@'
    else
        ++len;                   // a path: with its NUL, as libsystemd sends it
    s5::UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    // As libsystemd: room for large messages, so that a send never waits.
    const int big = 8 << 20;
    (void)setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) < 0) return false;
    fd_ = std::move(fd);
    return true;
}

int NotifySocket::send_kept(const std::string& msg, int fd) {
    iovec iov{const_cast<char*>(msg.data()), msg.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    s5::OneFd control;
    if (fd >= 0) control.attach(m, fd);
    ssize_t n;
    do {
        n = ::sendmsg(fd_.get(), &m, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(msg.size()) ? 1 : -1;
}

int NotifySocket::send(const std::string& msg, int fd) {
    const auto now = std::chrono::steady_clock::now();
    if ((fd_ || (now >= retry_at_ && connect())) && send_kept(msg, fd) > 0) return 1;
    if (!fd_) retry_at_ = now + std::chrono::seconds(1);   // nobody there: libsystemd alone for a while
    fd_.reset();   // connect again next time
    return fd >= 0 ? sd_pid_notify_with_fds(0, 0, msg.c_str(), &fd, 1) : sd_notify(0, msg.c_str());
}

}  // namespace s5d
