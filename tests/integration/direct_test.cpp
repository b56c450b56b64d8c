// Direct mode (no broker): socks5udp_associate() makes the association on
// the application's Socket itself, against real danted servers, and the
// datagram calls use it. Bus situations (private bus without a broker, no
// bus at all) are tried in forked children, so each makes its own bus
// connection with its own DBUS_SYSTEM_BUS_ADDRESS.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

#include "harness.hpp"
#include "unique_fd.hpp"

namespace {

using namespace s5test;


struct Env {
    TempDir dir;
    UdpEcho echo{dir};
    Danted plain{dir};                        // socksmethod: none, 127.0.0.1 and ::1
    Danted authd{dir, username_auth()};       // socksmethod: username
};

Env* env = nullptr;


// The project's one owner of a descriptor.
using Fd = s5::UniqueFd;


class Direct : public ::testing::Test {
protected:
    static void SetUpTestSuite() { env = new Env; }
    static void TearDownTestSuite() {
        delete env;
        env = nullptr;
    }
    void SetUp() override {
        setenv("S5CLIENT_MODE", "direct", 1);
        unsetenv("SOCKS5_USERNAME");
        unsetenv("SOCKS5_PASSWORD");
    }
    void TearDown() override {
        unsetenv("S5CLIENT_MODE");
        unsetenv("SOCKS5C_CONFIG");
        unsetenv("SOCKS5_USERNAME");
        unsetenv("SOCKS5_PASSWORD");
        if (HasFailure()) std::cerr << "--- danted (none) ---\n" << env->plain.log() << "--- danted (username) ---\n"
                                    << env->authd.log();
    }

    sockaddr_storage target(const std::string& ip = "127.0.0.1") { return sockaddr_of(ip, env->echo.port()); }
};

struct Result {
    int rc, err, s5err;
};

// socks5udp_associate on a new TCP socket of `family`; `s` receives it.
Result associate(int& s, int family, const std::string& server_ip, uint16_t port, sockaddr_storage& dst,
                 int flags = 0) {
    s = ::socket(family, SOCK_STREAM | flags, 0);
    size_t svrlen = 0;
    auto svr = sockaddr_of(server_ip, port, &svrlen);
    int rc = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), svrlen);
    return {rc, errno, socks5_errno};
}

