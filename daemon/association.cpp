#include "association.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fd_reserve.hpp"
#include "local_listener.hpp"
#include "peer_closed.hpp"
#include "log.hpp"
#include "pool_policy.hpp"
#include "relay_policy.hpp"

namespace s5d {

using s5::err::Code;
namespace wire = s5::wire;

namespace {

// Ids go on from the highest an earlier broker used (restored ones), so
// that the names in the fd store stay unique.
uint64_t last_association_id = 0;
uint64_t next_association_id() { return ++last_association_id; }

uint64_t usec(Clock::time_point t) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count());
}

std::string errno_text(int e) { return std::strerror(e); }

// A silent peer (cable pulled, server frozen) is noticed within about
// idle + interval * count seconds instead of TCP's default two hours.
// Returns 0, or the errno of the first option the kernel refused.
int set_keepalive(int fd, const s5::config::Keepalive& k) {
    const int on = 1;
    const int idle = static_cast<int>(k.idle_s), intvl = static_cast<int>(k.interval_s),
              cnt = static_cast<int>(k.count);
    const unsigned user_timeout_ms = tcp_user_timeout_ms(k);
    const struct {
        int level, name;
        const void* value;
        socklen_t len;
    } options[] = {
        {SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on},
        {IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle},
        {IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl},
        {IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt},
        {IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms},
        {IPPROTO_TCP, TCP_NODELAY, &on, sizeof on},
    };
    for (const auto& o : options)
        if (setsockopt(fd, o.level, o.name, o.value, o.len) < 0) return errno;
    return 0;
}

}  // namespace

// What both constructors share: the server it belongs to, its id.
Association::Association(EventLoop& loop, const s5::config::Server& server, const s5::config::Keepalive& keepalive,
                         Callbacks cb, uint64_t id)
    : loop_(loop),
      server_(server.endpoint),
      relay_override_(server.relay_address_override),
      server_name_(server.name),
      keepalive_(keepalive),
      server_uid_(server.server_uid),
      pipelined_(server.pipelining),
      claim_by_socket_(server.claim == s5::config::Server::Claim::Socket),
      cb_(std::move(cb)),
      id_(id),
      probe_(loop, [this] { on_probe(); }),
      deadline_(loop, [this] { on_deadline(); }) {}

Association::Association(EventLoop& loop, const s5::config::Server& server, const s5::config::Keepalive& keepalive,
                         std::chrono::milliseconds setup_timeout, Callbacks cb)
    : Association(loop, server, keepalive, std::move(cb), next_association_id()) {
    if (server.auth.method == s5::config::AuthMethod::Username)
        creds_ = s5::proto::Credentials{server.auth.username, server.auth.password};
    deadline_.arm_in(setup_timeout);
    start_connect();
}

Association::Association(EventLoop& loop, const s5::config::Server& server, const s5::config::Keepalive& keepalive,
                         const state::AssociationRecord& rec, UniqueFd fd, UniqueFd claim, DurableState* durable,
                         Callbacks cb)
    : Association(loop, server, keepalive, std::move(cb), rec.id) {
    last_association_id = std::max(last_association_id, rec.id);
    state_ = State::Ready;
    fd_ = std::move(fd);
    claim_ = std::move(claim);
    relay_ = rec.relay;
    source_ = rec.source;
    // Its start is CLOCK_MONOTONIC, shared by every process of this boot;
    // one from the future would never be recycled.
    ready_since_ = std::min(Clock::time_point(std::chrono::microseconds(rec.ready_since_usec)), loop.now());
    durable_ = durable;
    watch_ = IoWatch(loop_, fd_.get(), EPOLLIN | EPOLLRDHUP, [this](uint32_t ev) { on_io(ev); });
    if (durable_) durable_->put(slot_, state::encode(record()));
}

Association::~Association() { forget_durable(); }

state::AssociationRecord Association::record() const {
    return {id_, server_name_, server_, relay_, source_, usec(ready_since_)};
}

void Association::make_durable(DurableState& d) {
    if (durable_ || state_ != State::Ready || !fd_) return;
    // The descriptor first, then the record that names it: a crash in
    // between leaves an fd without a record, which the next broker closes.
    if (!d.keep_fd(state::fd_name_association(id_), fd_.get())) return;
    if (claim_ && !d.keep_fd(state::fd_name_claim(id_), claim_.get())) {
        d.drop_fd(state::fd_name_association(id_));
        return;
    }
    durable_ = &d;
    durable_->put(slot_, state::encode(record()));
}

