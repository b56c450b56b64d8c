// The C API of <s5broker/socks5.h>: argument checks with AIX's errors, then
// one Associate call to s5brokerd, whose lease fd replaces the caller's Socket
// and is recorded in the process's lease table; the datagram calls frame for
// and follow those leases (lease_table.hpp, datagram.hpp). Without a broker
// (or with S5CLIENT_MODE=direct) the association is made on Socket itself
// (direct.hpp) and recorded in the same table.
#include "s5broker/socks5.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <cstring>
#include <new>
#include <optional>
#include <string>

#include "aix_config.hpp"
#include "broker_link.hpp"
#include "datagram.hpp"
#include "direct.hpp"
#include "errors.hpp"
#include "lease_table.hpp"
#include "wire.hpp"

#define S5_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

thread_local int t_s5errno = 0;

int fail(int err, int s5err) {
    t_s5errno = s5err;
    errno = err;
    return -1;
}

// This process's id for process_vm_readv/writev, without a getpid() per
// check (glibc does not cache it): refreshed in a forked child.
std::atomic<pid_t> g_pid{0};

pid_t self_pid() {
    pid_t p = g_pid.load(std::memory_order_relaxed);
    if (p == 0) {
        static std::once_flag once;
        std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { g_pid.store(0); }); });
        p = getpid();
        g_pid.store(p, std::memory_order_relaxed);
    }
    return p;
}

// EFAULT "where detectable": process_vm_readv/writev on ourselves fault-check
// a user pointer in one syscall without risking SIGSEGV. If the kernel
// refuses the call (seccomp, old kernel), we cannot tell and assume valid.
bool readable(const void* p, size_t len) {
    if (len == 0) return true;
    char buf[256];
    size_t n = len < sizeof buf ? len : sizeof buf;
    iovec local{buf, n}, remote{const_cast<void*>(p), n};
    ssize_t r = process_vm_readv(self_pid(), &local, 1, &remote, 1, 0);
    return r >= 0 || errno != EFAULT;
}

bool writable(void* p, size_t len) {
    if (len == 0) return true;
    char buf[256];
    size_t n = len < sizeof buf ? len : sizeof buf;
    iovec local{buf, n}, remote{p, n};
    // Read the bytes, then write the same bytes back: no visible change.
    if (process_vm_readv(self_pid(), &local, 1, &remote, 1, 0) < 0) return errno != EFAULT;
    ssize_t r = process_vm_writev(self_pid(), &local, 1, &remote, 1, 0);
    return r >= 0 || errno != EFAULT;
}

// Checks the form of an address argument without probing the memory (the
// datagram calls' hot path); returns 0 or the errno to fail with.
int parse_address(const sockaddr* sa, size_t len, s5::wire::Endpoint& out) {
    if (!sa) return EINVAL;
    if (len < sizeof(sa_family_t)) return EINVAL;
    sa_family_t family;
    std::memcpy(&family, reinterpret_cast<const char*>(sa) + offsetof(sockaddr, sa_family), sizeof family);
    if (family != AF_INET && family != AF_INET6) return EAFNOSUPPORT;
    auto ep = s5::wire::Endpoint::from_sockaddr(sa, len);
    if (!ep) return EINVAL;  // shorter than sockaddr_in / sockaddr_in6
    out = *ep;
    return 0;
}

// Checks an address argument; returns 0 or the errno to fail with.
int check_address(const sockaddr* sa, size_t len, s5::wire::Endpoint& out) {
    if (!sa) return EINVAL;
    if (len < sizeof(sa_family_t)) return EINVAL;
    if (!readable(sa, len < sizeof(sockaddr_in6) ? len : sizeof(sockaddr_in6))) return EFAULT;
    return parse_address(sa, len, out);
}

// EBADF / ENOTSOCK, else 0 with the socket's type and descriptor flags.
int socket_type(int s, int& type, int& fdflags) {
    if ((fdflags = fcntl(s, F_GETFD)) < 0) return EBADF;
    socklen_t len = sizeof type;
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return errno == ENOTSOCK ? ENOTSOCK : errno;
    return 0;
}

// The rest of the socket checks of AIX's socks5udp_associate, in its order.
int check_stream_socket(int s, int type) {
    if (type != SOCK_STREAM) return EINVAL;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening) return EINVAL;
    sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getpeername(s, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) return EISCONN;
    return 0;
}

