// Unit tests for the SOCKS5 wire codec and the lease-event record (wire.hpp).
#include "wire.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace s5::wire {
namespace {

using Bytes = std::vector<uint8_t>;

Endpoint ip(std::string_view text, uint16_t port = 0) {
    auto ep = Endpoint::parse_ip(text, port);
    EXPECT_TRUE(ep.has_value()) << text;
    return ep.value_or(Endpoint{});
}

// VER | REP | RSV | ATYP | addr | PORT with `addr` already encoded (for ATYP 3
// including its length byte).
Bytes reply_bytes(uint8_t rep, uint8_t atyp, const Bytes& addr, uint16_t port, uint8_t ver = 5) {
    // Built in one go: GCC 12 at -O3 misreports insert() into a 4-byte
    // vector as out of bounds (-Warray-bounds).
    Bytes b(4 + addr.size() + 2);
    b[0] = ver;
    b[1] = rep;
    b[2] = 0x00;
    b[3] = atyp;
    std::copy(addr.begin(), addr.end(), b.begin() + 4);
    b[4 + addr.size()] = static_cast<uint8_t>(port >> 8);
    b[5 + addr.size()] = static_cast<uint8_t>(port);
    return b;
}

Bytes name_addr(const std::string& name) {
    // Built in one go: GCC 12 at -O2 misreports insert() into a 1-byte
    // vector as out of bounds (-Warray-bounds).
    Bytes b(1 + name.size());
    b[0] = static_cast<uint8_t>(name.size());
    std::copy(name.begin(), name.end(), b.begin() + 1);
    return b;
}

Bytes with_trailer(Bytes b, size_t extra) {
    for (size_t i = 0; i < extra; ++i) b.push_back(static_cast<uint8_t>(0xA0 + i));
    return b;
}

// Every strict prefix of a valid message must ask for more, never fail.
template <typename Decode>
void expect_prefixes_need_more(const Bytes& msg, Decode decode) {
    for (size_t n = 0; n < msg.size(); ++n) {
        auto d = decode(std::span<const uint8_t>(msg.data(), n));
        EXPECT_TRUE(d.need_more) << "prefix length " << n;
        EXPECT_TRUE(d.error.empty()) << "prefix length " << n << ": " << d.error;
        EXPECT_FALSE(d.value.has_value()) << "prefix length " << n;
    }
}

// ---- Endpoint -----------------------------------------------------------------

TEST(Endpoint, DefaultIsUnset) {
    Endpoint ep;
    EXPECT_EQ(ep.family, 0);
    EXPECT_EQ(ep.ip_len(), 0u);
    EXPECT_TRUE(ep.ip_bytes().empty());
    EXPECT_FALSE(ep.is_unspecified());
    EXPECT_EQ(ep.to_string(), "(unset)");
}

TEST(Endpoint, ParseIPv4) {
    auto ep = Endpoint::parse_ip("192.0.2.10", 1080);
    ASSERT_TRUE(ep);
    EXPECT_EQ(ep->family, AF_INET);
    EXPECT_EQ(ep->ip_len(), 4u);
    EXPECT_EQ(ep->ip_bytes(), (Bytes{192, 0, 2, 10}));
    EXPECT_EQ(ep->port, 1080);
    EXPECT_EQ(ep->to_string(), "192.0.2.10:1080");
}

TEST(Endpoint, ParseIPv6) {
    auto ep = Endpoint::parse_ip("2001:db8::1", 443);
    ASSERT_TRUE(ep);
    EXPECT_EQ(ep->family, AF_INET6);
    EXPECT_EQ(ep->ip_len(), 16u);
    EXPECT_EQ(ep->ip_bytes(), (Bytes{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}));
    EXPECT_EQ(ep->to_string(), "[2001:db8::1]:443");
}

TEST(Endpoint, ParseDefaultsPortToZero) {
    EXPECT_EQ(ip("127.0.0.1").port, 0);
    EXPECT_EQ(ip("::1").port, 0);
}

TEST(Endpoint, ParseRejectsNonLiterals) {
    const std::string_view bad[] = {
        "",
        " ",
        "[::1]",
        "[::1]:80",
        "1.2.3.4:80",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.4x",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "01.2.3.4",
        "0x7f.0.0.1",
        "localhost",
        "::1%lo",
        "1::2::3",
        "::g",
        "2001:db8::1/64",
        std::string_view("1.2.3.4\0junk", 12),  // embedded NUL must not truncate
        std::string_view("::1\0", 4),
        "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc",
    };
    for (std::string_view text : bad)
        EXPECT_FALSE(Endpoint::parse_ip(text).has_value()) << '"' << std::string(text) << '"';
}

TEST(Endpoint, ParseAcceptsLongestIPv6Literal) {
    // 45 characters: the longest textual IPv6 form (INET6_ADDRSTRLEN - 1).
    auto ep = Endpoint::parse_ip("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
    ASSERT_TRUE(ep);
    EXPECT_EQ(ep->family, AF_INET6);
    EXPECT_EQ(ep->ip_bytes(), Bytes(16, 0xFF));
}

TEST(Endpoint, ToStringFormats) {
    EXPECT_EQ(ip("1.2.3.4", 80).to_string(), "1.2.3.4:80");
    EXPECT_EQ(ip("::1", 80).to_string(), "[::1]:80");
    EXPECT_EQ(ip("0.0.0.0", 0).to_string(), "0.0.0.0:0");
    EXPECT_EQ(ip("::", 65535).to_string(), "[::]:65535");
    EXPECT_EQ(ip("255.255.255.255", 65535).to_string(), "255.255.255.255:65535");
    EXPECT_EQ(ip("::ffff:1.2.3.4", 7).to_string(), "[::ffff:1.2.3.4]:7");
}

TEST(Endpoint, IsUnspecified) {
    EXPECT_TRUE(ip("0.0.0.0").is_unspecified());
    EXPECT_TRUE(ip("::").is_unspecified());
    EXPECT_FALSE(ip("0.0.0.1").is_unspecified());
    EXPECT_FALSE(ip("::1").is_unspecified());
    EXPECT_FALSE(ip("127.0.0.1").is_unspecified());
}

TEST(Endpoint, IsUnspecifiedIgnoresIPv4Tail) {
    // Only the first 4 bytes are the IPv4 address.
    Endpoint ep = ip("0.0.0.0");
    ep.ip[10] = 0xFF;
    EXPECT_TRUE(ep.is_unspecified());
    EXPECT_EQ(ep.ip_bytes(), Bytes(4, 0));
}

TEST(Endpoint, FromBytesAcceptsOnly4Or16) {
    const Bytes v4{10, 0, 0, 1};
    auto a = Endpoint::from_bytes(v4, 53);
    ASSERT_TRUE(a);
    EXPECT_EQ(*a, ip("10.0.0.1", 53));

    Bytes v6(16, 0);
    v6[15] = 1;
    auto b = Endpoint::from_bytes(v6, 53);
    ASSERT_TRUE(b);
    EXPECT_EQ(*b, ip("::1", 53));

    for (size_t n : {0u, 1u, 3u, 5u, 8u, 15u, 17u, 32u}) {
        const Bytes raw(n, 1);
        EXPECT_FALSE(Endpoint::from_bytes(raw, 1).has_value()) << n << " bytes";
    }
}

TEST(Endpoint, SockaddrRoundTripIPv4) {
    const Endpoint ep = ip("198.51.100.7", 5353);
    sockaddr_storage ss;
    std::memset(&ss, 0xAA, sizeof ss);  // must come back zeroed where unused
    ASSERT_EQ(ep.to_sockaddr(ss), sizeof(sockaddr_in));

    sockaddr_in sin;
    std::memcpy(&sin, &ss, sizeof sin);
    EXPECT_EQ(sin.sin_family, AF_INET);
    EXPECT_EQ(ntohs(sin.sin_port), 5353);
    char text[INET_ADDRSTRLEN];
    ASSERT_NE(inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text), nullptr);
    EXPECT_STREQ(text, "198.51.100.7");
    for (unsigned char c : sin.sin_zero) EXPECT_EQ(c, 0);
    const auto* raw = reinterpret_cast<const unsigned char*>(&ss);
    for (size_t i = sizeof sin; i < sizeof ss; ++i) ASSERT_EQ(raw[i], 0) << "byte " << i;

    auto back = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), sizeof(sockaddr_in));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, ep);
}

