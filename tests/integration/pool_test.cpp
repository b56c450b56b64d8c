// The warm pool, renewal after a server crash, failover between servers,
// keepalive against a silent server, and the library calls that follow a
// lease across renewals — against real danted processes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sdbus-c++/sdbus-c++.h>
#include <sstream>
#include <thread>

#include "harness.hpp"

namespace {

using namespace s5test;
using Clock = std::chrono::steady_clock;

constexpr const char* kLeaseIface = "org.s5broker.Broker1.Lease";
constexpr const char* kServerIface = "org.s5broker.Broker1.Server";




std::string show(const sockaddr_storage& ss) {
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (ss.ss_family == AF_INET) {
        auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        port = ntohs(s->sin_port);
    } else {
        auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        port = ntohs(s->sin6_port);
    }
    return std::string(ip) + ":" + std::to_string(port);
}

struct PoolConfig {
    unsigned min_idle = 1, max_associations = 64, grace_s = 30;
    unsigned ka_idle = 10, ka_interval = 3, ka_count = 3;
};

std::string broker_config(const std::vector<std::string>& servers, const std::vector<std::string>& route,
                          const PoolConfig& p) {
    std::ostringstream c;
    c << R"({"servers": [)";
    for (size_t i = 0; i < servers.size(); ++i) c << (i ? "," : "") << servers[i];
    c << R"(], "routes": [{"destination": "0.0.0.0/0", "servers": [)";
    for (size_t i = 0; i < route.size(); ++i) c << (i ? "," : "") << '"' << route[i] << '"';
    c << R"(]}], "pool": {"min_idle": )" << p.min_idle << R"(, "max_associations": )" << p.max_associations
      << R"(}, "keepalive": {"idle_s": )" << p.ka_idle << R"(, "interval_s": )" << p.ka_interval
      << R"(, "count": )" << p.ka_count << R"(}, "lease_grace_s": )" << p.grace_s << "}";
    return c.str();
}

// An application's lease: its Socket (now the lease fd) and rendezvous.
struct AppLease {
    int fd = -1;
    sockaddr_storage rendezvous{};
    ~AppLease() {
        if (fd >= 0) ::close(fd);
    }
};

// socks5udp_associate for `target` through `server` (nullptr: routed).
bool associate(AppLease& l, const sockaddr_storage& target, const sockaddr_storage* server, int flags = 0) {
    l.fd = ::socket(AF_INET, SOCK_STREAM | flags, 0);
    l.rendezvous = target;
    sockaddr_storage svr = server ? *server : sockaddr_storage{};
    return socks5udp_associate(l.fd, sa(l.rendezvous), sizeof l.rendezvous, server ? sa(svr) : nullptr,
                               server ? len_of(svr) : 0) == 0;
}


class PoolTest : public ::testing::Test {
protected:
    TempDir dir;
    PrivateBus bus{dir};
    UdpEcho echo{dir};
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;

    void start_broker(const std::string& config) {
        broker = std::make_unique<Broker>(dir, bus, config);
        ASSERT_TRUE(broker->start()) << broker->log();
        client = std::make_unique<BusClient>(bus);
    }

    void TearDown() override {
        if (HasFailure() && broker) std::cerr << "--- s5brokerd log ---\n" << broker->log();
    }

    sockaddr_storage target() { return sockaddr_of("127.0.0.1", echo.port()); }

    std::string lease_path() {
        auto l = client->leases();
        return l.size() == 1 ? l[0] : "";
    }

    template <typename T>
    T lease_prop(const std::string& name) {
        return client->object(lease_path())->getProperty(name).onInterface(kLeaseIface).get<T>();
    }

    template <typename T>
    T server_prop(const std::string& server, const std::string& name) {
        return client->object("/org/s5broker/Broker1/server/" + server)
            ->getProperty(name)
            .onInterface(kServerIface)
            .get<T>();
    }

