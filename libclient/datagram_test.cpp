// socks5udp_sendto / socks5udp_recvfrom / socks5udp_current and the repeated
// socks5udp_associate on a lease, without a broker: a UDP socket on
// 127.0.0.1 or ::1 plays the relay, and a fake lease (a socketpair carrying
// the broker's lease events) is registered in the process's lease table.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <thread>
#include <cstring>
#include <string>
#include <vector>

#include "datagram.hpp"
#include "lease_table.hpp"
#include "wire.hpp"
#include "unique_fd.hpp"

namespace {

using s5::client::LeaseTable;
using s5::wire::Endpoint;
using s5::wire::LeaseEvent;
using s5::wire::LeaseEventType;
using Bytes = std::vector<uint8_t>;

// The project's one owner of a descriptor.
using Fd = s5::UniqueFd;

sockaddr_storage sockaddr_of(const Endpoint& e, socklen_t* len = nullptr) {
    sockaddr_storage ss{};
    size_t n = e.to_sockaddr(ss);
    if (len) *len = static_cast<socklen_t>(n);
    return ss;
}

Endpoint local_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len), 0);
    return *Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Endpoint ep(const char* ip, uint16_t port = 0) { return *Endpoint::parse_ip(ip, port); }

// A UDP socket, bound to `ip` (port chosen by the kernel) unless null.
Fd udp(int family, const char* ip = nullptr) {
    Fd s(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (ip) {
        socklen_t len;
        auto ss = sockaddr_of(ep(ip), &len);
        EXPECT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len), 0) << std::strerror(errno);
    }
    return s;
}

// Waits up to 2 s for one datagram; returns its bytes and sender.
std::optional<Bytes> receive(int fd, Endpoint* from = nullptr, int timeout_ms = 2000) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    Bytes buf(70000);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ssize_t n = ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&ss), &len);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<size_t>(n));
    if (from) *from = *Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    return buf;
}

void send_raw(int from_fd, const Endpoint& to, const Bytes& bytes) {
    socklen_t len;
    auto ss = sockaddr_of(to, &len);
    ASSERT_EQ(::sendto(from_fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&ss), len),
              static_cast<ssize_t>(bytes.size()))
        << std::strerror(errno);
}

Bytes header4(const char* ip, uint16_t port, uint8_t frag = 0) {
    Bytes h{0, 0, frag, 1};
    in_addr a;
    inet_pton(AF_INET, ip, &a);
    auto* p = reinterpret_cast<uint8_t*>(&a);
    h.insert(h.end(), p, p + 4);
    h.push_back(static_cast<uint8_t>(port >> 8));
    h.push_back(static_cast<uint8_t>(port));
    return h;
}

Bytes header6(const char* ip, uint16_t port) {
    Bytes h{0, 0, 0, 4};
    in6_addr a;
    inet_pton(AF_INET6, ip, &a);
    auto* p = reinterpret_cast<uint8_t*>(&a);
    h.insert(h.end(), p, p + 16);
    h.push_back(static_cast<uint8_t>(port >> 8));
    h.push_back(static_cast<uint8_t>(port));
    return h;
}

Bytes cat(Bytes a, const Bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

Bytes pattern(size_t n, uint8_t seed = 3) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 7 + seed);
    return b;
}

template <typename Pred>
bool eventually_true(Pred pred, int timeout_ms = 5000) {
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        if (pred()) return true;
        ::usleep(10000);
    }
    return pred();
}

// A lease of this process as socks5udp_associate() would record it, with
// the test in the broker's place.
struct FakeLease {
    Fd app, broker;
    Endpoint relay;
    explicit FakeLease(const Endpoint* ready_relay, const Endpoint& source = {}) {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        app = Fd(sv[0]);
        broker = Fd(sv[1]);
        if (ready_relay) {
            relay = *ready_relay;
            event({LeaseEventType::Ready, 1, relay, source, 0, 0});
        }
        EXPECT_TRUE(LeaseTable::global().add(app.get(), app.get(), ready_relay));
        // As socks5udp_associate() does: the number is no longer a checked
        // UDP socket (an earlier test's socket may have had it).
        s5::client::SocketCache::global().forget(app.get());
    }
    ~FakeLease() { LeaseTable::global().remove(app.get()); }
    void event(const LeaseEvent& ev) const {
        auto rec = s5::wire::encode_lease_event(ev);
        EXPECT_EQ(::send(broker.get(), rec.data(), rec.size(), 0), 64);
    }
    sockaddr_storage rendezvous(socklen_t* len) const { return sockaddr_of(relay, len); }
};

sockaddr* sa(sockaddr_storage& ss) { return reinterpret_cast<sockaddr*>(&ss); }

// ---- socks5udp_sendto -----------------------------------------------------------

class SendTo : public ::testing::Test {
protected:
    Fd relay = udp(AF_INET, "127.0.0.1");
    Endpoint relay_ep = local_of(relay.get());
    FakeLease lease{&relay_ep, ep("127.0.0.1")};
    socklen_t svrlen = 0;
    sockaddr_storage svr = lease.rendezvous(&svrlen);
};

TEST_F(SendTo, FramesAnIPv4TargetExactly) {
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 5353), &dlen);
    char msg[] = "hello";
    ASSERT_EQ(socks5udp_sendto(app.get(), msg, 5, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    EXPECT_EQ(socks5_errno, 0);
    Endpoint from;
    auto got = receive(relay.get(), &from);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, (Bytes{0, 0, 0, 1, 192, 0, 2, 7, 0x14, 0xe9, 'h', 'e', 'l', 'l', 'o'}));
    EXPECT_EQ(from, ep("127.0.0.1", local_of(app.get()).port));
}

