#include "shim_socket.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fd_table.hpp"
#include "inbound.hpp"
#include "real_calls.hpp"
#include "shim_log.hpp"

namespace s5::socksify {

using s5::wire::Endpoint;

namespace {

int64_t monotonic_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Route ask_broker(const Endpoint& dst) {
    Inside in;
    sockaddr_storage ss{};
    const size_t len = dst.to_sockaddr(ss);
    sockaddr* server = socks5_getserv(reinterpret_cast<sockaddr*>(&ss), len);
    Route r;
    if (server) {
        auto e = Endpoint::from_sockaddr(server, server->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
        if (!e) {
            r.err = EPROTO;
            return r;
        }
        r.kind = Route::Kind::Proxy;
        r.server = *e;
        note("%s: through %s", dst.to_string().c_str(), e->to_string().c_str());
        return r;
    }
    const int err = errno;
    if (err == ENOENT) {
        r.kind = Route::Kind::Direct;
        note("%s: direct (routed NONE or not routed)", dst.to_string().c_str());
        return r;
    }
    r.err = err;
    r.s5err = socks5_errno;
    return r;
}

bool nonblocking(int fd, int flags) {
    if (flags & MSG_DONTWAIT) return true;
    Inside in;
    const int fl = real::fcntl(fd, F_GETFL, nullptr);
    return fl >= 0 && (fl & O_NONBLOCK);
}

// The largest datagram a UDP socket can receive, and room for its header.
constexpr size_t kScratch = 65536 + 512;

uint8_t* scratch() {
    static thread_local std::unique_ptr<uint8_t[]> buf;
    if (!buf) buf.reset(new uint8_t[kScratch]);
    return buf.get();
}

// Copies `len` bytes into the iovecs; returns how many fitted.
size_t scatter(const msghdr* msg, const uint8_t* data, size_t len) {
    size_t done = 0;
    for (size_t i = 0; i < static_cast<size_t>(msg->msg_iovlen) && done < len; ++i) {
        const size_t n = std::min(len - done, msg->msg_iov[i].iov_len);
        if (n) std::memcpy(msg->msg_iov[i].iov_base, data + done, n);
        done += n;
    }
    return done;
}

void fail_closed_warning(const Endpoint& dst, int err, int s5err) {
    warn_once("UDP to %s not sent: %s%s%s", dst.unmapped().to_string().c_str(), strerror(err),
              s5err ? " / " : "", s5err ? socks5_strerror(s5err) : "");
}

}  // namespace

RouteCache& routes() {
    static RouteCache* cache = new RouteCache(ask_broker, monotonic_ms);
    return *cache;
}

ShimLease::~ShimLease() {
    if (fd < 0 || stolen.load()) return;
    FdTable::global().clear_private(fd);
    Inside in;
    (void)real::close(fd);
}

std::shared_ptr<ShimLease> ShimSocket::lease_for(const Endpoint& server, const Endpoint& dst, int& err) {
    std::lock_guard<std::mutex> g(m_);
    std::erase_if(leases_, [](const auto& l) { return l->stolen.load(); });
    for (auto& l : leases_)
        if (l->server == server) return l;

    Inside in;
    const int s = real::socket(server.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        err = errno;
        return nullptr;
    }
    sockaddr_storage d{}, sv{};
    dst.to_sockaddr(d);
    const size_t svlen = server.to_sockaddr(sv);
    if (socks5udp_associate(s, reinterpret_cast<sockaddr*>(&d), sizeof(sockaddr_in6),
                            reinterpret_cast<sockaddr*>(&sv), svlen) < 0) {
        err = errno;
        const int s5err = socks5_errno;
        (void)real::close(s);
        fail_closed_warning(dst, err, s5err);
        return nullptr;
    }
    auto l = std::make_shared<ShimLease>();
    l->fd = s;
    l->server = server;
    l->rendezvous = d;
    l->rendezvous_len = d.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    auto relay = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&d), l->rendezvous_len);
    if (!relay || (family_ == AF_INET && relay->unmapped().family != AF_INET)) {
        // An IPv6 relay cannot be reached from an AF_INET socket.
        err = EAFNOSUPPORT;
        (void)real::close(s);
        l->fd = -1;
        return nullptr;
    }
    FdTable::global().set_private(s, l);
    leases_.push_back(l);
    relays_.push_back(relay->unmapped());
    filters_.store(true, std::memory_order_release);
    note("lease on fd %d for %s via %s: relay %s", s, dst.to_string().c_str(), server.to_string().c_str(),
         relay->to_string().c_str());
    return l;
}

void ShimSocket::drop_lease(const std::shared_ptr<ShimLease>& l) {
    std::shared_ptr<ShimLease> keep;  // dies after the lock is released
    std::lock_guard<std::mutex> g(m_);
    auto it = std::find(leases_.begin(), leases_.end(), l);
    if (it == leases_.end()) return;
    keep = *it;
    leases_.erase(it);
}

