#include "datagram.hpp"
#include "process_global.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <span>
#include <cerrno>
#include <cstring>

namespace s5::client {

using s5::wire::Endpoint;

namespace {


// Errors after which a cached verdict about a socket may be wrong (the
// descriptor was closed or now names another kind of socket).
bool suggests_other_socket(int e) {
    switch (e) {
        case EBADF:
        case ENOTSOCK:
        case EINVAL:
        case EOPNOTSUPP:
        case EPIPE:
        case ENOTCONN:
        case EISCONN:
        case EDESTADDRREQ:
        case EAFNOSUPPORT:
            return true;
        default:
            return false;
    }
}

int sockopt_int(int fd, int opt, int& value) {
    socklen_t len = sizeof value;
    return ::getsockopt(fd, SOL_SOCKET, opt, &value, &len);
}

}  // namespace

// ---- SocketCache ---------------------------------------------------------------

SocketCache& SocketCache::global() { return process_global<SocketCache>(); }

int SocketCache::check(int fd) {
    {
        std::lock_guard<std::mutex> g(m_);
        if (checked_.count(fd)) return 0;
    }
    if (int e = check_uncached(fd)) return e;
    std::lock_guard<std::mutex> g(m_);
    checked_.insert(fd);
    return 0;
}

int SocketCache::recheck_after_error(int fd, int err) {
    if (!suggests_other_socket(err)) return err;
    forget(fd);
    if (int c = check(fd)) return c;
    return err;
}

void SocketCache::forget(int fd) {
    std::lock_guard<std::mutex> g(m_);
    checked_.erase(fd);
}

int SocketCache::check_uncached(int fd) {
    if (::fcntl(fd, F_GETFD) < 0) return EBADF;
    int type = 0, domain = 0, protocol = 0;
    if (sockopt_int(fd, SO_TYPE, type) < 0) return errno == ENOTSOCK ? ENOTSOCK : errno;
    if (type != SOCK_DGRAM) return EINVAL;
    if (sockopt_int(fd, SO_DOMAIN, domain) < 0 || (domain != AF_INET && domain != AF_INET6)) return EINVAL;
    if (sockopt_int(fd, SO_PROTOCOL, protocol) < 0 || protocol != IPPROTO_UDP) return EINVAL;
    return 0;
}

// ---- sending -------------------------------------------------------------------

int send_framed(int fd, const sockaddr* to, socklen_t tolen, const Endpoint& dst, const void* payload, size_t len,
                int flags, const Endpoint* source, bool* source_refused) {
    uint8_t header[s5::wire::kUdpHeaderMax];
    const size_t hlen = s5::wire::encode_udp_header(dst, std::span<uint8_t, s5::wire::kUdpHeaderMax>(header));
    if (hlen == 0) {
        errno = EAFNOSUPPORT;
        return -1;
    }
    if (len > kMaxUdpPayload - hlen) {
        errno = EMSGSIZE;
        return -1;
    }
    iovec iov[2] = {{header, hlen}, {const_cast<void*>(payload), len}};
    msghdr m{};
    m.msg_name = const_cast<sockaddr*>(to);
    m.msg_namelen = tolen;
    m.msg_iov = iov;
    m.msg_iovlen = 2;

    // The source address, per datagram. IP_PKTINFO also works on an
    // AF_INET6 socket sending to an IPv4 relay.
    union {
        cmsghdr align;
        char buf[CMSG_SPACE(sizeof(in6_pktinfo))];
    } control;
    if (source && source->family == to->sa_family) {
        std::memset(&control, 0, sizeof control);
        m.msg_control = control.buf;
        cmsghdr* c = reinterpret_cast<cmsghdr*>(control.buf);
        if (source->family == AF_INET) {
            in_pktinfo pi{};
            std::memcpy(&pi.ipi_spec_dst, source->ip.data(), 4);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof pi);
            std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
            m.msg_controllen = CMSG_SPACE(sizeof pi);
        } else {
            in6_pktinfo pi{};
            std::memcpy(&pi.ipi6_addr, source->ip.data(), 16);
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof pi);
            std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
            m.msg_controllen = CMSG_SPACE(sizeof pi);
        }
    }

    for (;;) {
        ssize_t r = ::sendmsg(fd, &m, flags | MSG_NOSIGNAL);
        if (r >= 0) return 0;
        if (errno == EINTR) continue;
        // A source address that is not local to this host: Linux says
        // ENETUNREACH (IPv4) or EINVAL. Send without it rather than not at
        // all; report the refusal only if that then works.
        if (m.msg_control && (errno == ENETUNREACH || errno == EINVAL || errno == EADDRNOTAVAIL)) {
            m.msg_control = nullptr;
            m.msg_controllen = 0;
            while ((r = ::sendmsg(fd, &m, flags | MSG_NOSIGNAL)) < 0 && errno == EINTR) {
            }
            if (r >= 0) {
                if (source_refused) *source_refused = true;
                return 0;
            }
            return -1;  // the error without the source address is the real one
        }
        return -1;
    }
}

// ---- receiving -----------------------------------------------------------------

namespace {

// Room for the largest UDP datagram (65,527 bytes of payload over IPv6).
constexpr size_t kReceiveScratch = 65536;

uint8_t* receive_scratch() {
    static thread_local std::unique_ptr<uint8_t[]> buf;
    if (!buf) buf.reset(new uint8_t[kReceiveScratch]);
    return buf.get();
}

}  // namespace

ssize_t recv_deframed(int fd, void* buf, size_t len, int flags, sockaddr* from, socklen_t* fromlen,
                      const LeaseTable& leases) {
    uint8_t* scratch = receive_scratch();
    for (;;) {
        sockaddr_storage peer{};
        socklen_t plen = sizeof peer;
        // The whole datagram always fits: MSG_TRUNC is ours to apply.
        ssize_t n = ::recvfrom(fd, scratch, kReceiveScratch, flags & ~MSG_TRUNC, reinterpret_cast<sockaddr*>(&peer),
                               &plen);
        if (n < 0) return -1;
        const std::span<const uint8_t> dgram(scratch, static_cast<size_t>(n));

        std::optional<s5::wire::UdpHeader> h;
        auto src = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&peer), plen);
        if (src && leases.is_current_relay(*src)) {
            auto d = s5::wire::decode_udp_header(dgram);  // RSV, ATYP, length
            if (d && d->frag == 0) h = d;
        }
        if (!h) {
            // A peeked datagram stays queued: take it off before the next.
            if (flags & MSG_PEEK) (void)::recv(fd, nullptr, 0, MSG_DONTWAIT);
            continue;
        }

        const size_t payload = dgram.size() - h->header_len;
        const size_t delivered = std::min(payload, len);
        if (delivered) std::memcpy(buf, scratch + h->header_len, delivered);
        if (from && fromlen) {
            sockaddr_storage ss;
            const size_t slen = h->src.to_sockaddr(ss);
            std::memcpy(from, &ss, std::min<size_t>(*fromlen, slen));
            *fromlen = static_cast<socklen_t>(slen);
        }
        return static_cast<ssize_t>((flags & MSG_TRUNC) ? payload : delivered);
    }
}

}  // namespace s5::client