    // Sends until an echo comes back through the original rendezvous.
    bool echo_eventually(const AppLease& l, std::chrono::milliseconds timeout) {
        return eventually([&] { return echo_via_library(l.rendezvous, target(), "again", 200ms) == "again"; },
                          timeout);
    }
};

TEST_F(PoolTest, PooledAssociationIsServedWithoutANewConnection) {
    Danted d(dir);
    PoolConfig p;
    p.min_idle = 1;
    p.max_associations = 1;  // so the pool cannot refill behind our back
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, p));
    ASSERT_TRUE(eventually([&] { return server_prop<uint32_t>("d", "PoolIdle") == 1; }));
    EXPECT_EQ(server_prop<std::string>("d", "State"), "up");
    EXPECT_EQ(server_prop<uint32_t>("d", "PoolTarget"), 1u);
    ASSERT_EQ(established_to(d.port()), 1);
    auto before = client->statistics();

    auto svr = sockaddr_of("127.0.0.1", d.port());
    AppLease l;
    ASSERT_TRUE(associate(l, target(), &svr)) << std::strerror(errno);
    // The server saw no new TCP connection: the lease took the warm one.
    EXPECT_EQ(established_to(d.port()), 1);
    auto after = client->statistics();
    EXPECT_EQ(after["served_from_pool"], before["served_from_pool"] + 1);
    EXPECT_EQ(after["associations_made"], before["associations_made"]);
    EXPECT_EQ(server_prop<uint32_t>("d", "PoolIdle"), 0u);
    EXPECT_EQ(echo_via_library(l.rendezvous, target(), "warm"), "warm");

    // Released: the pool makes a fresh one to stay at min_idle.
    ::close(l.fd);
    l.fd = -1;
    EXPECT_TRUE(eventually([&] { return server_prop<uint32_t>("d", "PoolIdle") == 1; }));
    EXPECT_TRUE(eventually([&] { return established_to(d.port()) == 1; }));
    EXPECT_EQ(client->statistics()["associations_made"], before["associations_made"] + 1);
}

TEST_F(PoolTest, PoolRefillsToMinIdle) {
    Danted d(dir);
    PoolConfig p;
    p.min_idle = 3;
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, p));
    ASSERT_TRUE(eventually([&] { return server_prop<uint32_t>("d", "PoolIdle") == 3; }));
    AppLease a, b;
    ASSERT_TRUE(associate(a, target(), nullptr));
    ASSERT_TRUE(associate(b, target(), nullptr));
    EXPECT_TRUE(eventually([&] { return server_prop<uint32_t>("d", "PoolIdle") == 3; }));
    EXPECT_TRUE(eventually([&] { return established_to(d.port()) == 5; })) << established_to(d.port());
}

TEST_F(PoolTest, RenewsAfterTheServerCrashesAndRestarts) {
    Danted d(dir);
    BusClient::SignalLog signals(bus);
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, PoolConfig{}));
    auto svr = sockaddr_of("127.0.0.1", d.port());
    AppLease l;
    ASSERT_TRUE(associate(l, target(), &svr)) << std::strerror(errno);
    ASSERT_EQ(echo_via_library(l.rendezvous, target(), "before"), "before");
    const std::string path = lease_path();

    // A crash: the whole process group, or the io-child keeps relaying.
    auto t0 = Clock::now();
    d.kill();
    d.start();
    ASSERT_TRUE(echo_eventually(l, 20s)) << "no echo through the original rendezvous after the restart";
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    std::cout << "[ measure  ] kill + restart of danted to first echo through the new relay: " << ms << " ms\n";

    EXPECT_EQ(lease_prop<uint32_t>("Generation"), 2u);
    EXPECT_EQ(lease_prop<std::string>("State"), "active");
    EXPECT_TRUE(eventually([&] {
        for (const auto& s : signals.snapshot())
            if (s.path == path && s.member == "Renewed" && s.generation == 2) return true;
        return false;
    })) << "no Renewed(2) signal on " << path;
    // socks5udp_current names the relay the lease now uses.
    sockaddr_storage cur{};
    ASSERT_EQ(socks5udp_current(l.fd, sa(cur), sizeof cur), 0) << std::strerror(errno);
    auto relay = lease_prop<sdbus::Struct<std::vector<uint8_t>, uint16_t>>("Relay");
    EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in*>(&cur)->sin_port), std::get<1>(relay)) << show(cur);
    EXPECT_GE(client->statistics()["renewals"], 1u);
}

