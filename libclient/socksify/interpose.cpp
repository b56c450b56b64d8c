// The C library calls libs5socksify.so replaces (LD_PRELOAD, see
// s5socksify(1)). Each one costs the application one table load when the
// descriptor is not an IP UDP socket the shim proxies, and goes straight to
// the C library whenever the shim itself (or libs5client, or sd-bus under
// it) is the caller.
//
// No C++ exception leaves here: every entry point is noexcept-wrapped and an
// exception is ENOMEM.
#undef _FORTIFY_SOURCE   // we define read/recv/recvfrom themselves, and their _chk forms
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include <s5broker/socks5.h>

#include "fd_table.hpp"
#include "real_calls.hpp"
#include "shim_log.hpp"
#include "shim_socket.hpp"

using namespace s5::socksify;

#define S5_SHIM extern "C" __attribute__((visibility("default")))

namespace {

template <typename Fn>
auto guarded(Fn&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
}

// The ShimSocket behind `fd` when the caller is the application, else null
// (FdTable::socket checks a descriptor it has not seen).
std::shared_ptr<ShimSocket> ours(int fd) { return t_inside ? nullptr : FdTable::global().socket(fd); }

// Only sockets already known: read()/write() never probe.
std::shared_ptr<ShimSocket> ours_known(int fd) {
    if (t_inside) return nullptr;
    if (FdTable::global().mark(fd) != FdTable::Mark::Shim) return nullptr;
    return FdTable::global().socket(fd);
}

bool is_ip_udp(int domain, int type, int protocol) {
    return (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_DGRAM &&
           (protocol == 0 || protocol == IPPROTO_UDP);
}

size_t iov_total(const iovec* iov, size_t n) {
    size_t t = 0;
    for (size_t i = 0; i < n; ++i) t += iov[i].iov_len;
    return t;
}

// One message of sendmsg/sendmmsg: proxied, or the C library's.
ssize_t send_message(int fd, ShimSocket& s, const msghdr* msg, int flags) {
    auto plan = s.plan_send(static_cast<const sockaddr*>(msg->msg_name), msg->msg_namelen);
    switch (plan.kind) {
        case ShimSocket::Plan::Kind::Passthrough: {
            Inside in;
            return real::sendmsg(fd, msg, flags);
        }
        case ShimSocket::Plan::Kind::Fail: errno = plan.err; return -1;
        case ShimSocket::Plan::Kind::Proxy: break;
    }
    // One datagram, however many iovecs (the application's ancillary data
    // is not carried: the source address is the association's).
    if (msg->msg_iovlen == 1)
        return s.send_proxied(fd, std::move(plan), msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len, flags);
    const size_t total = iov_total(msg->msg_iov, msg->msg_iovlen);
    std::vector<uint8_t> flat(total);
    size_t off = 0;
    for (size_t i = 0; i < static_cast<size_t>(msg->msg_iovlen); ++i) {
        if (msg->msg_iov[i].iov_len) std::memcpy(flat.data() + off, msg->msg_iov[i].iov_base, msg->msg_iov[i].iov_len);
        off += msg->msg_iov[i].iov_len;
    }
    return s.send_proxied(fd, std::move(plan), flat.data(), total, flags);
}

ssize_t send_buffer(int fd, ShimSocket& s, const void* buf, size_t len, int flags, const sockaddr* to,
                    socklen_t tolen) {
    iovec iov{const_cast<void*>(buf), len};
    msghdr m{};
    m.msg_name = const_cast<sockaddr*>(to);
    m.msg_namelen = to ? tolen : 0;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    return send_message(fd, s, &m, flags);
}

ssize_t recv_buffer(int fd, ShimSocket& s, void* buf, size_t len, int flags, sockaddr* from, socklen_t* fromlen) {
    if (from && !fromlen) {
        errno = EFAULT;
        return -1;
    }
    iovec iov{buf, len};
    msghdr m{};
    m.msg_name = from;
    m.msg_namelen = from ? *fromlen : 0;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    ssize_t n = s.recv(fd, &m, flags);
    if (n >= 0 && from) *fromlen = m.msg_namelen;
    return n;
}

// A proxied destination: the plan, and whether the message can go in a
// batch (its own plain target: socks5udp_sendmmsg frames msg_name as it is).
bool batchable(const msghdr& m) {
    if (!m.msg_name || m.msg_namelen < sizeof(sa_family_t)) return false;
    const auto* sa = static_cast<const sockaddr*>(m.msg_name);
    auto e = s5::wire::Endpoint::from_sockaddr(sa, m.msg_namelen);
    return e && !e->is_v4_mapped();
}

int shim_sendmmsg(int fd, mmsghdr* vec, unsigned vlen, int flags) {
    auto s = ours(fd);
    if (!s) {
        Inside in;
        return real::sendmmsg(fd, vec, vlen, flags);
    }
    return guarded([&]() -> int {
        // Runs of messages to proxied targets through one lease go out in
        // one socks5udp_sendmmsg; anything else (and whatever a batch could
        // not send: a renewal, a lost lease) one by one.
        unsigned i = 0;
        while (i < vlen) {
            auto plan = batchable(vec[i].msg_hdr)
                            ? s->plan_send(static_cast<const sockaddr*>(vec[i].msg_hdr.msg_name),
                                           vec[i].msg_hdr.msg_namelen)
                            : ShimSocket::Plan{};
            unsigned run = 0;
            if (plan.kind == ShimSocket::Plan::Kind::Proxy) {
                run = 1;
                while (i + run < vlen && run < 1024 && batchable(vec[i + run].msg_hdr)) {
                    auto next = s->plan_send(static_cast<const sockaddr*>(vec[i + run].msg_hdr.msg_name),
                                             vec[i + run].msg_hdr.msg_namelen);
                    if (next.kind != ShimSocket::Plan::Kind::Proxy || next.lease != plan.lease) break;
                    ++run;
                }
            }
            if (run > 1) {
                int r;
                {
                    Inside in;
                    r = socks5udp_sendmmsg(fd, vec + i, run, flags,
                                           reinterpret_cast<sockaddr*>(&plan.lease->rendezvous),
                                           plan.lease->rendezvous_len);
                }
                if (r > 0) {
                    note("sendmmsg: %d of %u datagrams in one batch through lease fd %d", r, run, plan.lease->fd);
                    i += static_cast<unsigned>(r);
                    continue;
                }
            }
            ssize_t n = send_message(fd, *s, &vec[i].msg_hdr, flags);
            if (n < 0) return i == 0 ? -1 : static_cast<int>(i);
            vec[i].msg_len = static_cast<unsigned>(n);
            ++i;
        }
        return static_cast<int>(i);
    });
}

int shim_recvmmsg(int fd, mmsghdr* vec, unsigned vlen, int flags, struct timespec* timeout) {
    auto s = ours_known(fd);
    if (!s || !s->filters_input()) {
        Inside in;
        return real::recvmmsg(fd, vec, vlen, flags, timeout);
    }
    return guarded([&]() -> int {
        // The first as the socket blocks; the rest without waiting when
        // MSG_WAITFORONE asks (the timeout is not applied: see the man page).
        unsigned i = 0;
        for (; i < vlen; ++i) {
            int f = flags & ~MSG_WAITFORONE;
            if (i > 0 && (flags & MSG_WAITFORONE)) f |= MSG_DONTWAIT;
            ssize_t n = s->recv(fd, &vec[i].msg_hdr, f);
            if (n < 0) {
                if (i == 0) return -1;
                break;
            }
            vec[i].msg_len = static_cast<unsigned>(n);
        }
        return static_cast<int>(i);
    });
}

// fork(): the child must not inherit a table lock held by another thread.
void before_fork() {
    FdTable::global().lock();
    routes().lock();
}
void after_fork() {
    routes().unlock();
    FdTable::global().unlock();
}

__attribute__((constructor)) void shim_start() {
    // Without a broker the shim fails closed: libs5client's automatic
    // fallback to direct mode (which needs credentials in the environment)
    // only when the user asked for it by setting S5CLIENT_MODE.
    setenv("S5CLIENT_MODE", "broker", 0);
    (void)FdTable::global();
    (void)routes();
    pthread_atfork(before_fork, after_fork, after_fork);
}

}  // namespace

// ---- descriptors ----------------------------------------------------------------

S5_SHIM int socket(int domain, int type, int protocol) {
    int fd = real::socket(domain, type, protocol);
    if (fd < 0) return fd;
    try {
        if (!t_inside && is_ip_udp(domain, type, protocol))
            FdTable::global().add_socket(fd, std::make_shared<ShimSocket>(domain));
        else
            FdTable::global().forget(fd);
    } catch (...) {
        FdTable::global().forget(fd);   // unknown: checked on first send
    }
    return fd;
}

S5_SHIM int close(int fd) {
    auto& t = FdTable::global();
    const auto m = t.mark(fd);
    // A lease socket of the shim's: not the application's to close (it never
    // had this number). Programs that close every descriptor they do not
    // know hit this.
    if (m == FdTable::Mark::Private && !t_inside) {
        errno = EBADF;
        return -1;
    }
    if (m != FdTable::Mark::Unknown) t.forget(fd);
    return real::close(fd);
}

S5_SHIM int close_range(unsigned first, unsigned last, int flags) {
    if (!(flags & CLOSE_RANGE_CLOEXEC)) FdTable::global().forget_range(first, last);
    return real::close_range(first, last, flags);
}

S5_SHIM int dup(int fd) {
    int r = real::dup(fd);
    if (r >= 0) FdTable::global().copy(fd, r);
    return r;
}

S5_SHIM int dup2(int fd, int fd2) {
    if (fd == fd2) return real::dup2(fd, fd2);
    int r = real::dup2(fd, fd2);
    if (r >= 0 && !t_inside) FdTable::global().copy(fd, fd2);
    return r;
}

// Inside libs5client (t_inside) a dup3 is the library's own: its lease fd
// onto the TCP socket the shim made, or an association's claim socket put
// in place of the application's UDP socket (libclient/claim_socket.hpp),
// which stays the same ShimSocket.
S5_SHIM int dup3(int fd, int fd2, int flags) {
    int r = real::dup3(fd, fd2, flags);
    if (r >= 0 && !t_inside) FdTable::global().copy(fd, fd2);
    return r;
}

namespace {
int shim_fcntl(int fd, int cmd, void* arg) {
    int r = real::fcntl(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) FdTable::global().copy(fd, r);
    return r;
}
}  // namespace

// Both names, whatever _FILE_OFFSET_BITS makes <fcntl.h> call "fcntl".
S5_SHIM int s5socksify_fcntl(int fd, int cmd, ...) __asm__("fcntl");
S5_SHIM int s5socksify_fcntl64(int fd, int cmd, ...) __asm__("fcntl64");

S5_SHIM int s5socksify_fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    return shim_fcntl(fd, cmd, arg);
}

