/*
 * <s5broker/socks5.h> — SOCKSv5 UDP associations through s5brokerd.
 *
 * The AIX call socks5udp_associate() with its exact signature and errors,
 * served by the s5brokerd daemon over D-Bus: the association is already made
 * (pooled) by the broker, which keeps the credentials, and follows it when
 * the broker moves it to another server; without a broker it is made on
 * Socket itself (direct mode, below). See socks5udp_associate(3).
 * All calls are thread-safe and may be used in a forked child.
 *
 * COMPAT_43: Linux's struct sockaddr already has the 4.3BSD layout (no
 * sa_len member); defining COMPAT_43 is accepted and changes nothing.
 */
#ifndef S5BROKER_SOCKS5_H
#define S5BROKER_SOCKS5_H

#include <stddef.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* struct mmsghdr is in <sys/socket.h> with _GNU_SOURCE (see sendmmsg(2));
 * declared here so that the prototypes below compile without it. */
struct mmsghdr;

/* SOCKS-specific error codes, reported in socks5_errno. They are distinct
 * from every errno value; 0 means "no SOCKS-specific error". */
#define S5_ESRVFAIL      1001  /* General SOCKSv5 server failure (REP 1) */
#define S5_EPERM         1002  /* Ruleset rejection (REP 2) or authentication refused */
#define S5_ENETUNREACH   1003  /* Server could not reach target network (REP 3) */
#define S5_EHOSTUNREACH  1004  /* Server could not reach target host (REP 4) */
#define S5_ECONNREFUSED  1005  /* Connection refused by target host (REP 5) */
#define S5_ETIMEDOUT     1006  /* TTL expired (REP 6) */
#define S5_EOPNOTSUPP    1007  /* Command not supported (REP 7) */
#define S5_EAFNOSUPPORT  1008  /* Address type not supported (REP 8) */
#define S5_ENOSERV       1009  /* No server found (none configured/matching, or no broker) */
#define S5_ELOST         1010  /* Association lost and could not be renewed (extension) */
#define S5_EPROTO        1011  /* Malformed reply from the SOCKSv5 server (extension) */
#define S5_ERENEWING     1012  /* Association being renewed; retry when the lease is readable (extension) */

/* The SOCKS-specific error of the last failed call in this thread. */
int *socks5_errno_location(void);
#define socks5_errno (*socks5_errno_location())

/* Requests a UDP association for Dst on the SOCKSv5 server Svr (NULL: the
 * broker routes by Dst). On success returns 0, Socket becomes the lease (keep
 * it open as long as the association is needed) and Dst is overwritten with
 * the rendezvous address to send SOCKS-encapsulated datagrams to. On failure
 * returns -1 with errno and socks5_errno set; Socket and Dst are untouched.
 *
 * Non-blocking (Socket has O_NONBLOCK) and no association ready in the
 * broker: returns -1 with errno EINPROGRESS; Socket is already the lease and
 * becomes readable when the association is ready or has failed. Calling
 * again with the same Socket then returns 0 and fills Dst, or -1 with the
 * failure, as connect(2) does; EALREADY while still pending, EISCONN once
 * it has returned 0. Socket becomes readable again whenever the broker
 * moves the lease to a new relay (see socks5udp_current).
 *
 * Direct mode (no broker). S5CLIENT_MODE=broker: always the broker (not on
 * the bus: ECONNREFUSED with S5_ENOSERV). S5CLIENT_MODE=direct: always
 * direct. Unset or "auto" (any other value counts as auto): the broker;
 * only when it is not on the bus, or there is no bus, and Svr is given,
 * direct mode instead (a broker that answers with an error is never
 * bypassed; without Svr the missing broker is reported as above). In direct
 * mode Socket (AF_INET or AF_INET6) is connected to Svr and becomes the
 * association's control connection: method greeting, RFC 1929
 * username/password when SOCKS5_USERNAME is set and non-empty (with
 * SOCKS5_PASSWORD; both read with secure_getenv() when the connection
 * starts; no password, or either longer than 255 bytes: EINVAL), UDP
 * ASSOCIATE for the local address of Socket, port 0. On success Dst gets the
 * relay (BND, 0.0.0.0/:: replaced by Svr's address), closing Socket ends
 * the association, and socks5udp_sendto/recvfrom/current work with it; it
 * is never renewed: if the control connection dies, socks5udp_sendto keeps
 * sending to the (dead) relay. Errors as above, plus: ENOENT with
 * S5_ENOSERV when Svr is NULL (no server known); EAFNOSUPPORT for an IPv6
 * Svr on an AF_INET Socket; connect(2)'s own errors (ECONNREFUSED,
 * ETIMEDOUT, ENETUNREACH, ... with socks5_errno 0); EPROTO with S5_EPROTO
 * when the server hangs up or answers malformed. A blocking Socket waits at
 * most SO_SNDTIMEO / SO_RCVTIMEO per wait when either is set, else 10 s in
 * all: ETIMEDOUT. A non-blocking Socket behaves as connect(2): EINPROGRESS
 * at once; poll(2) it (POLLOUT until connected, then POLLIN) and call again:
 * each call advances the handshake without blocking and returns -1/EALREADY
 * while in progress, then 0 with Dst filled or -1 with the failure. On
 * failure Socket is disconnected again (connect with AF_UNSPEC) and Dst is
 * untouched, but a connect cannot be fully undone: Socket keeps the local
 * port the kernel bound it to. */