TEST_F(SendTo, FramesAnIPv6TargetExactly) {
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("2001:db8::1", 53), &dlen);
    char msg[] = "x";
    ASSERT_EQ(socks5udp_sendto(app.get(), msg, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    auto got = receive(relay.get());
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, cat(header6("2001:db8::1", 53), Bytes{'x'}));
}

TEST_F(SendTo, EmptyAndLargestPayloads) {
    Fd app = udp(AF_INET);
    int big = 1 << 20;
    setsockopt(relay.get(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 9), &dlen);
    ASSERT_EQ(socks5udp_sendto(app.get(), nullptr, 0, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    EXPECT_EQ(receive(relay.get()), header4("192.0.2.7", 9));
    Bytes payload = pattern(65507 - 10);
    ASSERT_EQ(socks5udp_sendto(app.get(), payload.data(), payload.size(), 0, sa(dst), dlen, sa(svr), svrlen), 0)
        << std::strerror(errno);
    EXPECT_EQ(receive(relay.get()), cat(header4("192.0.2.7", 9), payload));
    errno = 0;
    EXPECT_EQ(socks5udp_sendto(app.get(), payload.data(), payload.size() + 1, 0, sa(dst), dlen, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EMSGSIZE);
    auto dst6 = sockaddr_of(ep("2001:db8::1", 9), &dlen);
    EXPECT_EQ(socks5udp_sendto(app.get(), payload.data(), payload.size(), 0, sa(dst6), dlen, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EMSGSIZE);  // the IPv6 header is 12 bytes longer
}

TEST_F(SendTo, SendsFromTheLeasesSourceIP) {
    // The broker declared 127.0.0.2 as the source of this association.
    FakeLease l2(&relay_ep, ep("127.0.0.2"));  // takes over the relay address
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'm';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    Endpoint from;
    ASSERT_TRUE(receive(relay.get(), &from));
    const Endpoint local = local_of(app.get());
    EXPECT_EQ(from, ep("127.0.0.2", local.port));
    // Auto-bound to the wildcard address: the relay's replies reach it.
    EXPECT_EQ(local, ep("0.0.0.0", local.port));
    send_raw(relay.get(), from, cat(header4("192.0.2.7", 7), Bytes{'R'}));
    char buf[4];
    EXPECT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, 0, nullptr, nullptr), 1);
    EXPECT_EQ(buf[0], 'R');
}

TEST_F(SendTo, SourceIPWinsOverTheSocketsBinding) {
    FakeLease l2(&relay_ep, ep("127.0.0.2"));
    Fd app = udp(AF_INET, "127.0.0.3");
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'm';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    Endpoint from;
    ASSERT_TRUE(receive(relay.get(), &from));
    EXPECT_EQ(from, ep("127.0.0.2", local_of(app.get()).port));
}

TEST_F(SendTo, SourceThatIsNotLocalIsDroppedForTheLease) {
    // E.g. the broker runs in another network namespace.
    FakeLease l2(&relay_ep, ep("192.0.2.77"));
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'n';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    Endpoint from;
    ASSERT_TRUE(receive(relay.get(), &from));
    EXPECT_EQ(from.to_string().substr(0, 10), "127.0.0.1:");
    EXPECT_TRUE(LeaseTable::global().lookup(l2.app.get())->source_refused);
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    ASSERT_TRUE(receive(relay.get()));
    // A renewal that declares a usable source uses it again.
    l2.event({LeaseEventType::Renewed, 2, relay_ep, ep("127.0.0.4"), 0, 0});
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    ASSERT_TRUE(receive(relay.get(), &from));
    EXPECT_EQ(from.to_string().substr(0, 10), "127.0.0.4:");
}

TEST_F(SendTo, FollowsARenewal) {
    Fd relay2 = udp(AF_INET, "127.0.0.1");
    // The new association expects another source IP (another interface).
    lease.event({LeaseEventType::Renewed, 2, local_of(relay2.get()), ep("127.0.0.5"), 0, 0});
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'r';
    // The application still passes the first rendezvous.
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    Endpoint from;
    EXPECT_EQ(receive(relay2.get(), &from), cat(header4("192.0.2.7", 7), Bytes{'r'}));
    EXPECT_EQ(from.to_string().substr(0, 10), "127.0.0.5:");
    EXPECT_FALSE(receive(relay.get(), nullptr, 50));
}

TEST_F(SendTo, RenewingLeaseIsEAGAINUntilRenewed) {
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'w';
    lease.event({LeaseEventType::Renewing, 1, relay_ep, ep("127.0.0.1"), 0, 0});
    errno = 0;
    EXPECT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
    EXPECT_FALSE(receive(relay.get(), nullptr, 50)) << "sent to the relay that ended";
    Fd relay2 = udp(AF_INET, "127.0.0.1");
    lease.event({LeaseEventType::Renewed, 2, local_of(relay2.get()), ep("127.0.0.1"), 0, 0});
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    EXPECT_EQ(receive(relay2.get()), cat(header4("192.0.2.7", 7), Bytes{'w'}));
}

TEST_F(SendTo, LostLeaseIsENOTCONN) {
    lease.event({LeaseEventType::Lost, 0, {}, {}, ENOTCONN, S5_ELOST});
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'l';
    errno = 0;
    EXPECT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, ENOTCONN);
    EXPECT_EQ(socks5_errno, S5_ELOST);
    EXPECT_FALSE(receive(relay.get(), nullptr, 50));
}

TEST_F(SendTo, BrokerGoneIsLost) {
    lease.broker = Fd();  // EOF on the lease socket
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'l';
    EXPECT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, ENOTCONN);
    EXPECT_EQ(socks5_errno, S5_ELOST);
}

