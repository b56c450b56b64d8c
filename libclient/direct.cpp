#include "direct.hpp"
#include "process_global.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "s5broker/socks5.h"
#include "broker_link.hpp"
#include "errors.hpp"
#include "handshake.hpp"
#include "lease_table.hpp"

namespace s5::client {
namespace {

using s5::wire::Endpoint;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kDefaultDeadline{10000};

// One direct association under way.
struct Conn {
    enum class Phase { Connecting, Handshaking };
    Phase phase = Phase::Connecting;
    std::optional<s5::proto::Credentials> creds;   // until the handshake takes them
    std::unique_ptr<s5::proto::Handshake> hs;
    s5::SecretBytes out;                           // not yet sent (may hold the password;
                                                   // secret.hpp wipes it)
    size_t out_off = 0;
    Endpoint server;                               // as connected to (normalized)
    Endpoint source;                               // our side of the control connection, port 0

    Conn() = default;
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;
};

struct Fail {
    int err, s5err;
};

Fail from_code(s5::err::Code c) {
    const auto& i = s5::err::info(c);
    return {i.err, i.s5err};
}

// A failed connect() or socket I/O on the control connection: the network
// errors of docs/design.md §3 through the shared table, anything else (a local
// error: EACCES from a firewall, ENOBUFS, ...) as connect(2) reported it.
Fail from_io_errno(int e) {
    auto c = s5::err::from_connect_errno(e);
    if (c == s5::err::Code::ServerFailure) return {e, 0};
    return from_code(c);
}

// Result of one non-blocking pass over a Conn.
struct Progress {
    enum class Kind { WaitRead, WaitWrite, Done, Failed } kind = Kind::Failed;
    Fail fail{0, 0};
    Endpoint relay;
};

Progress failed(Fail f) {
    Progress p;
    p.kind = Progress::Kind::Failed;
    p.fail = f;
    return p;
}

Progress waiting(Progress::Kind k) {
    Progress p;
    p.kind = k;
    return p;
}

std::optional<Endpoint> sock_endpoint(int fd, bool peer) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int r = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                 : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    if (r < 0) return std::nullopt;
    auto ep = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    if (!ep) return std::nullopt;
    return normalized(*ep);
}

// The relay from the server's reply: a domain name that is an IP literal is
// accepted, 0.0.0.0/:: means the server's own address (docs/design.md §7), as
// the broker does (daemon/association.cpp).
std::optional<Endpoint> relay_of(const s5::wire::Reply& r, const Endpoint& server) {
    Endpoint relay;
    if (r.atyp == s5::wire::kAtypDomain) {
        auto ip = Endpoint::parse_ip(r.bnd_name, r.bnd.port);
        if (!ip) return std::nullopt;
        relay = *ip;
    } else {
        relay = r.bnd;
    }
    if (relay.ip_len() == 0 || relay.port == 0) return std::nullopt;
    relay = normalized(relay);
    if (relay.is_unspecified()) {
        uint16_t port = relay.port;
        relay = server;
        relay.port = port;
    }
    return relay;
}

// Advances `c` as far as it goes without blocking.
Progress advance(int fd, Conn& c) {
    if (c.phase == Conn::Phase::Connecting) {
        pollfd p{fd, POLLOUT, 0};
        int r;
        while ((r = ::poll(&p, 1, 0)) < 0 && errno == EINTR) {
        }
        if (r < 0) return failed({errno, 0});
        if (r == 0) return waiting(Progress::Kind::WaitWrite);
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) return failed({errno, 0});
        if (soerr) return failed(from_io_errno(soerr));
        auto peer = sock_endpoint(fd, true);
        if (!peer) return failed(from_io_errno(errno == ENOTCONN ? ECONNREFUSED : errno));
        auto local = sock_endpoint(fd, false);
        if (!local) return failed({errno, 0});
        c.server = *peer;
        // DST of the request: the IP datagrams will come from, port 0.
        c.source = *local;
        c.source.port = 0;
        c.hs = std::make_unique<s5::proto::Handshake>(std::move(c.creds), c.source, /*pipelined=*/false);
        c.creds.reset();
        c.out = c.hs->start();
        c.out_off = 0;
        c.phase = Conn::Phase::Handshaking;
    }
    for (;;) {
        while (c.out_off < c.out.size()) {
            ssize_t n = ::send(fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return waiting(Progress::Kind::WaitWrite);
                return failed(from_io_errno(errno));
            }
            c.out_off += static_cast<size_t>(n);
        }
        s5::SecretBytes().swap(c.out);  // sent: its memory goes back wiped
        c.out_off = 0;

        uint8_t buf[512];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return waiting(Progress::Kind::WaitRead);
            return failed(from_io_errno(errno));
        }
        // Hung up mid-handshake: the server failed (as the broker reports it),
        // it sent nothing malformed.
        if (n == 0) return failed(from_code(s5::err::Code::ServerFailure));
        auto step = c.hs->feed(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
        if (step.failed) return failed(from_code(c.hs->error()));
        if (!step.send.empty()) {
            c.out = std::move(step.send);
            c.out_off = 0;
            continue;
        }
        if (step.done) {
            auto relay = relay_of(c.hs->reply(), c.server);
            c.hs.reset();
            if (!relay) return failed(from_code(s5::err::Code::ProtocolError));
            Progress p;
            p.kind = Progress::Kind::Done;
            p.relay = *relay;
            return p;
        }
    }
}

