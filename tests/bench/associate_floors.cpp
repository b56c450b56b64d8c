// The pooled association against the floors of the IPC it rides on, every
// figure a ratio from this one run, rows interleaved round by round (so a
// slow moment of the machine falls on every row alike):
//
//   (a) AF_UNIX SOCK_SEQPACKET request and reply, to another process
//   (b) the same, the reply carrying a fresh socket pair's end (what a lease
//       fd is): the floor of an association
//   (c) an sd-bus method call peer to peer (no bus daemon), the reply
//       carrying such a descriptor
//   (d) the same method through dbus-daemon
//   pooled socks5udp_associate (libs5client, on its private channel)
//   pooled Associate on the bus (one sdbus-c++ call, as busctl would)
//
// back to back, and spaced 150 ms apart as applications make them (against
// (b) spaced the same way); then the broker's CPU per pooled association
// (from /proc/PID/schedstat, over a series that includes the pool's refill
// and the lease's teardown), for the channel and for the bus.
//
//   build/tests/bench/associate_floors   (tests/bench/run runs it)
#include <fcntl.h>
#include <netinet/in.h>
#include <s5broker/socks5.h>
#include <sdbus-c++/sdbus-c++.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fd_passing.hpp"
#include "harness.hpp"
#include "stats.hpp"

using namespace s5test;
using namespace s5bench;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kRounds = 300;
constexpr int kSpacedRounds = 30;
constexpr auto kSpacing = std::chrono::milliseconds(150);
constexpr int kCpuSeries = 400;     // associations per CPU figure
constexpr int kCpuBatch = 25;       // taken back to back, then the pool refills
constexpr uint32_t kMinIdle = 32;
constexpr const char* kFloorName = "org.s5broker.BenchFloor";

[[noreturn]] void die(const std::string& why) { throw std::runtime_error(why); }

double us_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// A floor_server child; `fd` (if any) is its end of the socket pair.
pid_t spawn_floor(const std::string& mode, const std::string& arg, int keep_fd = -1) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (keep_fd >= 0) fcntl(keep_fd, F_SETFD, 0);
        execl(FLOOR_SERVER_PATH, "floor_server", mode.c_str(), arg.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    return pid;
}

// (a)/(b): one request, one reply (with a descriptor for 'b').
double seqpacket_round(int fd, char kind) {
    char req[64] = {kind}, rep[64];
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
    iovec iov{rep, sizeof rep};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    auto t0 = Clock::now();
    if (send(fd, req, sizeof req, MSG_NOSIGNAL) != sizeof req) die("floor send");
    if (recvmsg(fd, &msg, MSG_CMSG_CLOEXEC) != sizeof rep) die("floor recv");
    double us = us_since(t0);
    if (!s5::take_passed_fd(msg) && kind == 'b') die("floor (b): no descriptor");   // closed here
    return us;
}

// (c)/(d): Get() -> h.
double sdbus_round(sd_bus* b, const char* destination) {
    sd_bus_message* reply = nullptr;
    sd_bus_error err = SD_BUS_ERROR_NULL;
    auto t0 = Clock::now();
    int r = sd_bus_call_method(b, destination, "/floor", "org.s5broker.Floor", "Get", &err, &reply, "");
    int fd = -1;
    if (r >= 0) r = sd_bus_message_read(reply, "h", &fd);
    double us = us_since(t0);
    if (r < 0) die(std::string("floor Get: ") + (err.message ? err.message : strerror(-r)));
    sd_bus_message_unref(reply);   // closes the descriptor
    sd_bus_error_free(&err);
    return us;
}

sd_bus* p2p_client(int fd) {
    sd_bus* b = nullptr;
    if (sd_bus_new(&b) < 0 || sd_bus_set_fd(b, fd, fd) < 0 || sd_bus_negotiate_fds(b, 1) < 0 || sd_bus_start(b) < 0)
        die("sd-bus p2p client");
    return b;
}

struct Rig {
    sockaddr_storage svr, target;
    BusClient& client;
    std::unique_ptr<sdbus::IProxy> manager;