TEST(Endpoint, SockaddrRoundTripIPv6) {
    const Endpoint ep = ip("2001:db8::42", 65535);
    sockaddr_storage ss;
    std::memset(&ss, 0xAA, sizeof ss);
    ASSERT_EQ(ep.to_sockaddr(ss), sizeof(sockaddr_in6));

    sockaddr_in6 sin6;
    std::memcpy(&sin6, &ss, sizeof sin6);
    EXPECT_EQ(sin6.sin6_family, AF_INET6);
    EXPECT_EQ(ntohs(sin6.sin6_port), 65535);
    EXPECT_EQ(sin6.sin6_flowinfo, 0u);
    EXPECT_EQ(sin6.sin6_scope_id, 0u);
    EXPECT_EQ(std::memcmp(&sin6.sin6_addr, ep.ip.data(), 16), 0);

    // The full storage length is accepted too (callers pass sizeof storage).
    auto back = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), sizeof ss);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, ep);
}

TEST(Endpoint, ToSockaddrUnsetReturnsZero) {
    sockaddr_storage ss;
    std::memset(&ss, 0xAA, sizeof ss);
    EXPECT_EQ(Endpoint{}.to_sockaddr(ss), 0u);
    EXPECT_EQ(ss.ss_family, 0);
}

TEST(Endpoint, FromSockaddrRejectsShortLength) {
    sockaddr_storage ss;
    ip("1.2.3.4", 1).to_sockaddr(ss);
    const auto* sa = reinterpret_cast<const sockaddr*>(&ss);
    EXPECT_FALSE(Endpoint::from_sockaddr(sa, sizeof(sockaddr_in) - 1));
    EXPECT_FALSE(Endpoint::from_sockaddr(sa, 1));
    EXPECT_FALSE(Endpoint::from_sockaddr(sa, 0));
    EXPECT_TRUE(Endpoint::from_sockaddr(sa, sizeof(sockaddr_in)));

    ip("::1", 1).to_sockaddr(ss);
    EXPECT_FALSE(Endpoint::from_sockaddr(sa, sizeof(sockaddr_in6) - 1));
    EXPECT_FALSE(Endpoint::from_sockaddr(sa, sizeof(sockaddr_in)));
    EXPECT_TRUE(Endpoint::from_sockaddr(sa, sizeof(sockaddr_in6)));
}

