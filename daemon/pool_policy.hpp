// Pure decisions of a server's association pool: how long to wait before
// the next attempt after failures, how many associations to start now, and
// which idle ones are too old. No I/O and no clock of its own: callers pass
// the time and the random source, so unit tests are exact.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

#include "config.hpp"

namespace s5d {

// Exponential backoff with jitter: the n-th consecutive failure waits a
// random time in [base/2, base] where base = initial * 2^(n-1), capped at
// `max`. Jitter keeps many brokers (or pools) from retrying in lockstep.
class Backoff {
public:
    using ms = std::chrono::milliseconds;
    explicit Backoff(ms initial = ms(100), ms max = ms(30000)) : initial_(initial), max_(max) {}

    template <typename Rng>
    ms next(Rng& rng) {
        ++failures_;
        int64_t base = initial_.count();
        for (unsigned i = 1; i < failures_ && base < max_.count(); ++i) base *= 2;
        base = std::min<int64_t>(base, max_.count());
        std::uniform_int_distribution<int64_t> d(base / 2, base);
        return ms(d(rng));
    }
    void reset() { failures_ = 0; }
    unsigned failures() const { return failures_; }

private:
    ms initial_, max_;
    unsigned failures_ = 0;
};

struct PoolCounts {
    unsigned idle = 0;          // ready, unleased
    unsigned connecting = 0;    // being set up
    unsigned leased = 0;        // held by leases
    unsigned waiters = 0;       // requests and renewals that would take one
};

struct PoolLimits {
    unsigned min_idle = 0;
    unsigned max_associations = 1;
};

enum class ServerHealth { Unknown, Up, Down };

// How many associations to start now. A pool wants min_idle idle ones plus
// one per waiter. While the server is down it probes with at most one
// attempt at a time, and only when the backoff delay has elapsed or a new
// request has just arrived (so a client gets a fresh answer, but standing
// demand cannot turn failures into a busy loop).
// At most this many setups in flight per server: a burst of requests must
// not become a burst of connects (2,000 requests once started ~258, and
// overwhelmed the server); the rest wait for these to finish.
inline constexpr unsigned kMaxConnecting = 32;

inline unsigned connects_to_start(const PoolCounts& c, const PoolLimits& l, ServerHealth health,
                                  bool backoff_elapsed, bool new_request) {
    unsigned total = c.idle + c.connecting + c.leased;
    unsigned capacity = l.max_associations > total ? l.max_associations - total : 0;
    unsigned wanted = l.min_idle + c.waiters;
    unsigned have = c.idle + c.connecting;
    unsigned room = c.connecting < kMaxConnecting ? kMaxConnecting - c.connecting : 0;
    unsigned need = std::min({wanted > have ? wanted - have : 0u, capacity, room});
    if (health != ServerHealth::Down) return need;
    if (c.connecting > 0) return 0;
    return (backoff_elapsed || new_request) ? std::min(need, 1u) : 0;
}

// Whether the refill after a hand-out may wait for a quiet moment: the
// server is up, nobody waits, and at least half of min_idle is still idle.
// Refilling while requests keep coming would put a TCP handshake's worth of
// the broker's work (and the server's) between every two of them; so a
// burst the pool covers is served first, and the pool refills once
// kRefillQuiet passes without a hand-out, or at once when half of it is
// gone.
inline constexpr std::chrono::milliseconds kRefillQuiet{2};

inline bool refill_can_wait(const PoolCounts& c, const PoolLimits& l, ServerHealth health) {
    return health == ServerHealth::Up && c.waiters == 0 && c.idle > 0 && c.idle * 2 >= l.min_idle;
}

// Setups nobody waits for any more (their requests left or were served
// elsewhere): the ones beyond min_idle + waiters, counting idle ones first.
inline unsigned connects_to_cancel(const PoolCounts& c, const PoolLimits& l) {
    const unsigned wanted = l.min_idle + c.waiters;
    const unsigned still_needed = wanted > c.idle ? wanted - c.idle : 0;
    return c.connecting > still_needed ? c.connecting - still_needed : 0;
}

// Idle associations beyond min_idle + waiters (left by a burst): closed
// after kSurplusLinger, not after max_idle_age_s (600 s).
inline constexpr std::chrono::seconds kSurplusLinger{5};
inline unsigned idle_surplus(const PoolCounts& c, const PoolLimits& l) {
    const unsigned wanted = l.min_idle + c.waiters;
    return c.idle > wanted ? c.idle - wanted : 0;
}

// TCP_USER_TIMEOUT for a control connection: as long as keepalive takes
// to give up (idle + interval * count seconds), in milliseconds, computed
// without overflow and capped where the kernel's int ends (a config may
// accept interval 32767 and count 127: 4,161,419,000 ms).
inline unsigned tcp_user_timeout_ms(const s5::config::Keepalive& k) {
    const uint64_t ms = (uint64_t{k.idle_s} + uint64_t{k.interval_s} * k.count) * 1000u;
    return static_cast<unsigned>(std::min<uint64_t>(ms, 0x7fffffffu));
}

// An association that the server ends within this time of being made is a
// failure of the server, not a success: a server that answers the UDP
// ASSOCIATE and then hangs up (or sends garbage and is dropped) would
// otherwise reset the backoff with every good handshake and be reconnected
// to in a busy loop. The backoff is reset only once an association has
// lived this long.
inline constexpr std::chrono::seconds kProbation{5};

template <typename TimePoint>
bool died_young(TimePoint ready_since, TimePoint now) {
    return now - ready_since < kProbation;
}

// An idle association older than max_idle_age is closed and replaced:
// servers and middleboxes drop long-idle connections without telling us.
template <typename TimePoint, typename Duration>
bool is_too_old(TimePoint ready_since, TimePoint now, Duration max_idle_age) {
    return now - ready_since >= max_idle_age;
}

}  // namespace s5d