TEST_F(PoolTest, FailsOverToTheNextServerOfTheRoute) {
    Danted a(dir), b(dir);
    start_broker(broker_config({server_json("a", "127.0.0.1", a.port()), server_json("b", "127.0.0.1", b.port())},
                               {"a", "b"}, PoolConfig{}));
    // Both warm: the route's first server serves the request.
    ASSERT_TRUE(eventually([&] {
        return server_prop<uint32_t>("a", "PoolIdle") == 1 && server_prop<uint32_t>("b", "PoolIdle") == 1;
    }));
    AppLease l;
    ASSERT_TRUE(associate(l, target(), nullptr)) << std::strerror(errno);
    EXPECT_EQ(std::string(lease_prop<sdbus::ObjectPath>("Server")), "/org/s5broker/Broker1/server/a");
    ASSERT_EQ(echo_via_library(l.rendezvous, target(), "on a"), "on a");

    auto t0 = Clock::now();
    a.kill();
    ASSERT_TRUE(echo_eventually(l, 10s));
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    std::cout << "[ measure  ] failover from a killed server to a warm one, to first echo: " << ms << " ms\n";
    EXPECT_EQ(std::string(lease_prop<sdbus::ObjectPath>("Server")), "/org/s5broker/Broker1/server/b");
    EXPECT_EQ(lease_prop<uint32_t>("Generation"), 2u);
    EXPECT_GE(client->statistics()["failovers"], 1u);
    EXPECT_TRUE(eventually([&] { return server_prop<std::string>("a", "State") == "down"; }));
    EXPECT_FALSE(server_prop<std::string>("a", "LastError").empty());
}

TEST_F(PoolTest, LostWhenNoServerReturnsWithinTheGraceTime) {
    Danted d(dir);
    BusClient::SignalLog signals(bus);
    PoolConfig p;
    p.grace_s = 2;
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, p));
    AppLease l;
    ASSERT_TRUE(associate(l, target(), nullptr));
    const std::string path = lease_path();
    d.kill();
    double cpu0 = cpu_seconds(broker->process().pid());
    ASSERT_TRUE(eventually(
        [&] {
            for (const auto& s : signals.snapshot())
                if (s.path == path && s.member == "Lost") return true;
            return false;
        },
        10s));
    EXPECT_EQ(lease_prop<std::string>("State"), "lost");
    // The app learns it on its next send.
    int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    auto t = target();
    char msg[] = "lost?";
    errno = 0;
    EXPECT_EQ(socks5udp_sendto(u, msg, sizeof msg, 0, sa(t), len_of(t), sa(l.rendezvous), len_of(l.rendezvous)), -1);
    EXPECT_EQ(errno, ENOTCONN);
    EXPECT_EQ(socks5_errno, S5_ELOST);
    ::close(u);
    // A down server costs no busy loop: the broker probes it after each
    // backoff delay and idles in between. Wait for three more failed probes
    // (a condition, not a clock) and look at what they cost.
    const uint64_t failed0 = client->statistics()["associations_failed"];
    ASSERT_TRUE(eventually([&] { return client->statistics()["associations_failed"] >= failed0 + 3; }, 60s));
    double cpu = cpu_seconds(broker->process().pid()) - cpu0;
    std::cout << "[ measure  ] broker CPU time from the loss to three more failed probes: " << cpu << " s\n";
    EXPECT_LT(cpu, 0.5);
}

