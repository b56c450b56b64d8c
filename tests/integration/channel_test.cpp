// The private channel (docs/design.md §5a) with a real danted, the real
// broker on a private bus, and the library in this process: associations
// go over it, it is as closed as the bus (another uid's requests, malformed
// requests, descriptors sent along), a client that stops reading loses only
// its own channel, and the library falls back to the bus for what the
// channel does not serve and after a broker restart.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sdbus-c++/sdbus-c++.h>

#include "channel.hpp"
#include "fd_passing.hpp"
#include "harness.hpp"
#include "unique_fd.hpp"
#include "wire.hpp"

namespace {

using namespace s5test;
using Fd = s5::UniqueFd;
namespace ch = s5::channel;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr const char* kManagerIface = "org.s5broker.Broker1.Manager";

struct World {
    TempDir dir;
    PrivateBus bus{dir};
    UdpEcho echo{dir};
    Danted danted{dir};
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;
    std::string config;

    explicit World(unsigned min_idle = 4) {
        config = R"({"servers": [)" + server_json("v4", "127.0.0.1", danted.port()) +
                 R"(], "pool": {"min_idle": )" + std::to_string(min_idle) +
                 R"(}, "routes": [{"destination": "127.0.0.0/8", "servers": ["v4"]}]})";
        broker = std::make_unique<Broker>(dir, bus, config);
        if (!broker->start()) throw std::runtime_error("s5brokerd did not become ready:\n" + broker->log());
        client = std::make_unique<BusClient>(bus);
        // The library in this process finds the broker on the private bus.
        setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address().c_str(), 1);
    }
    uint64_t stat(const std::string& key) { return client->statistics().at(key); }
    uint32_t idle() {
        return client->object("/org/s5broker/Broker1/server/v4")
            ->getProperty("PoolIdle")
            .onInterface("org.s5broker.Broker1.Server")
            .get<uint32_t>();
    }
    // A channel of our own, from the bus, as the library opens it.
    Fd open_channel() {
        sdbus::UnixFd fd;
        client->manager()->callMethod("OpenChannel").onInterface(kManagerIface).storeResultsTo(fd);
        return Fd(fd.release());
    }
};

ch::Request request_for(uint16_t port, uint64_t token = 7) {
    ch::Request r;
    r.token = token;
    r.dst = *s5::wire::Endpoint::parse_ip("127.0.0.1", port);
    return r;
}

// One reply from a channel: the decoded reply (nullopt if malformed or
// none within 5 s) and the descriptor that came with it.
struct Received {
    std::optional<ch::Reply> reply;
    Fd fd;
};

