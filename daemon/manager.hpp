// The broker's logic: which server serves a request, the associations being
// set up, the leases handed out, quotas and statistics. No D-Bus types here:
// bus.cpp translates calls into these methods and observes the results.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "association.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "event_loop.hpp"
#include "lease.hpp"
#include "unique_fd.hpp"
#include "wire.hpp"

namespace s5d {

using s5::UniqueFd;

struct AssociateRequest {
    s5::wire::Endpoint dst;                       // routing and family only
    std::optional<s5::wire::Endpoint> server;     // explicit server, or route by dst
    std::chrono::milliseconds timeout{10000};
    uid_t uid = 0;
    std::string owner;                            // caller's unique bus name
};

struct Grant {
    std::string lease_path;
    UniqueFd lease_fd;                            // the application's end
    s5::wire::Endpoint relay;
};

struct Failure {
    s5::err::Code code;
    std::string message;
};

using AssociateResult = std::variant<Grant, Failure>;
using AssociateDone = std::function<void(AssociateResult&&)>;

// What the bus layer needs to hear about, to publish objects and signals.
class ManagerObserver {
public:
    virtual ~ManagerObserver() = default;
    virtual void lease_added(Lease& lease) = 0;
    virtual void lease_lost(Lease& lease, const std::string& why) = 0;
    virtual void lease_removed(Lease& lease) = 0;       // about to be destroyed
};

class Manager {
public:
    Manager(EventLoop& loop, s5::config::Config config);
    ~Manager();

    void set_observer(ManagerObserver* o) { observer_ = o; }
    const s5::config::Config& config() const { return config_; }

    // Starts an association for `req`; `done` runs exactly once, from the
    // loop (possibly before associate() returns when the request is refused).
    void associate(AssociateRequest req, AssociateDone done);

    // The server a request would use: the given one if configured, else the
    // first server of the longest-prefix route for dst.
    std::variant<const s5::config::Server*, Failure> select_server(
        const s5::wire::Endpoint& dst, const std::optional<s5::wire::Endpoint>& server) const;

    enum class ReleaseResult { Released, NotFound, NotOwner };
    // `caller_uid` 0 (root) may release any lease.
    ReleaseResult release(const std::string& path, uid_t caller_uid);
    // A bus name left the bus: its leases and pending requests go with it.
    void owner_left(const std::string& bus_name);

    const std::map<uint64_t, std::unique_ptr<Lease>>& leases() const { return leases_; }
    std::map<std::string, uint64_t> statistics() const { return stats_; }

private:
    struct Pending {
        AssociateRequest req;
        AssociateDone done;
        std::unique_ptr<Association> assoc;
    };

    std::optional<Failure> check_quota(uid_t uid) const;
    void on_ready(Association& a);
    void on_failed(Association& a, s5::err::Code code, const std::string& text);
    void on_closed(Association& a, const std::string& why);
    void remove_lease(uint64_t id, const char* why);
    void count(const std::string& key) { ++stats_[key]; }

    EventLoop& loop_;
    s5::config::Config config_;
    ManagerObserver* observer_ = nullptr;
    std::map<uint64_t, Pending> pending_;                    // by association id
    std::map<uint64_t, std::unique_ptr<Lease>> leases_;      // by lease id
    std::map<uint64_t, uint64_t> lease_of_assoc_;            // association id -> lease id
    uint64_t next_lease_id_ = 1;
    std::map<std::string, uint64_t> stats_;
};

}  // namespace s5d
