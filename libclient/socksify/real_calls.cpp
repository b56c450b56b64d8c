#include "real_calls.hpp"

#include <dlfcn.h>
#include <errno.h>
#include <unistd.h>

namespace s5::socksify {

__thread int t_inside = 0;

namespace {

// The next definition of `name` after ours; a missing one is ENOSYS, never
// a jump to null.
template <typename Fn>
Fn next(const char* name) {
    return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

}  // namespace

#define S5_REAL(type, name)                              \
    static const auto fn = next<type>(name);             \
    if (!fn) {                                           \
        errno = ENOSYS;                                  \
        return -1;                                       \
    }

namespace real {

int socket(int domain, int type, int protocol) {
    S5_REAL(int (*)(int, int, int), "socket");
    return fn(domain, type, protocol);
}
int connect(int fd, const sockaddr* addr, socklen_t len) {
    S5_REAL(int (*)(int, const sockaddr*, socklen_t), "connect");
    return fn(fd, addr, len);
}
int close(int fd) {
    S5_REAL(int (*)(int), "close");
    return fn(fd);
}
int dup(int fd) {
    S5_REAL(int (*)(int), "dup");
    return fn(fd);
}
int dup2(int fd, int fd2) {
    S5_REAL(int (*)(int, int), "dup2");
    return fn(fd, fd2);
}
int dup3(int fd, int fd2, int flags) {
    S5_REAL(int (*)(int, int, int), "dup3");
    return fn(fd, fd2, flags);
}
int fcntl(int fd, int cmd, void* arg) {
    S5_REAL(int (*)(int, int, ...), "fcntl");
    return fn(fd, cmd, arg);
}
int close_range(unsigned first, unsigned last, int flags) {
    S5_REAL(int (*)(unsigned, unsigned, int), "close_range");
    return fn(first, last, flags);
}
ssize_t sendto(int fd, const void* buf, size_t len, int flags, const sockaddr* to, socklen_t tolen) {
    S5_REAL(ssize_t (*)(int, const void*, size_t, int, const sockaddr*, socklen_t), "sendto");
    return fn(fd, buf, len, flags, to, tolen);
}
ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
    S5_REAL(ssize_t (*)(int, const msghdr*, int), "sendmsg");
    return fn(fd, msg, flags);
}
int sendmmsg(int fd, mmsghdr* vec, unsigned vlen, int flags) {
    S5_REAL(int (*)(int, mmsghdr*, unsigned, int), "sendmmsg");
    return fn(fd, vec, vlen, flags);
}
ssize_t recvmsg(int fd, msghdr* msg, int flags) {
    S5_REAL(ssize_t (*)(int, msghdr*, int), "recvmsg");
    return fn(fd, msg, flags);
}
int recvmmsg(int fd, mmsghdr* vec, unsigned vlen, int flags, struct timespec* timeout) {
    S5_REAL(int (*)(int, mmsghdr*, unsigned, int, struct timespec*), "recvmmsg");
    return fn(fd, vec, vlen, flags, timeout);
}
ssize_t write(int fd, const void* buf, size_t len) {
    S5_REAL(ssize_t (*)(int, const void*, size_t), "write");
    return fn(fd, buf, len);
}
ssize_t writev(int fd, const iovec* iov, int n) {
    S5_REAL(ssize_t (*)(int, const iovec*, int), "writev");
    return fn(fd, iov, n);
}
ssize_t read(int fd, void* buf, size_t len) {
    S5_REAL(ssize_t (*)(int, void*, size_t), "read");
    return fn(fd, buf, len);
}
ssize_t readv(int fd, const iovec* iov, int n) {
    S5_REAL(ssize_t (*)(int, const iovec*, int), "readv");
    return fn(fd, iov, n);
}
ssize_t send(int fd, const void* buf, size_t len, int flags) {
    S5_REAL(ssize_t (*)(int, const void*, size_t, int), "send");
    return fn(fd, buf, len, flags);
}
ssize_t recv(int fd, void* buf, size_t len, int flags) {
    S5_REAL(ssize_t (*)(int, void*, size_t, int), "recv");
    return fn(fd, buf, len, flags);
}
ssize_t recvfrom(int fd, void* buf, size_t len, int flags, sockaddr* from, socklen_t* fromlen) {
    S5_REAL(ssize_t (*)(int, void*, size_t, int, sockaddr*, socklen_t*), "recvfrom");
    return fn(fd, buf, len, flags, from, fromlen);
}
int getpeername(int fd, sockaddr* addr, socklen_t* len) {
    S5_REAL(int (*)(int, sockaddr*, socklen_t*), "getpeername");
    return fn(fd, addr, len);
}
long syscall6(long number, long a1, long a2, long a3, long a4, long a5, long a6) {
    S5_REAL(long (*)(long, ...), "syscall");
    return fn(number, a1, a2, a3, a4, a5, a6);
}

}  // namespace real
}  // namespace s5::socksify
