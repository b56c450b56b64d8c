#include "server_pool.hpp"

#include <string.h>

#include <algorithm>
#include <cerrno>
#include <optional>

#include "log.hpp"

namespace s5d {

ServerPool::ServerPool(EventLoop& loop, const s5::config::Server& server, const s5::config::Config& config,
                       Stats& stats, SetupBudget& budget, Hooks hooks)
    : loop_(loop),
      server_(server),
      keepalive_(config.keepalive),
      limits_{config.pool.min_idle, config.pool.max_associations},
      max_idle_age_(config.pool.max_idle_age_s),
      setup_timeout_(config.pool.setup_timeout_s),
      stats_(stats),
      hooks_(std::move(hooks)),
      budget_(budget),
      rng_(std::random_device{}()),
      retry_timer_(loop, [this] { on_retry(); }),
      recycle_timer_(loop, [this] { recycle_old(); }),
      proven_timer_(loop, [this] { backoff_.reset(); }),
      // Posted, not called: ended_by_server() may run inside take(), under
      // the manager's walk over its waiters.
      young_death_timer_(loop, [this] {
          if (health_ == ServerHealth::Down) hooks_.failed(*this, last_error_code_, last_error_);
      }),
      trim_timer_(loop, [this] { trim_surplus(); }),
      refill_timer_(loop, [this] { pump(waiters_, false); }) {}

// The pool's copy of the password is wiped by its Secret (secret.hpp).
ServerPool::~ServerPool() = default;

void ServerPool::reconfigure(const s5::config::Config& config) {
    keepalive_ = config.keepalive;
    limits_ = PoolLimits{config.pool.min_idle, config.pool.max_associations};
    max_idle_age_ = std::chrono::seconds(config.pool.max_idle_age_s);
    setup_timeout_ = std::chrono::seconds(config.pool.setup_timeout_s);
    schedule_recycle();
    hooks_.changed(*this);
}

const char* ServerPool::state_name() const {
    switch (health_) {
        case ServerHealth::Up: return "up";
        case ServerHealth::Down: return "down";
        case ServerHealth::Unknown: return "connecting";
    }
    return "connecting";
}

void ServerPool::set_health(ServerHealth h) {
    if (h == health_) return;
    health_ = h;
    log_notice({{"S5_SERVER", server_.name}}, "server %s: %s%s%s", server_.name.c_str(), state_name(), h == ServerHealth::Down ? ": " : "",
                h == ServerHealth::Down ? last_error_.c_str() : "");
}

std::unique_ptr<Association> ServerPool::take() {
    bool dropped = false;
    std::optional<Clock::time_point> young;   // the newest dead one, if it died young
    while (!idle_.empty()) {
        // The newest: the least likely to have been dropped silently.
        auto a = std::move(idle_.back());
        idle_.pop_back();
        // Its close may be queued behind the event we are serving (a
        // server crash closes every association at once): skip the dead.
        // An error from the relay that the loop has not dispatched yet
        // counts as dead too (hand_out() checks the claim socket).
        const bool alive = a->alive();
        const bool relay_ok = alive && a->hand_out();
        if (alive && !relay_ok) bump("relays_unreachable");
        if (!relay_ok) {
            if (!young && died_young(a->ready_since(), loop_.now())) young = a->ready_since();
            dropped = true;
            continue;
        }
        ++leased_;
        hooks_.changed(*this);
        return a;
    }
    if (dropped) {
        if (young) ended_by_server(*young, "closed by the server");
        hooks_.changed(*this);
        pump(waiters_, false);
    }
    return nullptr;
}

void ServerPool::suspect(const std::string& why) {
    if (!idle_.empty())
        log_info("server %s: dropping %u idle association(s): %s", server_.name.c_str(), idle(), why.c_str());
    idle_.clear();
    last_error_ = why;
    last_error_code_ = s5::err::Code::ServerTimeout;
    back_off();
    hooks_.changed(*this);
}

void ServerPool::back_off() {
    proven_timer_.disarm();
    set_health(ServerHealth::Down);
    backoff_elapsed_ = false;
    retry_timer_.arm_in(backoff_.next(rng_));
}

void ServerPool::ended_by_server(Clock::time_point ready_since, const std::string& why) {
    const auto now = loop_.now();
    if (!died_young(ready_since, now)) return;
    const auto lived = std::chrono::duration_cast<std::chrono::milliseconds>(now - ready_since);
    last_error_ = "association ended " + std::to_string(lived.count()) + " ms after it was made: " + why;
    last_error_code_ = s5::err::Code::ServerFailure;
    bump("associations_failed");
    log_warning({{"S5_SERVER", server_.name}}, "server %s: %s", server_.name.c_str(), last_error_.c_str());
    back_off();
    hooks_.changed(*this);
    // Requests that only this server could serve fail now, as after a
    // failed setup, instead of waiting out their time-out.
    young_death_timer_.arm_in(std::chrono::microseconds(0));
}

void ServerPool::released() {
    if (leased_ > 0) --leased_;
    pump(waiters_, false);
}

void ServerPool::pump(unsigned waiters, bool new_request) {
    waiters_ = waiters;
    PoolCounts counts{idle(), connecting(), leased_, waiters};
    // Short of descriptors, the pool probes as a down server's does (one
    // attempt at a time, after the backoff or for a new request), though
    // the server itself is fine.
    const ServerHealth as = short_of_descriptors_ ? ServerHealth::Down : health_;
    unsigned n = connects_to_start(counts, limits_, as, backoff_elapsed_, new_request);
    // A hand-out's refill waits for a quiet moment (pool_policy.hpp); every
    // new request pushes it back, the timer's pump starts it.
    if (n > 0 && refill_can_wait(counts, limits_, as)) {
        if (new_request) refill_timer_.arm_in(std::chrono::duration_cast<std::chrono::microseconds>(kRefillQuiet));
        if (refill_timer_.armed()) n = 0;
    }
    for (unsigned i = 0; i < n; ++i)
        if (!start_one()) break;
    // Setups nobody waits for: the newest go first.
    for (unsigned c = connects_to_cancel(counts, limits_); c > 0 && !connecting_.empty(); --c)
        connecting_.erase(std::prev(connecting_.end()));
    if (idle_surplus(counts, limits_) > 0 && !trim_timer_.armed())
        trim_timer_.arm_in(std::chrono::duration_cast<std::chrono::microseconds>(kSurplusLinger));
}

bool ServerPool::start_one() {
    auto slot = budget_.acquire();
    if (!slot) {
        if (hooks_.starved) hooks_.starved(*this);
        return false;
    }
    auto a = std::make_unique<Association>(loop_, server_, keepalive_, setup_timeout_, callbacks());
    const uint64_t id = a->id();
    connecting_.emplace(id, Setup{std::move(a), std::move(*slot)});
    return true;
}

Association::Callbacks ServerPool::callbacks() {
    return Association::Callbacks{
        [this](Association& a) { on_ready(a); },
        [this](Association& a, s5::err::Code c, const std::string& t) { on_failed(a, c, t); },
        [this](Association& a, const std::string& why) { on_idle_closed(a, why); },
    };
}

void ServerPool::adopt_idle(std::unique_ptr<Association> a) {
    a->set_callbacks(callbacks());
    // Oldest first, as on_ready() keeps them.
    auto at = std::find_if(idle_.begin(), idle_.end(),
                           [&](const auto& b) { return b->ready_since() > a->ready_since(); });
    (*idle_.insert(at, std::move(a)))->watch_relay();
    set_health(ServerHealth::Up);
    schedule_recycle();
    hooks_.changed(*this);
}

void ServerPool::on_ready(Association& a) {
    auto it = connecting_.find(a.id());
    if (it == connecting_.end()) return;
    if (durable_) a.make_durable(*durable_);
    idle_.push_back(std::move(it->second.assoc));
    idle_.back()->watch_relay();
    connecting_.erase(it);
    bump("associations_made");
    short_of_descriptors_ = false;
    // Not backoff_.reset(): only an association that lives kProbation
    // proves the server well (see ended_by_server).
    proven_timer_.arm_in(std::chrono::duration_cast<std::chrono::microseconds>(kProbation));
    backoff_elapsed_ = true;
    retry_timer_.disarm();
    last_error_.clear();
    set_health(ServerHealth::Up);
    log_debug("server %s: association %llu ready, relay %s (%u idle)", server_.name.c_str(),
               static_cast<unsigned long long>(a.id()), a.relay().to_string().c_str(), idle());
    schedule_recycle();
    hooks_.changed(*this);
    hooks_.available(*this);
    // A setup slot came free: the rest of the fill (at most kMaxConnecting
    // setups run at once, so a pool of more than that fills in rounds).
    pump(waiters_, false);
}

void ServerPool::on_failed(Association& a, s5::err::Code code, const std::string& text) {
    auto it = connecting_.find(a.id());
    if (it == connecting_.end()) return;
    auto doomed = std::move(it->second.assoc);  // destroyed when we return
    connecting_.erase(it);
    bump("associations_failed");
    if (doomed->relay_refused()) bump("relays_refused");
    last_error_ = text;
    last_error_code_ = code;
    log_warning({{"S5_SERVER", server_.name}}, "server %s: association failed: %s", server_.name.c_str(),
                 text.c_str());
    if (code == s5::err::Code::QuotaExceeded) {
        short_of_descriptors_ = true;
        // The broker is short of descriptors: not the server's fault, so
        // its health stays. Standing demand retries after the backoff (no
        // loop); the requests waiting now are refused at once.
        backoff_elapsed_ = false;
        retry_timer_.arm_in(backoff_.next(rng_));
    } else {
        // Next attempt after the backoff delay; a down server costs no loop.
        back_off();
    }
    hooks_.changed(*this);
    hooks_.failed(*this, code, text);
}

void ServerPool::on_retry() {
    backoff_elapsed_ = true;
    pump(waiters_, false);
}

void ServerPool::on_idle_closed(Association& a, const std::string& why) {
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
        if ((*it)->id() != a.id()) continue;
        auto doomed = std::move(*it);
        idle_.erase(it);
        log_info("server %s: idle association %llu closed (%s)", server_.name.c_str(),
                  static_cast<unsigned long long>(a.id()), why.c_str());
        const int e = doomed->close_error();
        // A relay that answers "unreachable" (association.hpp, watch_relay)
        // is a broken server, as a keepalive timeout or abuse is.
        const bool relay_dead = e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH;
        if (relay_dead) bump("relays_unreachable");
        if (e == ETIMEDOUT || e == EPROTO || relay_dead) {
            suspect(why);
            return;
        }
        if (died_young(doomed->ready_since(), loop_.now())) {
            ended_by_server(doomed->ready_since(), why);
            return;
        }
        hooks_.changed(*this);
        pump(waiters_, false);
        return;
    }
}

