// Hostile input and faults: a scripted SOCKS server that breaks the protocol
// in the ways danted never does, clients killed while holding leases, a
// broker short of file descriptors, and the bus daemon or the broker going
// away under running clients. In each, only what was attacked fails, with
// the documented error, and everything else keeps working.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sdbus-c++/sdbus-c++.h>
#include <sstream>
#include <thread>

#include "harness.hpp"

namespace {

using namespace s5test;
using Clock = std::chrono::steady_clock;
using Step = FakeSocksServer::Step;
using After = FakeSocksServer::After;

const std::string kMethodNone("\x05\x00", 2);

// VER 5, REP 0, RSV, ATYP 1, 127.0.0.1, `port`.
std::string reply_with_relay(uint16_t port) {
    std::string r("\x05\x00\x00\x01\x7f\x00\x00\x01", 8);
    r += static_cast<char>(port >> 8);
    r += static_cast<char>(port & 0xff);
    return r;
}
// A port of 127.0.0.1 where a UDP socket of this process lives for the whole
// run: the broker's probe of an idle relay (association.hpp) gets no ICMP
// error from it.
uint16_t live_udp_port() {
    static const uint16_t port = [] {
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
            getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0)
            std::abort();
        return ntohs(a.sin_port);  // fd stays open
    }();
    return port;
}
const std::string kReplyOk = reply_with_relay(live_udp_port());


int open_fds(pid_t pid) {
    int n = 0;
    for ([[maybe_unused]] const auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
        ++n;
    return n;
}

// "0:/dev/null 1:pipe:[..] ..." for a failure message.
std::string fd_list(pid_t pid) {
    std::string out;
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
        std::error_code ec;
        out += e.path().filename().string() + ":" + std::filesystem::read_symlink(e.path(), ec).string() + " ";
    }
    int tasks = 0;
    for ([[maybe_unused]] const auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) ++tasks;
    out += "threads:" + std::to_string(tasks);
    return out;
}

struct Outcome {
    int rc = 0, err = 0, s5err = 0;
    double seconds = 0;
    int fd = -1;
};

class Abuse : public ::testing::Test {
protected:
    TempDir dir;
    PrivateBus bus{dir};
    UdpEcho echo{dir};
    Danted good{dir};
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;
    std::vector<int> fds;

    ~Abuse() override {
        for (int fd : fds) ::close(fd);
    }

    void start_broker(const std::vector<std::string>& extra_servers = {}, unsigned long nofile = 0,
                      unsigned min_idle = 0) {
        std::ostringstream c;
        c << R"({"servers": [)" << server_json("good", "127.0.0.1", good.port());
        for (const auto& s : extra_servers) c << "," << s;
        c << R"(], "pool": {"min_idle": )" << min_idle << R"(, "setup_timeout_s": 3}, "lease_grace_s": 5})";
        broker = std::make_unique<Broker>(dir, bus, c.str());
        if (nofile) broker->set_nofile(nofile);
        ASSERT_TRUE(broker->start()) << broker->log();
        client = std::make_unique<BusClient>(bus);
    }

    void TearDown() override {
        // The broker's fate first: CI shows the head of long output.
        if (HasFailure() && broker)
            std::cerr << "--- s5brokerd " << broker->process().describe() << "; its log ---\n" << broker->log();
    }

    sockaddr_storage target() { return sockaddr_of("127.0.0.1", echo.port()); }

    Outcome associate_with(uint16_t server_port) {
        Outcome o;
        o.fd = ::socket(AF_INET, SOCK_STREAM, 0);
        fds.push_back(o.fd);
        auto svr = sockaddr_of("127.0.0.1", server_port);
        auto dst = target();
        auto t0 = Clock::now();
        o.rc = socks5udp_associate(o.fd, sa(dst), sizeof dst, sa(svr), len_of(svr));
        o.err = errno;
        o.s5err = socks5_errno;
        o.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        if (o.rc == 0) {
            // Keep the rendezvous where echo_ok() finds it.
            rendezvous_[o.fd] = dst;
        }
        return o;
    }

    bool echo_ok(int lease_fd, const std::string& msg) {
        auto r = rendezvous_.at(lease_fd);
        return echo_through(lease_fd, r, "127.0.0.1", echo.port(), msg) == msg;
    }

