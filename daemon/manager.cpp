#include "manager.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string.h>
#include <system_error>

#include "fd_reserve.hpp"
#include "log.hpp"
#include "s5broker/socks5.h"

namespace s5d {

using s5::err::Code;

namespace {
unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

// Journal fields of a lease event.
log::Fields fields(const Lease& l) {
    return {{"S5_LEASE", std::to_string(l.id())},
            {"S5_UID", std::to_string(l.uid())},
            {"S5_SERVER", l.server_name()}};
}
}  // namespace

Manager::Manager(EventLoop& loop, s5::config::Config config)
    : loop_(loop), config_(std::move(config)), budget_timer_(loop, [this] { pump_starved(); }) {
    budget_.set_on_freed([this] {
        if (!starved_.empty() && !budget_timer_.armed()) budget_timer_.arm_in(std::chrono::microseconds(0));
    });
    for (const char* k : {"associations_made", "associations_failed", "leases_granted", "leases_released",
                          "leases_lost", "served_from_pool", "renewals", "failovers", "relays_refused",
                          "relays_unreachable"})
        stats_[k] = 0;
    for (const auto& s : config_.servers) add_pool(s);
    forget_passwords(config_);
}

void Manager::add_pool(const s5::config::Server& s) {
    ServerPool::Hooks hooks{
        [this](ServerPool& p) { serve_waiters(p); },
        [this](ServerPool& p, Code c, const std::string& t) { on_pool_failed(p, c, t); },
        [this](ServerPool& p) {
            if (observer_) observer_->server_changed(p);
        },
        [this](ServerPool& p) {
            if (std::find(starved_.begin(), starved_.end(), p.name()) == starved_.end()) starved_.push_back(p.name());
        },
    };
    auto pool = std::make_unique<ServerPool>(loop_, s, config_, stats_, budget_, std::move(hooks));
    pool->set_durable(durable_);
    pools_.emplace(s.name, std::move(pool));
}

void Manager::set_durable(DurableState* d) {
    durable_ = d;
    for (auto& [name, pool] : pools_) pool->set_durable(d);
}

state::Header Manager::state_header(uint64_t epoch) const {
    return state::Header{epoch, next_lease_id_, stats_};
}

void Manager::forget_passwords(s5::config::Config& c) {
    // The pools hold their own copies; the manager keeps no password.
    for (auto& s : c.servers) {
        s.auth.password.clear();   // wiped (secret.hpp)
    }
}

namespace {
bool same_server(const s5::config::Server& a, const s5::config::Server& b) {
    return a.endpoint == b.endpoint && a.auth.method == b.auth.method && a.auth.username == b.auth.username &&
           a.auth.password == b.auth.password && a.relay_address_override == b.relay_address_override &&
           a.pipelining == b.pipelining && a.server_uid == b.server_uid && a.claim == b.claim;
}
}  // namespace

void Manager::apply(s5::config::Config next) {
    // Servers that are gone or changed (address, credentials...) lose their
    // pool; their leases are renewed on what the new config offers.
    std::vector<std::string> replaced;
    for (const auto& [name, pool] : pools_) {
        const auto* n = next.find_server(name);
        if (!n || !same_server(pool->server(), *n)) replaced.push_back(name);
    }
    std::vector<uint64_t> moved;
    for (const auto& name : replaced) {
        for (auto& [id, l] : leases_)
            if (l->server_name() == name && l->state() == LeaseState::Active) moved.push_back(id);
        if (observer_) observer_->server_removed(*pools_.at(name));
    }
    for (uint64_t id : moved) dispose(leases_.at(id)->detach_for_renewal());
    for (const auto& name : replaced) pools_.erase(name);  // closes its associations
    config_ = std::move(next);
    for (const auto& s : config_.servers) {
        auto it = pools_.find(s.name);
        if (it == pools_.end()) {
            add_pool(s);
            if (observer_) observer_->server_added(*pools_.at(s.name));
        } else {
            it->second->reconfigure(config_);
        }
    }
    forget_passwords(config_);
    log_notice("configuration reloaded: %zu server(s), %zu replaced", config_.servers.size(), replaced.size());
    // Requests whose every server is gone cannot be served any more.
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        auto next_it = std::next(it);
        bool any = std::any_of(it->candidates.begin(), it->candidates.end(),
                               [&](const std::string& n) { return pools_.count(n) > 0; });
        if (!any && it->kind != Waiter::Kind::Renewal)
            fail_waiter(it, Code::NoServer, "its servers were removed from the configuration");
        it = next_it;
    }
    for (uint64_t id : moved) {
        auto it = leases_.find(id);
        if (it == leases_.end()) continue;
        if (observer_) observer_->lease_changed(*it->second);
        start_renewal(*it->second);
    }
    for (auto& [name, pool] : pools_) pool->pump(waiters_for(name), false);
}

