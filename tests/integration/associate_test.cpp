// socks5udp_associate() end to end: the library in this process, the real
// s5brokerd on a private dbus-daemon, real danted servers and a UDP echo.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <sdbus-c++/sdbus-c++.h>
#include <thread>

#include "harness.hpp"
#include "unique_fd.hpp"

namespace {

using namespace s5test;


// One environment for the whole suite: starting danted and the broker costs
// about a second, and every test leaves no lease behind.
struct Env {
    TempDir dir;
    PrivateBus bus{dir};
    UdpEcho echo{dir};
    Danted plain{dir};                                       // socksmethod: none, 127.0.0.1 and ::1
    Danted authd{dir, username_auth()};                      // socksmethod: username
    uint16_t closed_port = free_tcp_port();                  // nothing listens there
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;

    Env() {
        write_file(dir.file("good.pw"), std::string(kTestPassword) + "\n");
        write_file(dir.file("bad.pw"), "not-the-password\n");
        broker = std::make_unique<Broker>(dir, bus, config());
        if (!broker->start()) throw std::runtime_error("s5brokerd did not become ready:\n" + broker->log());
        client = std::make_unique<BusClient>(bus);
    }

    // The suite's configuration; a test may add servers and routes (JSON
    // objects) for a while (see reload).
    std::string config(const std::vector<std::string>& more_servers = {},
                       const std::vector<std::string>& more_routes = {}) const {
        std::string c = R"({"servers": [)";
        c += server_json("plain", "127.0.0.1", plain.port());
        c += ",";
        c += server_json("plain6", "::1", plain.port());
        c += ",";
        c += server_json("auth", "127.0.0.1", authd.port(), dir.file("good.pw"));
        c += ",";
        c += server_json("badpw", "::1", authd.port(), dir.file("bad.pw"));
        c += ",";
        c += server_json("closed", "127.0.0.1", closed_port);
        for (const auto& m : more_servers) {
            c += ",";
            c += m;
        }
        c += R"(], "pool": {"min_idle": 2},
                "routes": [{"destination": "0.0.0.0/0", "servers": ["plain"]},
                           {"destination": "::/0", "servers": ["plain6"]})";
        for (const auto& r : more_routes) {
            c += ",";
            c += r;
        }
        c += "]}";
        return c;
    }

    // Replaces the broker's configuration; returns once it is applied.
    void reload(const std::string& cfg) {
        write_file(broker->config_path(), cfg);
        client->manager()->callMethod("Reload").onInterface("org.s5broker.Broker1.Manager");
    }
};

Env* env = nullptr;

class Associate : public ::testing::Test {
protected:
    static void SetUpTestSuite() { env = new Env; }
    static void TearDownTestSuite() {
        delete env;
        env = nullptr;
    }
    void TearDown() override {
        // Every test closes what it opened: no lease may outlive it.
        EXPECT_TRUE(eventually([] { return env->client->lease_count() == 0; }))
            << "leases left: " << env->client->lease_count();
        if (HasFailure()) std::cerr << "--- s5brokerd log ---\n" << env->broker->log();
    }
};



// The project's one owner of a descriptor.
using Fd = s5::UniqueFd;

int tcp_socket(int family = AF_INET, int flags = 0) { return ::socket(family, SOCK_STREAM | flags, 0); }

// Associates through `server_ip:port` for a target on the echo service and
// checks a datagram round trip through the rendezvous.
void associate_and_echo(const std::string& server_ip, uint16_t server_port, const std::string& target_ip) {
    Fd s(tcp_socket(server_ip.find(':') == std::string::npos ? AF_INET : AF_INET6));
    size_t svrlen = 0;
    auto svr = sockaddr_of(server_ip, server_port, &svrlen);
    auto dst = sockaddr_of(target_ip, env->echo.port());
    ASSERT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), svrlen), 0)
        << std::strerror(errno) << " / " << socks5_strerror(socks5_errno);
    EXPECT_EQ(socks5_errno, 0);
    // Dst now holds the rendezvous: danted's relay on the server's address.
    ASSERT_EQ(dst.ss_family, svr.ss_family);
    auto reply = echo_through(s.get(), dst, target_ip, env->echo.port(), "ping " + server_ip);
    ASSERT_TRUE(reply.has_value()) << "no echo through the relay";
    EXPECT_EQ(*reply, "ping " + server_ip);
}

