// What the datagram benchmarks share (datagram_bench, socksify_bench): a
// round of calls timed per call, with the receiving socket drained every
// 64 calls so that its buffer never fills; the median of rounds; and a
// payload framed once with its RFC 1928 header, the raw calls' input.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "stats.hpp"
#include "wire.hpp"

namespace s5bench {

// Nanoseconds per call of `fn`, over `calls` calls; `sink.drain()` empties
// the receiving socket.
template <typename Sink, typename Fn>
double ns_per_call(const Sink& sink, int calls, Fn&& fn) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) {
        fn();
        if ((i & 63) == 63) sink.drain();
    }
    auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / calls;
}

inline double median(std::vector<double> v) { return summarize(std::move(v)).median; }

// The UDP header for `dst`, then `payload`.
inline std::vector<uint8_t> framed(const s5::wire::Endpoint& dst, std::span<const uint8_t> payload) {
    uint8_t hdr[s5::wire::kUdpHeaderMax];
    const size_t hlen = s5::wire::encode_udp_header(dst, std::span<uint8_t, s5::wire::kUdpHeaderMax>(hdr));
    std::vector<uint8_t> f(hdr, hdr + hlen);
    f.insert(f.end(), payload.begin(), payload.end());
    return f;
}

}  // namespace s5bench