// Slots came free: the pools that found none get their turn, first come
// first served, as long as slots last.
void Manager::pump_starved() {
    while (budget_.free() > 0 && !starved_.empty()) {
        const std::string name = std::move(starved_.front());
        starved_.pop_front();
        if (auto it = pools_.find(name); it != pools_.end()) it->second->pump(waiters_for(name), false);
    }
}

Manager::~Manager() {
    budget_.set_on_freed(nullptr);
    observer_ = nullptr;
    waiters_.clear();
    leases_.clear();
    pools_.clear();
}

void Manager::start() {
    for (auto& [name, pool] : pools_) pool->pump(0, false);
}

// ---- choosing servers ------------------------------------------------------

std::variant<std::vector<std::string>, Failure> Manager::candidates_for(
    const s5::wire::Endpoint& dst, const std::optional<s5::wire::Endpoint>& server) const {
    if (server) {
        if (const auto* s = config_.find_server(*server)) return std::vector<std::string>{s->name};
        return Failure{Code::NoServer, server->to_string() + " is not a configured SOCKS server"};
    }
    const auto* route = config_.route_for(dst);
    if (!route || route->servers.empty()) return Failure{Code::NoServer, "no route for " + dst.to_string()};
    return route->servers;
}

std::optional<Failure> Manager::drop_unfitting(std::vector<std::string>& candidates, size_t rendezvous_len) const {
    if (rendezvous_len == SIZE_MAX) return std::nullopt;
    // A relay is in its server's family unless relay_address_override says
    // otherwise (relay_policy.hpp refuses any other), so the family, and the
    // size of the rendezvous, is known before any association is made.
    auto relay_len = [this](const std::string& name) -> size_t {
        const auto& s = pools_.at(name)->server();
        const int family = s.relay_address_override ? s.relay_address_override->family : s.endpoint.family;
        return family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    };
    const std::string first = candidates.front();
    std::erase_if(candidates, [&](const std::string& n) { return relay_len(n) > rendezvous_len; });
    if (!candidates.empty()) return std::nullopt;
    return Failure{Code::InvalidArgs, "the relay of server " + first + " needs a rendezvous of " +
                                          std::to_string(relay_len(first)) + " bytes; the caller has " +
                                          std::to_string(rendezvous_len)};
}

std::vector<std::string> Manager::renewal_candidates(const Lease& lease) const {
    // The same server first, then the route's servers in order.
    std::vector<std::string> c{lease.server_name()};
    if (const auto* route = config_.route_for(lease.dst()))
        for (const auto& n : route->servers)
            if (std::find(c.begin(), c.end(), n) == c.end()) c.push_back(n);
    return c;
}

std::variant<const s5::config::Server*, Failure> Manager::select_server(const s5::wire::Endpoint& dst) const {
    auto c = candidates_for(dst, std::nullopt);
    if (auto* f = std::get_if<Failure>(&c)) return *f;
    const auto& names = std::get<std::vector<std::string>>(c);
    for (const auto& n : names) {
        auto it = pools_.find(n);
        if (it != pools_.end() && it->second->health() != ServerHealth::Down) return &it->second->server();
    }
    return &pools_.at(names.front())->server();
}