TEST_F(SendTo, UnknownRendezvousIsUsedAsGiven) {
    Fd other = udp(AF_INET, "127.0.0.1");
    socklen_t olen;
    auto osvr = sockaddr_of(local_of(other.get()), &olen);
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'u';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(osvr), olen), 0) << std::strerror(errno);
    EXPECT_EQ(receive(other.get()), cat(header4("192.0.2.7", 7), Bytes{'u'}));
}

TEST_F(SendTo, ClosedLeaseRendezvousIsUsedAsGiven) {
    const int fd = lease.app.get();
    lease.app = Fd();  // the application closed its lease
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'c';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    EXPECT_TRUE(receive(relay.get()));
    EXPECT_FALSE(LeaseTable::global().lookup(fd));
}

TEST_F(SendTo, ArgumentErrors) {
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'e';
    auto expect = [&](int s, sockaddr* d, size_t dl, sockaddr* v, size_t vl, int want) {
        errno = 0;
        EXPECT_EQ(socks5udp_sendto(s, &m, 1, 0, d, dl, v, vl), -1);
        EXPECT_EQ(errno, want) << "got " << std::strerror(errno) << ", want " << std::strerror(want);
        EXPECT_EQ(socks5_errno, 0);
    };
    int closed = ::open("/dev/null", O_RDONLY);
    ::close(closed);
    expect(closed, sa(dst), dlen, sa(svr), svrlen, EBADF);
    expect(closed, nullptr, 0, sa(svr), svrlen, EBADF);  // socket errors first
    Fd file(::open("/dev/null", O_RDONLY));
    expect(file.get(), sa(dst), dlen, sa(svr), svrlen, ENOTSOCK);
    Fd tcp(::socket(AF_INET, SOCK_STREAM, 0));
    expect(tcp.get(), sa(dst), dlen, sa(svr), svrlen, EINVAL);
    Fd unix_dgram(::socket(AF_UNIX, SOCK_DGRAM, 0));
    expect(unix_dgram.get(), sa(dst), dlen, sa(svr), svrlen, EINVAL);
    expect(lease.app.get(), sa(dst), dlen, sa(svr), svrlen, EINVAL);  // the lease itself
    expect(file.get(), nullptr, 0, sa(svr), svrlen, ENOTSOCK);
    expect(app.get(), nullptr, dlen, sa(svr), svrlen, EINVAL);
    expect(app.get(), sa(dst), 1, sa(svr), svrlen, EINVAL);
    expect(app.get(), sa(dst), sizeof(sockaddr_in) - 1, sa(svr), svrlen, EINVAL);
    expect(app.get(), sa(dst), dlen, nullptr, 0, EINVAL);
    expect(app.get(), sa(dst), dlen, sa(svr), 4, EINVAL);
    auto dst6 = sockaddr_of(ep("2001:db8::1", 7));
    expect(app.get(), sa(dst6), sizeof(sockaddr_in), sa(svr), svrlen, EINVAL);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    expect(app.get(), reinterpret_cast<sockaddr*>(&un), sizeof un, sa(svr), svrlen, EAFNOSUPPORT);
    expect(app.get(), sa(dst), dlen, reinterpret_cast<sockaddr*>(&un), sizeof un, EAFNOSUPPORT);
}

TEST_F(SendTo, ADescriptorReusedForAnotherKindOfSocketIsCheckedAgain) {
    Fd app = udp(AF_INET);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'a';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0);
    ASSERT_TRUE(receive(relay.get()));
    Fd tcp(::socket(AF_INET, SOCK_STREAM, 0));
    ASSERT_EQ(::dup2(tcp.get(), app.get()), app.get());
    EXPECT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EINVAL);
    ::close(app.get());
    EXPECT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EBADF);
}

TEST(SendTo6, IPv6RelayFromAnIPv6Socket) {
    Fd relay = udp(AF_INET6, "::1");
    Endpoint r = local_of(relay.get());
    FakeLease lease(&r, ep("::1"));
    socklen_t svrlen, dlen;
    auto svr = lease.rendezvous(&svrlen);
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    Fd app = udp(AF_INET6);
    char m = '6';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    Endpoint from;
    EXPECT_EQ(receive(relay.get(), &from), cat(header4("192.0.2.7", 7), Bytes{'6'}));
    EXPECT_EQ(from.to_string().substr(0, 6), "[::1]:");
}

TEST(SendTo6, IPv4RelayFromADualStackSocket) {
    Fd relay = udp(AF_INET, "127.0.0.1");
    Endpoint r = local_of(relay.get());
    FakeLease lease(&r, ep("127.0.0.2"));
    socklen_t svrlen, dlen;
    auto svr = lease.rendezvous(&svrlen);
    auto dst = sockaddr_of(ep("2001:db8::5", 7), &dlen);
    Fd app = udp(AF_INET6);
    char m = 'd';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    Endpoint from;
    EXPECT_EQ(receive(relay.get(), &from), cat(header6("2001:db8::5", 7), Bytes{'d'}));
    EXPECT_EQ(from.to_string().substr(0, 10), "127.0.0.2:");
}

