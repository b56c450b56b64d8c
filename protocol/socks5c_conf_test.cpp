#include "socks5c_conf.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace {

using namespace s5::socks5c;
using s5::wire::Endpoint;

constexpr const char* kFile = "/etc/socks5c.conf";

Endpoint ip(const char* text, uint16_t port = 0) {
    auto e = Endpoint::parse_ip(text, port);
    EXPECT_TRUE(e) << text;
    return e.value_or(Endpoint{});
}

Socks5cConf ok(std::string_view text) {
    Result r = parse(text, kFile);
    EXPECT_TRUE(r.ok()) << r.error.to_string();
    return r.ok() ? *r.value : Socks5cConf{};
}

std::string error(std::string_view text, std::string_view file = kFile) {
    Result r = parse(text, file);
    EXPECT_FALSE(r.ok()) << text;
    return r.ok() ? "(accepted)" : r.error.to_string();
}

// A resolver that knows one name and counts its calls.
struct Resolver {
    explicit Resolver(std::optional<std::string> n) : name(std::move(n)) {}
    std::optional<std::string> name;
    int calls = 0;
    Endpoint asked;
    ResolveFn fn() {
        return [this](const Endpoint& e) {
            ++calls;
            asked = e;
            return name;
        };
    }
};

const ResolveFn kNoResolver;

Target server(const char* addr, uint16_t port) { return Target{false, ip(addr, port)}; }

// ---- Syntax ------------------------------------------------------------------

TEST(Socks5cConfParse, EmptyBlankAndCommentOnly) {
    for (const char* text : {"", "\n", "   \t \n\n", "# only a comment\n", "   # indented comment", "#\n#\n",
                             "\r\n", "# no newline at end"}) {
        Socks5cConf c = ok(text);
        EXPECT_TRUE(c.addresses().empty()) << text;
        EXPECT_TRUE(c.fragments().empty()) << text;
    }
}

TEST(Socks5cConfParse, RecordWithCommentsAndWhitespace) {
    Socks5cConf c = ok(
        "# header\n"
        "\n"
        "10.0.0.0/8 192.0.2.1   # trailing comment\n"
        "\t 172.16.0.0/12\t\t192.0.2.2:1081 \t\n"
        "192.168.0.0/16 NONE#comment right after\n"
        "198.51.100.0/24 192.0.2.3\r\n");
    ASSERT_EQ(c.addresses().size(), 4u);
    EXPECT_EQ(c.addresses()[0].network, ip("10.0.0.0"));
    EXPECT_EQ(c.addresses()[0].length, 8u);
    EXPECT_EQ(c.addresses()[0].target, server("192.0.2.1", 1080));
    EXPECT_EQ(c.addresses()[0].line, 3u);
    EXPECT_EQ(c.addresses()[1].target, server("192.0.2.2", 1081));
    EXPECT_EQ(c.addresses()[1].line, 4u);
    EXPECT_TRUE(c.addresses()[2].target.direct);
    EXPECT_EQ(c.addresses()[2].line, 5u);
    EXPECT_EQ(c.addresses()[3].target, server("192.0.2.3", 1080));  // CRLF
    EXPECT_EQ(c.addresses()[3].line, 6u);
}

TEST(Socks5cConfParse, DefaultPortAndExplicitPorts) {
    Socks5cConf c = ok("10.0.0.1 192.0.2.1\n10.0.0.2 192.0.2.1:1\n10.0.0.3 192.0.2.1:65535\n");
    ASSERT_EQ(c.addresses().size(), 3u);
    EXPECT_EQ(c.addresses()[0].target.server.port, kDefaultPort);
    EXPECT_EQ(c.addresses()[0].target.server.port, 1080);
    EXPECT_EQ(c.addresses()[1].target.server.port, 1);
    EXPECT_EQ(c.addresses()[2].target.server.port, 65535);
}

TEST(Socks5cConfParse, Ipv6ServerPortAfterLastColon) {
    Socks5cConf c = ok(
        "10.0.0.1 2001:db8::1:1080\n"
        "10.0.0.2 ::1:9050\n"
        "10.0.0.3 2001:db8:0:0:0:0:0:2:1081\n"
        "10.0.0.4 [2001:db8::3]:1082\n"
        "10.0.0.5 [::1]:1\n");
    ASSERT_EQ(c.addresses().size(), 5u);
    EXPECT_EQ(c.addresses()[0].target, server("2001:db8::1", 1080));
    EXPECT_EQ(c.addresses()[1].target, server("::1", 9050));
    EXPECT_EQ(c.addresses()[2].target, server("2001:db8::2", 1081));
    EXPECT_EQ(c.addresses()[3].target, server("2001:db8::3", 1082));
    EXPECT_EQ(c.addresses()[4].target, server("::1", 1));
}