TEST(Endpoint, FromSockaddrRejectsOtherFamiliesAndNull) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strcpy(sun.sun_path, "/tmp/x");
    EXPECT_FALSE(Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&sun), sizeof sun));

    sockaddr_storage ss{};
    ss.ss_family = AF_UNSPEC;
    EXPECT_FALSE(Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), sizeof ss));

    EXPECT_FALSE(Endpoint::from_sockaddr(nullptr, sizeof(sockaddr_in6)));
}

TEST(Endpoint, FromSockaddrIgnoresScopeAndFlow) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(9);
    sin6.sin6_scope_id = 3;
    sin6.sin6_flowinfo = htonl(7);
    ASSERT_EQ(inet_pton(AF_INET6, "fe80::1", &sin6.sin6_addr), 1);
    auto ep = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
    ASSERT_TRUE(ep);
    EXPECT_EQ(*ep, ip("fe80::1", 9));
}

// ---- Client -> server messages -----------------------------------------------

TEST(Encode, Greeting) {
    EXPECT_EQ(encode_greeting(kMethodNone), (Bytes{5, 1, 0}));
    EXPECT_EQ(encode_greeting(kMethodUsername), (Bytes{5, 1, 2}));
}

TEST(Encode, UserPassLayout) {
    auto m = encode_userpass("app", "s3cret");
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (s5::SecretBytes{1, 3, 'a', 'p', 'p', 6, 's', '3', 'c', 'r', 'e', 't'}));
}

TEST(Encode, UserPassSingleBytes) {
    auto m = encode_userpass("u", "p");
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (s5::SecretBytes{1, 1, 'u', 1, 'p'}));
}

TEST(Encode, UserPass255Accepted) {
    const std::string u(255, 'u'), p(255, 'p');
    auto m = encode_userpass(u, p);
    ASSERT_TRUE(m);
    ASSERT_EQ(m->size(), 1u + 1 + 255 + 1 + 255);
    EXPECT_EQ((*m)[0], 1);
    EXPECT_EQ((*m)[1], 255);
    EXPECT_EQ((*m)[2], 'u');
    EXPECT_EQ((*m)[256], 'u');
    EXPECT_EQ((*m)[257], 255);
    EXPECT_EQ((*m)[258], 'p');
    EXPECT_EQ(m->back(), 'p');
}

TEST(Encode, UserPass256Rejected) {
    const std::string ok(255, 'x'), big(256, 'x');
    EXPECT_FALSE(encode_userpass(big, ok));
    EXPECT_FALSE(encode_userpass(ok, big));
    EXPECT_FALSE(encode_userpass(big, big));
}

TEST(Encode, UserPassFitsIsTheEncodersRule) {
    EXPECT_TRUE(userpass_fits("u", "p"));
    EXPECT_TRUE(userpass_fits(std::string(255, 'u'), std::string(255, 'p')));
    EXPECT_FALSE(userpass_fits("", "p"));
    EXPECT_FALSE(userpass_fits("u", std::string(256, 'p')));
}

// The RFC 1929 message lives in secret memory: wiped pages of its own,
// excluded from core dumps (secret.hpp).
TEST(Secret, AllocatorGivesDontDumpPagesOfItsOwn) {
    s5::SecretBytes b(10, 0xAB);
    const auto addr = reinterpret_cast<uintptr_t>(b.data());
    EXPECT_EQ(addr % static_cast<uintptr_t>(sysconf(_SC_PAGESIZE)), 0u);
    // /proc/self/smaps names the mapping's flags: "dd" is MADV_DONTDUMP.
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool in_mapping = false, dontdump = false;
    while (std::getline(smaps, line)) {
        unsigned long lo = 0, hi = 0;
        if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {   // a mapping's first line
            in_mapping = addr >= lo && addr < hi;
            continue;
        }
        if (in_mapping && line.starts_with("VmFlags:")) dontdump = line.find(" dd") != std::string::npos;
    }
    EXPECT_TRUE(dontdump);
    s5::Secret a("pw"), c = a;
    EXPECT_EQ(a, c);
    EXPECT_NE(a.view().data(), c.view().data());   // a copy is a copy, in pages of its own
    c.clear();
    EXPECT_TRUE(c.empty());
    EXPECT_EQ(a.view(), "pw");
}