// Timeouts of a blocking Socket in ms, -1 when unset.
int timeout_ms(int fd, int opt) {
    timeval tv{};
    socklen_t len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, opt, &tv, &len) < 0) return -1;
    if (tv.tv_sec == 0 && tv.tv_usec == 0) return -1;
    long long ms = static_cast<long long>(tv.tv_sec) * 1000 + (tv.tv_usec + 999) / 1000;
    return ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
}

// Drives `c` to its end on a blocking Socket: each wait for writability is
// bounded by SO_SNDTIMEO, each wait for readability by SO_RCVTIMEO, as the
// kernel would bound connect/send/recv; with neither set, the whole run is
// bounded by kDefaultDeadline.
Progress run_blocking(int fd, Conn& c) {
    const int snd = timeout_ms(fd, SO_SNDTIMEO);
    const int rcv = timeout_ms(fd, SO_RCVTIMEO);
    const bool overall = snd < 0 && rcv < 0;
    const auto deadline = Clock::now() + kDefaultDeadline;
    for (;;) {
        Progress p = advance(fd, c);
        if (p.kind == Progress::Kind::Done || p.kind == Progress::Kind::Failed) return p;
        const bool reading = p.kind == Progress::Kind::WaitRead;
        const int limit = reading ? rcv : snd;
        std::optional<Clock::time_point> end;
        if (overall)
            end = deadline;
        else if (limit >= 0)
            end = Clock::now() + std::chrono::milliseconds(limit);
        for (;;) {
            int ms = -1;
            if (end) {
                auto now = Clock::now();
                if (now >= *end) return failed(from_code(s5::err::Code::Timeout));
                auto left = std::chrono::ceil<std::chrono::milliseconds>(*end - now).count();
                ms = left > 0x7fffffff ? 0x7fffffff : static_cast<int>(left);
            }
            pollfd pfd{fd, static_cast<short>(reading ? POLLIN : POLLOUT), 0};
            int r = ::poll(&pfd, 1, ms);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return failed({errno, 0});
            if (r == 0) continue;  // the deadline check above ends it
            break;
        }
    }
}

// Non-blocking associations in progress, by descriptor and socket identity.
class Pending {
public:
    static Pending& global() { return process_global<Pending>(); }
    // For process_global's fork handlers.
    void lock() { m_.lock(); }
    void unlock() { m_.unlock(); }