TEST(Socks5cConfParse, Ipv6ServerLastGroupIsThePort) {
    // IBM's rule taken literally: "2001:db8::1:2" is 2001:db8::1 port 2.
    Socks5cConf c = ok("10.0.0.1 2001:db8::1:2\n");
    EXPECT_EQ(c.addresses()[0].target, server("2001:db8::1", 2));
}

TEST(Socks5cConfParse, MappedServerIsStoredAsIpv4) {
    Socks5cConf c = ok("10.0.0.1 ::ffff:192.0.2.1:1080\n10.0.0.2 [::ffff:192.0.2.2]:1081\n");
    EXPECT_EQ(c.addresses()[0].target, server("192.0.2.1", 1080));
    EXPECT_EQ(c.addresses()[1].target, server("192.0.2.2", 1081));
}

TEST(Socks5cConfParse, NoneIsUpperCaseOnly) {
    Socks5cConf c = ok("10.0.0.0/8 NONE\n");
    EXPECT_TRUE(c.addresses()[0].target.direct);
    EXPECT_EQ(error("10.0.0.0/8 none\n"),
              "/etc/socks5c.conf:1: server \"none\" is not an IP address (host names are not resolved here; write "
              "the address, or NONE for no SOCKS server)");
}

TEST(Socks5cConfParse, PrefixLengths) {
    Socks5cConf c = ok(
        "0.0.0.0/0 192.0.2.1\n"
        "10.0.0.0/8 192.0.2.1\n"
        "10.1.2.3 192.0.2.1\n"
        "10.1.2.4/32 192.0.2.1\n"
        "::/0 192.0.2.1\n"
        "2001:db8::/32 192.0.2.1\n"
        "2001:db8::1 192.0.2.1\n"
        "2001:db8::2/128 192.0.2.1\n"
        "10.0.0.0/009 NONE\n");  // leading zeros: decimal 9
    EXPECT_EQ(c.addresses()[0].length, 0u);
    EXPECT_EQ(c.addresses()[1].length, 8u);
    EXPECT_EQ(c.addresses()[2].length, 32u);  // no prefix: all bits
    EXPECT_EQ(c.addresses()[3].length, 32u);
    EXPECT_EQ(c.addresses()[4].length, 0u);
    EXPECT_EQ(c.addresses()[5].length, 32u);
    EXPECT_EQ(c.addresses()[6].length, 128u);  // no prefix: all bits
    EXPECT_EQ(c.addresses()[7].length, 128u);
    EXPECT_EQ(c.addresses()[8].length, 9u);
    EXPECT_EQ(c.addresses()[4].network.family, AF_INET6);
    EXPECT_EQ(error("10.0.0.0/8 NONE\n10.0.0.0/008 NONE\n"),
              "/etc/socks5c.conf:2: duplicate destination 10.0.0.0/8 (already on line 1)");
}

TEST(Socks5cConfParse, HostBitsAreMasked) {
    Socks5cConf c = ok("10.1.2.3/8 NONE\n2001:db8::ff/120 NONE\n192.0.2.255/25 NONE\n");
    EXPECT_EQ(c.addresses()[0].network, ip("10.0.0.0"));
    EXPECT_EQ(c.addresses()[1].network, ip("2001:db8::"));
    EXPECT_EQ(c.addresses()[2].network, ip("192.0.2.128"));
    EXPECT_EQ(error("10.0.0.0/8 NONE\n10.9.9.9/8 192.0.2.1\n"),
              "/etc/socks5c.conf:2: duplicate destination 10.0.0.0/8 (already on line 1)");
}

