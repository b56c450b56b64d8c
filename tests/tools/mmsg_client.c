/* mmsg-client HOST PORT COUNT: an ordinary UDP client that batches, as
 * high-rate programs do: COUNT datagrams "mmsg-N" to HOST:PORT in one
 * sendmmsg(2), then recvmmsg(2) with MSG_WAITFORONE until COUNT replies came
 * back (5 s at most), from threads of its own as well: a second thread does
 * the same on its own socket at the same time. Prints each reply's payload
 * and sender, then "ok"; exits 1 with "error ..." otherwise. For the
 * s5socksify tests (the shim must carry both calls). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX 64

static struct sockaddr_storage dst;
static socklen_t dstlen;
static int count;

struct run {
    int id;
    int ok;
    char out[MAX * 96];
};

static void *one(void *arg) {
    struct run *r = arg;
    int s = socket(dst.ss_family, SOCK_DGRAM, 0);
    char payload[MAX][32];
    struct iovec iov[MAX];
    struct mmsghdr v[MAX];
    memset(v, 0, sizeof v);
    for (int i = 0; i < count; ++i) {
        snprintf(payload[i], sizeof payload[i], "mmsg-%d-%d", r->id, i);
        iov[i].iov_base = payload[i];
        iov[i].iov_len = strlen(payload[i]);
        v[i].msg_hdr.msg_name = &dst;
        v[i].msg_hdr.msg_namelen = dstlen;
        v[i].msg_hdr.msg_iov = &iov[i];
        v[i].msg_hdr.msg_iovlen = 1;
    }
    int n = sendmmsg(s, v, (unsigned)count, 0);
    if (n != count) {
        snprintf(r->out, sizeof r->out, "error sendmmsg %d %d\n", n, errno);
        return NULL;
    }
    char buf[MAX][128];
    struct sockaddr_storage from[MAX];
    size_t used = 0;
    int got = 0;
    while (got < count) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1) {
            snprintf(r->out + used, sizeof r->out - used, "error timeout after %d\n", got);
            return NULL;
        }
        memset(v, 0, sizeof v);
        for (int i = 0; i < count - got; ++i) {
            iov[i].iov_base = buf[i];
            iov[i].iov_len = sizeof buf[i];
            v[i].msg_hdr.msg_iov = &iov[i];
            v[i].msg_hdr.msg_iovlen = 1;
            v[i].msg_hdr.msg_name = &from[i];
            v[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        n = recvmmsg(s, v, (unsigned)(count - got), MSG_WAITFORONE, NULL);
        if (n < 0) {
            snprintf(r->out + used, sizeof r->out - used, "error recvmmsg %d\n", errno);
            return NULL;
        }
        for (int i = 0; i < n; ++i) {
            char host[INET6_ADDRSTRLEN] = "?";
            unsigned port = 0;
            if (from[i].ss_family == AF_INET) {
                struct sockaddr_in *a = (struct sockaddr_in *)&from[i];
                inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
                port = ntohs(a->sin_port);
            } else if (from[i].ss_family == AF_INET6) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&from[i];
                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
                port = ntohs(a->sin6_port);
            }
            used += (size_t)snprintf(r->out + used, sizeof r->out - used, "%.*s from %s %u\n",
                                     (int)v[i].msg_len, buf[i], host, port);
        }
        got += n;
    }
    r->ok = 1;
    close(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: mmsg-client HOST PORT COUNT\n");
        return 2;
    }
    count = atoi(argv[3]);
    if (count < 1 || count > MAX) return 2;
    memset(&dst, 0, sizeof dst);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&dst;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&dst;
    if (inet_pton(AF_INET, argv[1], &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((unsigned short)atoi(argv[2]));
        dstlen = sizeof *a4;
    } else if (inet_pton(AF_INET6, argv[1], &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((unsigned short)atoi(argv[2]));
        dstlen = sizeof *a6;
    } else {
        return 2;
    }
    struct run runs[2] = {{.id = 0}, {.id = 1}};
    pthread_t t;
    pthread_create(&t, NULL, one, &runs[1]);
    one(&runs[0]);
    pthread_join(t, NULL);
    fputs(runs[0].out, stdout);
    fputs(runs[1].out, stdout);
    if (!runs[0].ok || !runs[1].ok) return 1;
    puts("ok");
    return 0;
}