void Association::forget_durable() {
    if (!durable_) return;
    if (!durable_->frozen()) {
        durable_->erase(slot_);
        durable_->drop_fd(state::fd_name_association(id_));
        if (claim_) durable_->drop_fd(state::fd_name_claim(id_));
    }
    durable_ = nullptr;
}

void Association::start_connect() {
    sockaddr_storage ss{};
    socklen_t len = static_cast<socklen_t>(server_.to_sockaddr(ss));
    fd_.reset(outside_reserve(::socket(server_.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP)));
    if (!fd_) {
        // EMFILE (also: into the reserve)/ENFILE/ENOBUFS: report as the
        // deadline would, from the loop.
        pending_error_ = errno;
        deadline_.arm_in(std::chrono::microseconds(0));
        return;
    }
    if (int e = set_keepalive(fd_.get(), keepalive_)) {
        pending_error_ = e;
        pending_local_ = true;
        deadline_.arm_in(std::chrono::microseconds(0));
        return;
    }
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0 && errno != EINPROGRESS) {
        pending_error_ = errno;
        deadline_.arm_in(std::chrono::microseconds(0));
        return;
    }
    watch_ = IoWatch(loop_, fd_.get(), EPOLLOUT, [this](uint32_t ev) { on_io(ev); });
}

void Association::on_deadline() {
    if (pending_error_) {
        int e = pending_error_;
        pending_error_ = 0;
        // Out of descriptors or memory here is the broker's shortage, not
        // the server's fault: the caller hears QuotaExceeded (ENOSPC).
        if (out_of_descriptors(e) || e == ENOBUFS || e == ENOMEM)
            fail(Code::QuotaExceeded, "no socket for a connection to " + server_.to_string() + ": " + errno_text(e));
        else if (pending_local_)
            fail(Code::ServerFailure, "cannot set up a control connection to " + server_.to_string() +
                                          " (TCP keepalive options): " + errno_text(e));
        else
            fail(s5::err::from_connect_errno(e), "connect to " + server_.to_string() + ": " + errno_text(e));
        return;
    }
    if (state_ == State::Connecting)
        fail(Code::ServerTimeout, "connect to " + server_.to_string() + ": timed out");
    else if (state_ == State::Handshaking)
        fail(Code::Timeout, "server " + server_.to_string() + " did not complete the UDP ASSOCIATE handshake in time");
}

void Association::on_io(uint32_t revents) {
    switch (state_) {
        case State::Connecting:
            on_connected();
            return;
        case State::Handshaking:
            if ((revents & EPOLLOUT) && !flush()) return;
            if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) on_readable();
            return;
        case State::Ready:
            on_readable();
            return;
        case State::Failed:
        case State::Closed:
            return;
    }
}

bool Association::credentials_may_go_to_peer() {
    // A server on this host: whoever listens there gets the password, so
    // it must be root or the server_uid the configuration names (see
    // local_listener.hpp). Nothing has been sent yet.
    const auto who = local_peer_owner(fd_.get());
    if (const auto* e = std::get_if<LookupError>(&who)) {
        fail(Code::ServerFailure, "cannot tell who listens at " + server_.to_string() +
                                      " (credentials not sent): " + errno_text(e->err));
        return false;
    }
    if (const auto* o = std::get_if<LocalOwner>(&who); o && o->uid != 0 && (!server_uid_ || o->uid != *server_uid_)) {
        fail(Code::ServerFailure,
             "credentials not sent: " + server_.to_string() + " is a socket of uid " + std::to_string(o->uid) +
                 (server_uid_ ? ", not root or server_uid " + std::to_string(*server_uid_)
                              : ", not root (set server_uid if that user runs the server)"));
        return false;
    }
    return true;
}

void Association::on_connected() {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err != 0) {
        fail(s5::err::from_connect_errno(err), "connect to " + server_.to_string() + ": " + errno_text(err));
        return;
    }
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    auto src = getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&local), &llen) == 0
                   ? wire::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&local), llen)
                   : std::nullopt;
    if (!src) {
        fail(Code::ServerFailure, "getsockname on control connection: " + errno_text(errno));
        return;
    }
    source_ = *src;
    source_.port = 0;
    if (creds_ && !credentials_may_go_to_peer()) return;
    // DST of the request = our own source IP and the port of a UDP socket
    // bound there, which only this broker holds: the server takes
    // datagrams from that socket alone, so nobody else can claim the
    // association (docs/design.md §7). With claim "first_datagram", port 0:
    // the first datagram from this host's source IP claims it.
    if (claim_by_socket_ && !make_claim_socket()) return;
    hs_.emplace(std::move(creds_), source_, pipelined_);
    creds_.reset();
    state_ = State::Handshaking;
    out_ = hs_->start();
    if (hs_->state() == s5::proto::Handshake::State::Failed) {
        fail(hs_->error(), "server " + server_.to_string() + ": " + hs_->error_text());
        return;
    }
    watch_.set_events(EPOLLIN | EPOLLRDHUP);
    flush();
}