    // A lease on the good server, then the hostile one, then both checks:
    // the hostile request failed as documented, the good lease still works,
    // and a new request on the good server still works.
    Outcome against(std::vector<Step> script, After after) {
        Outcome bystander = associate_with(good.port());
        EXPECT_EQ(bystander.rc, 0) << std::strerror(bystander.err);
        FakeSocksServer fake(std::move(script), after);
        // The fake server is configured on a restart-free path: reload.
        write_file(broker->config_path(),
                   R"({"servers": [)" + server_json("good", "127.0.0.1", good.port()) + "," +
                       server_json("fake", "127.0.0.1", fake.port()) +
                       R"(], "pool": {"min_idle": 0, "setup_timeout_s": 3}, "lease_grace_s": 5})");
        client->manager()->callMethod("Reload").onInterface("org.s5broker.Broker1.Manager");
        Outcome o = associate_with(fake.port());
        EXPECT_TRUE(echo_ok(bystander.fd, "bystander")) << "a lease on another server was disturbed";
        Outcome fresh = associate_with(good.port());
        EXPECT_EQ(fresh.rc, 0) << "the broker stopped serving: " << std::strerror(fresh.err);
        EXPECT_TRUE(broker->process().running());
        return o;
    }

    // Adds the fake server to the running broker's configuration (reload).
    void add_server(const FakeSocksServer& fake) {
        write_file(broker->config_path(),
                   R"({"servers": [)" + server_json("good", "127.0.0.1", good.port()) + "," +
                       server_json("fake", "127.0.0.1", fake.port()) +
                       R"(], "pool": {"min_idle": 0, "setup_timeout_s": 3}, "lease_grace_s": 5})");
        client->manager()->callMethod("Reload").onInterface("org.s5broker.Broker1.Manager");
    }

    // A non-blocking socks5udp_associate to `server_port`, then the second
    // call once the lease is readable (connect(2)-style): its outcome.
    Outcome associate_nonblocking(uint16_t server_port) {
        Outcome o;
        o.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        fds.push_back(o.fd);
        auto svr = sockaddr_of("127.0.0.1", server_port);
        auto dst = target();
        o.rc = socks5udp_associate(o.fd, sa(dst), sizeof dst, sa(svr), len_of(svr));
        o.err = errno;
        if (o.rc == 0 || o.err != EINPROGRESS) return o;
        pollfd p{o.fd, POLLIN, 0};
        if (::poll(&p, 1, 15000) != 1) return o;
        o.rc = socks5udp_associate(o.fd, sa(dst), sizeof dst, sa(svr), len_of(svr));
        o.err = errno;
        o.s5err = socks5_errno;
        return o;
    }

    sockaddr_storage rendezvous_of(int lease_fd) const { return rendezvous_.at(lease_fd); }

private:
    std::map<int, sockaddr_storage> rendezvous_;
};

TEST_F(Abuse, WrongVersionInMethodReply) {
    start_broker();
    auto o = against({{std::string("\x04\x00", 2)}}, After::Close);
    EXPECT_EQ(o.rc, -1);
    EXPECT_EQ(o.err, EPROTO);
    EXPECT_EQ(o.s5err, S5_EPROTO);
}

TEST_F(Abuse, MethodWeDidNotOffer) {
    start_broker();
    auto o = against({{std::string("\x05\x07", 2)}}, After::Close);
    EXPECT_EQ(o.rc, -1);
    EXPECT_EQ(o.err, EPROTO);
}

TEST_F(Abuse, UnassignedReplyCode) {
    start_broker();
    std::string rep = kReplyOk;
    rep[1] = '\xff';
    auto o = against({{kMethodNone}, {rep}}, After::Close);
    EXPECT_EQ(o.rc, -1);
    EXPECT_EQ(o.err, ECONNREFUSED);
    EXPECT_EQ(o.s5err, S5_ESRVFAIL);
}