S5_SHIM int s5socksify_fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    return shim_fcntl(fd, cmd, arg);
}

// ---- connecting -------------------------------------------------------------------

S5_SHIM int connect(int fd, const struct sockaddr* addr, socklen_t len) {
    auto s = ours(fd);
    if (!s) return real::connect(fd, addr, len);
    return guarded([&] { return s->connect(fd, addr, len); });
}

S5_SHIM int getpeername(int fd, struct sockaddr* addr, socklen_t* len) {
    auto s = ours_known(fd);
    if (s && len) {
        int r = guarded([&] { return s->peer_name(addr, len) ? 1 : 0; });
        if (r == 1) return 0;
    }
    return real::getpeername(fd, addr, len);
}

// ---- sending -----------------------------------------------------------------------

S5_SHIM ssize_t sendto(int fd, const void* buf, size_t len, int flags, const struct sockaddr* to, socklen_t tolen) {
    auto s = ours(fd);
    if (!s) return real::sendto(fd, buf, len, flags, to, tolen);
    return guarded([&] { return send_buffer(fd, *s, buf, len, flags, to, tolen); });
}

S5_SHIM ssize_t send(int fd, const void* buf, size_t len, int flags) {
    auto s = ours_known(fd);
    if (!s) return real::send(fd, buf, len, flags);
    return guarded([&] { return send_buffer(fd, *s, buf, len, flags, nullptr, 0); });
}

