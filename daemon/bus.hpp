// D-Bus glue of the whole broker: the connection's objects (each in its own
// file beside the logic it exposes: manager_bus, server_pool_bus,
// lease_bus), the callers' credentials (bus_creds), and Manager events
// turned into coalesced signals. Every handler catches everything: sdbus-c++
// 1.2.0 only turns sdbus::Error into a reply, anything else would unwind
// through libsystemd's C frames (bus_util.hpp).
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "bus_creds.hpp"
#include "channels.hpp"
#include "config_loader.hpp"
#include "event_loop.hpp"
#include "lease_bus.hpp"
#include "manager.hpp"
#include "manager_bus.hpp"
#include "server_pool_bus.hpp"

namespace sdbus { class IConnection; class IProxy; class Message; }

namespace s5d {


class Bus : public ManagerObserver {
public:
    Bus(sdbus::IConnection& conn, Manager& manager);
    ~Bus() override;

    // The caller's uid from the credentials the bus daemon gave (see
    // bus_creds.hpp) and whether it may ask for associations (root, or a
    // member of allowed_groups). Throws AccessDenied for a sender without
    // credentials.
    struct CallerInfo {
        uid_t uid;
        bool allowed;
    };
    CallerInfo caller_info(const sdbus::Message& msg) const;
    const BusCreds& creds() const { return creds_; }
    Manager& manager() { return manager_; }
    sdbus::IConnection& connection() { return conn_; }

    void lease_added(Lease& lease) override;
    void lease_changed(Lease& lease) override;
    void lease_renewed(Lease& lease) override;
    void lease_lost(Lease& lease, const std::string& why) override;
    void server_changed(ServerPool& pool) override;
    void server_added(ServerPool& pool) override;
    void server_removed(ServerPool& pool) override;

    // Re-reads and applies the configuration (Reload(), SIGHUP), off the
    // loop (config_loader.hpp); `done` gets nullopt on success, else why
    // nothing was changed.
    using Reloader = std::function<void(ConfigLoader::Done)>;
    void set_reloader(Reloader r) { reload_ = std::move(r); }
    void reload(ConfigLoader::Done done);
    // allowed_groups as gids, resolved with the configuration (off the loop).
    // A change closes every private channel: each process opens a new
    // one, and is checked against the new groups (channel.hpp).
    void set_allowed_gids(std::set<gid_t> gids) {
        if (gids != allowed_gids_) channels_.close_all("allowed_groups changed");
        allowed_gids_ = std::move(gids);
    }
    Channels& channels() { return channels_; }
    void lease_removed(Lease& lease) override;

private:
    void on_name_owner_changed(const std::string& name, const std::string& old_owner, const std::string& new_owner);
    void lease_count_changed();
    // PropertiesChanged of the Manager and Server objects go out after the
    // current event is handled, coalesced: the Associate reply is not
    // queued behind them, and a burst of grants costs one signal. At most
    // one flush per kSignalInterval: a subscriber that never reads its bus
    // socket makes the bus queue at most one signal per object per
    // interval, however fast leases churn (what the bus queues for it
    // counts against the broker's own connection).
    // A server's State or LastError is not held back (a server going down
    // and up again within the interval must be seen); those change at the
    // pace of connection attempts, which backoff bounds.
    static constexpr std::chrono::milliseconds kSignalInterval{1000};
    void schedule_flush(bool urgent = false);
    void flush_changes();
    Timer flush_timer_;
    std::optional<Clock::time_point> last_flush_;
    bool manager_dirty_ = false;
    bool servers_dirty_ = false;
    std::set<std::string> dirty_servers_;

    sdbus::IConnection& conn_;
    Manager& manager_;
    BusCreds creds_;
    std::unique_ptr<sdbus::IProxy> dbus_proxy_;
    ManagerObjectPtr manager_obj_;
    std::map<std::string, ServerObjectPtr> servers_;
    // Lease objects are published on demand: a lease costs no bus object
    // (nor its registration, ~50 µs of the broker per association) until a
    // call names its path (the credentials filter tells on_call_to() before
    // sd-bus looks for the object) or it has a signal to send (a change,
    // a renewal, its loss). The Leases property lists every lease either
    // way; introspecting the parent path lists only the published ones.
    LeaseObject& lease_object(const Lease& lease);
    template <typename F>
    void with_lease_object(const Lease& lease, F&& f);
    void on_call_to(const char* path);
    std::map<uint64_t, LeaseObjectPtr> leases_;
    Reloader reload_;
    std::set<gid_t> allowed_gids_;
    Channels channels_;
};


}  // namespace s5d