bool Association::make_claim_socket() {
    claim_.reset(outside_reserve(::socket(source_.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP)));
    if (!claim_) {
        const int e = errno;
        if (out_of_descriptors(e) || e == ENOBUFS || e == ENOMEM)
            fail(Code::QuotaExceeded, "no socket to claim an association on " + server_.to_string() + ": " +
                                          errno_text(e));
        else
            fail(Code::ServerFailure, "cannot make the UDP socket of an association: " + errno_text(e));
        return false;
    }
    sockaddr_storage ss{};
    socklen_t len = static_cast<socklen_t>(source_.to_sockaddr(ss));
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    std::optional<wire::Endpoint> at;
    if (::bind(claim_.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
        getsockname(claim_.get(), reinterpret_cast<sockaddr*>(&bound), &blen) == 0)
        at = wire::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), blen);
    if (!at || at->port == 0) {
        const int e = errno;
        claim_.reset();
        // EADDRINUSE: every local port of that address is taken.
        fail(e == EADDRINUSE ? Code::QuotaExceeded : Code::ServerFailure,
             "cannot bind the UDP socket of an association to " + source_.to_string() + ": " + errno_text(e));
        return false;
    }
    source_.port = at->port;
    return true;
}

bool Association::flush() {
    while (!out_.empty()) {
        ssize_t n = ::send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                watch_.set_events(EPOLLIN | EPOLLOUT | EPOLLRDHUP);
                return true;
            }
            int e = errno;
            explicit_bzero(out_.data(), out_.size());
            out_.clear();
            fail(s5::err::from_connect_errno(e), "send to " + server_.to_string() + ": " + errno_text(e));
            return false;
        }
        // Wipe what was sent: it may hold the RFC 1929 password.
        explicit_bzero(out_.data(), static_cast<size_t>(n));
        out_.erase(out_.begin(), out_.begin() + n);
    }
    watch_.set_events(EPOLLIN | EPOLLRDHUP);
    return true;
}

void Association::on_readable() {
    uint8_t buf[600];  // longest reply: 4 + 1 + 255 + 2 bytes
    // At most a few reads per wake-up: a fast talker must not starve the
    // other sockets of the loop (level-triggered: we come back for the rest).
    for (int reads = 0; reads < 16; ++reads) {
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            int e = errno;
            if (state_ == State::Ready)
                close_ready(e, "control connection failed: " + errno_text(e));
            else
                fail(s5::err::from_connect_errno(e), "receive from " + server_.to_string() + ": " + errno_text(e));
            return;
        }
        if (n == 0) {
            if (state_ == State::Ready)
                close_ready(0, "server closed the control connection");
            else
                // Not a malformed reply (ProtocolError): the server went
                // away, as when it is killed mid-handshake.
                fail(Code::ServerFailure,
                     "server " + server_.to_string() + " closed the connection during the handshake");
            return;
        }
        if (state_ == State::Ready) {
            // RFC 1928 defines nothing after the reply. A few stray bytes
            // are tolerated; a server that keeps talking is broken, and must
            // not keep the event loop busy: the association ends.
            unexpected_ += static_cast<size_t>(n);
            if (unexpected_ > kMaxUnexpected) {
                close_ready(EPROTO, "server sent " + std::to_string(unexpected_) +
                                        " unexpected bytes on the control connection");
                return;
            }
            continue;
        }
        auto step = hs_->feed(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
        if (step.failed) {
            fail(hs_->error(), "server " + server_.to_string() + ": " + hs_->error_text());
            return;
        }
        if (!step.send.empty()) {
            out_.insert(out_.end(), step.send.begin(), step.send.end());
            if (!flush()) return;
        }
        if (step.done) {
            finish_ready();
            return;
        }
    }
}