TEST(Socks5cConfParse, MappedDestinationIsStoredAsIpv4) {
    Socks5cConf c = ok("::ffff:10.0.0.0/104 NONE\n::ffff:192.0.2.1 NONE\n::ffff:0:0/96 NONE\n::/8 NONE\n");
    EXPECT_EQ(c.addresses()[0].network, ip("10.0.0.0"));
    EXPECT_EQ(c.addresses()[0].length, 8u);
    EXPECT_EQ(c.addresses()[1].network, ip("192.0.2.1"));
    EXPECT_EQ(c.addresses()[1].length, 32u);
    EXPECT_EQ(c.addresses()[2].network, ip("0.0.0.0"));
    EXPECT_EQ(c.addresses()[2].length, 0u);
    EXPECT_EQ(c.addresses()[3].network.family, AF_INET6);  // shorter than /96: stays IPv6
    EXPECT_EQ(error("10.0.0.0/8 NONE\n::ffff:10.0.0.0/104 NONE\n"),
              "/etc/socks5c.conf:2: duplicate destination 10.0.0.0/8 (already on line 1)");
}

TEST(Socks5cConfParse, Fragments) {
    Socks5cConf c = ok("example.com 192.0.2.1\n.Corp.Example.NET NONE\nhost-1_a 192.0.2.2:1081\n1e100.net NONE\n");
    ASSERT_EQ(c.fragments().size(), 4u);
    EXPECT_TRUE(c.addresses().empty());
    EXPECT_EQ(c.fragments()[0].fragment, "example.com");
    EXPECT_EQ(c.fragments()[0].target, server("192.0.2.1", 1080));
    EXPECT_EQ(c.fragments()[1].fragment, ".corp.example.net");  // stored lower case
    EXPECT_TRUE(c.fragments()[1].target.direct);
    EXPECT_EQ(c.fragments()[2].fragment, "host-1_a");
    EXPECT_EQ(c.fragments()[2].line, 3u);
    EXPECT_EQ(c.fragments()[3].fragment, "1e100.net");
    EXPECT_TRUE(c.has_fragments());
    EXPECT_EQ(error("example.com NONE\nEXAMPLE.com 192.0.2.1\n"),
              "/etc/socks5c.conf:2: duplicate destination \"EXAMPLE.com\" (already on line 1)");
    EXPECT_TRUE(ok(std::string(kMaxFragmentLength, 'a') + " NONE").has_fragments());
}

// ---- Bad lines -------------------------------------------------------------------

