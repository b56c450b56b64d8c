#include "relay_policy.hpp"

#include <gtest/gtest.h>

namespace s5d {
namespace {

s5::wire::Endpoint ip(const char* text, uint16_t port = 40000) { return *s5::wire::Endpoint::parse_ip(text, port); }

TEST(RelayPolicy, OrdinaryRelaysAreAccepted) {
    EXPECT_EQ(relay_refusal(ip("192.0.2.10"), ip("192.0.2.10", 1080)), std::nullopt);
    // Another address of the server's (Dante reports its internal one).
    EXPECT_EQ(relay_refusal(ip("198.51.100.7"), ip("192.0.2.10", 1080)), std::nullopt);
    EXPECT_EQ(relay_refusal(ip("2001:db8::10"), ip("2001:db8::1", 1080)), std::nullopt);
    // A server on loopback relays on loopback.
    EXPECT_EQ(relay_refusal(ip("127.0.0.1"), ip("127.0.0.1", 1080)), std::nullopt);
    EXPECT_EQ(relay_refusal(ip("::1"), ip("::1", 1080)), std::nullopt);
}

TEST(RelayPolicy, RelaysThatAimDatagramsElsewhereAreRefused) {
    const auto server = ip("192.0.2.10", 1080);
    EXPECT_EQ(relay_refusal(ip("127.0.0.1"), server), "is on loopback, and the server is not");
    EXPECT_EQ(relay_refusal(ip("127.3.4.5"), server), "is on loopback, and the server is not");
    EXPECT_EQ(relay_refusal(ip("224.0.0.251"), server), "is multicast");
    EXPECT_EQ(relay_refusal(ip("239.255.255.250"), server), "is multicast");
    EXPECT_EQ(relay_refusal(ip("255.255.255.255"), server), "is the broadcast address");
    EXPECT_EQ(relay_refusal(ip("0.0.0.0"), server), "is unspecified");
    EXPECT_EQ(relay_refusal(ip("2001:db8::1"), server), "is not of the server's address family");
    const auto server6 = ip("2001:db8::1", 1080);
    EXPECT_EQ(relay_refusal(ip("::1"), server6), "is on loopback, and the server is not");
    EXPECT_EQ(relay_refusal(ip("ff02::fb"), server6), "is multicast");
    EXPECT_EQ(relay_refusal(ip("::"), server6), "is unspecified");
    // Mapped spellings are judged as the IPv4 address they are.
    EXPECT_EQ(relay_refusal(ip("::ffff:127.0.0.1"), server6), "is on loopback, and the server is not");
    EXPECT_EQ(relay_refusal(ip("::ffff:224.0.0.1"), server6), "is multicast");
    EXPECT_EQ(relay_refusal(ip("::ffff:255.255.255.255"), server6), "is the broadcast address");
    EXPECT_EQ(relay_refusal(ip("::ffff:0.0.0.0"), server6), "is unspecified");
}

}  // namespace
}  // namespace s5d