int socks5udp_associate(int Socket, const struct sockaddr *Dst, size_t DstLen,
                        const struct sockaddr *Svr, size_t SvrLen);

/* Sends Message to the target Dst through the SOCKSv5 relay Svr, a
 * rendezvous returned by socks5udp_associate(), from the SOCK_DGRAM UDP
 * socket Socket: prepends the RFC 1928 UDP header for Dst (the payload is
 * not copied). Returns 0 on success (AIX semantics), -1 with errno set.
 * Flags go to sendmsg(2) (MSG_NOSIGNAL is added).
 *
 * When Svr is a relay a lease of this process has had, the lease's news is
 * applied first and the datagram goes to its current relay (the lease may
 * have been moved to another association). The broker claimed that
 * association with a UDP socket of its own, bound to the source address it
 * named to the server, so that nobody else can use it: the first call for
 * a lease puts that socket in place of Socket, as socks5udp_bind() does
 * (Socket keeps its number, close-on-exec and O_NONBLOCK state, its
 * connected peer and common options: buffers, timeouts, IP_PKTINFO,
 * IPV6_RECVPKTINFO, TOS/TCLASS, TTL/hop limit, IP_RECVERR; its own address
 * is replaced), and so does the first call after every renewal. One
 * Socket therefore serves one lease: a Socket that carries another live
 * lease's socket fails with EADDRINUSE. For a server configured with claim
 * "first_datagram" the lease has no socket of its own: Socket is used as it
 * is, and the datagram carries the source IP that association expects
 * (IP_PKTINFO / IPV6_PKTINFO; an IP the kernel refuses as not local here is
 * left out). The lease is found by Svr, not by Socket.
 * A lost lease fails with ENOTCONN and socks5_errno S5_ELOST (or
 * the error the broker reported). While the broker is renewing the lease
 * (its association ended and no new one is ready yet) the call fails with
 * EAGAIN and socks5_errno S5_ERENEWING, and nothing is sent: call again
 * once the lease socket becomes readable (the renewal's outcome arrived).
 * Any other Svr is used as given.
 * Dst and Svr are not probed for EFAULT.
 * Errors: EBADF, ENOTSOCK, EINVAL (not a UDP socket; NULL or short Dst/Svr),
 * EAFNOSUPPORT (not AF_INET/AF_INET6), EMSGSIZE (header + MsgLen > 65507),
 * and those of sendmsg(2). */
int socks5udp_sendto(int Socket, void *Message, size_t MsgLen, int Flags,
                     struct sockaddr *Dst, size_t DstLen,
                     struct sockaddr *Svr, size_t SvrLen);

/* Extensions, not on AIX. */

/* Receives one datagram on a UDP socket used with socks5udp_sendto() and
 * strips its SOCKS header. Datagrams that do not come from the current relay
 * of a lease of this process, or carry RSV != 0, FRAG != 0, a domain name
 * or an unknown address type are dropped and the next one is received
 * (MSG_DONTWAIT or O_NONBLOCK: -1/EAGAIN when none is left). From (may be
 * NULL) receives the original sender as sockaddr_in/sockaddr_in6, truncated
 * to *FromLen, which is set to the full length. Returns the payload length,
 * truncated to Len; with MSG_TRUNC in Flags, the full payload length, as
 * recv(2) on Linux; with MSG_PEEK the datagram stays queued (dropped ones
 * are consumed). -1 with errno on failure (EINVAL also for a From without
 * FromLen, or MSG_ERRQUEUE). */
ssize_t socks5udp_recvfrom(int Socket, void *Buf, size_t Len, int Flags,
                           struct sockaddr *From, socklen_t *FromLen);