void Association::finish_ready() {
    const wire::Reply& r = hs_->reply();
    wire::Endpoint relay;
    if (r.atyp == wire::kAtypDomain) {
        auto ip = wire::Endpoint::parse_ip(r.bnd_name, r.bnd.port);
        if (!ip) {
            fail(Code::ProtocolError, "server " + server_.to_string() + " gave its relay as a host name");
            return;
        }
        relay = *ip;
    } else {
        relay = r.bnd;
    }
    if (relay.port == 0) {
        fail(Code::ProtocolError, "server " + server_.to_string() + " gave relay port 0");
        return;
    }
    if (relay_override_) {
        uint16_t port = relay.port;
        relay = *relay_override_;
        relay.port = port;
    } else if (relay.is_unspecified()) {
        // BND 0.0.0.0/:: means "the address you reached me on".
        uint16_t port = relay.port;
        relay = server_;
        relay.port = port;
    }
    if (!relay_override_) {
        if (auto why = relay_refusal(relay, server_)) {
            relay_refused_ = true;
            fail(Code::ProtocolError, "server " + server_.to_string() + " gave relay " + relay.to_string() +
                                          ", which " + *why + " (relay_address_override can name the relay)");
            return;
        }
    }
    relay_ = relay;
    hs_.reset();
    deadline_.disarm();
    state_ = State::Ready;
    ready_since_ = loop_.now();
    watch_.set_events(EPOLLIN | EPOLLRDHUP);
    auto cb = cb_.ready;  // the callback may destroy this object
    cb(*this);
}

void Association::fail(Code code, const std::string& text) {
    state_ = State::Failed;
    watch_.reset();
    deadline_.disarm();
    fd_.reset();
    stop_watching_relay();
    claim_.reset();
    hs_.reset();
    auto cb = cb_.failed;  // may destroy this object
    cb(*this, code, text);
}

bool Association::alive() const {
    // Nothing to read is the normal state of a control connection; stray
    // bytes from the server do not make it dead either.
    return state_ == State::Ready && fd_ && !peer_closed(fd_.get());
}

void Association::close_ready(int err, const std::string& why) {
    state_ = State::Closed;
    close_error_ = err;
    forget_durable();
    watch_.reset();
    fd_.reset();
    stop_watching_relay();
    claim_.reset();
    auto cb = cb_.closed;  // may destroy this object
    cb(*this, why);
}

namespace {
// IP_RECVERR / IPV6_RECVERR: an unconnected UDP socket hears of ICMP errors
// only with it (as SO_ERROR and EPOLLERR). Connecting the claim socket
// instead would cost it its port when disconnected again: the kernel
// unhashes a socket whose port it chose itself.
int set_recverr(int fd, int family, int on) {
    return family == AF_INET6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &on, sizeof on)
                              : setsockopt(fd, IPPROTO_IP, IP_RECVERR, &on, sizeof on);
}
}  // namespace

void Association::watch_relay() {
    if (!claim_ || state_ != State::Ready || relay_watch_) return;
    if (set_recverr(claim_.get(), source_.family, 1) < 0) return;  // unwatched, as before
    // Only errors: the server sends nothing to this socket before the
    // application's first datagram.
    relay_watch_ = IoWatch(loop_, claim_.get(), EPOLLERR, [this](uint32_t) { on_relay_error(); });
    on_probe();
}

void Association::on_probe() {
    if (!relay_watch_) return;
    sockaddr_storage ss{};
    const socklen_t len = static_cast<socklen_t>(relay_.to_sockaddr(ss));
    // A full socket buffer or the like: the next probe will tell.
    (void)::sendto(claim_.get(), "", 0, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&ss), len);
    probe_.arm_in(std::chrono::duration_cast<std::chrono::microseconds>(kProbeInterval));
}

void Association::on_relay_error() {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(claim_.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0) {
        // An error queue entry without a pending error: consume it, or
        // EPOLLERR would keep the loop busy.
        char buf[1];
        (void)::recv(claim_.get(), buf, sizeof buf, MSG_ERRQUEUE | MSG_DONTWAIT);
        return;
    }
    close_ready(err, "relay " + relay_.to_string() + " is unreachable: " + errno_text(err));
}

void Association::stop_watching_relay() {
    relay_watch_.reset();
    probe_.disarm();
}

void Association::release_claim() {
    if (!claim_) return;
    stop_watching_relay();
    if (durable_ && !durable_->frozen()) durable_->drop_fd(state::fd_name_claim(id_));
    claim_.reset();
}

bool Association::hand_out() {
    if (!relay_watch_) return true;
    stop_watching_relay();
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(claim_.get(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) return false;
    // The application's socket as it would make it (put_in_place copies
    // its own IP_RECVERR over this).
    (void)set_recverr(claim_.get(), source_.family, 0);
    return true;
}

}  // namespace s5d