TEST(Socks5cConfErrors, EachKindWithFileAndLine) {
    struct Case {
        const char* text;
        const char* message;
    };
    const Case cases[] = {
        {"# ok\n10.0.0.0/8\n", "/etc/socks5c.conf:2: missing server after destination \"10.0.0.0/8\""},
        {"10.0.0.0/8 # no server\n", "/etc/socks5c.conf:1: missing server after destination \"10.0.0.0/8\""},
        {"10.0.0.0/8 NONE extra\n",
         "/etc/socks5c.conf:1: unexpected \"extra\" after the server (a comment starts with '#')"},
        {"\n\n\n\n\n\n10.0.0.0/33 NONE\n",
         "/etc/socks5c.conf:7: prefix length 33 is out of range for an IPv4 address"},
        {"2001:db8::/129 NONE\n", "/etc/socks5c.conf:1: prefix length 129 is out of range for an IPv6 address"},
        {"10.0.0.0/99999999999999999999 NONE\n",
         "/etc/socks5c.conf:1: prefix length 9999999999999999... is out of range for an IPv4 address"},
        {"10.0.0.0/ NONE\n", "/etc/socks5c.conf:1: missing prefix length after '/' in \"10.0.0.0/\""},
        {"10.0.0.0/x NONE\n", "/etc/socks5c.conf:1: prefix length \"x\" is not a number"},
        {"10.0.0.0/-1 NONE\n", "/etc/socks5c.conf:1: prefix length \"-1\" is not a number"},
        {"10.0.0.0/+8 NONE\n", "/etc/socks5c.conf:1: prefix length \"+8\" is not a number"},
        {"10.0.0.0/8/8 NONE\n", "/etc/socks5c.conf:1: prefix length \"8/8\" is not a number"},
        {"10.0.0.256 NONE\n", "/etc/socks5c.conf:1: destination \"10.0.0.256\" is not a valid IP address"},
        {"10.1.2 NONE\n", "/etc/socks5c.conf:1: destination \"10.1.2\" is not a valid IP address"},
        {"2001:db8::g NONE\n", "/etc/socks5c.conf:1: destination \"2001:db8::g\" is not a valid IP address"},
        {"fe80::1%eth0 NONE\n", "/etc/socks5c.conf:1: destination \"fe80::1%eth0\" is not a valid IP address"},
        {"example.com/24 NONE\n",
         "/etc/socks5c.conf:1: destination \"example.com/24\" is not a valid IP address (a prefix length follows "
         "only an address)"},
        {"*.example.com NONE\n",
         "/etc/socks5c.conf:1: destination \"*.example.com\" is neither an IP address nor a host-name fragment "
         "(letters, digits, '-', '_', '.')"},
        {"10.0.0.0/8 proxy.example.com\n",
         "/etc/socks5c.conf:1: server \"proxy.example.com\" is not an IP address (host names are not resolved "
         "here; write the address, or NONE for no SOCKS server)"},
        {"10.0.0.0/8 proxy:1080\n",
         "/etc/socks5c.conf:1: server \"proxy:1080\" is not an IP address (host names are not resolved here; "
         "write the address, or NONE for no SOCKS server)"},
        {"10.0.0.0/8 0.0.0.0\n", "/etc/socks5c.conf:1: server address 0.0.0.0 is unspecified"},
        {"10.0.0.0/8 :::1080\n", "/etc/socks5c.conf:1: server address :: is unspecified"},
        {"10.0.0.0/8 [::]:1080\n", "/etc/socks5c.conf:1: server address :: is unspecified"},
        {"10.0.0.0/8 192.0.2.1:\n", "/etc/socks5c.conf:1: missing port after ':' in server \"192.0.2.1:\""},
        {"10.0.0.0/8 192.0.2.1:0\n", "/etc/socks5c.conf:1: port 0 is out of range (1..65535)"},
        {"10.0.0.0/8 192.0.2.1:65536\n", "/etc/socks5c.conf:1: port 65536 is out of range (1..65535)"},
        {"10.0.0.0/8 192.0.2.1:http\n",
         "/etc/socks5c.conf:1: port \"http\" is not a number (in server \"192.0.2.1:http\")"},
        {"10.0.0.0/8 2001:db8::1\n",
         "/etc/socks5c.conf:1: IPv6 server \"2001:db8::1\" must be followed by a port (the text after the last "
         "':'), as in \"2001:db8::1:1080\""},
        {"10.0.0.0/8 ::1\n",
         "/etc/socks5c.conf:1: IPv6 server \"::1\" must be followed by a port (the text after the last ':'), as "
         "in \"::1:1080\""},
        {"10.0.0.0/8 2001:db8::1:\n",
         "/etc/socks5c.conf:1: missing port after ':' in server \"2001:db8::1:\""},
        {"10.0.0.0/8 2001:db8::1:x\n",
         "/etc/socks5c.conf:1: port \"x\" is not a number (in server \"2001:db8::1:x\")"},
        {"10.0.0.0/8 zz::1:1080\n",
         "/etc/socks5c.conf:1: server \"zz::1:1080\" is not an IPv6 address followed by ':' and a port"},
        {"10.0.0.0/8 [2001:db8::1]\n",
         "/etc/socks5c.conf:1: IPv6 server \"[2001:db8::1]\" must be followed by a port, as in "
         "\"[2001:db8::1]:1080\""},
        {"10.0.0.0/8 [2001:db8::1]:\n",
         "/etc/socks5c.conf:1: missing port after ':' in server \"[2001:db8::1]:\""},
        {"10.0.0.0/8 [2001:db8::1]1080\n",
         "/etc/socks5c.conf:1: server \"[2001:db8::1]1080\": expected ':' and a port after ']'"},
        {"10.0.0.0/8 [2001:db8::1:1080\n", "/etc/socks5c.conf:1: server \"[2001:db8::1:1080\" lacks the closing ']'"},
        {"10.0.0.0/8 [192.0.2.1]:1080\n",
         "/etc/socks5c.conf:1: server \"[192.0.2.1]:1080\": only an IPv6 address goes in brackets"},
        {"10.0.0.0/8 [2001:db8::1]:0\n", "/etc/socks5c.conf:1: port 0 is out of range (1..65535)"},
    };
    for (const Case& c : cases) EXPECT_EQ(error(c.text), c.message) << c.text;
}

