#include "local_listener.hpp"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "unique_fd.hpp"

namespace s5d {

namespace {

// The address bytes and port of a sockaddr_in / sockaddr_in6, for inet_diag.
bool fill(const sockaddr_storage& ss, __be32 addr[4], __be16& port) {
    std::memset(addr, 0, 16);
    if (ss.ss_family == AF_INET) {
        const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
        std::memcpy(addr, &a.sin_addr, 4);
        port = a.sin_port;
        return true;
    }
    if (ss.ss_family == AF_INET6) {
        const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
        std::memcpy(addr, &a.sin6_addr, 16);
        port = a.sin6_port;
        return true;
    }
    return false;
}

// One request to NETLINK_SOCK_DIAG; calls `each` for every inet_diag_msg
// of the answer. 0, or the errno (ENOENT: no such socket).
template <typename F>
int ask_kernel(const inet_diag_req_v2& req, bool dump, F&& each) {
    struct {
        nlmsghdr nlh;
        inet_diag_req_v2 req;
    } msg{};
    msg.nlh.nlmsg_len = sizeof msg;
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = static_cast<__u16>(NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0));
    msg.req = req;
    s5::UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (!nl) return errno;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(nl.get(), &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) return errno;
    alignas(nlmsghdr) unsigned char buf[16384];
    for (;;) {
        const ssize_t got = ::recv(nl.get(), buf, sizeof buf, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return errno;
        unsigned left = static_cast<unsigned>(got);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_type == NLMSG_DONE) return 0;
            if (h->nlmsg_type == NLMSG_ERROR) {
                const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof *e)) return EPROTO;
                return e->error ? -e->error : 0;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) return EPROTO;
            each(*static_cast<const inet_diag_msg*>(NLMSG_DATA(h)));
            if (!dump) return 0;
        }
    }
}

inet_diag_req_v2 request(int family, uint32_t states) {
    inet_diag_req_v2 r{};
    r.sdiag_family = static_cast<__u8>(family);
    r.sdiag_protocol = IPPROTO_TCP;
    r.idiag_states = states;
    r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    return r;
}

bool all_zero(const __be32 a[4], size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (a[i] != 0) return false;
    return true;
}

}  // namespace

std::variant<NotLocal, LocalOwner, LookupError> local_peer_owner(int fd) {
    sockaddr_storage local{}, peer{};
    socklen_t llen = sizeof local, plen = sizeof peer;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0 ||
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0)
        return LookupError{errno};
    if (local.ss_family != peer.ss_family) return LookupError{EAFNOSUPPORT};

    // 1. Is the other end on this host? Its socket, seen from its side (its
    // address the source, ours the destination), is in the table if so.
    inet_diag_req_v2 one = request(peer.ss_family, ~0U);
    if (!fill(peer, one.id.idiag_src, one.id.idiag_sport) || !fill(local, one.id.idiag_dst, one.id.idiag_dport))
        return LookupError{EAFNOSUPPORT};
    const int found = ask_kernel(one, false, [](const inet_diag_msg&) {});
    if (found == ENOENT) return NotLocal{};
    if (found != 0) return LookupError{found};

    // 2. Who listens there. Not the connection's own socket: once accepted
    // it belongs to whoever accepted it (danted accepts in a child that
    // runs as its unprivileged user), while the listener belongs to whoever
    // bound the port. Every listener on the port at the server's address
    // or the wildcard counts (an IPv4 server also reaches a dual-stack IPv6
    // listener); the first one not owned by root names the owner, so one
    // untrusted listener among several is enough to refuse.
    __be32 server_ip[4];
    __be16 server_port = 0;
    fill(peer, server_ip, server_port);
    const size_t words = peer.ss_family == AF_INET ? 1 : 4;
    std::optional<uid_t> owner;
    auto consider = [&](int family) -> int {
        return ask_kernel(request(family, 1U << TCP_LISTEN), true, [&](const inet_diag_msg& d) {
            if (d.id.idiag_sport != server_port) return;
            bool match = false;
            if (family == peer.ss_family) {
                match = all_zero(d.id.idiag_src, words) || std::memcmp(d.id.idiag_src, server_ip, words * 4) == 0;
            } else {  // an IPv6 listener for an IPv4 server: :: or ::ffff:a.b.c.d
                const __be32 mapped[4] = {0, 0, htonl(0xffff), server_ip[0]};
                match = all_zero(d.id.idiag_src, 4) || std::memcmp(d.id.idiag_src, mapped, 16) == 0;
            }
            if (!match) return;
            if (!owner || *owner == 0) owner = static_cast<uid_t>(d.idiag_uid);
        });
    };
    if (int e = consider(peer.ss_family)) return LookupError{e};
    if (peer.ss_family == AF_INET)
        if (int e = consider(AF_INET6); e && e != EAFNOSUPPORT) return LookupError{e};
    // Connected, on this host, yet nobody listens: the listener closed
    // since. Nothing to vouch for it.
    if (!owner) return LookupError{ECONNRESET};
    return LocalOwner{*owner};
}

}  // namespace s5d
