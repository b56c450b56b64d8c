#include "claim_socket.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace s5::client {

namespace {

// What an application commonly sets on a UDP socket before its first
// datagram: buffers, timeouts, the ancillary data it wants on receive,
// type of service and hop limits. Others (bind addresses, multicast
// memberships, filters) have no meaning on a socket that talks to one relay.
struct Option {
    int level, name;
    bool timeval;   // struct timeval, else int
};
constexpr Option kCopiedOptions[] = {
    {SOL_SOCKET, SO_RCVBUF, false},        {SOL_SOCKET, SO_SNDBUF, false},
    {SOL_SOCKET, SO_RCVTIMEO, true},       {SOL_SOCKET, SO_SNDTIMEO, true},
    {SOL_SOCKET, SO_BROADCAST, false},     {SOL_SOCKET, SO_PRIORITY, false},
    {SOL_SOCKET, SO_TIMESTAMP, false},     {SOL_SOCKET, SO_TIMESTAMPNS, false},
    {SOL_SOCKET, SO_RCVLOWAT, false},      {IPPROTO_IP, IP_PKTINFO, false},
    {IPPROTO_IP, IP_TOS, false},           {IPPROTO_IP, IP_TTL, false},
    {IPPROTO_IP, IP_RECVERR, false},       {IPPROTO_IP, IP_RECVTOS, false},
    {IPPROTO_IP, IP_RECVTTL, false},       {IPPROTO_IP, IP_MTU_DISCOVER, false},
    {IPPROTO_IPV6, IPV6_RECVPKTINFO, false}, {IPPROTO_IPV6, IPV6_TCLASS, false},
    {IPPROTO_IPV6, IPV6_UNICAST_HOPS, false}, {IPPROTO_IPV6, IPV6_RECVERR, false},
    {IPPROTO_IPV6, IPV6_RECVTCLASS, false}, {IPPROTO_IPV6, IPV6_MTU_DISCOVER, false},
};

int family_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return -1;
    return ss.ss_family;
}

bool level_applies(int level, int family) {
    if (level == IPPROTO_IP) return family == AF_INET;
    if (level == IPPROTO_IPV6) return family == AF_INET6;
    return true;
}

// Best effort: an option the claim socket refuses stays at its default.
void copy_options(int from, int to) {
    const int from_family = family_of(from), to_family = family_of(to);
    for (const Option& o : kCopiedOptions) {
        if (!level_applies(o.level, from_family) || !level_applies(o.level, to_family)) continue;
        union {
            int i;
            timeval tv;
        } a{}, b{};
        socklen_t alen = o.timeval ? sizeof a.tv : sizeof a.i, blen = alen;
        if (getsockopt(from, o.level, o.name, &a, &alen) < 0 || getsockopt(to, o.level, o.name, &b, &blen) < 0)
            continue;
        if (alen == blen && std::memcmp(&a, &b, alen) == 0) continue;
        // The kernel reports twice the buffer size it was asked for.
        if (!o.timeval && (o.name == SO_RCVBUF || o.name == SO_SNDBUF) && o.level == SOL_SOCKET) a.i /= 2;
        (void)setsockopt(to, o.level, o.name, &a, alen);
    }
}

}  // namespace

int put_in_place(int claim, int target) {
    const int fdflags = fcntl(target, F_GETFD);
    const int flflags = fcntl(target, F_GETFL);
    if (fdflags < 0 || flflags < 0) return EBADF;
    const int cur = fcntl(claim, F_GETFL);
    if (cur < 0) return errno;
    const int want = (cur & ~O_NONBLOCK) | (flflags & O_NONBLOCK);
    if (want != cur && fcntl(claim, F_SETFL, want) < 0) return errno;
    copy_options(target, claim);
    // A socket the application connected (to the rendezvous, say) stays
    // connected to the same peer. An error there is the application's to
    // see on its next send, not a reason to keep a socket the server ignores.
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    if (getpeername(target, reinterpret_cast<sockaddr*>(&peer), &plen) == 0)
        (void)::connect(claim, reinterpret_cast<sockaddr*>(&peer), plen);
    if (dup3(claim, target, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) return errno;
    return 0;
}

}  // namespace s5::client