TEST_F(Abuse, EveryRepCodeMapsAsDocumented) {
    start_broker();
    const std::pair<int, int> want[] = {{ECONNREFUSED, S5_ESRVFAIL},   {EACCES, S5_EPERM},
                                        {ENETUNREACH, S5_ENETUNREACH}, {EHOSTUNREACH, S5_EHOSTUNREACH},
                                        {ECONNREFUSED, S5_ECONNREFUSED}, {ETIMEDOUT, S5_ETIMEDOUT},
                                        {EOPNOTSUPP, S5_EOPNOTSUPP},   {EAFNOSUPPORT, S5_EAFNOSUPPORT}};
    for (int rep = 1; rep <= 8; ++rep) {
        std::string r = kReplyOk;
        r[1] = static_cast<char>(rep);
        auto o = against({{kMethodNone}, {r}}, After::Close);
        EXPECT_EQ(o.rc, -1) << rep;
        EXPECT_EQ(o.err, want[rep - 1].first) << "REP " << rep;
        EXPECT_EQ(o.s5err, want[rep - 1].second) << "REP " << rep;
    }
}

TEST_F(Abuse, RelayGivenAsA255ByteHostName) {
    start_broker();
    std::string rep("\x05\x00\x00\x03\xff", 5);
    rep += std::string(255, 'a') + std::string("\x00\x07", 2);
    auto o = against({{kMethodNone}, {rep}}, After::Close);
    EXPECT_EQ(o.rc, -1);
    EXPECT_EQ(o.err, EPROTO);
}

TEST_F(Abuse, ReplyCutInTheMiddleThenClosed) {
    start_broker();
    auto o = against({{kMethodNone}, {kReplyOk.substr(0, 5)}}, After::Close);
    EXPECT_EQ(o.rc, -1);
    // Not a malformed reply (EPROTO): the server went away mid-handshake,
    // as a killed one does. That is a server failure.
    EXPECT_EQ(o.err, ECONNREFUSED);
    EXPECT_EQ(o.s5err, S5_ESRVFAIL);
    EXPECT_LT(o.seconds, 2.0);
}

TEST_F(Abuse, ReplyTrickledOneBytePerSecondTimesOut) {
    start_broker();
    std::vector<Step> script{{kMethodNone}};
    for (char c : kReplyOk) script.push_back({std::string(1, c), 1000ms});
    auto o = against(script, After::Close);
    EXPECT_EQ(o.rc, -1);
    EXPECT_EQ(o.err, ETIMEDOUT);
    // At the setup deadline (pool.setup_timeout_s, 3 s here), not before
    // and not much after: the bus adds little on top.
    EXPECT_GT(o.seconds, 2.5);
    EXPECT_LT(o.seconds, 6.0);
}

TEST_F(Abuse, EndlessStreamAfterTheReplyEndsOnlyThatAssociation) {
    start_broker();
    auto o = against({{kMethodNone}, {kReplyOk}}, After::Stream);
    // The association was made; the broker then dropped the chatterbox
    // (and backs off from it) without the loop spinning.
    EXPECT_EQ(o.rc, 0) << std::strerror(o.err);
    double cpu0 = cpu_seconds(broker->process().pid());
    std::this_thread::sleep_for(2s);
    double cpu = cpu_seconds(broker->process().pid()) - cpu0;
    EXPECT_LT(cpu, 0.5) << "broker busy while a server streams at it";
    EXPECT_NE(broker->log().find("unexpected bytes"), std::string::npos) << broker->log();
}

