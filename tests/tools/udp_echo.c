/* udp-echo [--bind IP]... --port PORT: echoes every UDP datagram back to its
 * sender, for the integration tests and scripts/demo. Binds 127.0.0.1 and ::1
 * unless --bind is given; PORT 0 picks a free port on the first address and
 * reuses it for the others. Prints "udp-echo ready port=N" once every socket is
 * bound; exits 0 on SIGTERM/SIGINT. */
#define _GNU_SOURCE /* ppoll */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BINDS 16

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* Binds a UDP socket to ip:port; returns the fd and stores the bound port. */
static int bind_udp(const char *ip, unsigned port, unsigned *bound_port) {
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)port);
        len = sizeof *sin;
    } else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)port);
        len = sizeof *sin6;
    } else {
        fprintf(stderr, "udp-echo: bad address %s\n", ip);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("udp-echo: socket");
        return -1;
    }
    if (ss.ss_family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
        fprintf(stderr, "udp-echo: bind %s port %u: %s\n", ip, port, strerror(errno));
        close(fd);
        return -1;
    }
    len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        perror("udp-echo: getsockname");
        close(fd);
        return -1;
    }
    *bound_port = ntohs(ss.ss_family == AF_INET ? sin->sin_port : sin6->sin6_port);
    return fd;
}

int main(int argc, char **argv) {
    const char *ips[MAX_BINDS];
    int nips = 0;
    long port = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc && nips < MAX_BINDS) {
            ips[nips++] = argv[++i];
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            port = strtol(argv[++i], &end, 10);
            if (*end != '\0' || port < 0 || port > 65535) port = -1;
        } else {
            port = -1;
            break;
        }
    }
    if (port < 0) {
        fprintf(stderr, "usage: udp-echo [--bind IP]... --port PORT\n");
        return 2;
    }
    if (nips == 0) {
        ips[nips++] = "127.0.0.1";
        ips[nips++] = "::1";
    }

    /* The signals stay blocked except inside ppoll(), so none is lost. */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigset_t blocked, during_poll;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigprocmask(SIG_BLOCK, &blocked, &during_poll);
    sigdelset(&during_poll, SIGTERM);
    sigdelset(&during_poll, SIGINT);

    struct pollfd pfds[MAX_BINDS];
    unsigned want = 0;
    /* With port 0 the first socket's port may be taken on another address:
     * start over a few times before giving up. */
    for (int attempt = 0, bound = 0; !bound; attempt++) {
        want = (unsigned)port;
        bound = 1;
        for (int i = 0; i < nips && bound; i++) {
            unsigned got = 0;
            pfds[i].fd = bind_udp(ips[i], want, &got);
            pfds[i].events = POLLIN;
            if (pfds[i].fd < 0) {
                if (port != 0 || attempt >= 20 || i == 0) return 1;
                while (i-- > 0) close(pfds[i].fd);
                bound = 0;
            }
            want = got; /* the others share the first socket's port */
        }
    }
    printf("udp-echo ready port=%u\n", want);
    fflush(stdout);

    static unsigned char buf[65536];
    while (!stop_requested) {
        if (ppoll(pfds, (nfds_t)nips, NULL, &during_poll) < 0) {
            if (errno == EINTR) continue;
            perror("udp-echo: poll");
            return 1;
        }
        for (int i = 0; i < nips; i++) {
            if (!(pfds[i].revents & POLLIN)) continue;
            struct sockaddr_storage from;
            socklen_t flen = sizeof from;
            ssize_t n = recvfrom(pfds[i].fd, buf, sizeof buf, MSG_DONTWAIT,
                                 (struct sockaddr *)&from, &flen);
            if (n >= 0)
                sendto(pfds[i].fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
        }
    }
    return 0;
}
