#include "handshake.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cerrno>

namespace {

using s5::err::Code;
using s5::proto::Credentials;
using s5::proto::Handshake;
// What the handshake sends is secret memory (it may hold the password).
using Bytes = s5::SecretBytes;

s5::wire::Endpoint src() { return *s5::wire::Endpoint::parse_ip("127.0.0.1", 0); }

const Bytes kMethodNone{5, 0};
const Bytes kMethodUser{5, 2};
const Bytes kAuthOk{1, 0};
const Bytes kReplyOk{5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40};  // 127.0.0.1:40000

Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

TEST(Handshake, NoAuthSequence) {
    Handshake h(std::nullopt, src(), false);
    EXPECT_EQ(h.start(), (Bytes{5, 1, 0}));
    auto s1 = h.feed(kMethodNone);
    EXPECT_FALSE(s1.failed);
    EXPECT_EQ(s1.send, (Bytes{5, 3, 0, 1, 127, 0, 0, 1, 0, 0}));  // DST = our source IP, port 0
    auto s2 = h.feed(kReplyOk);
    ASSERT_TRUE(s2.done);
    EXPECT_EQ(h.reply().bnd.to_string(), "127.0.0.1:40000");
}

TEST(Handshake, UsernameSequence) {
    Handshake h(Credentials{"u", s5::Secret("pw")}, src(), false);
    EXPECT_EQ(h.start(), (Bytes{5, 1, 2}));
    auto s1 = h.feed(kMethodUser);
    EXPECT_EQ(s1.send, (Bytes{1, 1, 'u', 2, 'p', 'w'}));
    auto s2 = h.feed(kAuthOk);
    EXPECT_EQ(s2.send.size(), 10u);
    EXPECT_TRUE(h.feed(kReplyOk).done);
}

TEST(Handshake, PipelinedSendsEverythingAtOnce) {
    Handshake h(Credentials{"u", s5::Secret("pw")}, src(), true);
    Bytes first = h.start();
    EXPECT_EQ(first, cat({{5, 1, 2}, {1, 1, 'u', 2, 'p', 'w'}, {5, 3, 0, 1, 127, 0, 0, 1, 0, 0}}));
    // All three replies in one segment.
    auto s = h.feed(cat({kMethodUser, kAuthOk, kReplyOk}));
    EXPECT_TRUE(s.send.empty());
    EXPECT_TRUE(s.done);
}

TEST(Handshake, ByteAtATime) {
    Handshake h(Credentials{"u", s5::Secret("pw")}, src(), false);
    h.start();
    Bytes all = cat({kMethodUser, kAuthOk, kReplyOk});
    int sends = 0;
    bool done = false;
    for (uint8_t b : all) {
        auto s = h.feed(Bytes{b});
        ASSERT_FALSE(s.failed);
        sends += !s.send.empty();
        done = s.done;
    }
    EXPECT_EQ(sends, 2);
    EXPECT_TRUE(done);
}

TEST(Handshake, EveryRepCodeFails) {
    for (uint8_t rep = 1; rep <= 9; ++rep) {
        Handshake h(std::nullopt, src(), false);
        h.start();
        h.feed(kMethodNone);
        Bytes reply = kReplyOk;
        reply[1] = rep;
        auto s = h.feed(reply);
        ASSERT_TRUE(s.failed) << int(rep);
        EXPECT_EQ(h.error(), s5::err::from_rep(rep));
        EXPECT_NE(h.error_text().find("server replied " + std::to_string(rep)), std::string::npos);
    }
}

TEST(Handshake, AuthRejected) {
    Handshake h(Credentials{"u", s5::Secret("wrong")}, src(), false);
    h.start();
    h.feed(kMethodUser);
    auto s = h.feed(Bytes{1, 1});
    ASSERT_TRUE(s.failed);
    EXPECT_EQ(h.error(), Code::AuthFailed);
    EXPECT_EQ(s5::err::info(h.error()).err, EACCES);
}

TEST(Handshake, NoAcceptableMethod) {
    Handshake h(std::nullopt, src(), false);
    h.start();
    ASSERT_TRUE(h.feed(Bytes{5, 0xFF}).failed);
    EXPECT_EQ(h.error(), Code::AuthFailed);
    EXPECT_NE(h.error_text().find("requires authentication"), std::string::npos);
}

TEST(Handshake, MethodWeDidNotOffer) {
    Handshake h(std::nullopt, src(), false);
    h.start();
    ASSERT_TRUE(h.feed(Bytes{5, 2}).failed);
    EXPECT_EQ(h.error(), Code::ProtocolError);
}

TEST(Handshake, WrongVersionIsProtocolError) {
    Handshake h(std::nullopt, src(), false);
    h.start();
    ASSERT_TRUE(h.feed(Bytes{4, 0}).failed);
    EXPECT_EQ(h.error(), Code::ProtocolError);
}

TEST(Handshake, UnknownAtypInReply) {
    Handshake h(std::nullopt, src(), false);
    h.start();
    h.feed(kMethodNone);
    ASSERT_TRUE(h.feed(Bytes{5, 0, 0, 9, 1, 2, 3, 4, 0, 1}).failed);
    EXPECT_EQ(h.error(), Code::ProtocolError);
}

TEST(Handshake, UnencodableCredentialsFailAtStart) {
    for (auto creds : {Credentials{"", s5::Secret("pw")}, Credentials{"u", s5::Secret("")}, Credentials{std::string(256, 'u'), s5::Secret("pw")},
                       Credentials{"u", s5::Secret(std::string(256, 'p'))}}) {
        for (bool pipelined : {false, true}) {
            Handshake h(creds, src(), pipelined);
            EXPECT_TRUE(h.start().empty());
            EXPECT_EQ(h.state(), Handshake::State::Failed);
            EXPECT_EQ(h.error(), Code::AuthFailed);
        }
    }
}

TEST(Handshake, IPv6RequestCarriesIPv6Source) {
    Handshake h(std::nullopt, *s5::wire::Endpoint::parse_ip("::1", 0), false);
    h.start();
    auto s = h.feed(kMethodNone);
    ASSERT_EQ(s.send.size(), 22u);
    EXPECT_EQ(s.send[3], 4);
    EXPECT_EQ(s.send[19], 1);  // ::1
}

}  // namespace
