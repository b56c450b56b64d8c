// Direct mode against a scripted SOCKS5 server on loopback: what real danted
// never sends (BND 0.0.0.0, a host-name BND, REP != 0, a hang-up).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "s5broker/socks5.h"
#include "broker_link.hpp"
#include "direct.hpp"
#include "errors.hpp"

namespace {

bool read_n(int fd, uint8_t* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = ::recv(fd, buf + got, n - got, 0);
        if (r <= 0) return false;
        got += static_cast<size_t>(r);
    }
    return true;
}

// Accepts one client, answers the greeting with method 0 and the UDP
// ASSOCIATE request with `reply` (empty: hangs up instead), records the
// request, then waits for the client to close.
class FakeServer {
public:
    explicit FakeServer(std::vector<uint8_t> reply, bool hang_up_after_greeting = false) {
        lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sin;
        EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
        EXPECT_EQ(::listen(lfd_, 1), 0);
        EXPECT_EQ(getsockname(lfd_, reinterpret_cast<sockaddr*>(&sin), &len), 0);
        addr_ = sin;
        thread_ = std::thread([this, reply = std::move(reply), hang_up_after_greeting] {
            int c = ::accept(lfd_, nullptr, nullptr);
            if (c < 0) return;
            uint8_t greet[3];
            if (read_n(c, greet, 3)) {
                if (hang_up_after_greeting) {
                    ::close(c);
                    return;
                }
                const uint8_t method[2] = {5, 0};
                (void)!::send(c, method, 2, MSG_NOSIGNAL);
                request_.resize(10);
                if (read_n(c, request_.data(), 10)) {
                    (void)!::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
                    char b;
                    while (::recv(c, &b, 1, 0) > 0) {
                    }
                }
            }
            ::close(c);
        });
    }
    ~FakeServer() {
        ::shutdown(lfd_, SHUT_RDWR);
        thread_.join();
        ::close(lfd_);
    }
    const sockaddr_in& addr() const { return addr_; }
    const std::vector<uint8_t>& request() const { return request_; }

private:
    int lfd_ = -1;
    sockaddr_in addr_{};
    std::thread thread_;
    std::vector<uint8_t> request_;
};

struct Call {
    int rc, err, s5err;
    sockaddr_in dst;
    int fd;
};

Call associate(const FakeServer& srv) {
    setenv("S5CLIENT_MODE", "direct", 1);
    unsetenv("SOCKS5_USERNAME");
    Call c{};
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    c.dst.sin_family = AF_INET;
    c.dst.sin_port = htons(7);
    c.dst.sin_addr.s_addr = htonl(0xC0000207);  // 192.0.2.7
    sockaddr_in svr = srv.addr();
    c.rc = socks5udp_associate(c.fd, reinterpret_cast<sockaddr*>(&c.dst), sizeof c.dst,
                               reinterpret_cast<sockaddr*>(&svr), sizeof svr);
    c.err = errno;
    c.s5err = socks5_errno;
    return c;
}

std::vector<uint8_t> ipv4_reply(uint8_t rep, uint32_t ip, uint16_t port) {
    return {5, rep, 0, 1, uint8_t(ip >> 24), uint8_t(ip >> 16), uint8_t(ip >> 8), uint8_t(ip), uint8_t(port >> 8),
            uint8_t(port)};
}

TEST(DirectMode, UnspecifiedBndMeansTheServersAddress) {
    Call c;
    std::vector<uint8_t> req;
    {
        FakeServer srv(ipv4_reply(0, 0, 4242));
        c = associate(srv);
        ::close(c.fd);
        req = srv.request();
    }
    ASSERT_EQ(c.rc, 0) << std::strerror(c.err);
    EXPECT_EQ(c.dst.sin_family, AF_INET);
    EXPECT_EQ(ntohl(c.dst.sin_addr.s_addr), INADDR_LOOPBACK);
    EXPECT_EQ(ntohs(c.dst.sin_port), 4242);
    // DST of the request: our side of the control connection, port 0.
    const std::vector<uint8_t> want{5, 3, 0, 1, 127, 0, 0, 1, 0, 0};
    EXPECT_EQ(req, want);
}