void ServerPool::trim_surplus() {
    PoolCounts counts{idle(), connecting(), leased_, waiters_};
    unsigned n = idle_surplus(counts, limits_);
    if (n == 0) return;
    // The oldest: the likeliest to have been dropped silently anyway.
    for (unsigned i = 0; i < n; ++i) idle_.pop_front();
    log_debug("server %s: closed %u idle association(s) beyond min_idle", server_.name.c_str(), n);
    schedule_recycle();
    hooks_.changed(*this);
}

void ServerPool::schedule_recycle() {
    if (idle_.empty()) {
        recycle_timer_.disarm();
        return;
    }
    auto due = idle_.front()->ready_since() + max_idle_age_;
    auto delay = std::chrono::duration_cast<std::chrono::microseconds>(due - loop_.now());
    recycle_timer_.arm_in(delay);
}

void ServerPool::recycle_old() {
    auto now = loop_.now();
    unsigned n = 0;
    while (!idle_.empty() && is_too_old(idle_.front()->ready_since(), now, max_idle_age_)) {
        idle_.pop_front();
        ++n;
    }
    if (n) {
        log_debug("server %s: recycled %u idle association(s) older than %llds", server_.name.c_str(), n,
                   static_cast<long long>(max_idle_age_.count()));
        hooks_.changed(*this);
    }
    schedule_recycle();
    pump(waiters_, false);
}

}  // namespace s5d