TEST(Socks5cConfErrors, TheFirstBadLineRejectsTheFile) {
    Result r = parse("10.0.0.0/8 NONE\n10.0.0.0/40 NONE\nbad\n", "/tmp/x.conf");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error.file, "/tmp/x.conf");
    EXPECT_EQ(r.error.line, 2u);
    EXPECT_EQ(r.error.reason, "prefix length 40 is out of range for an IPv4 address");
    EXPECT_EQ(r.error.err, 0);
}

TEST(Socks5cConfErrors, TextIsQuotedOnOneLineAndShortened) {
    EXPECT_EQ(error("10.0.0.0/8 \x1b[31m\n"),
              "/etc/socks5c.conf:1: server \"\\x1b[31m\" is not an IP address (host names are not resolved here; "
              "write the address, or NONE for no SOCKS server)");
    EXPECT_EQ(error(std::string("a\0b NONE", 8)),
              "/etc/socks5c.conf:1: destination \"a\\x00b\" is neither an IP address nor a host-name fragment "
              "(letters, digits, '-', '_', '.')");
    EXPECT_EQ(error("x\n", "/etc/evil\nname"), "/etc/evil\\x0aname:1: missing server after destination \"x\"");
    const std::string long_name(300, 'a');
    std::string expected = "/etc/socks5c.conf:1: host-name fragment \"";
    expected += std::string(64, 'a');
    expected += "...\" is longer than 253 characters";
    EXPECT_EQ(error(long_name + " NONE"), expected);
}

// ---- Matching ----------------------------------------------------------------

TEST(Socks5cConfMatch, ImpliedDefaultsForBothFamilies) {
    for (const char* text : {"", "# nothing\n", "10.0.0.0/8 192.0.2.1\n2001:db8::/32 192.0.2.1\n"}) {
        Socks5cConf c = ok(text);
        for (const char* dst : {"192.0.2.7", "2001:db9::1", "::ffff:198.51.100.1", "::1", "127.0.0.1"}) {
            Route r = c.match(ip(dst, 53), kNoResolver);
            EXPECT_TRUE(r.direct()) << text << " " << dst;
            EXPECT_EQ(r.line, 0u);
            EXPECT_FALSE(r.by_fragment);
        }
    }
}

TEST(Socks5cConfMatch, ExplicitDefaultRoutesReplaceTheImpliedOnes) {
    Socks5cConf c = ok("0.0.0.0/0 192.0.2.1\n::/0 [2001:db8::1]:1080\n10.0.0.0/8 NONE\n");
    EXPECT_EQ(c.match(ip("198.51.100.1"), kNoResolver).target, server("192.0.2.1", 1080));
    EXPECT_EQ(c.match(ip("2001:db9::1"), kNoResolver).target, server("2001:db8::1", 1080));
    EXPECT_EQ(c.match(ip("2001:db9::1"), kNoResolver).line, 2u);
    EXPECT_TRUE(c.match(ip("10.9.9.9"), kNoResolver).direct());
    EXPECT_EQ(c.match(ip("10.9.9.9"), kNoResolver).line, 3u);
}

TEST(Socks5cConfMatch, LongestPrefixAmongAddresses) {
    // Order in the file does not matter.
    Socks5cConf c = ok(
        "10.1.2.0/24 192.0.2.3\n"
        "10.0.0.0/8 192.0.2.1\n"
        "10.1.2.3 NONE\n"
        "10.1.0.0/16 192.0.2.2\n"
        "2001:db8::/32 192.0.2.4\n"
        "2001:db8:1::/48 192.0.2.5\n");
    EXPECT_EQ(c.match(ip("10.200.0.1"), kNoResolver).target, server("192.0.2.1", 1080));
    EXPECT_EQ(c.match(ip("10.1.200.1"), kNoResolver).target, server("192.0.2.2", 1080));
    EXPECT_EQ(c.match(ip("10.1.2.200"), kNoResolver).target, server("192.0.2.3", 1080));
    Route exact = c.match(ip("10.1.2.3", 9), kNoResolver);
    EXPECT_TRUE(exact.direct());
    EXPECT_EQ(exact.line, 3u);
    EXPECT_TRUE(c.match(ip("11.0.0.1"), kNoResolver).direct());
    EXPECT_EQ(c.match(ip("11.0.0.1"), kNoResolver).line, 0u);
    EXPECT_EQ(c.match(ip("2001:db8:2::1"), kNoResolver).target, server("192.0.2.4", 1080));
    EXPECT_EQ(c.match(ip("2001:db8:1::1"), kNoResolver).target, server("192.0.2.5", 1080));
    EXPECT_EQ(c.match(ip("2001:db8:1::1"), kNoResolver).line, 6u);
    // Families do not mix: ::/0-ish IPv6 records never match IPv4.
    Socks5cConf v6only = ok("::/0 192.0.2.9\n");
    EXPECT_TRUE(v6only.match(ip("10.0.0.1"), kNoResolver).direct());
}

