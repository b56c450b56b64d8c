// Who can use an association (docs/design.md §7, "Claiming"): the spray
// attack of a local user outside the client group against the broker's
// pooled and leased associations, with a real danted, the real broker and
// the library in this process; and what an application that frames its own
// datagrams must do (socks5udp_bind).
//
// The sprayer (below) runs as nobody and sends a SOCKS-framed "SPRAY" for
// the witness socket to every port of the ephemeral range, sweep after
// sweep. Whatever relay takes one forwards it
// to the witness: the witness counts what an outsider got relayed.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sdbus-c++/sdbus-c++.h>

#include "harness.hpp"
#include "unique_fd.hpp"
#include "wire.hpp"

namespace {

using namespace s5test;
using Fd = s5::UniqueFd;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// The UDP service the sprayer aims at, on 127.0.0.1 and ::1.
class Witness {
public:
    Witness() : v4_(bound("127.0.0.1")), v6_(bound("::1", port_)) {}
    uint16_t port() const { return port_; }
    // "SPRAY" datagrams received so far (reads what is queued).
    int sprays() {
        for (int fd : {v4_.get(), v6_.get()}) {
            char buf[256];
            ssize_t n;
            while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) >= 0)
                if (std::string(buf, static_cast<size_t>(n)) == "SPRAY") ++sprays_;
        }
        return sprays_;
    }

private:
    int bound(const std::string& ip, uint16_t port = 0) {
        size_t len = 0;
        auto ss = sockaddr_of(ip, port, &len);
        int fd = ::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || ::bind(fd, sa(ss), static_cast<socklen_t>(len)) < 0) throw std::runtime_error("witness bind");
        sockaddr_storage got{};
        socklen_t glen = sizeof got;
        getsockname(fd, sa(got), &glen);
        port_ = ntohs(reinterpret_cast<sockaddr_in*>(&got)->sin_port);
        return fd;
    }
    uint16_t port_ = 0;
    Fd v4_, v6_;
    int sprays_ = 0;
};

// One sprayer as nobody against every local port of `address`: a forked
// child of this test (not a program it runs: the build tree may not be
// readable by nobody) that sends a SOCKS-framed "SPRAY" for `target`:`port`
// to every port of the ephemeral range, sweep after sweep, each sweep from
// a new socket, until killed. The sweeps done are counted in shared memory.
class Sprayer {
public:
    Sprayer(const std::string& address, const std::string& target, uint16_t port) {
        size_t at_len = 0;
        const sockaddr_storage at = sockaddr_of(address, 0, &at_len);
        const auto dst = s5::wire::Endpoint::parse_ip(target, port);
        if (!dst || at_len == 0) throw std::runtime_error("sprayer: not an IP address");
        std::array<uint8_t, s5::wire::kUdpHeaderMax> hdr{};
        const size_t hlen = s5::wire::encode_udp_header(*dst, hdr);
        std::vector<uint8_t> dgram(hdr.begin(), hdr.begin() + static_cast<long>(hlen));
        for (char c : std::string("SPRAY")) dgram.push_back(static_cast<uint8_t>(c));
        unsigned lo = 32768, hi = 60999;
        if (FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
            if (std::fscanf(f, "%u %u", &lo, &hi) != 2) lo = 32768, hi = 60999;
            std::fclose(f);
        }
        void* shared = mmap(nullptr, sizeof(std::atomic<unsigned>), PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (shared == MAP_FAILED) throw std::runtime_error("sprayer: mmap");
        sweeps_ = new (shared) std::atomic<unsigned>(0);
        pid_ = fork();
        if (pid_ < 0) throw std::runtime_error("sprayer: fork");
        if (pid_ == 0) {
            // Only system calls from here: the parent has threads.
            if (setgroups(0, nullptr) != 0 || setgid(kNogroup) != 0 || setuid(kNobody) != 0) _exit(1);
            for (;;) {
                int s = ::socket(at.ss_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
                if (s < 0) _exit(1);
                sockaddr_storage to = at;
                for (unsigned p = lo; p <= hi; ++p) {
                    const uint16_t be = htons(static_cast<uint16_t>(p));
                    if (to.ss_family == AF_INET)
                        reinterpret_cast<sockaddr_in*>(&to)->sin_port = be;
                    else
                        reinterpret_cast<sockaddr_in6*>(&to)->sin6_port = be;
                    (void)::sendto(s, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&to),
                                   static_cast<socklen_t>(at_len));
                }
                ::close(s);
                sweeps_->fetch_add(1);
            }
        }
    }
    ~Sprayer() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        munmap(sweeps_, sizeof(std::atomic<unsigned>));
    }
    Sprayer(const Sprayer&) = delete;
    Sprayer& operator=(const Sprayer&) = delete;
    // Waits until `sweeps` full sweeps are done (false: the child died).
    bool swept(unsigned sweeps, std::chrono::milliseconds timeout = 60s) {
        return eventually(
            [&] {
                int status;
                if (::waitpid(pid_, &status, WNOHANG) == pid_) pid_ = -1;
                return pid_ > 0 && sweeps_->load() >= sweeps;
            },
            timeout);
    }

private:
    pid_t pid_ = -1;
    std::atomic<unsigned>* sweeps_ = nullptr;
};