TEST_F(Associate, IPv4RoundTrip) { associate_and_echo("127.0.0.1", env->plain.port(), "127.0.0.1"); }

TEST_F(Associate, IPv6RoundTrip) { associate_and_echo("::1", env->plain.port(), "::1"); }

TEST_F(Associate, UsernameAuthRoundTrip) { associate_and_echo("127.0.0.1", env->authd.port(), "127.0.0.1"); }

TEST_F(Associate, NullSvrRoutesByDestination) {
    Fd s(tcp_socket());
    auto dst = sockaddr_of("127.0.0.1", env->echo.port());
    ASSERT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof(sockaddr_in), nullptr, 0), 0) << std::strerror(errno);
    auto reply = echo_through(s.get(), dst, "127.0.0.1", env->echo.port(), "routed");
    ASSERT_TRUE(reply);
    EXPECT_EQ(*reply, "routed");
}

struct Failure {
    int rc, err, s5err;
};

Failure associate_fail(const std::string& server_ip, uint16_t port) {
    Fd s(tcp_socket());
    size_t svrlen = 0;
    auto svr = sockaddr_of(server_ip, port, &svrlen);
    auto dst = sockaddr_of("127.0.0.1", env->echo.port());
    auto before = dst;
    int rc = socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), svrlen);
    Failure f{rc, errno, socks5_errno};
    EXPECT_EQ(std::memcmp(&dst, &before, sizeof dst), 0) << "Dst changed on failure";
    int type = 0;
    socklen_t len = sizeof type;
    EXPECT_EQ(getsockopt(s.get(), SOL_SOCKET, SO_TYPE, &type, &len), 0);
    EXPECT_EQ(type, SOCK_STREAM) << "Socket changed on failure";
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    getsockname(s.get(), reinterpret_cast<sockaddr*>(&local), &llen);
    EXPECT_EQ(local.ss_family, AF_INET) << "Socket is no longer the caller's TCP socket";
    return f;
}

TEST_F(Associate, WrongPasswordIsEACCES) {
    auto f = associate_fail("::1", env->authd.port());
    EXPECT_EQ(f.rc, -1);
    EXPECT_EQ(f.err, EACCES);
    EXPECT_EQ(f.s5err, S5_EPERM);
}

TEST_F(Associate, ServerNotListeningIsECONNREFUSED) {
    auto f = associate_fail("127.0.0.1", env->closed_port);
    EXPECT_EQ(f.rc, -1);
    EXPECT_EQ(f.err, ECONNREFUSED);
    EXPECT_EQ(f.s5err, 0);
}

TEST_F(Associate, UnconfiguredServerIsENOENT) {
    auto f = associate_fail("127.0.0.9", 1080);
    EXPECT_EQ(f.rc, -1);
    EXPECT_EQ(f.err, ENOENT);
    EXPECT_EQ(f.s5err, S5_ENOSERV);
    EXPECT_NE(std::string(socks5_strerror(S5_ENOSERV)).find("No SOCKSv5 server"), std::string::npos);
}

// ---- argument errors of design.md §3 ----------------------------------------

class ArgumentErrors : public Associate {
protected:
    sockaddr_storage svr = sockaddr_of("127.0.0.1", env->plain.port());
    sockaddr_storage dst = sockaddr_of("127.0.0.1", env->echo.port());

    void expect_error(int s, const sockaddr* d, size_t dlen, const sockaddr* sv, size_t svlen, int want) {
        sockaddr_storage before = dst;
        errno = 0;
        EXPECT_EQ(socks5udp_associate(s, d, dlen, sv, svlen), -1);
        EXPECT_EQ(errno, want) << "got " << std::strerror(errno) << ", want " << std::strerror(want);
        EXPECT_EQ(socks5_errno, 0);
        EXPECT_EQ(std::memcmp(&dst, &before, sizeof dst), 0);
    }
};

TEST_F(ArgumentErrors, BadDescriptorIsEBADF) {
    int fd = ::open("/dev/null", O_RDONLY);
    ::close(fd);
    expect_error(fd, sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in), EBADF);
}

TEST_F(ArgumentErrors, FileIsENOTSOCK) {
    Fd f(::open("/dev/null", O_RDONLY));
    expect_error(f.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in), ENOTSOCK);
}

TEST_F(ArgumentErrors, DatagramSocketIsEINVAL) {
    Fd u(::socket(AF_INET, SOCK_DGRAM, 0));
    expect_error(u.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in), EINVAL);
}