TEST(Encode, UserPassEmptyRejected) {
    EXPECT_FALSE(encode_userpass("", "pw"));
    EXPECT_FALSE(encode_userpass("user", ""));
    EXPECT_FALSE(encode_userpass("", ""));
}

TEST(Encode, UserPassBinarySafe) {
    // Passwords may contain any byte, NUL included.
    const std::string pw("a\0b", 3);
    auto m = encode_userpass("u", pw);
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (s5::SecretBytes{1, 1, 'u', 3, 'a', 0, 'b'}));
}

TEST(Encode, UdpAssociateIPv4) {
    EXPECT_EQ(encode_udp_associate(ip("127.0.0.1", 0)), (Bytes{5, 3, 0, 1, 127, 0, 0, 1, 0, 0}));
    EXPECT_EQ(encode_udp_associate(ip("10.1.2.3", 0x1234)), (Bytes{5, 3, 0, 1, 10, 1, 2, 3, 0x12, 0x34}));
}

TEST(Encode, UdpAssociateIPv6) {
    Bytes want{5, 3, 0, 4};
    const Bytes addr{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};
    want.insert(want.end(), addr.begin(), addr.end());
    want.push_back(0xFF);
    want.push_back(0xFE);
    EXPECT_EQ(encode_udp_associate(ip("2001:db8::9", 0xFFFE)), want);
}

TEST(Encode, UdpAssociateUnsetIsIPv4Any) {
    // "Don't know yet": 0.0.0.0 (design.md §7).
    EXPECT_EQ(encode_udp_associate(Endpoint{}), (Bytes{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}));
}

// ---- Method reply -------------------------------------------------------------

TEST(MethodReply, Decodes) {
    for (uint8_t method : {kMethodNone, kMethodUsername, kMethodNoAcceptable}) {
        const Bytes msg{5, method};
        auto d = decode_method_reply(msg);
        ASSERT_TRUE(d.value);
        EXPECT_FALSE(d.need_more);
        EXPECT_TRUE(d.error.empty());
        EXPECT_EQ(d.value->method, method);
        EXPECT_EQ(d.consumed, 2u);
    }
}

TEST(MethodReply, PrefixesNeedMore) {
    expect_prefixes_need_more(Bytes{5, 0}, decode_method_reply);
}

TEST(MethodReply, TrailingBytesNotConsumed) {
    // Pipelined: the auth reply may follow in the same read.
    const Bytes msg{5, 2, 1, 0};
    auto d = decode_method_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_EQ(d.value->method, 2);
    EXPECT_EQ(d.consumed, 2u);
}

TEST(MethodReply, BadVersion) {
    for (uint8_t ver : {0x00, 0x01, 0x04, 0x06, 0xFF}) {
        const Bytes msg{ver, 0};
        auto d = decode_method_reply(msg);
        EXPECT_FALSE(d.need_more);
        EXPECT_FALSE(d.value);
        EXPECT_NE(d.error.find("version"), std::string::npos) << d.error;
    }
    auto d = decode_method_reply(Bytes{4, 0});
    EXPECT_EQ(d.error, "bad version 0x04 in method reply");
}

TEST(MethodReply, BadVersionDetectedFromFirstByte) {
    // No need to wait for a second byte that a non-SOCKS peer may never send.
    auto d = decode_method_reply(Bytes{'H'});
    EXPECT_FALSE(d.need_more);
    EXPECT_FALSE(d.error.empty());
}

// ---- Auth reply ------------------------------------------------------------

TEST(AuthReply, DecodesVersion1) {
    auto d = decode_auth_reply(Bytes{1, 0});
    ASSERT_TRUE(d.value);
    EXPECT_TRUE(d.value->ok());
    EXPECT_EQ(d.consumed, 2u);
}

TEST(AuthReply, AcceptsVersion5Leniently) {
    auto d = decode_auth_reply(Bytes{5, 0});
    ASSERT_TRUE(d.value);
    EXPECT_TRUE(d.value->ok());
}

TEST(AuthReply, NonZeroStatusIsFailure) {
    for (uint8_t status : {1, 2, 0x80, 0xFF}) {
        auto d = decode_auth_reply(Bytes{1, status});
        ASSERT_TRUE(d.value);
        EXPECT_EQ(d.value->status, status);
        EXPECT_FALSE(d.value->ok());
    }
}

TEST(AuthReply, PrefixesNeedMore) {
    expect_prefixes_need_more(Bytes{1, 0}, decode_auth_reply);
    expect_prefixes_need_more(Bytes{5, 0}, decode_auth_reply);
}

TEST(AuthReply, TrailingBytesNotConsumed) {
    const Bytes msg{1, 0, 5, 0, 0, 1};
    auto d = decode_auth_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_EQ(d.consumed, 2u);
}

TEST(AuthReply, BadVersion) {
    for (uint8_t ver : {0x00, 0x02, 0x04, 0xFF}) {
        auto d = decode_auth_reply(Bytes{ver, 0});
        EXPECT_FALSE(d.need_more);
        EXPECT_FALSE(d.value);
        EXPECT_NE(d.error.find("version"), std::string::npos) << d.error;
    }
    EXPECT_EQ(decode_auth_reply(Bytes{4, 0}).error, "bad version 0x04 in auth reply");
}