Received receive(int channel) {
    Received out;
    pollfd p{channel, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return out;
    uint8_t buf[ch::kReplyMax];
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n <= 0) return out;
    out.fd = s5::take_passed_fd(msg);
    out.reply = ch::decode_reply(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
    return out;
}

bool send_bytes(int channel, const void* p, size_t n, int pass_fd = -1) {
    iovec iov{const_cast<void*>(p), n};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    s5::OneFd control;
    if (pass_fd >= 0) control.attach(msg, pass_fd);
    return sendmsg(channel, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(n);
}

bool send_request(int channel, const ch::Request& r, int pass_fd = -1) {
    const auto b = ch::encode_request(r);
    return send_bytes(channel, b.data(), b.size(), pass_fd);
}

// A library association for the echo service (echo() is one round trip
// through it, with the harness's echo_via_library).
struct App {
    Fd lease;
    sockaddr_storage rendezvous{}, target{};
};

std::optional<App> associate(uint16_t echo_port) {
    App a;
    a.lease.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    a.target = sockaddr_of("127.0.0.1", echo_port);
    a.rendezvous = a.target;
    if (socks5udp_associate(a.lease.get(), sa(a.rendezvous), sizeof a.rendezvous, nullptr, 0) != 0) return std::nullopt;
    return a;
}

bool echo(const App& a, const std::string& msg) {
    return echo_via_library(a.rendezvous, a.target, msg, 2000ms) == msg;
}

TEST(Channel, PooledAssociationsGoOverTheChannelAndWork) {
    World w;
    ASSERT_TRUE(eventually([&] { return w.idle() >= 4; }, 10s));
    const uint64_t requests = w.stat("channel_requests"), granted = w.stat("leases_granted");
    std::vector<App> apps;
    for (int i = 0; i < 10; ++i) {
        auto a = associate(w.echo.port());
        ASSERT_TRUE(a) << std::strerror(errno);
        apps.push_back(std::move(*a));
    }
    EXPECT_TRUE(echo(apps.front(), "first"));
    EXPECT_TRUE(echo(apps.back(), "last"));
    // Every request went over the channel (the ones the pool could not
    // serve at once were answered "ask on the bus" there, and counted too).
    EXPECT_GE(w.stat("channel_requests") - requests, 10u);
    EXPECT_EQ(w.stat("leases_granted") - granted, 10u);
    EXPECT_EQ(w.stat("channels"), 1u);   // one per process
    EXPECT_EQ(w.client->lease_count(), 10u);
    apps.clear();
    EXPECT_TRUE(eventually([&] { return w.client->lease_count() == 0; }));
}

TEST(Channel, RequestsThatWouldWaitAreMadeOnTheBusAndSucceed) {
    World w(0);   // no pool: every association is made on demand
    const uint64_t requests = w.stat("channel_requests");
    auto a = associate(w.echo.port());
    ASSERT_TRUE(a) << std::strerror(errno);
    EXPECT_TRUE(echo(*a, "made on demand"));
    EXPECT_EQ(w.stat("channel_requests") - requests, 1u);   // WouldWait
    EXPECT_EQ(w.stat("leases_granted"), 1u);
}

TEST(Channel, ARequestFromAnotherUidIsRefusedAndMakesNoLease) {
    World w;
    ASSERT_TRUE(eventually([&] { return w.idle() >= 1; }, 10s));
    Fd channel = w.open_channel();
    ASSERT_TRUE(channel);
    const auto req = ch::encode_request(request_for(w.echo.port(), 99));
    // nobody sends on root's channel (as if it had been handed the fd).
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setgroups(0, nullptr) != 0 || setgid(kNogroup) != 0 || setuid(kNobody) != 0) _exit(2);
        _exit(send(channel.get(), req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()) ? 0 : 3);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    Received r = receive(channel.get());
    ASSERT_TRUE(r.reply);
    EXPECT_EQ(r.reply->token, 99u);
    EXPECT_EQ(r.reply->status, ch::Status::Failed);
    EXPECT_EQ(r.reply->error_name, "org.freedesktop.DBus.Error.AccessDenied");
    EXPECT_NE(r.reply->error_message.find("uid 65534"), std::string::npos) << r.reply->error_message;
    EXPECT_FALSE(r.fd);
    EXPECT_EQ(w.client->lease_count(), 0u);
    // The owner's own request on the same channel is served.
    ASSERT_TRUE(send_request(channel.get(), request_for(w.echo.port(), 100)));
    Received ok = receive(channel.get());
    ASSERT_TRUE(ok.reply);
    EXPECT_EQ(ok.reply->status, ch::Status::Granted);
    EXPECT_EQ(ok.reply->token, 100u);
    EXPECT_TRUE(ok.fd);
    EXPECT_EQ(w.client->lease_count(), 1u);
}

TEST(Channel, OutsidersCannotOpenAChannel) {
    World w;
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Only system calls and the bus library in this child: nothing of
        // the parent's threads is used.
        if (setgroups(0, nullptr) != 0 || setgid(kNogroup) != 0 || setuid(kNobody) != 0) _exit(2);
        try {
            auto conn = sdbus::createSessionBusConnectionWithAddress(w.bus.address());
            auto proxy = sdbus::createProxy(*conn, "org.s5broker.Broker1", "/org/s5broker/Broker1");
            sdbus::UnixFd fd;
            proxy->callMethod("OpenChannel").onInterface(kManagerIface).storeResultsTo(fd);
            _exit(1);   // given a channel
        } catch (const sdbus::Error& e) {
            _exit(e.getName() == "org.freedesktop.DBus.Error.AccessDenied" ? 0 : 4);
        } catch (...) {
            _exit(5);
        }
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "1: nobody got a channel; other: see the test";
    EXPECT_EQ(w.stat("channels"), 0u);
}

TEST(Channel, MalformedRequestsGetAClearErrorAndChangeNothing) {
    World w;
    ASSERT_TRUE(eventually([&] { return w.idle() >= 1; }, 10s));
    Fd channel = w.open_channel();
    auto expect_invalid = [&](const std::vector<uint8_t>& bytes, int pass_fd = -1) {
        ASSERT_TRUE(send_bytes(channel.get(), bytes.data(), bytes.size(), pass_fd));
        Received r = receive(channel.get());
        ASSERT_TRUE(r.reply);
        EXPECT_EQ(r.reply->status, ch::Status::Failed);
        EXPECT_EQ(r.reply->error_name, "org.s5broker.Broker1.Error.InvalidArgs");
        EXPECT_NE(r.reply->error_message.find("malformed channel request"), std::string::npos);
        EXPECT_FALSE(r.fd);
    };
    expect_invalid(std::vector<uint8_t>(10, 0xAB));                     // short
    auto good = ch::encode_request(request_for(w.echo.port()));
    std::vector<uint8_t> bad_magic(good.begin(), good.end());
    bad_magic[0] = 'X';
    expect_invalid(bad_magic);
    std::vector<uint8_t> longer(good.begin(), good.end());
    longer.resize(200, 0);
    expect_invalid(longer);                                            // cut short by the broker: refused
    // A descriptor sent along is closed by the broker, never kept: the
    // write end of this pipe is gone once the read end sees EOF.
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    Fd rd(p[0]);
    {
        Fd wr(p[1]);
        expect_invalid(bad_magic, wr.get());
    }
    pollfd pf{rd.get(), POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 5000), 1);
    char c;
    EXPECT_EQ(read(rd.get(), &c, 1), 0);
    // Semantically bad but well-formed: the bus's checks, the bus's errors.
    ch::Request r = request_for(w.echo.port(), 5);
    r.server = *s5::wire::Endpoint::parse_ip("127.0.0.1", 0);
    ASSERT_TRUE(send_request(channel.get(), r));
    Received no_port = receive(channel.get());
    ASSERT_TRUE(no_port.reply);
    EXPECT_EQ(no_port.reply->error_name, "org.s5broker.Broker1.Error.InvalidArgs");
    r = request_for(9, 6);
    r.dst = *s5::wire::Endpoint::parse_ip("192.0.2.1", 9);   // no route
    ASSERT_TRUE(send_request(channel.get(), r));
    Received no_route = receive(channel.get());
    ASSERT_TRUE(no_route.reply);
    EXPECT_EQ(no_route.reply->error_name, "org.s5broker.Broker1.Error.NoServer");
    EXPECT_EQ(no_route.reply->token, 6u);
    EXPECT_EQ(w.client->lease_count(), 0u);
    // The channel still serves.
    ASSERT_TRUE(send_request(channel.get(), request_for(w.echo.port(), 8)));
    Received ok = receive(channel.get());
    ASSERT_TRUE(ok.reply);
    EXPECT_EQ(ok.reply->status, ch::Status::Granted);
    EXPECT_TRUE(ok.fd);
}

