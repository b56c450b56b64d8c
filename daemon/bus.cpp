#include "bus.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include "bus_util.hpp"
#include "lease_bus.hpp"
#include "log.hpp"
#include "manager_bus.hpp"
#include "server_pool_bus.hpp"

namespace s5d {

using namespace busutil;

// ---- Bus -------------------------------------------------------------------

Bus::Bus(sdbus::IConnection& conn, Manager& manager)
    : flush_timer_(manager.loop(), [this] { flush_changes(); }),
      conn_(conn),
      manager_(manager),
      creds_(conn),
      channels_(manager.loop(), manager) {
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
    manager_obj_ = make_manager_object(conn_, *this);
    for (const auto& [name, pool] : manager_.pools()) servers_[name] = make_server_object(conn_, *pool);
    // Lease objects are made when somebody calls on one (or it has a
    // signal to send), not per lease: see lease_object().
    creds_.set_call_hook([this](const char* path) { on_call_to(path); });
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

void Bus::schedule_flush(bool urgent) {
    if (urgent) {
        flush_timer_.arm_in(std::chrono::microseconds(0));
        return;
    }
    if (flush_timer_.armed()) return;
    auto delay = std::chrono::microseconds(0);
    if (last_flush_) {
        const auto due = *last_flush_ + kSignalInterval;
        const auto now = manager_.loop().now();
        if (due > now) delay = std::chrono::duration_cast<std::chrono::microseconds>(due - now);
    }
    flush_timer_.arm_in(delay);
}

void Bus::flush_changes() {
    last_flush_ = manager_.loop().now();
    if (manager_dirty_ && manager_obj_) announce_lease_count(*manager_obj_);
    manager_dirty_ = false;
    if (servers_dirty_ && manager_obj_) announce_servers(*manager_obj_);
    servers_dirty_ = false;
    auto dirty = std::move(dirty_servers_);
    dirty_servers_.clear();
    for (const auto& name : dirty)
        if (auto it = servers_.find(name); it != servers_.end()) announce_changes(*it->second);
}

void Bus::lease_added(Lease&) { lease_count_changed(); }

LeaseObject& Bus::lease_object(const Lease& lease) {
    auto& o = leases_[lease.id()];
    if (!o) {
        try {
            o = make_lease_object(conn_, lease, creds_);
        } catch (...) {
            leases_.erase(lease.id());
            throw;
        }
    }
    return *o;
}

void Bus::on_call_to(const char* path) {
    // Only a path that names a lease; anything else is left to sd-bus
    // (UnknownObject for a lease that does not exist).
    const Lease* l = manager_.lease_at(path);
    if (!l || leases_.count(l->id())) return;
    try {
        lease_object(*l);
    } catch (const std::exception& e) {
        // The call then finds no object: UnknownObject.
        log_warning("cannot publish lease %llu on the bus: %s", static_cast<unsigned long long>(l->id()), e.what());
    }
}

// A signal needs the object: made now if nobody asked for it yet. If it
// cannot be made, the signal is lost (the log says so), the lease is not:
// its holder hears of every change on its lease fd.
template <typename F>
void Bus::with_lease_object(const Lease& lease, F&& f) {
    try {
        f(lease_object(lease));
    } catch (const std::exception& e) {
        log_warning("lease %llu: no signal on the bus: %s", static_cast<unsigned long long>(lease.id()), e.what());
    }
}

void Bus::lease_changed(Lease& lease) {
    with_lease_object(lease, [](LeaseObject& o) { announce_changed(o); });
}

void Bus::lease_renewed(Lease& lease) {
    with_lease_object(lease, [](LeaseObject& o) { announce_renewed(o); });
}

// The Servers list is announced from flush_changes(), after the reload
// that added or removed servers has replaced the configuration: emitted
// here, during Manager::apply(), it carried the old list.
void Bus::server_added(ServerPool& pool) {
    servers_[pool.name()] = make_server_object(conn_, pool);
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
    auto it = servers_.find(pool.name());
    schedule_flush(it != servers_.end() && health_unannounced(*it->second));
}

void Bus::lease_lost(Lease& lease, const std::string& why) {
    with_lease_object(lease, [&](LeaseObject& o) { announce_lost(o, why); });
}

void Bus::lease_removed(Lease& lease) {
    leases_.erase(lease.id());
    lease_count_changed();
}

}  // namespace s5d