void round_trip(int family, const std::string& server_ip, uint16_t port, const std::string& target_ip) {
    sockaddr_storage dst = sockaddr_of(target_ip, env->echo.port());
    int s = -1;
    auto r = associate(s, family, server_ip, port, dst);
    Fd guard(s);
    ASSERT_EQ(r.rc, 0) << std::strerror(r.err) << " / " << socks5_strerror(r.s5err);
    EXPECT_EQ(r.s5err, 0);
    // Dst is the relay, on the server's address (in the server's family);
    // Socket is the control connection to the server.
    ASSERT_EQ(dst.ss_family, server_ip.find(':') == std::string::npos ? AF_INET : AF_INET6);
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    EXPECT_EQ(getpeername(s, sa(peer), &plen), 0) << "Socket is not the control connection";
    auto reply = echo_via_library(dst, sockaddr_of(target_ip, env->echo.port()), "direct " + server_ip);
    ASSERT_TRUE(reply.has_value()) << "no echo through the relay";
    EXPECT_EQ(*reply, "direct " + server_ip);
    // socks5udp_current knows the association too.
    sockaddr_storage cur{};
    ASSERT_EQ(socks5udp_current(s, sa(cur), sizeof cur), 0) << std::strerror(errno);
    EXPECT_EQ(std::memcmp(&cur, &dst, len_of(dst)), 0);
    // A second call is connect(2) on a connected socket.
    sockaddr_storage again = sockaddr_of(target_ip, env->echo.port());
    size_t svrlen = 0;
    auto svr = sockaddr_of(server_ip, port, &svrlen);
    EXPECT_EQ(socks5udp_associate(s, sa(again), sizeof again, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EISCONN);
}

TEST_F(Direct, NoAuthIPv4RoundTrip) { round_trip(AF_INET, "127.0.0.1", env->plain.port(), "127.0.0.1"); }

TEST_F(Direct, NoAuthIPv6RoundTrip) { round_trip(AF_INET6, "::1", env->plain.port(), "::1"); }

TEST_F(Direct, UsernameAuthRoundTrip) {
    setenv("SOCKS5_USERNAME", kTestUser, 1);
    setenv("SOCKS5_PASSWORD", kTestPassword, 1);
    round_trip(AF_INET, "127.0.0.1", env->authd.port(), "127.0.0.1");
}

TEST_F(Direct, IPv4ServerOnAnIPv6Socket) { round_trip(AF_INET6, "127.0.0.1", env->plain.port(), "127.0.0.1"); }

// A failure leaves Dst as it was and Socket unconnected.
void expect_untouched(int s, const sockaddr_storage& dst, const sockaddr_storage& before) {
    EXPECT_EQ(std::memcmp(&dst, &before, sizeof dst), 0) << "Dst changed on failure";
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    EXPECT_EQ(getpeername(s, sa(peer), &plen), -1) << "Socket left connected";
    EXPECT_EQ(errno, ENOTCONN);
}

TEST_F(Direct, WrongPasswordIsEACCESWithEPERM) {
    setenv("SOCKS5_USERNAME", kTestUser, 1);
    setenv("SOCKS5_PASSWORD", "not-the-password", 1);
    sockaddr_storage dst = target(), before = dst;
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", env->authd.port(), dst);
    Fd guard(s);
    EXPECT_EQ(r.rc, -1);
    EXPECT_EQ(r.err, EACCES);
    EXPECT_EQ(r.s5err, S5_EPERM);
    expect_untouched(s, dst, before);
}

TEST_F(Direct, NoCredentialsForAServerThatWantsThemIsEACCES) {
    sockaddr_storage dst = target();
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", env->authd.port(), dst);
    Fd guard(s);
    EXPECT_EQ(r.rc, -1);
    EXPECT_EQ(r.err, EACCES);
    EXPECT_EQ(r.s5err, S5_EPERM);
}

TEST_F(Direct, UsernameWithoutPasswordIsEINVAL) {
    setenv("SOCKS5_USERNAME", kTestUser, 1);
    sockaddr_storage dst = target(), before = dst;
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", env->authd.port(), dst);
    Fd guard(s);
    EXPECT_EQ(r.rc, -1);
    EXPECT_EQ(r.err, EINVAL);
    expect_untouched(s, dst, before);
}

TEST_F(Direct, ServerNotListeningIsECONNREFUSED) {
    sockaddr_storage dst = target(), before = dst;
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", free_tcp_port(), dst);
    Fd guard(s);
    EXPECT_EQ(r.rc, -1);
    EXPECT_EQ(r.err, ECONNREFUSED);
    EXPECT_EQ(r.s5err, 0);
    expect_untouched(s, dst, before);
}

TEST_F(Direct, NoServerIsENOENTWithENOSERV) {
    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_storage dst = target();
    EXPECT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, ENOENT);
    EXPECT_EQ(socks5_errno, S5_ENOSERV);
}

// A server that accepts the connection and never says a word.
TEST_F(Direct, SilentServerTimesOutWithinSO_RCVTIMEO) {
    Fd l(::socket(AF_INET, SOCK_STREAM, 0));
    auto any = sockaddr_of("127.0.0.1", 0);
    ASSERT_EQ(bind(l.get(), sa(any), sizeof(sockaddr_in)), 0);
    ASSERT_EQ(listen(l.get(), 4), 0);
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ASSERT_EQ(getsockname(l.get(), sa(bound), &blen), 0);

    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    timeval tv{0, 300000};
    ASSERT_EQ(setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    sockaddr_storage dst = target();
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, sa(bound), sizeof(sockaddr_in)), -1);
    EXPECT_EQ(errno, ETIMEDOUT);
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(took, 250ms);
    EXPECT_LT(took, 3s);
}

