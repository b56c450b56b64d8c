/* The spray attack on pooled associations, for tests/integration/claim_test:
 * sends a SOCKS-framed datagram (RSV FRAG ATYP target, payload "SPRAY") to
 * every port of the local ephemeral range on ADDRESS, over and over, until
 * killed. A relay that takes it forwards "SPRAY" to TARGET:PORT, which the
 * test watches. Run as a user outside the client group.
 *
 *   udp-sprayer ADDRESS TARGET PORT
 *
 * Writes one line, "spraying N ports", once the first sweep is done, then
 * one dot per 10 sweeps (so a test can wait for sweeps instead of time). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int parse(const char *ip, unsigned port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)port);
        *len = sizeof *v4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)port);
        *len = sizeof *v6;
        return AF_INET6;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: udp-sprayer ADDRESS TARGET PORT\n");
        return 2;
    }
    struct sockaddr_storage at, target;
    socklen_t at_len, target_len;
    int family = parse(argv[1], 0, &at, &at_len);
    int tfamily = parse(argv[2], (unsigned)atoi(argv[3]), &target, &target_len);
    if (family < 0 || tfamily < 0) {
        fprintf(stderr, "udp-sprayer: not an IP address\n");
        return 2;
    }
    unsigned lo = 32768, hi = 60999;
    FILE *range = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (range) {
        if (fscanf(range, "%u %u", &lo, &hi) != 2) lo = 32768, hi = 60999;
        fclose(range);
    }
    unsigned char dgram[64];
    size_t n = 0;
    dgram[n++] = 0;  /* RSV */
    dgram[n++] = 0;
    dgram[n++] = 0;  /* FRAG */
    if (tfamily == AF_INET) {
        dgram[n++] = 1;
        memcpy(dgram + n, &((struct sockaddr_in *)&target)->sin_addr, 4);
        n += 4;
        memcpy(dgram + n, &((struct sockaddr_in *)&target)->sin_port, 2);
    } else {
        dgram[n++] = 4;
        memcpy(dgram + n, &((struct sockaddr_in6 *)&target)->sin6_addr, 16);
        n += 16;
        memcpy(dgram + n, &((struct sockaddr_in6 *)&target)->sin6_port, 2);
    }
    n += 2;
    memcpy(dgram + n, "SPRAY", 5);
    n += 5;
    /* One socket per sweep: a relay that took a datagram from the last one
     * answers ICMP errors to the next, which must not stop the spray. */
    for (unsigned long sweep = 0;; ++sweep) {
        int s = socket(family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (s < 0) {
            perror("udp-sprayer: socket");
            return 1;
        }
        for (unsigned p = lo; p <= hi; ++p) {
            if (family == AF_INET)
                ((struct sockaddr_in *)&at)->sin_port = htons((unsigned short)p);
            else
                ((struct sockaddr_in6 *)&at)->sin6_port = htons((unsigned short)p);
            (void)sendto(s, dgram, n, 0, (struct sockaddr *)&at, at_len);
        }
        close(s);
        if (sweep == 0) printf("spraying %u ports\n", hi - lo + 1);
        else if (sweep % 10 == 0) putchar('.');
        fflush(stdout);
    }
}