TEST_F(ArgumentErrors, ConnectedSocketIsEISCONN) {
    Fd s(tcp_socket());
    ASSERT_EQ(::connect(s.get(), sa(svr), sizeof(sockaddr_in)), 0);
    expect_error(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in), EISCONN);
}

TEST_F(ArgumentErrors, NullOrShortDstIsEINVAL) {
    Fd s(tcp_socket());
    expect_error(s.get(), nullptr, sizeof dst, sa(svr), sizeof(sockaddr_in), EINVAL);
    expect_error(s.get(), sa(dst), 1, sa(svr), sizeof(sockaddr_in), EINVAL);
    expect_error(s.get(), sa(dst), sizeof(sockaddr_in) - 1, sa(svr), sizeof(sockaddr_in), EINVAL);
    auto d6 = sockaddr_of("::1", 7);
    dst = d6;
    expect_error(s.get(), sa(dst), sizeof(sockaddr_in), sa(svr), sizeof(sockaddr_in), EINVAL);
}

TEST_F(ArgumentErrors, ShortSvrIsEINVAL) {
    Fd s(tcp_socket());
    expect_error(s.get(), sa(dst), sizeof dst, sa(svr), 4, EINVAL);
}

TEST_F(ArgumentErrors, OtherFamilyIsEAFNOSUPPORT) {
    Fd s(tcp_socket());
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(&dst, &un, sizeof un < sizeof dst ? sizeof un : sizeof dst);
    expect_error(s.get(), sa(dst), sizeof un, sa(svr), sizeof(sockaddr_in), EAFNOSUPPORT);
    dst = sockaddr_of("127.0.0.1", env->echo.port());
    expect_error(s.get(), sa(dst), sizeof dst, reinterpret_cast<const sockaddr*>(&un), sizeof un, EAFNOSUPPORT);
}

TEST_F(ArgumentErrors, UnmappedPointerIsEFAULT) {
    Fd s(tcp_socket());
    // An address in the first page is never mapped.
    expect_error(s.get(), reinterpret_cast<const sockaddr*>(16), sizeof dst, sa(svr), sizeof(sockaddr_in), EFAULT);
    expect_error(s.get(), sa(dst), sizeof dst, reinterpret_cast<const sockaddr*>(16), sizeof(sockaddr_in), EFAULT);
}

TEST_F(ArgumentErrors, ReadOnlyDstIsEFAULT) {
    Fd s(tcp_socket());
    // A valid target on a page the library may read but not write.
    void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(page, MAP_FAILED);
    std::memcpy(page, &dst, sizeof(sockaddr_in));
    ASSERT_EQ(mprotect(page, 4096, PROT_READ), 0);
    expect_error(s.get(), static_cast<const sockaddr*>(page), sizeof(sockaddr_in), sa(svr), sizeof(sockaddr_in), EFAULT);
    munmap(page, 4096);
}

TEST_F(ArgumentErrors, RendezvousTooLargeForDstIsEINVAL) {
    // An IPv6 server gives an IPv6 rendezvous, which a sockaddr_in cannot hold.
    Fd s(tcp_socket());
    auto svr6 = sockaddr_of("::1", env->plain.port());
    expect_error(s.get(), sa(dst), sizeof(sockaddr_in), sa(svr6), sizeof(sockaddr_in6), EINVAL);
    // ...and the lease the broker made for it is released (TearDown checks).
}

// ---- the lease's life --------------------------------------------------------

TEST_F(Associate, ClosingSocketReleasesLeaseAndControlConnection) {
    Fd s(tcp_socket());
    auto svr = sockaddr_of("127.0.0.1", env->plain.port());
    auto dst = sockaddr_of("127.0.0.1", env->echo.port());
    ASSERT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)), 0);
    EXPECT_EQ(env->client->lease_count(), 1u);
    Fd u(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(socks5udp_bind(s.get(), u.get()), 0) << std::strerror(errno);
    ASSERT_TRUE(echo_from(u.get(), dst, "127.0.0.1", env->echo.port(), "x"));
    const std::string relay_port = std::to_string(ntohs(reinterpret_cast<sockaddr_in*>(&dst)->sin_port));
    s.reset();
    EXPECT_TRUE(eventually([] { return env->client->lease_count() == 0; }));
    // danted closes the association with its control connection: the relay
    // stops answering the socket it answered before.
    EXPECT_TRUE(eventually([&] { return !echo_from(u.get(), dst, "127.0.0.1", env->echo.port(), "y", 200ms); }, 5s));
}