TEST(Socks5cConfMatch, OddPrefixLengths) {
    Socks5cConf c = ok("192.0.2.128/25 192.0.2.1\n2001:db8::8000/113 192.0.2.2\n");
    EXPECT_FALSE(c.match(ip("192.0.2.128"), kNoResolver).direct());
    EXPECT_FALSE(c.match(ip("192.0.2.255"), kNoResolver).direct());
    EXPECT_TRUE(c.match(ip("192.0.2.127"), kNoResolver).direct());
    EXPECT_FALSE(c.match(ip("2001:db8::ffff"), kNoResolver).direct());
    EXPECT_TRUE(c.match(ip("2001:db8::7fff"), kNoResolver).direct());
}

TEST(Socks5cConfMatch, MappedDestinationsMatchAsIpv4) {
    Socks5cConf c = ok("10.0.0.0/8 192.0.2.1\n::ffff:0:0/96 192.0.2.9\n::/0 192.0.2.6\nexample.com NONE\n");
    // ::ffff:0:0/96 became 0.0.0.0/0.
    Resolver res{std::nullopt};
    EXPECT_EQ(c.match(ip("::ffff:10.1.2.3", 53), res.fn()).target, server("192.0.2.1", 1080));
    EXPECT_EQ(res.asked, ip("10.1.2.3", 53));  // the resolver sees it as IPv4 too
    EXPECT_EQ(c.match(ip("::ffff:11.1.2.3"), kNoResolver).target, server("192.0.2.9", 1080));
    EXPECT_EQ(c.match(ip("11.1.2.3"), kNoResolver).target, server("192.0.2.9", 1080));
    EXPECT_EQ(c.match(ip("2001:db8::1"), kNoResolver).target, server("192.0.2.6", 1080));
}

TEST(Socks5cConfMatch, FragmentOccursInTheNameCaseInsensitively) {
    Socks5cConf c = ok("example.com 192.0.2.1\n");
    for (const char* name : {"example.com", "host.example.com", "HOST.EXAMPLE.COM.", "host.example.community",
                             "myexample.com", "a.example.com.b"}) {
        Resolver res{name};
        Route r = c.match(ip("198.51.100.1"), res.fn());
        EXPECT_EQ(r.target, server("192.0.2.1", 1080)) << name;
        EXPECT_TRUE(r.by_fragment) << name;
        EXPECT_EQ(r.line, 1u);
    }
    for (const char* name : {"example.org", "examplecom", "example", ""}) {
        Resolver res{name};
        EXPECT_TRUE(c.match(ip("198.51.100.1"), res.fn()).direct()) << name;
        EXPECT_EQ(res.calls, 1);
    }
}

TEST(Socks5cConfMatch, FragmentEndingInDotEndsAtALabelBoundary) {
    Socks5cConf c = ok(".example.com. 192.0.2.1\ncorp. NONE\n");
    for (const char* name : {"host.example.com", "host.example.com.", "A.B.EXAMPLE.COM", "host.example.com.au"}) {
        Resolver res{name};
        EXPECT_EQ(c.match(ip("198.51.100.1"), res.fn()).line, 1u) << name;
    }
    for (const char* name : {"example.com", "host.example.community", "host.example.comx."}) {
        Resolver res{name};
        EXPECT_EQ(c.match(ip("198.51.100.1"), res.fn()).line, 0u) << name;
    }
    for (const char* name : {"host.corp", "host.corp.example.org", "corp."}) {
        Resolver res{name};
        EXPECT_EQ(c.match(ip("198.51.100.1"), res.fn()).line, 2u) << name;
    }
    Resolver res{"host.corporate.example"};
    EXPECT_EQ(c.match(ip("198.51.100.1"), res.fn()).line, 0u);
}

