// The C library's own socket calls, as they were before libs5socksify.so was
// preloaded in front of them (dlsym(RTLD_NEXT)), and the guard that sends
// every call made from inside the shim (ours, libs5client's, sd-bus's)
// straight to them.
//
// Each pointer is resolved on first use, not in a constructor: other
// libraries' constructors may call write() or close() before ours has run.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

namespace s5::socksify::real {

int socket(int domain, int type, int protocol);
int connect(int fd, const sockaddr* addr, socklen_t len);
int close(int fd);
int dup(int fd);
int dup2(int fd, int fd2);
int dup3(int fd, int fd2, int flags);
int fcntl(int fd, int cmd, void* arg);
int close_range(unsigned first, unsigned last, int flags);
ssize_t sendto(int fd, const void* buf, size_t len, int flags, const sockaddr* to, socklen_t tolen);
ssize_t sendmsg(int fd, const msghdr* msg, int flags);
int sendmmsg(int fd, mmsghdr* vec, unsigned vlen, int flags);
ssize_t recvmsg(int fd, msghdr* msg, int flags);
int recvmmsg(int fd, mmsghdr* vec, unsigned vlen, int flags, struct timespec* timeout);
ssize_t write(int fd, const void* buf, size_t len);
ssize_t writev(int fd, const iovec* iov, int n);
ssize_t read(int fd, void* buf, size_t len);
ssize_t readv(int fd, const iovec* iov, int n);
ssize_t send(int fd, const void* buf, size_t len, int flags);
ssize_t recv(int fd, void* buf, size_t len, int flags);
ssize_t recvfrom(int fd, void* buf, size_t len, int flags, sockaddr* from, socklen_t* fromlen);
int getpeername(int fd, sockaddr* addr, socklen_t* len);
long syscall6(long number, long a1, long a2, long a3, long a4, long a5, long a6);

}  // namespace s5::socksify::real

namespace s5::socksify {

// How deep the current thread is inside the shim. Every interposed call
// made while it is non-zero goes to the C library unchanged: the shim's own
// sends (and libs5client's, which frames with sendmsg) must not be proxied
// again.
extern __thread int t_inside;

struct Inside {
    Inside() { ++t_inside; }
    ~Inside() { --t_inside; }
    Inside(const Inside&) = delete;
    Inside& operator=(const Inside&) = delete;
};

}  // namespace s5::socksify