TEST_F(Associate, ProcessExitReleasesLease) {
    int to_parent[2], to_child[2];
    ASSERT_EQ(pipe(to_parent), 0);
    ASSERT_EQ(pipe(to_child), 0);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // A child of a process that already used the library: it must make
        // its own bus connection (fork safety), then exit holding the lease.
        ::close(to_child[1]);
        int s = tcp_socket();
        auto svr = sockaddr_of("127.0.0.1", env->plain.port());
        auto dst = sockaddr_of("127.0.0.1", env->echo.port());
        char ok = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)) == 0 ? 'y' : 'n';
        (void)!write(to_parent[1], &ok, 1);
        char wait;
        (void)!read(to_child[0], &wait, 1);  // EOF once the parent has looked
        _exit(0);
    }
    ::close(to_parent[1]);
    ::close(to_child[0]);
    char ok = 0;
    ASSERT_EQ(read(to_parent[0], &ok, 1), 1);
    EXPECT_EQ(ok, 'y');
    EXPECT_EQ(env->client->lease_count(), 1u);
    ::close(to_child[1]);
    ::close(to_parent[0]);
    int st;
    ASSERT_EQ(waitpid(child, &st, 0), child);
    EXPECT_TRUE(eventually([] { return env->client->lease_count() == 0; }));
}

TEST_F(Associate, ReleaseOverTheBusClosesTheLeaseFd) {
    Fd s(tcp_socket());
    auto svr = sockaddr_of("127.0.0.1", env->plain.port());
    auto dst = sockaddr_of("127.0.0.1", env->echo.port());
    ASSERT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)), 0);
    auto leases = env->client->leases();
    ASSERT_EQ(leases.size(), 1u);
    // Another connection of the same uid (root) may release it.
    env->client->manager()
        ->callMethod("Release")
        .onInterface("org.s5broker.Broker1.Manager")
        .withArguments(sdbus::ObjectPath(leases[0]));
    EXPECT_EQ(env->client->lease_count(), 0u);
    char buf[64];
    EXPECT_EQ(recv(s.get(), buf, sizeof buf, 0), 0) << "lease fd should see EOF";
    // Releasing it again: no such object.
    try {
        env->client->manager()
            ->callMethod("Release")
            .onInterface("org.s5broker.Broker1.Manager")
            .withArguments(sdbus::ObjectPath(leases[0]));
        ADD_FAILURE() << "second Release succeeded";
    } catch (const sdbus::Error& e) {
        EXPECT_EQ(e.getName(), "org.freedesktop.DBus.Error.UnknownObject");
    }
}

TEST_F(Associate, LeaseObjectDescribesTheLease) {
    Fd s(tcp_socket());
    auto svr = sockaddr_of("127.0.0.1", env->plain.port());
    auto dst = sockaddr_of("127.0.0.1", env->echo.port());
    ASSERT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)), 0);
    auto leases = env->client->leases();
    ASSERT_EQ(leases.size(), 1u);
    auto lease = env->client->object(leases[0]);
    const char* iface = "org.s5broker.Broker1.Lease";
    EXPECT_EQ(lease->getProperty("Owner").onInterface(iface).get<uint32_t>(), getuid());
    EXPECT_EQ(lease->getProperty("State").onInterface(iface).get<std::string>(), "active");
    EXPECT_EQ(lease->getProperty("Generation").onInterface(iface).get<uint32_t>(), 1u);
    EXPECT_EQ(std::string(lease->getProperty("Server").onInterface(iface).get<sdbus::ObjectPath>()),
              "/org/s5broker/Broker1/server/plain");
    auto relay = lease->getProperty("Relay").onInterface(iface).get<sdbus::Struct<std::vector<uint8_t>, uint16_t>>();
    const auto* rv = reinterpret_cast<const sockaddr_in*>(&dst);
    ASSERT_EQ(std::get<0>(relay).size(), 4u);
    EXPECT_EQ(std::memcmp(std::get<0>(relay).data(), &rv->sin_addr, 4), 0);
    EXPECT_EQ(std::get<1>(relay), ntohs(rv->sin_port));
}

