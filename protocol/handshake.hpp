// The client side of a SOCKS5 UDP ASSOCIATE handshake as a pure state
// machine: bytes in, bytes out, no sockets. s5brokerd drives it from its
// event loop; direct mode in libs5client drives it from a blocking socket.
//
//   greeting -> [RFC 1929 auth] -> UDP ASSOCIATE request -> reply
//
// With `pipelined` every message is produced by start() at once (the server
// must accept that; it saves two round trips).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "errors.hpp"
#include "secret.hpp"
#include "wire.hpp"

namespace s5::proto {

struct Credentials {
    std::string username;
    Secret password;
};

class Handshake {
public:
    enum class State { Idle, AwaitMethod, AwaitAuth, AwaitReply, Done, Failed };

    struct Step {
        SecretBytes send;                 // bytes to write now (may be empty;
                                          // may hold the password)
        bool done = false;                // reply received: relay() is valid
        bool failed = false;              // error() says why
    };

    // `request_dst` is the DST of the UDP ASSOCIATE request: the IP the
    // client will send from, port 0 (docs/design.md §7).
    Handshake(std::optional<Credentials> creds, wire::Endpoint request_dst, bool pipelined);
    ~Handshake();
    Handshake(const Handshake&) = delete;
    Handshake& operator=(const Handshake&) = delete;

    // First bytes to send. Must be called once, before feed(). Fails at
    // once (state() == Failed, nothing to send) when the credentials cannot
    // be encoded (empty, or longer than 255 bytes).
    SecretBytes start();
    // Bytes received from the server; may be any fragment of the stream.
    Step feed(std::span<const uint8_t> data);

    State state() const { return state_; }
    // The server's reply once done (BND as sent, before any substitution).
    const wire::Reply& reply() const { return reply_; }
    // Why it failed: error code and one line of text.
    err::Code error() const { return error_; }
    const std::string& error_text() const { return error_text_; }

private:
    Step fail(err::Code code, std::string text);
    SecretBytes auth_message();
    void wipe_credentials();

    std::optional<Credentials> creds_;
    wire::Endpoint request_dst_;
    bool pipelined_;
    uint8_t offered_ = wire::kMethodNone;    // the one method in our greeting
    State state_ = State::Idle;
    std::vector<uint8_t> buf_;
    wire::Reply reply_;
    err::Code error_ = err::Code::ServerFailure;
    std::string error_text_;
};

}  // namespace s5::proto