std::optional<Failure> Manager::check_quota(uid_t uid) const {
    const size_t total = leases_.size() + requests_;
    if (total >= config_.limits.leases_total)
        return Failure{Code::QuotaExceeded, "lease table full (" + std::to_string(total) + " leases)"};
    const size_t mine = held_by(uid);
    if (mine >= config_.limits.leases_per_uid)
        return Failure{Code::QuotaExceeded,
                       "uid " + std::to_string(uid) + " holds " + std::to_string(mine) + " leases (the limit)"};
    return std::nullopt;
}

size_t Manager::held_by(uid_t uid) const {
    size_t n = 0;
    if (auto it = leases_by_uid_.find(uid); it != leases_by_uid_.end()) n += it->second.size();
    if (auto it = requests_by_uid_.find(uid); it != requests_by_uid_.end()) n += it->second;
    return n;
}

const std::set<uint64_t>& Manager::lease_ids_of(uid_t uid) const {
    static const std::set<uint64_t> kNone;
    auto it = leases_by_uid_.find(uid);
    return it == leases_by_uid_.end() ? kNone : it->second;
}

size_t Manager::reap_closed_leases(uid_t uid) {
    // At the per-uid limit only the caller's own leases can make room; at
    // the total limit any lease can.
    const bool table_full = leases_.size() + requests_ >= config_.limits.leases_total;
    std::vector<uint64_t> closed;
    if (table_full) {
        for (const auto& [id, l] : leases_)
            if (l->app_closed()) closed.push_back(id);
    } else if (auto it = leases_by_uid_.find(uid); it != leases_by_uid_.end()) {
        for (uint64_t id : it->second)
            if (leases_.at(id)->app_closed()) closed.push_back(id);
    }
    for (uint64_t id : closed) remove_lease(id, "lease fd closed");
    return closed.size();
}

// ---- waiter indexes ----------------------------------------------------------

void Manager::index_waiter(const Waiter& w, bool add) {
    const auto bump = [add](auto& map, const auto& key) {
        auto& n = map[key];
        n = add ? n + 1 : n - 1;
        if (n == 0) map.erase(key);
    };
    for (const auto& c : w.candidates) bump(waiters_by_pool_, c);
    if (w.kind != Waiter::Kind::Request) return;
    requests_ = add ? requests_ + 1 : requests_ - 1;
    bump(requests_by_uid_, w.req.uid);
    bump(requests_by_owner_, w.req.owner);
}

Manager::Waiter Manager::take_waiter(std::list<Waiter>::iterator w) {
    index_waiter(*w, false);
    Waiter waiter = std::move(*w);
    waiters_.erase(w);
    return waiter;
}

// ---- serving requests -------------------------------------------------------

std::unique_ptr<Association> Manager::take_from(const std::vector<std::string>& candidates) {
    for (const auto& n : candidates) {
        auto it = pools_.find(n);
        if (it == pools_.end()) continue;
        if (auto a = it->second->take()) return a;
    }
    return nullptr;
}

void Manager::bind_to_lease(Association& a, uint64_t lease_id) {
    a.set_callbacks(Association::Callbacks{
        [](Association&) {},
        [](Association&, Code, const std::string&) {},
        [this, lease_id](Association& closed, const std::string& why) {
            on_lease_association_closed(lease_id, closed.close_error(), closed.ready_since(), why);
        },
    });
}

Lease& Manager::create_lease(const AssociateRequest& req, std::unique_ptr<Association> assoc) {
    uint64_t lease_id = next_lease_id_++;
    if (durable_) durable_->touch();   // the header covers the id before its record exists
    if (assoc) bind_to_lease(*assoc, lease_id);
    auto lease = std::make_unique<Lease>(loop_, lease_id, req.uid, req.owner, req.dst, std::move(assoc),
                                         [this](Lease& l) { remove_lease(l.id(), "lease fd closed"); }, durable_);
    Lease& l = *lease;
    leases_.emplace(lease_id, std::move(lease));
    leases_by_uid_[l.uid()].insert(lease_id);
    count("leases_granted");
    return l;
}

