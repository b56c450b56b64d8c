#include "bus.hpp"

#include <fcntl.h>
#include <grp.h>
#include <unistd.h>
#include <sdbus-c++/sdbus-c++.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "broker_adaptor.h"
#include "fd_reserve.hpp"
#include "log.hpp"
#include "s5broker_version.h"

namespace s5d {

using s5::err::Code;

namespace {

constexpr const char* kManagerPath = "/org/s5broker/Broker1";
constexpr const char* kManagerIface = "org.s5broker.Broker1.Manager";
constexpr const char* kLeaseIface = "org.s5broker.Broker1.Lease";
constexpr uint32_t kMaxTimeoutMs = 120000;

sdbus::Error bus_error(Code c, const std::string& message) { return sdbus::Error(s5::err::full_name(c), message); }

sdbus::Error invalid_args(const std::string& message) { return bus_error(Code::InvalidArgs, message); }

// Replies to a deferred call with an error; a reply that cannot be sent
// (the caller left, the bus is gone) is logged and dropped.
template <typename Result>
void reply_error(const Result& res, Code code, const std::string& message) {
    try {
        res.returnError(bus_error(code, message));
    } catch (...) {
        log_warning("cannot send an error reply: %s", message.c_str());
    }
}

// Runs a synchronous handler body; anything that is not already an
// sdbus::Error becomes a ServerFailure reply instead of unwinding into C.
template <typename F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const sdbus::Error&) {
        throw;
    } catch (const std::exception& e) {
        log_error("%s: %s", what, e.what());
        throw bus_error(Code::ServerFailure, std::string(what) + ": internal error");
    } catch (...) {
        log_error("%s: unknown exception", what);
        throw bus_error(Code::ServerFailure, std::string(what) + ": internal error");
    }
}

s5::wire::Endpoint endpoint_arg(const std::vector<uint8_t>& ip, uint16_t port, const char* name) {
    auto ep = s5::wire::Endpoint::from_bytes(ip, port);
    if (!ep)
        throw invalid_args(std::string(name) + " must be 4 (IPv4) or 16 (IPv6) bytes, got " +
                           std::to_string(ip.size()));
    return *ep;
}

sdbus::Struct<std::vector<uint8_t>, uint16_t> relay_struct(const s5::wire::Endpoint& ep) {
    return sdbus::Struct<std::vector<uint8_t>, uint16_t>(ep.ip_bytes(), ep.port);
}

}  // namespace

std::string server_path(const std::string& name) { return std::string(kManagerPath) + "/server/" + name; }

// ---- Manager object --------------------------------------------------------

