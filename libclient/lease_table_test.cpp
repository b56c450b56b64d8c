// The lease table without a broker: a socketpair stands in for the lease fd
// and the test writes the broker's lease events on the other end.
#include "lease_table.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "s5broker/socks5.h"

namespace {

using s5::client::LeaseInfo;
using s5::client::LeaseState;
using s5::client::LeaseTable;
using s5::wire::Endpoint;
using s5::wire::LeaseEvent;
using s5::wire::LeaseEventType;

Endpoint ep(const char* ip, uint16_t port = 0) { return *Endpoint::parse_ip(ip, port); }

// One lease socketpair: `app` is what the library holds, `broker` the end
// the test writes events on.
struct Pair {
    int app = -1, broker = -1;
    Pair() {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0) {
            app = sv[0];
            broker = sv[1];
        }
    }
    ~Pair() {
        close_app();
        close_broker();
    }
    void close_app() {
        if (app >= 0) ::close(app);
        app = -1;
    }
    void close_broker() {
        if (broker >= 0) ::close(broker);
        broker = -1;
    }
    void send(const LeaseEvent& ev) const {
        auto rec = s5::wire::encode_lease_event(ev);
        ASSERT_EQ(::send(broker, rec.data(), rec.size(), 0), static_cast<ssize_t>(rec.size()));
    }
    // As the broker sends a Ready/Renewed with its claim socket: `fds`
    // ride as SCM_RIGHTS (the flag is the event's own).
    void send_with(const LeaseEvent& ev, std::vector<int> fds) const {
        auto rec = s5::wire::encode_lease_event(ev);
        iovec iov{rec.data(), rec.size()};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        std::vector<char> control(CMSG_SPACE(fds.size() * sizeof(int)));
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
        std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
        ASSERT_EQ(::sendmsg(broker, &msg, 0), static_cast<ssize_t>(rec.size()));
    }
};

// A UDP socket bound to 127.0.0.1 and a free port, as the broker's claim
// socket is; its inode tells it apart.
int bound_udp() {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return -1;
    return fd;
}
ino_t inode(int fd) {
    struct stat st;
    return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}
size_t open_fds() {
    size_t n = 0;
    for (int fd = 0; fd < 1024; ++fd)
        if (fcntl(fd, F_GETFD) >= 0) ++n;
    return n;
}

LeaseEvent ready(uint32_t gen, const Endpoint& relay, const Endpoint& source) {
    return {LeaseEventType::Ready, gen, relay, source, 0, 0};
}
LeaseEvent renewed(uint32_t gen, const Endpoint& relay, const Endpoint& source) {
    return {LeaseEventType::Renewed, gen, relay, source, 0, 0};
}
LeaseEvent lost(int err, int s5err) { return {LeaseEventType::Lost, 0, {}, {}, err, s5err}; }
LeaseEvent renewing(uint32_t gen, const Endpoint& relay, const Endpoint& source) {
    return {LeaseEventType::Renewing, gen, relay, source, 0, 0};
}

const Endpoint kR1 = ep("192.0.2.1", 40001);
const Endpoint kR2 = ep("192.0.2.2", 40002);
const Endpoint kS1 = ep("198.51.100.1");
const Endpoint kS2 = ep("198.51.100.2");

TEST(LeaseTable, BlockingAddReadsTheQueuedReadyEvent) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    auto info = t.add(p.app, p.app, &kR1);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Active);
    EXPECT_EQ(info->generation, 1u);
    EXPECT_EQ(info->relay, kR1);
    EXPECT_EQ(info->source, kS1);
    EXPECT_TRUE(info->completed);
    EXPECT_TRUE(t.is_current_relay(kR1));
    // Consumed: the lease socket is no longer readable.
    char b;
    EXPECT_EQ(::recv(p.app, &b, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, EAGAIN);
}

TEST(LeaseTable, AddWithoutReadyEventKeepsTheReplyRelay) {
    LeaseTable t;
    Pair p;
    auto info = t.add(p.app, p.app, &kR1);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Active);
    EXPECT_EQ(info->relay, kR1);
    EXPECT_EQ(info->source.family, 0);  // unknown: the library will not bind
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->relay, kR1);
}

