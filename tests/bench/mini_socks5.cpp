#include "mini_socks5.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>
#include "unique_fd.hpp"

namespace s5bench {
namespace {

constexpr uint8_t kVersion = 5;
constexpr uint8_t kMethodNoAuth = 0x00;
constexpr uint8_t kCmdUdpAssociate = 3;
constexpr uint8_t kAtypIpv4 = 1;
constexpr uint8_t kAtypDomain = 3;
constexpr uint8_t kAtypIpv6 = 4;

constexpr std::array<uint8_t, 2> kAcceptNoAuth = {kVersion, kMethodNoAuth};
constexpr std::array<uint8_t, 2> kRejectMethods = {kVersion, 0xFF};
// REP=7 (command not supported), BND = 0.0.0.0:0.
constexpr std::array<uint8_t, 10> kRejectCommand = {kVersion, 7, 0, kAtypIpv4, 0, 0, 0, 0, 0, 0};

constexpr int kBacklog = 4096;
constexpr int kMaxEvents = 256;
// Level-triggered, so a client streaming junk after its reply is read in
// bounded slices and cannot starve the other connections.
constexpr int kReadsPerWakeup = 16;

[[noreturn]] void fail(const std::string& call) {
    throw std::runtime_error(call + ": " + std::strerror(errno));
}

// The project's one owner of a descriptor.
using Fd = s5::UniqueFd;

Fd checked(int fd, const char* call) {
    if (fd < 0) fail(call);
    return Fd(fd);
}

// Soft RLIM_INFINITY is refused by the kernel; fs.nr_open is the real ceiling.
rlim_t nofile_ceiling(rlim_t hard) {
    if (hard != RLIM_INFINITY) return hard;
    rlim_t nr_open = 0;
    std::ifstream("/proc/sys/fs/nr_open") >> nr_open;
    return nr_open > 0 ? nr_open : hard;
}

void raise_nofile_limit() {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) fail("getrlimit(RLIMIT_NOFILE)");
    const rlim_t target = nofile_ceiling(lim.rlim_max);
    if (lim.rlim_cur >= target) return;
    lim.rlim_cur = target;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) fail("setrlimit(RLIMIT_NOFILE)");
}

enum class Status { NeedMore, Done, Bad };

struct Parsed {
    Status status;
    size_t size = 0;  // bytes the message occupies when Done
};

using Bytes = std::span<const uint8_t>;

Parsed parse_greeting(Bytes in) {
    if (!in.empty() && in[0] != kVersion) return {Status::Bad};
    if (in.size() < 2) return {Status::NeedMore};
    const size_t size = 2 + size_t{in[1]};
    if (in.size() < size) return {Status::NeedMore};
    return {Status::Done, size};
}

bool offers_no_auth(Bytes greeting) {
    const auto methods = greeting.subspan(2);
    return std::find(methods.begin(), methods.end(), kMethodNoAuth) != methods.end();
}

// Length of ATYP + DST.ADDR, or 0 when it cannot be known (yet, or at all).
size_t address_size(Bytes in, Status& status) {
    switch (in[3]) {
    case kAtypIpv4: return 1 + 4;
    case kAtypIpv6: return 1 + 16;
    case kAtypDomain:
        if (in.size() < 5) return 0;
        if (in[4] == 0) status = Status::Bad;
        return 1 + 1 + size_t{in[4]};
    default: status = Status::Bad; return 0;
    }
}

Parsed parse_request(Bytes in) {
    if (!in.empty() && in[0] != kVersion) return {Status::Bad};
    if (in.size() >= 3 && in[2] != 0) return {Status::Bad};
    if (in.size() < 4) return {Status::NeedMore};
    Status status = Status::NeedMore;
    const size_t addr = address_size(in, status);
    if (status == Status::Bad) return {Status::Bad};
    if (addr == 0) return {Status::NeedMore};
    const size_t size = 3 + addr + 2;
    if (in.size() < size) return {Status::NeedMore};
    return {Status::Done, size};
}

enum class Stage {
    Greeting,
    Request,
    Associated,  // reply queued; the connection now only holds the association
    Closing,     // refusal queued; close once it is written
};

struct Conn {
    Fd fd;
    Stage stage = Stage::Greeting;
    std::vector<uint8_t> in;
    std::vector<uint8_t> out;
    bool watching_output = false;
};

void append(std::vector<uint8_t>& out, Bytes bytes) { out.insert(out.end(), bytes.begin(), bytes.end()); }