    bool contains(int fd) {
        // Asked on every socks5udp_associate(): no fstat() for a descriptor
        // that has no entry, which is nearly always.
        {
            std::lock_guard<std::mutex> g(m_);
            if (!map_.count(fd)) return false;
        }
        struct stat st;
        if (::fstat(fd, &st) < 0) return false;
        std::lock_guard<std::mutex> g(m_);
        auto it = map_.find(fd);
        if (it == map_.end()) return false;
        if (it->second.dev != st.st_dev || it->second.ino != st.st_ino) {
            map_.erase(it);  // closed and reused
            return false;
        }
        return true;
    }

    // Takes the entry out (the caller owns it while advancing); nullptr if
    // there is none for this socket.
    std::unique_ptr<Conn> take(int fd) {
        struct stat st;
        if (::fstat(fd, &st) < 0) return nullptr;
        std::lock_guard<std::mutex> g(m_);
        auto it = map_.find(fd);
        if (it == map_.end()) return nullptr;
        std::unique_ptr<Conn> c;
        if (it->second.dev == st.st_dev && it->second.ino == st.st_ino) c = std::move(it->second.conn);
        map_.erase(it);
        return c;
    }

    bool put(int fd, std::unique_ptr<Conn> c) {
        struct stat st;
        if (::fstat(fd, &st) < 0) return false;
        std::lock_guard<std::mutex> g(m_);
        if (map_.size() >= sweep_at_) sweep_locked();
        map_[fd] = Entry{st.st_dev, st.st_ino, std::move(c)};
        return true;
    }

private:
    struct Entry {
        dev_t dev = 0;
        ino_t ino = 0;
        std::unique_ptr<Conn> conn;
    };

    void sweep_locked() {
        for (auto it = map_.begin(); it != map_.end();) {
            struct stat st;
            if (::fstat(it->first, &st) < 0 || st.st_dev != it->second.dev || st.st_ino != it->second.ino)
                it = map_.erase(it);
            else
                ++it;
        }
        sweep_at_ = std::max<size_t>(64, 2 * map_.size());
    }

    std::mutex m_;
    std::unordered_map<int, Entry> map_;
    size_t sweep_at_ = 64;
};

size_t sockaddr_len(int family) { return family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in); }

// connect(AF_UNSPEC): a TCP socket goes back to unconnected (an
// established control connection is reset, a connect in progress aborted).
void disconnect(int fd) {
    sockaddr sa{};
    sa.sa_family = AF_UNSPEC;
    int saved = errno;
    (void)::connect(fd, &sa, sizeof sa);
    errno = saved;
}

DirectOutcome outcome_failed(int fd, Fail f) {
    disconnect(fd);
    DirectOutcome o;
    o.err = f.err;
    o.s5err = f.s5err;
    return o;
}

DirectOutcome outcome_errno(int err, int s5err = 0) {
    DirectOutcome o;
    o.err = err;
    o.s5err = s5err;
    return o;
}

// What a pass or a blocking run ended with; `c` stays in progress (put back
// in the table) only on a non-blocking wait.
DirectOutcome conclude(int fd, std::unique_ptr<Conn> c, const Progress& p, size_t dst_len, int in_progress_err) {
    switch (p.kind) {
        case Progress::Kind::WaitRead:
        case Progress::Kind::WaitWrite:
            if (!Pending::global().put(fd, std::move(c))) return outcome_failed(fd, {EBADF, 0});
            return outcome_errno(in_progress_err);
        case Progress::Kind::Failed:
            return outcome_failed(fd, p.fail);
        case Progress::Kind::Done:
            break;
    }
    if (sockaddr_len(p.relay.family) > dst_len) return outcome_failed(fd, {EINVAL, 0});
    if (!LeaseTable::global().add_direct(fd, p.relay, c->source)) return outcome_failed(fd, {errno, 0});
    DirectOutcome o;
    o.rc = 0;
    o.relay = p.relay;
    return o;
}

}  // namespace

Mode mode_from_env() {
    const char* m = secure_getenv("S5CLIENT_MODE");
    if (!m) return Mode::Auto;
    if (strcmp(m, "direct") == 0) return Mode::Direct;
    if (strcmp(m, "broker") == 0) return Mode::Broker;
    return Mode::Auto;
}