void Manager::announce_lease(Lease& l) {
    const uint64_t lease_id = l.id();
    if (l.state() == LeaseState::Active)
        log_info(fields(l), "lease %llu: granted to uid %u (%s) on server %s, relay %s, source %s", ull(lease_id),
                  static_cast<unsigned>(l.uid()), l.owner().c_str(), l.server_name().c_str(),
                  l.relay().to_string().c_str(), l.source().to_string().c_str());
    else
        log_info(fields(l), "lease %llu: pending for uid %u (%s)", ull(lease_id), static_cast<unsigned>(l.uid()),
                  l.owner().c_str());
    if (observer_) observer_->lease_added(l);
}

Lease* Manager::grant_lease(const AssociateRequest& req, std::unique_ptr<Association> assoc,
                            const AssociateDone& done) {
    // Exactly one reply, whatever throws: the lease's socketpair (out of
    // descriptors), the reply itself, or anything else. When the failure
    // comes before the reply, a lease already inserted is removed again, so
    // that it holds neither socket end nor association.
    const std::string server = assoc ? assoc->server_name() : "";
    const uint64_t id = next_lease_id_;
    bool replied = false;
    try {
        Lease& l = create_lease(req, std::move(assoc));
        Grant g{l.path(), l.take_client_end(), l.relay(), l.id()};
        replied = true;
        done(std::move(g));
        if (req.via_bus) unread_by_owner_[req.owner].push_back(id);
    } catch (const std::exception& e) {
        if (replied) {
            log_error("Associate reply failed: %s", e.what());
        } else {
            const auto* sys = dynamic_cast<const std::system_error*>(&e);
            log_error("cannot create lease: %s", e.what());
            if (leases_.count(id)) {
                remove_lease(id, "could not be handed out");
            } else if (auto it = pools_.find(server); it != pools_.end()) {
                it->second->released();   // the association went with the exception
            }
            done(Failure{sys && out_of_descriptors(sys->code().value()) ? Code::QuotaExceeded : Code::ServerFailure,
                         std::string("cannot create lease: ") + e.what()});
            return nullptr;
        }
    }
    // After the reply: the log line and the lease's bus object are nothing
    // the caller waits for. Nothing is dispatched in between, so no call
    // can ask for the object before it exists. A lease that cannot be
    // published (its bus object cannot be made) ends at once: its holder
    // reads EOF on the lease fd, as for any lease the broker drops.
    auto it = leases_.find(id);
    if (it == leases_.end()) return nullptr;
    try {
        announce_lease(*it->second);
    } catch (const std::exception& e) {
        log_error("lease %llu: cannot publish it: %s; ending it", ull(id), e.what());
        remove_lease(id, "could not be published");
        return nullptr;
    }
    return it->second.get();
}

std::optional<Failure> Manager::check_unread(const AssociateRequest& req) {
    if (!req.via_bus) return std::nullopt;
    auto it = unread_by_owner_.find(req.owner);
    size_t unread = 0;
    if (it != unread_by_owner_.end()) {
        // Read (or ended) since: no longer counted. At most
        // kMaxUnreadPerOwner ioctls, only for a caller that holds some.
        std::erase_if(it->second, [&](uint64_t id) {
            auto l = leases_.find(id);
            return l == leases_.end() || !l->second->unread();
        });
        unread = it->second.size();
        if (unread == 0) unread_by_owner_.erase(it);
    }
    const auto w = requests_by_owner_.find(req.owner);
    const size_t waiting = w == requests_by_owner_.end() ? 0 : w->second;
    if (unread + waiting < kMaxUnreadPerOwner) return std::nullopt;
    return Failure{Code::QuotaExceeded, std::to_string(unread) + " leases granted to " + req.owner + " are unread and " +
                                            std::to_string(waiting) + " requests wait (the limit is " +
                                            std::to_string(kMaxUnreadPerOwner) + "): read the lease fds first"};
}