/* Batches, which no SOCKS client offers: socks5udp_sendto() and
 * socks5udp_recvfrom() for up to 1024 datagrams in one sendmmsg(2) /
 * recvmmsg(2).
 *
 * socks5udp_sendmmsg sends every message of MsgVec through the relay Svr
 * (a rendezvous, followed to the lease's current relay as by
 * socks5udp_sendto, once for the batch): each msg_hdr.msg_name is that
 * datagram's target, its iovecs the payload (framed with one header iovec in
 * front, not copied); msg_control is not sent. Returns how many were sent,
 * each one's msg_len set to its payload bytes; a message with a bad target
 * (EINVAL, EAFNOSUPPORT) or too large (EMSGSIZE) ends the batch before it:
 * -1 with that errno if it is the first. Errors and Flags otherwise as
 * socks5udp_sendto, and as sendmmsg(2).
 *
 * socks5udp_recvmmsg receives up to VLen datagrams with recvmmsg(2) (Flags
 * and Timeout as there) and keeps what socks5udp_recvfrom keeps, in
 * MsgVec[0..n): the payload in msg_iov, msg_len its bytes (MSG_TRUNC in
 * msg_flags when it did not fit), msg_name the original sender (truncated to
 * msg_namelen, which is set to the full length), msg_controllen 0. Returns n
 * (at least 1), or -1: EAGAIN when non-blocking and nothing good was
 * waiting (datagrams dropped are not counted), EINVAL for MSG_PEEK or
 * MSG_ERRQUEUE, else as recvmmsg(2). */
int socks5udp_sendmmsg(int Socket, struct mmsghdr *MsgVec, unsigned int VLen, int Flags,
                       struct sockaddr *Svr, size_t SvrLen);
int socks5udp_recvmmsg(int Socket, struct mmsghdr *MsgVec, unsigned int VLen, int Flags,
                       struct timespec *Timeout);

/* Puts the UDP socket of the lease LeaseSocket's association in place of
 * UdpSocket, as socks5udp_sendto() does at its first datagram (see there):
 * for applications that frame datagrams themselves and send them with
 * sendto(2)/sendmsg(2) from UdpSocket. Call it once the lease is ready
 * (socks5udp_associate() returned 0), before the first datagram, and again
 * after each renewal (when LeaseSocket became readable and
 * socks5udp_current() returned 0): the association is then another, with
 * another socket. Datagrams from any other socket are dropped by the server
 * (only the association's socket can use it); register UdpSocket with
 * epoll(7) after this call, as the descriptor then names another socket.
 * A lease without a socket of its own (claim "first_datagram", direct
 * mode) leaves UdpSocket as it is and returns 0. Returns 0, or -1 with
 * errno: EBADF, ENOTSOCK, EINVAL (UdpSocket not a UDP socket, LeaseSocket
 * not a lease of this process), EINPROGRESS (still pending), EADDRINUSE
 * (UdpSocket carries another live lease's socket), the lease's failure
 * (lost), or fcntl(2)/dup3(2)'s. */
int socks5udp_bind(int LeaseSocket, int UdpSocket);

/* Writes the current relay of the lease LeaseSocket (a Socket that
 * socks5udp_associate() made a lease) to Rendezvous, after applying the
 * lease's news; for applications that frame datagrams themselves: call it
 * when LeaseSocket becomes readable. Returns 0, or -1 with errno: EINVAL
 * (not a lease of this process, NULL Rendezvous, or Len too small for the
 * relay's address), EINPROGRESS (still pending), EAGAIN with socks5_errno
 * S5_ERENEWING (being renewed: no usable relay until LeaseSocket becomes
 * readable again), ENOTCONN with socks5_errno S5_ELOST (lost; or the
 * failure the broker reported). */
int socks5udp_current(int LeaseSocket, struct sockaddr *Rendezvous, size_t Len);

/* The SOCKSv5 server the broker would use for Dst, as on AIX. Returns a
 * pointer to thread-local storage (overwritten by the next call in the same
 * thread) holding a sockaddr_in/sockaddr_in6, or NULL with errno set: ENOENT
 * with socks5_errno S5_ENOSERV when no server is configured or matches,
 * ECONNREFUSED with S5_ENOSERV when s5brokerd is not running, EINVAL /
 * EAFNOSUPPORT / EFAULT for a bad Dst. */
struct sockaddr *socks5_getserv(struct sockaddr *Dst, size_t DstLen);

/* Human-readable text for an S5_E* code (or for an errno value). */
const char *socks5_strerror(int s5err);

#ifdef __cplusplus
}
#endif

#endif /* S5BROKER_SOCKS5_H */