// ---- Reply ------------------------------------------------------------------

TEST(Reply, EveryRepCode) {
    for (unsigned rep : {0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 0x42u, 0xFFu}) {
        const Bytes msg = reply_bytes(static_cast<uint8_t>(rep), kAtypIPv4, {127, 0, 0, 1}, 40000);
        auto d = decode_reply(msg);
        ASSERT_TRUE(d.value) << rep;
        EXPECT_EQ(d.value->rep, rep);
        EXPECT_EQ(d.consumed, msg.size());
    }
}

TEST(Reply, BndIPv4) {
    const Bytes msg = reply_bytes(0, kAtypIPv4, {192, 0, 2, 1}, 0x9C40);
    auto d = decode_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_EQ(d.value->atyp, kAtypIPv4);
    EXPECT_EQ(d.value->bnd, ip("192.0.2.1", 40000));
    EXPECT_TRUE(d.value->bnd_name.empty());
    EXPECT_EQ(d.consumed, 10u);
}

TEST(Reply, BndIPv6) {
    const Endpoint want = ip("2001:db8::abcd", 1080);
    const Bytes msg = reply_bytes(0, kAtypIPv6, want.ip_bytes(), 1080);
    auto d = decode_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_EQ(d.value->atyp, kAtypIPv6);
    EXPECT_EQ(d.value->bnd, want);
    EXPECT_EQ(d.consumed, 22u);
}

TEST(Reply, BndUnspecifiedKept) {
    // Substituting the server address is the caller's job (design.md §7).
    auto d = decode_reply(reply_bytes(0, kAtypIPv4, {0, 0, 0, 0}, 5000));
    ASSERT_TRUE(d.value);
    EXPECT_TRUE(d.value->bnd.is_unspecified());
}

TEST(Reply, BndDomainName) {
    const std::string name = "relay.example.net";
    const Bytes msg = reply_bytes(0, kAtypDomain, name_addr(name), 1081);
    auto d = decode_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_EQ(d.value->atyp, kAtypDomain);
    EXPECT_EQ(d.value->bnd_name, name);
    EXPECT_EQ(d.value->bnd.family, 0);
    EXPECT_EQ(d.value->bnd.port, 1081);  // the port survives even without an IP
    EXPECT_EQ(d.consumed, 4u + 1 + name.size() + 2);
}

TEST(Reply, BndDomainNameEmpty) {
    const Bytes msg = reply_bytes(0, kAtypDomain, name_addr(""), 7);
    auto d = decode_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_TRUE(d.value->bnd_name.empty());
    EXPECT_EQ(d.value->bnd.port, 7);
    EXPECT_EQ(d.consumed, 7u);
}

TEST(Reply, BndDomainName255) {
    const std::string name(255, 'n');
    const Bytes msg = reply_bytes(0, kAtypDomain, name_addr(name), 65535);
    auto d = decode_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_EQ(d.value->bnd_name, name);
    EXPECT_EQ(d.value->bnd.port, 65535);
    EXPECT_EQ(d.consumed, 4u + 1 + 255 + 2);
}

TEST(Reply, RsvIgnored) {
    Bytes msg = reply_bytes(0, kAtypIPv4, {1, 2, 3, 4}, 5);
    msg[2] = 0xFF;
    auto d = decode_reply(msg);
    ASSERT_TRUE(d.value);
    EXPECT_EQ(d.value->bnd, ip("1.2.3.4", 5));
}

// Valid replies of every shape, for the prefix and trailer tests.
std::vector<Bytes> sample_replies() {
    return {
        reply_bytes(0, kAtypIPv4, {127, 0, 0, 1}, 1),
        reply_bytes(1, kAtypIPv6, ip("::1").ip_bytes(), 2),
        reply_bytes(0, kAtypDomain, name_addr(""), 3),
        reply_bytes(0, kAtypDomain, name_addr("a.b"), 4),
        reply_bytes(5, kAtypDomain, name_addr(std::string(255, 'z')), 5),
    };
}

TEST(Reply, EveryPrefixNeedsMore) {
    for (const Bytes& msg : sample_replies()) {
        SCOPED_TRACE("message length " + std::to_string(msg.size()));
        expect_prefixes_need_more(msg, decode_reply);
    }
}

TEST(Reply, TrailingBytesNotConsumed) {
    for (const Bytes& msg : sample_replies()) {
        for (size_t extra : {1u, 2u, 30u}) {
            auto d = decode_reply(with_trailer(msg, extra));
            ASSERT_TRUE(d.value);
            EXPECT_TRUE(d.error.empty());
            EXPECT_FALSE(d.need_more);
            EXPECT_EQ(d.consumed, msg.size());
        }
    }
}