class ManagerObject final
    : public sdbus::AdaptorInterfaces<org::s5broker::Broker1::Manager_adaptor, sdbus::Properties_adaptor> {
public:
    ManagerObject(sdbus::IConnection& conn, Bus& bus) : AdaptorInterfaces(conn, kManagerPath), bus_(bus) {
        registerAdaptor();
    }
    ~ManagerObject() { unregisterAdaptor(); }

    void lease_count_changed() { emitPropertiesChangedSignal(kManagerIface, {"LeaseCount", "Leases"}); }

private:
    using AssociateResultT = sdbus::Result<sdbus::ObjectPath, sdbus::UnixFd, std::vector<uint8_t>, uint16_t>;

    struct Caller {
        std::string sender;
        uid_t uid;
        bool allowed;       // root or a member of allowed_groups
    };

    Caller caller() {
        const sdbus::Message* msg = getObject().getCurrentlyProcessedMessage();
        if (!msg) throw bus_error(Code::ServerFailure, "no message being processed");
        auto info = bus_.caller_info(*msg);
        return {msg->getSender(), info.uid, info.allowed};
    }

    // The bus policy is the first door; this is the second (design.md §5).
    static void require_allowed(const Caller& c) {
        if (!c.allowed)
            throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied",
                               "uid " + std::to_string(c.uid) + " is neither root nor in allowed_groups");
    }

    void Associate(AssociateResultT&& result, std::vector<uint8_t> dst_address, uint16_t dst_port,
                   std::vector<uint8_t> server_address, uint16_t server_port,
                   std::map<std::string, sdbus::Variant> options) override {
        // Shared: std::function needs a copyable callable; Result is move-only.
        auto res = std::make_shared<AssociateResultT>(std::move(result));
        try {
            Caller c = caller();
            require_allowed(c);
            AssociateRequest req = parse_request(dst_address, dst_port, server_address, server_port, options);
            req.uid = c.uid;
            req.owner = c.sender;
            bus_.manager().associate(std::move(req), [res](AssociateResult&& r) {
                if (auto* g = std::get_if<Grant>(&r)) {
                    // Our own duplicate for the message, so that running out
                    // of descriptors is an errno here, not an exception from
                    // inside sdbus-c++. The lease's copy closes with `g`, so
                    // the application holds the only one.
                    int fd = outside_reserve(fcntl(g->lease_fd.get(), F_DUPFD_CLOEXEC, 3));
                    if (fd < 0) {
                        int e = errno;
                        log_warning("cannot pass a lease fd: %s", strerror(e));
                        reply_error(*res, out_of_descriptors(e) ? Code::QuotaExceeded : Code::ServerFailure,
                                    std::string("cannot pass the lease to the caller: ") + strerror(e));
                        return;
                    }
                    try {
                        res->returnResults(sdbus::ObjectPath(g->lease_path), sdbus::UnixFd(fd, sdbus::adopt_fd),
                                           g->relay.ip_bytes(), g->relay.port);
                    } catch (...) {
                        // Not bound: the exception comes from libsdbus-c++
                        // and may be all we can say (sd-bus dups the fd once
                        // more, which fails the same way when fds run out).
                        log_warning("cannot send an Associate reply (out of file descriptors?)");
                        reply_error(*res, Code::ServerFailure, "cannot pass the lease to the caller");
                    }
                } else {
                    const auto& f = std::get<Failure>(r);
                    reply_error(*res, f.code, f.message);
                }
            });
        } catch (const sdbus::Error& e) {
            res->returnError(e);
        } catch (const std::exception& e) {
            log_error("Associate: %s", e.what());
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        } catch (...) {
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        }
    }

    static AssociateRequest parse_request(const std::vector<uint8_t>& dst_address, uint16_t dst_port,
                                          const std::vector<uint8_t>& server_address, uint16_t server_port,
                                          const std::map<std::string, sdbus::Variant>& options) {
        AssociateRequest req;
        req.dst = endpoint_arg(dst_address, dst_port, "dst_address");
        if (!server_address.empty()) {
            req.server = endpoint_arg(server_address, server_port, "server_address");
            if (server_port == 0) throw invalid_args("server_port must be 1..65535");
        } else if (server_port != 0) {
            throw invalid_args("server_port given without server_address");
        }
        for (const auto& [key, value] : options) {
            if (key == "timeout_ms") {
                if (value.peekValueType() != "u") throw invalid_args("option timeout_ms must be of type u");
                uint32_t ms = value.get<uint32_t>();
                if (ms == 0 || ms > kMaxTimeoutMs)
                    throw invalid_args("option timeout_ms must be 1.." + std::to_string(kMaxTimeoutMs));
                req.timeout = std::chrono::milliseconds(ms);
            } else if (key == "nonblocking") {
                if (value.peekValueType() != "b") throw invalid_args("option nonblocking must be of type b");
                req.nonblocking = value.get<bool>();
            } else {
                throw invalid_args("unknown option \"" + key + "\"");
            }
        }
        return req;
    }

    void Release(const sdbus::ObjectPath& lease) override {
        guarded("Release", [&] {
            Caller c = caller();
            switch (bus_.manager().release(lease, c.uid)) {
                case Manager::ReleaseResult::Released: return;
                case Manager::ReleaseResult::NotFound:
                    throw sdbus::Error("org.freedesktop.DBus.Error.UnknownObject", "no lease " + lease);
                case Manager::ReleaseResult::NotOwner:
                    throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied",
                                       "lease " + lease + " belongs to another user");
            }
        });
    }

    std::tuple<std::string, std::vector<uint8_t>, uint16_t> GetServer(const std::vector<uint8_t>& dst_address,
                                                                      const uint16_t& dst_port) override {
        return guarded("GetServer", [&] {
            auto sel = bus_.manager().select_server(endpoint_arg(dst_address, dst_port, "dst_address"));
            if (auto* f = std::get_if<Failure>(&sel)) throw bus_error(f->code, f->message);
            const auto* s = std::get<const s5::config::Server*>(sel);
            return std::make_tuple(s->name, s->endpoint.ip_bytes(), s->endpoint.port);
        });
    }

    void Reload(sdbus::Result<>&& result) override {
        auto res = std::make_shared<sdbus::Result<>>(std::move(result));
        try {
            Caller c = caller();
            // The unit's ExecReload= (s5brokerctl reload) runs as the
            // service's own user.
            if (c.uid != 0 && c.uid != geteuid())
                throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied",
                                   "only root and the service user may reload the configuration");
            bus_.reload([res](const std::optional<std::string>& err) {
                if (err) {
                    reply_error(*res, Code::InvalidArgs, "configuration not applied: " + *err);
                    return;
                }
                try {
                    res->returnResults();
                } catch (...) {
                    log_warning("cannot send a Reload reply");
                }
            });
        } catch (const sdbus::Error& e) {
            res->returnError(e);
        } catch (const std::exception& e) {
            log_error("Reload: %s", e.what());
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        } catch (...) {
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        }
    }

    std::string Version() override { return S5BROKER_VERSION; }
    uint32_t LeaseCount() override {
        return guarded("LeaseCount", [&] { return static_cast<uint32_t>(bus_.manager().leases().size()); });
    }
    std::vector<sdbus::ObjectPath> Servers() override {
        return guarded("Servers", [&] {
            std::vector<sdbus::ObjectPath> v;
            for (const auto& s : bus_.manager().config().servers) v.emplace_back(server_path(s.name));
            return v;
        });
    }
    std::vector<sdbus::ObjectPath> Leases() override {
        return guarded("Leases", [&] {
            std::vector<sdbus::ObjectPath> v;
            for (const auto& [id, l] : bus_.manager().leases()) v.emplace_back(l->path());
            return v;
        });
    }
    std::map<std::string, uint64_t> Statistics() override {
        return guarded("Statistics", [&] {
            auto stats = bus_.manager().statistics();
            stats["leases"] = bus_.manager().leases().size();
            return stats;
        });
    }

    Bus& bus_;
};