// ---- socks5udp_recvfrom ---------------------------------------------------------

class RecvFrom : public ::testing::TestWithParam<int> {
protected:
    int family() const { return GetParam(); }
    const char* loopback() const { return family() == AF_INET ? "127.0.0.1" : "::1"; }
    Fd relay = udp(family(), loopback());
    Endpoint relay_ep = local_of(relay.get());
    FakeLease lease{&relay_ep, ep(loopback())};
    Fd app = udp(family(), loopback());
    Endpoint app_ep = local_of(app.get());

    void from_relay(const Bytes& b) { send_raw(relay.get(), app_ep, b); }
};

INSTANTIATE_TEST_SUITE_P(Loopback, RecvFrom, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return info.param == AF_INET ? "IPv4" : "IPv6"; });

TEST_P(RecvFrom, StripsAnIPv4Header) {
    from_relay(cat(header4("10.1.2.3", 7777), Bytes{'a', 'b', 'c'}));
    char buf[16];
    sockaddr_storage from{};
    socklen_t flen = sizeof from;
    ASSERT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, 0, sa(from), &flen), 3) << std::strerror(errno);
    EXPECT_EQ(std::string(buf, 3), "abc");
    ASSERT_EQ(flen, sizeof(sockaddr_in));
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(from), flen), ep("10.1.2.3", 7777));
}

TEST_P(RecvFrom, StripsAnIPv6Header) {
    from_relay(cat(header6("2001:db8::42", 443), pattern(40)));
    Bytes buf(64);
    sockaddr_storage from{};
    socklen_t flen = sizeof from;
    ASSERT_EQ(socks5udp_recvfrom(app.get(), buf.data(), buf.size(), 0, sa(from), &flen), 40) << std::strerror(errno);
    EXPECT_EQ(Bytes(buf.begin(), buf.begin() + 40), pattern(40));
    ASSERT_EQ(flen, sizeof(sockaddr_in6));
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(from), flen), ep("2001:db8::42", 443));
}

// Every split of header, payload and buffer: payloads that fit, exactly
// fill, or overflow Len, with Len below, at and above the 12 bytes an IPv6
// header spills into the buffer. Bytes past Len must stay untouched.
TEST_P(RecvFrom, EveryLengthCombination) {
    for (bool v6 : {false, true}) {
        for (size_t plen : {0, 1, 5, 11, 12, 13, 23, 24, 25, 100}) {
            for (size_t len : {0, 1, 5, 11, 12, 13, 22, 23, 24, 25, 99, 100, 101, 200}) {
                SCOPED_TRACE("v6 header " + std::to_string(v6) + " payload " + std::to_string(plen) + " Len " +
                             std::to_string(len));
                const Bytes payload = pattern(plen, static_cast<uint8_t>(plen + len));
                const Bytes hdr = v6 ? header6("2001:db8::9", 9) : header4("10.0.0.9", 9);
                for (int flags : {0, int{MSG_TRUNC}}) {
                    from_relay(cat(hdr, payload));
                    Bytes buf(len + 16, 0xAA);
                    ssize_t n = socks5udp_recvfrom(app.get(), buf.data(), len, flags, nullptr, nullptr);
                    const size_t want = std::min(plen, len);
                    ASSERT_EQ(n, static_cast<ssize_t>(flags ? plen : want)) << std::strerror(errno);
                    EXPECT_EQ(Bytes(buf.begin(), buf.begin() + static_cast<long>(want)),
                              Bytes(payload.begin(), payload.begin() + static_cast<long>(want)));
                    for (size_t i = len; i < buf.size(); ++i) ASSERT_EQ(buf[i], 0xAA) << "written past Len at " << i;
                }
            }
        }
    }
}

TEST_P(RecvFrom, DropsWhatIsNotAGoodDatagramFromACurrentRelay) {
    Fd stranger = udp(family(), loopback());
    send_raw(stranger.get(), app_ep, cat(header4("10.0.0.1", 1), Bytes{'s'}));  // not a relay
    from_relay(cat(header4("10.0.0.1", 1, /*frag*/ 1), Bytes{'f'}));          // FRAG != 0
    Bytes rsv = cat(header4("10.0.0.1", 1), Bytes{'r'});
    rsv[1] = 1;
    from_relay(rsv);                                                          // RSV != 0
    from_relay(Bytes{0, 0, 0, 3, 4, 'h', 'o', 's', 't', 0, 53, 'd'});          // ATYP 3
    from_relay(Bytes{0, 0, 0, 9, 1, 2, 3, 4, 0, 53, 'u'});                      // unknown ATYP
    from_relay(Bytes{0, 0, 0, 1, 1, 2, 3});                                     // short
    from_relay(Bytes{});                                                        // empty
    from_relay(cat(header4("10.0.0.1", 1), Bytes{'o', 'k'}));
    char buf[8];
    ASSERT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, 0, nullptr, nullptr), 2) << std::strerror(errno);
    EXPECT_EQ(std::string(buf, 2), "ok");
    // Nothing good left: non-blocking returns EAGAIN rather than waiting.
    from_relay(cat(header4("10.0.0.1", 1, 2), Bytes{'f'}));
    errno = 0;
    EXPECT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, MSG_DONTWAIT, nullptr, nullptr), -1);
    EXPECT_EQ(errno, EAGAIN);
    int fl = fcntl(app.get(), F_GETFL);
    ASSERT_EQ(fcntl(app.get(), F_SETFL, fl | O_NONBLOCK), 0);
    send_raw(stranger.get(), app_ep, cat(header4("10.0.0.1", 1), Bytes{'s'}));
    EXPECT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, 0, nullptr, nullptr), -1);
    EXPECT_EQ(errno, EAGAIN);
}