TEST(Socks5cConfMatch, EqualLengthFragmentsTheEarlierLineWins) {
    Socks5cConf c = ok("aaa 192.0.2.1\nbbb 192.0.2.2\n");
    Resolver res{"bbb.aaa"};
    EXPECT_EQ(c.match(ip("198.51.100.1"), res.fn()).line, 1u);
}

TEST(Socks5cConfMatch, LongestFragmentWins) {
    Socks5cConf c = ok("example.com 192.0.2.1\nlab.example.com NONE\n.com 192.0.2.3\nx.lab.example.com 192.0.2.4\n");
    Resolver a{"www.example.com"};
    EXPECT_EQ(c.match(ip("198.51.100.1"), a.fn()).line, 1u);
    Resolver b{"host.lab.example.com"};
    Route r = c.match(ip("198.51.100.1"), b.fn());
    EXPECT_TRUE(r.direct());
    EXPECT_EQ(r.line, 2u);
    Resolver d{"host.other.com"};
    EXPECT_EQ(c.match(ip("198.51.100.1"), d.fn()).target, server("192.0.2.3", 1080));
    Resolver e{"x.lab.example.com"};
    EXPECT_EQ(c.match(ip("198.51.100.1"), e.fn()).line, 4u);
}

TEST(Socks5cConfMatch, AnyFragmentBeatsAnyAddressRecord) {
    Socks5cConf c = ok("198.51.100.1 192.0.2.1\n.com NONE\n198.51.100.0/24 192.0.2.2\n");
    Resolver res{"host.example.com"};
    Route r = c.match(ip("198.51.100.1"), res.fn());
    EXPECT_TRUE(r.direct());
    EXPECT_TRUE(r.by_fragment);
    EXPECT_EQ(r.line, 2u);
    // No matching fragment: the addresses decide.
    Resolver other{"host.example.org"};
    EXPECT_EQ(c.match(ip("198.51.100.1"), other.fn()).target, server("192.0.2.1", 1080));
    // No name at all: the addresses decide.
    Resolver none{std::nullopt};
    r = c.match(ip("198.51.100.9"), none.fn());
    EXPECT_EQ(r.target, server("192.0.2.2", 1080));
    EXPECT_FALSE(r.by_fragment);
    EXPECT_EQ(none.calls, 1);
    // No resolver: fragments cannot match.
    EXPECT_EQ(c.match(ip("198.51.100.1"), kNoResolver).target, server("192.0.2.1", 1080));
}

TEST(Socks5cConfMatch, ResolvesOnlyWhenFragmentsExistAndAtMostOnce) {
    Socks5cConf addresses_only = ok("10.0.0.0/8 192.0.2.1\n::/0 NONE\n");
    Resolver res{"host.example.com"};
    addresses_only.match(ip("10.1.1.1"), res.fn());
    addresses_only.match(ip("192.0.2.1"), res.fn());
    addresses_only.match(ip("2001:db8::1"), res.fn());
    EXPECT_EQ(res.calls, 0);

    Socks5cConf empty = ok("");
    empty.match(ip("10.1.1.1"), res.fn());
    EXPECT_EQ(res.calls, 0);

    Socks5cConf with_fragments = ok("a.example 192.0.2.1\nb.example NONE\nc.example NONE\n10.0.0.0/8 NONE\n");
    for (const char* name : {"a.example", "none.example", "c.example"}) {
        Resolver r{name};
        with_fragments.match(ip("10.1.1.1", 80), r.fn());
        EXPECT_EQ(r.calls, 1) << name;
        EXPECT_EQ(r.asked, ip("10.1.1.1", 80));
    }
    // An unset destination is direct without a lookup.
    Resolver r{"a.example"};
    EXPECT_TRUE(with_fragments.match(Endpoint{}, r.fn()).direct());
    EXPECT_EQ(r.calls, 0);
}

TEST(Socks5cConfMatch, PortOfTheDestinationIsIgnored) {
    Socks5cConf c = ok("192.0.2.10 192.0.2.1:1081\n");
    EXPECT_EQ(c.match(ip("192.0.2.10", 1), kNoResolver).target, server("192.0.2.1", 1081));
    EXPECT_EQ(c.match(ip("192.0.2.10", 65535), kNoResolver).target, server("192.0.2.1", 1081));
}

// ---- SOCKS5C_CONFIG and load() ---------------------------------------------------

