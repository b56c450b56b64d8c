// Manager without a bus: every path that owes a reply sends exactly one,
// whatever throws on the way, and leaves nothing behind.
#include "manager.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sdbus-c++/Error.h>

#include <variant>
#include <vector>

namespace s5d {
namespace {

// Registering a lease's bus object can fail (sdbus::Error); the observer
// stands in for the bus glue.
class ThrowingObserver : public ManagerObserver {
public:
    int added = 0, removed = 0;
    void lease_added(Lease&) override {
        ++added;
        throw sdbus::Error("org.freedesktop.DBus.Error.NoMemory", "cannot register the lease object");
    }
    void lease_changed(Lease&) override {}
    void lease_renewed(Lease&) override {}
    void lease_lost(Lease&, const std::string&) override {}
    void lease_removed(Lease&) override { ++removed; }
    void server_changed(ServerPool&) override {}
    void server_added(ServerPool&) override {}
    void server_removed(ServerPool&) override {}
};

s5::config::Config one_server() {
    s5::config::Config c;
    s5::config::Server s;
    s.name = "a";
    s.endpoint = *s5::wire::Endpoint::from_bytes(std::vector<uint8_t>{127, 0, 0, 1}, 9);
    c.servers.push_back(s);
    c.pool.min_idle = 0;
    return c;
}

// The bus object is made after the reply (nobody waits for it): a lease
// whose object cannot be made was already handed out, and ends at once.
TEST(Manager, ALeaseWhoseBusObjectCannotBeMadeEndsAtOnceAndIsNotKept) {
    EventLoop loop;
    Manager m(loop, one_server());
    ThrowingObserver obs;
    m.set_observer(&obs);
    AssociateRequest req;
    req.dst = *s5::wire::Endpoint::from_bytes(std::vector<uint8_t>{127, 0, 0, 1}, 7);
    req.server = m.config().servers[0].endpoint;
    req.nonblocking = true;   // a pending lease is made at once
    std::vector<AssociateResult> replies;
    m.associate(req, [&](AssociateResult&& r) { replies.push_back(std::move(r)); });
    ASSERT_EQ(replies.size(), 1u) << "exactly one reply";
    auto* g = std::get_if<Grant>(&replies[0]);
    ASSERT_TRUE(g);
    EXPECT_EQ(obs.added, 1);
    EXPECT_EQ(obs.removed, 1);
    EXPECT_TRUE(m.leases().empty()) << "the lease holds both socket ends forever";
    // Its holder sees the end: EOF on the lease fd (after any event).
    char buf[128];
    ssize_t n;
    while ((n = recv(g->lease_fd.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) {
    }
    EXPECT_EQ(n, 0);
    m.set_observer(nullptr);
}

}  // namespace
}  // namespace s5d