// A lease the broker is renewing: no relay to send to until Renewed (or
// Lost) arrives, which makes the lease socket readable.
int fail_renewing() { return fail(EAGAIN, S5_ERENEWING); }

int fail_mapped(const std::string& error_name) {
    auto m = s5::err::from_dbus_name(error_name);
    return fail(m.err, m.s5err);
}

// Where socks5udp_sendto / socks5udp_sendmmsg send for the rendezvous
// `svr` (`Svr` as the caller gave it).
struct SendTarget {
    std::optional<s5::client::LeaseInfo> lease;
    sockaddr_storage to;
    socklen_t tolen = 0;
    // The source IP the lease's association expects, if it has one. A
    // claim socket is bound to it: nothing to add to the datagram.
    const s5::wire::Endpoint* source() const {
        return lease && !lease->claimed && lease->source.ip_len() != 0 && !lease->source_refused ? &lease->source
                                                                                                  : nullptr;
    }
    // The kernel refused that source as not local: stop using it.
    void refuse_source() const { s5::client::LeaseTable::global().refuse_source(lease->fd, lease->source); }
};

// Svr names a lease of this process: its events are applied, its claim
// socket is put in place on `Socket` (the first time), and the datagrams go
// to its current relay, from its current source (0, or the call's -1 after
// fail(): renewing, lost, the claim socket refused). Any other Svr is used
// as given.
int send_target(int Socket, const s5::wire::Endpoint& svr, const sockaddr* Svr, SendTarget& t) {
    t.lease = s5::client::LeaseTable::global().route(svr);
    if (t.lease) {
        if (t.lease->state == s5::client::LeaseState::Renewing) return fail_renewing();
        if (t.lease->state != s5::client::LeaseState::Active) return fail(t.lease->err, t.lease->s5err);  // lost
        if (t.lease->claimed && t.lease->placed != Socket) {
            if (int e = s5::client::LeaseTable::global().place(t.lease->fd, Socket)) return fail(e, 0);
            t.lease->placed = Socket;
        }
        t.tolen = static_cast<socklen_t>(t.lease->relay.to_sockaddr(t.to));
    } else {
        // Not one of our leases: to Svr as given (scope id and all).
        t.tolen = svr.family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
        std::memcpy(&t.to, Svr, t.tolen);
    }
    return 0;
}

// A second socks5udp_associate() on a lease socket, as connect(2) after
// EINPROGRESS: 0 with the relay once Ready arrived, the failure once Lost
// did, EALREADY while nothing has, EISCONN once it has returned 0. A lease
// that became ready and is already being renewed completes too: its
// rendezvous stays valid across the renewal.
int complete_lease(int Socket, const s5::client::LeaseInfo& l, const sockaddr* Dst, size_t DstLen) {
    using s5::client::LeaseState;
    if (l.completed) return fail(EISCONN, 0);
    switch (l.state) {
        case LeaseState::Pending: return fail(EALREADY, 0);
        case LeaseState::Lost: return fail(l.err, l.s5err);
        case LeaseState::Active:
        case LeaseState::Renewing: break;
    }
    sockaddr_storage rv{};
    size_t rvlen = l.relay.to_sockaddr(rv);
    if (rvlen == 0 || rvlen > DstLen) return fail(EINVAL, 0);
    s5::client::LeaseTable::global().mark_completed(Socket);
    std::memcpy(const_cast<sockaddr*>(Dst), &rv, rvlen);
    return 0;
}

// The end of a direct-mode call: Dst gets the rendezvous on success.
int finish_direct(int Socket, const s5::client::DirectOutcome& r, const sockaddr* Dst) {
    if (r.rc != 0) return fail(r.err, r.s5err);
    sockaddr_storage rv{};
    size_t rvlen = r.relay.to_sockaddr(rv);
    s5::client::SocketCache::global().forget(Socket);
    std::memcpy(const_cast<sockaddr*>(Dst), &rv, rvlen);
    return 0;
}

// For the C entry points: no C++ exception may cross into C.
template <typename Fn>
auto guarded(Fn&& fn, decltype(fn()) on_error) -> decltype(fn()) {
    try {
        return fn();
    } catch (const std::bad_alloc&) {
        fail(ENOMEM, 0);
    } catch (...) {
        fail(ENOTCONN, 0);
    }
    return on_error;
}

}  // namespace

