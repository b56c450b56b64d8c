// s5socksify(1): unmodified programs from Debian -- dig, socat, Python's
// socket module -- run under libs5socksify.so against a real broker on a
// private bus and a real danted, talking to a UDP service on loopback that
// records who it heard (tests/tools/udp_witness.py). A datagram came
// through the relay when its source port at the service is one of danted's
// UDP sockets; a destination routed nowhere must instead be reached from
// the program's own socket.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

using namespace s5test;
using namespace std::chrono_literals;

const std::string kTools = std::string(TEST_SOURCE_DIR) + "/tools";

// A udp_witness.py on `addresses`: its port and the sources it heard.
class Witness {
public:
    Witness(const TempDir& dir, const std::vector<pid_t>& relay_pgids, const std::vector<std::string>& addresses,
            bool dns = false, uint16_t port = 0) {
        static int n = 0;
        log_ = dir.file("witness" + std::to_string(++n) + ".log");
        std::string out = log_ + ".out";
        std::vector<std::string> argv{"/usr/bin/python3", kTools + "/udp_witness.py", "--log", log_, "--port",
                                      std::to_string(port)};
        for (pid_t g : relay_pgids) argv.insert(argv.end(), {"--relay-pgid", std::to_string(g)});
        if (dns) argv.push_back("--dns");
        argv.insert(argv.end(), addresses.begin(), addresses.end());
        proc_ = std::make_unique<Process>(Process::Options{argv, {}, out, false, 0});
        std::string line;
        if (!eventually([&] { return (line = read_file(out)).find("ready port=") != std::string::npos; }, 10s))
            throw std::runtime_error("udp_witness did not start: " + line);
        port_ = static_cast<uint16_t>(std::stoi(line.substr(line.find("port=") + 5)));
    }
    uint16_t port() const { return port_; }
    struct Heard {
        uint16_t port = 0;
        pid_t relay = 0;          // the danted (process group) whose socket sent it; 0: none
        bool via_relay = false;
    };
    // The datagrams heard so far.
    std::vector<Heard> sources() const {
        std::vector<Heard> v;
        std::istringstream in(read_file(log_));
        std::string ip;
        unsigned port = 0, len = 0;
        pid_t who = 0;
        while (in >> ip >> port >> len >> who) v.push_back({static_cast<uint16_t>(port), who, who != 0});
        return v;
    }

private:
    std::string log_;
    uint16_t port_ = 0;
    std::unique_ptr<Process> proc_;
};

struct Env {
    TempDir dir;
    PrivateBus bus{dir};
    Danted danted{dir};                                  // 127.0.0.1 and ::1, no auth
    Witness echo{dir, {danted.pid()}, {"127.0.0.1", "::1"}};
    Witness dns{dir, {danted.pid()}, {"127.0.0.1", "::1"}, true};
    Witness unrouted{dir, {danted.pid()}, {"127.0.0.3"}, false, echo.port()};   // no route: reached directly
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;

    Env() {
        std::string c = R"({"servers": [)" + server_json("v4", "127.0.0.1", danted.port()) + "," +
                        server_json("v6", "::1", danted.port()) +
                        R"(], "pool": {"min_idle": 2},
                "routes": [{"destination": "127.0.0.1/32", "servers": ["v4"]},
                           {"destination": "::1/128", "servers": ["v6"]}]})";
        broker = std::make_unique<Broker>(dir, bus, c);
        if (!broker->start()) throw std::runtime_error("s5brokerd did not become ready:\n" + broker->log());
        client = std::make_unique<BusClient>(bus);
    }
};

Env* env = nullptr;

struct Outcome {
    int status = -1;     // exit status, -1: killed or timed out
    std::string output;  // stdout and stderr
};

