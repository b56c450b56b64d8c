// Soak: minutes of mixed churn against the real broker and two danted
// servers — many clients opening and closing associations and echoing
// datagrams while a chaos thread kills (process group, SIGKILL) and
// restarts one danted at a time. Prints what happened and exits non-zero if
// a lease was lost while a server was up (with two servers on the route and
// only one down at a time, that is any lost lease).
//
//   tests/soak/run [SECONDS]      (default 300)
#include <poll.h>
#include <signal.h>
#include <s5broker/socks5.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace s5test;
using Clock = std::chrono::steady_clock;

namespace {

long rss_kib(pid_t pid) {
    std::string st = read_file("/proc/" + std::to_string(pid) + "/status");
    auto p = st.find("VmRSS:");
    return p == std::string::npos ? -1 : std::strtol(st.c_str() + p + 6, nullptr, 10);
}


struct Counters {
    std::atomic<long> associations{0}, associate_failures{0}, sent{0}, echoed{0};
};

}  // namespace

int main(int argc, char** argv) {
    const int seconds = argc > 1 ? std::atoi(argv[1]) : 300;
    const int clients = 16;
    TempDir dir;
    PrivateBus bus(dir);
    UdpEcho echo(dir);
    Danted a(dir), b(dir);
    Broker broker(dir, bus,
                  R"({"servers": [)" + server_json("a", "127.0.0.1", a.port()) + "," +
                      server_json("b", "127.0.0.1", b.port()) +
                      R"(], "routes": [{"destination": "0.0.0.0/0", "servers": ["a", "b"]}],
                         "pool": {"min_idle": 4}, "lease_grace_s": 30})");
    if (!broker.start()) {
        std::fprintf(stderr, "soak: broker did not start\n%s", broker.log().c_str());
        return 1;
    }
    BusClient client(bus);
    std::this_thread::sleep_for(500ms);
    const pid_t bpid = broker.process().pid();
    const long rss_start = rss_kib(bpid);
    const auto end = Clock::now() + std::chrono::seconds(seconds);
    Counters c;
    std::atomic<int> kills{0};

    std::vector<std::thread> workers;
    for (int t = 0; t < clients; ++t) {
        workers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t));
            auto target = sockaddr_of("127.0.0.1", echo.port());
            while (Clock::now() < end) {
                int s = ::socket(AF_INET, SOCK_STREAM, 0);
                sockaddr_storage rv = target;
                if (socks5udp_associate(s, sa(rv), sizeof rv, nullptr, 0) != 0) {
                    ++c.associate_failures;
                    ::close(s);
                    std::this_thread::sleep_for(50ms);
                    continue;
                }
                ++c.associations;
                int u = ::socket(AF_INET, SOCK_DGRAM, 0);
                int n = 5 + static_cast<int>(rng() % 50);
                for (int i = 0; i < n && Clock::now() < end; ++i) {
                    char msg[32];
                    int len = std::snprintf(msg, sizeof msg, "t%d-%d", t, i);
                    ++c.sent;
                    if (socks5udp_sendto(u, msg, static_cast<size_t>(len), 0, sa(target), len_of(target), sa(rv),
                                         len_of(rv)) == 0) {
                        pollfd p{u, POLLIN, 0};
                        if (poll(&p, 1, 500) == 1) {
                            char buf[64];
                            if (socks5udp_recvfrom(u, buf, sizeof buf, MSG_DONTWAIT, nullptr, nullptr) == len &&
                                std::memcmp(buf, msg, static_cast<size_t>(len)) == 0)
                                ++c.echoed;
                        }
                    }
                    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
                }
                ::close(u);
                ::close(s);
            }
        });
    }
    std::thread chaos([&] {
        std::mt19937 rng(42);
        while (Clock::now() + 10s < end) {
            std::this_thread::sleep_for(std::chrono::seconds(15 + rng() % 20));
            if (Clock::now() + 10s >= end) break;
            Danted& victim = (rng() % 2) ? a : b;
            victim.kill();
            ++kills;
            std::this_thread::sleep_for(std::chrono::milliseconds(1000 + rng() % 4000));
            victim.start();
        }
    });
    for (auto& w : workers) w.join();
    chaos.join();

    auto stats = client.statistics();
    const long rss_end = rss_kib(bpid);
    const long lost = static_cast<long>(stats["leases_lost"]);
    std::printf("soak: %d s, %d clients, %d server kills\n", seconds, clients, kills.load());
    std::printf("| figure | value |\n|---|---|\n");
    std::printf("| associations by clients | %ld (failed %ld) |\n", c.associations.load(), c.associate_failures.load());
    std::printf("| associations made by the broker | %llu |\n",
                static_cast<unsigned long long>(stats["associations_made"]));
    std::printf("| served from the pool | %llu |\n", static_cast<unsigned long long>(stats["served_from_pool"]));
    std::printf("| renewals (failovers) | %llu (%llu) |\n", static_cast<unsigned long long>(stats["renewals"]),
                static_cast<unsigned long long>(stats["failovers"]));
    std::printf("| leases lost while a server was up | %ld |\n", lost);
    std::printf("| datagrams echoed / sent | %ld / %ld (%.2f%%) |\n", c.echoed.load(), c.sent.load(),
                c.sent ? 100.0 * static_cast<double>(c.echoed) / static_cast<double>(c.sent) : 0.0);
    std::printf("| broker RSS start / end | %ld / %ld KiB |\n", rss_start, rss_end);
    broker.stop(SIGTERM);
    return lost == 0 ? 0 : 1;
}
