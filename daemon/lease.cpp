#include "lease.hpp"

#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "fd_reserve.hpp"
#include "fd_passing.hpp"
#include "peer_closed.hpp"
#include "log.hpp"

namespace s5d {

const char* to_string(LeaseState s) {
    switch (s) {
        case LeaseState::Pending: return "pending";
        case LeaseState::Active: return "active";
        case LeaseState::Renewing: return "renewing";
        case LeaseState::Lost: return "lost";
    }
    return "unknown";
}

std::string lease_path(uint64_t id) { return "/org/s5broker/Broker1/lease/" + std::to_string(id); }

Lease::Lease(EventLoop& loop, uint64_t id, uid_t uid, std::string owner, s5::wire::Endpoint dst,
             std::unique_ptr<Association> assoc, std::function<void(Lease&)> on_eof, DurableState* durable)
    : loop_(loop),
      id_(id),
      path_(lease_path(id)),
      uid_(uid),
      owner_(std::move(owner)),
      dst_(dst),
      created_(loop.now()),
      created_realtime_usec_(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                       std::chrono::system_clock::now().time_since_epoch())
                                                       .count())),
      on_eof_(std::move(on_eof)) {
    int sv[2];
    // SEQPACKET keeps each lease event one message. The broker's end is
    // non-blocking; the application's end gets its Socket's flags later.
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        throw std::system_error(errno, std::generic_category(), "socketpair");
    // The higher number tells whether the pair reached into the reserve.
    if (outside_reserve(std::max(sv[0], sv[1])) < 0) {
        ::close(std::min(sv[0], sv[1]));
        throw std::system_error(EMFILE, std::generic_category(), "socketpair");
    }
    broker_end_.reset(sv[0]);
    client_end_.reset(sv[1]);
    int fl = fcntl(broker_end_.get(), F_GETFL);
    if (fl < 0 || fcntl(broker_end_.get(), F_SETFL, fl | O_NONBLOCK) < 0)
        throw std::system_error(errno, std::generic_category(), "fcntl");
    watch_broker_end();
    // Into the store before anyone sees the lease; the record follows
    // (attach, or below), so a crash in between leaves an fd without a
    // record, which the next broker closes.
    if (durable && durable->keep_fd(state::fd_name_lease(id_), broker_end_.get())) durable_ = durable;
    if (assoc)
        attach(std::move(assoc));
    else
        save();
}

Lease::Lease(EventLoop& loop, const state::LeaseRecord& rec, UniqueFd broker_end, std::unique_ptr<Association> assoc,
             std::function<void(Lease&)> on_eof, DurableState* durable)
    : loop_(loop),
      id_(rec.id),
      path_(lease_path(rec.id)),
      uid_(static_cast<uid_t>(rec.uid)),
      owner_(rec.owner),
      dst_(rec.dst),
      server_name_(rec.server),
      assoc_(std::move(assoc)),
      generation_(rec.generation),
      state_(static_cast<LeaseState>(rec.state)),
      relay_(rec.relay),
      source_(rec.source),
      created_(loop.now()),
      created_realtime_usec_(rec.created_realtime_usec),
      last_error_(rec.last_error),
      broker_end_(std::move(broker_end)),
      on_eof_(std::move(on_eof)),
      lost_err_(rec.err),
      lost_s5err_(rec.s5err),
      durable_(durable) {
    static_assert(static_cast<int>(LeaseState::Lost) == static_cast<int>(state::LeaseState::Lost));
    int fl = fcntl(broker_end_.get(), F_GETFL);
    if (fl >= 0) fcntl(broker_end_.get(), F_SETFL, fl | O_NONBLOCK);
    watch_broker_end();
    save();
}

void Lease::watch_broker_end() {
    // Edge-triggered: sd-event dispatches one source per iteration and
    // re-polls, so thousands of lease ends closing at once (a client with
    // many leases exits) would each be returned by every epoll_wait until
    // handled: quadratic. on_broker_end() drains to EAGAIN, as ET needs.
    watch_ = IoWatch(loop_, broker_end_.get(), EPOLLIN | EPOLLRDHUP | EPOLLET,
                     [this](uint32_t ev) { on_broker_end(ev); });
}

Lease::~Lease() {
    // Out of the store first: the store's copy would keep the pair open,
    // and the application would never see its lease end.
    if (durable_ && !durable_->frozen()) {
        durable_->erase(slot_);
        durable_->drop_fd(state::fd_name_lease(id_));
    }
}

state::LeaseRecord Lease::record() const {
    state::LeaseRecord r;
    r.id = id_;
    r.uid = static_cast<uint32_t>(uid_);
    r.owner = owner_;
    r.dst = dst_;
    r.server = server_name_;
    r.generation = generation_;
    r.state = static_cast<state::LeaseState>(state_);
    r.relay = relay_;
    r.source = source_;
    r.created_realtime_usec = created_realtime_usec_;
    r.last_error = last_error_;
    r.err = lost_err_;
    r.s5err = lost_s5err_;
    r.association = assoc_ ? assoc_->id() : 0;
    return r;
}

void Lease::save() {
    if (durable_) durable_->put(slot_, state::encode(record()));
}