TEST_F(Direct, NonBlockingEINPROGRESSThenEALREADYThenTheRendezvous) {
    setenv("SOCKS5_USERNAME", kTestUser, 1);
    setenv("SOCKS5_PASSWORD", kTestPassword, 1);
    sockaddr_storage dst = target(), before = dst;
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", env->authd.port(), dst, SOCK_NONBLOCK);
    Fd guard(s);
    // On loopback the whole exchange may fit in the first call, as a
    // non-blocking connect(2) may succeed at once; usually it does not.
    int rc = r.rc;
    if (rc != 0) {
        ASSERT_EQ(r.err, EINPROGRESS);
        EXPECT_EQ(std::memcmp(&dst, &before, sizeof dst), 0) << "Dst written while in progress";
    }
    // Credentials are read when the connection starts, not later.
    unsetenv("SOCKS5_PASSWORD");
    auto svr = sockaddr_of("127.0.0.1", env->authd.port());
    auto end = std::chrono::steady_clock::now() + 5s;
    int calls = 0;
    while (rc != 0 && std::chrono::steady_clock::now() < end) {
        pollfd p{s, POLLIN | POLLOUT, 0};
        ASSERT_GE(poll(&p, 1, 1000), 0);
        rc = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), len_of(svr));
        ++calls;
        if (rc == 0) break;
        ASSERT_EQ(errno, EALREADY) << std::strerror(errno) << " / " << socks5_strerror(socks5_errno);
        EXPECT_EQ(std::memcmp(&dst, &before, sizeof dst), 0) << "Dst written while in progress";
        if (p.revents & POLLOUT) usleep(1000);  // connected: only POLLIN means news
    }
    ASSERT_EQ(rc, 0) << "not done after " << calls << " calls";
    EXPECT_EQ(echo_via_library(dst, target(), "nb direct"), "nb direct");
    EXPECT_EQ(socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), len_of(svr)), -1);
    EXPECT_EQ(errno, EISCONN);
}

TEST_F(Direct, NonBlockingWrongPasswordIsReportedOnALaterCall) {
    setenv("SOCKS5_USERNAME", kTestUser, 1);
    setenv("SOCKS5_PASSWORD", "wrong", 1);
    sockaddr_storage dst = target();
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", env->authd.port(), dst, SOCK_NONBLOCK);
    Fd guard(s);
    ASSERT_EQ(r.rc, -1);
    // On loopback the whole exchange may fit in the first call (danted
    // answers within it): then the refusal comes at once; otherwise on a
    // later call, once the socket is ready.
    if (r.err == EACCES) {
        EXPECT_EQ(r.s5err, S5_EPERM);
        return;
    }
    ASSERT_EQ(r.err, EINPROGRESS);
    auto svr = sockaddr_of("127.0.0.1", env->authd.port());
    auto end = std::chrono::steady_clock::now() + 5s;
    int rc = -1, err = 0;
    while (std::chrono::steady_clock::now() < end) {
        pollfd p{s, POLLIN | POLLOUT, 0};
        poll(&p, 1, 1000);
        rc = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), len_of(svr));
        err = errno;
        if (rc == 0 || err != EALREADY) break;
        usleep(1000);
    }
    EXPECT_EQ(rc, -1);
    EXPECT_EQ(err, EACCES);
    EXPECT_EQ(socks5_errno, S5_EPERM);
}

TEST_F(Direct, NonBlockingServerNotListening) {
    sockaddr_storage dst = target();
    uint16_t closed = free_tcp_port();
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", closed, dst, SOCK_NONBLOCK);
    Fd guard(s);
    int rc = r.rc, err = r.err;
    auto svr = sockaddr_of("127.0.0.1", closed);
    auto end = std::chrono::steady_clock::now() + 5s;
    while ((err == EINPROGRESS || err == EALREADY) && std::chrono::steady_clock::now() < end) {
        pollfd p{s, POLLOUT, 0};
        poll(&p, 1, 1000);
        rc = socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), len_of(svr));
        err = errno;
    }
    EXPECT_EQ(rc, -1);
    EXPECT_EQ(err, ECONNREFUSED);
}

TEST_F(Direct, ClosingSocketEndsTheAssociation) {
    sockaddr_storage dst = target();
    int s = -1;
    auto r = associate(s, AF_INET, "127.0.0.1", env->plain.port(), dst);
    ASSERT_EQ(r.rc, 0) << std::strerror(r.err);
    ASSERT_EQ(echo_via_library(dst, target(), "before close"), "before close");
    ::close(s);
    EXPECT_TRUE(eventually([&] { return !echo_via_library(dst, target(), "after close", 200ms); }, 5s))
        << "the relay still echoes after the control connection was closed";
}

// ---- AIX's socks5c.conf (a NULL Svr, socks5_getserv) -------------------------