S5_SHIM ssize_t write(int fd, const void* buf, size_t len) {
    auto s = ours_known(fd);
    if (!s) return real::write(fd, buf, len);
    return guarded([&] { return send_buffer(fd, *s, buf, len, 0, nullptr, 0); });
}

S5_SHIM ssize_t writev(int fd, const struct iovec* iov, int n) {
    auto s = ours_known(fd);
    if (!s || n < 0) return real::writev(fd, iov, n);
    return guarded([&]() -> ssize_t {
        msghdr m{};
        m.msg_iov = const_cast<iovec*>(iov);
        m.msg_iovlen = static_cast<size_t>(n);
        return send_message(fd, *s, &m, 0);
    });
}

S5_SHIM ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
    auto s = ours(fd);
    if (!s || !msg) return real::sendmsg(fd, msg, flags);
    return guarded([&] { return send_message(fd, *s, msg, flags); });
}

S5_SHIM int sendmmsg(int fd, struct mmsghdr* vec, unsigned int vlen, int flags) {
    return shim_sendmmsg(fd, vec, vlen, flags);
}

// ---- receiving ---------------------------------------------------------------------

S5_SHIM ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
    auto s = ours_known(fd);
    if (!s || !msg || !s->filters_input() || (flags & MSG_ERRQUEUE)) return real::recvmsg(fd, msg, flags);
    return guarded([&] { return s->recv(fd, msg, flags); });
}