TEST_P(RecvFrom, OldRelayIsDroppedAfterARenewal) {
    Fd relay2 = udp(family(), loopback());
    lease.event({LeaseEventType::Renewed, 2, local_of(relay2.get()), ep(loopback()), 0, 0});
    socklen_t svrlen;
    auto svr = lease.rendezvous(&svrlen);
    socklen_t dlen;
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    char m = 'x';
    // Sending applies the renewal (the library only sends to a relay it knows).
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0) << std::strerror(errno);
    ASSERT_TRUE(receive(relay2.get()));
    from_relay(cat(header4("10.0.0.1", 1), Bytes{'o'}));
    send_raw(relay2.get(), app_ep, cat(header4("10.0.0.1", 1), Bytes{'n'}));
    char buf[8];
    ASSERT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, 0, nullptr, nullptr), 1);
    EXPECT_EQ(buf[0], 'n');
}

TEST_P(RecvFrom, FromIsTruncatedToFromLen) {
    from_relay(cat(header6("2001:db8::42", 443), Bytes{'p'}));
    sockaddr_storage from;
    std::memset(&from, 0x55, sizeof from);
    socklen_t flen = 4;
    char buf[4];
    ASSERT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, 0, sa(from), &flen), 1);
    EXPECT_EQ(flen, sizeof(sockaddr_in6));
    sa_family_t fam;
    std::memcpy(&fam, &from, sizeof fam);
    EXPECT_EQ(fam, AF_INET6);
    EXPECT_EQ(reinterpret_cast<uint8_t*>(&from)[4], 0x55);
}

TEST_P(RecvFrom, PeekLeavesTheGoodDatagramQueued) {
    from_relay(cat(header4("10.0.0.1", 1, 1), Bytes{'f'}));
    from_relay(cat(header4("10.0.0.1", 1), Bytes{'g'}));
    char buf[4];
    ASSERT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, MSG_PEEK, nullptr, nullptr), 1);
    EXPECT_EQ(buf[0], 'g');
    buf[0] = 0;
    ASSERT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, MSG_DONTWAIT, nullptr, nullptr), 1);
    EXPECT_EQ(buf[0], 'g');
}

