#include "delay_forwarder.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <queue>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>
#include "unique_fd.hpp"

namespace s5bench {
namespace {

// libstdc++'s steady_clock reads CLOCK_MONOTONIC, so its time points can arm
// a CLOCK_MONOTONIC timerfd directly.
using Clock = std::chrono::steady_clock;

constexpr size_t kReadSize = 64 * 1024;
constexpr size_t kUpstreamPrefix = 64;
// Bounds the work one readiness event may do, so one busy socket cannot
// starve the others (epoll is level-triggered, so nothing is lost).
constexpr int kBurst = 64;
constexpr int kSocketBuffer = 4 * 1024 * 1024;

// The project's one owner of a descriptor.
using Fd = s5::UniqueFd;

[[noreturn]] void fail(const char* call) {
    throw std::runtime_error(std::string("DelayForwarder: ") + call + ": " + std::strerror(errno));
}

int check(int rc, const char* call) {
    if (rc < 0) fail(call);
    return rc;
}

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

// A pending ICMP error makes the next send fail without sending, so one retry
// keeps an earlier unanswered datagram from costing a later one.
template <typename Send>
bool send_with_retry(Send send, bool& blocked) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (send() >= 0) return true;
        if (would_block(errno)) {
            blocked = true;
            return false;
        }
    }
    return true;  // give up on this datagram
}

sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

// Best effort: a socket without the option still works, only less well.
void set_opt(int fd, int level, int name, int value) { ::setsockopt(fd, level, name, &value, sizeof value); }

// Closing with a zero linger time sends RST instead of FIN, so the peer sees
// the connection fail rather than end.
void hard_close(Fd& fd) {
    if (!fd) return;
    linger l{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    fd.reset();
}

uint16_t local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    check(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), "getsockname");
    return ntohs(a.sin_port);
}

uint64_t addr_key(const sockaddr_in& a) {
    return uint64_t{ntohl(a.sin_addr.s_addr)} << 16 | ntohs(a.sin_port);
}

// Which socket an epoll event or a queue belongs to. The kind sits in the low
// bits of the epoll token next to a never-reused object id, so an event that
// was already queued for an object closed earlier in the same batch finds no
// object instead of a newcomer that reuses the fd number.
enum class Kind : uint64_t { Wake, Timer, Listener, UdpFront, TcpClient, TcpUpstream, UdpClient };

uint64_t token(Kind k, uint64_t id) { return id << 3 | static_cast<uint64_t>(k); }

struct Chunk {
    Clock::time_point due;
    std::vector<char> bytes;
    size_t off = 0;     // already written (TCP partial writes)
    bool fin = false;   // TCP: the source hit EOF; half-close the destination here
    sockaddr_in to{};   // UDP replies: the client to send to
};

// One direction towards one socket. The hold time is the same for every
// item, so FIFO order is also due-time order.
struct Queue {
    std::deque<Chunk> items;
    bool blocked = false;  // the destination said EAGAIN: wait for EPOLLOUT

    bool head_due(Clock::time_point now) const { return !items.empty() && items.front().due <= now; }
};

struct Interest {
    bool registered = false;
    uint32_t events = 0;
};

struct Side {
    Fd fd;
    Interest interest;
    bool read_eof = false;
    bool shut = false;  // our write half is shut down
};

struct Conn {
    uint64_t id = 0;
    Side client;
    Side upstream;
    bool connecting = false;
    Queue to_upstream;
    Queue to_client;
    std::string upstream_prefix;  // first bytes the server sent, for reset matching
};

struct UdpClient {
    uint64_t id = 0;
    sockaddr_in addr{};
    Fd fd;  // connected to the upstream; its replies belong to `addr`
    Interest interest;
    Queue to_upstream;
};

struct Due {
    Clock::time_point at;
    Kind queue;  // the destination kind names the queue within its owner
    uint64_t id;
    bool operator>(const Due& o) const { return at > o.at; }
};

}  // namespace

struct DelayForwarder::Impl {
    Impl(uint16_t tcp_up, uint16_t udp_up, std::chrono::microseconds hold);
    ~Impl();
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    int reset_where_upstream_sent(const std::string& needle);
    int connections();