TEST(DirectMode, HostNameBndThatIsAnIpLiteral) {
    std::vector<uint8_t> reply{5, 0, 0, 3, 9, '1', '2', '7', '.', '0', '.', '0', '.', '1', 0x10, 0x92};
    FakeServer srv(reply);
    Call c = associate(srv);
    ::close(c.fd);
    ASSERT_EQ(c.rc, 0) << std::strerror(c.err);
    EXPECT_EQ(ntohs(c.dst.sin_port), 0x1092);
}

TEST(DirectMode, RejectedRequestMapsLikeTheBroker) {
    FakeServer srv(ipv4_reply(2, 0, 0));
    Call c = associate(srv);
    ::close(c.fd);
    EXPECT_EQ(c.rc, -1);
    EXPECT_EQ(c.err, EACCES);
    EXPECT_EQ(c.s5err, S5_EPERM);
    EXPECT_EQ(ntohs(c.dst.sin_port), 7) << "Dst changed on failure";
}

TEST(DirectMode, RelayPortZeroIsAProtocolError) {
    FakeServer srv(ipv4_reply(0, 0x7f000001, 0));
    Call c = associate(srv);
    ::close(c.fd);
    EXPECT_EQ(c.rc, -1);
    EXPECT_EQ(c.err, EPROTO);
    EXPECT_EQ(c.s5err, S5_EPROTO);
}

// A server that hangs up mid-handshake failed; it sent nothing malformed
// (EPROTO is for that). The broker reports it the same way (ServerFailure).
TEST(DirectMode, HangUpMidHandshakeIsAServerFailureAndSocketIsUnconnected) {
    FakeServer srv({}, /*hang_up_after_greeting=*/true);
    Call c = associate(srv);
    EXPECT_EQ(c.rc, -1);
    EXPECT_EQ(c.err, ECONNREFUSED);
    EXPECT_EQ(c.s5err, S5_ESRVFAIL);
    sockaddr_in peer{};
    socklen_t plen = sizeof peer;
    EXPECT_EQ(getpeername(c.fd, reinterpret_cast<sockaddr*>(&peer), &plen), -1);
    ::close(c.fd);
}

TEST(DirectMode, ModeFromTheEnvironment) {
    using s5::client::Mode;
    using s5::client::mode_from_env;
    unsetenv("S5CLIENT_MODE");
    EXPECT_EQ(mode_from_env(), Mode::Auto);
    setenv("S5CLIENT_MODE", "auto", 1);
    EXPECT_EQ(mode_from_env(), Mode::Auto);
    setenv("S5CLIENT_MODE", "nonsense", 1);
    EXPECT_EQ(mode_from_env(), Mode::Auto);
    setenv("S5CLIENT_MODE", "broker", 1);
    EXPECT_EQ(mode_from_env(), Mode::Broker);
    setenv("S5CLIENT_MODE", "direct", 1);
    EXPECT_EQ(mode_from_env(), Mode::Direct);
    unsetenv("S5CLIENT_MODE");
}

TEST(DirectMode, OnlyAnAbsentBrokerAllowsTheFallback) {
    using s5::client::broker_absent;
    EXPECT_TRUE(broker_absent(std::string(s5::err::kNoBusError)));
    EXPECT_TRUE(broker_absent("org.freedesktop.DBus.Error.Disconnected"));
    EXPECT_FALSE(broker_absent("org.freedesktop.DBus.Error.Spawn.ChildExited"));
    EXPECT_TRUE(broker_absent("org.freedesktop.DBus.Error.ServiceUnknown"));
    EXPECT_TRUE(broker_absent("org.freedesktop.DBus.Error.NameHasNoOwner"));
    EXPECT_FALSE(broker_absent("org.s5broker.Broker1.Error.NoServer"));
    EXPECT_FALSE(broker_absent("org.s5broker.Broker1.Error.ServerConnectionRefused"));
    EXPECT_FALSE(broker_absent("org.freedesktop.DBus.Error.NoReply"));
    EXPECT_FALSE(broker_absent("org.freedesktop.DBus.Error.AccessDenied"));
}

TEST(DirectMode, NoSvrIsENOENTWithENOSERV) {
    setenv("S5CLIENT_MODE", "direct", 1);
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    EXPECT_EQ(socks5udp_associate(s, reinterpret_cast<sockaddr*>(&dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, ENOENT);
    EXPECT_EQ(socks5_errno, S5_ENOSERV);
    ::close(s);
    unsetenv("S5CLIENT_MODE");
}

}  // namespace