TEST(Socks5cConfEnv, ConfigPathRule) {
    EXPECT_EQ(config_path(nullptr), std::optional<std::string>("/etc/socks5c.conf"));
    EXPECT_EQ(config_path(""), std::nullopt);
    EXPECT_EQ(config_path("/opt/x.conf"), std::optional<std::string>("/opt/x.conf"));

    const char* saved = std::getenv("SOCKS5C_CONFIG");
    const std::optional<std::string> keep = saved ? std::optional<std::string>(saved) : std::nullopt;
    ::unsetenv("SOCKS5C_CONFIG");
    EXPECT_EQ(config_path_from_env(), std::optional<std::string>(kDefaultPath));
    ::setenv("SOCKS5C_CONFIG", "", 1);
    EXPECT_EQ(config_path_from_env(), std::nullopt);
    ::setenv("SOCKS5C_CONFIG", "/srv/socks5c.conf", 1);
    EXPECT_EQ(config_path_from_env(), std::optional<std::string>("/srv/socks5c.conf"));
    if (keep)
        ::setenv("SOCKS5C_CONFIG", keep->c_str(), 1);
    else
        ::unsetenv("SOCKS5C_CONFIG");
}

class Socks5cConfLoad : public ::testing::Test {
protected:
    void SetUp() override {
        std::string tmpl = (std::filesystem::temp_directory_path() / "s5-socks5c-XXXXXX").string();
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
        dir_ = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string write(const std::string& name, const std::string& text) {
        const std::string path = (dir_ / name).string();
        std::ofstream(path, std::ios::binary) << text;
        return path;
    }
    std::filesystem::path dir_;
};

TEST_F(Socks5cConfLoad, ReadsAndParses) {
    const std::string path = write("socks5c.conf", "# test\n10.0.0.0/8 192.0.2.1:1081\nexample.com NONE\n");
    Result r = load(path);
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->addresses().size(), 1u);
    EXPECT_EQ(r.value->fragments().size(), 1u);
}

TEST_F(Socks5cConfLoad, ErrorsNameTheFile) {
    const std::string bad = write("bad.conf", "10.0.0.0/8 NONE\n\n10.0.0.0/33 NONE\n");
    EXPECT_EQ(load(bad).error.to_string(), bad + ":3: prefix length 33 is out of range for an IPv4 address");

    const std::string missing = (dir_ / "missing.conf").string();
    Result m = load(missing);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.error.to_string(), missing + ": cannot read: No such file or directory");
    EXPECT_EQ(m.error.err, ENOENT);
    EXPECT_EQ(m.error.line, 0u);

    EXPECT_EQ(load(dir_.string()).error.to_string(), dir_.string() + ": is not a regular file");

    const std::string fifo = (dir_ / "fifo").string();
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
    EXPECT_EQ(load(fifo).error.to_string(), fifo + ": is not a regular file");  // and did not block

    const std::string big = write("big.conf", std::string(kMaxFileBytes + 1, '#'));
    EXPECT_EQ(load(big).error.to_string(), big + ": is larger than 1048576 bytes");
    const std::string at_cap = write("cap.conf", std::string(kMaxFileBytes, '#'));
    EXPECT_TRUE(load(at_cap).ok());

    EXPECT_EQ(load("").error.to_string(), ": no file name");
}

TEST_F(Socks5cConfLoad, FollowsSymbolicLinks) {
    const std::string target = write("real.conf", "10.0.0.0/8 NONE\n");
    const std::string link = (dir_ / "link.conf").string();
    ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
    EXPECT_TRUE(load(link).ok());
}

TEST_F(Socks5cConfLoad, ManyRecordsParseQuickly) {
    // Tens of thousands of records up to the size cap: duplicates are found
    // by lookup, not by comparing every pair.
    std::string text;
    for (unsigned i = 0; text.size() < kMaxFileBytes - 64; ++i) {
        text += "10.";
        text += std::to_string(i >> 16 & 255);
        text += '.';
        text += std::to_string(i >> 8 & 255);
        text += '.';
        text += std::to_string(i & 255);
        text += " 192.0.2.1\n";
    }
    Result r = load(write("many.conf", text));
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_GT(r.value->addresses().size(), 30000u);
    EXPECT_EQ(r.value->match(ip("10.0.1.2"), kNoResolver).target, server("192.0.2.1", 1080));
}

}  // namespace
