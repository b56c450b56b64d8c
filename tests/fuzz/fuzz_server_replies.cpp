// libFuzzer target: arbitrary bytes as the server side of a SOCKS5 UDP
// ASSOCIATE handshake (protocol/handshake.hpp, protocol/wire.hpp).
//
// Input layout (so seeds stay readable):
//   byte 0      options: bit0 credentials, bit1 pipelined, bit2 request DST
//               is IPv6, bits 3..7 pick the credential lengths
//   byte 1      n = number of split points (mod 8)
//   n bytes     split offsets into the stream (each mod stream length + 1)
//   rest        the server's byte stream
//
// Each input drives two Handshakes with the same options: one fed the
// whole stream at once, one fed the chunks; both must end in the same
// state with the same reply, error and bytes sent. The three decoders are
// also called on the stream directly, with every ATYP forced in turn.
// Violations call __builtin_trap().

#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "handshake.hpp"
#include "wire.hpp"

namespace {

using s5::proto::Credentials;
using s5::proto::Handshake;
namespace wire = s5::wire;

#define CHECK(cond)                      \
    do {                                 \
        if (!(cond)) __builtin_trap();   \
    } while (0)

template <typename T>
void check_shape(const wire::Decoded<T>& d, size_t in_size) {
    const int kinds = int(d.need_more) + int(!d.error.empty()) + int(d.value.has_value());
    CHECK(kinds == 1);
    CHECK(d.consumed <= in_size);
    if (!d.value) CHECK(d.consumed == 0);
    if (d.value) CHECK(d.consumed > 0);
}

// A decoder that produced a value from `in` must produce the same value from
// exactly in[0, consumed), and need_more from every shorter prefix.
template <typename T, typename Fn, typename Eq>
void check_prefixes(Fn decode, std::span<const uint8_t> in, const wire::Decoded<T>& d, Eq same) {
    if (d.value) {
        auto exact = decode(in.first(d.consumed));
        check_shape(exact, d.consumed);
        CHECK(exact.value && exact.consumed == d.consumed && same(*exact.value, *d.value));
        for (size_t k = 0; k < d.consumed; ++k) {
            auto p = decode(in.first(k));
            check_shape(p, k);
            CHECK(p.need_more);
        }
    } else if (d.need_more) {
        for (size_t k = 0; k < in.size(); ++k) CHECK(decode(in.first(k)).need_more);
    } else {
        // An error is decided by bytes already seen: any longer input (here:
        // the same bytes with a zero appended) fails too.
        std::vector<uint8_t> longer(in.begin(), in.end());
        longer.push_back(0);
        auto l = decode(std::span<const uint8_t>(longer));
        check_shape(l, longer.size());
        CHECK(!l.error.empty());
    }
}

bool same_reply(const wire::Reply& a, const wire::Reply& b) {
    return a.rep == b.rep && a.atyp == b.atyp && a.bnd == b.bnd && a.bnd_name == b.bnd_name;
}

void check_reply_decoder(std::span<const uint8_t> in) {
    auto d = wire::decode_reply(in);
    check_shape(d, in.size());
    check_prefixes<wire::Reply>([](std::span<const uint8_t> s) { return wire::decode_reply(s); }, in, d, same_reply);
    if (in.empty()) CHECK(d.need_more);
    if (!in.empty() && in[0] != wire::kVersion) CHECK(!d.error.empty());
    if (!d.value) return;
    const wire::Reply& r = *d.value;
    CHECK(in[0] == wire::kVersion);
    CHECK(r.rep == in[1] && r.atyp == in[3]);
    switch (r.atyp) {
        case wire::kAtypIPv4:
        case wire::kAtypIPv6: {
            const size_t ip_len = r.atyp == wire::kAtypIPv4 ? 4 : 16;
            CHECK(d.consumed == 4 + ip_len + 2);
            CHECK(r.bnd.family == (ip_len == 4 ? AF_INET : AF_INET6));
            CHECK(r.bnd_name.empty());
            CHECK(std::memcmp(r.bnd.ip.data(), &in[4], ip_len) == 0);
            CHECK(r.bnd.port == ((in[4 + ip_len] << 8) | in[5 + ip_len]));
            // The request encoder writes ATYP | ADDR | PORT the same way.
            auto req = wire::encode_udp_associate(r.bnd);
            CHECK(req.size() == 3 + d.consumed - 3);
            CHECK(std::equal(req.begin() + 3, req.end(), in.begin() + 3));
            break;
        }
        case wire::kAtypDomain: {
            const size_t n = in[4];
            CHECK(d.consumed == 4 + 1 + n + 2);
            CHECK(r.bnd_name.size() == n);
            CHECK(std::memcmp(r.bnd_name.data(), &in[5], n) == 0);
            CHECK(r.bnd.family == 0);
            CHECK(r.bnd.port == ((in[5 + n] << 8) | in[6 + n]));
            break;
        }
        default:
            CHECK(false);  // unknown ATYP must be an error
    }
    CHECK(!wire::rep_text(r.rep).empty());
}

void check_decoders(std::span<const uint8_t> in) {
    {
        auto d = wire::decode_method_reply(in);
        check_shape(d, in.size());
        check_prefixes<wire::MethodReply>([](std::span<const uint8_t> s) { return wire::decode_method_reply(s); }, in,
                                          d, [](auto& a, auto& b) { return a.method == b.method; });
        if (d.value) CHECK(d.consumed == 2 && in[0] == wire::kVersion && d.value->method == in[1]);
    }
    {
        auto d = wire::decode_auth_reply(in);
        check_shape(d, in.size());
        check_prefixes<wire::AuthReply>([](std::span<const uint8_t> s) { return wire::decode_auth_reply(s); }, in, d,
                                        [](auto& a, auto& b) { return a.status == b.status; });
        if (d.value) {
            CHECK(d.consumed == 2 && (in[0] == 1 || in[0] == 5) && d.value->status == in[1]);
            CHECK(d.value->ok() == (in[1] == 0));
        }
    }
    check_reply_decoder(in);
    // Every ATYP the decoder knows, plus what the input says, on a copy.
    if (in.size() >= 4) {
        std::vector<uint8_t> copy(in.begin(), in.end());
        copy[0] = wire::kVersion;
        for (uint8_t atyp : {uint8_t{0}, wire::kAtypIPv4, uint8_t{2}, wire::kAtypDomain, wire::kAtypIPv6, uint8_t{5}}) {
            copy[3] = atyp;
            check_reply_decoder(copy);
        }
    }
}

struct Outcome {
    Handshake::State state;
    s5::SecretBytes sent;
    wire::Reply reply;
    s5::err::Code error;
    std::string error_text;
    bool saw_done = false;
    bool saw_failed = false;
};

Outcome drive(const std::optional<Credentials>& creds, const wire::Endpoint& dst, bool pipelined,
              std::span<const uint8_t> stream, const std::vector<size_t>& cuts) {
    Handshake h(creds, dst, pipelined);
    CHECK(h.state() == Handshake::State::Idle);
    Outcome o;
    o.sent = h.start();
    CHECK(h.state() == Handshake::State::AwaitMethod);
    size_t pos = 0;
    auto feed = [&](std::span<const uint8_t> chunk) {
        const auto before = h.state();
        auto step = h.feed(chunk);
        const auto after = h.state();
        CHECK(after != Handshake::State::Idle);
        CHECK(!(step.done && step.failed));
        // done/failed are reported exactly once, on the transition.
        CHECK(step.done == (after == Handshake::State::Done && before != Handshake::State::Done));
        CHECK(step.failed == (after == Handshake::State::Failed && before != Handshake::State::Failed));
        if (before == Handshake::State::Done || before == Handshake::State::Failed) {
            CHECK(after == before);
            CHECK(step.send.empty());
        }
        if (pipelined) CHECK(step.send.empty());
        o.saw_done |= step.done;
        o.saw_failed |= step.failed;
        o.sent.insert(o.sent.end(), step.send.begin(), step.send.end());
    };
    for (size_t cut : cuts) {
        feed(stream.subspan(pos, cut - pos));
        pos = cut;
    }
    feed(stream.subspan(pos));
    o.state = h.state();
    o.reply = h.reply();
    o.error = h.error();
    o.error_text = h.error_text();
    if (o.state == Handshake::State::Done) {
        CHECK(o.reply.rep == 0);
        CHECK(o.reply.atyp == wire::kAtypIPv4 || o.reply.atyp == wire::kAtypIPv6 || o.reply.atyp == wire::kAtypDomain);
    }
    if (o.state == Handshake::State::Failed) CHECK(!o.error_text.empty());
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    check_decoders(in);
    if (size < 2) return 0;

    const uint8_t opts = in[0];
    const size_t nsplit = in[1] % 8;
    if (size < 2 + nsplit) return 0;
    std::span<const uint8_t> stream = in.subspan(2 + nsplit);
    check_decoders(stream);

    std::vector<size_t> cuts;
    for (size_t i = 0; i < nsplit; ++i) cuts.push_back(in[2 + i] % (stream.size() + 1));
    std::sort(cuts.begin(), cuts.end());

    const bool with_creds = opts & 1;
    const bool pipelined = opts & 2;
    wire::Endpoint dst;
    if (opts & 4) {
        dst = *wire::Endpoint::parse_ip("::1");
    } else {
        dst = *wire::Endpoint::parse_ip("127.0.0.1");
    }
    std::optional<Credentials> creds;
    if (with_creds) {
        // Lengths 1..255 (what config.cpp accepts), chosen by the top bits.
        static const size_t kLens[4] = {1, 7, 64, 255};
        creds = Credentials{std::string(kLens[(opts >> 3) & 3], 'u'), s5::Secret(std::string(kLens[(opts >> 5) & 3], 'p'))};
    }

    Outcome whole = drive(creds, dst, pipelined, stream, {});
    Outcome split = drive(creds, dst, pipelined, stream, cuts);

    // Chunking must not change anything.
    CHECK(whole.state == split.state);
    // A failure drops what the failing feed() would have sent with it, so
    // the split run may have sent more by then (nothing else differs).
    if (whole.state == Handshake::State::Failed) {
        CHECK(whole.sent.size() <= split.sent.size());
        CHECK(std::equal(whole.sent.begin(), whole.sent.end(), split.sent.begin()));
    } else {
        CHECK(whole.sent == split.sent);
    }
    CHECK(whole.saw_done == split.saw_done && whole.saw_failed == split.saw_failed);
    CHECK(same_reply(whole.reply, split.reply));
    if (whole.state == Handshake::State::Failed) {
        CHECK(whole.error == split.error);
        CHECK(whole.error_text == split.error_text);
    }

    // What was sent follows the protocol: greeting, [auth], request, and in
    // lock-step order unless pipelined.
    const auto greeting = wire::encode_greeting(with_creds ? wire::kMethodUsername : wire::kMethodNone);
    const auto auth = creds ? *wire::encode_userpass(creds->username, creds->password.view()) : s5::SecretBytes{};
    const auto request = wire::encode_udp_associate(dst);
    s5::SecretBytes all(greeting.begin(), greeting.end());
    all.insert(all.end(), auth.begin(), auth.end());
    all.insert(all.end(), request.begin(), request.end());
    const auto& sent = split.sent;
    CHECK(sent.size() <= all.size());
    CHECK(std::equal(sent.begin(), sent.end(), all.begin()));
    if (pipelined) CHECK(sent == all);
    CHECK(sent.size() == greeting.size() || sent.size() == greeting.size() + auth.size() || sent == all);
    if (whole.state == Handshake::State::Done) {
        CHECK(sent == all);
        // The stream held method reply, [auth reply], reply, in that order.
        auto m = wire::decode_method_reply(stream);
        CHECK(m.value && m.value->method == (with_creds ? wire::kMethodUsername : wire::kMethodNone));
        size_t off = m.consumed;
        if (with_creds) {
            auto a = wire::decode_auth_reply(stream.subspan(off));
            CHECK(a.value && a.value->ok());
            off += a.consumed;
        }
        auto r = wire::decode_reply(stream.subspan(off));
        CHECK(r.value && same_reply(*r.value, whole.reply));
    }
    return 0;
}
