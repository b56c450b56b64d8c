/*
 * lease_holder: an application that holds leases and keeps sending through
 * them, for the system suite's restart tests (tests/system/run) and the
 * restart blackout benchmark. Links the installed libs5client like any
 * application.
 *
 *   lease_holder --leases N --interval-ms MS --echo IP:PORT --out FILE
 *
 * Takes N leases from s5brokerd for the UDP echo service IP:PORT, then every
 * MS milliseconds sends one datagram per lease through socks5udp_sendto()
 * and receives the echoes with socks5udp_recvfrom(). Every 200 ms, and at
 * the end, it replaces FILE with one line of counters:
 *
 *   ready=N sent=S received=R late=L send_errors=E renewing=W lost_leases=H
 *   relays_changed=C first_error=TEXT
 *
 * "received" counts echoes of this run's datagrams (each at most once);
 * "late" those that came back more than 1 s after they were sent; send
 * errors other than the documented EAGAIN/S5_ERENEWING (counted in
 * "renewing") go to send_errors, and the first one is named. lost_leases:
 * leases whose socket reports POLLHUP (the broker released them) or
 * whose sendto failed with ENOTCONN. relays_changed: leases whose
 * socks5udp_current() differs from the rendezvous associate() gave.
 * SIGTERM: stops sending, waits up to 2 s for the echoes still in flight,
 * writes FILE and exits 0. Exit 1 when an association cannot be made.
 *
 *   lease_holder --probe SINCE_NS --echo IP:PORT
 *
 * One socks5udp_associate() (blocking: a call made while no broker runs
 * waits in the bus daemon for the next one) and prints the milliseconds
 * from SINCE_NS (CLOCK_REALTIME, as date +%s%N) until it was answered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <s5broker/socks5.h>

#define MAX_LEASES 4096
#define WINDOW 256 /* sequence numbers remembered per lease */

struct lease {
    int s, u;                      /* lease socket, datagram socket */
    struct sockaddr_in relay;      /* as associate() gave it */
    uint32_t next_seq;
    uint64_t next_due;             /* ns: its next datagram */
    uint64_t sent_at[WINDOW];      /* ns, 0: not outstanding */
    int lost;
};

static struct lease leases[MAX_LEASES];
static int n_leases;
static volatile sig_atomic_t stopping;
static unsigned long long sent, received, late, send_errors, renewing;
static char first_error[200] = "none";
static const char *out_path;
static struct sockaddr_in target;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

static int lost_leases(void) {
    int n = 0;
    for (int i = 0; i < n_leases; i++) {
        struct pollfd p = {leases[i].s, 0, 0};
        if (leases[i].lost || (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)))) n++;
    }
    return n;
}

static int relays_changed(void) {
    int n = 0;
    for (int i = 0; i < n_leases; i++) {
        struct sockaddr_in6 cur;
        memset(&cur, 0, sizeof cur);
        if (socks5udp_current(leases[i].s, (struct sockaddr *)&cur, sizeof cur) != 0) continue; /* counted as lost */
        const struct sockaddr_in *c = (const struct sockaddr_in *)&cur;
        if (c->sin_family != AF_INET || c->sin_port != leases[i].relay.sin_port ||
            c->sin_addr.s_addr != leases[i].relay.sin_addr.s_addr)
            n++;
    }
    return n;
}

static void write_out(void) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f,
            "ready=%d sent=%llu received=%llu late=%llu send_errors=%llu renewing=%llu lost_leases=%d "
            "relays_changed=%d first_error=%s\n",
            n_leases, sent, received, late, send_errors, renewing, lost_leases(), relays_changed(), first_error);
    fclose(f);
    rename(tmp, out_path);
}

/* One datagram through lease i. */
static void send_one(int i) {
    {
        struct lease *l = &leases[i];
        if (l->lost) return;
        char msg[64];
        uint32_t seq = l->next_seq;
        int len = snprintf(msg, sizeof msg, "%d:%u", i, seq);
        if (socks5udp_sendto(l->u, msg, (size_t)len, 0, (struct sockaddr *)&target, sizeof target,
                             (struct sockaddr *)&l->relay, sizeof l->relay) == 0) {
            l->sent_at[seq % WINDOW] = now_ns();
            l->next_seq++;
            sent++;
            return;
        }
        int e = errno, s5 = socks5_errno;
        if (e == EAGAIN && s5 == S5_ERENEWING) {
            renewing++;
            return;
        }
        if (e == ENOTCONN) l->lost = 1;
        if (send_errors++ == 0)
            snprintf(first_error, sizeof first_error, "lease%d:%s/%s", i, strerror(e), s5 ? socks5_strerror(s5) : "-");
        for (char *c = first_error; *c; c++)
            if (*c == ' ') *c = '_';
    }
}