TEST(Reply, BadVersion) {
    for (uint8_t ver : {0x00, 0x01, 0x04, 0xFF}) {
        auto d = decode_reply(reply_bytes(0, kAtypIPv4, {1, 2, 3, 4}, 1, ver));
        EXPECT_FALSE(d.need_more);
        EXPECT_FALSE(d.value);
        EXPECT_NE(d.error.find("version"), std::string::npos) << d.error;
    }
    EXPECT_EQ(decode_reply(Bytes{4}).error, "bad version 0x04 in reply");
}

TEST(Reply, UnknownAtyp) {
    for (uint8_t atyp : {0x00, 0x02, 0x05, 0x7F, 0xFF}) {
        auto d = decode_reply(reply_bytes(0, atyp, {1, 2, 3, 4}, 1));
        EXPECT_FALSE(d.need_more) << int{atyp};
        EXPECT_FALSE(d.value);
        EXPECT_NE(d.error.find("address type"), std::string::npos) << d.error;
        // Detected as soon as the ATYP byte is there.
        auto early = decode_reply(Bytes{5, 0, 0, atyp});
        EXPECT_FALSE(early.need_more);
        EXPECT_FALSE(early.error.empty());
    }
}

TEST(RepText, RfcTexts) {
    EXPECT_EQ(rep_text(0), "succeeded");
    EXPECT_EQ(rep_text(1), "general SOCKS server failure");
    EXPECT_EQ(rep_text(2), "connection not allowed by ruleset");
    EXPECT_EQ(rep_text(3), "Network unreachable");
    EXPECT_EQ(rep_text(4), "Host unreachable");
    EXPECT_EQ(rep_text(5), "Connection refused");
    EXPECT_EQ(rep_text(6), "TTL expired");
    EXPECT_EQ(rep_text(7), "Command not supported");
    EXPECT_EQ(rep_text(8), "Address type not supported");
}

TEST(RepText, Unassigned) {
    for (unsigned rep = 9; rep <= 255; ++rep)
        EXPECT_EQ(rep_text(static_cast<uint8_t>(rep)), "unassigned reply code") << rep;
}

// ---- UDP header ---------------------------------------------------------------

TEST(UdpHeader, EncodeIPv4) {
    std::array<uint8_t, kUdpHeaderMax> out{};
    ASSERT_EQ(encode_udp_header(ip("203.0.113.5", 0x0035), out), 10u);
    EXPECT_EQ(Bytes(out.begin(), out.begin() + 10), (Bytes{0, 0, 0, 1, 203, 0, 113, 5, 0x00, 0x35}));
}

TEST(UdpHeader, EncodeIPv6) {
    std::array<uint8_t, kUdpHeaderMax> out{};
    const Endpoint dst = ip("2001:db8::5", 0xABCD);
    ASSERT_EQ(encode_udp_header(dst, out), 22u);
    Bytes want{0, 0, 0, 4};
    const Bytes addr = dst.ip_bytes();
    want.insert(want.end(), addr.begin(), addr.end());
    want.push_back(0xAB);
    want.push_back(0xCD);
    EXPECT_EQ(Bytes(out.begin(), out.end()), want);
}

TEST(UdpHeader, EncodeUnsetReturnsZero) {
    std::array<uint8_t, kUdpHeaderMax> out{};
    EXPECT_EQ(encode_udp_header(Endpoint{}, out), 0u);
}

TEST(UdpHeader, RoundTrip) {
    for (const Endpoint& dst : {ip("127.0.0.1", 7), ip("::1", 65535), ip("0.0.0.0", 0), ip("fe80::1:2", 443)}) {
        std::array<uint8_t, kUdpHeaderMax> hdr{};
        const size_t n = encode_udp_header(dst, hdr);
        ASSERT_GT(n, 0u);
        Bytes dgram(hdr.begin(), hdr.begin() + static_cast<long>(n));
        const Bytes payload{'p', 'i', 'n', 'g'};
        dgram.insert(dgram.end(), payload.begin(), payload.end());

        auto h = decode_udp_header(dgram);
        ASSERT_TRUE(h) << dst.to_string();
        EXPECT_EQ(h->src, dst);
        EXPECT_EQ(h->frag, 0);
        EXPECT_EQ(h->header_len, n);
        EXPECT_EQ(Bytes(dgram.begin() + static_cast<long>(h->header_len), dgram.end()), payload);
    }
}

TEST(UdpHeader, HeaderWithoutPayloadAccepted) {
    const Bytes dgram{0, 0, 0, 1, 1, 2, 3, 4, 0, 80};
    auto h = decode_udp_header(dgram);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->header_len, dgram.size());
}

TEST(UdpHeader, FragPreserved) {
    for (uint8_t frag : {1, 2, 0x7F, 0x80, 0xFF}) {
        const Bytes dgram{0, 0, frag, 1, 10, 0, 0, 1, 0, 53, 'x'};
        auto h = decode_udp_header(dgram);
        ASSERT_TRUE(h);
        EXPECT_EQ(h->frag, frag);
        EXPECT_EQ(h->src, ip("10.0.0.1", 53));
    }
}