TEST_F(Associate, KeepsCloseOnExecAndNonBlocking) {
    for (int flags : {0, int{SOCK_CLOEXEC}, int{SOCK_NONBLOCK}, SOCK_CLOEXEC | SOCK_NONBLOCK}) {
        Fd s(tcp_socket(AF_INET, flags));
        auto svr = sockaddr_of("127.0.0.1", env->plain.port());
        auto dst = sockaddr_of("127.0.0.1", env->echo.port());
        int rc = socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in));
        if (rc == -1 && errno == EINPROGRESS && (flags & SOCK_NONBLOCK)) {
            // Non-blocking and no warm association at that instant.
            pollfd p{s.get(), POLLIN, 0};
            ASSERT_EQ(poll(&p, 1, 5000), 1);
            rc = socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in));
        }
        ASSERT_EQ(rc, 0) << std::strerror(errno);
        EXPECT_EQ((fcntl(s.get(), F_GETFD) & FD_CLOEXEC) != 0, (flags & SOCK_CLOEXEC) != 0);
        EXPECT_EQ((fcntl(s.get(), F_GETFL) & O_NONBLOCK) != 0, (flags & SOCK_NONBLOCK) != 0);
    }
}

TEST_F(Associate, FiftyConcurrentAssociationsFromTenThreads) {
    constexpr int kThreads = 10, kEach = 5;
    std::atomic<int> ok{0};
    std::vector<int> fds(kThreads * kEach, -1);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                int s = tcp_socket();
                fds[t * kEach + i] = s;
                auto svr = sockaddr_of("127.0.0.1", env->plain.port());
                auto dst = sockaddr_of("127.0.0.1", env->echo.port());
                if (socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)) != 0) continue;
                // Appended: GCC 12 -O3 warns (-Wrestrict, a false positive)
                // on "literal" + std::string&&.
                std::string msg = "t";
                msg += std::to_string(t);
                msg += '.';
                msg += std::to_string(i);
                if (echo_through(s, dst, "127.0.0.1", env->echo.port(), msg) == msg) ++ok;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(ok.load(), kThreads * kEach);
    EXPECT_EQ(env->client->lease_count(), static_cast<uint32_t>(kThreads * kEach));
    for (int fd : fds) ::close(fd);
}

// ---- calls that must not wait for other threads' calls ----------------------

// A SOCKS server that accepts connections and never answers, added to the
// broker's configuration for the test: a blocking request for it stays in
// flight until the broker gives up (10 s) or the server leaves the
// configuration again (then it fails at once).
class WithASilentServer : public Associate {
protected:
    FakeSocksServer silent{{}, FakeSocksServer::After::Silent};

    void SetUp() override {
        env->reload(env->config({server_json("silent", "127.0.0.1", silent.port())}));
        // Its pool's min_idle connections, stuck in the greeting.
        ASSERT_TRUE(eventually([&] { return silent.connections() == 2; })) << silent.connections();
    }
    void TearDown() override {
        finish_blocked();
        env->reload(env->config());
        Associate::TearDown();
    }

    // A blocking socks5udp_associate for the silent server, in its own thread.
    struct Blocked {
        std::thread thread;
        std::atomic<bool> done{false};
        int rc = 0, err = 0;
    } blocked;
    std::mutex m;
    std::condition_variable cv;  // notified when a call of the test returns

    // Returns once the broker has the request, i.e. the blocking call is in
    // flight: the request made the pool open one more connection.
    void start_blocked() {
        blocked.thread = std::thread([this] {
            Fd s(tcp_socket());
            auto svr = sockaddr_of("127.0.0.1", silent.port());
            auto dst = sockaddr_of("127.0.0.1", env->echo.port());
            blocked.rc = socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in));
            blocked.err = errno;
            std::lock_guard<std::mutex> g(m);
            blocked.done = true;
            cv.notify_all();
        });
        ASSERT_TRUE(eventually([&] { return silent.connections() >= 3; }))
            << "the blocking request did not reach the broker";
    }

    // Ends the blocking call: the silent server leaves the configuration.
    void finish_blocked() {
        if (!blocked.thread.joinable()) return;
        env->reload(env->config());
        blocked.thread.join();
        EXPECT_EQ(blocked.rc, -1) << "a request for a silent server succeeded";
    }
};