void consume(std::vector<uint8_t>& in, size_t n) { in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n)); }

}  // namespace

struct MiniSocks5::Impl {
    explicit Impl(uint16_t relay_port);
    ~Impl();

    void run() noexcept;
    void run_loop();
    void accept_all();
    void accept_one(int fd);
    bool shed_one_pending();
    void on_connection_event(int fd, uint32_t events);
    bool serve(Conn& c, uint32_t events);
    bool drain_input(Conn& c);
    bool advance(Conn& c);
    bool take_greeting(Conn& c);
    bool take_request(Conn& c);
    bool flush(Conn& c);
    bool watch_output(Conn& c, bool on);
    void add_to_epoll(int fd, uint32_t events, const char* what);

    std::array<uint8_t, 10> associate_reply{};
    Fd listener;
    Fd epoll;
    Fd wake;
    // Held in reserve so that, out of descriptors, pending clients can still
    // be accepted and closed instead of spinning on a listener that stays
    // readable.
    Fd spare;
    uint16_t port = 0;
    std::atomic<int> open{0};
    std::atomic<uint64_t> associations{0};
    std::unordered_map<int, Conn> conns;
    std::thread thread;  // last: starts only once everything above exists
};

MiniSocks5::Impl::Impl(uint16_t relay_port) {
    raise_nofile_limit();
    associate_reply = {kVersion, 0, 0, kAtypIpv4, 127, 0, 0, 1, static_cast<uint8_t>(relay_port >> 8),
                       static_cast<uint8_t>(relay_port & 0xFF)};

    listener = checked(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), "socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("bind(127.0.0.1:0)");
    if (::listen(listener.get(), kBacklog) != 0) fail("listen");
    socklen_t len = sizeof addr;
    if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) fail("getsockname");
    port = ntohs(addr.sin_port);

    epoll = checked(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
    wake = checked(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
    spare = checked(::open("/dev/null", O_RDONLY | O_CLOEXEC), "open(/dev/null)");
    add_to_epoll(listener.get(), EPOLLIN, "epoll_ctl(listener)");
    add_to_epoll(wake.get(), EPOLLIN, "epoll_ctl(eventfd)");

    thread = std::thread([this] { run(); });
}

MiniSocks5::Impl::~Impl() {
    if (!thread.joinable()) return;
    const uint64_t one = 1;
    // Cannot fail short of a bug: the eventfd counter is far from overflow.
    if (::write(wake.get(), &one, sizeof one) != static_cast<ssize_t>(sizeof one)) std::perror("mini_socks5: eventfd write");
    thread.join();
}

void MiniSocks5::Impl::add_to_epoll(int fd, uint32_t events, const char* what) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) fail(what);
}

void MiniSocks5::Impl::run() noexcept {
    try {
        run_loop();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mini_socks5: event loop stopped: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "mini_socks5: event loop stopped: unknown exception\n");
    }
}

void MiniSocks5::Impl::run_loop() {
    std::array<epoll_event, kMaxEvents> events;
    for (;;) {
        const int n = ::epoll_wait(epoll.get(), events.data(), kMaxEvents, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            const int fd = events[static_cast<size_t>(i)].data.fd;
            if (fd == wake.get()) return;
            if (fd == listener.get())
                accept_all();
            else
                on_connection_event(fd, events[static_cast<size_t>(i)].events);
        }
    }
}

void MiniSocks5::Impl::accept_all() {
    for (;;) {
        const int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accept_one(fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        // accept4() reserves the descriptor before looking at the queue, so
        // EMFILE does not mean anyone is waiting: stop once nobody was shed.
        if ((errno == EMFILE || errno == ENFILE) && spare && shed_one_pending()) continue;
        // EAGAIN, or a failure retrying would not cure right now; the
        // listener stays readable, so anything left is retried next wakeup.
        return;
    }
}

// Out of descriptors: refuse one waiting client (it sees EOF) rather than
// leave it hanging in the queue. Returns whether there was one.
bool MiniSocks5::Impl::shed_one_pending() {
    spare.reset();
    const int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) ::close(fd);
    spare.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return fd >= 0;
}

void MiniSocks5::Impl::accept_one(int fd) {
    Fd owned(fd);
    const int one = 1;
    // Best effort: Nagle would only delay the two tiny replies.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    try {
        const auto it = conns.try_emplace(fd).first;
        it->second.fd = std::move(owned);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
            conns.erase(it);
            return;
        }
    } catch (const std::bad_alloc&) {
        return;  // dropping one client beats stopping the server for all
    }
    ++open;
}

