// How many system calls one pooled socks5udp_associate() makes in the
// application (issue: at most 10), counted by strace(1) between two marker
// calls in a child, after a first association has set up the process's bus
// connection. A real broker on a private bus; the SOCKS server is the
// benchmarks' minimal one. Prints the calls of one association and the
// average over kCalls. Needs strace (not a dependency of the test suite).
#include <netinet/in.h>
#include <s5broker/socks5.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>

#include <sdbus-c++/sdbus-c++.h>

#include "harness.hpp"
#include "unique_fd.hpp"
#include "mini_socks5.hpp"

namespace {

using namespace s5test;

constexpr int kCalls = 20;

int child() {
    auto one = [](int s) {
        auto dst = sockaddr_of("192.0.2.7", 7);
        if (socks5udp_associate(s, sa(dst), sizeof dst, nullptr, 0) != 0) {
            std::fprintf(stderr, "socks5udp_associate: %s\n", std::strerror(errno));
            std::exit(1);
        }
        return s;
    };
    ::close(one(::socket(AF_INET, SOCK_STREAM, 0)));   // the bus connection is made here
    std::vector<int> held;
    for (int i = 0; i < kCalls; ++i) held.push_back(::socket(AF_INET, SOCK_STREAM, 0));   // the application's
    syscall(SYS_getppid);                  // marker: start
    for (int s : held) one(s);
    syscall(SYS_getppid);                  // marker: end
    for (int s : held) ::close(s);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::string(argv[1]) == "--child") return child();
    TempDir dir;
    PrivateBus bus(dir);
    // A live UDP port as every association's relay: the broker probes an
    // idle association's relay, and a closed port would end them all.
    s5::UniqueFd sink(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t slen = sizeof sin;
    if (!sink || ::bind(sink.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
        ::getsockname(sink.get(), reinterpret_cast<sockaddr*>(&sin), &slen) != 0) {
        std::fprintf(stderr, "cannot bind the relay sink\n");
        return 1;
    }
    s5bench::MiniSocks5 mini(ntohs(sin.sin_port));
    Broker broker(dir, bus,
                  R"({"servers": [)" + server_json("mini", "127.0.0.1", mini.port()) +
                      R"(], "pool": {"min_idle": 32}, "routes": [{"destination": "0.0.0.0/0", "servers": ["mini"]}]})");
    broker.set_debug(false);
    if (!broker.start()) {
        std::fprintf(stderr, "broker did not start\n%s", broker.log().c_str());
        return 1;
    }
    BusClient c(bus);
    // A warm pool: every call below is served from it.
    if (!eventually([&] {
            auto p = c.object("/org/s5broker/Broker1/server/mini");
            uint32_t idle = p->getProperty("PoolIdle").onInterface("org.s5broker.Broker1.Server");
            return idle >= 32;
        }, std::chrono::seconds(20))) {
        std::fprintf(stderr, "the pool did not fill\n");
        return 1;
    }
    const std::string trace = dir.file("trace");
    Process p(Process::Options{{"/usr/bin/strace", "-f", "-qq", "-o", trace, argv[0], "--child"},
                               {"DBUS_SYSTEM_BUS_ADDRESS=" + bus.address(), "S5CLIENT_MODE=broker"},
                               dir.file("out"), false, 0});
    auto st = p.wait(std::chrono::minutes(2));
    if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
        std::fprintf(stderr, "child failed: %s\n", read_file(dir.file("out")).c_str());
        return 1;
    }
    std::istringstream in(read_file(trace));
    std::string line;
    bool on = false;
    int total = 0;
    std::map<std::string, int> by_name;
    while (std::getline(in, line)) {
        const bool marker = line.find("getppid()") != std::string::npos;
        if (marker) {
            if (on) break;
            on = true;
            continue;
        }
        if (!on) continue;
        if (line.find("resumed>") != std::string::npos) continue;   // the second half of one call
        std::istringstream f(line);
        std::string pid, call;
        f >> pid >> call;
        call = call.substr(0, call.find('('));
        ++by_name[call];
        ++total;
    }
    std::printf("**Pooled `socks5udp_associate`: system calls in the application** (strace, %d calls after the "
                "first)\n\n| call | per association |\n|---|---|\n",
                kCalls);
    for (const auto& [name, n] : by_name) std::printf("| `%s` | %.1f |\n", name.c_str(), double(n) / kCalls);
    std::printf("| **all** | **%.1f** (goal ≤ 10) |\n\n", double(total) / kCalls);
    return 0;
}