// The event that tells the current state (none while pending): Ready for
// the first association, Renewed for a later one; Renewing names the
// generation that ended with its relay and source, so that if it replaces
// an unsent Ready/Renewed (send_event keeps only the latest state) the
// library still learns them; Lost carries why.
std::optional<s5::wire::LeaseEvent> Lease::current_event() const {
    s5::wire::LeaseEvent ev;
    ev.generation = generation_;
    switch (state_) {
        case LeaseState::Pending: return std::nullopt;
        case LeaseState::Active:
            ev.type = generation_ > 1 ? s5::wire::LeaseEventType::Renewed : s5::wire::LeaseEventType::Ready;
            ev.relay = relay_;
            ev.source = source_;
            break;
        case LeaseState::Renewing:
            ev.type = s5::wire::LeaseEventType::Renewing;
            ev.relay = relay_;
            ev.source = source_;
            break;
        case LeaseState::Lost:
            ev.type = s5::wire::LeaseEventType::Lost;
            ev.err = lost_err_;
            ev.s5err = lost_s5err_;
            break;
    }
    return ev;
}

void Lease::send_current() {
    if (auto ev = current_event()) send_event(*ev);
}

// Events are never dropped. Each carries the whole state (generation and
// relay, or the loss; Renewing carries the generation that ended), and the
// library follows the newest generation whatever the type, so
// when the application does not read and its end is full, the latest event
// replaces the one still waiting here and goes out as soon as there is room
// (EPOLLOUT); a Lost is final and is never replaced.
void Lease::send_event(const s5::wire::LeaseEvent& ev) {
    if (unsent_) {
        if (unsent_->type != s5::wire::LeaseEventType::Lost) unsent_ = ev;
        return;
    }
    if (try_send(ev)) return;
    unsent_ = ev;
    watch_.set_events(EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET);
}

bool Lease::try_send(const s5::wire::LeaseEvent& ev) {
    // A Ready/Renewed carries the association's claim socket, if it has
    // one: the application sends from it (association.hpp). Events are the
    // latest state (send_event), so the current association's is the one.
    s5::wire::LeaseEvent out = ev;
    const bool names_relay =
        ev.type == s5::wire::LeaseEventType::Ready || ev.type == s5::wire::LeaseEventType::Renewed;
    const int claim = names_relay && assoc_ ? assoc_->claim_socket() : -1;
    out.socket = claim >= 0;
    auto rec = s5::wire::encode_lease_event(out);
    iovec iov{rec.data(), rec.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    s5::OneFd control;
    if (claim >= 0) control.attach(msg, claim);
    for (;;) {
        if (::sendmsg(broker_end_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
            // The socket is in the application's queue now (whatever
            // happens to us, it gets it): ours is not needed any more.
            if (msg.msg_control) assoc_->release_claim();
            return true;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return false;
        if (errno == ETOOMANYREFS && msg.msg_control) {
            // More descriptors in flight to applications that do not read
            // than our RLIMIT_NOFILE: the event goes without its socket
            // (still flagged), and the library reports the lease lost with
            // EMFILE, as when it had no room for the descriptor itself.
            msg.msg_control = nullptr;
            msg.msg_controllen = 0;
            continue;
        }
        // Closed: the EOF handling that follows releases the lease.
        return true;
    }
}

void Lease::flush_unsent() {
    if (!unsent_ || !try_send(*unsent_)) return;
    unsent_.reset();
    watch_.set_events(EPOLLIN | EPOLLRDHUP | EPOLLET);
}

void Lease::attach(std::unique_ptr<Association> assoc) {
    assoc_ = std::move(assoc);
    server_name_ = assoc_->server_name();
    relay_ = assoc_->relay();
    source_ = assoc_->source();
    ++generation_;
    state_ = LeaseState::Active;
    last_error_.clear();
    save();
    send_current();   // Ready (generation 1) or Renewed
}

std::unique_ptr<Association> Lease::detach_for_renewal() {
    state_ = LeaseState::Renewing;
    auto gone = std::move(assoc_);
    save();
    // Tell the application at once: until Renewed, its datagrams would go
    // to a dead relay. Libraries that do not know the type skip it.
    send_current();
    return gone;
}

std::unique_ptr<Association> Lease::mark_lost(int err, int s5err, const std::string& why) {
    state_ = LeaseState::Lost;
    last_error_ = why;
    lost_err_ = err;
    lost_s5err_ = s5err;
    auto gone = std::move(assoc_);
    save();
    send_current();
    return gone;
}

bool Lease::app_closed() const { return peer_closed(broker_end_.get()); }

bool Lease::unread() const {
    if (state_ == LeaseState::Pending) return true;
    int queued = 0;
    return ::ioctl(broker_end_.get(), SIOCOUTQ, &queued) == 0 && queued > 0;
}

void Lease::on_broker_end(uint32_t revents) {
    if (revents & EPOLLOUT) flush_unsent();
    char buf[256];
    for (unsigned reads = 0;; ++reads) {
        if (reads == kMaxReadsPerWakeup) {
            // An application writing into its lease (meaningless, and
            // ignored) gets no more of the loop than anyone else: the rest
            // is read on a later iteration. Edge-triggered, so nobody else
            // will say there is more.
            if (!more_) more_ = std::make_unique<Timer>(loop_, [this] { on_broker_end(0); });
            more_->arm_in(std::chrono::microseconds(0));
            return;
        }
        ssize_t n = ::recv(broker_end_.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) continue;  // the application wrote to its lease: ignored
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !(revents & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)))
            return;
        break;  // EOF or error: the application's end is closed
    }
    watch_.reset();
    auto cb = on_eof_;  // may destroy this object
    cb(*this);
}

}  // namespace s5d
