#include "broker_link.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <condition_variable>
#include <memory>
#include <mutex>
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

}  // namespace

AssociateOutcome broker_associate(const s5::wire::Endpoint& dst, const s5::wire::Endpoint* server,
                                  uint32_t timeout_ms) {
    AssociateOutcome out;
    Link& l = link();
    std::lock_guard<TicketLock> g(l.lock);
    std::map<std::string, sdbus::Variant> options;
    if (timeout_ms) options["timeout_ms"] = sdbus::Variant(timeout_ms);
    std::vector<uint8_t> server_ip = server ? server->ip_bytes() : std::vector<uint8_t>{};
    uint16_t server_port = server ? server->port : 0;
    // Two tries: a connection that died with the bus daemon is re-made once.
    for (int attempt = 0; attempt < 2; ++attempt) {
        try {
            l.ensure();
            // The broker answers within the association deadline; allow
            // for the bus on top of it.
            l.conn->setMethodCallTimeout(static_cast<uint64_t>((timeout_ms ? timeout_ms : 10000) + 5000) * 1000u);
            auto [path, fd, relay_ip, relay_port] =
                l.proxy->Associate(dst.ip_bytes(), dst.port, server_ip, server_port, options);
            auto relay = s5::wire::Endpoint::from_bytes(relay_ip, relay_port);
            if (!relay || !fd.isValid()) {
                out.error_name = "org.s5broker.Broker1.Error.ProtocolError";
                out.error_message = "malformed Associate reply from s5brokerd";
                return out;
            }
            out.ok = true;
            out.lease_path = path;
            out.lease_fd.reset(fd.release());
            out.relay = *relay;
            return out;
        } catch (const sdbus::Error& e) {
            out.error_name = e.getName();
            out.error_message = e.getMessage();
            if (attempt == 0 && is_connection_error(e.getName())) {
                l.drop();
                continue;
            }
            if (!l.conn) {
                out.error_name = kNoBusError;  // cannot reach the bus at all
            }
            return out;
        } catch (const std::exception& e) {
            out.error_name = "org.freedesktop.DBus.Error.Failed";
            out.error_message = e.what();
            return out;
        }
    }
    return out;
}

}  // namespace s5::client