TEST(Channel, AClientThatStopsReadingLosesOnlyItsOwnChannel) {
    World w;
    ASSERT_TRUE(eventually([&] { return w.idle() >= 4; }, 10s));
    // Requests that end in an error (no route): replies without leases, so
    // the stuck client holds no quota, only its own socket buffer.
    Fd stuck = w.open_channel();
    ch::Request r = request_for(9);
    r.dst = *s5::wire::Endpoint::parse_ip("192.0.2.1", 9);
    const auto bytes = ch::encode_request(r);
    // Requests until the broker gives the channel up (EPIPE): once our end
    // is full of unread replies, the next reply does not fit.
    int sent = 0, err = 0;
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < give_up) {
        if (send(stuck.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT) ==
            static_cast<ssize_t>(bytes.size())) {
            ++sent;
            continue;
        }
        err = errno;
        if (err != EAGAIN) break;
        pollfd p{stuck.get(), POLLOUT, 0};
        (void)poll(&p, 1, 100);   // the broker reads on; room comes back
    }
    EXPECT_TRUE(err == EPIPE || err == ECONNRESET) << std::strerror(err) << " after " << sent << " requests";
    EXPECT_TRUE(eventually([&] { return w.stat("channels") == 0; }, 10s)) << sent << " requests sent";
    // Meanwhile, and after, everyone else is served.
    for (int i = 0; i < 8; ++i) {
        auto a = associate(w.echo.port());
        ASSERT_TRUE(a) << std::strerror(errno);
        EXPECT_TRUE(echo(*a, "unaffected " + std::to_string(i)));
    }
    EXPECT_NE(w.broker->log().find("does not read its replies"), std::string::npos);
}

