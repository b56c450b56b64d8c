#include "handshake.hpp"

#include <string.h>

#include <cstdio>

namespace s5::proto {

Handshake::Handshake(std::optional<Credentials> creds, wire::Endpoint request_dst, bool pipelined)
    : creds_(std::move(creds)), request_dst_(request_dst), pipelined_(pipelined) {}

Handshake::~Handshake() { wipe_credentials(); }

void Handshake::wipe_credentials() {
    // Needed no more: Secret's memory is wiped as it goes (secret.hpp).
    creds_.reset();
}

SecretBytes Handshake::auth_message() {
    auto msg = wire::encode_userpass(creds_->username, creds_->password.view());
    wipe_credentials();
    return msg ? std::move(*msg) : SecretBytes{};
}

SecretBytes Handshake::start() {
    if (creds_ && !wire::userpass_fits(creds_->username, creds_->password.view())) {
        // Empty or longer than RFC 1929's 255 bytes: fail now rather than
        // send a greeting we cannot follow up.
        fail(err::Code::AuthFailed, "username or password is empty or longer than 255 bytes");
        return {};
    }
    offered_ = creds_ ? wire::kMethodUsername : wire::kMethodNone;
    const std::vector<uint8_t> greeting = wire::encode_greeting(offered_);
    SecretBytes out(greeting.begin(), greeting.end());
    state_ = State::AwaitMethod;
    if (pipelined_) {
        if (creds_) {
            auto auth = auth_message();
            out.insert(out.end(), auth.begin(), auth.end());
        }
        auto req = wire::encode_udp_associate(request_dst_);
        out.insert(out.end(), req.begin(), req.end());
    }
    return out;
}

Handshake::Step Handshake::fail(err::Code code, std::string text) {
    state_ = State::Failed;
    error_ = code;
    error_text_ = std::move(text);
    wipe_credentials();
    Step s;
    s.failed = true;
    return s;
}

Handshake::Step Handshake::feed(std::span<const uint8_t> data) {
    buf_.insert(buf_.end(), data.begin(), data.end());
    Step step;
    // Each message may complete in this chunk, and (pipelined, or a server
    // that answers fast) several may arrive together.
    for (;;) {
        std::span<const uint8_t> in(buf_);
        switch (state_) {
            case State::AwaitMethod: {
                auto d = wire::decode_method_reply(in);
                if (d.need_more) return step;
                if (!d.value) return fail(err::Code::ProtocolError, "method reply: " + d.error);
                buf_.erase(buf_.begin(), buf_.begin() + static_cast<long>(d.consumed));
                const uint8_t method = d.value->method;
                if (method == wire::kMethodNoAcceptable)
                    return fail(err::Code::AuthFailed, offered_ == wire::kMethodUsername
                                                           ? "server refused username/password authentication"
                                                           : "server requires authentication; none is configured");
                if (method != offered_) {
                    char t[64];
                    std::snprintf(t, sizeof t, "server chose method 0x%02x that we did not offer", method);
                    return fail(err::Code::ProtocolError, t);
                }
                if (method == wire::kMethodUsername) {
                    state_ = State::AwaitAuth;
                    if (!pipelined_) step.send = auth_message();
                } else {
                    state_ = State::AwaitReply;
                    if (!pipelined_) {
                        auto req = wire::encode_udp_associate(request_dst_);
                        step.send.assign(req.begin(), req.end());
                    }
                }
                break;
            }
            case State::AwaitAuth: {
                auto d = wire::decode_auth_reply(in);
                if (d.need_more) return step;
                if (!d.value) return fail(err::Code::ProtocolError, "authentication reply: " + d.error);
                buf_.erase(buf_.begin(), buf_.begin() + static_cast<long>(d.consumed));
                if (!d.value->ok()) {
                    char t[64];
                    std::snprintf(t, sizeof t, "username/password rejected (status 0x%02x)", d.value->status);
                    return fail(err::Code::AuthFailed, t);
                }
                state_ = State::AwaitReply;
                if (!pipelined_) {
                    auto req = wire::encode_udp_associate(request_dst_);
                    step.send.insert(step.send.end(), req.begin(), req.end());
                }
                break;
            }
            case State::AwaitReply: {
                auto d = wire::decode_reply(in);
                if (d.need_more) return step;
                if (!d.value) return fail(err::Code::ProtocolError, "UDP ASSOCIATE reply: " + d.error);
                buf_.erase(buf_.begin(), buf_.begin() + static_cast<long>(d.consumed));
                reply_ = *d.value;
                if (reply_.rep != 0) {
                    char t[96];
                    std::snprintf(t, sizeof t, "server replied %u (%s)", reply_.rep,
                                  std::string(wire::rep_text(reply_.rep)).c_str());
                    return fail(err::from_rep(reply_.rep), t);
                }
                state_ = State::Done;
                step.done = true;
                return step;
            }
            case State::Done:
                // Nothing is expected after the reply on a UDP ASSOCIATE
                // control connection; the caller decides what extra bytes mean.
                return step;
            case State::Idle:
            case State::Failed:
                return step;
        }
    }
}

}  // namespace s5::proto
