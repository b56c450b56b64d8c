#include "broker_link.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "broker_channel.hpp"
#include "manager_proxy.hpp"
#include "errors.hpp"

namespace s5::client {
namespace {

using s5::bus::ManagerProxy;

// Serves waiting threads in arrival order. Its mutex is held only inside
// these functions, never while a caller owns the lock.
class TicketLock {
public:
    void lock() {
        std::unique_lock<std::mutex> g(m_);
        uint64_t me = next_++;
        cv_.wait(g, [&] { return serving_ == me; });
    }
    // Takes the lock only if nobody holds it and nobody is waiting for it,
    // so that it never jumps the queue.
    bool try_lock() {
        std::lock_guard<std::mutex> g(m_);
        if (next_ != serving_) return false;
        ++next_;
        return true;
    }
    void unlock() {
        std::lock_guard<std::mutex> g(m_);
        ++serving_;
        cv_.notify_all();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    uint64_t next_ = 0, serving_ = 0;
};

// A bus connection with the broker's Manager proxy on it, made when first
// needed.
struct Channel {
    std::unique_ptr<sdbus::IConnection> conn;
    std::unique_ptr<ManagerProxy> proxy;

    void drop() {
        proxy.reset();
        conn.reset();
    }

    void ensure() {
        if (conn && proxy) return;
        drop();
        // DBUS_SYSTEM_BUS_ADDRESS selects a private bus (tests, the demo).
        auto c = sdbus::createSystemBusConnection();
        auto p = std::make_unique<ManagerProxy>(*c);
        conn = std::move(c);
        proxy = std::move(p);
    }
};

// This process's connections to the broker. A forked child leaves its
// parent's Link alone (see on_fork_child) and makes a fresh one.
struct Link {
    TicketLock lock;            // turns on `shared`, in arrival order
    Channel shared;             // the process's connection; used under `lock`
    // Private connections of non-blocking calls, idle, for the next one.
    // The mutex is held only to take or put one, never during a call.
    std::mutex spares_m;
    std::vector<std::unique_ptr<Channel>> spares;
    static constexpr size_t kMaxSpares = 2;
    Link* abandoned_next = nullptr;  // in a forked child: the list of inherited Links

    std::unique_ptr<Channel> take_spare() {
        {
            std::lock_guard<std::mutex> g(spares_m);
            if (!spares.empty()) {
                auto ch = std::move(spares.back());
                spares.pop_back();
                return ch;
            }
        }
        return std::make_unique<Channel>();
    }