// The environment of a program under s5socksify (the build's launcher and
// library) with `bus` as the system bus.
std::vector<std::string> socksify_env(const PrivateBus& bus) {
    std::vector<std::string> e{"S5SOCKSIFY_LIBRARY=" S5SOCKSIFY_LIBRARY, "DBUS_SYSTEM_BUS_ADDRESS=" + bus.address(),
                               "S5SOCKSIFY_DEBUG=1"};
#ifdef ASAN_RUNTIME
    // A sanitizer build's shim needs its runtime first in the process.
    e.push_back("LD_PRELOAD=" ASAN_RUNTIME);
    e.push_back("ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0");
#endif
    return e;
}

std::vector<std::string> under_socksify(std::vector<std::string> argv) {
    argv.insert(argv.begin(), S5SOCKSIFY_PATH);
    return argv;
}

// Runs `argv` under s5socksify on the suite's bus; waits for its end.
Outcome socksified(std::vector<std::string> argv, std::chrono::milliseconds timeout = 20s) {
    static int n = 0;
    const std::string out = env->dir.file("run" + std::to_string(++n) + ".out");
    Process p(Process::Options{under_socksify(std::move(argv)), socksify_env(env->bus), out, false, 0});
    Outcome r;
    auto st = p.wait(timeout);
    if (!st) p.stop(SIGKILL);
    else if (WIFEXITED(*st)) r.status = WEXITSTATUS(*st);
    r.output = read_file(out);
    return r;
}

// Every source `w` heard since `before` is one of danted's UDP sockets.
::testing::AssertionResult came_through_danted(const Witness& w, size_t before) {
    auto s = w.sources();
    if (s.size() <= before) return ::testing::AssertionFailure() << "the service heard nothing";
    for (size_t i = before; i < s.size(); ++i)
        if (!s[i].via_relay)
            return ::testing::AssertionFailure() << "source port " << s[i].port << " is not danted's";
    return ::testing::AssertionSuccess();
}

class Socksify : public ::testing::Test {
protected:
    static void SetUpTestSuite() { env = new Env; }
    static void TearDownTestSuite() {
        delete env;
        env = nullptr;
    }
    void TearDown() override {
        // A program's leases end with it.
        EXPECT_TRUE(eventually([] { return env->client->lease_count() == 0; }))
            << "leases left: " << env->client->lease_count();
        if (HasFailure()) std::cerr << "--- s5brokerd log ---\n" << env->broker->log();
    }
    Outcome python(const std::string& mode, const std::string& host, uint16_t port, const std::string& payload,
               std::vector<std::string> more = {}) {
        std::vector<std::string> argv{"/usr/bin/python3", kTools + "/udp_client.py", mode, host,
                                      std::to_string(port), payload};
        argv.insert(argv.end(), more.begin(), more.end());
        return socksified(argv);
    }
};

TEST_F(Socksify, PythonSendtoRecvfromGoesThroughTheRelay) {
    const size_t before = env->echo.sources().size();
    auto r = python("sendto", "127.0.0.1", env->echo.port(), "hello-sendto");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("hello-sendto\nfrom 127.0.0.1 " + std::to_string(env->echo.port())), std::string::npos)
        << r.output;
    EXPECT_TRUE(came_through_danted(env->echo, before));
}

TEST_F(Socksify, PythonConnectSendRecvSeesTheRealPeer) {
    const size_t before = env->echo.sources().size();
    auto r = python("connect", "127.0.0.1", env->echo.port(), "hello-connect");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("hello-connect\npeer 127.0.0.1 " + std::to_string(env->echo.port())), std::string::npos)
        << r.output;
    EXPECT_TRUE(came_through_danted(env->echo, before));
}

TEST_F(Socksify, Ipv6GoesThroughTheRelayToo) {
    const size_t before = env->echo.sources().size();
    auto r = python("sendto", "::1", env->echo.port(), "hello-v6");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("hello-v6\nfrom ::1 " + std::to_string(env->echo.port())), std::string::npos) << r.output;
    EXPECT_TRUE(came_through_danted(env->echo, before));
}