TEST_F(PoolTest, SilentServerIsDetectedByKeepaliveAndTheLeaseMoves) {
    if (!netns_available()) GTEST_SKIP() << "network namespaces unavailable (need root and iproute2)";
    NetnsHost host;
    UdpEcho echo2(dir, {"127.0.0.1", host.outside()});
    DantedOptions o;
    o.address = host.address();
    o.ipv6 = false;
    o.netns = host.name();
    Danted far(dir, o);
    Danted near(dir);
    PoolConfig p;
    p.ka_idle = 1;
    p.ka_interval = 1;
    p.ka_count = 2;
    start_broker(broker_config({server_json("far", host.address(), far.port()),
                                server_json("near", "127.0.0.1", near.port())},
                               {"far", "near"}, p));
    ASSERT_TRUE(eventually([&] { return server_prop<uint32_t>("near", "PoolIdle") == 1; }));
    auto svr = sockaddr_of(host.address(), far.port());
    AppLease l;
    // The far host reaches our echo on our side of its link.
    auto tgt = sockaddr_of(host.outside(), echo2.port());
    ASSERT_TRUE(associate(l, tgt, &svr)) << std::strerror(errno);
    ASSERT_EQ(echo_via_library(l.rendezvous, tgt, "far"), "far");

    auto t0 = Clock::now();
    host.link_down();  // no FIN, no RST: only keepalive can tell
    bool moved = eventually(
        [&] {
            return lease_prop<uint32_t>("Generation") == 2 &&
                   echo_via_library(l.rendezvous, tgt, "near", 200ms) == "near";
        },
        20s);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    ASSERT_TRUE(moved) << "lease not renewed after the far server went silent";
    std::cout << "[ measure  ] silent server (keepalive 1+1x2 s) to first echo through the new relay: " << ms
              << " ms\n";
    EXPECT_EQ(std::string(lease_prop<sdbus::ObjectPath>("Server")), "/org/s5broker/Broker1/server/near");
}

TEST_F(PoolTest, NonBlockingSocketGetsEINPROGRESSThenTheRendezvous) {
    Danted d(dir);
    PoolConfig p;
    p.min_idle = 0;  // nothing warm: the association is made on demand
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, p));
    auto svr = sockaddr_of("127.0.0.1", d.port());
    AppLease l;
    auto before = target();
    EXPECT_FALSE(associate(l, target(), &svr, SOCK_NONBLOCK));
    EXPECT_EQ(errno, EINPROGRESS);
    EXPECT_EQ(std::memcmp(&l.rendezvous, &before, sizeof before), 0) << "Dst written while in progress";
    pollfd pfd{l.fd, POLLIN, 0};
    ASSERT_EQ(poll(&pfd, 1, 5000), 1) << "Socket never became readable";
    sockaddr_storage dst = target();
    ASSERT_EQ(socks5udp_associate(l.fd, sa(dst), sizeof dst, sa(svr), len_of(svr)), 0) << std::strerror(errno);
    l.rendezvous = dst;
    EXPECT_EQ(echo_via_library(l.rendezvous, target(), "nb"), "nb");
    // Asking again on a completed lease is like connect() on a connected socket.
    EXPECT_EQ(socks5udp_associate(l.fd, sa(dst), sizeof dst, sa(svr), len_of(svr)), -1);
    EXPECT_EQ(errno, EISCONN);
}

TEST_F(PoolTest, NonBlockingFailureIsReportedOnTheSecondCall) {
    uint16_t closed = free_tcp_port();
    PoolConfig p;
    p.min_idle = 0;
    start_broker(broker_config({server_json("c", "127.0.0.1", closed)}, {"c"}, p));
    auto svr = sockaddr_of("127.0.0.1", closed);
    AppLease l;
    EXPECT_FALSE(associate(l, target(), &svr, SOCK_NONBLOCK));
    ASSERT_EQ(errno, EINPROGRESS);
    pollfd pfd{l.fd, POLLIN, 0};
    ASSERT_EQ(poll(&pfd, 1, 5000), 1);
    sockaddr_storage dst = target();
    EXPECT_EQ(socks5udp_associate(l.fd, sa(dst), sizeof dst, sa(svr), len_of(svr)), -1);
    EXPECT_EQ(errno, ECONNREFUSED);
}

