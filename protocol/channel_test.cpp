#include "channel.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

namespace {

using namespace s5::channel;
using s5::wire::Endpoint;

Reply reply(Status status, uint64_t token = 0, uint64_t lease_id = 0, std::string name = "",
            std::string message = "") {
    Reply r;
    r.status = status;
    r.token = token;
    r.lease_id = lease_id;
    r.error_name = std::move(name);
    r.error_message = std::move(message);
    return r;
}

Request sample() {
    Request r;
    r.token = 0x0102030405060708ull;
    r.dst = *Endpoint::parse_ip("192.0.2.7", 5353);
    r.server = *Endpoint::parse_ip("2001:db8::1", 1080);
    r.timeout_ms = 2500;
    r.rendezvous_len = 16;
    r.nonblocking = true;
    return r;
}

TEST(ChannelRequest, RoundTrips) {
    for (bool with_server : {false, true}) {
        Request r = sample();
        if (!with_server) r.server.reset();
        auto m = encode_request(r);
        auto back = decode_request(m);
        ASSERT_TRUE(back);
        EXPECT_EQ(*back, r);
    }
}

TEST(ChannelRequest, RefusesEveryMalformedShape) {
    const auto good = encode_request(sample());
    EXPECT_FALSE(decode_request(std::span<const uint8_t>(good.data(), good.size() - 1)));
    std::vector<uint8_t> longer(good.begin(), good.end());
    longer.push_back(0);
    EXPECT_FALSE(decode_request(longer));
    auto bad = [&](size_t off, uint8_t v) {
        auto m = good;
        m[off] = v;
        return decode_request(m).has_value();
    };
    EXPECT_FALSE(bad(0, 'X'));    // magic
    EXPECT_FALSE(bad(4, 2));      // version
    EXPECT_FALSE(bad(5, 4 | 1));  // unknown flag
    EXPECT_FALSE(bad(5, 1));      // server family without the flag
    EXPECT_FALSE(bad(6, 0));      // no dst family
    EXPECT_FALSE(bad(6, 5));      // unknown family
    EXPECT_FALSE(bad(28 + 5, 1)); // a byte past the IPv4 dst
    EXPECT_FALSE(bad(60, 1));     // reserved
    Request no_server = sample();
    no_server.server.reset();
    auto m = encode_request(no_server);
    m[5] |= 2;                    // the flag without a server
    EXPECT_FALSE(decode_request(m));
}

TEST(ChannelReply, RoundTripsEachStatus) {
    Reply g;
    g.token = 9;
    g.status = Status::Granted;
    g.lease_id = 1234567;
    g.relay = *Endpoint::parse_ip("127.0.0.1", 40000);
    Reply p = reply(Status::Pending, 10, 77);
    Reply w = reply(Status::WouldWait, 11);
    Reply f = reply(Status::Failed, 12, 0, "org.s5broker.Broker1.Error.QuotaExceeded",
                    "uid 1000 holds 2 leases (the limit)");
    for (const Reply& r : {g, p, w, f}) {
        auto m = encode_reply(r);
        auto back = decode_reply(m);
        ASSERT_TRUE(back) << static_cast<int>(r.status);
        EXPECT_EQ(*back, r);
    }
}

TEST(ChannelReply, CutsLongTextAtACharacterAndRefusesInconsistentOnes) {
    Reply f = reply(Status::Failed, 0, 0, "x", std::string(kMaxMessageLen - 1, 'a') + "é");
    auto back = decode_reply(encode_reply(f));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->error_message, std::string(kMaxMessageLen - 1, 'a'));

    EXPECT_FALSE(decode_reply(encode_reply(reply(Status::Granted, 0, 1))));        // no relay
    EXPECT_FALSE(decode_reply(encode_reply(reply(Status::Failed))));               // no name
    EXPECT_FALSE(decode_reply(encode_reply(reply(Status::WouldWait, 0, 0, "", "no"))));
    EXPECT_FALSE(decode_reply(encode_reply(reply(Status::WouldWait, 0, 5))));      // a lease
    auto m = encode_reply(reply(Status::WouldWait));
    m[5] = 9;  // unknown status
    EXPECT_FALSE(decode_reply(m));
    m = encode_reply(f);
    m.pop_back();  // lengths no longer add up
    EXPECT_FALSE(decode_reply(m));
}

}  // namespace