    void setup_tcp();
    void setup_udp();
    void setup_loop();
    void run() noexcept;
    void dispatch(const epoll_event& ev);

    bool set_interest(int fd, uint64_t tok, Interest& cur, std::optional<uint32_t> want);
    void update(Conn& c, Kind side);
    void update_udp_client(UdpClient& u);
    void update_front();

    void enqueue(Queue& q, Kind dst, uint64_t id, Chunk ch);
    void flush(Kind dst, uint64_t id);
    void run_due();
    void arm_timer();
    void on_timer();
    void drain_wake();

    Conn* find_conn(uint64_t id);
    void on_accept();
    void start_conn(Fd client);
    void on_tcp_event(Kind side, uint64_t id, uint32_t events);
    void on_tcp_readable(Conn& c, Kind side);
    void on_connected(Conn& c);
    void flush_tcp(uint64_t id, Kind dst);
    void close_conn(Conn& c);
    void abort_conn(Conn& c);
    void forget(Conn& c, bool reset);

    UdpClient* udp_client_for(const sockaddr_in& from);
    void on_front_readable();
    void on_udp_client_readable(uint64_t id);
    void flush_udp_client(uint64_t id);
    void flush_front();

    const Clock::duration hold;
    const uint16_t tcp_up;
    const uint16_t udp_up;
    uint16_t tcp_port = 0;
    uint16_t udp_port = 0;

    Fd epoll;
    Fd wake;
    Fd timer;
    Fd listener;
    Fd front;
    Interest front_interest;
    Queue to_clients;  // UDP replies, all leaving through `front`

    // Guards everything below. The loop holds it while it handles a batch, so
    // a caller never sees a connection half-way through an update.
    std::mutex mu;
    std::atomic<bool> stop{false};
    uint64_t next_id = 1;
    std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;
    std::unordered_map<uint64_t, std::unique_ptr<UdpClient>> udp_clients;
    std::unordered_map<uint64_t, uint64_t> udp_by_addr;
    std::priority_queue<Due, std::vector<Due>, std::greater<>> due;
    std::optional<Clock::time_point> armed;
    std::vector<char> buf = std::vector<char>(kReadSize);
    std::thread thread;
};

DelayForwarder::Impl::Impl(uint16_t tcp_upstream, uint16_t udp_upstream, std::chrono::microseconds one_way)
    : hold(std::max(one_way, std::chrono::microseconds::zero())), tcp_up(tcp_upstream), udp_up(udp_upstream) {
    setup_loop();
    if (tcp_up != 0) setup_tcp();
    if (udp_up != 0) setup_udp();
    thread = std::thread([this] { run(); });
}

DelayForwarder::Impl::~Impl() {
    stop.store(true);
    uint64_t one = 1;
    // Cannot fail short of a bad fd; the loop also rechecks `stop` on any wake-up.
    [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof one);
    thread.join();
}