// A server that answers every UDP ASSOCIATE with success and hangs up at
// once. The broker used to crash here (a waiting request was handed the
// null that take() returns when every "idle" association is already dead)
// and to reconnect in a busy loop (16,287 associations in 10 s): every good
// handshake reset the backoff. An association that dies young is a failure
// of its server now.
TEST_F(Abuse, ServerHangingUpAfterEveryGoodReplyIsBackedOffAndCrashesNothing) {
    start_broker();
    Outcome bystander = associate_with(good.port());
    ASSERT_EQ(bystander.rc, 0) << std::strerror(bystander.err);
    FakeSocksServer fake({{kMethodNone}, {kReplyOk}}, After::Close);
    add_server(fake);
    const auto t0 = Clock::now();
    // Non-blocking requests and a blocking one while every association dies.
    for (int i = 0; i < 5; ++i) {
        Outcome o = associate_nonblocking(fake.port());
        EXPECT_TRUE(o.rc == 0 || o.err != EPROTO) << "rc " << o.rc << ": " << std::strerror(o.err);
        ASSERT_TRUE(broker->process().running()) << broker->process().describe();
    }
    Outcome blocking = associate_with(fake.port());
    EXPECT_TRUE(blocking.rc == 0 || blocking.err != EPROTO) << "a pending-shaped reply to a blocking call";
    ASSERT_TRUE(broker->process().running()) << broker->process().describe();
    // Backoff: 100 ms doubling per young death, so a handful of attempts.
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    std::this_thread::sleep_until(t0 + 4s);
    const int attempts = fake.connections();
    std::cerr << "[ measure ] hang-up server: " << attempts << " connections in 4 s (requests took " << seconds
              << " s)\n";
    EXPECT_LE(attempts, 16) << "reconnecting in a loop";
    EXPECT_TRUE(echo_ok(bystander.fd, "bystander"));
    EXPECT_NE(broker->log().find("ms after it was made"), std::string::npos) << broker->log();
}

// A server that sends garbage after each good reply: dropped as EPROTO, and
// (before) reconnected 9 times a second forever, each good handshake
// resetting the backoff.
TEST_F(Abuse, ServerStreamingAfterEveryGoodReplyIsBackedOff) {
    start_broker();
    FakeSocksServer fake({{kMethodNone}, {kReplyOk}}, After::Stream);
    add_server(fake);
    Outcome o = associate_with(fake.port());
    EXPECT_EQ(o.rc, 0) << std::strerror(o.err);
    // The lease's renewals keep asking this server for 5 s (lease_grace_s).
    const auto t0 = Clock::now();
    const int before = fake.connections();
    std::this_thread::sleep_until(t0 + 4s);
    const int attempts = fake.connections() - before;
    std::cerr << "[ measure ] streaming server: " << attempts << " reconnects in 4 s\n";
    EXPECT_LE(attempts, 8) << "reconnecting in a loop";
    EXPECT_TRUE(broker->process().running());
}

// 210 requests to a server that accepts and never answers, then the callers
// leave. The broker used to start one connect per request, never cancel
// them, and keep the surplus for max_idle_age_s. Now at most kMaxConnecting
// (32) are in flight per server, and those nobody waits for are closed.
TEST_F(Abuse, ABurstWhoseCallerLeavesCostsBoundedConnectsAndLeavesNothing) {
    start_broker();
    FakeSocksServer fake({}, After::Silent);
    add_server(fake);
    const pid_t pid = broker->process().pid();
    const std::vector<uint8_t> lo{127, 0, 0, 1};
    // sdbus-c++ makes a pseudo connection (two eventfds) the first time the
    // broker reads a variant: do that before counting descriptors.
    try {
        client->manager()
            ->callMethod("Associate")
            .onInterface("org.s5broker.Broker1.Manager")
            .withArguments(lo, uint16_t{7}, lo, good.port(),
                           std::map<std::string, sdbus::Variant>{{"timeout_ms", sdbus::Variant(uint32_t{0})}});
        ADD_FAILURE() << "timeout_ms 0 accepted";
    } catch (const sdbus::Error&) {
    }
    const int fds_before = open_fds(pid);
    {
        // 14 callers of 15 requests each: one bus connection may have at
        // most Manager::kMaxUnreadPerOwner (16) waiting or unread.
        std::vector<std::unique_ptr<sdbus::IConnection>> conns;
        std::vector<std::unique_ptr<sdbus::IProxy>> proxies;
        const std::map<std::string, sdbus::Variant> opts{{"timeout_ms", sdbus::Variant(uint32_t{60000})}};
        for (int c = 0; c < 14; ++c) {
            conns.push_back(sdbus::createSessionBusConnectionWithAddress(bus.address()));
            conns.back()->enterEventLoopAsync();
            proxies.push_back(sdbus::createProxy(*conns.back(), "org.s5broker.Broker1", "/org/s5broker/Broker1"));
            for (int i = 0; i < 15; ++i)
                proxies.back()
                    ->callMethodAsync("Associate")
                    .onInterface("org.s5broker.Broker1.Manager")
                    .withArguments(lo, uint16_t{7}, lo, fake.port(), opts)
                    .uponReplyInvoke([](const sdbus::Error*) {});
        }
        ASSERT_TRUE(eventually([&] { return fake.connections() >= 32; })) << fake.connections();
        // Give it the chance to start more: it must not.
        std::this_thread::sleep_for(500ms);
        std::cerr << "[ measure ] burst of 210: " << fake.connections() << " connects in flight\n";
        EXPECT_LE(fake.connections(), 32);
        for (auto& c : conns) c->leaveEventLoop();
        proxies.clear();
    }   // the callers leave: their requests are cancelled, and so are their setups
    EXPECT_TRUE(eventually([&] { return open_fds(pid) <= fds_before; }, 5s))
        << open_fds(pid) << " descriptors, " << fds_before << " before the burst: " << fd_list(pid);
    EXPECT_TRUE(broker->process().running());
}