TEST(LeaseTable, BlockingAddReadsOnlyTheReadyEvent) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    p.send(renewed(2, kR2, kS2));  // came right after: left for poll() to see
    auto info = t.add(p.app, p.app, &kR1);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->generation, 1u);
    pollfd pfd{p.app, POLLIN, 0};
    EXPECT_EQ(::poll(&pfd, 1, 0), 1);
    EXPECT_EQ(t.route(kR1)->relay, kR2);
}

TEST(LeaseTable, PendingAddReadsNothing) {
    LeaseTable t;
    Pair p;
    p.send(lost(ECONNREFUSED, 0));  // however soon it comes
    auto info = t.add(p.app, p.app, nullptr);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Pending);
    pollfd pfd{p.app, POLLIN, 0};
    EXPECT_EQ(::poll(&pfd, 1, 0), 1);  // the application is told by poll()
    EXPECT_EQ(t.lookup(p.app)->state, LeaseState::Lost);
}

TEST(LeaseTable, PendingBecomesActiveOnReady) {
    LeaseTable t;
    Pair p;
    auto info = t.add(p.app, p.app, nullptr);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Pending);
    EXPECT_FALSE(info->completed);
    EXPECT_EQ(t.lookup(p.app)->state, LeaseState::Pending);
    EXPECT_FALSE(t.route(kR1));
    p.send(ready(1, kR1, kS1));
    info = t.lookup(p.app);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Active);
    EXPECT_EQ(info->relay, kR1);
    EXPECT_EQ(info->source, kS1);
    EXPECT_FALSE(info->completed);
    t.mark_completed(p.app);
    EXPECT_TRUE(t.lookup(p.app)->completed);
    EXPECT_TRUE(t.route(kR1));
}

TEST(LeaseTable, RenewedMovesTheRelayAndTheOldRendezvousFollows) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(renewed(2, kR2, kS2));
    auto r = t.route(kR1);  // the rendezvous the application holds
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Active);
    EXPECT_EQ(r->generation, 2u);
    EXPECT_EQ(r->relay, kR2);
    EXPECT_EQ(r->source, kS2);
    EXPECT_FALSE(t.is_current_relay(kR1));
    EXPECT_TRUE(t.is_current_relay(kR2));
    // The new relay (as socks5udp_current() reports it) names the lease too.
    auto r2 = t.route(kR2);
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->fd, p.app);
}

// ---- renewing ----------------------------------------------------------------

TEST(LeaseTable, RenewingUntilRenewed) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(renewing(1, kR1, kS1));
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Renewing);
    EXPECT_EQ(r->generation, 1u);
    EXPECT_EQ(r->relay, kR1);  // the ended relay, kept until the next one
    EXPECT_EQ(r->err, 0);
    EXPECT_TRUE(t.is_current_relay(kR1));  // its late datagrams still count
    EXPECT_EQ(t.lookup(p.app)->state, LeaseState::Renewing);
    // Consumed: nothing wakes poll() until the renewal's outcome.
    pollfd pfd{p.app, POLLIN, 0};
    EXPECT_EQ(::poll(&pfd, 1, 0), 0);
    p.send(renewed(2, kR2, kS2));
    EXPECT_EQ(::poll(&pfd, 1, 0), 1);
    r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Active);
    EXPECT_EQ(r->generation, 2u);
    EXPECT_EQ(r->relay, kR2);
    EXPECT_EQ(r->source, kS2);
    EXPECT_FALSE(t.is_current_relay(kR1));
}

TEST(LeaseTable, RenewingOfAnOlderGenerationChangesNothing) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(renewed(3, kR2, kS2));
    p.send(renewing(2, kR1, kS1));  // the end of an association already left
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Active);
    EXPECT_EQ(r->generation, 3u);
    EXPECT_EQ(r->relay, kR2);
}