TEST(Channel, AForkedChildUsesItsOwnChannel) {
    World w;
    ASSERT_TRUE(eventually([&] { return w.idle() >= 4; }, 10s));
    auto parent = associate(w.echo.port());
    ASSERT_TRUE(parent);
    ASSERT_EQ(w.stat("channels"), 1u);
    int done[2], hold[2];   // child -> parent: its verdict; parent -> child: EOF ends it
    ASSERT_EQ(pipe2(done, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(hold, O_CLOEXEC), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // This process has no thread of its own besides the test's: the
        // library may be used here.
        auto a = associate(w.echo.port());
        char ok = (a && echo(*a, "child")) ? 'y' : 'n';
        (void)!write(done[1], &ok, 1);
        ::close(hold[1]);
        char wait_for_parent;
        (void)!read(hold[0], &wait_for_parent, 1);   // EOF when the parent closes
        _exit(0);
    }
    ::close(done[1]);
    ::close(hold[0]);
    char ok = 0;
    ASSERT_EQ(read(done[0], &ok, 1), 1);
    EXPECT_EQ(ok, 'y');
    EXPECT_EQ(w.stat("channels"), 2u);   // the child's own, beside ours
    auto again = associate(w.echo.port());   // ours still answers us
    ASSERT_TRUE(again);
    EXPECT_TRUE(echo(*again, "parent"));
    ::close(done[0]);
    ::close(hold[1]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(eventually([&] { return w.stat("channels") == 1; }));
}

TEST(Channel, TheLibraryOpensANewChannelAfterABrokerRestart) {
    World w;
    ASSERT_TRUE(eventually([&] { return w.idle() >= 2; }, 10s));
    auto before = associate(w.echo.port());
    ASSERT_TRUE(before);
    before.reset();
    w.broker->stop();
    w.broker = std::make_unique<Broker>(w.dir, w.bus, w.config);
    ASSERT_TRUE(w.broker->start()) << w.broker->log();
    ASSERT_TRUE(eventually([&] { return w.idle() >= 2; }, 10s));
    auto after = associate(w.echo.port());
    ASSERT_TRUE(after) << std::strerror(errno);
    EXPECT_TRUE(echo(*after, "after the restart"));
    EXPECT_EQ(w.stat("channels"), 1u);
    EXPECT_GE(w.stat("channel_requests"), 1u);
}

}  // namespace