void ShimSocket::refresh_relays() {
    std::lock_guard<std::mutex> g(m_);
    Inside in;
    for (auto& l : leases_) {
        if (l->stolen.load()) continue;
        sockaddr_storage rv{};
        if (socks5udp_current(l->fd, reinterpret_cast<sockaddr*>(&rv), sizeof rv) < 0) continue;
        auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&rv), sizeof rv);
        if (!e) continue;
        const Endpoint u = e->unmapped();
        if (std::find(relays_.begin(), relays_.end(), u) == relays_.end()) {
            relays_.push_back(u);
            // The rendezvous and the newest relays; an ended relay is dead.
            if (relays_.size() > 16) relays_.erase(relays_.begin() + 1);
        }
    }
}

ShimSocket::Plan ShimSocket::plan_send(const sockaddr* to, socklen_t tolen) {
    Plan p;
    Endpoint dst;
    if (!to) {
        std::lock_guard<std::mutex> g(m_);
        if (!has_peer_) return p;  // the kernel's connected peer, or its EDESTADDRREQ
        dst = peer_;
    } else {
        auto e = Endpoint::from_sockaddr(to, tolen);
        if (!e) return p;  // not IP, or short: the kernel's error
        dst = e->unmapped();
    }
    const Route r = routes().get(dst);
    switch (r.kind) {
        case Route::Kind::Direct: return p;
        case Route::Kind::Fail:
            fail_closed_warning(dst, r.err, r.s5err);
            p.kind = Plan::Kind::Fail;
            p.err = r.err;
            return p;
        case Route::Kind::Proxy: break;
    }
    int err = 0;
    p.lease = lease_for(r.server, dst, err);
    if (!p.lease) {
        p.kind = Plan::Kind::Fail;
        p.err = err;
        return p;
    }
    p.kind = Plan::Kind::Proxy;
    p.dst = dst;
    return p;
}

ssize_t ShimSocket::send_proxied(int fd, Plan plan, const void* data, size_t len, int flags) {
    sockaddr_storage d{};
    const size_t dlen = plan.dst.to_sockaddr(d);
    bool replaced = false;
    for (int attempt = 0; attempt < 64; ++attempt) {
        int rc, err, s5err;
        {
            Inside in;
            rc = socks5udp_sendto(fd, const_cast<void*>(data), len, flags, reinterpret_cast<sockaddr*>(&d), dlen,
                                  reinterpret_cast<sockaddr*>(&plan.lease->rendezvous), plan.lease->rendezvous_len);
            err = errno;
            s5err = socks5_errno;
        }
        if (rc == 0) return static_cast<ssize_t>(len);
        if (err == EAGAIN && s5err == S5_ERENEWING) {
            // The broker is moving the lease; its outcome makes the lease
            // socket readable.
            if (nonblocking(fd, flags)) return static_cast<ssize_t>(len);
            pollfd p{plan.lease->fd, POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) {
                errno = EAGAIN;
                return -1;
            }
            continue;
        }
        if ((s5err == S5_ELOST || err == ENOTCONN || plan.lease->stolen.load()) && !replaced) {
            // Lost for good (the broker could not renew it) or taken from
            // us: one new lease, then its verdict stands.
            replaced = true;
            note("lease on fd %d lost (%s); asking for another", plan.lease->fd, strerror(err));
            drop_lease(plan.lease);
            int e2 = 0;
            auto r = routes().get(plan.dst);
            if (r.kind != Route::Kind::Proxy) {
                errno = r.kind == Route::Kind::Fail ? r.err : ENETUNREACH;
                return -1;
            }
            plan.lease = lease_for(r.server, plan.dst, e2);
            if (!plan.lease) {
                errno = e2;
                return -1;
            }
            continue;
        }
        errno = err;
        return -1;
    }
    errno = EAGAIN;
    return -1;
}