// A socks5c.conf in the suite's directory; SOCKS5C_CONFIG names it.
void use_socks5c_conf(const std::string& text) {
    const std::string path = env->dir.file("socks5c.conf");
    write_file(path, text, 0644);
    setenv("SOCKS5C_CONFIG", path.c_str(), 1);
}

TEST_F(Direct, ANullSvrTakesTheServerFromSocks5cConf) {
    use_socks5c_conf("# the echo host goes through the plain danted\n127.0.0.1  127.0.0.1:" +
                     std::to_string(env->plain.port()) + "\n");
    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_storage dst = target();
    ASSERT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, nullptr, 0), 0)
        << std::strerror(errno) << " / " << socks5_strerror(socks5_errno);
    auto reply = echo_via_library(dst, target(), "via socks5c.conf");
    ASSERT_TRUE(reply.has_value()) << "no echo through the relay";
    EXPECT_EQ(*reply, "via socks5c.conf");
}

TEST_F(Direct, Socks5cConfNoneOrNoFileIsENOENTWithENOSERV) {
    auto expect_no_server = [&](const char* why) {
        Fd s(::socket(AF_INET, SOCK_STREAM, 0));
        sockaddr_storage dst = target();
        EXPECT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, nullptr, 0), -1) << why;
        EXPECT_EQ(errno, ENOENT) << why;
        EXPECT_EQ(socks5_errno, S5_ENOSERV) << why;
    };
    use_socks5c_conf("127.0.0.0/8 NONE\n0.0.0.0/0 192.0.2.1\n");
    expect_no_server("NONE");
    use_socks5c_conf("10.0.0.0/8 192.0.2.1:1080\n");
    expect_no_server("the implied 0.0.0.0/0 NONE");
    setenv("SOCKS5C_CONFIG", env->dir.file("absent.conf").c_str(), 1);
    expect_no_server("no file");
    setenv("SOCKS5C_CONFIG", "", 1);
    expect_no_server("SOCKS5C_CONFIG set but empty");
    // A file that does not parse: EINVAL, still no server.
    use_socks5c_conf("127.0.0.1/33 127.0.0.1\n");
    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_storage dst = target();
    EXPECT_EQ(socks5udp_associate(s.get(), sa(dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(socks5_errno, S5_ENOSERV);
}

TEST_F(Direct, GetservAnswersFromSocks5cConfWithTheLongestPrefix) {
    use_socks5c_conf("127.0.0.0/8 127.0.0.1:1111\n127.0.0.1 127.0.0.1:2222\n::1 [::1]:3333\n");
    auto port_for = [](const std::string& ip) -> int {
        auto d = sockaddr_of(ip, 53);
        sockaddr* r = socks5_getserv(sa(d), len_of(d));
        if (!r) return -socks5_errno;
        return r->sa_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(r)->sin_port)
                                       : ntohs(reinterpret_cast<sockaddr_in6*>(r)->sin6_port);
    };
    EXPECT_EQ(port_for("127.0.0.1"), 2222);
    EXPECT_EQ(port_for("127.0.0.2"), 1111);
    EXPECT_EQ(port_for("::1"), 3333);
    EXPECT_EQ(port_for("192.0.2.7"), -S5_ENOSERV);   // the implied 0.0.0.0/0 NONE
}

// ---- modes and bus situations, in children ---------------------------------

// Runs `fn` in a child; its return value is the exit status.
int in_child(const std::function<int()>& fn) {
    pid_t child = fork();
    if (child < 0) return -1;
    if (child == 0) _exit(fn());
    int st = 0;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

// 0: associated through the plain server and echoed; 2: associate failed;
// 3: no echo.
int associate_and_echo_in_child(uint16_t server_port, uint16_t echo_port) {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    auto svr = sockaddr_of("127.0.0.1", server_port);
    auto dst = sockaddr_of("127.0.0.1", echo_port);
    if (socks5udp_associate(s, sa(dst), sizeof dst, sa(svr), sizeof(sockaddr_in)) != 0) return 2;
    auto reply = echo_via_library(dst, sockaddr_of("127.0.0.1", echo_port), "child");
    return reply == std::string("child") ? 0 : 3;
}

// 0 when the call fails with `err` + `s5err`, 1 otherwise.
int expect_failure_in_child(bool with_server, uint16_t server_port, int err, int s5err) {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    auto svr = sockaddr_of("127.0.0.1", server_port);
    auto dst = sockaddr_of("127.0.0.1", 7);
    int rc = socks5udp_associate(s, sa(dst), sizeof dst, with_server ? sa(svr) : nullptr,
                                 with_server ? sizeof(sockaddr_in) : 0);
    return rc == -1 && errno == err && socks5_errno == s5err ? 0 : 1;
}

class Modes : public Direct {
protected:
    void SetUp() override {
        Direct::SetUp();
        unsetenv("S5CLIENT_MODE");
    }
};

TEST_F(Modes, AutoWithNoBrokerOnTheBusFallsBackToDirect) {
    TempDir dir;
    PrivateBus bus(dir);
    uint16_t sp = env->plain.port(), ep = env->echo.port();
    EXPECT_EQ(in_child([&] { return associate_and_echo_in_child(sp, ep); }), 0);
    EXPECT_EQ(in_child([&] {
                  setenv("S5CLIENT_MODE", "auto", 1);
                  return associate_and_echo_in_child(sp, ep);
              }),
              0);
}

TEST_F(Modes, AutoWithNoBusAtAllFallsBackToDirect) {
    uint16_t sp = env->plain.port(), ep = env->echo.port();
    EXPECT_EQ(in_child([&] {
                  setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/s5broker-bus", 1);
                  return associate_and_echo_in_child(sp, ep);
              }),
              0);
}

TEST_F(Modes, AutoWithoutSvrAndNoBrokerReportsTheMissingBroker) {
    EXPECT_EQ(in_child([&] {
                  setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/s5broker-bus", 1);
                  setenv("SOCKS5C_CONFIG", "", 1);   // and no socks5c.conf to fall back on
                  return expect_failure_in_child(false, 0, ECONNREFUSED, S5_ENOSERV);
              }),
              0);
}

// No broker, no Svr: socks5c.conf names the server, as in direct mode.
TEST_F(Modes, AutoWithoutSvrAndNoBrokerUsesSocks5cConf) {
    use_socks5c_conf("127.0.0.1 127.0.0.1:" + std::to_string(env->plain.port()) + "\n");
    uint16_t ep = env->echo.port();
    EXPECT_EQ(in_child([&] {
                  setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/s5broker-bus", 1);
                  int s = ::socket(AF_INET, SOCK_STREAM, 0);
                  auto dst = sockaddr_of("127.0.0.1", ep);
                  if (socks5udp_associate(s, sa(dst), sizeof dst, nullptr, 0) != 0) return 2;
                  return echo_via_library(dst, sockaddr_of("127.0.0.1", ep), "auto") == std::string("auto") ? 0 : 3;
              }),
              0);
}

// The broker is there and says no: its answer stands, no direct attempt.
TEST_F(Modes, AutoDoesNotFallBackWhenTheBrokerAnswersWithAnError) {
    TempDir dir;
    PrivateBus bus(dir);
    Broker broker(dir, bus, R"({"servers": [)" + server_json("other", "127.0.0.1", free_tcp_port()) + "]}");
    ASSERT_TRUE(broker.start()) << broker.log();
    uint16_t sp = env->plain.port();
    // env->plain is not configured in the broker: ENOENT from the broker,
    // where direct mode would have succeeded.
    EXPECT_EQ(in_child([&] { return expect_failure_in_child(true, sp, ENOENT, S5_ENOSERV); }), 0);
}

TEST_F(Modes, BrokerModeNeverFallsBack) {
    TempDir dir;
    PrivateBus bus(dir);
    uint16_t sp = env->plain.port();
    EXPECT_EQ(in_child([&] {
                  setenv("S5CLIENT_MODE", "broker", 1);
                  return expect_failure_in_child(true, sp, ECONNREFUSED, S5_ENOSERV);
              }),
              0)
        << "private bus without a broker";
    EXPECT_EQ(in_child([&] {
                  setenv("S5CLIENT_MODE", "broker", 1);
                  setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/s5broker-bus", 1);
                  return expect_failure_in_child(true, sp, ECONNREFUSED, S5_ENOSERV);
              }),
              0)
        << "no bus at all";
}

}  // namespace
