#include "broker_link.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <sdbus-c++/sdbus-c++.h>

#include "broker_proxy.h"

namespace s5::client {
namespace {

constexpr const char* kBusName = "org.s5broker.Broker1";
constexpr const char* kManagerPath = "/org/s5broker/Broker1";

class ManagerProxy final : public sdbus::ProxyInterfaces<org::s5broker::Broker1::Manager_proxy> {
public:
    explicit ManagerProxy(sdbus::IConnection& conn) : ProxyInterfaces(conn, kBusName, kManagerPath) {
        registerProxy();
    }
    ~ManagerProxy() { unregisterProxy(); }
};

// Serves waiting threads in arrival order.
class TicketLock {
public:
    void lock() {
        std::unique_lock<std::mutex> g(m_);
        uint64_t me = next_++;
        cv_.wait(g, [&] { return serving_ == me; });
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

struct Link {
    TicketLock lock;
    pid_t pid = 0;
    std::unique_ptr<sdbus::IConnection> conn;
    std::unique_ptr<ManagerProxy> proxy;

    void drop() {
        proxy.reset();
        conn.reset();
    }

    // In a forked child the parent's connection must not be used or even
    // closed (sd-bus refuses, and its socket is shared with the parent):
    // leak it and open a new one.
    void forget_after_fork() {
        (void)proxy.release();
        (void)conn.release();
    }

    void ensure() {
        if (conn && pid != getpid()) forget_after_fork();
        if (conn) return;
        // DBUS_SYSTEM_BUS_ADDRESS selects a private bus (tests, the demo).
        conn = sdbus::createSystemBusConnection();
        pid = getpid();
        proxy = std::make_unique<ManagerProxy>(*conn);
    }
};

Link& link() {
    // Never destroyed: threads may still call in during exit().
    static Link* l = [] {
        auto* p = new Link;
        // A fork() while another thread holds the lock must not leave the
        // child waiting forever: hold it across fork, release it on both sides.
        pthread_atfork([] { link().lock.lock(); }, [] { link().lock.unlock(); }, [] { link().lock.unlock(); });
        return p;
    }();
    return *l;
}

bool is_connection_error(const std::string& name) {
    return name == "org.freedesktop.DBus.Error.Disconnected" || name == "org.freedesktop.DBus.Error.NoServer" ||
           name == "org.freedesktop.DBus.Error.NotConnected" || name == "System.Error.ENOTCONN" ||
           name == "System.Error.ECONNRESET" || name == "System.Error.EPIPE" || name == "System.Error.ECHILD";
}

// What a failed call reports: the D-Bus error name and message.
struct CallError {
    std::string name;
    std::string message;
};

// Runs `call` on the process-wide proxy: in arrival order with the other
// threads, on a connection this process made (a forked child makes its
// own), made again once if it died with the bus daemon. `timeout_us` bounds
// the call. nullopt on success.
std::optional<CallError> call_broker(uint64_t timeout_us, const std::function<void(ManagerProxy&)>& call) {
    Link& l = link();
    std::lock_guard<TicketLock> g(l.lock);
    CallError err;
    for (int attempt = 0; attempt < 2; ++attempt) {
        try {
            l.ensure();
            l.conn->setMethodCallTimeout(timeout_us);
            call(*l.proxy);
            return std::nullopt;
        } catch (const sdbus::Error& e) {
            err = {e.getName(), e.getMessage()};
            if (attempt == 0 && is_connection_error(e.getName())) {
                l.drop();
                continue;
            }
            if (!l.conn) err.name = kNoBusError;  // cannot reach the bus at all
            return err;
        } catch (const std::exception& e) {
            return CallError{"org.freedesktop.DBus.Error.Failed", e.what()};
        }
    }
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
                                  uint32_t timeout_ms, bool nonblocking) {
    std::map<std::string, sdbus::Variant> options;
    if (timeout_ms) options["timeout_ms"] = sdbus::Variant(timeout_ms);
    if (nonblocking) options["nonblocking"] = sdbus::Variant(true);
    const std::vector<uint8_t> server_ip = server ? server->ip_bytes() : std::vector<uint8_t>{};
    const uint16_t server_port = server ? server->port : 0;
    // The broker answers within the association deadline; allow for the bus
    // on top of it.
    const uint64_t timeout_us = static_cast<uint64_t>((timeout_ms ? timeout_ms : 10000) + 5000) * 1000u;

    std::tuple<sdbus::ObjectPath, sdbus::UnixFd, std::vector<uint8_t>, uint16_t> reply;
    if (auto err = call_broker(timeout_us, [&](ManagerProxy& p) {
            reply = p.Associate(dst.ip_bytes(), dst.port, server_ip, server_port, options);
        }))
        return failed<AssociateOutcome>(std::move(err->name), std::move(err->message));

    auto& [path, fd, relay_ip, relay_port] = reply;
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
    out.lease_path = path;
    out.lease_fd.reset(fd.release());
    return out;
}

GetServerOutcome broker_get_server(const s5::wire::Endpoint& dst) {
    std::tuple<std::string, std::vector<uint8_t>, uint16_t> reply;
    if (auto err = call_broker(10'000'000, [&](ManagerProxy& p) { reply = p.GetServer(dst.ip_bytes(), dst.port); }))
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
