/* The far ends of associate_floors' IPC floors: the least an association
 * could cost if it were only a request and a reply carrying a descriptor.
 *
 *   floor_server seqpacket FD   (a)/(b): on the SOCK_SEQPACKET socket FD,
 *                               answer each message with 64 bytes; a
 *                               message starting with 'b' gets one end of a
 *                               fresh socket pair with its reply.
 *   floor_server p2p FD         (c): an sd-bus server (no bus daemon) on
 *                               the socket FD.
 *   floor_server bus NAME       (d): on the system bus (DBUS_SYSTEM_BUS_ADDRESS),
 *                               owning NAME.
 * Both sd-bus servers export /floor, interface org.s5broker.Floor, method
 * Get() -> h: one end of a fresh socket pair, like a lease fd. Runs until
 * its peer goes away (or it is killed). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

static int get(sd_bus_message *m, void *userdata, sd_bus_error *error) {
    (void)userdata;
    (void)error;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
    int r = sd_bus_reply_method_return(m, "h", sv[1]);
    close(sv[0]);
    close(sv[1]);
    return r;
}

static const sd_bus_vtable vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("Get", "", "h", get, 0),
    SD_BUS_VTABLE_END,
};

static int seqpacket(int fd) {
    for (;;) {
        char req[64], rep[64];
        ssize_t n = recv(fd, req, sizeof req, 0);
        if (n <= 0) return 0;
        memset(rep, 'r', sizeof rep);
        struct iovec iov = {rep, sizeof rep};
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } c;
        int sv[2] = {-1, -1};
        if (req[0] == 'b') {
            if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return 1;
            memset(&c, 0, sizeof c);
            msg.msg_control = c.b;
            msg.msg_controllen = sizeof c.b;
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &sv[1], sizeof(int));
        }
        if (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) return 0;
        if (sv[0] >= 0) {
            close(sv[0]);
            close(sv[1]);
        }
    }
}

static int serve(sd_bus *bus) {
    int r = sd_bus_add_object_vtable(bus, NULL, "/floor", "org.s5broker.Floor", vtable, NULL);
    if (r < 0) return fprintf(stderr, "floor_server: vtable: %s\n", strerror(-r)), 1;
    for (;;) {
        r = sd_bus_process(bus, NULL);
        if (r < 0) return 0;   /* the peer went away */
        if (r > 0) continue;
        if (sd_bus_wait(bus, UINT64_MAX) < 0) return 0;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: floor_server seqpacket|p2p FD | bus NAME\n"), 2;
    if (strcmp(argv[1], "seqpacket") == 0) return seqpacket(atoi(argv[2]));
    sd_bus *bus = NULL;
    int r;
    if (strcmp(argv[1], "p2p") == 0) {
        int fd = atoi(argv[2]);
        sd_id128_t id;
        if ((r = sd_id128_randomize(&id)) < 0 || (r = sd_bus_new(&bus)) < 0 || (r = sd_bus_set_fd(bus, fd, fd)) < 0 ||
            (r = sd_bus_set_server(bus, 1, id)) < 0 || (r = sd_bus_negotiate_fds(bus, 1)) < 0 ||
            (r = sd_bus_start(bus)) < 0)
            return fprintf(stderr, "floor_server: p2p: %s\n", strerror(-r)), 1;
    } else if (strcmp(argv[1], "bus") == 0) {
        if ((r = sd_bus_open_system(&bus)) < 0 || (r = sd_bus_request_name(bus, argv[2], 0)) < 0)
            return fprintf(stderr, "floor_server: bus: %s\n", strerror(-r)), 1;
    } else {
        return fprintf(stderr, "floor_server: unknown mode %s\n", argv[1]), 2;
    }
    return serve(bus);
}
