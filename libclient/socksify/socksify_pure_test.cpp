// The shim's pure parts: what an inbound datagram is (inbound.hpp) and the
// route cache (route_cache.hpp), with an injected lookup and clock.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <vector>

#include "inbound.hpp"
#include "route_cache.hpp"
#include "wire.hpp"

namespace {

using s5::socksify::classify_inbound;
using s5::socksify::Inbound;
using s5::socksify::Route;
using s5::socksify::RouteCache;
using s5::wire::Endpoint;

Endpoint ep(const char* ip, uint16_t port) { return *Endpoint::parse_ip(ip, port); }

Endpoint mapped(const char* v4, uint16_t port) {
    Endpoint e = ep(v4, port);
    Endpoint m;
    m.family = AF_INET6;
    m.ip[10] = m.ip[11] = 0xff;
    std::copy_n(e.ip.begin(), 4, m.ip.begin() + 12);
    m.port = port;
    return m;
}

// RSV | FRAG | ATYP | ADDR | PORT, then the payload.
std::vector<uint8_t> framed(const Endpoint& src, const std::string& payload, uint8_t frag = 0) {
    std::vector<uint8_t> d{0, 0, frag};
    if (src.family == AF_INET) {
        d.push_back(1);
        d.insert(d.end(), src.ip.begin(), src.ip.begin() + 4);
    } else {
        d.push_back(4);
        d.insert(d.end(), src.ip.begin(), src.ip.end());
    }
    d.push_back(static_cast<uint8_t>(src.port >> 8));
    d.push_back(static_cast<uint8_t>(src.port));
    d.insert(d.end(), payload.begin(), payload.end());
    return d;
}

const Endpoint kRelay = ep("127.0.0.1", 40000);
const Endpoint kTarget = ep("192.0.2.10", 53);

TEST(Inbound, FromTheRelayIsDeframedAndNamesTheRealSender) {
    auto d = framed(kTarget, "answer");
    std::vector<Endpoint> relays{kRelay};
    auto v = classify_inbound(kRelay, d, relays, nullptr, AF_INET);
    ASSERT_EQ(v.kind, Inbound::Kind::Deliver);
    EXPECT_EQ(v.offset, 10u);
    EXPECT_EQ(v.length, 6u);
    EXPECT_EQ(v.sender, kTarget);
}

TEST(Inbound, AnAf6SocketSeesTheRelayMappedAndIpv4SendersMapped) {
    auto d = framed(kTarget, "x");
    std::vector<Endpoint> relays{kRelay};
    auto v = classify_inbound(mapped("127.0.0.1", 40000), d, relays, nullptr, AF_INET6);
    ASSERT_EQ(v.kind, Inbound::Kind::Deliver);
    EXPECT_EQ(v.sender, mapped("192.0.2.10", 53));
}

TEST(Inbound, AnIpv6SenderCannotBeShownToAnAfInetSocket) {
    auto d = framed(ep("2001:db8::1", 53), "x");
    std::vector<Endpoint> relays{kRelay};
    EXPECT_EQ(classify_inbound(kRelay, d, relays, nullptr, AF_INET).kind, Inbound::Kind::Drop);
    EXPECT_EQ(classify_inbound(kRelay, d, relays, nullptr, AF_INET6).kind, Inbound::Kind::Deliver);
}

TEST(Inbound, MalformedOrFragmentedFromTheRelayIsDropped) {
    std::vector<Endpoint> relays{kRelay};
    auto frag = framed(kTarget, "x", 1);
    EXPECT_EQ(classify_inbound(kRelay, frag, relays, nullptr, AF_INET).kind, Inbound::Kind::Drop);
    auto rsv = framed(kTarget, "x");
    rsv[0] = 1;
    EXPECT_EQ(classify_inbound(kRelay, rsv, relays, nullptr, AF_INET).kind, Inbound::Kind::Drop);
    std::vector<uint8_t> shortd{0, 0, 0, 1, 127};
    EXPECT_EQ(classify_inbound(kRelay, shortd, relays, nullptr, AF_INET).kind, Inbound::Kind::Drop);
    std::vector<uint8_t> name{0, 0, 0, 3, 1, 'a', 0, 53};
    EXPECT_EQ(classify_inbound(kRelay, name, relays, nullptr, AF_INET).kind, Inbound::Kind::Drop);
}

TEST(Inbound, NotFromARelayIsDeliveredAsItIs) {
    std::vector<uint8_t> d{'r', 'a', 'w'};
    std::vector<Endpoint> relays{kRelay};
    auto direct = ep("127.0.0.3", 7);
    auto v = classify_inbound(direct, d, relays, nullptr, AF_INET);
    ASSERT_EQ(v.kind, Inbound::Kind::Deliver);
    EXPECT_EQ(v.offset, 0u);
    EXPECT_EQ(v.length, 3u);
    EXPECT_EQ(v.sender, direct);
    // Another port on the relay's host is not the relay.
    EXPECT_EQ(classify_inbound(ep("127.0.0.1", 40001), d, relays, nullptr, AF_INET).offset, 0u);
}

TEST(Inbound, AConnectedSocketHearsItsPeerOnlyThroughTheRelay) {
    std::vector<Endpoint> relays{kRelay};
    const Endpoint peer = kTarget;
    auto from_peer = framed(kTarget, "yes");
    auto from_other = framed(ep("192.0.2.11", 53), "no");
    EXPECT_EQ(classify_inbound(kRelay, from_peer, relays, &peer, AF_INET).kind, Inbound::Kind::Deliver);
    EXPECT_EQ(classify_inbound(kRelay, from_other, relays, &peer, AF_INET).kind, Inbound::Kind::Drop);
    std::vector<uint8_t> raw{'x'};
    EXPECT_EQ(classify_inbound(kTarget, raw, relays, &peer, AF_INET).kind, Inbound::Kind::NotFromRelay);
}

TEST(Inbound, NoRelaysMeansEverythingIsDirect) {
    auto d = framed(kTarget, "looks framed");
    auto v = classify_inbound(kRelay, d, {}, nullptr, AF_INET);
    ASSERT_EQ(v.kind, Inbound::Kind::Deliver);
    EXPECT_EQ(v.offset, 0u);
    EXPECT_EQ(v.length, d.size());
}

struct FakeBroker {
    int64_t now = 0;
    int asked = 0;
    Route answer;
    RouteCache cache{[this](const Endpoint&) {
                         ++asked;
                         return answer;
                     },
                     [this] { return now; }, 1000, 3};
};

TEST(RouteCache, ADecisionIsKeptForTheTtlPerAddressNotPort) {
    FakeBroker b;
    b.answer.kind = Route::Kind::Proxy;
    b.answer.server = ep("127.0.0.1", 1080);
    EXPECT_EQ(b.cache.get(ep("192.0.2.1", 53)).kind, Route::Kind::Proxy);
    EXPECT_EQ(b.cache.get(ep("192.0.2.1", 123)).server, ep("127.0.0.1", 1080));
    EXPECT_EQ(b.asked, 1);
    b.now = 999;
    b.cache.get(ep("192.0.2.1", 53));
    EXPECT_EQ(b.asked, 1);
    b.now = 1000;
    b.answer.kind = Route::Kind::Direct;
    EXPECT_EQ(b.cache.get(ep("192.0.2.1", 53)).kind, Route::Kind::Direct);
    EXPECT_EQ(b.asked, 2);
}

TEST(RouteCache, MappedAndPlainIpv4AreOneDestination) {
    FakeBroker b;
    b.answer.kind = Route::Kind::Direct;
    b.cache.get(ep("192.0.2.1", 53));
    b.cache.get(mapped("192.0.2.1", 53));
    EXPECT_EQ(b.asked, 1);
}

TEST(RouteCache, AFailureIsNotKept) {
    FakeBroker b;
    b.answer.kind = Route::Kind::Fail;
    b.answer.err = ECONNREFUSED;
    EXPECT_EQ(b.cache.get(ep("192.0.2.1", 53)).err, ECONNREFUSED);
    b.cache.get(ep("192.0.2.1", 53));
    EXPECT_EQ(b.asked, 2);
    EXPECT_EQ(b.cache.size(), 0u);
}

TEST(RouteCache, StaysWithinItsCapacity) {
    FakeBroker b;
    b.answer.kind = Route::Kind::Direct;
    for (int i = 1; i <= 10; ++i) b.cache.get(ep(("192.0.2." + std::to_string(i)).c_str(), 1));
    EXPECT_LE(b.cache.size(), 3u);
    EXPECT_EQ(b.asked, 10);
}

}  // namespace