void DelayForwarder::Impl::setup_loop() {
    epoll = Fd(check(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1"));
    wake = Fd(check(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd"));
    timer = Fd(check(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC), "timerfd_create"));
    Interest w, t;
    if (!set_interest(wake.get(), token(Kind::Wake, 0), w, EPOLLIN)) fail("epoll_ctl");
    if (!set_interest(timer.get(), token(Kind::Timer, 0), t, EPOLLIN)) fail("epoll_ctl");
}

void DelayForwarder::Impl::setup_tcp() {
    listener = Fd(check(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), "socket"));
    set_opt(listener.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    sockaddr_in a = loopback(0);
    check(::bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), "bind");
    check(::listen(listener.get(), SOMAXCONN), "listen");
    tcp_port = local_port(listener.get());
    Interest i;
    if (!set_interest(listener.get(), token(Kind::Listener, 0), i, EPOLLIN)) fail("epoll_ctl");
}

void DelayForwarder::Impl::setup_udp() {
    front = Fd(check(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), "socket"));
    // Bursts arrive faster than one loop iteration drains them; a deep
    // buffer keeps the kernel from dropping what the benchmark must count.
    set_opt(front.get(), SOL_SOCKET, SO_RCVBUF, kSocketBuffer);
    set_opt(front.get(), SOL_SOCKET, SO_SNDBUF, kSocketBuffer);
    sockaddr_in a = loopback(0);
    check(::bind(front.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), "bind");
    udp_port = local_port(front.get());
    if (!set_interest(front.get(), token(Kind::UdpFront, 0), front_interest, EPOLLIN)) fail("epoll_ctl");
}

// ---- loop ----------------------------------------------------------------

void DelayForwarder::Impl::run() noexcept {
    std::array<epoll_event, 64> evs{};
    while (!stop.load()) {
        int n = ::epoll_wait(epoll.get(), evs.data(), static_cast<int>(evs.size()), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // only a broken epoll fd gets here; nothing useful is left to do
        }
        std::lock_guard lock(mu);
        for (int i = 0; i < n; ++i) {
            // An allocation failure costs at most the connection being served.
            try {
                dispatch(evs[static_cast<size_t>(i)]);
            } catch (...) {
            }
        }
        try {
            run_due();
        } catch (...) {
        }
        arm_timer();
    }
}

void DelayForwarder::Impl::dispatch(const epoll_event& ev) {
    auto kind = static_cast<Kind>(ev.data.u64 & 7);
    uint64_t id = ev.data.u64 >> 3;
    switch (kind) {
    case Kind::Wake: drain_wake(); break;
    case Kind::Timer: on_timer(); break;
    case Kind::Listener: on_accept(); break;
    case Kind::UdpFront:
        if (ev.events & EPOLLIN) on_front_readable();
        if (ev.events & EPOLLOUT) flush_front();
        break;
    case Kind::TcpClient:
    case Kind::TcpUpstream: on_tcp_event(kind, id, ev.events); break;
    case Kind::UdpClient:
        if (ev.events & (EPOLLIN | EPOLLERR)) on_udp_client_readable(id);
        if (ev.events & EPOLLOUT) flush_udp_client(id);
        break;
    }
}

void DelayForwarder::Impl::drain_wake() {
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(wake.get(), &v, sizeof v);
}

void DelayForwarder::Impl::on_timer() {
    uint64_t expirations;
    [[maybe_unused]] ssize_t n = ::read(timer.get(), &expirations, sizeof expirations);
    armed.reset();
}

// Returns false only if the kernel refused the registration.
bool DelayForwarder::Impl::set_interest(int fd, uint64_t tok, Interest& cur, std::optional<uint32_t> want) {
    if (!want) {
        if (cur.registered) ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
        cur = Interest{};
        return true;
    }
    if (cur.registered && cur.events == *want) return true;
    epoll_event ev{};
    ev.events = *want;
    ev.data.u64 = tok;
    if (::epoll_ctl(epoll.get(), cur.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) return false;
    cur.registered = true;
    cur.events = *want;
    return true;
}

void DelayForwarder::Impl::enqueue(Queue& q, Kind dst, uint64_t id, Chunk ch) {
    Clock::time_point at = ch.due;
    q.items.push_back(std::move(ch));
    if (hold == Clock::duration::zero()) {
        flush(dst, id);  // no timer round trip when there is nothing to wait for
    } else {
        due.push(Due{at, dst, id});
    }
}

void DelayForwarder::Impl::flush(Kind dst, uint64_t id) {
    switch (dst) {
    case Kind::TcpClient:
    case Kind::TcpUpstream: flush_tcp(id, dst); break;
    case Kind::UdpClient: flush_udp_client(id); break;
    case Kind::UdpFront: flush_front(); break;
    default: break;
    }
}

// Entries may be stale (owner gone, or already written by an earlier flush of
// the same queue); flushing then finds nothing due, which is harmless.
void DelayForwarder::Impl::run_due() {
    Clock::time_point now = Clock::now();
    while (!due.empty() && due.top().at <= now) {
        Due d = due.top();
        due.pop();
        flush(d.queue, d.id);
    }
}

void DelayForwarder::Impl::arm_timer() {
    if (due.empty()) {
        if (armed) {
            itimerspec off{};
            ::timerfd_settime(timer.get(), 0, &off, nullptr);
            armed.reset();
        }
        return;
    }
    Clock::time_point at = due.top().at;
    if (armed && *armed == at) return;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    spec.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    // A zero it_value would disarm; the epoch itself is long past anyway.
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
    if (::timerfd_settime(timer.get(), TFD_TIMER_ABSTIME, &spec, nullptr) == 0) armed = at;
}

// ---- TCP -----------------------------------------------------------------

Conn* DelayForwarder::Impl::find_conn(uint64_t id) {
    auto it = conns.find(id);
    return it == conns.end() ? nullptr : it->second.get();
}

void DelayForwarder::Impl::on_accept() {
    for (int i = 0; i < kBurst; ++i) {
        int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        start_conn(Fd(fd));
    }
}

void DelayForwarder::Impl::start_conn(Fd client) {
    Fd up(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!up) return hard_close(client);
    // The hold time is the only delay a benchmark should see.
    set_opt(client.get(), IPPROTO_TCP, TCP_NODELAY, 1);
    set_opt(up.get(), IPPROTO_TCP, TCP_NODELAY, 1);
    sockaddr_in a = loopback(tcp_up);
    bool connecting = false;
    if (::connect(up.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        if (errno != EINPROGRESS) return hard_close(client);
        connecting = true;
    }
    auto owned = std::make_unique<Conn>();
    Conn& c = *owned;
    c.id = next_id++;
    c.client.fd = std::move(client);
    c.upstream.fd = std::move(up);
    c.connecting = connecting;
    conns.emplace(c.id, std::move(owned));
    if (!set_interest(c.client.fd.get(), token(Kind::TcpClient, c.id), c.client.interest, EPOLLIN) ||
        !set_interest(c.upstream.fd.get(), token(Kind::TcpUpstream, c.id), c.upstream.interest,
                      EPOLLIN | (connecting ? EPOLLOUT : 0u))) {
        abort_conn(c);
    }
}

// Watches for exactly what the side can make progress on. Once a side has
// delivered its EOF and been half-closed itself it is only waiting for its
// partner, and a registered but finished socket would report EPOLLHUP
// forever, so it leaves the epoll set.
void DelayForwarder::Impl::update(Conn& c, Kind side) {
    bool is_up = side == Kind::TcpUpstream;
    Side& s = is_up ? c.upstream : c.client;
    const Queue& incoming = is_up ? c.to_upstream : c.to_client;
    uint32_t ev = 0;
    if (!s.read_eof) ev |= EPOLLIN;
    if ((is_up && c.connecting) || incoming.blocked) ev |= EPOLLOUT;
    std::optional<uint32_t> want;
    if (ev != 0 || !s.shut) want = ev;
    set_interest(s.fd.get(), token(side, c.id), s.interest, want);
}

void DelayForwarder::Impl::on_tcp_event(Kind side, uint64_t id, uint32_t events) {
    Conn* c = find_conn(id);
    if (!c) return;
    if (events & EPOLLERR) return abort_conn(*c);
    bool is_up = side == Kind::TcpUpstream;
    if (is_up && c->connecting) {
        if (events & (EPOLLOUT | EPOLLHUP)) on_connected(*c);
        return;
    }
    Side& s = is_up ? c->upstream : c->client;
    if (events & EPOLLIN) {
        on_tcp_readable(*c, side);
    } else if ((events & EPOLLHUP) && !(s.read_eof && s.shut)) {
        // HUP without anything to read on a side still in use means the
        // connection died under us.
        return abort_conn(*c);
    }
    if (events & EPOLLOUT) flush_tcp(id, side);  // re-looks the connection up
}

void DelayForwarder::Impl::on_connected(Conn& c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(c.upstream.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) return abort_conn(c);
    c.connecting = false;
    update(c, Kind::TcpUpstream);
    flush_tcp(c.id, Kind::TcpUpstream);
}

void DelayForwarder::Impl::on_tcp_readable(Conn& c, Kind side) {
    bool from_up = side == Kind::TcpUpstream;
    Side& s = from_up ? c.upstream : c.client;
    ssize_t n = ::recv(s.fd.get(), buf.data(), buf.size(), 0);
    if (n < 0) {
        if (would_block(errno) || errno == EINTR) return;
        return abort_conn(c);
    }
    Chunk ch;
    ch.due = Clock::now() + hold;
    if (n == 0) {
        s.read_eof = true;
        ch.fin = true;
        update(c, side);
    } else {
        ch.bytes.assign(buf.data(), buf.data() + n);
        if (from_up && c.upstream_prefix.size() < kUpstreamPrefix) {
            size_t take = std::min(kUpstreamPrefix - c.upstream_prefix.size(), static_cast<size_t>(n));
            c.upstream_prefix.append(buf.data(), take);
        }
    }
    Kind dst = from_up ? Kind::TcpClient : Kind::TcpUpstream;
    enqueue(from_up ? c.to_client : c.to_upstream, dst, c.id, std::move(ch));  // may destroy c
}

// Writes everything due towards one side. May destroy the connection.
void DelayForwarder::Impl::flush_tcp(uint64_t id, Kind dst) {
    Conn* c = find_conn(id);
    if (!c) return;
    bool to_up = dst == Kind::TcpUpstream;
    if (to_up && c->connecting) return;  // on_connected flushes
    Side& s = to_up ? c->upstream : c->client;
    Queue& q = to_up ? c->to_upstream : c->to_client;
    Clock::time_point now = Clock::now();
    q.blocked = false;
    while (q.head_due(now)) {
        Chunk& ch = q.items.front();
        if (ch.fin) {
            q.items.pop_front();
            if (::shutdown(s.fd.get(), SHUT_WR) < 0) return abort_conn(*c);
            s.shut = true;
            if (c->client.shut && c->upstream.shut) return close_conn(*c);
            break;  // nothing is ever queued behind a FIN
        }
        ssize_t n = ::send(s.fd.get(), ch.bytes.data() + ch.off, ch.bytes.size() - ch.off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (!would_block(errno)) return abort_conn(*c);
            q.blocked = true;
            break;
        }
        ch.off += static_cast<size_t>(n);
        if (ch.off < ch.bytes.size()) {
            q.blocked = true;  // the socket buffer is full; EPOLLOUT says when it drains
            break;
        }
        q.items.pop_front();
    }
    update(*c, dst);
}

void DelayForwarder::Impl::forget(Conn& c, bool reset) {
    set_interest(c.client.fd.get(), 0, c.client.interest, std::nullopt);
    set_interest(c.upstream.fd.get(), 0, c.upstream.interest, std::nullopt);
    if (reset) {
        hard_close(c.client.fd);
        hard_close(c.upstream.fd);
    }
    conns.erase(c.id);  // destroys c, closing whatever is still open
}

// Both directions delivered their EOF: an orderly end.
void DelayForwarder::Impl::close_conn(Conn& c) { forget(c, false); }

// One side failed: pass the failure on as a reset to the other.
void DelayForwarder::Impl::abort_conn(Conn& c) { forget(c, true); }

// ---- UDP -----------------------------------------------------------------

UdpClient* DelayForwarder::Impl::udp_client_for(const sockaddr_in& from) {
    uint64_t key = addr_key(from);
    if (auto it = udp_by_addr.find(key); it != udp_by_addr.end()) return udp_clients.at(it->second).get();
    Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return nullptr;
    set_opt(fd.get(), SOL_SOCKET, SO_RCVBUF, kSocketBuffer);
    set_opt(fd.get(), SOL_SOCKET, SO_SNDBUF, kSocketBuffer);
    sockaddr_in a = loopback(udp_up);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return nullptr;
    auto u = std::make_unique<UdpClient>();
    u->id = next_id++;
    u->addr = from;
    u->fd = std::move(fd);
    if (!set_interest(u->fd.get(), token(Kind::UdpClient, u->id), u->interest, EPOLLIN)) return nullptr;
    UdpClient* raw = u.get();
    udp_by_addr.emplace(key, u->id);
    udp_clients.emplace(u->id, std::move(u));
    return raw;
}

void DelayForwarder::Impl::update_udp_client(UdpClient& u) {
    uint32_t ev = EPOLLIN | (u.to_upstream.blocked ? EPOLLOUT : 0u);
    set_interest(u.fd.get(), token(Kind::UdpClient, u.id), u.interest, ev);
}

void DelayForwarder::Impl::update_front() {
    uint32_t ev = EPOLLIN | (to_clients.blocked ? EPOLLOUT : 0u);
    set_interest(front.get(), token(Kind::UdpFront, 0), front_interest, ev);
}

void DelayForwarder::Impl::on_front_readable() {
    for (int i = 0; i < kBurst; ++i) {
        sockaddr_in from{};
        socklen_t len = sizeof from;
        ssize_t n = ::recvfrom(front.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (from.sin_family != AF_INET) continue;
        UdpClient* u = udp_client_for(from);
        if (!u) continue;  // out of sockets: this datagram is lost, as on a real path
        Chunk ch;
        ch.due = Clock::now() + hold;
        ch.bytes.assign(buf.data(), buf.data() + n);
        enqueue(u->to_upstream, Kind::UdpClient, u->id, std::move(ch));
    }
}

void DelayForwarder::Impl::on_udp_client_readable(uint64_t id) {
    auto it = udp_clients.find(id);
    if (it == udp_clients.end()) return;
    UdpClient& u = *it->second;
    for (int i = 0; i < kBurst; ++i) {
        ssize_t n = ::recv(u.fd.get(), buf.data(), buf.size(), 0);
        if (n < 0) {
            // An ICMP error from an earlier send (upstream not listening) is
            // reported once here; later datagrams may still arrive.
            if (would_block(errno)) return;
            continue;
        }
        Chunk ch;
        ch.due = Clock::now() + hold;
        ch.bytes.assign(buf.data(), buf.data() + n);
        ch.to = u.addr;
        enqueue(to_clients, Kind::UdpFront, 0, std::move(ch));
    }
}

void DelayForwarder::Impl::flush_udp_client(uint64_t id) {
    auto it = udp_clients.find(id);
    if (it == udp_clients.end()) return;
    UdpClient& u = *it->second;
    Queue& q = u.to_upstream;
    Clock::time_point now = Clock::now();
    q.blocked = false;
    while (q.head_due(now)) {
        const Chunk& ch = q.items.front();
        bool done = send_with_retry([&] { return ::send(u.fd.get(), ch.bytes.data(), ch.bytes.size(), 0); },
                                    q.blocked);
        if (!done) break;
        q.items.pop_front();
    }
    update_udp_client(u);
}

void DelayForwarder::Impl::flush_front() {
    Queue& q = to_clients;
    Clock::time_point now = Clock::now();
    q.blocked = false;
    while (q.head_due(now)) {
        const Chunk& ch = q.items.front();
        bool done = send_with_retry(
            [&] {
                return ::sendto(front.get(), ch.bytes.data(), ch.bytes.size(), 0,
                                reinterpret_cast<const sockaddr*>(&ch.to), sizeof ch.to);
            },
            q.blocked);
        if (!done) break;
        q.items.pop_front();
    }
    update_front();
}

// ---- caller side ---------------------------------------------------------

int DelayForwarder::Impl::reset_where_upstream_sent(const std::string& needle) {
    std::lock_guard lock(mu);
    std::vector<uint64_t> hits;
    for (const auto& [id, c] : conns) {
        if (c->upstream_prefix.find(needle) != std::string::npos) hits.push_back(id);
    }
    // Closing removes the sockets from epoll; an event the loop thread has
    // already fetched for them names an id that no longer exists.
    for (uint64_t id : hits) abort_conn(*conns.at(id));
    return static_cast<int>(hits.size());
}

int DelayForwarder::Impl::connections() {
    std::lock_guard lock(mu);
    return static_cast<int>(conns.size());
}

DelayForwarder::DelayForwarder(uint16_t tcp_upstream_port, uint16_t udp_upstream_port,
                               std::chrono::microseconds one_way)
    : impl_(std::make_unique<Impl>(tcp_upstream_port, udp_upstream_port, one_way)) {}

DelayForwarder::~DelayForwarder() = default;

uint16_t DelayForwarder::tcp_port() const { return impl_->tcp_port; }
uint16_t DelayForwarder::udp_port() const { return impl_->udp_port; }

int DelayForwarder::reset_where_upstream_sent(const std::string& needle) {
    return impl_->reset_where_upstream_sent(needle);
}

int DelayForwarder::connections() const { return impl_->connections(); }

}  // namespace s5bench