TEST_F(WithASilentServer, NonBlockingCallDoesNotWaitForABlockedOne) {
    start_blocked();
    ASSERT_FALSE(blocked.done);
    std::atomic<bool> nb_done{false};
    bool blocked_done_first = true;
    int nb_rc = 0, nb_err = 0;
    std::thread nb([&] {
        Fd s(tcp_socket(AF_INET, SOCK_NONBLOCK));
        auto svr = sockaddr_of("127.0.0.1", env->plain.port());
        auto dst = sockaddr_of("127.0.0.1", env->echo.port());
        nb_rc = socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in));
        nb_err = errno;
        std::lock_guard<std::mutex> g(m);
        blocked_done_first = blocked.done;
        nb_done = true;
        cv.notify_all();
    });
    {
        // Whichever returns first (the blocking one returns after the
        // broker's 10 s at the latest).
        std::unique_lock<std::mutex> g(m);
        cv.wait_for(g, 60s, [&] { return nb_done || blocked.done; });
    }
    EXPECT_TRUE(nb_done) << "the non-blocking call is still waiting behind the blocking one";
    EXPECT_FALSE(blocked.done) << "the blocking call returned first";
    nb.join();
    EXPECT_FALSE(blocked_done_first) << "the non-blocking call returned only after the blocking one";
    EXPECT_TRUE(nb_rc == 0 || (nb_rc == -1 && nb_err == EINPROGRESS))
        << "rc " << nb_rc << ": " << std::strerror(nb_err);
    EXPECT_FALSE(blocked.done) << "the blocking call should still be in flight";
}

TEST_F(WithASilentServer, ForkDoesNotWaitForACallInFlight) {
    start_blocked();
    int to_parent[2], to_child[2];
    ASSERT_EQ(pipe(to_parent), 0);
    ASSERT_EQ(pipe(to_child), 0);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // The parent's call is in flight on the connection this child
        // inherited: the child must make an association of its own.
        ::close(to_child[1]);
        int s = tcp_socket();
        auto svr = sockaddr_of("127.0.0.1", env->plain.port());
        auto dst = sockaddr_of("127.0.0.1", env->echo.port());
        char ok = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)) == 0 ? 'y' : 'n';
        (void)!write(to_parent[1], &ok, 1);
        char wait;
        (void)!read(to_child[0], &wait, 1);  // EOF once the parent has looked
        _exit(0);
    }
    const bool done_at_fork = blocked.done;
    ::close(to_parent[1]);
    ::close(to_child[0]);
    EXPECT_FALSE(done_at_fork) << "fork() returned only after the call in flight";
    char ok = 0;
    pollfd p{to_parent[0], POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 20000), 1) << "the child's association did not return";
    EXPECT_EQ(read(to_parent[0], &ok, 1), 1);
    EXPECT_EQ(ok, 'y') << "the child could not make its own association";
    EXPECT_FALSE(blocked.done) << "the parent's call should still be in flight";
    ::close(to_child[1]);
    ::close(to_parent[0]);
    int st = 0;
    ASSERT_EQ(waitpid(child, &st, 0), child);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

// ---- renewal -------------------------------------------------------------------