// A configured server may not aim every client's datagrams anywhere: a relay
// that is multicast, broadcast, unspecified, or of another family than the
// server is refused as a protocol error of that association, and counted.
TEST_F(Abuse, RelaysAimedElsewhereAreRefused) {
    start_broker();
    struct Bad {
        const char* what;
        std::string reply;
    };
    const std::vector<Bad> bad{
        {"multicast", std::string("\x05\x00\x00\x01\xe0\x00\x00\xfb\x9c\x40", 10)},
        {"broadcast", std::string("\x05\x00\x00\x01\xff\xff\xff\xff\x9c\x40", 10)},
        {"IPv6 for an IPv4 server",
         std::string("\x05\x00\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x9c\x40", 22)},
    };
    uint64_t refused = 0;
    for (const auto& b : bad) {
        auto o = against({{kMethodNone}, {b.reply}}, After::Silent);
        EXPECT_EQ(o.rc, -1) << b.what;
        EXPECT_EQ(o.err, EPROTO) << b.what;
        EXPECT_EQ(o.s5err, S5_EPROTO) << b.what;
        const uint64_t now = client->statistics()["relays_refused"];
        EXPECT_GT(now, refused) << b.what;
        refused = now;
    }
    EXPECT_NE(broker->log().find("(relay_address_override can name the relay)"), std::string::npos) << broker->log();
}

// A server whose UDP relay is gone while its control connections stay up
// (issue 10, item 11): each idle association's relay is probed through its
// claim socket, "port unreachable" ends it, and the server is suspect.
TEST_F(Abuse, AnAssociationWhoseRelayIsDeadIsNeverHandedOut) {
    // A port nobody holds: the kernel answers ICMP port unreachable.
    const uint16_t dead = free_udp_port();
    FakeSocksServer fake({{kMethodNone}, {reply_with_relay(dead)}}, After::Silent);
    start_broker({server_json("deadrelay", "127.0.0.1", fake.port())}, 0, 1);
    auto server = client->object("/org/s5broker/Broker1/server/deadrelay");
    auto prop = [&](const char* name) {
        return server->getProperty(name).onInterface("org.s5broker.Broker1.Server");
    };
    ASSERT_TRUE(eventually([&] { return client->statistics()["relays_unreachable"] >= 1; }, 10s))
        << broker->log();
    EXPECT_TRUE(eventually([&] { return prop("State").get<std::string>() == "down"; }));
    EXPECT_NE(prop("LastError").get<std::string>().find("is unreachable"), std::string::npos)
        << prop("LastError").get<std::string>();
    // A request now is not given one of those (whatever it gets, the
    // relay it names answers).
    auto o = associate_with(fake.port());
    if (o.rc == 0) {
        ADD_FAILURE() << "a lease on relay port " << dead << " was handed out";
    } else {
        EXPECT_TRUE(o.err == ECONNREFUSED || o.err == ETIMEDOUT || o.err == EHOSTUNREACH) << std::strerror(o.err);
    }
    // The healthy server is untouched.
    auto g = associate_with(good.port());
    ASSERT_EQ(g.rc, 0) << std::strerror(g.err);
    EXPECT_TRUE(echo_ok(g.fd, "still here"));
}

