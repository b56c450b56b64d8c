// The broker's logic: which servers may serve a request, leases and their
// renewal and failover, waiting requests, quotas and statistics. No D-Bus
// types here: bus.cpp translates calls into these methods and observes the
// results.
//
// Every association comes from a ServerPool. A request that finds no idle
// association becomes a Waiter on the pools of all its candidate servers;
// the first association ready on any of them serves it. Renewal is the same
// with a lease instead of a D-Bus reply waiting.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <set>
#include <variant>
#include <vector>

#include "association.hpp"
#include "config.hpp"
#include "durable_state.hpp"
#include "errors.hpp"
#include "event_loop.hpp"
#include "lease.hpp"
#include "server_pool.hpp"
#include "setup_budget.hpp"
#include "wire.hpp"

namespace s5d {

// The largest timeout a caller may ask for (the bus's timeout_ms option,
// the channel's field).
inline constexpr uint32_t kMaxTimeoutMs = 120000;

struct AssociateRequest {
    s5::wire::Endpoint dst;                       // routing and family only
    std::optional<s5::wire::Endpoint> server;     // explicit server, or route by dst
    std::chrono::milliseconds timeout{10000};
    bool nonblocking = false;                     // reply at once, lease pending
    // The largest rendezvous (sockaddr) the caller can take: servers whose
    // relay would not fit are skipped, and with none left the request fails
    // before a lease is made (socks5udp_associate's DstLen).
    size_t rendezvous_len = SIZE_MAX;
    // Answered now or not at all (the private channel, channel.hpp): when
    // no association is ready and the request would have to wait, the
    // answer is WouldWait and nothing is queued.
    bool immediate = false;
    // The reply travels through the bus daemon with the lease fd in it:
    // the caller may hold at most kMaxUnreadPerOwner such leases that are
    // pending or whose events it has not read, waiting requests included.
    bool via_bus = false;
    uid_t uid = 0;
    std::string owner;                            // caller's unique bus name
};

struct Grant {
    std::string lease_path;
    UniqueFd lease_fd;                            // the application's end
    s5::wire::Endpoint relay;                     // unset while the lease is pending
    uint64_t lease_id = 0;
};

struct Failure {
    s5::err::Code code;
    std::string message;
};

// Only for an `immediate` request: it would have had to wait.
struct WouldWait {};

using AssociateResult = std::variant<Grant, Failure, WouldWait>;
using AssociateDone = std::function<void(AssociateResult&&)>;

// What the bus layer needs to hear about, to publish objects and signals.
class ManagerObserver {
public:
    virtual ~ManagerObserver() = default;
    virtual void lease_added(Lease& lease) = 0;
    virtual void lease_changed(Lease& lease) = 0;       // state, relay, server
    virtual void lease_renewed(Lease& lease) = 0;       // also changed
    virtual void lease_lost(Lease& lease, const std::string& why) = 0;
    virtual void lease_removed(Lease& lease) = 0;       // about to be destroyed
    virtual void server_changed(ServerPool& pool) = 0;
    virtual void server_added(ServerPool& pool) = 0;
    virtual void server_removed(ServerPool& pool) = 0;   // about to be destroyed
};

class Manager {
public:
    // How many leases granted over the bus one bus connection may hold
    // unread or pending (plus its waiting requests): a connection that stops reading
    // makes replies with descriptors queue in the bus daemon, which stops
    // reading from the broker altogether once it holds 64 descriptors for
    // one destination (dbus-daemon's default max_outgoing_unix_fds), and
    // then nobody is served. Applications read their lease's first event
    // at once (libs5client does, inside socks5udp_associate).
    static constexpr size_t kMaxUnreadPerOwner = 16;
    // How long a renewal waits for the other closes of a crashed server.
    static constexpr std::chrono::milliseconds kRenewalSettle{30};

    Manager(EventLoop& loop, s5::config::Config config);
    ~Manager();

    void set_observer(ManagerObserver* o) { observer_ = o; }
    const s5::config::Config& config() const { return config_; }
    EventLoop& loop() { return loop_; }
    // Starts filling every server's pool.
    void start();
    // A new, validated configuration: servers that still exist unchanged
    // keep their pools and leases; leases of removed or changed servers are
    // renewed elsewhere (or lost after lease_grace_s).
    void apply(s5::config::Config next);

    // Serves `req`; `done` runs exactly once, from the loop (possibly before
    // associate() returns), unless the caller leaves the bus first.
    void associate(AssociateRequest req, AssociateDone done);

    // The server an Associate without a server would use for dst: the first
    // healthy one of the longest-prefix route, else the route's first.
    std::variant<const s5::config::Server*, Failure> select_server(const s5::wire::Endpoint& dst) const;

    enum class ReleaseResult { Released, NotFound, NotOwner };
    // `caller_uid` 0 (root) may release any lease.
    ReleaseResult release(const std::string& path, uid_t caller_uid);
    // A bus name left the bus: its waiting requests are cancelled. Its
    // granted leases stay: a lease lives exactly as long as its fd.
    void owner_left(const std::string& bus_name);

    // Lease ids count up from here (default 1). s5brokerd starts them at
    // the CLOCK_BOOTTIME microsecond of its start, see main.cpp.
    void set_next_lease_id(uint64_t id) { next_lease_id_ = id; }