void Manager::associate(AssociateRequest req, AssociateDone done) {
    if (auto f = check_unread(req)) {
        done(std::move(*f));
        return;
    }
    auto c = candidates_for(req.dst, req.server);
    if (auto* f = std::get_if<Failure>(&c)) {
        done(std::move(*f));
        return;
    }
    auto candidates = std::get<std::vector<std::string>>(std::move(c));
    if (auto f = drop_unfitting(candidates, req.rendezvous_len)) {
        done(std::move(*f));
        return;
    }
    if (auto q = check_quota(req.uid)) {
        // An application at its quota may have closed a lease just before
        // asking: that EOF and this request can be ready in the same
        // wake-up, in either order. Count only what is really held.
        if (reap_closed_leases(req.uid) > 0) q = check_quota(req.uid);
        if (q) {
            done(std::move(*q));
            return;
        }
    }
    auto assoc = take_from(candidates);
    if (assoc || req.nonblocking) {
        if (assoc) count("served_from_pool");
        if (auto l = grant_lease(req, std::move(assoc), done); l && l->state() == LeaseState::Pending)
            add_waiter(Waiter::Kind::PendingLease, candidates, req.timeout, {}, {}, l->id());
    } else if (req.immediate) {
        done(WouldWait{});   // the pools still hear of the demand below
    } else {
        add_waiter(Waiter::Kind::Request, candidates, req.timeout, std::move(req), std::move(done), 0);
    }
    pump(candidates, true);
}

void Manager::add_waiter(Waiter::Kind kind, std::vector<std::string> candidates, std::chrono::milliseconds timeout,
                         AssociateRequest req, AssociateDone done, uint64_t lease_id) {
    // The deadline first: a waiter must never be queued without one (a
    // Timer that cannot be made throws, and the caller replies).
    const uint64_t id = next_waiter_id_++;
    Timer deadline(loop_, [this, id] { on_deadline(id); });
    deadline.arm_in(timeout);
    Waiter& w = waiters_.emplace_back();
    w.id = id;
    w.kind = kind;
    w.candidates = std::move(candidates);
    w.req = std::move(req);
    w.done = std::move(done);
    w.lease_id = lease_id;
    w.deadline = std::move(deadline);
    index_waiter(w, true);
}

unsigned Manager::waiters_for(const std::string& pool) const {
    auto it = waiters_by_pool_.find(pool);
    return it == waiters_by_pool_.end() ? 0 : it->second;
}

void Manager::pump(const std::vector<std::string>& pools, bool new_request) {
    for (const auto& n : pools) {
        auto it = pools_.find(n);
        if (it != pools_.end()) it->second->pump(waiters_for(n), new_request);
    }
}

void Manager::serve_waiters(ServerPool& pool) {
    for (auto it = waiters_.begin(); it != waiters_.end() && pool.idle() > 0;) {
        auto next = std::next(it);
        if (std::find(it->candidates.begin(), it->candidates.end(), pool.name()) != it->candidates.end()) {
            // idle() counts associations whose close is still queued:
            // take() skips those and may find none alive.
            auto a = pool.take();
            if (!a) break;
            deliver(it, std::move(a));
        }
        it = next;
    }
}

void Manager::deliver(std::list<Waiter>::iterator w, std::unique_ptr<Association> assoc) {
    Waiter waiter = take_waiter(w);
    waiter.deadline.disarm();
    switch (waiter.kind) {
        case Waiter::Kind::Request:
            grant_lease(waiter.req, std::move(assoc), waiter.done);
            break;
        case Waiter::Kind::PendingLease:
        case Waiter::Kind::Renewal: {
            auto it = leases_.find(waiter.lease_id);
            if (it == leases_.end()) {
                dispose(std::move(assoc));
                break;
            }
            Lease& l = *it->second;
            const bool renewal = waiter.kind == Waiter::Kind::Renewal;
            const std::string old_server = l.server_name();
            bind_to_lease(*assoc, l.id());
            l.attach(std::move(assoc));
            if (renewal) {
                count("renewals");
                if (old_server != l.server_name()) count("failovers");
                log_notice(fields(l), "lease %llu: renewed on server %s (generation %u), relay %s", ull(l.id()),
                            l.server_name().c_str(), l.generation(), l.relay().to_string().c_str());
                if (observer_) observer_->lease_renewed(l);
            } else {
                log_info(fields(l), "lease %llu: ready on server %s, relay %s", ull(l.id()), l.server_name().c_str(),
                          l.relay().to_string().c_str());
                if (observer_) observer_->lease_changed(l);
            }
            break;
        }
    }
    pump(waiter.candidates, false);
}

