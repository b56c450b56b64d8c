// The C API of <s5broker/socks5.h>: argument checks with AIX's errors, then
// one Associate call to s5brokerd, whose lease fd replaces the caller's Socket.
#include "s5broker/socks5.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "broker_link.hpp"
#include "errors.hpp"
#include "wire.hpp"

#define S5_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

thread_local int t_s5errno = 0;

int fail(int err, int s5err) {
    t_s5errno = s5err;
    errno = err;
    return -1;
}

// EFAULT "where detectable": process_vm_readv/writev on ourselves fault-check
// a user pointer in one syscall without risking SIGSEGV. If the kernel
// refuses the call (seccomp, old kernel), we cannot tell and assume valid.
bool readable(const void* p, size_t len) {
    if (len == 0) return true;
    char buf[256];
    size_t n = len < sizeof buf ? len : sizeof buf;
    iovec local{buf, n}, remote{const_cast<void*>(p), n};
    ssize_t r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    return r >= 0 || errno != EFAULT;
}

bool writable(void* p, size_t len) {
    if (len == 0) return true;
    char buf[256];
    size_t n = len < sizeof buf ? len : sizeof buf;
    iovec local{buf, n}, remote{p, n};
    // Read the bytes, then write the same bytes back: no visible change.
    if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) < 0) return errno != EFAULT;
    ssize_t r = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
    return r >= 0 || errno != EFAULT;
}

// Checks an address argument; returns 0 or the errno to fail with.
int check_address(const sockaddr* sa, size_t len, s5::wire::Endpoint& out) {
    if (!sa) return EINVAL;
    if (len < sizeof(sa_family_t)) return EINVAL;
    if (!readable(sa, len < sizeof(sockaddr_in6) ? len : sizeof(sockaddr_in6))) return EFAULT;
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) return EAFNOSUPPORT;
    auto ep = s5::wire::Endpoint::from_sockaddr(sa, len);
    if (!ep) return EINVAL;  // shorter than sockaddr_in / sockaddr_in6
    out = *ep;
    return 0;
}

// The socket checks of AIX's socks5udp_associate, in its order.
int check_socket(int s) {
    if (fcntl(s, F_GETFD) < 0) return EBADF;
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return errno == ENOTSOCK ? ENOTSOCK : errno;
    if (type != SOCK_STREAM) return EINVAL;
    int listening = 0;
    len = sizeof listening;
    if (getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening) return EINVAL;
    sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getpeername(s, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) return EISCONN;
    return 0;
}

}  // namespace

S5_EXPORT int* socks5_errno_location(void) { return &t_s5errno; }

S5_EXPORT const char* socks5_strerror(int s5err) { return s5::err::s5_text(s5err); }

S5_EXPORT int socks5udp_associate(int Socket, const struct sockaddr* Dst, size_t DstLen, const struct sockaddr* Svr,
                                  size_t SvrLen) {
    t_s5errno = 0;
    try {
        if (int e = check_socket(Socket)) return fail(e, 0);
        s5::wire::Endpoint dst, svr;
        if (int e = check_address(Dst, DstLen, dst)) return fail(e, 0);
        // AIX overwrites Dst with the rendezvous: it must be writable.
        if (!writable(const_cast<sockaddr*>(Dst), DstLen < sizeof(sockaddr_in6) ? DstLen : sizeof(sockaddr_in6)))
            return fail(EFAULT, 0);
        if (Svr)
            if (int e = check_address(Svr, SvrLen, svr)) return fail(e, 0);

        auto r = s5::client::broker_associate(dst, Svr ? &svr : nullptr, 0);
        if (!r.ok) {
            if (r.error_name == s5::client::kNoBusError) return fail(ECONNREFUSED, S5_ENOSERV);
            auto m = s5::err::from_dbus_name(r.error_name);
            return fail(m.err, m.s5err);
        }

        sockaddr_storage rv{};
        size_t rvlen = r.relay.to_sockaddr(rv);
        // The rendezvous must fit the caller's buffer; if not, the lease is
        // dropped (closing its fd releases it in the broker).
        if (rvlen == 0 || rvlen > DstLen) return fail(EINVAL, 0);

        // The app's Socket becomes the lease: same descriptor number, same
        // close-on-exec and non-blocking state.
        int fdflags = fcntl(Socket, F_GETFD);
        int flflags = fcntl(Socket, F_GETFL);
        if (fdflags < 0 || flflags < 0) return fail(EBADF, 0);
        if (flflags & O_NONBLOCK) {
            int cur = fcntl(r.lease_fd.get(), F_GETFL);
            if (cur < 0 || fcntl(r.lease_fd.get(), F_SETFL, cur | O_NONBLOCK) < 0) return fail(errno, 0);
        }
        // Consume the broker's "ready" event (queued before the reply) so a
        // poll() on Socket only wakes for what comes later.
        unsigned char ev[s5::wire::kLeaseEventSize];
        (void)recv(r.lease_fd.get(), ev, sizeof ev, MSG_DONTWAIT);
        if (dup3(r.lease_fd.get(), Socket, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) return fail(errno, 0);
        std::memcpy(const_cast<sockaddr*>(Dst), &rv, rvlen);
        return 0;
    } catch (const std::bad_alloc&) {
        return fail(ENOMEM, 0);
    } catch (...) {
        return fail(ENOTCONN, 0);
    }
}