    // Leases and ready associations from now on are written through `d`
    // (systemd's fd store and the state memfd); null: not durable.
    void set_durable(DurableState* d);
    // The header of the state: counters and the next lease id.
    state::Header state_header(uint64_t epoch) const;
    struct RestoreReport {
        size_t leases = 0, renewing = 0, released = 0, forgotten = 0, idle = 0, closed = 0;
    };
    // Before start(): rebuilds the leases and associations an earlier
    // broker left (manager_restore.cpp). Takes from `fds` what it uses;
    // releases what died while no broker ran, and says so in the log.
    RestoreReport restore(const state::Image& image, StoredFds& fds);
    const std::map<uint64_t, std::unique_ptr<Lease>>& leases() const { return leases_; }
    // The lease whose object path is `path`, or null.
    Lease* lease_at(std::string_view path) const;
    // The ids of `uid`'s leases, in id order (empty when it holds none).
    const std::set<uint64_t>& lease_ids_of(uid_t uid) const;
    const std::map<std::string, std::unique_ptr<ServerPool>>& pools() const { return pools_; }
    const Stats& statistics() const { return stats_; }

private:
    struct Waiter {
        enum class Kind { Request, PendingLease, Renewal };
        uint64_t id = 0;
        Kind kind = Kind::Request;
        std::vector<std::string> candidates;      // pool names, preferred first
        AssociateRequest req;                     // Request
        AssociateDone done;                       // Request
        uint64_t lease_id = 0;                    // PendingLease, Renewal
        Timer deadline;
    };

    void add_pool(const s5::config::Server& s);
    static void forget_passwords(s5::config::Config& c);
    std::variant<std::vector<std::string>, Failure> candidates_for(
        const s5::wire::Endpoint& dst, const std::optional<s5::wire::Endpoint>& server) const;
    std::vector<std::string> renewal_candidates(const Lease& lease) const;
    // Removes the servers whose relay would not fit `rendezvous_len`; an
    // InvalidArgs failure when none is left.
    std::optional<Failure> drop_unfitting(std::vector<std::string>& candidates, size_t rendezvous_len) const;
    // Releases the leases whose application end is already closed (their
    // EOF not yet handled); returns how many.
    size_t reap_closed_leases(uid_t uid);
    size_t held_by(uid_t uid) const;          // leases and waiting requests
    std::optional<Failure> check_quota(uid_t uid) const;
    std::unique_ptr<Association> take_from(const std::vector<std::string>& candidates);
    Lease& create_lease(const AssociateRequest& req, std::unique_ptr<Association> assoc);
    // Its log line and lease_added (the bus object), after the reply.
    void announce_lease(Lease& l);
    // Creates the lease and replies; on failure replies with the error.
    Lease* grant_lease(const AssociateRequest& req, std::unique_ptr<Association> assoc, const AssociateDone& done);
    void bind_to_lease(Association& a, uint64_t lease_id);
    // Keeps waiters_by_pool_, requests_* up to date; every waiter that
    // leaves the list goes through take_waiter() or index_waiter(w, false).
    void index_waiter(const Waiter& w, bool add);
    Waiter take_waiter(std::list<Waiter>::iterator w);
    void add_waiter(Waiter::Kind kind, std::vector<std::string> candidates, std::chrono::milliseconds timeout,
                    AssociateRequest req, AssociateDone done, uint64_t lease_id);
    unsigned waiters_for(const std::string& pool) const;
    void pump(const std::vector<std::string>& pools, bool new_request);
    void serve_waiters(ServerPool& pool);
    void deliver(std::list<Waiter>::iterator w, std::unique_ptr<Association> assoc);
    void on_pool_failed(ServerPool& pool, s5::err::Code code, const std::string& text);
    void on_deadline(uint64_t waiter_id);
    void fail_waiter(std::list<Waiter>::iterator w, s5::err::Code code, const std::string& text);
    void on_lease_association_closed(uint64_t lease_id, int err, Clock::time_point ready_since, const std::string& why);
    void start_renewal(Lease& lease);
    void lose(Lease& lease, s5::err::Code code, const std::string& why);
    void dispose(std::unique_ptr<Association> a);
    void remove_lease(uint64_t id, const char* why);
    void count(const std::string& key) {
        ++stats_[key];
        if (durable_) durable_->touch();   // the header carries the counters
    }

    EventLoop& loop_;
    s5::config::Config config_;
    ManagerObserver* observer_ = nullptr;
    Stats stats_;
    // Before the pools: their setups hold slots of it.
    SetupBudget budget_;
    std::deque<std::string> starved_;                        // pools waiting for a slot
    Timer budget_timer_;
    void pump_starved();
    std::map<std::string, std::unique_ptr<ServerPool>> pools_;
    std::map<uint64_t, std::unique_ptr<Lease>> leases_;
    std::list<Waiter> waiters_;                              // FIFO
    std::map<uint64_t, Timer> settling_;                     // lease id -> renewal start
    // Indexes, so that no request costs O(leases) or O(waiters).
    std::unordered_map<uid_t, std::set<uint64_t>> leases_by_uid_;
    std::unordered_map<uid_t, size_t> requests_by_uid_;
    std::unordered_map<std::string, size_t> requests_by_owner_;
    // Leases granted over the bus whose first event their owner had not
    // read when last looked at (see kMaxUnreadPerOwner).
    std::unordered_map<std::string, std::vector<uint64_t>> unread_by_owner_;
    std::optional<Failure> check_unread(const AssociateRequest& req);
    std::map<std::string, unsigned> waiters_by_pool_;
    size_t requests_ = 0;                                    // waiters of kind Request
    uint64_t next_lease_id_ = 1;
    DurableState* durable_ = nullptr;
    uint64_t next_waiter_id_ = 1;
};

}  // namespace s5d