S5_SHIM int recvmmsg(int fd, struct mmsghdr* vec, unsigned int vlen, int flags, struct timespec* timeout) {
    return shim_recvmmsg(fd, vec, vlen, flags, timeout);
}

S5_SHIM ssize_t recvfrom(int fd, void* buf, size_t len, int flags, struct sockaddr* from, socklen_t* fromlen) {
    auto s = ours_known(fd);
    if (!s || !s->filters_input() || (flags & MSG_ERRQUEUE)) return real::recvfrom(fd, buf, len, flags, from, fromlen);
    return guarded([&] { return recv_buffer(fd, *s, buf, len, flags, from, fromlen); });
}

S5_SHIM ssize_t recv(int fd, void* buf, size_t len, int flags) {
    auto s = ours_known(fd);
    if (!s || !s->filters_input() || (flags & MSG_ERRQUEUE)) return real::recv(fd, buf, len, flags);
    return guarded([&] { return recv_buffer(fd, *s, buf, len, flags, nullptr, nullptr); });
}

S5_SHIM ssize_t read(int fd, void* buf, size_t len) {
    auto s = ours_known(fd);
    if (!s || !s->filters_input()) return real::read(fd, buf, len);
    return guarded([&] { return recv_buffer(fd, *s, buf, len, 0, nullptr, nullptr); });
}

S5_SHIM ssize_t readv(int fd, const struct iovec* iov, int n) {
    auto s = ours_known(fd);
    if (!s || !s->filters_input() || n < 0) return real::readv(fd, iov, n);
    return guarded([&]() -> ssize_t {
        msghdr m{};
        m.msg_iov = const_cast<iovec*>(iov);
        m.msg_iovlen = static_cast<size_t>(n);
        return s->recv(fd, &m, 0);
    });
}

// _FORTIFY_SOURCE builds (all of Debian's) call these instead.
S5_SHIM ssize_t __read_chk(int fd, void* buf, size_t len, size_t buflen) {
    if (len > buflen) abort();
    return read(fd, buf, len);
}
S5_SHIM ssize_t __recv_chk(int fd, void* buf, size_t len, size_t buflen, int flags) {
    if (len > buflen) abort();
    return recv(fd, buf, len, flags);
}
S5_SHIM ssize_t __recvfrom_chk(int fd, void* buf, size_t len, size_t buflen, int flags, struct sockaddr* from,
                               socklen_t* fromlen) {
    if (len > buflen) abort();
    return recvfrom(fd, buf, len, flags, from, fromlen);
}

// ---- syscall(2) ----------------------------------------------------------------------
// libuv (under bind9's dig, among others) makes sendmmsg and recvmmsg with
// syscall(2) rather than the C library's wrappers; those numbers are
// routed to the calls above. Nothing else is: allocators call syscall()
// while they initialise, where nothing may allocate.

S5_SHIM long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (long& v : a) v = va_arg(ap, long);
    va_end(ap);
    if (!t_inside) {
        switch (number) {
            case SYS_sendmmsg:
                return shim_sendmmsg(static_cast<int>(a[0]), reinterpret_cast<mmsghdr*>(a[1]),
                                     static_cast<unsigned>(a[2]), static_cast<int>(a[3]));
            case SYS_recvmmsg:
                return shim_recvmmsg(static_cast<int>(a[0]), reinterpret_cast<mmsghdr*>(a[1]),
                                     static_cast<unsigned>(a[2]), static_cast<int>(a[3]),
                                     reinterpret_cast<struct timespec*>(a[4]));
            case SYS_sendmsg:
                return sendmsg(static_cast<int>(a[0]), reinterpret_cast<const msghdr*>(a[1]), static_cast<int>(a[2]));
            case SYS_recvmsg:
                return recvmsg(static_cast<int>(a[0]), reinterpret_cast<msghdr*>(a[1]), static_cast<int>(a[2]));
            case SYS_sendto:
                return sendto(static_cast<int>(a[0]), reinterpret_cast<const void*>(a[1]), static_cast<size_t>(a[2]),
                              static_cast<int>(a[3]), reinterpret_cast<const sockaddr*>(a[4]),
                              static_cast<socklen_t>(a[5]));
            case SYS_recvfrom:
                return recvfrom(static_cast<int>(a[0]), reinterpret_cast<void*>(a[1]), static_cast<size_t>(a[2]),
                                static_cast<int>(a[3]), reinterpret_cast<sockaddr*>(a[4]),
                                reinterpret_cast<socklen_t*>(a[5]));
            case SYS_connect:
                return connect(static_cast<int>(a[0]), reinterpret_cast<const sockaddr*>(a[1]),
                               static_cast<socklen_t>(a[2]));
            default: break;
        }
    }
    return real::syscall6(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