TEST_P(RecvFrom, ArgumentErrors) {
    char buf[4];
    socklen_t flen = 0;
    int closed = ::open("/dev/null", O_RDONLY);
    ::close(closed);
    EXPECT_EQ(socks5udp_recvfrom(closed, buf, sizeof buf, 0, nullptr, &flen), -1);
    EXPECT_EQ(errno, EBADF);
    Fd file(::open("/dev/null", O_RDONLY));
    EXPECT_EQ(socks5udp_recvfrom(file.get(), buf, sizeof buf, 0, nullptr, nullptr), -1);
    EXPECT_EQ(errno, ENOTSOCK);
    Fd tcp(::socket(AF_INET, SOCK_STREAM, 0));
    EXPECT_EQ(socks5udp_recvfrom(tcp.get(), buf, sizeof buf, 0, nullptr, nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
    sockaddr_storage from;
    EXPECT_EQ(socks5udp_recvfrom(app.get(), buf, sizeof buf, 0, sa(from), nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
}

// ---- socks5udp_sendmmsg / socks5udp_recvmmsg ------------------------------------

TEST_F(SendTo, SendmmsgFramesEachDatagramForItsOwnTarget) {
    Fd app = udp(AF_INET);
    auto d1 = sockaddr_of(ep("192.0.2.7", 5353));
    auto d2 = sockaddr_of(ep("2001:db8::1", 53));
    char a[] = "he", b[] = "llo", c[] = "x";
    iovec iov1[2] = {{a, 2}, {b, 3}};   // two iovecs: still one datagram
    iovec iov2[1] = {{c, 1}};
    mmsghdr v[2]{};
    v[0].msg_hdr.msg_name = &d1;
    v[0].msg_hdr.msg_namelen = sizeof(sockaddr_in);
    v[0].msg_hdr.msg_iov = iov1;
    v[0].msg_hdr.msg_iovlen = 2;
    v[1].msg_hdr.msg_name = &d2;
    v[1].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
    v[1].msg_hdr.msg_iov = iov2;
    v[1].msg_hdr.msg_iovlen = 1;
    ASSERT_EQ(socks5udp_sendmmsg(app.get(), v, 2, 0, sa(svr), svrlen), 2) << std::strerror(errno);
    EXPECT_EQ(v[0].msg_len, 5u);
    EXPECT_EQ(v[1].msg_len, 1u);
    EXPECT_EQ(receive(relay.get()), cat(header4("192.0.2.7", 5353), Bytes{'h', 'e', 'l', 'l', 'o'}));
    EXPECT_EQ(receive(relay.get()), cat(header6("2001:db8::1", 53), Bytes{'x'}));
    EXPECT_EQ(socks5udp_sendmmsg(app.get(), v, 0, 0, sa(svr), svrlen), 0);
}

TEST_F(SendTo, SendmmsgStopsBeforeABadMessage) {
    Fd app = udp(AF_INET);
    auto d = sockaddr_of(ep("192.0.2.7", 7));
    char m = 'm';
    iovec iov{&m, 1};
    mmsghdr v[3]{};
    for (auto& x : v) {
        x.msg_hdr.msg_name = &d;
        x.msg_hdr.msg_namelen = sizeof(sockaddr_in);
        x.msg_hdr.msg_iov = &iov;
        x.msg_hdr.msg_iovlen = 1;
    }
    v[1].msg_hdr.msg_name = nullptr;   // no target
    EXPECT_EQ(socks5udp_sendmmsg(app.get(), v, 3, 0, sa(svr), svrlen), 1);
    EXPECT_TRUE(receive(relay.get()));
    EXPECT_FALSE(receive(relay.get(), nullptr, 50)) << "sent past the bad message";
    errno = 0;
    EXPECT_EQ(socks5udp_sendmmsg(app.get(), v + 1, 2, 0, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EINVAL);
    // Too large: header + payload over 65507.
    Bytes big(65507);
    iovec bigiov{big.data(), big.size()};
    v[2].msg_hdr.msg_iov = &bigiov;
    errno = 0;
    EXPECT_EQ(socks5udp_sendmmsg(app.get(), v + 2, 1, 0, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EMSGSIZE);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    v[2].msg_hdr.msg_name = &un;
    v[2].msg_hdr.msg_namelen = sizeof un;
    v[2].msg_hdr.msg_iov = &iov;
    errno = 0;
    EXPECT_EQ(socks5udp_sendmmsg(app.get(), v + 2, 1, 0, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EAFNOSUPPORT);
}

TEST_F(SendTo, SendmmsgFollowsTheLease) {
    Fd app = udp(AF_INET);
    auto d = sockaddr_of(ep("192.0.2.7", 7));
    char m = 'r';
    iovec iov{&m, 1};
    mmsghdr v{};
    v.msg_hdr.msg_name = &d;
    v.msg_hdr.msg_namelen = sizeof(sockaddr_in);
    v.msg_hdr.msg_iov = &iov;
    v.msg_hdr.msg_iovlen = 1;
    lease.event({LeaseEventType::Renewing, 1, relay_ep, ep("127.0.0.1"), 0, 0});
    errno = 0;
    EXPECT_EQ(socks5udp_sendmmsg(app.get(), &v, 1, 0, sa(svr), svrlen), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
    Fd relay2 = udp(AF_INET, "127.0.0.1");
    lease.event({LeaseEventType::Renewed, 2, local_of(relay2.get()), ep("127.0.0.1"), 0, 0});
    ASSERT_EQ(socks5udp_sendmmsg(app.get(), &v, 1, 0, sa(svr), svrlen), 1) << std::strerror(errno);
    EXPECT_EQ(receive(relay2.get()), cat(header4("192.0.2.7", 7), Bytes{'r'}));
}

TEST_P(RecvFrom, RecvmmsgKeepsTheGoodDatagramsInOrder) {
    Fd stranger = udp(family(), loopback());
    from_relay(cat(header4("10.0.0.1", 1), Bytes{'a', 'b', 'c'}));
    send_raw(stranger.get(), app_ep, cat(header4("10.0.0.1", 1), Bytes{'s'}));   // not a relay
    from_relay(cat(header4("10.0.0.1", 1, /*frag*/ 1), Bytes{'f'}));            // FRAG != 0
    from_relay(cat(header6("2001:db8::42", 443), pattern(40)));
    from_relay(cat(header4("10.0.0.2", 2), pattern(30)));                        // truncated below
    struct Slot {
        Bytes buf = Bytes(64, 0xAA);
        iovec iov{};
        sockaddr_storage from{};
    } slots[5];
    mmsghdr v[5]{};
    for (int i = 0; i < 5; ++i) {
        slots[i].iov = {slots[i].buf.data(), i == 2 ? 10u : 64u};
        v[i].msg_hdr.msg_iov = &slots[i].iov;
        v[i].msg_hdr.msg_iovlen = 1;
        v[i].msg_hdr.msg_name = &slots[i].from;
        v[i].msg_hdr.msg_namelen = sizeof slots[i].from;
        v[i].msg_hdr.msg_controllen = 99;   // must come back 0
    }
    // Blocking, no MSG_WAITFORONE: recvmmsg waits for all five, three are kept.
    ASSERT_EQ(socks5udp_recvmmsg(app.get(), v, 5, 0, nullptr), 3) << std::strerror(errno);
    EXPECT_EQ(v[0].msg_len, 3u);
    EXPECT_EQ(std::string(slots[0].buf.begin(), slots[0].buf.begin() + 3), "abc");
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(slots[0].from), v[0].msg_hdr.msg_namelen), ep("10.0.0.1", 1));
    EXPECT_EQ(v[0].msg_hdr.msg_flags, 0);
    EXPECT_EQ(v[0].msg_hdr.msg_controllen, 0u);
    EXPECT_EQ(v[1].msg_len, 40u);
    EXPECT_EQ(Bytes(slots[1].buf.begin(), slots[1].buf.begin() + 40), pattern(40));
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(slots[1].from), v[1].msg_hdr.msg_namelen), ep("2001:db8::42", 443));
    EXPECT_EQ(v[2].msg_len, 10u);
    EXPECT_EQ(v[2].msg_hdr.msg_flags & MSG_TRUNC, MSG_TRUNC);
    const Bytes p30 = pattern(30);
    EXPECT_EQ(Bytes(slots[2].buf.begin(), slots[2].buf.begin() + 10), Bytes(p30.begin(), p30.begin() + 10));
    EXPECT_EQ(slots[2].buf[10], 0xAA) << "written past the iovec";
    // Nothing good left: EAGAIN, without blocking.
    send_raw(stranger.get(), app_ep, Bytes{'z'});
    errno = 0;
    EXPECT_EQ(socks5udp_recvmmsg(app.get(), v, 5, MSG_DONTWAIT, nullptr), -1);
    EXPECT_EQ(errno, EAGAIN);
    errno = 0;
    EXPECT_EQ(socks5udp_recvmmsg(app.get(), v, 5, MSG_PEEK, nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
}

// ---- socks5udp_current and the repeated socks5udp_associate ---------------------

TEST(Current, FollowsTheLease) {
    FakeLease lease(nullptr);
    sockaddr_storage rv{};
    errno = 0;
    EXPECT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof rv), -1);
    EXPECT_EQ(errno, EINPROGRESS);
    const Endpoint r1 = ep("192.0.2.1", 4000), r2 = ep("2001:db8::1", 4001);
    lease.event({LeaseEventType::Ready, 1, r1, ep("127.0.0.1"), 0, 0});
    ASSERT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof(sockaddr_in)), 0) << std::strerror(errno);
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(rv), sizeof rv), r1);
    lease.event({LeaseEventType::Renewed, 2, r2, ep("::1"), 0, 0});
    EXPECT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof(sockaddr_in)), -1);
    EXPECT_EQ(errno, EINVAL);  // too small for the IPv6 relay
    ASSERT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof rv), 0);
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(rv), sizeof rv), r2);
    lease.event({LeaseEventType::Lost, 0, {}, {}, ENOTCONN, S5_ELOST});
    EXPECT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof rv), -1);
    EXPECT_EQ(errno, ENOTCONN);
    EXPECT_EQ(socks5_errno, S5_ELOST);
}