S5_EXPORT int* socks5_errno_location(void) { return &t_s5errno; }

S5_EXPORT const char* socks5_strerror(int s5err) { return s5::err::s5_text(s5err); }

S5_EXPORT int socks5udp_associate(int Socket, const struct sockaddr* Dst, size_t DstLen, const struct sockaddr* Svr,
                                  size_t SvrLen) {
    t_s5errno = 0;
    return guarded([&]() -> int {
        auto& table = s5::client::LeaseTable::global();
        int type = 0, fdflags = 0;
        if (int e = socket_type(Socket, type, fdflags)) return fail(e, 0);
        // A lease socket of ours (same descriptor, same socket): a repeated
        // call, as after EINPROGRESS. Any other SEQPACKET socket is EINVAL.
        std::optional<s5::client::LeaseInfo> lease;
        // A direct association in progress on this socket (non-blocking):
        // this call continues it, as connect(2) after EINPROGRESS.
        bool continuing = false;
        if (type == SOCK_SEQPACKET) {
            lease = table.lookup(Socket);
            if (!lease) return fail(EINVAL, 0);
        } else if (type == SOCK_STREAM && s5::client::direct_in_progress(Socket)) {
            continuing = true;
        } else if (int e = check_stream_socket(Socket, type)) {
            return fail(e, 0);
        }
        s5::wire::Endpoint dst, svr;
        // AIX overwrites Dst with the rendezvous: it must be writable (the
        // check reads it too, so it is also the readable check).
        if (!Dst || DstLen < sizeof(sa_family_t)) return fail(EINVAL, 0);
        if (!writable(const_cast<sockaddr*>(Dst), DstLen < sizeof(sockaddr_in6) ? DstLen : sizeof(sockaddr_in6)))
            return fail(EFAULT, 0);
        if (int e = parse_address(Dst, DstLen, dst)) return fail(e, 0);
        if (Svr)
            if (int e = check_address(Svr, SvrLen, svr)) return fail(e, 0);
        if (lease) return complete_lease(Socket, *lease, Dst, DstLen);

        int flflags = fcntl(Socket, F_GETFL);
        if (flflags < 0) return fail(EBADF, 0);
        const bool nonblocking = (flflags & O_NONBLOCK) != 0;
        if (continuing) return finish_direct(Socket, s5::client::direct_continue(Socket, DstLen, nonblocking), Dst);

        // Direct mode: S5CLIENT_MODE=direct, or (auto) no broker on the bus
        // and a server to go to. Without Svr, the server is the one
        // socks5c.conf names for Dst (aix_config.hpp); with none there:
        // ENOENT + S5_ENOSERV in direct mode, and in auto mode the broker's
        // absence is reported (ECONNREFUSED + S5_ENOSERV), the real cause.
        const auto mode = s5::client::mode_from_env();
        if (mode == s5::client::Mode::Direct) {
            if (!Svr) {
                auto a = s5::client::server_from_socks5c_conf(dst);
                if (!a.ok) return fail(a.err, a.s5err);
                svr = a.server;
            }
            return finish_direct(Socket, s5::client::direct_start(Socket, svr, DstLen, nonblocking), Dst);
        }
        auto r = s5::client::broker_associate(dst, Svr ? &svr : nullptr, 0, nonblocking, DstLen);
        if (!r.ok) {
            if (mode == s5::client::Mode::Auto && s5::client::broker_absent(r.error_name)) {
                if (Svr) return finish_direct(Socket, s5::client::direct_start(Socket, svr, DstLen, nonblocking), Dst);
                if (auto a = s5::client::server_from_socks5c_conf(dst); a.ok)
                    return finish_direct(Socket, s5::client::direct_start(Socket, a.server, DstLen, nonblocking), Dst);
            }
            return fail_mapped(r.error_name);
        }

        sockaddr_storage rv{};
        size_t rvlen = 0;
        if (!r.pending) {
            rvlen = r.relay.to_sockaddr(rv);
            // The broker skipped servers whose relay would not fit DstLen;
            // checked again all the same (closing the fd releases the lease).
            if (rvlen == 0 || rvlen > DstLen) return fail(EINVAL, 0);
        }

        // The app's Socket becomes the lease: same descriptor number, same
        // close-on-exec and non-blocking state.
        if (nonblocking) {
            int cur = fcntl(r.lease_fd.get(), F_GETFL);
            if (cur < 0 || fcntl(r.lease_fd.get(), F_SETFL, cur | O_NONBLOCK) < 0) return fail(errno, 0);
        }
        // Recorded before dup3() so that a failure leaves Socket untouched.
        // With a relay this reads the broker's Ready event (queued before
        // the reply): its source IP is where datagrams must come from.
        auto info = table.add(Socket, r.lease_fd.get(), r.pending ? nullptr : &r.relay);
        if (!info) return fail(errno, 0);
        if (info->state == s5::client::LeaseState::Lost) {
            // Gone already (the broker's first word was Lost, or EOF).
            table.remove(Socket);
            return fail(info->err, info->s5err);
        }
        if (dup3(r.lease_fd.get(), Socket, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
            int e = errno;
            table.remove(Socket);
            return fail(e, 0);
        }
        // If the number was a UDP socket the datagram calls checked before,
        // it is not one any more.
        s5::client::SocketCache::global().forget(Socket);
        // Nonblocking and no association ready: Socket becomes readable
        // when Ready or Lost arrives; call again then (see complete_lease).
        if (r.pending) return fail(EINPROGRESS, 0);
        std::memcpy(const_cast<sockaddr*>(Dst), &rv, rvlen);
        return 0;
    }, -1);
}

S5_EXPORT int socks5udp_sendto(int Socket, void* Message, size_t MsgLen, int Flags, struct sockaddr* Dst,
                               size_t DstLen, struct sockaddr* Svr, size_t SvrLen) {
    t_s5errno = 0;
    return guarded([&]() -> int {
        auto& sockets = s5::client::SocketCache::global();
        // Socket first, then the addresses, as socks5udp_associate.
        if (int e = sockets.check(Socket)) return fail(e, 0);
        s5::wire::Endpoint dst, svr;
        if (int e = parse_address(Dst, DstLen, dst)) return fail(e, 0);
        if (int e = parse_address(Svr, SvrLen, svr)) return fail(e, 0);

        SendTarget t;
        if (int r = send_target(Socket, svr, Svr, t)) return r;
        bool refused = false;
        if (s5::client::send_framed(Socket, reinterpret_cast<const sockaddr*>(&t.to), t.tolen, dst, Message, MsgLen,
                                    Flags, t.source(), &refused) < 0)
            return fail(sockets.recheck_after_error(Socket, errno), 0);
        if (refused) t.refuse_source();
        return 0;
    }, -1);
}

S5_EXPORT ssize_t socks5udp_recvfrom(int Socket, void* Buf, size_t Len, int Flags, struct sockaddr* From,
                                     socklen_t* FromLen) {
    t_s5errno = 0;
    return guarded([&]() -> ssize_t {
        auto& sockets = s5::client::SocketCache::global();
        if (int e = sockets.check(Socket)) return fail(e, 0);
        // Where recvfrom(2) would fault after taking the datagram, refuse
        // before; the error queue carries no SOCKS datagrams.
        if ((From && !FromLen) || (Flags & MSG_ERRQUEUE)) return fail(EINVAL, 0);
        ssize_t n = s5::client::recv_deframed(Socket, Buf, Len, Flags, From, FromLen,
                                              s5::client::LeaseTable::global());
        if (n < 0) return fail(sockets.recheck_after_error(Socket, errno), 0);
        return n;
    }, ssize_t{-1});
}

S5_EXPORT int socks5udp_sendmmsg(int Socket, struct mmsghdr* MsgVec, unsigned int VLen, int Flags,
                                 struct sockaddr* Svr, size_t SvrLen) {
    t_s5errno = 0;
    return guarded([&]() -> int {
        auto& sockets = s5::client::SocketCache::global();
        if (int e = sockets.check(Socket)) return fail(e, 0);
        s5::wire::Endpoint svr;
        if (int e = parse_address(Svr, SvrLen, svr)) return fail(e, 0);
        if (VLen > 0 && !MsgVec) return fail(EINVAL, 0);
        // As socks5udp_sendto, once for the whole batch.
        SendTarget t;
        if (int r = send_target(Socket, svr, Svr, t)) return r;
        bool refused = false;
        int n = s5::client::send_framed_batch(Socket, reinterpret_cast<const sockaddr*>(&t.to), t.tolen, MsgVec,
                                              VLen, Flags, t.source(), &refused);
        if (n < 0) return fail(sockets.recheck_after_error(Socket, errno), 0);
        if (refused) t.refuse_source();
        return n;
    }, -1);
}

S5_EXPORT int socks5udp_recvmmsg(int Socket, struct mmsghdr* MsgVec, unsigned int VLen, int Flags,
                                 struct timespec* Timeout) {
    t_s5errno = 0;
    return guarded([&]() -> int {
        auto& sockets = s5::client::SocketCache::global();
        if (int e = sockets.check(Socket)) return fail(e, 0);
        if (VLen > 0 && !MsgVec) return fail(EINVAL, 0);
        int n = s5::client::recv_deframed_batch(Socket, MsgVec, VLen, Flags, Timeout,
                                                s5::client::LeaseTable::global());
        if (n < 0) return fail(sockets.recheck_after_error(Socket, errno), 0);
        return n;
    }, -1);
}

S5_EXPORT int socks5udp_bind(int LeaseSocket, int UdpSocket) {
    t_s5errno = 0;
    return guarded([&]() -> int {
        using s5::client::LeaseState;
        if (int e = s5::client::SocketCache::global().check(UdpSocket)) return fail(e, 0);
        auto l = s5::client::LeaseTable::global().lookup(LeaseSocket);
        if (!l) return fail(EINVAL, 0);
        switch (l->state) {
            case LeaseState::Pending: return fail(EINPROGRESS, 0);
            case LeaseState::Lost: return fail(l->err, l->s5err);
            case LeaseState::Active:
            case LeaseState::Renewing: break;
        }
        if (int e = s5::client::LeaseTable::global().place(LeaseSocket, UdpSocket)) return fail(e, 0);
        return 0;
    }, -1);
}

S5_EXPORT int socks5udp_current(int LeaseSocket, struct sockaddr* Rendezvous, size_t Len) {
    t_s5errno = 0;
    return guarded([&]() -> int {
        using s5::client::LeaseState;
        auto l = s5::client::LeaseTable::global().lookup(LeaseSocket);
        if (!l || !Rendezvous) return fail(EINVAL, 0);
        switch (l->state) {
            case LeaseState::Pending: return fail(EINPROGRESS, 0);
            case LeaseState::Renewing: return fail_renewing();
            case LeaseState::Lost: return fail(l->err, l->s5err);
            case LeaseState::Active: break;
        }
        sockaddr_storage rv{};
        size_t rvlen = l->relay.to_sockaddr(rv);
        if (rvlen == 0 || rvlen > Len) return fail(EINVAL, 0);
        if (!writable(Rendezvous, rvlen)) return fail(EFAULT, 0);
        std::memcpy(Rendezvous, &rv, rvlen);
        return 0;
    }, -1);
}

S5_EXPORT struct sockaddr* socks5_getserv(struct sockaddr* Dst, size_t DstLen) {
    t_s5errno = 0;
    return guarded([&]() -> sockaddr* {
        static thread_local sockaddr_storage t_server;
        s5::wire::Endpoint dst;
        if (int e = check_address(Dst, DstLen, dst)) {
            fail(e, 0);
            return nullptr;
        }
        // Direct mode answers from socks5c.conf, as AIX does; auto mode
        // asks the broker, and the file only when there is no broker.
        const auto mode = s5::client::mode_from_env();
        if (mode == s5::client::Mode::Direct) {
            auto a = s5::client::server_from_socks5c_conf(dst);
            if (!a.ok) {
                fail(a.err, a.s5err);
                return nullptr;
            }
            a.server.to_sockaddr(t_server);
            return reinterpret_cast<sockaddr*>(&t_server);
        }
        auto r = s5::client::broker_get_server(dst);
        if (!r.ok) {
            if (mode == s5::client::Mode::Auto && s5::client::broker_absent(r.error_name))
                if (auto a = s5::client::server_from_socks5c_conf(dst); a.ok) {
                    a.server.to_sockaddr(t_server);
                    return reinterpret_cast<sockaddr*>(&t_server);
                }
            fail_mapped(r.error_name);
            return nullptr;
        }
        r.server.to_sockaddr(t_server);
        return reinterpret_cast<sockaddr*>(&t_server);
    }, static_cast<sockaddr*>(nullptr));
}