TEST(UdpHeader, RsvNonZeroRejected) {
    EXPECT_FALSE(decode_udp_header(Bytes{0, 1, 0, 1, 1, 2, 3, 4, 0, 80}));
    EXPECT_FALSE(decode_udp_header(Bytes{1, 0, 0, 1, 1, 2, 3, 4, 0, 80}));
    EXPECT_FALSE(decode_udp_header(Bytes{0xFF, 0xFF, 0, 1, 1, 2, 3, 4, 0, 80}));
}

TEST(UdpHeader, DomainAndUnknownAtypRejected) {
    EXPECT_FALSE(decode_udp_header(Bytes{0, 0, 0, 3, 1, 'a', 0, 80, 'x', 'y', 'z'}));
    for (uint8_t atyp : {0, 2, 5, 0xFF}) EXPECT_FALSE(decode_udp_header(Bytes{0, 0, 0, atyp, 1, 2, 3, 4, 0, 80}));
}

TEST(UdpHeader, TruncatedRejected) {
    for (const Endpoint& dst : {ip("1.2.3.4", 80), ip("2001:db8::1", 80)}) {
        std::array<uint8_t, kUdpHeaderMax> hdr{};
        const size_t n = encode_udp_header(dst, hdr);
        for (size_t len = 0; len < n; ++len)
            EXPECT_FALSE(decode_udp_header(std::span<const uint8_t>(hdr.data(), len))) << len;
    }
}

// ---- Lease events -------------------------------------------------------------

LeaseEvent sample_event(LeaseEventType type, int family) {
    LeaseEvent ev;
    ev.type = type;
    ev.generation = 0x01020304;
    if (family == AF_INET) {
        ev.relay = ip("192.0.2.1", 40001);
        ev.source = ip("192.0.2.99", 0);  // the port is not carried
    } else {
        ev.relay = ip("2001:db8::1", 40001);
        ev.source = ip("2001:db8::99", 0);
    }
    if (type == LeaseEventType::Lost) {
        ev.relay = Endpoint{};
        ev.err = ENOTCONN;
        ev.s5err = 1010;
    }
    return ev;
}

TEST(LeaseEvent, RoundTripEveryTypeAndFamily) {
    for (auto type : {LeaseEventType::Ready, LeaseEventType::Renewed, LeaseEventType::Lost, LeaseEventType::Renewing}) {
        for (int family : {AF_INET, AF_INET6}) {
            const LeaseEvent ev = sample_event(type, family);
            const auto rec = encode_lease_event(ev);
            static_assert(rec.size() == kLeaseEventSize);
            auto back = decode_lease_event(rec);
            ASSERT_TRUE(back) << int(type) << " " << family;
            EXPECT_EQ(*back, ev) << int(type) << " " << family;
        }
    }
}

TEST(LeaseEvent, RoundTripMixedAndExtremeValues) {
    LeaseEvent ev;
    ev.type = LeaseEventType::Renewed;
    ev.generation = 0xFFFFFFFF;
    ev.relay = ip("::ffff:10.0.0.1", 65535);
    ev.source = ip("10.0.0.2");
    ev.err = -1;  // sign survives the unsigned wire field
    ev.s5err = INT32_MIN;
    auto back = decode_lease_event(encode_lease_event(ev));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, ev);
}

TEST(LeaseEvent, RoundTripUnsetEndpoints) {
    LeaseEvent ev;
    ev.type = LeaseEventType::Lost;
    ev.generation = 3;
    ev.err = ETIMEDOUT;
    const auto rec = encode_lease_event(ev);
    EXPECT_EQ(rec[12], 0);  // relay family
    EXPECT_EQ(rec[31], 0);  // source family
    auto back = decode_lease_event(rec);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, ev);
    EXPECT_EQ(back->relay.family, 0);
    EXPECT_EQ(back->source.family, 0);
}

TEST(LeaseEvent, ExactLayout) {
    LeaseEvent ev;
    ev.type = LeaseEventType::Renewed;
    ev.generation = 0x0A0B0C0D;
    ev.relay = ip("1.2.3.4", 0x1F90);
    ev.source = ip("::2");
    ev.err = 0x01020304;
    ev.s5err = 0x05060708;
    const auto rec = encode_lease_event(ev);

    Bytes want(kLeaseEventSize, 0);
    const Bytes head{'S', '5', 'L', 'E', 1, 2, 0, 0, 0x0A, 0x0B, 0x0C, 0x0D, 4, 0x1F, 0x90, 1, 2, 3, 4};
    std::copy(head.begin(), head.end(), want.begin());
    want[31] = 6;   // source family: 6, not AF_INET6
    want[47] = 2;   // ::2
    const Bytes tail{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    std::copy(tail.begin(), tail.end(), want.begin() + 48);
    EXPECT_EQ(Bytes(rec.begin(), rec.end()), want);
}

TEST(LeaseEvent, SocketFlagIsByteSixBitZeroAndOtherBitsAreIgnored) {
    LeaseEvent ev = sample_event(LeaseEventType::Ready, AF_INET);
    ev.socket = true;
    auto rec = encode_lease_event(ev);
    EXPECT_EQ(rec[6], 1);
    auto back = decode_lease_event(rec);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, ev);
    rec[6] = 0xFE;  // a newer broker's flags, without ours
    back = decode_lease_event(rec);
    ASSERT_TRUE(back);
    EXPECT_FALSE(back->socket);
}

