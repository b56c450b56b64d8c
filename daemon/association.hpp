// One SOCKS5 UDP association as the broker holds it: a non-blocking TCP
// control connection driven by the event loop through proto::Handshake, and,
// once the server has answered, the relay endpoint it stands for. The
// association lives exactly as long as this object's control connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "config.hpp"
#include "durable_state.hpp"
#include "errors.hpp"
#include "event_loop.hpp"
#include "handshake.hpp"
#include "unique_fd.hpp"
#include "wire.hpp"

namespace s5d {

using s5::UniqueFd;

class Association {
public:
    enum class State { Connecting, Handshaking, Ready, Failed, Closed };

    struct Callbacks {
        // Handshake complete: relay() and source() are valid.
        std::function<void(Association&)> ready;
        // Setup failed (connect error, refusal, malformed reply, deadline).
        std::function<void(Association&, s5::err::Code, const std::string&)> failed;
        // A ready association's control connection closed or failed.
        std::function<void(Association&, const std::string&)> closed;
    };

    // Starts connecting at once. Callbacks run from the event loop, never
    // from inside the constructor, and may destroy this object.
    Association(EventLoop& loop, const s5::config::Server& server, const s5::config::Keepalive& keepalive,
                std::chrono::milliseconds setup_timeout, Callbacks cb);
    // A ready association an earlier broker made, from its record, its
    // control connection and its claim socket (none: claim by first
    // datagram) as the fd store kept them (already stored). Check alive()
    // before trusting it.
    Association(EventLoop& loop, const s5::config::Server& server, const s5::config::Keepalive& keepalive,
                const state::AssociationRecord& rec, UniqueFd fd, UniqueFd claim, DurableState* durable,
                Callbacks cb);
    ~Association();
    Association(const Association&) = delete;
    Association& operator=(const Association&) = delete;

    // Ownership moves between a pool and a lease; so do the callbacks.
    void set_callbacks(Callbacks cb) { cb_ = std::move(cb); }

    uint64_t id() const { return id_; }
    State state() const { return state_; }
    const std::string& server_name() const { return server_name_; }
    // Where the application sends its datagrams (BND, with 0.0.0.0/::
    // replaced by the server's address, or the configured override).
    const s5::wire::Endpoint& relay() const { return relay_; }
    // The broker's own source IP on the control connection: the IP the
    // server expects datagrams from; with a claim socket, its port too
    // (else 0).
    const s5::wire::Endpoint& source() const { return source_; }
    // The UDP socket bound to source() whose address was the request's
    // DST: the only socket the server takes datagrams from. It goes to the
    // application with every Ready/Renewed (lease.cpp); -1 when the server
    // is configured with claim "first_datagram".
    int claim_socket() const { return claim_.get(); }
    // The claim socket went to the application (a Ready/Renewed carrying it
    // was queued on the lease socket): the broker's copy, and the fd
    // store's, go, so a lease costs the broker two descriptors, not three.
    void release_claim();
    // Made with a claim socket (the source has a port), whether or not the
    // broker still holds it: without it, it cannot be handed out again.
    bool claimed_by_socket() const { return source_.port != 0; }
    Clock::time_point ready_since() const { return ready_since_; }
    // After `closed`: the socket error that ended it (ETIMEDOUT when
    // keepalive gave up), or 0 for an orderly close by the server.
    int close_error() const { return close_error_; }
    // After `failed`: the server's relay address was refused (relay_policy).
    bool relay_refused() const { return relay_refused_; }
    // A ready association whose server has not (as far as the kernel
    // knows) closed or reset it. Cheap: one non-blocking peek.
    bool alive() const;
    // Idle in a pool: the relay is watched through the claim socket, on
    // which the kernel reports ICMP errors (IP_RECVERR/IPV6_RECVERR). A
    // zero-length datagram (harmless to the server: no SOCKS header) goes
    // to the relay at once and every kProbeInterval after (on loopback the
    // error is back before the next request is served; farther away, an
    // association handed out within one round trip of this call is not
    // proven yet); "port unreachable" and the like end the association as
    // `closed` with that errno (a dead relay is never handed out). Nothing
    // to watch with claim "first_datagram": a probe would claim the
    // association.
    void watch_relay();
    // Leaving the pool for a lease: the watch ends and the claim socket
    // reports errors as any socket does again. False
    // when an error from the relay was already pending: do not hand it out.
    bool hand_out();
    static constexpr std::chrono::seconds kProbeInterval{10};
    // Ready: the control connection goes into systemd's fd store and the
    // association's record into the state memfd, until it ends.
    void make_durable(DurableState& d);
    state::AssociationRecord record() const;

private:
    Association(EventLoop& loop, const s5::config::Server& server, const s5::config::Keepalive& keepalive,
                Callbacks cb, uint64_t id);
    void start_connect();
    void on_io(uint32_t revents);
    void on_connected();
    // Binds claim_ to source_'s IP (any port) and puts the port in
    // source_. False (and failed) when the kernel refuses.
    bool make_claim_socket();
    // False (and failed) when the server is on this host and listens as a
    // user the configuration does not trust with the password.
    bool credentials_may_go_to_peer();
    void on_readable();
    bool flush();                               // false: failed, `this` may be gone
    void on_deadline();
    void fail(s5::err::Code code, const std::string& text);
    void close_ready(int err, const std::string& why);
    void on_probe();
    void on_relay_error();
    void stop_watching_relay();
    void finish_ready();
    void forget_durable();   // before the control connection closes

    EventLoop& loop_;
    s5::wire::Endpoint server_;
    std::optional<s5::wire::Endpoint> relay_override_;
    std::string server_name_;
    s5::config::Keepalive keepalive_;
    std::optional<s5::proto::Credentials> creds_;
    std::optional<uid_t> server_uid_;            // may listen locally, besides root
    bool pipelined_;
    bool claim_by_socket_;
    Callbacks cb_;
    uint64_t id_;
    State state_ = State::Connecting;
    UniqueFd fd_;
    UniqueFd claim_;                             // see claim_socket()
    IoWatch relay_watch_;                        // EPOLLERR on claim_ while idle
    Timer probe_;                                // the next probe datagram
    IoWatch watch_;
    Timer deadline_;
    std::optional<s5::proto::Handshake> hs_;
    s5::SecretBytes out_;                        // pending bytes to the server (may hold the password)
    s5::wire::Endpoint relay_;
    s5::wire::Endpoint source_;
    Clock::time_point ready_since_{};
    int pending_error_ = 0;                      // socket()/connect() failed at once
    bool pending_local_ = false;                 // ... or a socket option was refused
    bool relay_refused_ = false;
    int close_error_ = 0;
    size_t unexpected_ = 0;                      // bytes after the reply
    static constexpr size_t kMaxUnexpected = 4096;
    DurableState* durable_ = nullptr;
    uint32_t slot_ = 0;
};

}  // namespace s5d
