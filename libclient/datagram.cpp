#include "datagram.hpp"
#include "process_global.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <vector>
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

// One IP_PKTINFO / IPV6_PKTINFO for `source` in `buf` (room for
// CMSG_SPACE(sizeof(in6_pktinfo))); returns its length. IP_PKTINFO also
// works on an AF_INET6 socket sending to an IPv4 relay.
size_t pktinfo(const Endpoint& source, char* buf) {
    cmsghdr* c = reinterpret_cast<cmsghdr*>(buf);
    if (source.family == AF_INET) {
        in_pktinfo pi{};
        std::memcpy(&pi.ipi_spec_dst, source.ip.data(), 4);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof pi);
        std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
        return CMSG_SPACE(sizeof pi);
    }
    in6_pktinfo pi{};
    std::memcpy(&pi.ipi6_addr, source.ip.data(), 16);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
    return CMSG_SPACE(sizeof pi);
}

// The errors Linux gives for a source address that is not local to this
// host: ENETUNREACH (IPv4), EINVAL, EADDRNOTAVAIL.
bool source_not_local(int e) { return e == ENETUNREACH || e == EINVAL || e == EADDRNOTAVAIL; }

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

    // The source address, per datagram.
    union {
        cmsghdr align;
        char buf[CMSG_SPACE(sizeof(in6_pktinfo))];
    } control;
    if (source && source->family == to->sa_family) {
        std::memset(&control, 0, sizeof control);
        m.msg_control = control.buf;
        m.msg_controllen = pktinfo(*source, control.buf);
    }

    for (;;) {
        ssize_t r = ::sendmsg(fd, &m, flags | MSG_NOSIGNAL);
        if (r >= 0) return 0;
        if (errno == EINTR) continue;
        // A source address that is not local to this host: send without
        // it rather than not at all; report the refusal only if that then
        // works.
        if (m.msg_control && source_not_local(errno)) {
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


// ---- batches -------------------------------------------------------------------

namespace {

// The per-thread arrays of a batch call, kept between calls.
struct BatchScratch {
    std::vector<mmsghdr> msgs;
    std::vector<iovec> iovs;
    std::vector<std::array<uint8_t, s5::wire::kUdpHeaderMax>> headers;
    std::vector<size_t> header_lens;
    std::vector<sockaddr_storage> names;
    std::vector<uint8_t> bytes;
};

BatchScratch& batch_scratch() {
    static thread_local BatchScratch s;
    return s;
}

size_t iov_total(const msghdr& m) {
    size_t t = 0;
    for (size_t i = 0; i < static_cast<size_t>(m.msg_iovlen); ++i) t += m.msg_iov[i].iov_len;
    return t;
}

bool is_nonblocking(int fd, int flags) {
    if (flags & MSG_DONTWAIT) return true;
    const int fl = ::fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

}  // namespace

int send_framed_batch(int fd, const sockaddr* to, socklen_t tolen, mmsghdr* vec, unsigned vlen, int flags,
                      const Endpoint* source, bool* source_refused) {
    vlen = std::min(vlen, kMaxBatch);
    BatchScratch& b = batch_scratch();
    b.msgs.resize(vlen);
    b.headers.resize(vlen);
    b.header_lens.resize(vlen);
    size_t niov = 0;
    for (unsigned i = 0; i < vlen; ++i) niov += 1 + static_cast<size_t>(vec[i].msg_hdr.msg_iovlen);
    b.iovs.resize(niov);

    union {
        cmsghdr align;
        char buf[CMSG_SPACE(sizeof(in6_pktinfo))];
    } control;
    std::memset(&control, 0, sizeof control);
    const size_t controllen = source && source->family == to->sa_family ? pktinfo(*source, control.buf) : 0;

    unsigned n = 0;
    int err = 0;
    size_t at = 0;
    for (; n < vlen; ++n) {
        const msghdr& m = vec[n].msg_hdr;
        auto dst = m.msg_name ? Endpoint::from_sockaddr(static_cast<const sockaddr*>(m.msg_name), m.msg_namelen)
                              : std::nullopt;
        if (!dst) {
            err = m.msg_name && m.msg_namelen >= sizeof(sa_family_t) &&
                          static_cast<const sockaddr*>(m.msg_name)->sa_family != AF_INET &&
                          static_cast<const sockaddr*>(m.msg_name)->sa_family != AF_INET6
                      ? EAFNOSUPPORT
                      : EINVAL;
            break;
        }
        const size_t hlen = s5::wire::encode_udp_header(
            *dst, std::span<uint8_t, s5::wire::kUdpHeaderMax>(b.headers[n].data(), s5::wire::kUdpHeaderMax));
        if (hlen == 0) {
            err = EAFNOSUPPORT;
            break;
        }
        if (iov_total(m) > kMaxUdpPayload - hlen) {
            err = EMSGSIZE;
            break;
        }
        b.header_lens[n] = hlen;
        iovec* iov = &b.iovs[at];
        iov[0] = {b.headers[n].data(), hlen};
        for (size_t k = 0; k < static_cast<size_t>(m.msg_iovlen); ++k) iov[1 + k] = m.msg_iov[k];
        msghdr& out = b.msgs[n].msg_hdr;
        out = {};
        out.msg_name = const_cast<sockaddr*>(to);
        out.msg_namelen = tolen;
        out.msg_iov = iov;
        out.msg_iovlen = 1 + static_cast<size_t>(m.msg_iovlen);
        out.msg_control = controllen ? control.buf : nullptr;
        out.msg_controllen = controllen;
        b.msgs[n].msg_len = 0;
        at += 1 + static_cast<size_t>(m.msg_iovlen);
    }
    if (n == 0) {
        if (!err) return 0;
        errno = err;
        return -1;
    }
    int r;
    while ((r = ::sendmmsg(fd, b.msgs.data(), n, flags | MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    if (r < 0 && controllen && source_not_local(errno)) {
        // The source is not local here: without it, as send_framed() does.
        for (unsigned i = 0; i < n; ++i) {
            b.msgs[i].msg_hdr.msg_control = nullptr;
            b.msgs[i].msg_hdr.msg_controllen = 0;
        }
        while ((r = ::sendmmsg(fd, b.msgs.data(), n, flags | MSG_NOSIGNAL)) < 0 && errno == EINTR) {
        }
        if (r >= 0 && source_refused) *source_refused = true;
    }
    if (r < 0) return -1;
    for (int i = 0; i < r; ++i) vec[i].msg_len = b.msgs[i].msg_len - static_cast<unsigned>(b.header_lens[i]);
    return r;
}

int recv_deframed_batch(int fd, mmsghdr* vec, unsigned vlen, int flags, struct timespec* timeout,
                        const LeaseTable& leases) {
    if (flags & (MSG_PEEK | MSG_ERRQUEUE)) {
        errno = EINVAL;
        return -1;
    }
    vlen = std::min(vlen, kMaxBatch);
    if (vlen == 0) return 0;
    BatchScratch& b = batch_scratch();
    b.msgs.resize(vlen);
    b.iovs.resize(vlen);
    b.names.resize(vlen);
    // Each datagram's room: its header and what the caller can take of it.
    std::vector<size_t> room(vlen);
    size_t total = 0;
    for (unsigned i = 0; i < vlen; ++i) {
        room[i] = std::min(iov_total(vec[i].msg_hdr) + s5::wire::kUdpHeaderMax, kReceiveScratch);
        total += room[i];
    }
    if (b.bytes.size() < total) b.bytes.resize(total);
    size_t off = 0;
    for (unsigned i = 0; i < vlen; ++i) {
        b.iovs[i] = {b.bytes.data() + off, room[i]};
        off += room[i];
        msghdr& m = b.msgs[i].msg_hdr;
        m = {};
        m.msg_name = &b.names[i];
        m.msg_namelen = sizeof(sockaddr_storage);
        m.msg_iov = &b.iovs[i];
        m.msg_iovlen = 1;
    }
    for (;;) {
        const int r = ::recvmmsg(fd, b.msgs.data(), vlen, flags, timeout);
        if (r < 0) return -1;
        unsigned good = 0;
        // A batch mostly comes from one relay: its verdict is asked once.
        std::optional<Endpoint> last_src;
        bool last_ok = false;
        for (int j = 0; j < r; ++j) {
            const msghdr& in = b.msgs[j].msg_hdr;
            const std::span<const uint8_t> dgram(static_cast<const uint8_t*>(b.iovs[j].iov_base), b.msgs[j].msg_len);
            auto src = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&b.names[j]), in.msg_namelen);
            if (!src) continue;
            if (!last_src || !(*last_src == *src)) {
                last_src = src;
                last_ok = leases.is_current_relay(*src);
            }
            if (!last_ok) continue;
            auto h = s5::wire::decode_udp_header(dgram);
            if (!h || h->frag != 0) continue;
            msghdr& out = vec[good].msg_hdr;
            const size_t payload = dgram.size() - h->header_len;
            size_t done = 0;
            for (size_t k = 0; k < static_cast<size_t>(out.msg_iovlen) && done < payload; ++k) {
                const size_t c = std::min(payload - done, out.msg_iov[k].iov_len);
                if (c) std::memcpy(out.msg_iov[k].iov_base, dgram.data() + h->header_len + done, c);
                done += c;
            }
            out.msg_flags = (done < payload || (in.msg_flags & MSG_TRUNC)) ? MSG_TRUNC : 0;
            out.msg_controllen = 0;
            if (out.msg_name) {
                sockaddr_storage ss;
                const size_t slen = h->src.to_sockaddr(ss);
                std::memcpy(out.msg_name, &ss, std::min<size_t>(out.msg_namelen, slen));
                out.msg_namelen = static_cast<socklen_t>(slen);
            }
            vec[good].msg_len = static_cast<unsigned>(done);
            ++good;
        }
        if (good > 0) return static_cast<int>(good);
        if (is_nonblocking(fd, flags)) {
            errno = EAGAIN;
            return -1;
        }
    }
}

}  // namespace s5::client