TEST(Current, RenewingIsEAGAIN) {
    const Endpoint r1 = ep("192.0.2.1", 4000), r2 = ep("192.0.2.2", 4001);
    FakeLease lease(&r1, ep("127.0.0.1"));
    sockaddr_storage rv{};
    ASSERT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof rv), 0) << std::strerror(errno);
    lease.event({LeaseEventType::Renewing, 1, r1, ep("127.0.0.1"), 0, 0});
    pollfd p{lease.app.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 1);  // readable: the application asks
    rv = {};
    errno = 0;
    EXPECT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof rv), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
    EXPECT_EQ(rv.ss_family, 0);
    EXPECT_EQ(::poll(&p, 1, 0), 0);  // consumed: readable again on the outcome
    lease.event({LeaseEventType::Renewed, 2, r2, ep("127.0.0.1"), 0, 0});
    EXPECT_EQ(::poll(&p, 1, 0), 1);
    ASSERT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof rv), 0) << std::strerror(errno);
    EXPECT_EQ(socks5_errno, 0);
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(rv), sizeof rv), r2);
}

TEST(Current, NotALeaseIsEINVAL) {
    sockaddr_storage rv{};
    Fd u = udp(AF_INET);
    EXPECT_EQ(socks5udp_current(u.get(), sa(rv), sizeof rv), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(socks5udp_current(-1, sa(rv), sizeof rv), -1);
    EXPECT_EQ(errno, EINVAL);
    FakeLease lease(nullptr);
    EXPECT_EQ(socks5udp_current(lease.app.get(), nullptr, sizeof rv), -1);
    EXPECT_EQ(errno, EINVAL);
}

TEST(AssociateAgain, CompletesAPendingLeaseLikeConnect) {
    FakeLease lease(nullptr);
    sockaddr_storage dst = sockaddr_of(ep("192.0.2.7", 7));
    const sockaddr_storage before = dst;
    errno = 0;
    EXPECT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, EALREADY);
    EXPECT_EQ(std::memcmp(&dst, &before, sizeof dst), 0);
    const Endpoint r = ep("192.0.2.1", 4000);
    lease.event({LeaseEventType::Ready, 1, r, ep("127.0.0.1"), 0, 0});
    pollfd p{lease.app.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 1);  // readable: time to call again
    ASSERT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof dst, nullptr, 0), 0) << std::strerror(errno);
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(dst), sizeof dst), r);
    EXPECT_EQ(::poll(&p, 1, 0), 0);  // the event was consumed
    EXPECT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, EISCONN);
}

// Ready and then Renewing before the application called again: the
// association was made and its rendezvous stays valid across the renewal.
TEST(AssociateAgain, CompletesALeaseThatIsAlreadyRenewing) {
    FakeLease lease(nullptr);
    const Endpoint r = ep("192.0.2.1", 4000);
    lease.event({LeaseEventType::Ready, 1, r, ep("127.0.0.1"), 0, 0});
    lease.event({LeaseEventType::Renewing, 1, r, ep("127.0.0.1"), 0, 0});
    sockaddr_storage dst = sockaddr_of(ep("192.0.2.7", 7));
    ASSERT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof dst, nullptr, 0), 0) << std::strerror(errno);
    EXPECT_EQ(*Endpoint::from_sockaddr(sa(dst), sizeof dst), r);
    sockaddr_storage rv{};
    EXPECT_EQ(socks5udp_current(lease.app.get(), sa(rv), sizeof rv), -1);
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
}