bool broker_absent(const std::string& name) {
    // Not on the bus, or no bus to reach it on (a connection lost twice).
    // A broker that failed to start, or refused, is not absent: that is its
    // error to report, not a reason to go around it.
    const auto f = s5::err::classify_dbus_error(name);
    return f == s5::err::BusFailure::NotOnBus || f == s5::err::BusFailure::ConnectionLost;
}

DirectOutcome direct_start(int fd, const Endpoint& server_in, size_t dst_len, bool nonblocking) {
    int domain = 0;
    socklen_t dlen = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) < 0) return outcome_errno(errno);
    if (domain != AF_INET && domain != AF_INET6) return outcome_errno(EAFNOSUPPORT);

    // The address to connect to, in the socket's family: IPv4 on an IPv6
    // socket as ::ffff:a.b.c.d; an IPv4-mapped address on an IPv4 socket
    // as plain IPv4; other IPv6 on an IPv4 socket cannot be reached.
    Endpoint server = normalized(server_in);
    // The relay normally comes back in the server's family.
    if (sockaddr_len(server.family) > dst_len) return outcome_errno(EINVAL);
    sockaddr_storage ss{};
    size_t sslen = 0;
    if (server.family == AF_INET && domain == AF_INET6) {
        Endpoint m;
        m.family = AF_INET6;
        m.port = server.port;
        m.ip[10] = m.ip[11] = 0xff;
        std::copy_n(server.ip.begin(), 4, m.ip.begin() + 12);
        sslen = m.to_sockaddr(ss);
    } else if (server.family == AF_INET6 && domain == AF_INET) {
        return outcome_errno(EAFNOSUPPORT);
    } else {
        sslen = server.to_sockaddr(ss);  // (no scope id: link-local servers are not supported)
    }

    auto c = std::make_unique<Conn>();
    // Credentials, read now; the password into secret memory (secret.hpp).
    if (const char* user = secure_getenv("SOCKS5_USERNAME"); user && *user) {
        const char* pass = secure_getenv("SOCKS5_PASSWORD");
        size_t ulen = strlen(user), plen = pass ? strlen(pass) : 0;
        if (ulen > 255 || plen == 0 || plen > 255) return outcome_errno(EINVAL);
        c->creds.emplace();
        c->creds->password = s5::Secret(std::string_view(pass, plen));
        c->creds->username.assign(user, ulen);
    }

    // Blocking Socket: the connect is started non-blocking so the deadline
    // applies to it too; O_NONBLOCK is set only for the connect() call.
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return outcome_errno(EBADF);
    if (!nonblocking && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return outcome_errno(errno);
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(sslen));
    int e = errno;
    if (!nonblocking) fcntl(fd, F_SETFL, fl);
    // EINTR: the connect goes on in the background (connect(2)).
    if (r < 0 && e != EINPROGRESS && e != EINTR) return outcome_failed(fd, from_io_errno(e));

    if (nonblocking) {
        // As connect(2): EINPROGRESS at once; if it already connected,
        // the greeting goes out now.
        Progress p = advance(fd, *c);
        if (p.kind == Progress::Kind::Failed) return outcome_failed(fd, p.fail);
        return conclude(fd, std::move(c), p, dst_len, EINPROGRESS);
    }
    Progress p = run_blocking(fd, *c);
    return conclude(fd, std::move(c), p, dst_len, EALREADY);
}

bool direct_in_progress(int fd) { return Pending::global().contains(fd); }

DirectOutcome direct_continue(int fd, size_t dst_len, bool nonblocking) {
    auto c = Pending::global().take(fd);
    if (!c) return outcome_errno(EALREADY);  // another thread has it
    Progress p = nonblocking ? advance(fd, *c) : run_blocking(fd, *c);
    return conclude(fd, std::move(c), p, dst_len, EALREADY);
}

}  // namespace s5::client
