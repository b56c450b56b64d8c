// Leases that outlive the broker's process (docs/design.md §12): the real
// s5brokerd, restarted and killed under held leases, with the harness doing
// what systemd's file descriptor store does (NotifyServer). The system suite
// (tests/system/run) does the same under a real systemd; this one runs in
// every build, also under ASan+UBSan, and reaches the corners: a lease
// closed, an association dead or a state corrupted while no broker ran.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sdbus-c++/sdbus-c++.h>
#include <string>

#include "harness.hpp"
#include "unique_fd.hpp"

namespace {

using namespace s5test;
using Fd = s5::UniqueFd;

constexpr const char* kLeaseIface = "org.s5broker.Broker1.Lease";

// An application's lease: the lease socket, a UDP socket to send from (one
// per lease: danted relays for the first source port only) and the
// rendezvous associate() gave.
struct AppLease {
    Fd s, u;
    sockaddr_storage target{}, relay{};

    explicit AppLease(uint16_t echo_port) {
        s.reset(::socket(AF_INET, SOCK_STREAM, 0));
        u.reset(::socket(AF_INET, SOCK_DGRAM, 0));
        target = sockaddr_of("127.0.0.1", echo_port);
        relay = target;
        if (socks5udp_associate(s.get(), sa(relay), sizeof(sockaddr_in6), nullptr, 0) != 0)
            throw std::runtime_error(std::string("socks5udp_associate: ") + std::strerror(errno) + " / " +
                                     socks5_strerror(socks5_errno));
    }

    // One datagram through socks5udp_sendto and its echo, within `timeout`
    // (sends again every 200 ms while the lease renews).
    bool echo(const std::string& payload, std::chrono::milliseconds timeout = 5000ms) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            std::string m = payload;
            if (socks5udp_sendto(u.get(), m.data(), m.size(), 0, sa(target), sizeof(sockaddr_in), sa(relay),
                                 sizeof(sockaddr_in)) != 0) {
                if (errno != EAGAIN) return false;
                pollfd p{s.get(), POLLIN, 0};
                poll(&p, 1, 200);
                continue;
            }
            pollfd p{u.get(), POLLIN, 0};
            if (poll(&p, 1, 200) != 1) continue;
            char buf[512];
            ssize_t n = socks5udp_recvfrom(u.get(), buf, sizeof buf, MSG_DONTWAIT, nullptr, nullptr);
            if (n > 0 && std::string(buf, static_cast<size_t>(n)) == payload) return true;
        }
        return false;
    }

    // The broker let go of it: the lease socket hangs up.
    bool hung_up() const {
        pollfd p{s.get(), 0, 0};
        return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
    }

    std::string current_relay() const {
        sockaddr_storage cur{};
        if (socks5udp_current(s.get(), sa(cur), sizeof cur) != 0) return std::string("error: ") + std::strerror(errno);
        return endpoint_text(cur);
    }

    static std::string endpoint_text(const sockaddr_storage& ss) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        return std::string(ip) + ":" + std::to_string(ntohs(in->sin_port));
    }
};

class Restart : public ::testing::Test {
protected:
    TempDir dir;
    PrivateBus bus{dir};
    UdpEcho echo{dir};
    Danted a{dir}, b{dir};
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;

    void SetUp() override {
        std::string cfg = R"({"servers": [)" + server_json("a", "127.0.0.1", a.port()) + "," +
                          server_json("b", "127.0.0.1", b.port()) +
                          R"(], "pool": {"min_idle": 1}, "lease_grace_s": 10, "limits": {"leases_per_uid": 4096},
                             "routes": [{"destination": "0.0.0.0/0", "servers": ["a", "b"]}]})";
        broker = std::make_unique<Broker>(dir, bus, cfg);
        broker->enable_fd_store();
        ASSERT_TRUE(broker->start()) << broker->log();
        client = std::make_unique<BusClient>(bus);
    }
    void TearDown() override {
        if (HasFailure()) std::cerr << "--- s5brokerd log ---\n" << broker->log();
    }

    // Kills the broker (SIGTERM: as `systemctl restart` stops it; SIGKILL:
    // a crash) and starts the next one with what the store kept.
    void restart(int sig) {
        auto st = broker->stop(sig);
        ASSERT_TRUE(st.has_value()) << "the broker did not exit on signal " << sig;
        if (sig == SIGTERM) {
            EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << "status " << *st;
        }
        ASSERT_TRUE(broker->start()) << broker->log();
    }

    uint32_t generation(const std::string& path) {
        return client->object(path)->getProperty("Generation").onInterface(kLeaseIface).get<uint32_t>();
    }
    std::string log() { return broker->log(); }
};

