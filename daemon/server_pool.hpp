// One configured SOCKS server at run time: its pool of warm associations
// (connected, authenticated, UDP ASSOCIATE answered), the ones being set up,
// its health and backoff. Decisions come from pool_policy.hpp; this class
// does the I/O and timers around them.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "association.hpp"
#include "config.hpp"
#include "event_loop.hpp"
#include "pool_policy.hpp"
#include "setup_budget.hpp"

namespace s5d {

using Stats = std::map<std::string, uint64_t>;

class ServerPool {
public:
    struct Hooks {
        // An idle association is ready to be taken (after a setup succeeded).
        std::function<void(ServerPool&)> available;
        // A setup attempt failed; health() is now Down.
        std::function<void(ServerPool&, s5::err::Code, const std::string&)> failed;
        // State, PoolIdle or LastError changed (for the bus).
        std::function<void(ServerPool&)> changed;
        // A setup was wanted but the broker-wide budget had no slot: pump
        // this pool again when one frees up.
        std::function<void(ServerPool&)> starved;
    };

    ServerPool(EventLoop& loop, const s5::config::Server& server, const s5::config::Config& config, Stats& stats,
               SetupBudget& budget, Hooks hooks);
    ~ServerPool();
    ServerPool(const ServerPool&) = delete;
    ServerPool& operator=(const ServerPool&) = delete;

    const s5::config::Server& server() const { return server_; }
    const std::string& name() const { return server_.name; }
    ServerHealth health() const { return health_; }
    const char* state_name() const;               // up, connecting, down
    const std::string& last_error() const { return last_error_; }
    s5::err::Code last_error_code() const { return last_error_code_; }
    unsigned idle() const { return static_cast<unsigned>(idle_.size()); }
    unsigned connecting() const { return static_cast<unsigned>(connecting_.size()); }
    unsigned leased() const { return leased_; }
    unsigned min_idle() const { return limits_.min_idle; }

    // Ready associations go into systemd's fd store (durable_state.hpp).
    void set_durable(DurableState* d) { durable_ = d; }
    DurableState* durable() const { return durable_; }
    // Restore: a ready association an earlier broker had idle in this pool,
    // or one of a lease (counted as leased; released() when it goes).
    void adopt_idle(std::unique_ptr<Association> a);
    void adopt_leased() { ++leased_; }
    Association::Callbacks callbacks();

    // New pool, keepalive and age settings (same server).
    void reconfigure(const s5::config::Config& config);

    // Takes a ready association out of the pool (nullptr when none); the
    // caller sets its callbacks and must call released() when done with it.
    std::unique_ptr<Association> take();
    void released();
    // One of our associations timed out (keepalive): the server or the path
    // to it is probably gone, and so are its other idle associations. Drop
    // them, mark the server down and probe it again after the backoff.
    void suspect(const std::string& why);
    // An association of this pool (idle or leased) was ended by the server
    // after `ready_since`: one that died young counts as a failure of the
    // server (see kProbation), with backoff.
    void ended_by_server(Clock::time_point ready_since, const std::string& why);

    // Starts what the pool policy asks for, given `waiters` requests that
    // would take an association from this pool. `new_request`: a request
    // just arrived (a down server gets one probe without waiting).
    void pump(unsigned waiters, bool new_request);

private:
    bool start_one();   // false: no slot in the broker-wide budget
    void on_ready(Association& a);
    void on_failed(Association& a, s5::err::Code code, const std::string& text);
    void on_idle_closed(Association& a, const std::string& why);
    void on_retry();
    void back_off();
    void trim_surplus();
    void schedule_recycle();
    void recycle_old();
    void set_health(ServerHealth h);
    // A counter up by one, and into the durable state's header.
    void bump(const char* key) {
        ++stats_[key];
        if (durable_) durable_->touch();
    }

    EventLoop& loop_;
    s5::config::Server server_;
    s5::config::Keepalive keepalive_;
    PoolLimits limits_;
    std::chrono::seconds max_idle_age_;
    std::chrono::seconds setup_timeout_;             // pool.setup_timeout_s
    Stats& stats_;
    Hooks hooks_;
    SetupBudget& budget_;
    std::deque<std::unique_ptr<Association>> idle_;   // oldest first
    struct Setup {
        std::unique_ptr<Association> assoc;
        SetupBudget::Slot slot;                      // given back with the entry
    };
    std::map<uint64_t, Setup> connecting_;          // by id: the newest last
    unsigned leased_ = 0;
    unsigned waiters_ = 0;                           // as of the last pump()
    ServerHealth health_ = ServerHealth::Unknown;
    std::string last_error_;
    s5::err::Code last_error_code_ = s5::err::Code::ServerFailure;
    Backoff backoff_;
    bool backoff_elapsed_ = true;
    bool short_of_descriptors_ = false;               // the last attempt found no descriptor
    std::mt19937_64 rng_;
    Timer retry_timer_;
    Timer recycle_timer_;
    Timer proven_timer_;                             // kProbation after the last ready: backoff reset
    Timer young_death_timer_;                        // tells the manager after ended_by_server()
    Timer trim_timer_;                               // idle surplus, kSurplusLinger after it appeared
    Timer refill_timer_;                             // kRefillQuiet after the last hand-out
    DurableState* durable_ = nullptr;
};

}  // namespace s5d
