// A user-space stand-in for `tc qdisc ... netem delay`, which this kernel
// lacks: a loopback forwarder that holds every byte (TCP) and datagram (UDP)
// for a fixed time in each direction, so a benchmark sees a path with a
// round-trip time of twice that hold. With a hold of 0 it forwards at once
// and serves only to cut chosen TCP connections, which is how a benchmark
// makes a SOCKS5 server appear to drop a control connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace s5bench {

class DelayForwarder {
public:
    // Listens on 127.0.0.1, port chosen by the kernel, for TCP (forwarding
    // each accepted connection to tcp_upstream) and/or UDP (forwarding to
    // udp_upstream); an upstream of port 0 disables that half.
    // `one_way` is the hold time per direction (e.g. 5 ms; 0 = forward at once).
    // Throws std::runtime_error if a socket cannot be set up.
    DelayForwarder(uint16_t tcp_upstream_port, uint16_t udp_upstream_port, std::chrono::microseconds one_way);
    ~DelayForwarder();  // stops the thread, closes every socket
    DelayForwarder(const DelayForwarder&) = delete;
    DelayForwarder& operator=(const DelayForwarder&) = delete;

    uint16_t tcp_port() const;  // where clients connect (127.0.0.1); 0 if disabled
    uint16_t udp_port() const;  // where clients send datagrams (127.0.0.1); 0 if disabled

    // Resets (RST towards the client: SO_LINGER {1,0} then close; and close
    // towards upstream the same way) every live TCP connection whose first
    // up to 64 bytes sent by the upstream server contain `needle` as a
    // contiguous byte sequence (an empty needle matches every connection).
    // Thread-safe; returns how many were reset.
    // (Used to find the SOCKS control connection whose UDP ASSOCIATE reply
    // named a given relay address: needle = 4 IP bytes + 2 port bytes.)
    int reset_where_upstream_sent(const std::string& needle);

    int connections() const;  // live TCP connection pairs, thread-safe

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace s5bench
