// SOCKS-encapsulated datagrams on the application's UDP sockets (RFC 1928
// §7): framing on send, deframing and filtering on receive, and what the
// library remembers about those sockets. The C API in socks5.cpp checks its
// arguments and calls these.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <mutex>
#include <unordered_set>

#include "lease_table.hpp"
#include "wire.hpp"

namespace s5::client {

// Largest UDP payload over IPv4: the header plus the data must fit in it.
inline constexpr size_t kMaxUdpPayload = 65507;

// The application's datagram sockets that passed the checks of
// socks5udp_sendto()/socks5udp_recvfrom(), so the checks are not repeated on
// every datagram.
//
// An entry is keyed by descriptor number only: re-validating it per call
// (fstat) would cost as much as the checks it saves (a syscall is ~10% of a
// loopback sendto here). It is dropped and re-checked whenever a send or
// receive on the descriptor fails, and socks5udp_associate() drops it when
// the number becomes a lease. So a number closed and reused for another
// UDP socket keeps its verdict, which is harmless: nothing else is cached
// per socket (the source address is chosen per datagram, see send_framed).
class SocketCache {
public:
    static SocketCache& global();

    // 0 if `fd` is an open AF_INET/AF_INET6 SOCK_DGRAM UDP socket, else the
    // errno of socks5udp_associate's order: EBADF, ENOTSOCK, EINVAL.
    int check(int fd);
    // After a send or receive on `fd` failed with `err`: if the error hints
    // that the descriptor is no longer the socket we checked, forgets it and
    // checks again. Returns the errno to report (the check's, else `err`).
    int recheck_after_error(int fd, int err);
    // Drops what is known about `fd`.
    void forget(int fd);

    void lock() { m_.lock(); }
    void unlock() { m_.unlock(); }

private:
    static int check_uncached(int fd);

    std::mutex m_;
    std::unordered_set<int> checked_;
};

// Sends `payload` to `dst` through the relay `to` (a sockaddr_in/in6 of
// `tolen` bytes): RSV | FRAG=0 | ATYP | DST.ADDR | DST.PORT, then the payload,
// with sendmsg() and a two-element iovec (the payload is not copied).
// `flags` go to sendmsg() with MSG_NOSIGNAL added.
//
// With `source` (the IP the broker's association expects datagrams from,
// design.md §7) the datagram carries it as IP_PKTINFO / IPV6_PKTINFO, so it
// leaves from that address whatever the socket is bound to (an unbound
// socket is auto-bound to the wildcard address, which receives the relay's
// replies). If the kernel refuses that address (not local here, e.g. the
// broker runs in another network namespace) and the datagram goes out
// without it, *source_refused is set: the caller stops passing it.
// Returns 0, or -1 with errno (EMSGSIZE when the framed datagram exceeds
// kMaxUdpPayload).
int send_framed(int fd, const sockaddr* to, socklen_t tolen, const s5::wire::Endpoint& dst, const void* payload,
                size_t len, int flags, const s5::wire::Endpoint* source = nullptr, bool* source_refused = nullptr);

// Receives one SOCKS datagram on `fd` and strips its header: one recvfrom()
// into a per-thread buffer that holds any UDP datagram, then the payload is
// copied to `buf` (measured: a 3-iovec recvmsg straight into `buf` cost
// 1.14-1.23x a raw recvfrom, this 0.96-1.02x; the copy of a small payload
// is cheaper than the kernel's iovec walk). Drops (and receives the
// next, honouring MSG_DONTWAIT / O_NONBLOCK) datagrams that do not come from
// a current relay in `leases`, are shorter than their header, have RSV != 0,
// FRAG != 0, an unknown ATYP or ATYP 3 (domain name). Fills `from` with the
// sender named in the header (sockaddr_in/in6, truncated to *fromlen, which
// is set to the full length). Returns the payload length truncated to
// `len`, or the full length when `flags` has MSG_TRUNC (as recv(2) on
// Linux); -1 with errno on failure.
ssize_t recv_deframed(int fd, void* buf, size_t len, int flags, sockaddr* from, socklen_t* fromlen,
                      const LeaseTable& leases);

// The batch forms (socks5udp_sendmmsg / socks5udp_recvmmsg), at most
// kMaxBatch messages a call, as sendmmsg(2) and recvmmsg(2) (UIO_MAXIOV).
inline constexpr unsigned kMaxBatch = 1024;

// Sends every message of vec[0..vlen): its msg_name is the target, its
// iovecs the payload, framed with one header iovec in front (the payload is
// not copied), all to the relay `to` in one sendmmsg(); the application's
// msg_control is not sent (the source is `source`, as for send_framed).
// A message with a bad target (null, short, not IP: EINVAL/EAFNOSUPPORT)
// or too large (EMSGSIZE) ends the batch before it: -1 with that errno if
// it is the first. Returns how many were sent, each one's msg_len set to
// its payload bytes.
int send_framed_batch(int fd, const sockaddr* to, socklen_t tolen, mmsghdr* vec, unsigned vlen, int flags,
                      const s5::wire::Endpoint* source = nullptr, bool* source_refused = nullptr);

// Receives up to vlen datagrams in one recvmmsg() (flags and timeout as
// there) into per-thread buffers, drops what recv_deframed() drops, and
// fills vec[0..n) with the n good ones in order: payload scattered into
// msg_iov (msg_len the bytes delivered, MSG_TRUNC in msg_flags when the
// payload did not fit), msg_name the sender named in the header (truncated
// to msg_namelen, which is set to the full length), msg_controllen 0. When
// every datagram received was dropped: EAGAIN if non-blocking, else it
// receives again. MSG_PEEK and MSG_ERRQUEUE: EINVAL.
int recv_deframed_batch(int fd, mmsghdr* vec, unsigned vlen, int flags, struct timespec* timeout,
                        const LeaseTable& leases);

}  // namespace s5::client