// ---- Server objects --------------------------------------------------------

class ServerObject final
    : public sdbus::AdaptorInterfaces<org::s5broker::Broker1::Server_adaptor, sdbus::Properties_adaptor> {
public:
    ServerObject(sdbus::IConnection& conn, const ServerPool& pool)
        : AdaptorInterfaces(conn, server_path(pool.name())), pool_(pool) {
        registerAdaptor();
    }
    ~ServerObject() { unregisterAdaptor(); }

    // Emitted only when a value differs from what was last announced.
    void changed() {
        Snapshot now{pool_.state_name(), pool_.idle(), pool_.last_error()};
        std::vector<std::string> props;
        if (now.state != last_.state) props.push_back("State");
        if (now.idle != last_.idle) props.push_back("PoolIdle");
        if (now.last_error != last_.last_error) props.push_back("LastError");
        last_ = now;
        if (!props.empty()) emitPropertiesChangedSignal("org.s5broker.Broker1.Server", props);
    }

private:
    struct Snapshot {
        std::string state;
        unsigned idle = 0;
        std::string last_error;
    };

    std::string Name() override { return pool_.name(); }
    std::vector<uint8_t> Address() override { return pool_.server().endpoint.ip_bytes(); }
    uint16_t Port() override { return pool_.server().endpoint.port; }
    std::string AuthMethod() override {
        return pool_.server().auth.method == s5::config::AuthMethod::Username ? "username" : "none";
    }
    std::string State() override { return pool_.state_name(); }
    uint32_t PoolIdle() override { return pool_.idle(); }
    uint32_t PoolTarget() override { return pool_.min_idle(); }
    std::string LastError() override { return pool_.last_error(); }

    const ServerPool& pool_;  // outlives the object (Bus dies before Manager)
    Snapshot last_;
};

// ---- Lease objects ---------------------------------------------------------

class LeaseObject final
    : public sdbus::AdaptorInterfaces<org::s5broker::Broker1::Lease_adaptor, sdbus::Properties_adaptor> {
public:
    LeaseObject(sdbus::IConnection& conn, const Lease& l) : AdaptorInterfaces(conn, l.path()), lease_(l) {
        registerAdaptor();
    }
    ~LeaseObject() { unregisterAdaptor(); }

    void lost(const std::string& why) {
        emitLost(why);
        emitPropertiesChangedSignal(kLeaseIface, {"State"});
    }
    void renewed() {
        emitRenewed(lease_.generation(), lease_.relay().ip_bytes(), lease_.relay().port);
        changed();
    }
    void changed() { emitPropertiesChangedSignal(kLeaseIface, {"State", "Server", "Relay", "Generation"}); }

private:
    uint32_t Owner() override { return static_cast<uint32_t>(lease_.uid()); }
    sdbus::ObjectPath Server() override {
        // A pending lease has no server yet: the manager object stands in.
        return sdbus::ObjectPath(lease_.server_name().empty() ? kManagerPath : server_path(lease_.server_name()));
    }
    sdbus::Struct<std::vector<uint8_t>, uint16_t> Relay() override { return relay_struct(lease_.relay()); }
    uint32_t Generation() override { return lease_.generation(); }
    uint64_t Created() override { return lease_.created_realtime_usec(); }
    std::string State() override { return to_string(lease_.state()); }

    const Lease& lease_;  // the object dies before the lease (lease_removed)
};

