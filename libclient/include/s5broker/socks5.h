/*
 * <s5broker/socks5.h> — SOCKSv5 UDP associations through s5brokerd.
 *
 * The AIX call socks5udp_associate() with its exact signature and errors,
 * served by the s5brokerd daemon over D-Bus: the association is already made
 * (pooled) by the broker, which keeps the credentials. See socks5udp_associate(3).
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

#ifdef __cplusplus
extern "C" {
#endif

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

/* The SOCKS-specific error of the last failed call in this thread. */
int *socks5_errno_location(void);
#define socks5_errno (*socks5_errno_location())

/* Requests a UDP association for Dst on the SOCKSv5 server Svr (NULL: the
 * broker routes by Dst). On success returns 0, Socket becomes the lease (keep
 * it open as long as the association is needed) and Dst is overwritten with
 * the rendezvous address to send SOCKS-encapsulated datagrams to. On failure
 * returns -1 with errno and socks5_errno set; Socket and Dst are untouched. */
int socks5udp_associate(int Socket, const struct sockaddr *Dst, size_t DstLen,
                        const struct sockaddr *Svr, size_t SvrLen);

/* Human-readable text for an S5_E* code (or for an errno value). */
const char *socks5_strerror(int s5err);

#ifdef __cplusplus
}
#endif

#endif /* S5BROKER_SOCKS5_H */