TEST(LeaseTable, RenewingWaitsForANewerGeneration) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(renewing(1, kR1, kS1));
    p.send(renewing(1, kR1, kS1));                 // repeated: still renewing
    p.send(renewed(1, ep("192.0.2.3", 3), kS1));    // not newer than the ended one
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Renewing);
    EXPECT_EQ(r->relay, kR1);
    p.send(renewed(2, kR2, kS2));
    EXPECT_EQ(t.route(kR1)->state, LeaseState::Active);
}

// The broker keeps only the latest state for an application that does not
// read: a Renewing may stand in for the Renewed before it.
TEST(LeaseTable, RenewingOfANewerGenerationBringsItsRelay) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(renewing(2, kR2, kS2));  // Renewed(2) was replaced by this
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Renewing);
    EXPECT_EQ(r->generation, 2u);
    EXPECT_EQ(r->relay, kR2);
    EXPECT_EQ(r->source, kS2);
    EXPECT_TRUE(t.route(kR2));  // known by that relay too
    p.send(renewed(3, ep("192.0.2.3", 3), kS1));
    r = t.route(kR1);
    EXPECT_EQ(r->state, LeaseState::Active);
    EXPECT_EQ(r->generation, 3u);
}

TEST(LeaseTable, PendingThenRenewingIsReadyAndRenewing) {
    LeaseTable t;
    Pair p;
    ASSERT_TRUE(t.add(p.app, p.app, nullptr));
    p.send(renewing(1, kR1, kS1));  // Ready(1) was replaced by this
    auto info = t.lookup(p.app);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Renewing);
    EXPECT_EQ(info->relay, kR1);
    EXPECT_EQ(info->source, kS1);
    EXPECT_TRUE(t.route(kR1));
}

TEST(LeaseTable, PendingIgnoresARenewingWithoutRelay) {
    LeaseTable t;
    Pair p;
    ASSERT_TRUE(t.add(p.app, p.app, nullptr));
    p.send(renewing(1, {}, {}));
    EXPECT_EQ(t.lookup(p.app)->state, LeaseState::Pending);
}

TEST(LeaseTable, RenewingThenLost) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(renewing(1, kR1, kS1));
    ASSERT_EQ(t.route(kR1)->state, LeaseState::Renewing);
    p.send(lost(ENOTCONN, S5_ELOST));
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Lost);
    EXPECT_EQ(r->s5err, S5_ELOST);
    EXPECT_FALSE(t.is_current_relay(kR1));
}

// Through the C API, on the process's table: Ready -> Renewing (sendto is
// refused, nothing sent) -> Renewed (sendto reaches the new relay, still
// through the first rendezvous).
TEST(LeaseTable, SendtoRefusesWhileRenewingAndFollowsTheRenewal) {
    auto bound_udp = [] {
        int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        EXPECT_EQ(::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len), 0);
        return std::make_pair(s, ep("127.0.0.1", ntohs(a.sin_port)));
    };
    auto [relay1, r1] = bound_udp();
    auto [relay2, r2] = bound_udp();
    const Endpoint src = ep("127.0.0.1");
    LeaseTable& t = LeaseTable::global();
    Pair p;
    p.send(ready(1, r1, src));
    ASSERT_TRUE(t.add(p.app, p.app, &r1));
    int app = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_storage svr{}, dst{};
    const socklen_t svrlen = static_cast<socklen_t>(r1.to_sockaddr(svr));
    const socklen_t dstlen = static_cast<socklen_t>(ep("192.0.2.7", 7).to_sockaddr(dst));
    auto send = [&](char m) {
        return socks5udp_sendto(app, &m, 1, 0, reinterpret_cast<sockaddr*>(&dst), dstlen,
                                reinterpret_cast<sockaddr*>(&svr), svrlen);
    };
    auto received = [](int fd, int timeout_ms) {
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, timeout_ms) != 1) return std::string();
        char buf[64];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        return n > 10 ? std::string(buf + 10, static_cast<size_t>(n) - 10) : std::string();
    };
    ASSERT_EQ(send('a'), 0) << std::strerror(errno);
    EXPECT_EQ(received(relay1, 2000), "a");

    p.send(renewing(1, r1, src));
    errno = 0;
    EXPECT_EQ(send('b'), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
    EXPECT_STRNE(socks5_strerror(S5_ERENEWING), socks5_strerror(S5_ELOST));
    EXPECT_EQ(send('c'), -1);  // and again, until the outcome arrives
    EXPECT_EQ(socks5_errno, S5_ERENEWING);
    EXPECT_EQ(received(relay1, 50), "") << "a datagram went to the dead relay";

    p.send(renewed(2, r2, src));
    ASSERT_EQ(send('d'), 0) << std::strerror(errno);
    EXPECT_EQ(socks5_errno, 0);
    EXPECT_EQ(received(relay2, 2000), "d");
    EXPECT_EQ(received(relay1, 50), "");

    t.remove(p.app);
    ::close(app);
    ::close(relay1);
    ::close(relay2);
}