void Manager::on_pool_failed(ServerPool& pool, Code code, const std::string& text) {
    // A request fails at once when none of its servers can serve it; a
    // renewal keeps waiting for its grace time (the server may come back).
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        auto next = std::next(it);
        const auto& c = it->candidates;
        bool mine = std::find(c.begin(), c.end(), pool.name()) != c.end();
        bool all_down = std::all_of(c.begin(), c.end(), [&](const std::string& n) {
            auto p = pools_.find(n);
            return p == pools_.end() || (p->second->health() == ServerHealth::Down && p->second->connecting() == 0);
        });
        // The broker's own shortage (QuotaExceeded) leaves the server up,
        // but the request cannot be served now either.
        const bool shortage = code == Code::QuotaExceeded;
        if (mine && (all_down || shortage) && it->kind != Waiter::Kind::Renewal) fail_waiter(it, code, text);
        it = next;
    }
}

void Manager::on_deadline(uint64_t waiter_id) {
    auto it = std::find_if(waiters_.begin(), waiters_.end(), [&](const Waiter& w) { return w.id == waiter_id; });
    if (it == waiters_.end()) return;
    if (it->kind == Waiter::Kind::Renewal) {
        fail_waiter(it, Code::Lost,
                    "no server could renew it within " + std::to_string(config_.lease_grace_s) + " s");
        return;
    }
    std::string why = "no association ready in time";
    for (const auto& n : it->candidates) {
        auto p = pools_.find(n);
        if (p != pools_.end() && !p->second->last_error().empty()) why += "; " + n + ": " + p->second->last_error();
    }
    fail_waiter(it, Code::Timeout, why);
}

void Manager::fail_waiter(std::list<Waiter>::iterator w, Code code, const std::string& text) {
    Waiter waiter = take_waiter(w);
    if (waiter.kind == Waiter::Kind::Request) {
        waiter.done(Failure{code, text});
    } else if (auto it = leases_.find(waiter.lease_id); it != leases_.end()) {
        lose(*it->second, code, text);
    }
    pump(waiter.candidates, false);
}

// ---- lease life --------------------------------------------------------------

void Manager::dispose(std::unique_ptr<Association> a) {
    if (!a) return;
    std::string server = a->server_name();
    a.reset();
    if (auto it = pools_.find(server); it != pools_.end()) it->second->released();
}

void Manager::lose(Lease& l, Code code, const std::string& why) {
    const auto& e = s5::err::info(code);
    log_warning(fields(l), "lease %llu: lost: %s", ull(l.id()), why.c_str());
    count("leases_lost");
    dispose(l.mark_lost(e.err, e.s5err, why));
    if (observer_) observer_->lease_lost(l, why);
}

void Manager::on_lease_association_closed(uint64_t lease_id, int err, Clock::time_point ready_since,
                                          const std::string& why) {
    auto it = leases_.find(lease_id);
    if (it == leases_.end()) return;
    Lease& l = *it->second;
    log_warning(fields(l), "lease %llu: association on %s ended (%s); renewing", ull(lease_id), l.server_name().c_str(),
                 why.c_str());
    // Keepalive gave up: the server's other idle associations are as dead
    // as this one, even if nobody has noticed yet.
    // A server that broke the protocol is suspect too: back off before
    // trusting it again, rather than renewing onto it in a loop.
    if (auto p = pools_.find(l.server_name()); p != pools_.end()) {
        if (err == ETIMEDOUT || err == EPROTO)
            p->second->suspect(why);
        else
            p->second->ended_by_server(ready_since, why);
    }
    dispose(l.detach_for_renewal());
    if (observer_) observer_->lease_changed(l);
    // A crashed server closes all its associations at once, but the closes
    // reach us one by one: wait a moment so the idle ones that die with it
    // are gone before we pick one (a renewal onto a dying association would
    // just fail again).
    Timer& t = settling_[lease_id];
    t = Timer(loop_, [this, lease_id] {
        settling_.erase(lease_id);  // destroys this timer after the call
        if (auto it = leases_.find(lease_id); it != leases_.end()) start_renewal(*it->second);
    });
    t.arm_in(kRenewalSettle);
}