    // A pooled socks5udp_associate; its lease closed right after.
    double library_round() {
        int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_storage dst = target;
        auto t0 = Clock::now();
        int rc = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in));
        double us = us_since(t0);
        const int e = errno;
        close(s);
        if (rc != 0) die(std::string("socks5udp_associate: ") + strerror(e));
        return us;
    }
    // A pooled Associate on the bus; the lease fd closes with `fd`.
    double bus_round() {
        std::vector<uint8_t> lo4{127, 0, 0, 1};
        const uint16_t server_port = ntohs(reinterpret_cast<sockaddr_in*>(&svr)->sin_port);
        const uint16_t dst_port = ntohs(reinterpret_cast<sockaddr_in*>(&target)->sin_port);
        sdbus::ObjectPath path;
        sdbus::UnixFd fd;
        std::vector<uint8_t> relay;
        uint16_t relay_port = 0;
        auto t0 = Clock::now();
        manager->callMethod("Associate")
            .onInterface("org.s5broker.Broker1.Manager")
            .withArguments(lo4, dst_port, lo4, server_port, std::map<std::string, sdbus::Variant>{})
            .storeResultsTo(path, fd, relay, relay_port);
        return us_since(t0);
    }
    uint32_t idle() {
        return client.object("/org/s5broker/Broker1/server/loopback")
            ->getProperty("PoolIdle")
            .onInterface("org.s5broker.Broker1.Server")
            .get<uint32_t>();
    }
    // Waits (sleeping, so that the wait costs the broker next to nothing)
    // until the pool holds `n`.
    void refilled(uint32_t n) {
        const auto until = Clock::now() + std::chrono::seconds(30);
        while (idle() < n)
            if (Clock::now() > until)
                die("the pool did not refill to " + std::to_string(n) + " (has " + std::to_string(idle()) + ")");
            else
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
};

uint64_t cpu_ns(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/schedstat");
    uint64_t ns = 0;
    if (!(f >> ns)) die("no schedstat for the broker");
    return ns;
}

std::string row(const std::string& what, const Summary& s, double floor) {
    return "| " + what + " | " + num(s.median) + " | " + num(s.p99) + " | " + ratio(s.median / floor) + " |";
}

}  // namespace