TEST(LeaseTable, AllQueuedEventsAreReadTheLatestWins) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    for (uint16_t g = 2; g <= 6; ++g) p.send(renewed(g, ep("192.0.2.9", static_cast<uint16_t>(50000 + g)), kS2));
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->generation, 6u);
    EXPECT_EQ(r->relay, ep("192.0.2.9", 50006));
    for (uint16_t g = 2; g <= 5; ++g) EXPECT_FALSE(t.is_current_relay(ep("192.0.2.9", static_cast<uint16_t>(50000 + g))));
    EXPECT_TRUE(t.is_current_relay(ep("192.0.2.9", 50006)));
}

TEST(LeaseTable, OlderOrRepeatedGenerationChangesNothing) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(renewed(3, kR2, kS2));
    p.send(renewed(2, ep("192.0.2.3", 3), kS1));
    p.send(renewed(3, ep("192.0.2.4", 4), kS1));
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->generation, 3u);
    EXPECT_EQ(r->relay, kR2);
}

TEST(LeaseTable, MalformedRecordsAreSkipped) {
    LeaseTable t;
    Pair p;
    ASSERT_TRUE(t.add(p.app, p.app, nullptr));
    char junk[64] = "not a lease event";
    ASSERT_EQ(::send(p.broker, junk, sizeof junk, 0), 64);
    ASSERT_EQ(::send(p.broker, junk, 10, 0), 10);
    p.send(ready(1, kR1, kS1));
    auto info = t.lookup(p.app);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Active);
    EXPECT_EQ(info->relay, kR1);
}

TEST(LeaseTable, LostCarriesTheBrokersErrorAndIsFinal) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.send(lost(ENOTCONN, S5_ELOST));
    p.send(renewed(2, kR2, kS2));  // too late: lost is final
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Lost);
    EXPECT_EQ(r->err, ENOTCONN);
    EXPECT_EQ(r->s5err, S5_ELOST);
    EXPECT_FALSE(t.is_current_relay(kR1));
    EXPECT_FALSE(t.is_current_relay(kR2));
    // Still reported on every call while the application keeps the socket.
    EXPECT_EQ(t.route(kR1)->state, LeaseState::Lost);
    EXPECT_EQ(t.size(), 1u);
}

TEST(LeaseTable, PendingThatFailsReportsWhy) {
    LeaseTable t;
    Pair p;
    ASSERT_TRUE(t.add(p.app, p.app, nullptr));
    p.send(lost(ECONNREFUSED, S5_ESRVFAIL));
    auto info = t.lookup(p.app);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Lost);
    EXPECT_EQ(info->err, ECONNREFUSED);
    EXPECT_EQ(info->s5err, S5_ESRVFAIL);
}

TEST(LeaseTable, LostWithoutReasonIsENOTCONN) {
    LeaseTable t;
    Pair p;
    ASSERT_TRUE(t.add(p.app, p.app, nullptr));
    p.send(lost(0, 0));
    auto info = t.lookup(p.app);
    EXPECT_EQ(info->err, ENOTCONN);
    EXPECT_EQ(info->s5err, S5_ELOST);
}

