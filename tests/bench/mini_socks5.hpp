// A minimal SOCKS5 server for benchmarks that need more simultaneous UDP
// associations than a real server can hold here. It speaks only the control
// protocol (RFC 1928 no-auth greeting + UDP ASSOCIATE) and never relays a
// datagram: every association is told the same relay address, and its
// control connection is kept open until the client closes it, because that
// connection's lifetime is what the broker counts as the association's.
#pragma once

#include <cstdint>
#include <memory>

namespace s5bench {

class MiniSocks5 {
public:
    // Listens on 127.0.0.1 (port chosen by the kernel). Every UDP ASSOCIATE
    // is answered with REP=0 and BND = 127.0.0.1:relay_port.
    // Raises the process's RLIMIT_NOFILE soft limit to its hard limit.
    // Throws std::runtime_error if setup fails.
    explicit MiniSocks5(uint16_t relay_port);
    ~MiniSocks5();  // stops the thread, closes every socket
    MiniSocks5(const MiniSocks5&) = delete;
    MiniSocks5& operator=(const MiniSocks5&) = delete;

    uint16_t port() const;
    int open_connections() const;  // thread-safe (atomic)
    // UDP ASSOCIATE replies sent so far, thread-safe. Counted just before the
    // reply is written, so a client that has read its reply is already in it.
    uint64_t associations() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace s5bench