int main() {
    try {
        TempDir dir;
        PrivateBus bus(dir);
        UdpEcho echo(dir, {"127.0.0.1"});
        Danted danted(dir);
        Broker broker(dir, bus,
                      R"({"servers": [)" + server_json("loopback", "127.0.0.1", danted.port()) +
                          R"(], "pool": {"min_idle": )" + std::to_string(kMinIdle) +
                          R"(, "max_associations": 128}})");
        broker.set_debug(false);
        broker.enable_fd_store();   // as under systemd: every lease and association is stored
        if (!broker.start()) die("s5brokerd did not start:\n" + broker.log());
        BusClient client(bus);
        Rig rig{sockaddr_of("127.0.0.1", danted.port()), sockaddr_of("127.0.0.1", echo.port()), client,
                client.manager()};

        int seq[2], p2p[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, seq) < 0 ||
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p2p) < 0)
            die("socketpair");
        std::vector<pid_t> floors{spawn_floor("seqpacket", std::to_string(seq[1]), seq[1]),
                                  spawn_floor("p2p", std::to_string(p2p[1]), p2p[1]), spawn_floor("bus", kFloorName)};
        close(seq[1]);
        close(p2p[1]);
        sd_bus* direct = p2p_client(p2p[0]);
        sd_bus* system = nullptr;
        if (sd_bus_open_system(&system) < 0) die("sd-bus system bus");
        if (!eventually([&] { return sd_bus_get_name_creds(system, kFloorName, 0, nullptr) >= 0; }, 10s))
            die("floor_server did not take its bus name");
        rig.refilled(kMinIdle);
        std::cerr << "associate_floors: warm-up\n";
        for (int i = 0; i < 20; ++i) {
            seqpacket_round(seq[0], 'a');
            seqpacket_round(seq[0], 'b');
            sdbus_round(direct, nullptr);
            sdbus_round(system, kFloorName);
            rig.library_round();
            rig.bus_round();
        }
        rig.refilled(kMinIdle);

        std::cerr << "associate_floors: " << kRounds << " rounds back to back\n";
        std::vector<double> a, b, c, d, lib, onbus;
        for (int i = 0; i < kRounds; ++i) {
            if (i % 8 == 0) rig.refilled(16);   // outside the timed calls
            a.push_back(seqpacket_round(seq[0], 'a'));
            b.push_back(seqpacket_round(seq[0], 'b'));
            c.push_back(sdbus_round(direct, nullptr));
            d.push_back(sdbus_round(system, kFloorName));
            lib.push_back(rig.library_round());
            onbus.push_back(rig.bus_round());
        }
        std::cerr << "associate_floors: " << kSpacedRounds << " rounds spaced " << kSpacing.count() << " ms\n";
        std::vector<double> b_spaced, lib_spaced;
        for (int i = 0; i < kSpacedRounds; ++i) {
            std::this_thread::sleep_for(kSpacing);
            b_spaced.push_back(seqpacket_round(seq[0], 'b'));
            std::this_thread::sleep_for(kSpacing);
            lib_spaced.push_back(rig.library_round());
        }

        auto cpu_per_association = [&](bool channel) {
            rig.refilled(kMinIdle);
            const uint64_t before = cpu_ns(broker.process().pid());
            for (int done = 0; done < kCpuSeries; done += kCpuBatch) {
                for (int i = 0; i < kCpuBatch; ++i) channel ? rig.library_round() : rig.bus_round();
                rig.refilled(kMinIdle);
            }
            return static_cast<double>(cpu_ns(broker.process().pid()) - before) / 1000.0 / kCpuSeries;
        };
        std::cerr << "associate_floors: broker CPU, " << kCpuSeries << " associations each way\n";
        const double cpu_channel = cpu_per_association(true);
        const double cpu_bus = cpu_per_association(false);
        // What the waiting itself costs the broker (its PoolIdle reads),
        // measured alone, to say how much of the figure it is.
        const uint64_t p0 = cpu_ns(broker.process().pid());
        for (int i = 0; i < 100; ++i) (void)rig.idle();
        const double cpu_poll = static_cast<double>(cpu_ns(broker.process().pid()) - p0) / 1000.0 / 100;

        const auto sa_ = summarize(a), sb = summarize(b), sc = summarize(c), sd = summarize(d), sl = summarize(lib),
                   sbus = summarize(onbus), sbs = summarize(b_spaced), sls = summarize(lib_spaced);
        std::ostringstream o;
        o << "**Association against its IPC floors** (`tests/bench/associate_floors`; µs; " << kRounds
          << " rounds back to back, rows interleaved; " << kSpacedRounds << " rounds spaced " << kSpacing.count()
          << " ms)\n\n| path | median | p99 | ratio to (b) |\n|---|---|---|---|\n"
          << row("(a) AF_UNIX SEQPACKET request/reply", sa_, sb.median) << "\n"
          << row("(b) same, the reply carrying a fresh socket pair's fd", sb, sb.median) << "\n"
          << row("(c) sd-bus peer-to-peer method with an fd reply", sc, sb.median) << "\n"
          << row("(d) the same method through dbus-daemon", sd, sb.median) << "\n"
          << row("pooled `socks5udp_associate` (private channel), back to back", sl, sb.median) << "\n"
          << row("pooled `Associate` on the bus, back to back", sbus, sb.median) << "\n"
          << row("(b) spaced 150 ms", sbs, sbs.median) << "\n"
          << row("pooled `socks5udp_associate`, spaced 150 ms (ratio to (b) spaced)", sls, sbs.median) << "\n\n";
        o << "Broker CPU per pooled association (schedstat over " << kCpuSeries
          << " associations, refill and teardown included): private channel " << num(cpu_channel) << " µs, bus "
          << num(cpu_bus) << " µs (each includes ~" << num(cpu_poll * (kCpuSeries / kCpuBatch) * 3 / kCpuSeries)
          << " µs of the bench's own PoolIdle reads; one read costs the broker " << num(cpu_poll) << " µs)\n\n";
        o << "| goal (issue 13) | figure | |\n|---|---|---|\n"
          << "| pooled association ≤ 2× (b), back to back | " << ratio(sl.median / sb.median) << " | "
          << verdict(sl.median <= 2 * sb.median) << " |\n"
          << "| pooled association ≤ 2× (b), spaced 150 ms | " << ratio(sls.median / sbs.median) << " | "
          << verdict(sls.median <= 2 * sbs.median) << " |\n"
          << "| broker CPU ≤ 100 µs per pooled association | " << num(cpu_channel) << " µs | "
          << verdict(cpu_channel <= 100) << " |\n";
        std::cout << o.str() << std::flush;

        sd_bus_flush_close_unref(direct);
        sd_bus_flush_close_unref(system);
        close(seq[0]);
        for (pid_t p : floors) {
            kill(p, SIGTERM);
            waitpid(p, nullptr, 0);
        }
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "associate_floors: failed: " << e.what() << std::endl;
        return 1;
    }
}