TEST(LeaseTable, EofIsLost) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    p.close_broker();  // broker restarted, or released the lease
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Lost);
    EXPECT_EQ(r->err, ENOTCONN);
    EXPECT_EQ(r->s5err, S5_ELOST);
    EXPECT_FALSE(t.is_current_relay(kR1));
}

TEST(LeaseTable, EofAfterQueuedEventsAppliesThemFirst) {
    LeaseTable t;
    Pair p;
    ASSERT_TRUE(t.add(p.app, p.app, nullptr));
    p.send(ready(1, kR1, kS1));
    p.send(lost(ETIMEDOUT, 0));
    p.close_broker();
    auto info = t.lookup(p.app);
    EXPECT_EQ(info->state, LeaseState::Lost);
    EXPECT_EQ(info->err, ETIMEDOUT);  // the event's reason, not EOF's
    EXPECT_EQ(info->s5err, 0);
}

TEST(LeaseTable, ClosedDescriptorIsForgotten) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    const int fd = p.app;
    p.close_app();
    EXPECT_FALSE(t.route(kR1));
    EXPECT_FALSE(t.lookup(fd));
    EXPECT_EQ(t.size(), 0u);
    EXPECT_FALSE(t.is_current_relay(kR1));
}

TEST(LeaseTable, ReusedDescriptorNumberIsNotTheLease) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    // The application closes the lease; the number goes to a UDP socket that
    // has a datagram queued.
    int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t alen = sizeof a;
    ASSERT_EQ(::getsockname(u, reinterpret_cast<sockaddr*>(&a), &alen), 0);
    ASSERT_EQ(::sendto(u, "data", 4, 0, reinterpret_cast<sockaddr*>(&a), sizeof a), 4);
    ASSERT_EQ(::dup2(u, p.app), p.app);
    ::close(u);
    EXPECT_FALSE(t.route(kR1));
    EXPECT_EQ(t.size(), 0u);
    // ...and its datagram was not consumed by the table.
    char buf[8];
    EXPECT_EQ(::recv(p.app, buf, sizeof buf, MSG_DONTWAIT), 4);
}

TEST(LeaseTable, ReusedNumberWithAnotherLeaseSocketIsNotTheOldLease) {
    LeaseTable t;
    Pair p, q;
    ASSERT_TRUE(t.add(p.app, p.app, nullptr));
    ASSERT_EQ(::dup2(q.app, p.app), p.app);  // same number, another socket
    EXPECT_FALSE(t.lookup(p.app));
}

TEST(LeaseTable, AddReplacesAnEntryForTheSameNumber) {
    LeaseTable t;
    Pair p, q;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    q.send(ready(1, kR2, kS2));
    ASSERT_TRUE(t.add(p.app, q.app, &kR2));  // before dup3(q.app, p.app)
    EXPECT_EQ(t.size(), 1u);
    EXPECT_FALSE(t.is_current_relay(kR1));
    EXPECT_TRUE(t.is_current_relay(kR2));
    ASSERT_EQ(::dup2(q.app, p.app), p.app);
    EXPECT_FALSE(t.route(kR1));
    auto r = t.route(kR2);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->fd, p.app);
    EXPECT_EQ(r->source, kS2);
}

TEST(LeaseTable, SameRelayForTwoLeasesNewestWins) {
    LeaseTable t;
    Pair p, q;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    q.send(ready(1, kR1, kS2));
    ASSERT_TRUE(t.add(q.app, q.app, &kR1));
    EXPECT_EQ(t.route(kR1)->fd, q.app);
    t.remove(q.app);
    EXPECT_FALSE(t.route(kR1));  // p's index entry was taken over by q
    EXPECT_TRUE(t.is_current_relay(kR1));  // but p still uses that relay
    t.remove(p.app);
    EXPECT_FALSE(t.is_current_relay(kR1));
}

TEST(LeaseTable, IPv4MappedSourcesMatchIPv4Relays) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    EXPECT_TRUE(t.is_current_relay(ep("::ffff:192.0.2.1", 40001)));
    EXPECT_FALSE(t.is_current_relay(ep("::ffff:192.0.2.1", 40002)));
    EXPECT_TRUE(t.route(ep("::ffff:192.0.2.1", 40001)));
}