// ---- Bus -------------------------------------------------------------------

Bus::Bus(sdbus::IConnection& conn, Manager& manager)
    : flush_timer_(manager.loop(), [this] { flush_changes(); }), conn_(conn), manager_(manager), creds_(conn) {
    dbus_proxy_ = sdbus::createProxy(conn_, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    dbus_proxy_->uponSignal("NameOwnerChanged")
        .onInterface("org.freedesktop.DBus")
        .call([this](const std::string& name, const std::string& old_owner, const std::string& new_owner) {
            try {
                on_name_owner_changed(name, old_owner, new_owner);
            } catch (const std::exception& e) {
                log_error("NameOwnerChanged: %s", e.what());
            } catch (...) {
                log_error("NameOwnerChanged: unknown exception");
            }
        });
    dbus_proxy_->finishRegistration();
    manager_obj_ = std::make_unique<ManagerObject>(conn_, *this);
    for (const auto& [name, pool] : manager_.pools()) servers_[name] = std::make_unique<ServerObject>(conn_, *pool);
    manager_.set_observer(this);
}

Bus::~Bus() {
    manager_.set_observer(nullptr);
    leases_.clear();
    servers_.clear();
    manager_obj_.reset();
    dbus_proxy_.reset();
}

Bus::CallerInfo Bus::caller_info(const sdbus::Message& msg) const {
    const PeerCreds* c = creds_.find(msg.getSender());
    if (!c)
        throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied", "the bus daemon gave no credentials for the caller");
    bool allowed = c->uid == 0;
    for (gid_t g : allowed_gids_) allowed = allowed || c->in_group(g);
    return {c->uid, allowed};
}

void Bus::on_name_owner_changed(const std::string& name, const std::string& old_owner, const std::string& new_owner) {
    // Only unique names (":1.42") own leases; they never come back.
    if (name.empty() || name[0] != ':' || old_owner.empty() || !new_owner.empty()) return;
    creds_.forget(name);
    manager_.owner_left(name);
}

void Bus::lease_count_changed() {
    manager_dirty_ = true;
    schedule_flush();
}

void Bus::schedule_flush() {
    if (!flush_timer_.armed()) flush_timer_.arm_in(std::chrono::microseconds(0));
}

void Bus::flush_changes() {
    if (manager_dirty_ && manager_obj_) manager_obj_->lease_count_changed();
    manager_dirty_ = false;
    if (servers_dirty_ && manager_obj_) manager_obj_->emitPropertiesChangedSignal(kManagerIface, {"Servers"});
    servers_dirty_ = false;
    auto dirty = std::move(dirty_servers_);
    dirty_servers_.clear();
    for (const auto& name : dirty)
        if (auto it = servers_.find(name); it != servers_.end()) it->second->changed();
}

void Bus::lease_added(Lease& lease) {
    leases_[lease.id()] = std::make_unique<LeaseObject>(conn_, lease);
    lease_count_changed();
}

void Bus::lease_changed(Lease& lease) {
    if (auto it = leases_.find(lease.id()); it != leases_.end()) it->second->changed();
}

void Bus::lease_renewed(Lease& lease) {
    if (auto it = leases_.find(lease.id()); it != leases_.end()) it->second->renewed();
}

// The Servers list is announced from flush_changes(), after the reload
// that added or removed servers has replaced the configuration: emitted
// here, during Manager::apply(), it carried the old list.
void Bus::server_added(ServerPool& pool) {
    servers_[pool.name()] = std::make_unique<ServerObject>(conn_, pool);
    servers_dirty_ = true;
    schedule_flush();
}

void Bus::server_removed(ServerPool& pool) {
    servers_.erase(pool.name());
    servers_dirty_ = true;
    schedule_flush();
}

void Bus::reload(ConfigLoader::Done done) {
    if (!reload_) {
        done(std::string("reloading is not available"));
        return;
    }
    reload_(std::move(done));
}

void Bus::server_changed(ServerPool& pool) {
    dirty_servers_.insert(pool.name());
    schedule_flush();
}

void Bus::lease_lost(Lease& lease, const std::string& why) {
    auto it = leases_.find(lease.id());
    if (it != leases_.end()) it->second->lost(why);
}

void Bus::lease_removed(Lease& lease) {
    leases_.erase(lease.id());
    lease_count_changed();
}

}  // namespace s5d