TEST_F(Socksify, NonBlockingSocketIsWokenByTheReply) {
    const size_t before = env->echo.sources().size();
    auto r = python("nonblock", "127.0.0.1", env->echo.port(), "hello-poll");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("hello-poll\n"), std::string::npos) << r.output;
    EXPECT_TRUE(came_through_danted(env->echo, before));
}

TEST_F(Socksify, RecvmsgKeepsTheControlMessagesAskedFor) {
    for (const std::string host : {"127.0.0.1", "::1"}) {
        const size_t before = env->echo.sources().size();
        auto r = python("recvmsg", host, env->echo.port(), "hello-cmsg");
        ASSERT_EQ(r.status, 0) << r.output;
        EXPECT_NE(r.output.find("hello-cmsg\nfrom " + host + " " + std::to_string(env->echo.port()) + "\ncmsg 1"),
                  std::string::npos)
            << r.output;
        EXPECT_TRUE(came_through_danted(env->echo, before));
    }
}

TEST_F(Socksify, ForkedChildAndDupKeepTheLease) {
    const size_t before = env->echo.sources().size();
    auto r = python("fork", "127.0.0.1", env->echo.port(), "hello-fork");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("hello-fork-child\n"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("hello-fork-dup\n"), std::string::npos) << r.output;
    EXPECT_EQ(env->echo.sources().size(), before + 3);
    EXPECT_TRUE(came_through_danted(env->echo, before));
}

TEST_F(Socksify, UnroutedDestinationGoesDirectOnTheSameSocket) {
    const size_t before = env->echo.sources().size();
    const size_t before_direct = env->unrouted.sources().size();
    const std::string port = std::to_string(env->echo.port());
    auto r = python("mixed", "127.0.0.1", env->echo.port(), "hello-mixed", {"127.0.0.3"});
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("hello-mixed\nfrom 127.0.0.1 " + port + "\n"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("hello-mixed\nfrom 127.0.0.3 " + port + "\n"), std::string::npos) << r.output;
    EXPECT_TRUE(came_through_danted(env->echo, before));
    auto direct = env->unrouted.sources();
    ASSERT_EQ(direct.size(), before_direct + 1);
    EXPECT_FALSE(direct.back().via_relay) << "went through danted";
}

TEST_F(Socksify, WithoutABrokerTheSendFailsClosed) {
    const size_t before = env->echo.sources().size();
    TempDir other;
    PrivateBus empty(other);   // a system bus with no broker on it
    const std::string port = std::to_string(env->echo.port());
    Process p(Process::Options{
        under_socksify({"/usr/bin/python3", kTools + "/udp_client.py", "sendto", "127.0.0.1", port, "hello-nobroker"}),
        socksify_env(empty), other.file("out"), false, 0});
    auto st = p.wait(20s);
    ASSERT_TRUE(st);
    EXPECT_EQ(WEXITSTATUS(*st), 1);
    const std::string out = read_file(other.file("out"));
    EXPECT_NE(out.find("error " + std::to_string(ECONNREFUSED)), std::string::npos) << out;
    EXPECT_NE(out.find("s5socksify: UDP to 127.0.0.1:" + port + " not sent"), std::string::npos) << out;
    EXPECT_EQ(env->echo.sources().size(), before) << "a datagram left unproxied";
}

TEST_F(Socksify, ThreadsOnOwnAndSharedSockets) {
    const size_t before = env->echo.sources().size();
    auto r = python("threads", "127.0.0.1", env->echo.port(), "hello-threads");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("threads ok"), std::string::npos) << r.output;
    EXPECT_EQ(env->echo.sources().size(), before + 8 * 20 + 4 * 20);
    EXPECT_TRUE(came_through_danted(env->echo, before));
}

