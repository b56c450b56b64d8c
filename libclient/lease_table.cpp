#include "lease_table.hpp"
#include "process_global.hpp"

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "claim_socket.hpp"
#include "errors.hpp"
#include "fd_passing.hpp"

namespace s5::client {

using s5::wire::Endpoint;
using s5::wire::LeaseEvent;
using s5::wire::LeaseEventType;

size_t EndpointHash::operator()(const Endpoint& e) const noexcept {
    // FNV-1a over family, port and the address bytes.
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint8_t b) {
        h ^= b;
        h *= 1099511628211ull;
    };
    mix(static_cast<uint8_t>(e.family));
    mix(static_cast<uint8_t>(e.port >> 8));
    mix(static_cast<uint8_t>(e.port));
    for (uint8_t b : e.ip) mix(b);
    return static_cast<size_t>(h);
}

Endpoint normalized(const Endpoint& e) {
    Endpoint out;
    out.port = e.port;
    if (e.family == AF_INET6) {
        static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (std::equal(std::begin(kMapped), std::end(kMapped), e.ip.begin())) {
            out.family = AF_INET;
            std::copy_n(e.ip.begin() + 12, 4, out.ip.begin());
        } else {
            out.family = AF_INET6;
            out.ip = e.ip;
        }
    } else if (e.family == AF_INET) {
        out.family = AF_INET;
        std::copy_n(e.ip.begin(), 4, out.ip.begin());
    }
    return out;
}

LeaseTable& LeaseTable::global() { return process_global<LeaseTable>(); }

LeaseTable::Lease& LeaseTable::insert_locked(int fd, const struct stat& st) {
    remove_locked(fd);
    if (leases_.size() >= sweep_at_) sweep_locked();
    Lease& l = leases_[fd];
    l.dev = st.st_dev;
    l.ino = st.st_ino;
    l.info.fd = fd;
    return l;
}

std::optional<LeaseInfo> LeaseTable::add(int fd, int lease_fd, const Endpoint* relay) {
    struct stat st;
    if (::fstat(lease_fd, &st) < 0) return std::nullopt;
    std::lock_guard<std::mutex> g(m_);
    Lease& l = insert_locked(fd, st);
    if (relay && relay->ip_len() != 0) {
        // Generation 0: the Ready event (generation 1) refines it.
        set_relay_locked(l, *relay);
        l.info.state = LeaseState::Active;
        l.info.completed = true;
        drain_locked(l, lease_fd, 1);
    }
    return l.info;
}

std::optional<LeaseInfo> LeaseTable::add_direct(int fd, const Endpoint& relay, const Endpoint& source) {
    struct stat st;
    if (::fstat(fd, &st) < 0) return std::nullopt;
    std::lock_guard<std::mutex> g(m_);
    Lease& l = insert_locked(fd, st);
    l.info.direct = true;
    set_relay_locked(l, relay);
    Endpoint src = normalized(source);
    src.port = 0;
    l.info.source = src;
    l.info.generation = 1;
    l.info.state = LeaseState::Active;
    l.info.completed = true;
    return l.info;
}

void LeaseTable::remove(int fd) {
    std::lock_guard<std::mutex> g(m_);
    remove_locked(fd);
}

std::optional<LeaseInfo> LeaseTable::lookup(int fd) {
    std::lock_guard<std::mutex> g(m_);
    return refresh_locked(fd);
}

void LeaseTable::mark_completed(int fd) {
    std::lock_guard<std::mutex> g(m_);
    auto it = leases_.find(fd);
    if (it != leases_.end()) it->second.info.completed = true;
}