TEST_F(Restart, ARestartKeepsEveryLeaseItsIdRelayAndGeneration) {
    AppLease one(echo.port()), two(echo.port());
    ASSERT_TRUE(one.echo("before-1"));
    ASSERT_TRUE(two.echo("before-2"));
    const auto paths = client->leases();
    ASSERT_EQ(paths.size(), 2u);
    const auto granted = client->statistics().at("leases_granted");
    const std::string relay1 = one.current_relay(), relay2 = two.current_relay();
    // Lease ends, control connections and the state memfd are stored.
    EXPECT_GE(broker->fd_store()->count(), 5u);

    restart(SIGTERM);

    // The same leases, not new ones: no Associate was made again.
    EXPECT_EQ(client->leases(), paths);
    for (const auto& p : paths) EXPECT_EQ(generation(p), 1u) << p;
    EXPECT_EQ(client->statistics().at("leases_granted"), granted);
    EXPECT_TRUE(one.echo("after-1"));
    EXPECT_TRUE(two.echo("after-2"));
    EXPECT_EQ(one.current_relay(), relay1);
    EXPECT_EQ(two.current_relay(), relay2);
    EXPECT_NE(log().find("restored 2 lease(s)"), std::string::npos);
    // And the new broker serves new requests.
    AppLease three(echo.port());
    EXPECT_TRUE(three.echo("new"));
}

TEST_F(Restart, ACrashKeepsTheLeaseAndItsNextId) {
    AppLease one(echo.port());
    ASSERT_TRUE(one.echo("before"));
    const auto paths = client->leases();
    const auto granted = client->statistics().at("leases_granted");
    restart(SIGKILL);
    EXPECT_EQ(client->leases(), paths);
    // The counters are in the state as they change, not only at exit.
    EXPECT_EQ(client->statistics().at("leases_granted"), granted);
    EXPECT_TRUE(one.echo("after"));
    // Ids go on from the old broker's: no lease gets an id it had.
    AppLease two(echo.port());
    auto now = client->leases();
    ASSERT_EQ(now.size(), 2u);
    EXPECT_GT(std::stoull(now.back().substr(now.back().rfind('/') + 1)),
              std::stoull(paths[0].substr(paths[0].rfind('/') + 1)));
}

TEST_F(Restart, ALeaseClosedWhileNoBrokerRanIsReleased) {
    auto gone = std::make_unique<AppLease>(echo.port());
    AppLease kept(echo.port());
    ASSERT_EQ(client->lease_count(), 2u);
    ASSERT_TRUE(broker->stop(SIGKILL));
    gone.reset();  // the application closes it while nobody listens
    ASSERT_TRUE(broker->start()) << log();
    EXPECT_EQ(client->lease_count(), 1u);
    EXPECT_TRUE(kept.echo("still here"));
    // Either the store dropped the hung-up end (as PID 1 does) or the new
    // broker found it closed; both are said.
    EXPECT_TRUE(log().find("ended while the broker was down") != std::string::npos ||
                log().find("released while the broker was down") != std::string::npos)
        << log();
}

TEST_F(Restart, AnAssociationThatDiedWhileNoBrokerRanIsRenewedElsewhere) {
    AppLease l(echo.port());
    ASSERT_TRUE(l.echo("before"));
    const auto path = client->leases().at(0);
    const std::string relay_a = l.current_relay();
    const std::string server =
        client->object(path)->getProperty("Server").onInterface(kLeaseIface).get<sdbus::ObjectPath>();
    ASSERT_TRUE(broker->stop(SIGKILL));
    // Its server and its relays are gone while the broker is down.
    (server.ends_with("/a") ? a : b).kill();
    ASSERT_TRUE(broker->start()) << log();
    EXPECT_TRUE(eventually([&] { return generation(path) == 2; }, 10000ms)) << log();
    EXPECT_EQ(client->leases().at(0), path);
    EXPECT_TRUE(l.echo("on the other server", 10000ms));
    EXPECT_NE(l.current_relay(), relay_a);
    EXPECT_NE(log().find("ended while the broker was down; renewing"), std::string::npos);
}

TEST_F(Restart, ACorruptStateStartsCleanAndReleasesEverything) {
    AppLease l(echo.port());
    ASSERT_TRUE(l.echo("before"));
    ASSERT_TRUE(broker->stop(SIGKILL));
    bool corrupted = false;
    for (const auto& [name, fd] : broker->fd_store()->stored()) {
        if (name.rfind("state-", 0) != 0) continue;
        const char junk[] = "this is not a state image";
        corrupted = pwrite(fd, junk, sizeof junk, 100) == static_cast<ssize_t>(sizeof junk);
    }
    ASSERT_TRUE(corrupted);
    ASSERT_TRUE(broker->start()) << log();
    EXPECT_NE(log().find("previous state not usable"), std::string::npos) << log();
    EXPECT_EQ(client->lease_count(), 0u);
    // The application hears that its lease is gone.
    EXPECT_TRUE(eventually([&] { return l.hung_up(); }, 5000ms));
    AppLease fresh(echo.port());
    EXPECT_TRUE(fresh.echo("after"));
}

}  // namespace