// sendmmsg and recvmmsg, from two threads, IPv4 and IPv6.
TEST_F(Socksify, SendmmsgAndRecvmmsg) {
    for (const std::string host : {"127.0.0.1", "::1"}) {
        const size_t before = env->echo.sources().size();
        auto r = socksified({MMSG_CLIENT_PATH, host, std::to_string(env->echo.port()), "16"});
        ASSERT_EQ(r.status, 0) << r.output;
        EXPECT_NE(r.output.find("mmsg-0-15 from " + host + " " + std::to_string(env->echo.port())), std::string::npos)
            << r.output;
        EXPECT_NE(r.output.find("mmsg-1-0 from " + host), std::string::npos) << r.output;
        // Each thread's 16 went out in one socks5udp_sendmmsg, not one by one.
        EXPECT_NE(r.output.find("sendmmsg: 16 of 16 datagrams in one batch"), std::string::npos) << r.output;
        EXPECT_EQ(env->echo.sources().size(), before + 32);
        EXPECT_TRUE(came_through_danted(env->echo, before));
    }
}

TEST_F(Socksify, Socat) {
    const size_t before = env->echo.sources().size();
    auto r = socksified({"/bin/sh", "-c",
                         "printf hello-socat | socat -t 1 - UDP:127.0.0.1:" + std::to_string(env->echo.port())});
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("hello-socat"), std::string::npos) << r.output;
    EXPECT_TRUE(came_through_danted(env->echo, before));
}

TEST_F(Socksify, Dig) {
    for (const std::string host : {"127.0.0.1", "::1"}) {
        const size_t before = env->dns.sources().size();
        auto r = socksified({"/usr/bin/dig", "@" + host, "-p", std::to_string(env->dns.port()), "+tries=1", "+time=5",
                             "+short", "www.example.test", "A"});
        ASSERT_EQ(r.status, 0) << r.output;
        EXPECT_NE(r.output.find("192.0.2.7"), std::string::npos) << r.output;
        EXPECT_TRUE(came_through_danted(env->dns, before));
    }
}

// The lease's association dies with its danted; the broker moves the lease
// to the route's other server, and the program's next round trip on the
// same socket goes through that one, with nothing for it to do.
TEST(SocksifyRenewal, ALeaseMovedToAnotherServerIsFollowed) {
    TempDir dir;
    PrivateBus bus(dir);
    Danted a(dir), b(dir);
    Witness echo(dir, {a.pid(), b.pid()}, {"127.0.0.1"});
    Broker broker(dir, bus,
                  R"({"servers": [)" + server_json("a", "127.0.0.1", a.port()) + "," +
                      server_json("b", "127.0.0.1", b.port()) +
                      R"(], "pool": {"min_idle": 1},
                          "routes": [{"destination": "127.0.0.1/32", "servers": ["a", "b"]}]})");
    ASSERT_TRUE(broker.start()) << broker.log();
    BusClient::SignalLog signals(bus);

    const std::string out = dir.file("renew.out");
    Process p(Process::Options{under_socksify({"/usr/bin/python3", kTools + "/udp_client.py", "renew", "127.0.0.1",
                                               std::to_string(echo.port()), "hello-renew"}),
                               socksify_env(bus), out, false, 0});
    ASSERT_TRUE(eventually([&] { return read_file(out).find("waiting") != std::string::npos; }, 20s)) << read_file(out);
    auto heard = echo.sources();
    ASSERT_EQ(heard.size(), 1u);
    ASSERT_TRUE(heard[0].via_relay);
    Danted& first = heard[0].relay == a.pid() ? a : b;
    Danted& second = &first == &a ? b : a;

    first.kill();   // the whole process group: its relays end too
    ASSERT_TRUE(eventually(
        [&] {
            for (const auto& s : signals.snapshot())
                if (s.member == "Renewed" && s.generation == 2) return true;
            return false;
        },
        20s))
        << broker.log();
    ::kill(p.pid(), SIGUSR1);
    auto st = p.wait(20s);
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << read_file(out);
    EXPECT_NE(read_file(out).find("hello-renew-2\nfrom 127.0.0.1 " + std::to_string(echo.port())), std::string::npos)
        << read_file(out);
    heard = echo.sources();
    ASSERT_EQ(heard.size(), 2u);
    EXPECT_EQ(heard[1].relay, second.pid()) << "the second datagram did not come through the other server";
}

}  // namespace