TEST_F(PoolTest, WarmPoolAnswersANonBlockingSocketAtOnce) {
    Danted d(dir);
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, PoolConfig{}));
    ASSERT_TRUE(eventually([&] { return server_prop<uint32_t>("d", "PoolIdle") == 1; }));
    auto svr = sockaddr_of("127.0.0.1", d.port());
    AppLease l;
    ASSERT_TRUE(associate(l, target(), &svr, SOCK_NONBLOCK)) << std::strerror(errno);
    EXPECT_EQ(echo_via_library(l.rendezvous, target(), "warm nb"), "warm nb");
}

TEST_F(PoolTest, RecvfromDropsDatagramsNotFromTheRelay) {
    Danted d(dir);
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, PoolConfig{}));
    AppLease l;
    ASSERT_TRUE(associate(l, target(), nullptr));
    int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    auto local = sockaddr_of("127.0.0.1", 0);
    ASSERT_EQ(::bind(u, sa(local), len_of(local)), 0);
    timeval tv{2, 0};
    ASSERT_EQ(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    sockaddr_storage me{};
    socklen_t mlen = sizeof me;
    ASSERT_EQ(getsockname(u, sa(me), &mlen), 0);
    // First in the queue: a well-formed SOCKS datagram, but from a
    // stranger, not the relay. Then the real one goes out and comes back.
    int stranger = ::socket(AF_INET, SOCK_DGRAM, 0);
    unsigned char forged[] = {0, 0, 0, 1, 127, 0, 0, 1, 0, 7, 'f', 'a', 'k', 'e'};
    ASSERT_GT(sendto(stranger, forged, sizeof forged, 0, sa(me), mlen), 0);
    char head[64];
    ASSERT_EQ(recv(u, head, sizeof head, MSG_PEEK), static_cast<ssize_t>(sizeof forged));
    ASSERT_EQ(std::memcmp(head, forged, sizeof forged), 0) << "the forged datagram is not first in the queue";
    auto t = target();
    char msg[] = "real";
    ASSERT_EQ(socks5udp_sendto(u, msg, 4, 0, sa(t), len_of(t), sa(l.rendezvous), len_of(l.rendezvous)), 0);
    char buf[64];
    sockaddr_storage from{};
    socklen_t flen = sizeof from;
    ssize_t n = socks5udp_recvfrom(u, buf, sizeof buf, 0, sa(from), &flen);
    ASSERT_EQ(n, 4) << std::strerror(errno);
    EXPECT_EQ(std::string(buf, 4), "real");
    EXPECT_EQ(show(from), show(target())) << "From must be the original sender";
    ::close(stranger);
    ::close(u);
}

TEST_F(PoolTest, GetservAnswersForRoutedAndUnroutedDestinations) {
    Danted d(dir);
    start_broker(broker_config({server_json("d", "127.0.0.1", d.port())}, {"d"}, PoolConfig{}));
    auto v4 = sockaddr_of("192.0.2.1", 53);
    sockaddr* s = socks5_getserv(sa(v4), sizeof(sockaddr_in));
    ASSERT_NE(s, nullptr) << std::strerror(errno);
    ASSERT_EQ(s->sa_family, AF_INET);
    EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in*>(s)->sin_port), d.port());
    // No route for IPv6 in this config.
    auto v6 = sockaddr_of("2001:db8::1", 53);
    EXPECT_EQ(socks5_getserv(sa(v6), sizeof(sockaddr_in6)), nullptr);
    EXPECT_EQ(socks5_errno, S5_ENOSERV);
}

}  // namespace

// At most kMaxConnecting (32) setups run at once per server: a pool larger
// than that fills in rounds, each ready association making room for the
// next setup. It used to stop at 32 until a request came.
TEST_F(PoolTest, APoolLargerThanTheSetupsInFlightFillsWithoutARequest) {
    Danted danted(dir);
    PoolConfig p;
    p.min_idle = 48;
    p.max_associations = 64;
    start_broker(broker_config({server_json("d", "127.0.0.1", danted.port())}, {"d"}, p));
    EXPECT_TRUE(eventually([&] { return server_prop<uint32_t>("d", "PoolIdle") >= 48; }, 20s))
        << server_prop<uint32_t>("d", "PoolIdle") << " idle";
}