TEST(LeaseEvent, FamiliesAreNotAfValues) {
    const auto v4 = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET));
    const auto v6 = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET6));
    EXPECT_EQ(v4[12], 4);
    EXPECT_EQ(v4[31], 4);
    EXPECT_EQ(v6[12], 6);
    EXPECT_EQ(v6[31], 6);
}

TEST(LeaseEvent, UnusedBytesZero) {
    // Stale bytes beyond the IPv4 address and a source port must not leak.
    LeaseEvent ev = sample_event(LeaseEventType::Ready, AF_INET);
    std::fill(ev.relay.ip.begin() + 4, ev.relay.ip.end(), 0xEE);
    std::fill(ev.source.ip.begin() + 4, ev.source.ip.end(), 0xEE);
    ev.source.port = 1234;
    const auto rec = encode_lease_event(ev);
    for (size_t i = 6; i < 8; ++i) EXPECT_EQ(rec[i], 0) << i;
    for (size_t i = 15 + 4; i < 31; ++i) EXPECT_EQ(rec[i], 0) << i;
    for (size_t i = 32 + 4; i < 48; ++i) EXPECT_EQ(rec[i], 0) << i;
    for (size_t i = 56; i < kLeaseEventSize; ++i) EXPECT_EQ(rec[i], 0) << i;

    auto back = decode_lease_event(rec);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->relay.ip_bytes(), ip("192.0.2.1").ip_bytes());
    EXPECT_EQ(back->source.port, 0);
}

TEST(LeaseEvent, RejectsWrongSize) {
    const auto rec = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET));
    Bytes b(rec.begin(), rec.end());
    EXPECT_TRUE(decode_lease_event(b));
    for (size_t n : {0u, 1u, 4u, 56u, 63u}) EXPECT_FALSE(decode_lease_event(std::span(b.data(), n))) << n;
    b.push_back(0);
    EXPECT_FALSE(decode_lease_event(b));
    b.resize(128, 0);
    EXPECT_FALSE(decode_lease_event(b));
}

TEST(LeaseEvent, RejectsBadMagic) {
    const auto good = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET));
    for (size_t i = 0; i < 4; ++i) {
        auto rec = good;
        rec[i] ^= 0x20;  // "s5LE" etc.
        EXPECT_FALSE(decode_lease_event(rec)) << i;
    }
}

TEST(LeaseEvent, RejectsBadVersion) {
    for (uint8_t v : {0, 2, 0xFF}) {
        auto rec = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET));
        rec[4] = v;
        EXPECT_FALSE(decode_lease_event(rec)) << int{v};
    }
}

// Renewing (4): the association of the current generation ended; the
// record carries that generation and the ended relay and source.
TEST(LeaseEvent, RenewingIsTypeFourWithTheEndedGeneration) {
    LeaseEvent ev;
    ev.type = LeaseEventType::Renewing;
    ev.generation = 7;
    ev.relay = ip("192.0.2.1", 40001);
    ev.source = ip("192.0.2.99");
    const auto rec = encode_lease_event(ev);
    EXPECT_EQ(rec[5], 4);
    EXPECT_EQ(rec[8], 0);
    EXPECT_EQ(rec[11], 7);
    auto back = decode_lease_event(rec);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->type, LeaseEventType::Renewing);
    EXPECT_EQ(*back, ev);
    // Without endpoints (as a Lost carries none) it decodes too.
    LeaseEvent bare;
    bare.type = LeaseEventType::Renewing;
    bare.generation = 2;
    auto b = decode_lease_event(encode_lease_event(bare));
    ASSERT_TRUE(b);
    EXPECT_EQ(*b, bare);
}

TEST(LeaseEvent, RejectsUnknownType) {
    for (uint8_t t : {0, 5, 6, 0x80, 0xFF}) {
        auto rec = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET));
        rec[5] = t;
        EXPECT_FALSE(decode_lease_event(rec)) << int{t};
    }
}

TEST(LeaseEvent, RejectsUnknownFamilyByte) {
    // AF_INET (2) and AF_INET6 (10) are exactly the values a buggy writer
    // using the numeric AF_* would produce.
    for (uint8_t f : {uint8_t{AF_INET}, uint8_t{AF_INET6}, uint8_t{1}, uint8_t{5}, uint8_t{0xFF}}) {
        auto rec = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET));
        rec[12] = f;
        EXPECT_FALSE(decode_lease_event(rec)) << "relay family " << int{f};
        rec = encode_lease_event(sample_event(LeaseEventType::Ready, AF_INET));
        rec[31] = f;
        EXPECT_FALSE(decode_lease_event(rec)) << "source family " << int{f};
    }
}

}  // namespace
}  // namespace s5::wire