void MiniSocks5::Impl::on_connection_event(int fd, uint32_t events) {
    const auto it = conns.find(fd);
    if (it == conns.end()) return;
    bool keep = false;
    try {
        keep = serve(it->second, events);
    } catch (const std::bad_alloc&) {
        keep = false;  // lose this client, not the server
    }
    if (keep) return;
    conns.erase(it);
    --open;
}

// Returns false once the connection should be closed.
bool MiniSocks5::Impl::serve(Conn& c, uint32_t events) {
    // EPOLLHUP/EPOLLERR surface as EOF or an error from recv().
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !drain_input(c)) return false;
    if (events & EPOLLOUT) return flush(c);
    return true;
}

bool MiniSocks5::Impl::drain_input(Conn& c) {
    std::array<uint8_t, 4096> buf;
    for (int i = 0; i < kReadsPerWakeup; ++i) {
        const ssize_t n = ::recv(c.fd.get(), buf.data(), buf.size(), 0);
        if (n == 0) return false;
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        // Once answered, anything the client sends is irrelevant.
        if (c.stage != Stage::Greeting && c.stage != Stage::Request) continue;
        append(c.in, Bytes(buf.data(), static_cast<size_t>(n)));
        // Flush even when the input turned out malformed, so the client sees
        // the same replies however its bytes were split before the close.
        const bool well_formed = advance(c);
        if (!flush(c) || !well_formed) return false;
    }
    return true;
}

// Parses as far as the buffered input allows: a client may pipeline the
// greeting and the request in one segment, or dribble either across reads.
bool MiniSocks5::Impl::advance(Conn& c) {
    if (c.stage == Stage::Greeting && !take_greeting(c)) return false;
    if (c.stage == Stage::Request && !take_request(c)) return false;
    return true;
}

bool MiniSocks5::Impl::take_greeting(Conn& c) {
    const Parsed p = parse_greeting(c.in);
    if (p.status == Status::Bad) return false;
    if (p.status == Status::NeedMore) return true;
    if (offers_no_auth(Bytes(c.in).first(p.size))) {
        append(c.out, kAcceptNoAuth);
        consume(c.in, p.size);
        c.stage = Stage::Request;
    } else {
        append(c.out, kRejectMethods);
        c.in.clear();
        c.stage = Stage::Closing;
    }
    return true;
}

bool MiniSocks5::Impl::take_request(Conn& c) {
    const Parsed p = parse_request(c.in);
    if (p.status == Status::Bad) return false;
    if (p.status == Status::NeedMore) return true;
    if (c.in[1] == kCmdUdpAssociate) {
        // Counted before the write so a client that has its reply is counted.
        ++associations;
        append(c.out, associate_reply);
        c.stage = Stage::Associated;
    } else {
        append(c.out, kRejectCommand);
        c.stage = Stage::Closing;
    }
    c.in.clear();
    c.in.shrink_to_fit();  // tens of thousands of idle connections
    return true;
}

// Returns false once the connection should be closed.
bool MiniSocks5::Impl::flush(Conn& c) {
    size_t sent = 0;
    while (sent < c.out.size()) {
        const ssize_t n = ::send(c.fd.get(), c.out.data() + sent, c.out.size() - sent, MSG_NOSIGNAL);
        if (n >= 0) {
            sent += static_cast<size_t>(n);
            continue;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
        consume(c.out, sent);
        return watch_output(c, true);
    }
    c.out.clear();
    if (!watch_output(c, false)) return false;
    return c.stage != Stage::Closing;
}

bool MiniSocks5::Impl::watch_output(Conn& c, bool on) {
    if (c.watching_output == on) return true;
    epoll_event ev{};
    ev.events = on ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
    ev.data.fd = c.fd.get();
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) return false;
    c.watching_output = on;
    return true;
}

MiniSocks5::MiniSocks5(uint16_t relay_port) : impl_(std::make_unique<Impl>(relay_port)) {}

MiniSocks5::~MiniSocks5() = default;

uint16_t MiniSocks5::port() const { return impl_->port; }

int MiniSocks5::open_connections() const { return impl_->open.load(); }

uint64_t MiniSocks5::associations() const { return impl_->associations.load(); }

}  // namespace s5bench