ssize_t ShimSocket::recv(int fd, msghdr* msg, int flags) {
    uint8_t* buf = scratch();
    for (;;) {
        sockaddr_storage src{};
        iovec iov{buf, kScratch};
        msghdr m{};
        m.msg_name = &src;
        m.msg_namelen = sizeof src;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = msg->msg_control;
        m.msg_controllen = msg->msg_controllen;
        ssize_t n;
        {
            Inside in;
            n = real::recvmsg(fd, &m, flags & ~MSG_TRUNC);
        }
        if (n < 0) return -1;
        const auto from = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&src), m.msg_namelen);

        std::vector<Endpoint> relays;
        Endpoint peer;
        bool has_peer = false, has_leases = false;
        auto snapshot = [&] {
            std::lock_guard<std::mutex> g(m_);
            relays = relays_;
            has_peer = has_peer_;
            peer = peer_;
            has_leases = !leases_.empty();
        };
        snapshot();
        if (from && has_leases && std::find(relays.begin(), relays.end(), from->unmapped()) == relays.end()) {
            // Perhaps a relay the broker moved a lease to since we looked.
            refresh_relays();
            snapshot();
        }
        const Inbound v = classify_inbound(from ? *from : Endpoint{}, {buf, static_cast<size_t>(n)}, relays,
                                           has_peer ? &peer : nullptr, family_);
        if (v.kind != Inbound::Kind::Deliver) {
            Inside in;
            if (flags & MSG_PEEK) (void)real::recv(fd, nullptr, 0, MSG_DONTWAIT);
            if (nonblocking(fd, flags)) {
                errno = EAGAIN;
                return -1;
            }
            continue;
        }
        const size_t copied = scatter(msg, buf + v.offset, v.length);
        msg->msg_flags = (m.msg_flags & ~MSG_TRUNC) | (copied < v.length ? MSG_TRUNC : 0);
        msg->msg_controllen = m.msg_controllen;
        if (msg->msg_name) {
            sockaddr_storage ss{};
            socklen_t slen;
            if (v.offset == 0) {  // straight from its sender: its address as the kernel gave it
                ss = src;
                slen = m.msg_namelen;
            } else {
                slen = static_cast<socklen_t>(v.sender.to_sockaddr(ss));
            }
            std::memcpy(msg->msg_name, &ss, std::min(msg->msg_namelen, slen));
            msg->msg_namelen = slen;
        }
        return static_cast<ssize_t>((flags & MSG_TRUNC) ? v.length : copied);
    }
}

void ShimSocket::clear_peer() {
    std::lock_guard<std::mutex> g(m_);
    has_peer_ = false;
    peer_len_ = 0;
    filters_.store(!leases_.empty(), std::memory_order_release);
}

int ShimSocket::connect(int fd, const sockaddr* addr, socklen_t len) {
    auto pass = [&] {
        clear_peer();
        Inside in;
        return real::connect(fd, addr, len);
    };
    if (!addr || len < sizeof(sa_family_t) || addr->sa_family == AF_UNSPEC) return pass();
    auto e = Endpoint::from_sockaddr(addr, len);
    if (!e) return pass();
    const Endpoint dst = e->unmapped();
    const Route r = routes().get(dst);
    if (r.kind == Route::Kind::Direct) return pass();
    if (r.kind == Route::Kind::Fail) {
        fail_closed_warning(dst, r.err, r.s5err);
        errno = r.err;
        return -1;
    }
    int err = 0;
    auto lease = lease_for(r.server, dst, err);
    if (!lease) {
        errno = err;
        return -1;
    }
    Inside in;
    // A socket connected directly before: undo that, or the kernel would
    // drop the relay's datagrams.
    sockaddr_storage cur{};
    socklen_t curlen = sizeof cur;
    if (real::getpeername(fd, reinterpret_cast<sockaddr*>(&cur), &curlen) == 0) {
        sockaddr unspec{};
        unspec.sa_family = AF_UNSPEC;
        (void)real::connect(fd, &unspec, sizeof unspec);
    }
    // The association's own socket takes this one's place now, before
    // the program registers it anywhere (epoll) or sends: the server takes
    // datagrams from that socket only (libclient/claim_socket.hpp).
    if (socks5udp_bind(lease->fd, fd) < 0) {
        const int e = errno;
        note("lease on fd %d: its socket cannot replace fd %d (%s)", lease->fd, fd, strerror(e));
        errno = e;
        return -1;
    }
    // connect(2) would bind an unbound socket; so does the shim, to the
    // wildcard address (the relay's replies come to it), when the lease
    // has no socket of its own (claim "first_datagram").
    sockaddr_storage self{};
    socklen_t selflen = sizeof self;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &selflen) == 0) {
        auto me = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&self), selflen);
        if (me && me->port == 0) {
            sockaddr_storage any{};
            any.ss_family = static_cast<sa_family_t>(family_);
            (void)::bind(fd, reinterpret_cast<sockaddr*>(&any),
                         family_ == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
        }
    }
    std::lock_guard<std::mutex> g(m_);
    has_peer_ = true;
    peer_ = dst;
    std::memset(&peer_sa_, 0, sizeof peer_sa_);
    peer_len_ = std::min<socklen_t>(len, sizeof peer_sa_);
    std::memcpy(&peer_sa_, addr, peer_len_);
    filters_.store(true, std::memory_order_release);
    return 0;
}

bool ShimSocket::peer_name(sockaddr* addr, socklen_t* len) {
    std::lock_guard<std::mutex> g(m_);
    if (!has_peer_) return false;
    if (!len) {
        errno = EFAULT;
        return true;
    }
    std::memcpy(addr, &peer_sa_, std::min(*len, peer_len_));
    *len = peer_len_;
    return true;
}

}  // namespace s5::socksify