void Manager::start_renewal(Lease& l) {
    auto candidates = renewal_candidates(l);
    if (auto a = take_from(candidates)) {
        // A warm association: renewed without a network round trip.
        add_waiter(Waiter::Kind::Renewal, candidates, std::chrono::milliseconds(0), {}, {}, l.id());
        deliver(std::prev(waiters_.end()), std::move(a));
        return;
    }
    if (config_.lease_grace_s == 0) {
        lose(l, Code::Lost, "no warm association and lease_grace_s is 0");
        return;
    }
    add_waiter(Waiter::Kind::Renewal, candidates, std::chrono::seconds(config_.lease_grace_s), {}, {}, l.id());
    pump(candidates, false);
}

void Manager::remove_lease(uint64_t id, const char* why) {
    auto it = leases_.find(id);
    if (it == leases_.end()) return;
    std::unique_ptr<Lease> l = std::move(it->second);
    leases_.erase(it);
    if (auto u = leases_by_uid_.find(l->uid()); u != leases_by_uid_.end()) {
        u->second.erase(id);
        if (u->second.empty()) leases_by_uid_.erase(u);
    }
    settling_.erase(id);
    std::vector<std::string> affected;
    for (auto w = waiters_.begin(); w != waiters_.end();) {
        if (w->lease_id == id && w->kind != Waiter::Kind::Request) {
            affected.insert(affected.end(), w->candidates.begin(), w->candidates.end());
            index_waiter(*w, false);
            w = waiters_.erase(w);
        } else {
            ++w;
        }
    }
    count("leases_released");
    log_info(fields(*l), "lease %llu: released (%s)", ull(id), why);
    if (observer_) observer_->lease_removed(*l);
    dispose(l->take_association());
    l.reset();
    pump(affected, false);
}

Lease* Manager::lease_at(std::string_view path) const {
    // ".../lease/<id>": a map lookup, not a walk over every lease. Asked
    // for every incoming call (Bus::on_call_to): the prefix is made once.
    static const std::string prefix = lease_path(0).substr(0, lease_path(0).size() - 1);
    if (!path.starts_with(prefix) || path.size() == prefix.size() || path.size() - prefix.size() > 20) return nullptr;
    uint64_t id = 0;
    for (char c : path.substr(prefix.size())) {
        if (c < '0' || c > '9') return nullptr;
        id = id * 10 + static_cast<uint64_t>(c - '0');
    }
    auto it = leases_.find(id);
    if (it == leases_.end() || it->second->path() != path) return nullptr;
    return it->second.get();
}

Manager::ReleaseResult Manager::release(const std::string& path, uid_t caller_uid) {
    Lease* l = lease_at(path);
    if (!l) return ReleaseResult::NotFound;
    if (caller_uid != 0 && caller_uid != l->uid()) return ReleaseResult::NotOwner;
    remove_lease(l->id(), "Release() called");
    return ReleaseResult::Released;
}

void Manager::owner_left(const std::string& bus_name) {
    // A granted lease lives as long as its fd, wherever that fd went (a
    // launcher that associates and hands the socket to a child that
    // outlives it): leaving the bus does not release it. A request still
    // waiting for its reply is cancelled: nobody will read the reply.
    unread_by_owner_.erase(bus_name);
    if (!requests_by_owner_.count(bus_name)) return;
    std::set<std::string> affected;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->kind == Waiter::Kind::Request && it->req.owner == bus_name) {
            affected.insert(it->candidates.begin(), it->candidates.end());
            index_waiter(*it, false);
            it = waiters_.erase(it);
        } else {
            ++it;
        }
    }
    // Their pools cancel the setups nobody waits for now.
    pump(std::vector<std::string>(affected.begin(), affected.end()), false);
}

}  // namespace s5d
