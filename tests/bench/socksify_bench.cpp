// The per-datagram cost of s5socksify(1): a plain sendto() under the shim
// (which routes, finds the socket's lease and frames through libs5client)
// against socks5udp_sendto() and a raw sendto() of the same, already framed
// bytes. Real broker on a private bus; the SOCKS server is the benchmarks'
// minimal one (tests/bench/mini_socks5.hpp), whose relay address is a UDP
// sink of this program, so no relay's work is on the clock.
//
// The shimmed figures come from a child run with libs5socksify.so
// preloaded; its raw floor is the C library's own sendto (looked up in
// libc.so.6, past the shim), measured in the same child, rounds
// interleaved. socks5udp_sendto is measured in the parent against its own
// raw floor, the same way. Each ratio is to the raw floor of its process.
#include <dlfcn.h>
#include <netinet/in.h>
#include <s5broker/socks5.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "harness.hpp"
#include "mini_socks5.hpp"
#include "datagram_loop.hpp"
#include "wire.hpp"

namespace {

using namespace s5test;
using s5::wire::Endpoint;

constexpr int kPerRound = 20000;
constexpr int kRounds = 25;
constexpr size_t kPayload = 128;
const char* kTarget = "192.0.2.7";   // routed through the minimal server
constexpr uint16_t kTargetPort = 7;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "socksify_bench: %s\n", what.c_str());
    std::exit(1);
}

struct Sink {
    int fd = -1;
    explicit Sink(uint16_t port) {
        fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        auto a = sockaddr_of("127.0.0.1", port);
        if (::bind(fd, sa(a), sizeof(sockaddr_in)) < 0) die("cannot bind the relay sink");
        int big = 4 << 20;
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    }
    void drain() const {
        char buf[2048];
        while (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
    }
};

using s5bench::median;

template <typename Fn>
double round_ns(const Sink& s, Fn&& fn) {
    return s5bench::ns_per_call(s, kPerRound, fn);
}

std::vector<uint8_t> framed_payload(const std::vector<uint8_t>& payload) {
    return s5bench::framed(*Endpoint::parse_ip(kTarget, kTargetPort), payload);
}

using SendtoFn = ssize_t (*)(int, const void*, size_t, int, const sockaddr*, socklen_t);

// Under the shim: raw (libc's own sendto) vs the shimmed sendto.
int child(uint16_t sink_port) {
    Sink sink(sink_port);
    void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    auto raw_sendto = libc ? reinterpret_cast<SendtoFn>(dlsym(libc, "sendto")) : nullptr;
    if (!raw_sendto) die("no sendto in libc.so.6");
    std::vector<uint8_t> payload(kPayload, 0x5a);
    const auto framed = framed_payload(payload);
    auto relay = sockaddr_of("127.0.0.1", sink_port);
    auto dst = sockaddr_of(kTarget, kTargetPort);
    const int raw = ::socket(AF_INET, SOCK_DGRAM, 0);
    const int app = ::socket(AF_INET, SOCK_DGRAM, 0);
    // The first datagram takes the lease (not timed).
    if (::sendto(app, payload.data(), payload.size(), 0, sa(dst), sizeof(sockaddr_in)) < 0)
        die(std::string("shimmed sendto: ") + std::strerror(errno));
    std::vector<double> r, s;
    for (int i = 0; i < kRounds; ++i) {
        r.push_back(round_ns(sink, [&] {
            raw_sendto(raw, framed.data(), framed.size(), 0, sa(relay), sizeof(sockaddr_in));
        }));
        s.push_back(round_ns(sink, [&] {
            if (::sendto(app, payload.data(), payload.size(), 0, sa(dst), sizeof(sockaddr_in)) < 0)
                die(std::string("shimmed sendto: ") + std::strerror(errno));
        }));
    }
    std::printf("%.1f %.1f\n", median(r), median(s));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--child") return child(static_cast<uint16_t>(std::stoi(argv[2])));

    TempDir dir;
    PrivateBus bus(dir);
    const uint16_t sink_port = free_udp_port();
    s5bench::MiniSocks5 mini(sink_port);
    Broker broker(dir, bus,
                  R"({"servers": [)" + server_json("mini", "127.0.0.1", mini.port()) +
                      R"(], "pool": {"min_idle": 2}, "routes": [{"destination": "192.0.2.0/24", "servers": ["mini"]}]})");
    broker.set_debug(false);
    if (!broker.start()) die("broker did not start:\n" + broker.log());

    // The shimmed child first, alone on the machine.
    const std::string out = dir.file("child.out");
    {
        Process p(Process::Options{{argv[0], "--child", std::to_string(sink_port)},
                                   {"LD_PRELOAD=" S5SOCKSIFY_LIBRARY, "DBUS_SYSTEM_BUS_ADDRESS=" + bus.address()},
                                   out, false, 0});
        auto st = p.wait(std::chrono::minutes(5));
        if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) die("the shimmed child failed: " + read_file(out));
    }
    double child_raw = 0, shim = 0;
    if (std::sscanf(read_file(out).c_str(), "%lf %lf", &child_raw, &shim) != 2) die("child said: " + read_file(out));

    // The library in this process, with a lease of its own.
    setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address().c_str(), 1);
    setenv("S5CLIENT_MODE", "broker", 1);
    Sink sink(sink_port);
    const int lease = ::socket(AF_INET, SOCK_STREAM, 0);
    auto rv = sockaddr_of(kTarget, kTargetPort);
    if (socks5udp_associate(lease, sa(rv), sizeof rv, nullptr, 0) != 0)
        die(std::string("socks5udp_associate: ") + std::strerror(errno));
    std::vector<uint8_t> payload(kPayload, 0x5a);
    const auto framed = framed_payload(payload);
    auto relay = sockaddr_of("127.0.0.1", sink_port);
    auto dst = sockaddr_of(kTarget, kTargetPort);
    const int raw = ::socket(AF_INET, SOCK_DGRAM, 0), app = ::socket(AF_INET, SOCK_DGRAM, 0);
    std::vector<double> r, l;
    for (int i = 0; i < kRounds; ++i) {
        r.push_back(round_ns(sink, [&] {
            ::sendto(raw, framed.data(), framed.size(), 0, sa(relay), sizeof(sockaddr_in));
        }));
        l.push_back(round_ns(sink, [&] {
            if (socks5udp_sendto(app, payload.data(), payload.size(), 0, sa(dst), sizeof(sockaddr_in), sa(rv),
                                 sizeof(sockaddr_in)) != 0)
                die(std::string("socks5udp_sendto: ") + std::strerror(errno));
        }));
    }
    const double lib_raw = median(r), lib = median(l);
    ::close(lease);

    std::printf("**s5socksify datagram path** (%zu-byte payload, IPv4, median of %d rounds of %d; each ratio is to "
                "the raw floor measured in the same process)\n\n"
                "| call | ns per datagram | ratio to raw |\n|---|---|---|\n"
                "| raw `sendto` of pre-framed bytes (library's process) | %.0f | 1.000× |\n"
                "| `socks5udp_sendto` | %.0f | %.3f× |\n"
                "| raw `sendto` of pre-framed bytes (shimmed process, libc's own) | %.0f | 1.000× |\n"
                "| plain `sendto` under s5socksify | %.0f | %.3f× |\n\n",
                kPayload, kRounds, kPerRound, lib_raw, lib, lib / lib_raw, child_raw, shim, shim / child_raw);
    return 0;
}