TEST_F(Abuse, CallsOnALeaseObjectThatIsGone) {
    start_broker();
    auto o = associate_with(good.port());
    ASSERT_EQ(o.rc, 0);
    auto path = client->leases().at(0);
    ::close(o.fd);
    fds.erase(std::find(fds.begin(), fds.end(), o.fd));
    ASSERT_TRUE(eventually([&] { return client->lease_count() == 0; }));
    try {
        client->object(path)->getProperty("State").onInterface("org.s5broker.Broker1.Lease").get<std::string>();
        ADD_FAILURE() << "a released lease still answers";
    } catch (const sdbus::Error& e) {
        EXPECT_FALSE(e.getName().empty());
    }
    EXPECT_EQ(associate_with(good.port()).rc, 0);
}

TEST_F(Abuse, TwoHundredClientsKilledWhileHoldingLeases) {
    start_broker();
    // What the broker holds with no lease; with min_idle 0 nothing else
    // comes and goes, but take the smallest of a few looks to be sure.
    int baseline = open_fds(broker->process().pid());
    for (int i = 0; i < 5; ++i) {
        std::this_thread::sleep_for(20ms);
        baseline = std::min(baseline, open_fds(broker->process().pid()));
    }
    constexpr int kClients = 200;
    std::vector<pid_t> kids;
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    for (int i = 0; i < kClients; ++i) {
        pid_t p = fork();
        ASSERT_GE(p, 0);
        if (p == 0) {
            ::close(ready[0]);
            int s = ::socket(AF_INET, SOCK_STREAM, 0);
            auto svr = sockaddr_of("127.0.0.1", good.port());
            auto dst = target();
            char ok = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), len_of(svr)) == 0 ? 'y' : 'n';
            (void)!write(ready[1], &ok, 1);
            pause();
            _exit(0);
        }
        kids.push_back(p);
    }
    ::close(ready[1]);
    int ok = 0;
    for (int i = 0; i < kClients; ++i) {
        char c;
        if (read(ready[0], &c, 1) == 1 && c == 'y') ++ok;
    }
    ::close(ready[0]);
    EXPECT_EQ(ok, kClients);
    EXPECT_EQ(client->lease_count(), static_cast<uint32_t>(kClients));
    for (pid_t p : kids) ::kill(p, SIGKILL);
    for (pid_t p : kids) waitpid(p, nullptr, 0);
    EXPECT_TRUE(eventually([&] { return client->lease_count() == 0; }, 10s)) << client->lease_count();
    // A leak of one fd per lease would leave 200 more; fewer than the
    // baseline is a transient of the baseline look, not a leak.
    EXPECT_TRUE(eventually([&] { return open_fds(broker->process().pid()) <= baseline; }, 10s))
        << "broker fds: " << open_fds(broker->process().pid()) << ", baseline " << baseline;
}

TEST_F(Abuse, ShortOfFileDescriptorsFailsCleanlyAndRecovers) {
    start_broker({}, 40);
    std::vector<Outcome> got;
    Outcome last;
    for (int i = 0; i < 40; ++i) {
        last = associate_with(good.port());
        if (last.rc != 0) break;
        got.push_back(last);
    }
    ASSERT_NE(last.rc, 0) << "never ran out of descriptors";
    // Whichever descriptor ran out (control connection, lease socket, the
    // reply's copy), the broker's shortage is QuotaExceeded.
    EXPECT_EQ(last.err, ENOSPC) << std::strerror(last.err) << " / " << last.s5err;
    EXPECT_TRUE(broker->process().running());
    // The shortage is the broker's own: the server is not marked down.
    EXPECT_NE(client->object("/org/s5broker/Broker1/server/good")
                  ->getProperty("State")
                  .onInterface("org.s5broker.Broker1.Server")
                  .get<std::string>(),
              "down");
    // Free them: the broker serves again.
    for (auto& o : got) {
        ::close(o.fd);
        fds.erase(std::find(fds.begin(), fds.end(), o.fd));
    }
    EXPECT_TRUE(eventually([&] { return client->lease_count() == 0; }));
    EXPECT_TRUE(eventually([&] { return associate_with(good.port()).rc == 0; }, 5s));
}