std::optional<LeaseInfo> LeaseTable::route(const Endpoint& relay) {
    const Endpoint key = normalized(relay);
    LeaseInfo snap;
    {
        std::lock_guard<std::mutex> g(m_);
        auto r = by_relay_.find(key);
        if (r == by_relay_.end()) return std::nullopt;
        auto l = leases_.find(r->second);
        if (l == leases_.end()) return std::nullopt;
        snap = l->second.info;
    }
    // A direct association's fd is its TCP control connection: nothing to
    // read there, and no renewal to follow.
    if (snap.direct) return snap;
    if (snap.state != LeaseState::Lost) {
        // Normally nothing is queued: EAGAIN, and the snapshot is current.
        // MSG_PEEK: if the application closed the lease and the number now
        // belongs to another socket, its data must not be consumed here.
        // (A renewal applied by another thread after our snapshot is a
        // benign race: this datagram goes to the previous relay.)
        char probe;
        ssize_t n = ::recv(snap.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return snap;
    }
    // An event, EOF or an error, or the lease is lost: check that the
    // descriptor is still the lease, then read everything queued.
    std::lock_guard<std::mutex> g(m_);
    auto r = by_relay_.find(key);
    if (r == by_relay_.end()) return std::nullopt;
    return refresh_locked(r->second);
}

int LeaseTable::place(int fd, int udp) {
    std::lock_guard<std::mutex> g(m_);
    auto it = leases_.find(fd);
    if (it == leases_.end()) return EINVAL;
    return place_locked(it->second, udp);
}

void LeaseTable::refuse_source(int fd, const Endpoint& source) {
    std::lock_guard<std::mutex> g(m_);
    auto it = leases_.find(fd);
    if (it != leases_.end() && it->second.info.source == source) it->second.info.source_refused = true;
}

bool LeaseTable::is_current_relay(const Endpoint& from) const {
    const Endpoint key = normalized(from);
    std::lock_guard<std::mutex> g(m_);
    return current_.find(key) != current_.end();
}

size_t LeaseTable::size() const {
    std::lock_guard<std::mutex> g(m_);
    return leases_.size();
}

// ---- under the lock ----------------------------------------------------------

std::optional<LeaseInfo> LeaseTable::refresh_locked(int fd) {
    auto it = leases_.find(fd);
    if (it == leases_.end()) return std::nullopt;
    if (!same_socket_locked(fd, it->second)) {
        remove_locked(fd);  // closed by the application, maybe reused
        return std::nullopt;
    }
    if (!it->second.info.direct) drain_locked(it->second, fd);
    return it->second.info;
}

bool LeaseTable::same_socket_locked(int fd, const Lease& l) const {
    struct stat st;
    return ::fstat(fd, &st) == 0 && st.st_dev == l.dev && st.st_ino == l.ino;
}

void LeaseTable::drain_locked(Lease& l, int read_fd, size_t max) {
    for (size_t done = 0; done < max && l.info.state != LeaseState::Lost; ++done) {
        // One byte more than a record: a longer (future) record arrives
        // truncated and fails to decode instead of passing as a short one.
        uint8_t buf[s5::wire::kLeaseEventSize + 1];
        iovec iov{buf, sizeof buf};
        // Room for a few descriptors: a record carries at most one; more
        // (not from a broker of ours) are closed below.
        alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t n;
        while ((n = ::recvmsg(read_fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            mark_lost_locked(l, 0, 0);  // reset or unreadable: the lease is gone
            return;
        }
        if (n == 0) {
            // The broker closed its end (restarted, or released the lease).
            mark_lost_locked(l, 0, 0);
            return;
        }
        s5::UniqueFd sock = s5::take_passed_fd(msg);
        // Records we cannot decode (newer version, garbage) are skipped.
        auto ev = s5::wire::decode_lease_event({buf, static_cast<size_t>(n)});
        if (!ev) continue;
        if (ev->socket && !sock) {
            // The record's socket did not arrive: no room for another
            // descriptor here (MSG_CTRUNC), or the broker had too many in
            // flight. Without it nothing can be sent that the server takes.
            mark_lost_locked(l, EMFILE, 0);
            return;
        }
        if (!ev->socket) sock.reset();
        apply_locked(l, *ev, std::move(sock));
    }
}

void LeaseTable::apply_locked(Lease& l, const LeaseEvent& ev, s5::UniqueFd sock) {
    switch (ev.type) {
        case LeaseEventType::Ready:
        case LeaseEventType::Renewed:
            if (l.info.state == LeaseState::Lost) return;  // final
            if (ev.relay.ip_len() == 0) return;            // malformed: no relay
            // Generations only grow; an older or repeated one changes nothing
            // (a renewing lease waits for a generation newer than the ended one).
            if (l.info.state != LeaseState::Pending && ev.generation <= l.info.generation) return;
            take_association_locked(l, ev, std::move(sock));
            l.info.state = LeaseState::Active;
            return;
        case LeaseEventType::Renewing:
            if (l.info.state == LeaseState::Lost) return;
            if (l.info.state == LeaseState::Pending || ev.generation > l.info.generation) {
                // The Ready/Renewed of that generation never came (the broker
                // sends only the latest state when our end is full): this
                // record carries its relay and source.
                if (ev.relay.ip_len() == 0) {
                    if (l.info.state == LeaseState::Pending) return;  // malformed: nothing to send to
                    l.info.generation = ev.generation;
                } else {
                    // No socket comes with a Renewing: the one we hold (if
                    // any) stays, and the Renewed that follows brings the next.
                    take_association_locked(l, ev, s5::UniqueFd());
                }
            } else if (ev.generation < l.info.generation) {
                return;  // the end of an association we have already left
            }
            l.info.state = LeaseState::Renewing;
            return;
        case LeaseEventType::Lost:
            mark_lost_locked(l, ev.err, ev.s5err);
            return;
    }
}

void LeaseTable::take_association_locked(Lease& l, const LeaseEvent& ev, s5::UniqueFd sock) {
    set_relay_locked(l, ev.relay);
    Endpoint source = normalized(ev.source);
    source.port = 0;
    if (!(source == l.info.source)) l.info.source_refused = false;
    l.info.source = source;
    l.info.generation = ev.generation;
    if (ev.type == LeaseEventType::Renewing) return;  // keeps its claim socket
    // The new association's claim socket replaces the old one where that
    // was put in place, so the application's descriptor keeps working.
    struct stat st;
    const int placed = l.info.placed;
    const bool was_placed = placed >= 0 && is_claim_of_locked(placed, l);
    if (placed >= 0) placed_.erase(placed);
    l.info.placed = -1;
    l.claim.reset();
    l.claim_dev = 0;
    l.claim_ino = 0;
    l.info.claimed = false;
    if (!sock || ::fstat(sock.get(), &st) < 0) return;  // claim by first datagram
    l.claim = std::move(sock);
    l.claim_dev = st.st_dev;
    l.claim_ino = st.st_ino;
    l.info.claimed = true;
    // Failing that, the next socks5udp_sendto() puts it in place.
    if (was_placed) (void)place_locked(l, placed);
}

bool LeaseTable::is_claim_of_locked(int udp, const Lease& l) const {
    struct stat st;
    return l.claim_ino != 0 && ::fstat(udp, &st) == 0 && st.st_dev == l.claim_dev && st.st_ino == l.claim_ino;
}

int LeaseTable::place_locked(Lease& l, int udp) {
    if (!l.claim) return 0;  // claimed by the first datagram: any socket will do
    if (l.info.placed == udp && is_claim_of_locked(udp, l)) return 0;
    if (auto p = placed_.find(udp); p != placed_.end() && p->second != l.info.fd) {
        const int other_fd = p->second;
        auto other = leases_.find(other_fd);
        if (other != leases_.end() && !same_socket_locked(other_fd, other->second)) {
            remove_locked(other_fd);  // that lease was closed: its socket is free
        } else if (other != leases_.end() && other->second.info.state != LeaseState::Lost &&
                   is_claim_of_locked(udp, other->second)) {
            return EADDRINUSE;
        } else {
            placed_.erase(p);  // a socket that is gone, or a lost lease's
        }
    }
    if (int e = put_in_place(l.claim.get(), udp)) return e;
    if (l.info.placed >= 0) placed_.erase(l.info.placed);
    l.info.placed = udp;
    placed_[udp] = l.info.fd;
    return 0;
}

// Invariant: l.info.relay is set exactly when it is counted in current_.
void LeaseTable::set_relay_locked(Lease& l, const Endpoint& relay) {
    const Endpoint r = normalized(relay);
    const int fd = l.info.fd;
    if (!(l.info.relay == r)) {
        clear_current_locked(l);
        ++current_[r];
        l.info.relay = r;
    }
    by_relay_[r] = fd;  // the newest holder of an address wins
    if (std::find(l.relays.begin(), l.relays.end(), r) == l.relays.end()) {
        l.relays.push_back(r);
        if (l.relays.size() > kMaxRelaysKept) {
            // Forget the oldest renewal; the first rendezvous stays.
            auto old = l.relays.begin() + 1;
            auto k = by_relay_.find(*old);
            if (k != by_relay_.end() && k->second == fd) by_relay_.erase(k);
            l.relays.erase(old);
        }
    }
}

void LeaseTable::clear_current_locked(Lease& l) {
    if (l.info.relay.ip_len() == 0) return;
    auto c = current_.find(l.info.relay);
    if (c != current_.end() && --c->second <= 0) current_.erase(c);
    l.info.relay = Endpoint{};
}

void LeaseTable::mark_lost_locked(Lease& l, int err, int s5err) {
    if (l.info.state == LeaseState::Lost) return;
    clear_current_locked(l);
    l.info.state = LeaseState::Lost;
    if (err == 0) {
        // EOF, a reset, or a Lost event without a reason: design.md's "lost".
        const auto& lost = s5::err::info(s5::err::Code::Lost);
        err = lost.err;
        if (s5err == 0) s5err = lost.s5err;
    }
    l.info.err = err;
    l.info.s5err = s5err;
}

void LeaseTable::remove_locked(int fd) {
    auto it = leases_.find(fd);
    if (it == leases_.end()) return;
    Lease& l = it->second;
    clear_current_locked(l);
    if (auto p = placed_.find(l.info.placed); p != placed_.end() && p->second == fd) placed_.erase(p);
    for (const Endpoint& r : l.relays) {
        auto k = by_relay_.find(r);
        if (k != by_relay_.end() && k->second == fd) by_relay_.erase(k);
    }
    leases_.erase(it);
}

void LeaseTable::sweep_locked() {
    // Entries of descriptors the application closed without telling us:
    // dropped here, amortised over the adds that doubled the table.
    std::vector<int> stale;
    for (const auto& [fd, l] : leases_)
        if (!same_socket_locked(fd, l)) stale.push_back(fd);
    for (int fd : stale) remove_locked(fd);
    sweep_at_ = std::max(kMinSweep, 2 * leases_.size());
}

}  // namespace s5::client