TEST(LeaseTable, IPv6Relay) {
    LeaseTable t;
    Pair p;
    const Endpoint r6 = ep("2001:db8::1", 1080), s6 = ep("2001:db8::2");
    p.send(ready(1, r6, s6));
    ASSERT_TRUE(t.add(p.app, p.app, &r6));
    auto r = t.route(r6);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->source, s6);
    EXPECT_TRUE(t.is_current_relay(r6));
    EXPECT_FALSE(t.is_current_relay(ep("2001:db8::1", 1081)));
}

TEST(LeaseTable, ManyRenewalsKeepTheFirstRendezvous) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    for (uint16_t g = 2; g <= 40; ++g) {
        p.send(renewed(g, ep("192.0.2.9", static_cast<uint16_t>(50000 + g)), kS1));
        ASSERT_TRUE(t.route(kR1));  // read one at a time
    }
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->relay, ep("192.0.2.9", 50040));
    EXPECT_TRUE(t.route(ep("192.0.2.9", 50039)));
    EXPECT_FALSE(t.route(ep("192.0.2.9", 50002)));  // old renewals are forgotten
}

TEST(LeaseTable, ClosedLeasesAreSweptAsTheTableGrows) {
    LeaseTable t;
    Pair fresh;  // a number none of the others will have
    {
        std::vector<Pair> pairs(64);  // the first sweep is due at 64 entries
        for (auto& p : pairs) ASSERT_TRUE(t.add(p.app, p.app, nullptr));
        EXPECT_EQ(t.size(), 64u);
    }  // all closed, unknown to the table
    ASSERT_TRUE(t.add(fresh.app, fresh.app, nullptr));
    EXPECT_EQ(t.size(), 1u);
}

TEST(LeaseTable, ForkedChildKeepsTheTable) {
    LeaseTable& t = LeaseTable::global();
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        auto r = t.route(kR1);
        _exit(r && r->source == kS1 && r->fd == p.app ? 0 : 1);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    t.remove(p.app);
}

// Direct mode: the descriptor is the TCP control connection itself. Data
// on it (as a server might send) is never read as lease events.
TEST(LeaseTable, DirectAssociationIsActiveAndNeverReadFrom) {
    LeaseTable t;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    const Endpoint relay = ep("127.0.0.1", 5000);
    auto info = t.add_direct(sv[0], relay, ep("::ffff:127.0.0.1", 1234));
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Active);
    EXPECT_TRUE(info->direct);
    EXPECT_TRUE(info->completed);
    EXPECT_EQ(info->relay, relay);
    EXPECT_EQ(info->source, ep("127.0.0.1"));  // normalized, port 0
    EXPECT_TRUE(t.is_current_relay(relay));
    // Bytes and even EOF on the control connection change nothing.
    ASSERT_EQ(::send(sv[1], "xyz", 3, 0), 3);
    ::close(sv[1]);
    auto r = t.route(relay);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, LeaseState::Active);
    auto l = t.lookup(sv[0]);
    ASSERT_TRUE(l);
    EXPECT_EQ(l->state, LeaseState::Active);
    char buf[8];
    EXPECT_EQ(::recv(sv[0], buf, sizeof buf, MSG_DONTWAIT), 3) << "the table consumed the app's bytes";
    // Closed: lookup forgets it.
    ::close(sv[0]);
    EXPECT_FALSE(t.lookup(sv[0]));
    EXPECT_FALSE(t.is_current_relay(relay));
}

}  // namespace

// ---- claim sockets (claim_socket.hpp) -----------------------------------------

LeaseEvent with_socket(LeaseEvent ev) {
    ev.socket = true;
    return ev;
}