// A danted of the test's own, with a route of its own, so that the lease can
// renew only there: the renewal lasts until that danted is back.
TEST_F(Associate, SendtoDuringARenewalIsEAGAINUntilRenewed) {
    Danted d(env->dir);
    env->reload(env->config({server_json("renew", "127.0.0.1", d.port())},
                            {R"({"destination": "127.0.0.2/32", "servers": ["renew"]})"}));
    struct Restore {
        ~Restore() { env->reload(env->config()); }
    } restore;
    Fd s(tcp_socket());
    auto svr = sockaddr_of("127.0.0.1", d.port());
    auto rv = sockaddr_of("127.0.0.2", env->echo.port());
    ASSERT_EQ(socks5udp_associate(s.get(), sa(rv), sizeof rv, sa(svr), sizeof(sockaddr_in)), 0)
        << std::strerror(errno) << " / " << socks5_strerror(socks5_errno);
    const auto target = sockaddr_of("127.0.0.1", env->echo.port());
    ASSERT_EQ(echo_via_library(rv, target, "before"), "before");
    auto leases = env->client->leases();
    ASSERT_EQ(leases.size(), 1u);
    auto lease = env->client->object(leases[0]);
    const char* iface = "org.s5broker.Broker1.Lease";

    // A crash: the whole process group, or the io-child keeps relaying.
    d.kill();
    pollfd p{s.get(), POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 10000), 1) << "the lease did not become readable when its association ended";
    EXPECT_EQ(lease->getProperty("State").onInterface(iface).get<std::string>(), "renewing");
    Fd u(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    auto t = target;
    char msg[] = "during";
    errno = 0;
    EXPECT_EQ(socks5udp_sendto(u.get(), msg, sizeof msg - 1, 0, sa(t), len_of(t), sa(rv), len_of(rv)), -1)
        << "a datagram went to the dead relay without a word";
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
    sockaddr_storage cur{};
    EXPECT_EQ(socks5udp_current(s.get(), sa(cur), sizeof cur), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
    EXPECT_EQ(poll(&p, 1, 0), 0) << "the event was not consumed";

    d.start();
    ASSERT_EQ(poll(&p, 1, 20000), 1) << "no Renewed after the server came back";
    ASSERT_EQ(socks5udp_current(s.get(), sa(cur), sizeof cur), 0) << std::strerror(errno);
    EXPECT_EQ(lease->getProperty("State").onInterface(iface).get<std::string>(), "active");
    EXPECT_EQ(lease->getProperty("Generation").onInterface(iface).get<uint32_t>(), 2u);
    auto relay = lease->getProperty("Relay").onInterface(iface).get<sdbus::Struct<std::vector<uint8_t>, uint16_t>>();
    EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in*>(&cur)->sin_port), std::get<1>(relay));
    // The original rendezvous reaches the new relay.
    EXPECT_EQ(echo_via_library(rv, target, "after"), "after");
}

// Every pool of the suite at its target (the servers that can be up are;
// "badpw" and "closed" stay down and make no association), so that
// associations_made moves only for what a test does.
bool pools_settled() {
    for (const char* name : {"plain", "plain6", "auth"}) {
        auto p = env->client->object(std::string("/org/s5broker/Broker1/server/") + name);
        if (p->getProperty("PoolIdle").onInterface("org.s5broker.Broker1.Server").get<uint32_t>() != 2) return false;
    }
    return true;
}

TEST_F(Associate, StatisticsCount) {
    ASSERT_TRUE(eventually(pools_settled));
    auto before = env->client->statistics();
    {
        Fd s(tcp_socket());
        auto svr = sockaddr_of("127.0.0.1", env->plain.port());
        auto dst = sockaddr_of("127.0.0.1", env->echo.port());
        ASSERT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)), 0);
    }
    EXPECT_TRUE(eventually([] { return env->client->lease_count() == 0; }));
    // The pool refills what it handed out: exactly one new association.
    ASSERT_TRUE(eventually(pools_settled));
    auto after = env->client->statistics();
    EXPECT_EQ(after["associations_made"], before["associations_made"] + 1);
    EXPECT_EQ(after["served_from_pool"], before["served_from_pool"] + 1);
    EXPECT_EQ(after["leases_granted"], before["leases_granted"] + 1);
    EXPECT_EQ(after["leases_released"], before["leases_released"] + 1);
}

// An IPv6 relay does not fit an IPv4-sized Dst: the broker says so before it
// makes a lease (nothing granted, nothing taken from the pool).
TEST_F(Associate, RendezvousThatCannotFitDstLenFailsBeforeALease) {
    ASSERT_TRUE(eventually(pools_settled));
    auto before = env->client->statistics();
    Fd s(tcp_socket(AF_INET6));
    size_t svrlen = 0;
    auto svr = sockaddr_of("::1", env->plain.port(), &svrlen);
    auto dst = sockaddr_of("127.0.0.1", env->echo.port());
    errno = 0;
    EXPECT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof(sockaddr_in), sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EINVAL);
    auto after = env->client->statistics();
    EXPECT_EQ(after["leases_granted"], before["leases_granted"]);
    EXPECT_EQ(after["served_from_pool"], before["served_from_pool"]);
    // The socket is untouched: still the application's TCP socket.
    int type = 0;
    socklen_t tlen = sizeof type;
    ASSERT_EQ(getsockopt(s.get(), SOL_SOCKET, SO_TYPE, &type, &tlen), 0);
    EXPECT_EQ(type, SOCK_STREAM);
    // With room for it, the same call succeeds.
    sockaddr_storage big = dst;
    ASSERT_EQ(socks5udp_associate(s.get(), sa(big), sizeof big, sa(svr), svrlen), 0) << std::strerror(errno);
    EXPECT_EQ(big.ss_family, AF_INET6);
}

}  // namespace
