/*
 * udp_echo_client — the smallest complete use of socks5udp_associate().
 *
 *   udp_echo_client SERVER_IP SERVER_PORT ECHO_IP ECHO_PORT [COUNT]
 *
 * Asks s5brokerd for a UDP association on the SOCKS5 server SERVER_IP:PORT
 * (which must be configured in the broker; the broker holds its password),
 * then sends COUNT (default 3) SOCKS-encapsulated datagrams to the UDP echo
 * service ECHO_IP:ECHO_PORT through the relay and prints every reply.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <s5broker/socks5.h>

static int parse_addr(const char *ip, const char *port, struct sockaddr_storage *ss, size_t *len) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    long p = strtol(port, NULL, 10);
    memset(ss, 0, sizeof *ss);
    if (p < 1 || p > 65535) return -1;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)p);
        *len = sizeof *sin;
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)p);
        *len = sizeof *sin6;
        return 0;
    }
    return -1;
}

static const char *show(const struct sockaddr_storage *ss, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        snprintf(buf, len, "%s:%u", ip, ntohs(s->sin_port));
    } else {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        snprintf(buf, len, "[%s]:%u", ip, ntohs(s->sin6_port));
    }
    return buf;
}

/* RFC 1928 §7: RSV(2) FRAG ATYP DST.ADDR DST.PORT, then the payload. */
static size_t frame(const struct sockaddr_storage *dst, const char *msg, unsigned char *out, size_t cap) {
    size_t n = 0, mlen = strlen(msg);
    out[n++] = 0; out[n++] = 0; out[n++] = 0;
    if (dst->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)dst;
        out[n++] = 1;
        memcpy(out + n, &s->sin_addr, 4); n += 4;
        memcpy(out + n, &s->sin_port, 2); n += 2;
    } else {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)dst;
        out[n++] = 4;
        memcpy(out + n, &s->sin6_addr, 16); n += 16;
        memcpy(out + n, &s->sin6_port, 2); n += 2;
    }
    if (n + mlen > cap) return 0;
    memcpy(out + n, msg, mlen);
    return n + mlen;
}

static size_t header_len(const unsigned char *b, size_t n) {
    if (n < 4 || b[0] || b[1] || b[2]) return 0;
    if (b[3] == 1 && n >= 10) return 10;
    if (b[3] == 4 && n >= 22) return 22;
    return 0;
}

int main(int argc, char **argv) {
    struct sockaddr_storage svr, dst, target, relay;
    size_t svrlen, dstlen;
    int count = argc > 5 ? atoi(argv[5]) : 3, s, u, i, got = 0;
    char a[80], b[80];

    if (argc < 5 || parse_addr(argv[1], argv[2], &svr, &svrlen) || parse_addr(argv[3], argv[4], &dst, &dstlen)) {
        fprintf(stderr, "usage: %s SERVER_IP SERVER_PORT ECHO_IP ECHO_PORT [COUNT]\n", argv[0]);
        return 2;
    }
    target = dst;

    s = socket(svr.ss_family, SOCK_STREAM, 0);
    if (s < 0) { perror("socket"); return 1; }
    /* Dst goes in as the target and comes back as the rendezvous. A
     * sockaddr_in6-sized buffer holds either family's rendezvous. */
    if (socks5udp_associate(s, (struct sockaddr *)&dst, sizeof(struct sockaddr_in6), (struct sockaddr *)&svr,
                            svrlen) != 0) {
        int e = errno, s5 = socks5_errno;
        fprintf(stderr, "socks5udp_associate: %s (errno %d%s%s)\n", strerror(e), e, s5 ? ", " : "",
                s5 ? socks5_strerror(s5) : "");
        return 1;
    }
    relay = dst;
    printf("association ready: server %s, rendezvous %s\n", show(&svr, a, sizeof a), show(&relay, b, sizeof b));

    u = socket(relay.ss_family, SOCK_DGRAM, 0);
    if (u < 0) { perror("socket"); return 1; }
    /* This program frames its datagrams itself and sends them with plain
     * sendto(): the association takes datagrams only from its own UDP
     * socket, which socks5udp_bind() puts in place of u (socks5udp_sendto()
     * would do that by itself). */
    if (socks5udp_bind(s, u) != 0) {
        fprintf(stderr, "socks5udp_bind: %s\n", strerror(errno));
        return 1;
    }
    for (i = 1; i <= count; i++) {
        unsigned char out[512], in[2048];
        char msg[64];
        struct pollfd p = {u, POLLIN, 0};
        ssize_t n;
        size_t len, h;
        snprintf(msg, sizeof msg, "hello %d through s5broker", i);
        len = frame(&target, msg, out, sizeof out);
        if (sendto(u, out, len, 0, (struct sockaddr *)&relay,
                   relay.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) < 0) {
            perror("sendto");
            return 1;
        }
        if (poll(&p, 1, 2000) != 1) { fprintf(stderr, "datagram %d: no reply within 2 s\n", i); continue; }
        n = recv(u, in, sizeof in, 0);
        h = n > 0 ? header_len(in, (size_t)n) : 0;
        if (!h) { fprintf(stderr, "datagram %d: malformed reply\n", i); continue; }
        printf("echo %d: \"%.*s\" from %s\n", i, (int)((size_t)n - h), (char *)in + h, show(&target, a, sizeof a));
        got++;
    }
    close(u);
    close(s); /* releases the association in the broker */
    printf("%d of %d datagrams echoed\n", got, count);
    return got == count ? 0 : 1;
}