// No datagram crosses the bus: when the bus daemon goes away the broker keeps
// every lease and association, reconnects, owns its name again, and serves.
TEST_F(Abuse, BusDaemonRestartedUnderHeldLeases) {
    start_broker();
    auto held = associate_with(good.port());
    ASSERT_EQ(held.rc, 0) << std::strerror(held.err);
    // One UDP socket for every echo: Dante relays only for the port that
    // claimed the association.
    const sockaddr_storage rendezvous = rendezvous_of(held.fd);
    const int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    fds.push_back(u);
    timeval tv{2, 0};
    ASSERT_EQ(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    const auto echo = [&](const std::string& msg) {
        auto t = target();
        if (socks5udp_sendto(u, const_cast<char*>(msg.data()), msg.size(), 0, sa(t), len_of(t),
                             const_cast<sockaddr*>(sa(rendezvous)), len_of(rendezvous)) != 0)
            return false;
        char buf[256];
        sockaddr_storage from{};
        socklen_t flen = sizeof from;
        ssize_t n = socks5udp_recvfrom(u, buf, sizeof buf, 0, sa(from), &flen);
        return n == static_cast<ssize_t>(msg.size()) && std::string(buf, static_cast<size_t>(n)) == msg;
    };
    ASSERT_TRUE(echo("before"));
    const pid_t pid = broker->process().pid();
    bus.process().stop(SIGKILL);
    // Off the bus: the lease still relays.
    EXPECT_TRUE(eventually([&] { return broker->log().find("D-Bus connection lost") != std::string::npos; }))
        << broker->log();
    EXPECT_TRUE(echo("while the bus is gone"));
    EXPECT_TRUE(broker->process().running()) << broker->process().describe();
    bus.restart();
    // Back on the bus: the same broker, its lease still listed and working,
    // and new requests served.
    client = std::make_unique<BusClient>(bus);
    EXPECT_TRUE(eventually([&] {
        try {
            return client->lease_count() == 1;
        } catch (const sdbus::Error&) {
            return false;   // not back yet
        }
    }, 10s)) << broker->log();
    EXPECT_EQ(broker->process().pid(), pid);
    EXPECT_TRUE(echo("after"));
    auto fresh = associate_with(good.port());
    EXPECT_EQ(fresh.rc, 0) << std::strerror(fresh.err);
    EXPECT_NE(broker->log().find("back on the bus"), std::string::npos) << broker->log();
}

TEST_F(Abuse, BrokerRestartedUnderRunningClients) {
    start_broker();
    auto o = associate_with(good.port());
    ASSERT_EQ(o.rc, 0);
    auto rendezvous = sockaddr_of("127.0.0.1", 0);
    // The rendezvous is known to the library; restart the broker.
    ASSERT_TRUE(broker->stop(SIGTERM));
    char b[64];
    pollfd p{o.fd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ssize_t n;
    while ((n = recv(o.fd, b, sizeof b, MSG_DONTWAIT)) > 0) {
    }
    EXPECT_EQ(n, 0) << "lease fd did not see EOF";
    // sendto through the dead lease says so.
    sockaddr_storage cur{};
    EXPECT_EQ(socks5udp_current(o.fd, sa(cur), sizeof cur), -1);
    EXPECT_EQ(errno, ENOTCONN);
    EXPECT_EQ(socks5_errno, S5_ELOST);
    (void)rendezvous;
    start_broker();
    EXPECT_EQ(associate_with(good.port()).rc, 0);
}

}  // namespace

namespace {

// One Associate on the bus from `proxy` (a pooled one: min_idle covers it),
// its time in ms, or a negative value on error.
double timed_bus_associate(sdbus::IProxy& proxy, uint16_t server_port, std::vector<sdbus::UnixFd>& keep) {
    const std::vector<uint8_t> lo{127, 0, 0, 1};
    sdbus::ObjectPath path;
    sdbus::UnixFd fd;
    std::vector<uint8_t> relay;
    uint16_t relay_port = 0;
    const auto t0 = std::chrono::steady_clock::now();
    try {
        proxy.callMethod("Associate")
            .onInterface("org.s5broker.Broker1.Manager")
            .withArguments(lo, uint16_t{7}, lo, server_port, std::map<std::string, sdbus::Variant>{})
            .storeResultsTo(path, fd, relay, relay_port);
    } catch (const sdbus::Error&) {
        return -1;
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    // Read its first event, as libs5client does, so that it is not unread.
    char ev[64];
    (void)::recv(fd.get(), ev, sizeof ev, MSG_DONTWAIT);
    keep.push_back(std::move(fd));
    return ms;
}

double median_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

// A bus connection that stops reading: its replies, each with a lease fd,
// queue in the bus daemon, which stops reading from the broker once one
// destination holds 64 descriptors. The broker grants such a connection at
// most Manager::kMaxUnreadPerOwner (16) leases whose first event is unread;
// past that it answers QuotaExceeded, with no descriptor. Everyone else is
// served as fast as before.
TEST_F(Abuse, AConnectionThatStopsReadingHoldsAtMost16UnreadLeasesAndStallsNobody) {
    start_broker({}, 0, 8);
    ASSERT_TRUE(eventually([&] {
        return client->object("/org/s5broker/Broker1/server/good")
                   ->getProperty("PoolIdle")
                   .onInterface("org.s5broker.Broker1.Server")
                   .get<uint32_t>() >= 8;
    }, 10s));
    auto other_conn = sdbus::createSessionBusConnectionWithAddress(bus.address());
    auto other = sdbus::createProxy(*other_conn, "org.s5broker.Broker1", "/org/s5broker/Broker1");
    std::vector<sdbus::UnixFd> kept;
    std::vector<double> before, during;
    for (int i = 0; i < 30; ++i) before.push_back(timed_bus_associate(*other, good.port(), kept));
    kept.clear();

    // The stuck caller: sends 60 non-blocking Associate and reads nothing
    // (no event loop runs on its connection).
    auto stuck_conn = sdbus::createSessionBusConnectionWithAddress(bus.address());
    auto stuck = sdbus::createProxy(*stuck_conn, "org.s5broker.Broker1", "/org/s5broker/Broker1");
    const std::vector<uint8_t> lo{127, 0, 0, 1};
    int ok = 0, quota = 0, other_errors = 0;
    std::mutex m;
    const std::map<std::string, sdbus::Variant> opts{{"nonblocking", sdbus::Variant(true)}};
    for (int i = 0; i < 60; ++i)
        stuck->callMethodAsync("Associate")
            .onInterface("org.s5broker.Broker1.Manager")
            .withArguments(lo, uint16_t{7}, lo, good.port(), opts)
            .uponReplyInvoke([&](const sdbus::Error* e, sdbus::ObjectPath, sdbus::UnixFd, std::vector<uint8_t>,
                                 uint16_t) {
                std::lock_guard<std::mutex> g(m);
                if (!e) {
                    ++ok;
                } else if (e->getName() == "org.s5broker.Broker1.Error.QuotaExceeded") {
                    ++quota;
                } else {
                    ++other_errors;
                }
            });
    // The broker has answered all 60 (16 leases, the rest refused) when the
    // statistics say so.
    ASSERT_TRUE(eventually([&] { return client->lease_count() >= 16; }, 10s)) << client->lease_count();
    for (int i = 0; i < 30; ++i) during.push_back(timed_bus_associate(*other, good.port(), kept));
    EXPECT_EQ(std::count_if(during.begin(), during.end(), [](double ms) { return ms < 0; }), 0)
        << "another caller was refused while one was stuck";
    std::cerr << "[ measure ] median bus Associate of another caller: " << median_of(before) << " ms alone, "
              << median_of(during) << " ms with a stuck caller holding its 16\n";
    EXPECT_EQ(client->lease_count(), 16u + kept.size()) << "the stuck caller got more than 16 leases";
    kept.clear();

    // Now it reads: 16 leases, 44 refusals.
    stuck_conn->enterEventLoopAsync();
    ASSERT_TRUE(eventually([&] {
        std::lock_guard<std::mutex> g(m);
        return ok + quota + other_errors == 60;
    }, 10s));
    stuck_conn->leaveEventLoop();
    EXPECT_EQ(ok, 16);
    EXPECT_EQ(quota, 44);
    EXPECT_EQ(other_errors, 0);
}