struct World {
    TempDir dir;
    PrivateBus bus{dir};
    UdpEcho echo{dir};
    Danted danted{dir};
    Witness witness;
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;

    // `claim`: the servers' "claim" key ("" leaves the default).
    explicit World(const std::string& claim = "", unsigned min_idle = 4) {
        auto server = [&](const std::string& name, const std::string& ip) {
            std::string s = server_json(name, ip, danted.port());
            if (!claim.empty()) s.insert(s.size() - 1, R"(, "claim": ")" + claim + "\"");
            return s;
        };
        std::string c = R"({"servers": [)" + server("v4", "127.0.0.1") + "," + server("v6", "::1") +
                        R"(], "pool": {"min_idle": )" + std::to_string(min_idle) +
                        R"(}, "routes": [{"destination": "0.0.0.0/0", "servers": ["v4"]},
                                          {"destination": "::/0", "servers": ["v6"]}]})";
        broker = std::make_unique<Broker>(dir, bus, c);
        if (!broker->start()) throw std::runtime_error("s5brokerd did not become ready:\n" + broker->log());
        client = std::make_unique<BusClient>(bus);
    }
    uint32_t idle(const std::string& server) {
        return client->object("/org/s5broker/Broker1/server/" + server)
            ->getProperty("PoolIdle")
            .onInterface("org.s5broker.Broker1.Server")
            .get<uint32_t>();
    }
    bool pools_full(uint32_t n) { return idle("v4") >= n && idle("v6") >= n; }
};

// An application's lease and the UDP socket it sends from.
struct App {
    Fd lease, udp;
    sockaddr_storage rendezvous{};
    sockaddr_storage target{};
};

std::optional<App> associate(const std::string& ip, uint16_t echo_port) {
    App a;
    const int family = ip.find(':') == std::string::npos ? AF_INET : AF_INET6;
    a.lease.reset(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    a.udp.reset(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    a.target = sockaddr_of(ip, echo_port);
    a.rendezvous = a.target;
    if (socks5udp_associate(a.lease.get(), sa(a.rendezvous), sizeof a.rendezvous, nullptr, 0) != 0) return std::nullopt;
    return a;
}

// One round trip through the lease with the library's calls. The spray
// reaches the application's socket too (it covers every local port):
// socks5udp_recvfrom drops what does not come from the relay, so this
// receives until the echo or two seconds.
bool echo(App& a, const std::string& msg) {
    std::string m = msg;
    if (socks5udp_sendto(a.udp.get(), m.data(), m.size(), 0, sa(a.target), len_of(a.target), sa(a.rendezvous),
                         len_of(a.rendezvous)) != 0)
        return false;
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p{a.udp.get(), POLLIN, 0};
        if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) != 1) return false;
        char buf[512];
        ssize_t n = socks5udp_recvfrom(a.udp.get(), buf, sizeof buf, MSG_DONTWAIT, nullptr, nullptr);
        if (n >= 0 && std::string(buf, static_cast<size_t>(n)) == msg) return true;
    }
}

uint16_t local_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, sa(ss), &len) != 0) return 0;
    return ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                         : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

TEST(Claim, ASprayOverEveryLocalPortGetsNothingRelayedAndLeasesKeepWorking) {
    World s;
    ASSERT_TRUE(eventually([&] { return s.pools_full(4); }, 10s));
    // Leases taken and used before the spray starts...
    auto a4 = associate("127.0.0.1", s.echo.port());
    auto a6 = associate("::1", s.echo.port());
    ASSERT_TRUE(a4 && a6) << std::strerror(errno);
    ASSERT_TRUE(echo(*a4, "before4"));
    ASSERT_TRUE(echo(*a6, "before6"));
    // ...and leases taken while it runs, before their first datagram: the
    // window that first-datagram claiming leaves open.
    Sprayer sp4("127.0.0.1", "127.0.0.1", s.witness.port());
    Sprayer sp6("::1", "::1", s.witness.port());
    ASSERT_TRUE(sp4.swept(10) && sp6.swept(10));
    auto b4 = associate("127.0.0.1", s.echo.port());
    auto b6 = associate("::1", s.echo.port());
    ASSERT_TRUE(b4 && b6) << std::strerror(errno);
    ASSERT_TRUE(sp4.swept(20) && sp6.swept(20));  // ten sweeps over them, unused
    for (int i = 0; i < 20; ++i) {
        const std::string n = std::to_string(i);
        EXPECT_TRUE(echo(*a4, "a4." + n));
        EXPECT_TRUE(echo(*a6, "a6." + n));
        EXPECT_TRUE(echo(*b4, "b4." + n));
        EXPECT_TRUE(echo(*b6, "b6." + n));
    }
    ASSERT_TRUE(sp4.swept(30) && sp6.swept(30));
    EXPECT_EQ(s.witness.sprays(), 0) << "an outsider's datagrams were relayed";
    // The pools the spray ran over are as full as before.
    EXPECT_TRUE(s.pools_full(4));
}

