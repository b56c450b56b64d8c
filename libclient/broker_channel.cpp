#include "broker_channel.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "fd_passing.hpp"

namespace s5::client {
namespace {

namespace ch = s5::channel;

// How long a broker may take to answer at once (it never waits for
// anything, but may be busy); past it the channel is given up and the call
// goes to the bus.
constexpr time_t kReplyTimeoutS = 5;
// After OpenChannel failed, the bus alone for this long.
constexpr int64_t kRetryOpenNs = 1'000'000'000;

int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Channel {
    std::mutex m;
    int fd = -1;                 // guarded by m
    int64_t retry_open_at = 0;   // guarded by m
    uint64_t next_token = 1;     // guarded by m
    Channel* abandoned_next = nullptr;

    void drop() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

std::atomic<Channel*> g_channel{nullptr};
Channel* g_abandoned = nullptr;   // inherited across fork, never used again

// pthread_atfork child handler: no lock, no allocation. The parent's
// channel is the parent's: the child's copy of the socket is closed (the
// parent's stays open), and the child opens its own when it needs one.
void on_fork_child() {
    if (Channel* old = g_channel.exchange(nullptr, std::memory_order_relaxed)) {
        if (old->fd >= 0) ::close(old->fd);
        old->fd = -1;
        old->abandoned_next = g_abandoned;
        g_abandoned = old;
    }
}

bool enabled() {
    static const bool on = [] {
        const char* v = std::getenv("S5CLIENT_CHANNEL");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    return on;
}

Channel& channel() {
    static const bool registered = [] {
        pthread_atfork(nullptr, nullptr, on_fork_child);
        return true;
    }();
    (void)registered;
    Channel* c = g_channel.load(std::memory_order_acquire);
    if (c) return *c;
    auto* fresh = new Channel;   // never destroyed: threads may call during exit()
    if (g_channel.compare_exchange_strong(c, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) return *fresh;
    delete fresh;
    return *c;
}

// Makes the channel if there is none and it may be tried now.
bool ensure(Channel& c, const ChannelOpener& open) {
    if (c.fd >= 0) return true;
    if (now_ns() < c.retry_open_at) return false;
    s5::UniqueFd fd = open();
    // Out of the way of the application's low numbers, and not inherited
    // across exec (sdbus-c++ hands over a plain dup()).
    int mine = fd ? fcntl(fd.get(), F_DUPFD_CLOEXEC, 3) : -1;
    if (mine < 0) {
        c.retry_open_at = now_ns() + kRetryOpenNs;
        return false;
    }
    const timeval tv{kReplyTimeoutS, 0};
    (void)setsockopt(mine, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    c.fd = mine;
    return true;
}

enum class Round { Answered, Broken, Bus };

// One request and its reply. Broken: the broker is gone (worth once more on
// a new channel); Bus: the channel cannot answer this (it is dropped).
Round round_trip(Channel& c, const ch::Request& req, ch::Reply& reply, s5::UniqueFd& lease_fd) {
    const auto bytes = ch::encode_request(req);
    ssize_t n;
    do {
        n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        c.drop();
        return (errno == EPIPE || errno == ECONNRESET) ? Round::Broken : Round::Bus;
    }
    uint8_t buf[ch::kReplyMax];
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    do {
        n = ::recvmsg(c.fd, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    const int recv_errno = errno;
    size_t fds = 0;   // the first is the lease's; any others are not ours to keep
    if (n > 0) lease_fd = s5::take_passed_fd(msg, &fds);
    if (n == 0 || (n < 0 && recv_errno == ECONNRESET)) {
        c.drop();
        return Round::Broken;
    }
    if (n < 0) {   // time-out (or worse): this channel is given up
        c.drop();
        return Round::Bus;
    }
    auto r = ch::decode_reply(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
    const bool wants_fd = r && (r->status == ch::Status::Granted || r->status == ch::Status::Pending);
    if (!r || (msg.msg_flags & MSG_TRUNC) || r->token != req.token || (fds > 0) != wants_fd || fds > 1) {
        // Not what this broker says: the lease (if any) ends with its fd.
        lease_fd.reset();
        if (wants_fd && fds == 0 && (msg.msg_flags & MSG_CTRUNC)) {
            // The kernel could not give us the descriptor (EMFILE).
            reply = ch::Reply{};
            reply.status = ch::Status::Failed;
            reply.error_name = "org.freedesktop.DBus.Error.LimitsExceeded";
            reply.error_message = "the lease fd could not be received (out of file descriptors?)";
            return Round::Answered;
        }
        c.drop();
        return Round::Bus;
    }
    reply = std::move(*r);
    return Round::Answered;
}

}  // namespace

std::optional<AssociateOutcome> channel_associate(ch::Request req, bool may_wait, const ChannelOpener& open) {
    if (!enabled()) return std::nullopt;
    Channel& c = channel();
    std::unique_lock<std::mutex> g(c.m, std::defer_lock);
    if (may_wait)
        g.lock();
    else if (!g.try_lock())
        return std::nullopt;
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!ensure(c, open)) return std::nullopt;
        req.token = c.next_token++;
        ch::Reply reply;
        s5::UniqueFd lease_fd;
        switch (round_trip(c, req, reply, lease_fd)) {
            case Round::Broken: continue;   // a new broker, perhaps: once more
            case Round::Bus: return std::nullopt;
            case Round::Answered: break;
        }
        AssociateOutcome out;
        switch (reply.status) {
            case ch::Status::WouldWait: return std::nullopt;
            case ch::Status::Failed:
                // The channel checks the uid of each request; the bus, the
                // credentials of the connection when it was made. A process
                // that changed its uid since it opened the channel is asked
                // about on the bus, which decides as it always did.
                if (reply.error_name == "org.freedesktop.DBus.Error.AccessDenied") {
                    c.drop();
                    c.retry_open_at = now_ns() + kRetryOpenNs;   // the bus alone for a while
                    return std::nullopt;
                }
                out.error_name = std::move(reply.error_name);
                out.error_message = std::move(reply.error_message);
                return out;
            case ch::Status::Granted: out.relay = reply.relay; break;
            case ch::Status::Pending: out.pending = true; break;
        }
        out.ok = true;
        out.lease_fd = std::move(lease_fd);
        return out;
    }
    return std::nullopt;
}

}  // namespace s5::client