TEST(LeaseTableClaim, TheReadySocketIsPutInPlaceAndARenewalsReplacesIt) {
    LeaseTable t;
    Pair p;
    const int claim1 = bound_udp(), claim2 = bound_udp();
    ASSERT_GE(claim1, 0);
    ASSERT_GE(claim2, 0);
    const ino_t ino1 = inode(claim1), ino2 = inode(claim2);
    p.send_with(with_socket(ready(1, kR1, kS1)), {claim1});
    ::close(claim1);  // the table holds its own copy now
    auto info = t.add(p.app, p.app, &kR1);
    ASSERT_TRUE(info);
    EXPECT_TRUE(info->claimed);
    EXPECT_EQ(info->placed, -1);
    const int app_udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_EQ(fcntl(app_udp, F_SETFL, O_NONBLOCK), 0);
    ASSERT_EQ(t.place(p.app, app_udp), 0);
    EXPECT_EQ(inode(app_udp), ino1);
    EXPECT_TRUE(fcntl(app_udp, F_GETFL) & O_NONBLOCK);
    EXPECT_FALSE(fcntl(app_udp, F_GETFD) & FD_CLOEXEC);
    EXPECT_EQ(t.route(kR1)->placed, app_udp);

    p.send_with(with_socket(renewed(2, kR2, kS1)), {claim2});
    ::close(claim2);
    auto r = t.route(kR1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->relay, kR2);
    EXPECT_EQ(r->placed, app_udp);
    EXPECT_EQ(inode(app_udp), ino2) << "the renewal's socket is in place on the same number";
    EXPECT_TRUE(fcntl(app_udp, F_GETFL) & O_NONBLOCK);
    ::close(app_udp);
}

TEST(LeaseTableClaim, ALeaseWithoutASocketLeavesTheApplicationsSocketAlone) {
    LeaseTable t;
    Pair p;
    p.send(ready(1, kR1, kS1));
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    const int app_udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    const ino_t before = inode(app_udp);
    EXPECT_EQ(t.place(p.app, app_udp), 0);
    EXPECT_EQ(inode(app_udp), before);
    EXPECT_FALSE(t.lookup(p.app)->claimed);
    ::close(app_udp);
}

TEST(LeaseTableClaim, OneSocketCarriesOneLiveLease) {
    LeaseTable t;
    Pair a, b;
    a.send_with(with_socket(ready(1, kR1, kS1)), {bound_udp()});
    b.send_with(with_socket(ready(1, kR2, kS1)), {bound_udp()});
    ASSERT_TRUE(t.add(a.app, a.app, &kR1));
    ASSERT_TRUE(t.add(b.app, b.app, &kR2));
    const int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_EQ(t.place(a.app, udp), 0);
    EXPECT_EQ(t.place(b.app, udp), EADDRINUSE);
    a.send(lost(ECONNRESET, 0));
    ASSERT_EQ(t.lookup(a.app)->state, LeaseState::Lost);
    EXPECT_EQ(t.place(b.app, udp), 0) << "a lost lease's socket may be replaced";
    ::close(udp);
}

TEST(LeaseTableClaim, AFlaggedSocketThatDidNotArriveLosesTheLeaseWithEMFILE) {
    LeaseTable t;
    Pair p;
    p.send(with_socket(ready(1, kR1, kS1)));  // flagged, but nothing attached
    auto info = t.add(p.app, p.app, &kR1);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, LeaseState::Lost);
    EXPECT_EQ(info->err, EMFILE);
}

TEST(LeaseTableClaim, DescriptorsNotKeptAreClosed) {
    LeaseTable t;
    Pair p;
    const size_t before = open_fds();
    // Unflagged with a descriptor, two descriptors on one record, and a
    // repeated generation: the table keeps exactly one (the accepted
    // Ready's).
    {
        int x = bound_udp(), y = bound_udp(), z = bound_udp();
        p.send_with(with_socket(ready(1, kR1, kS1)), {x, y});
        p.send_with(ready(1, kR1, kS1), {z});
        ::close(x);
        ::close(y);
        ::close(z);
    }
    ASSERT_TRUE(t.add(p.app, p.app, &kR1));
    EXPECT_TRUE(t.lookup(p.app)->claimed);
    EXPECT_EQ(open_fds(), before + 1);
}