static void receive_all(void) {
    for (int i = 0; i < n_leases; i++) {
        for (;;) {
            char buf[128];
            ssize_t n = socks5udp_recvfrom(leases[i].u, buf, sizeof buf - 1, MSG_DONTWAIT, NULL, NULL);
            if (n <= 0) break;
            buf[n] = 0;
            int idx;
            unsigned seq;
            if (sscanf(buf, "%d:%u", &idx, &seq) != 2 || idx != i) continue;
            struct lease *l = &leases[i];
            uint64_t *at = &l->sent_at[seq % WINDOW];
            if (seq >= l->next_seq || *at == 0) continue; /* a duplicate, or too old to tell */
            if (now_ns() - *at > 1000000000u) late++;
            *at = 0;
            received++;
        }
    }
}

int main(int argc, char **argv) {
    int want = 1, interval_ms = 100;
    const char *echo = NULL;
    long long probe_since = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--probe")) probe_since = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--leases")) want = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--interval-ms")) interval_ms = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--echo")) echo = argv[i + 1];
        else if (!strcmp(argv[i], "--out")) out_path = argv[i + 1];
    }
    char ip[64];
    unsigned port = 0;
    if (probe_since >= 0 && echo && sscanf(echo, "%63[^:]:%u", ip, &port) == 2 &&
        inet_pton(AF_INET, ip, &target.sin_addr) == 1) {
        target.sin_family = AF_INET;
        target.sin_port = htons((uint16_t)port);
        struct sockaddr_in6 rv;
        memset(&rv, 0, sizeof rv);
        memcpy(&rv, &target, sizeof target);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (socks5udp_associate(s, (struct sockaddr *)&rv, sizeof rv, NULL, 0) != 0) {
            fprintf(stderr, "socks5udp_associate: %s (%s)\n", strerror(errno), socks5_strerror(socks5_errno));
            return 1;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        printf("%lld\n", (now - probe_since) / 1000000LL);
        return 0;
    }
    if (!echo || !out_path || want < 1 || want > MAX_LEASES || interval_ms < 1 ||
        sscanf(echo, "%63[^:]:%u", ip, &port) != 2 || inet_pton(AF_INET, ip, &target.sin_addr) != 1) {
        fprintf(stderr, "usage: lease_holder --leases N --interval-ms MS --echo IP:PORT --out FILE\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    for (int i = 0; i < want; i++) {
        struct lease *l = &leases[i];
        struct sockaddr_in6 rv;
        memset(&rv, 0, sizeof rv);
        memcpy(&rv, &target, sizeof target);
        l->s = socket(AF_INET, SOCK_STREAM, 0);
        l->u = socket(AF_INET, SOCK_DGRAM, 0);
        if (l->s < 0 || l->u < 0) {
            perror("socket");
            return 1;
        }
        if (socks5udp_associate(l->s, (struct sockaddr *)&rv, sizeof rv, NULL, 0) != 0) {
            fprintf(stderr, "lease %d: socks5udp_associate: %s (%s)\n", i, strerror(errno),
                    socks5_strerror(socks5_errno));
            return 1;
        }
        memcpy(&l->relay, &rv, sizeof l->relay);
        n_leases++;
    }
    write_out();

    /* Each lease sends every interval, the leases spread evenly over it
     * (not all at once: a burst of N datagrams would overflow socket
     * buffers on the way, which is not what is measured). */
    const uint64_t interval = (uint64_t)interval_ms * 1000000u, start = now_ns();
    for (int i = 0; i < n_leases; i++) leases[i].next_due = start + interval * (uint64_t)i / (uint64_t)n_leases;
    uint64_t next_write = start + 200000000u;
    while (!stopping) {
        uint64_t t = now_ns(), next_send = UINT64_MAX;
        for (int i = 0; i < n_leases; i++) {
            struct lease *l = &leases[i];
            if (t >= l->next_due) {
                send_one(i);
                l->next_due += interval;
                if (l->next_due < t) l->next_due = t; /* fell behind: do not burst */
            }
            if (l->next_due < next_send) next_send = l->next_due;
        }
        receive_all();
        if (t >= next_write) {
            write_out();
            next_write = t + 200000000u;
        }
        /* Wait for an echo or the next send, whichever comes first. */
        struct pollfd p[MAX_LEASES];
        for (int i = 0; i < n_leases; i++) p[i] = (struct pollfd){leases[i].u, POLLIN, 0};
        uint64_t until = next_send < next_write ? next_send : next_write;
        t = now_ns();
        int ms = until > t ? (int)((until - t) / 1000000u) : 0;
        poll(p, (nfds_t)n_leases, ms);
    }
    /* The echoes still in flight, up to 2 s. */
    uint64_t deadline = now_ns() + 2000000000u;
    while (received < sent && now_ns() < deadline) {
        struct pollfd p[MAX_LEASES];
        for (int i = 0; i < n_leases; i++) p[i] = (struct pollfd){leases[i].u, POLLIN, 0};
        poll(p, (nfds_t)n_leases, 50);
        receive_all();
    }
    write_out();
    return 0;
}