// The opt-in mode for hand-framing applications that cannot change: the
// exposure s5brokerd.json(5) documents, and proof that the attack above is
// real in this environment (so its zero is not a spray that missed).
TEST(Claim, FirstDatagramClaimingIsOpenToTheSprayAsDocumented) {
    World s("first_datagram");
    ASSERT_TRUE(eventually([&] { return s.pools_full(4); }, 10s));
    const auto t0 = std::chrono::steady_clock::now();
    Sprayer sp4("127.0.0.1", "127.0.0.1", s.witness.port());
    Sprayer sp6("::1", "::1", s.witness.port());
    // Each sweep comes from a new socket: a claimed relay forwards the
    // first sweep's datagram and drops the rest, one "SPRAY" per relay.
    EXPECT_TRUE(eventually([&] { return s.witness.sprays() >= 8; }, 30s))
        << "the spray claimed " << s.witness.sprays() << " of 8 idle associations";
    std::cout << "the spray claimed " << s.witness.sprays() << " of 8 idle associations in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
              << " ms\n";
}

TEST(Claim, HandFramedDatagramsGoThroughOnlyFromTheSocketSocks5udpBindGives) {
    World s("", 1);
    auto a = associate("127.0.0.1", s.echo.port());
    ASSERT_TRUE(a) << std::strerror(errno);
    // The application's own socket: the server drops what it sends.
    EXPECT_FALSE(echo_from(a->udp.get(), a->rendezvous, "127.0.0.1", s.echo.port(), "own", 500ms));
    ASSERT_EQ(socks5udp_bind(a->lease.get(), a->udp.get()), 0) << std::strerror(errno);
    EXPECT_EQ(echo_from(a->udp.get(), a->rendezvous, "127.0.0.1", s.echo.port(), "bound"), "bound");
    // Again: nothing to do, nothing changes.
    const uint16_t port = local_port(a->udp.get());
    EXPECT_EQ(socks5udp_bind(a->lease.get(), a->udp.get()), 0);
    EXPECT_EQ(local_port(a->udp.get()), port);
}

TEST(Claim, TheSocketKeepsItsNumberFlagsAndOptions) {
    World s("", 1);
    auto a = associate("127.0.0.1", s.echo.port());
    ASSERT_TRUE(a);
    const int fd = a->udp.get();
    ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    const int on = 1, rcvbuf = 300000;
    ASSERT_EQ(setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on), 0);
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    ASSERT_TRUE(echo(*a, "placed"));  // the first socks5udp_sendto puts the socket in place
    EXPECT_NE(local_port(fd), 0);
    EXPECT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    int v = 0;
    socklen_t len = sizeof v;
    ASSERT_EQ(getsockopt(fd, IPPROTO_IP, IP_PKTINFO, &v, &len), 0);
    EXPECT_EQ(v, 1);
    ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len), 0);
    EXPECT_GE(v, rcvbuf);
}

TEST(Claim, OneSocketCarriesOneLease) {
    World s("", 2);
    auto a = associate("127.0.0.1", s.echo.port());
    auto b = associate("127.0.0.1", s.echo.port());
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(echo(*a, "a"));
    // b's datagrams from a's socket would be dropped by the server.
    EXPECT_EQ(socks5udp_bind(b->lease.get(), a->udp.get()), -1);
    EXPECT_EQ(errno, EADDRINUSE);
    std::string m = "b";
    EXPECT_EQ(socks5udp_sendto(a->udp.get(), m.data(), m.size(), 0, sa(b->target), len_of(b->target),
                               sa(b->rendezvous), len_of(b->rendezvous)),
              -1);
    EXPECT_EQ(errno, EADDRINUSE);
    // Once a's lease is closed, its socket is free for b.
    a->lease.reset();
    EXPECT_EQ(socks5udp_bind(b->lease.get(), a->udp.get()), 0) << std::strerror(errno);
    b->udp = std::move(a->udp);
    EXPECT_TRUE(echo(*b, "b"));
}

TEST(Claim, ARenewalPutsTheNewAssociationsSocketInPlace) {
    World s("", 1);
    auto a = associate("127.0.0.1", s.echo.port());
    ASSERT_TRUE(a);
    ASSERT_TRUE(echo(*a, "first"));
    const uint16_t before = local_port(a->udp.get());
    // Its control connection dies: the broker renews the lease onto another
    // association of the same server, with another socket.
    auto lease_obj = s.client->leases();
    ASSERT_EQ(lease_obj.size(), 1u);
    s.danted.kill();
    s.danted.start();
    ASSERT_TRUE(eventually([&] {
        struct sockaddr_storage cur{};
        return socks5udp_current(a->lease.get(), sa(cur), sizeof cur) == 0 && echo(*a, "again");
    }, 20s));
    EXPECT_NE(local_port(a->udp.get()), before);
}

}  // namespace