TEST(AssociateAgain, ReportsAFailedPendingLease) {
    FakeLease lease(nullptr);
    lease.event({LeaseEventType::Lost, 0, {}, {}, ECONNREFUSED, S5_ECONNREFUSED});
    sockaddr_storage dst = sockaddr_of(ep("192.0.2.7", 7));
    const sockaddr_storage before = dst;
    EXPECT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, ECONNREFUSED);
    EXPECT_EQ(socks5_errno, S5_ECONNREFUSED);
    EXPECT_EQ(std::memcmp(&dst, &before, sizeof dst), 0);
}

TEST(AssociateAgain, BrokerGoneWhilePendingIsLost) {
    FakeLease lease(nullptr);
    lease.broker = Fd();
    sockaddr_storage dst = sockaddr_of(ep("192.0.2.7", 7));
    EXPECT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, ENOTCONN);
    EXPECT_EQ(socks5_errno, S5_ELOST);
}

TEST(AssociateAgain, RelayTooLargeForDstIsEINVALAndStaysReady) {
    FakeLease lease(nullptr);
    lease.event({LeaseEventType::Ready, 1, ep("2001:db8::1", 4000), ep("::1"), 0, 0});
    sockaddr_storage dst = sockaddr_of(ep("192.0.2.7", 7));
    EXPECT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof(sockaddr_in), nullptr, 0), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(socks5udp_associate(lease.app.get(), sa(dst), sizeof dst, nullptr, 0), 0);
}

TEST(AssociateAgain, OtherSeqpacketSocketIsEINVAL) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    Fd a(sv[0]), b(sv[1]);
    sockaddr_storage dst = sockaddr_of(ep("192.0.2.7", 7));
    EXPECT_EQ(socks5udp_associate(a.get(), sa(dst), sizeof dst, nullptr, 0), -1);
    EXPECT_EQ(errno, EINVAL);
}

// ---- threads ---------------------------------------------------------------------

// Senders in several threads while the "broker" moves the lease back and
// forth: every datagram reaches one of the relays, none fails, and once the
// renewals stop everything goes to the last relay.
TEST(Threads, SendersFollowRenewalsConcurrently) {
    Fd r1 = udp(AF_INET, "127.0.0.1"), r2 = udp(AF_INET, "127.0.0.1");
    int big = 4 << 20;
    setsockopt(r1.get(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(r2.get(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    const Endpoint e1 = local_of(r1.get()), e2 = local_of(r2.get());
    FakeLease lease(&e1, ep("127.0.0.1"));
    socklen_t svrlen, dlen;
    auto svr = lease.rendezvous(&svrlen);
    auto dst = sockaddr_of(ep("192.0.2.7", 7), &dlen);
    constexpr int kThreads = 4, kEach = 500;
    std::atomic<int> failures{0}, got{0};
    std::atomic<bool> done{false};
    // Received as they come: a default rmem_max could not queue them all.
    std::thread receiver([&] {
        pollfd p[2] = {{r1.get(), POLLIN, 0}, {r2.get(), POLLIN, 0}};
        while (!done || ::poll(p, 2, 0) > 0) {
            if (::poll(p, 2, 100) <= 0) continue;
            char buf[64];
            for (auto& q : p)
                while (::recv(q.fd, buf, sizeof buf, MSG_DONTWAIT) > 0) ++got;
        }
    });
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&] {
            Fd app = udp(AF_INET);
            sockaddr_storage d = dst, v = svr;
            char m = 't';
            for (int i = 0; i < kEach; ++i)
                if (socks5udp_sendto(app.get(), &m, 1, 0, sa(d), dlen, sa(v), svrlen) != 0) ++failures;
        });
    for (uint32_t g = 2; g < 200; ++g) {
        lease.event({LeaseEventType::Renewed, g, g % 2 ? e1 : e2, ep("127.0.0.1"), 0, 0});
        std::this_thread::yield();
    }
    for (auto& t : threads) t.join();
    EXPECT_TRUE(eventually_true([&] { return got.load() == kThreads * kEach; }));
    done = true;
    receiver.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(got.load(), kThreads * kEach);
    // Generation 199 (odd) named r1.
    Fd app = udp(AF_INET);
    char m = 'z';
    ASSERT_EQ(socks5udp_sendto(app.get(), &m, 1, 0, sa(dst), dlen, sa(svr), svrlen), 0);
    EXPECT_TRUE(receive(r1.get()));
}

// ---- socks5_getserv without a bus -----------------------------------------------

TEST(Getserv, ArgumentErrorsAndNoBus) {
    // A bus that is not there: the library's first connection fails.
    ::setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/s5broker-test-bus", 1);
    sockaddr_storage dst = sockaddr_of(ep("192.0.2.1", 53));
    errno = 0;
    EXPECT_EQ(socks5_getserv(nullptr, sizeof dst), nullptr);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(socks5_getserv(sa(dst), 2), nullptr);
    EXPECT_EQ(errno, EINVAL);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    EXPECT_EQ(socks5_getserv(reinterpret_cast<sockaddr*>(&un), sizeof un), nullptr);
    EXPECT_EQ(errno, EAFNOSUPPORT);
    EXPECT_EQ(socks5_getserv(reinterpret_cast<sockaddr*>(16), sizeof dst), nullptr);
    EXPECT_EQ(errno, EFAULT);
    EXPECT_EQ(socks5_errno, 0);
    EXPECT_EQ(socks5_getserv(sa(dst), sizeof(sockaddr_in)), nullptr);
    EXPECT_EQ(errno, ECONNREFUSED);
    EXPECT_EQ(socks5_errno, S5_ENOSERV);
}

}  // namespace
