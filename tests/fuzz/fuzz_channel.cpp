// libFuzzer target: the private channel's two messages
// (protocol/channel.hpp). A request is what the broker reads from any
// process that holds a channel (daemon/channels.cpp); a reply is what
// libs5client reads from the broker (libclient/broker_channel.cpp).
//
// Input: one message; it is decoded both as a request and as a reply.
// Whatever decodes must satisfy the documented shape, encode back to
// exactly the same bytes (one encoding per message: nothing the decoder
// ignored can hide in it) and decode again to the same value; and any
// message cut or lengthened by one byte must then be refused.

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "channel.hpp"

namespace {

namespace ch = s5::channel;

#define CHECK(cond)                    \
    do {                               \
        if (!(cond)) __builtin_trap(); \
    } while (0)

void check_request(std::span<const uint8_t> in) {
    auto r = ch::decode_request(in);
    if (!r) return;
    CHECK(in.size() == ch::kRequestSize);
    CHECK(r->dst.family == AF_INET || r->dst.family == AF_INET6);
    CHECK(!r->server || r->server->family == AF_INET || r->server->family == AF_INET6);
    const auto again = ch::encode_request(*r);
    CHECK(std::memcmp(again.data(), in.data(), ch::kRequestSize) == 0);
    auto back = ch::decode_request(again);
    CHECK(back && *back == *r);
    CHECK(!ch::decode_request(in.first(in.size() - 1)));
    uint8_t longer[ch::kRequestSize + 1] = {};
    std::memcpy(longer, in.data(), in.size());
    CHECK(!ch::decode_request(longer));
}

void check_reply(std::span<const uint8_t> in) {
    auto r = ch::decode_reply(in);
    if (!r) return;
    CHECK(in.size() >= ch::kReplyHeaderSize && in.size() <= ch::kReplyMax);
    CHECK(r->error_name.size() <= ch::kMaxNameLen && r->error_message.size() <= ch::kMaxMessageLen);
    switch (r->status) {
        case ch::Status::Granted: CHECK(r->relay.family != 0 && r->error_name.empty()); break;
        case ch::Status::Pending: CHECK(r->relay.family == 0 && r->error_name.empty()); break;
        case ch::Status::WouldWait: CHECK(r->relay.family == 0 && r->lease_id == 0); break;
        case ch::Status::Failed: CHECK(!r->error_name.empty() && r->lease_id == 0); break;
        default: CHECK(false);
    }
    // Names and messages travel as bytes: whatever arrived encodes back
    // whole (the cut at a character boundary applies only to longer text).
    const auto again = ch::encode_reply(*r);
    CHECK(again.size() == in.size() && std::memcmp(again.data(), in.data(), in.size()) == 0);
    auto back = ch::decode_reply(again);
    CHECK(back && *back == *r);
    CHECK(!ch::decode_reply(in.first(in.size() - 1)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    check_request(in);
    check_reply(in);
    return 0;
}