    void put_spare(std::unique_ptr<Channel> ch) {
        if (!ch->conn) return;  // dead or never made: nothing worth keeping
        {
            std::lock_guard<std::mutex> g(spares_m);
            if (spares.size() < kMaxSpares) {
                spares.push_back(std::move(ch));
                return;
            }
        }
        // Enough kept: closed here, outside the mutex.
    }
};

// The current process's Link; null until first use and again in a child
// right after fork().
std::atomic<Link*> g_link{nullptr};
// Links inherited across fork(): never used, closed or destroyed (their
// sockets belong to the parent too, and their locks may have been held by
// threads that do not exist in the child), only kept reachable. Touched
// only by on_fork_child, which runs in a child that has a single thread.
Link* g_abandoned = nullptr;

// pthread_atfork child handler: no lock, no allocation, no call, so fork()
// never waits for a call that another thread has in flight (the parent's
// Link keeps serving it in the parent).
void on_fork_child() {
    if (Link* old = g_link.exchange(nullptr, std::memory_order_relaxed)) {
        old->abandoned_next = g_abandoned;
        g_abandoned = old;
    }
}

Link& link() {
    static const bool registered = [] {
        pthread_atfork(nullptr, nullptr, on_fork_child);
        return true;
    }();
    (void)registered;
    Link* l = g_link.load(std::memory_order_acquire);
    if (l) return *l;
    // Never destroyed: threads may still call in during exit().
    auto* fresh = new Link;
    if (g_link.compare_exchange_strong(l, fresh, std::memory_order_acq_rel, std::memory_order_acquire))
        return *fresh;
    delete fresh;  // another thread made it first
    return *l;
}

// What a failed call reports: the D-Bus error name and message.
struct CallError {
    std::string name;
    std::string message;
};

using Call = std::function<void(ManagerProxy&)>;

// Runs `call` on `ch`, bounded by `timeout_us`, making the connection if
// needed and once more if it died (with the bus daemon). nullopt on success.
std::optional<CallError> run_on(Channel& ch, uint64_t timeout_us, const Call& call) {
    CallError err;
    for (int attempt = 0; attempt < 2; ++attempt) {
        const auto t0 = std::chrono::steady_clock::now();
        try {
            ch.ensure();
            ch.conn->setMethodCallTimeout(timeout_us);
            call(*ch.proxy);
            return std::nullopt;
        } catch (const sdbus::Error& e) {
            err = {e.getName(), e.getMessage()};
            if (attempt == 0 && s5::err::classify_dbus_error(e.getName()) == s5::err::BusFailure::ConnectionLost) {
                ch.drop();
                continue;
            }
            // NoReply long before our own time-out: the broker left the bus
            // with the call in hand (it was restarted; docs/design.md §12).
            // Asked once more, the next broker answers (the bus daemon holds
            // the call until it owns the name). A reply the old broker never
            // sent carried the only copy of the lease fd, so no lease is
            // made twice.
            const auto waited = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - t0);
            if (attempt == 0 && e.getName() == "org.freedesktop.DBus.Error.NoReply" &&
                static_cast<uint64_t>(waited.count()) < timeout_us / 2)
                continue;
            if (!ch.conn) err.name = s5::err::kNoBusError;  // cannot reach the bus at all
            return err;
        } catch (const std::exception& e) {
            return CallError{"org.freedesktop.DBus.Error.Failed", e.what()};
        }
    }
    return err;
}

// Runs `call` on this process's connection, in arrival order with the other
// threads. With `may_wait` false (a non-blocking request) it never waits
// for them: when the connection is taken or has threads waiting, the call
// runs on a private connection. nullopt on success.
std::optional<CallError> call_broker(uint64_t timeout_us, bool may_wait, const Call& call) {
    Link& l = link();
    if (may_wait) {
        std::lock_guard<TicketLock> g(l.lock);
        return run_on(l.shared, timeout_us, call);
    }
    if (l.lock.try_lock()) {
        std::lock_guard<TicketLock> g(l.lock, std::adopt_lock);
        return run_on(l.shared, timeout_us, call);
    }
    std::unique_ptr<Channel> ch = l.take_spare();
    auto err = run_on(*ch, timeout_us, call);
    l.put_spare(std::move(ch));
    return err;
}

template <typename Outcome>
Outcome failed(std::string name, std::string message) {
    Outcome out;
    out.error_name = std::move(name);
    out.error_message = std::move(message);
    return out;
}

constexpr const char* kProtocolError = "org.s5broker.Broker1.Error.ProtocolError";

}  // namespace

AssociateOutcome broker_associate(const s5::wire::Endpoint& dst, const s5::wire::Endpoint* server,
                                  uint32_t timeout_ms, bool nonblocking, size_t rendezvous_len) {
    {
        s5::channel::Request req;
        req.dst = dst;
        if (server) req.server = *server;
        req.timeout_ms = timeout_ms;
        req.rendezvous_len = rendezvous_len < UINT32_MAX ? static_cast<uint32_t>(rendezvous_len) : UINT32_MAX;
        req.nonblocking = nonblocking;
        auto open = [nonblocking] {
            sdbus::UnixFd fd;
            if (call_broker(10'000'000, !nonblocking, [&](ManagerProxy& p) { fd = p.OpenChannel(); })) return s5::UniqueFd();
            return s5::UniqueFd(fd.release());
        };
        if (auto out = channel_associate(req, !nonblocking, open)) return std::move(*out);
    }

    std::map<std::string, sdbus::Variant> options;
    if (timeout_ms) options["timeout_ms"] = sdbus::Variant(timeout_ms);
    if (nonblocking) options["nonblocking"] = sdbus::Variant(true);
    // Only when an IPv6 relay would not fit: every other call stays as small.
    if (rendezvous_len < sizeof(sockaddr_in6))
        options["rendezvous_len"] = sdbus::Variant(static_cast<uint32_t>(rendezvous_len));
    const std::vector<uint8_t> server_ip = server ? server->ip_bytes() : std::vector<uint8_t>{};
    const uint16_t server_port = server ? server->port : 0;
    // The broker answers within the association deadline; allow for the bus
    // on top of it.
    const uint64_t timeout_us = static_cast<uint64_t>((timeout_ms ? timeout_ms : 10000) + 5000) * 1000u;

    std::tuple<sdbus::ObjectPath, sdbus::UnixFd, std::vector<uint8_t>, uint16_t> reply;
    if (auto err = call_broker(timeout_us, !nonblocking, [&](ManagerProxy& p) {
            reply = p.Associate(dst.ip_bytes(), dst.port, server_ip, server_port, options);
        }))
        return failed<AssociateOutcome>(std::move(err->name), std::move(err->message));

    auto& [path, fd, relay_ip, relay_port] = reply;
    (void)path;   // the lease is its fd
    AssociateOutcome out;
    if (!fd.isValid()) return failed<AssociateOutcome>(kProtocolError, "Associate reply without a lease fd");
    if (nonblocking && relay_ip.empty() && relay_port == 0) {
        out.pending = true;  // Ready or Lost will come on the lease fd
    } else {
        auto relay = s5::wire::Endpoint::from_bytes(relay_ip, relay_port);
        if (!relay) return failed<AssociateOutcome>(kProtocolError, "malformed Associate reply from s5brokerd");
        out.relay = *relay;
    }
    out.ok = true;
    out.lease_fd.reset(fd.release());
    return out;
}

GetServerOutcome broker_get_server(const s5::wire::Endpoint& dst) {
    std::tuple<std::string, std::vector<uint8_t>, uint16_t> reply;
    if (auto err = call_broker(10'000'000, true, [&](ManagerProxy& p) { reply = p.GetServer(dst.ip_bytes(), dst.port); }))
        return failed<GetServerOutcome>(std::move(err->name), std::move(err->message));
    auto& [name, ip, port] = reply;
    auto server = s5::wire::Endpoint::from_bytes(ip, port);
    if (!server) return failed<GetServerOutcome>(kProtocolError, "malformed GetServer reply from s5brokerd");
    GetServerOutcome out;
    out.ok = true;
    out.name = name;
    out.server = *server;
    return out;
}

}  // namespace s5::client
