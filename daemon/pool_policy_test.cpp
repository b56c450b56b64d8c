#include "pool_policy.hpp"

#include <gtest/gtest.h>

#include <set>

namespace s5d {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, DoublesWithJitterUpToTheCap) {
    std::mt19937_64 rng(42);
    Backoff b(milliseconds(100), milliseconds(30000));
    int64_t base = 100;
    for (int i = 0; i < 20; ++i) {
        auto d = b.next(rng).count();
        EXPECT_GE(d, base / 2) << i;
        EXPECT_LE(d, base) << i;
        base = std::min<int64_t>(base * 2, 30000);
    }
    EXPECT_EQ(b.failures(), 20u);
    b.reset();
    auto d = b.next(rng).count();
    EXPECT_GE(d, 50);
    EXPECT_LE(d, 100);
}

TEST(Backoff, JitterVaries) {
    std::mt19937_64 rng(1);
    std::set<int64_t> seen;
    for (int i = 0; i < 50; ++i) {
        Backoff b;
        for (int k = 0; k < 5; ++k) b.next(rng);
        seen.insert(b.next(rng).count());
    }
    EXPECT_GT(seen.size(), 10u);
}

PoolLimits limits(unsigned min_idle, unsigned max) { return PoolLimits{min_idle, max}; }

TEST(PoolPlan, FillsToMinIdlePlusWaiters) {
    EXPECT_EQ(connects_to_start({0, 0, 0, 0}, limits(2, 100), ServerHealth::Unknown, true, false), 2u);
    EXPECT_EQ(connects_to_start({1, 0, 5, 0}, limits(2, 100), ServerHealth::Up, false, false), 1u);
    EXPECT_EQ(connects_to_start({0, 1, 0, 3}, limits(2, 100), ServerHealth::Up, false, true), 4u);
    EXPECT_EQ(connects_to_start({2, 0, 0, 0}, limits(2, 100), ServerHealth::Up, false, false), 0u);
    EXPECT_EQ(connects_to_start({3, 1, 0, 0}, limits(2, 100), ServerHealth::Up, false, false), 0u);
}

TEST(PoolPlan, NeverExceedsMaxAssociations) {
    EXPECT_EQ(connects_to_start({0, 0, 9, 5}, limits(2, 10), ServerHealth::Up, false, true), 1u);
    EXPECT_EQ(connects_to_start({1, 0, 9, 5}, limits(2, 10), ServerHealth::Up, false, true), 0u);
    EXPECT_EQ(connects_to_start({0, 0, 12, 5}, limits(2, 10), ServerHealth::Up, false, true), 0u);
}

TEST(PoolPlan, DownServerProbesOneAtATimeAfterBackoffOrNewRequest) {
    // Standing demand alone waits for the backoff.
    EXPECT_EQ(connects_to_start({0, 0, 0, 3}, limits(2, 100), ServerHealth::Down, false, false), 0u);
    EXPECT_EQ(connects_to_start({0, 0, 0, 3}, limits(2, 100), ServerHealth::Down, true, false), 1u);
    // A new request gets a probe at once.
    EXPECT_EQ(connects_to_start({0, 0, 0, 1}, limits(0, 100), ServerHealth::Down, false, true), 1u);
    // Never two probes in flight.
    EXPECT_EQ(connects_to_start({0, 1, 0, 3}, limits(2, 100), ServerHealth::Down, true, true), 0u);
    // Nothing wanted, nothing started.
    EXPECT_EQ(connects_to_start({0, 0, 0, 0}, limits(0, 100), ServerHealth::Down, true, true), 0u);
}

TEST(PoolPlan, IdleAge) {
    using TP = std::chrono::steady_clock::time_point;
    TP t0{};
    EXPECT_FALSE(is_too_old(t0, t0 + std::chrono::seconds(599), std::chrono::seconds(600)));
    EXPECT_TRUE(is_too_old(t0, t0 + std::chrono::seconds(600), std::chrono::seconds(600)));
}

}  // namespace
}  // namespace s5d

TEST(Probation, AnAssociationEndedWithinItIsAFailureOfTheServer) {
    using s5d::died_young;
    using s5d::kProbation;
    using namespace std::chrono;
    const steady_clock::time_point ready{seconds(100)};
    EXPECT_TRUE(died_young(ready, ready));
    EXPECT_TRUE(died_young(ready, ready + kProbation - milliseconds(1)));
    EXPECT_FALSE(died_young(ready, ready + kProbation));
    EXPECT_FALSE(died_young(ready, ready + hours(1)));
}

TEST(Keepalive, UserTimeoutIsComputedWithoutOverflowAndCapped) {
    using s5d::tcp_user_timeout_ms;
    EXPECT_EQ(tcp_user_timeout_ms({10, 3, 3}), 19000u);
    // Accepted by the config: 10 + 32767 * 127 seconds does not fit an int
    // of milliseconds; the kernel refused the overflowed value.
    EXPECT_EQ(tcp_user_timeout_ms({10, 32767, 127}), 0x7fffffffu);
    EXPECT_EQ(tcp_user_timeout_ms({1, 1, 1}), 2000u);
}

TEST(Bursts, SetupsInFlightAreBoundedPerServer) {
    using namespace s5d;
    PoolLimits l{2, 4096};
    EXPECT_EQ(connects_to_start({0, 0, 0, 2000}, l, ServerHealth::Up, true, true), kMaxConnecting);
    EXPECT_EQ(connects_to_start({0, kMaxConnecting, 0, 2000}, l, ServerHealth::Up, true, true), 0u);
    EXPECT_EQ(connects_to_start({0, 30, 0, 2000}, l, ServerHealth::Up, true, true), 2u);
}

TEST(Bursts, SetupsNobodyWaitsForAreCancelled) {
    using namespace s5d;
    PoolLimits l{2, 4096};
    // The 2,000 requesters left: of 32 setups, min_idle's 2 stay.
    EXPECT_EQ(connects_to_cancel({0, 32, 0, 0}, l), 30u);
    // Idle ones count first: with 2 idle, no setup is needed.
    EXPECT_EQ(connects_to_cancel({2, 5, 0, 0}, l), 5u);
    EXPECT_EQ(connects_to_cancel({0, 5, 0, 3}, l), 0u);
    EXPECT_EQ(connects_to_cancel({0, 0, 0, 0}, l), 0u);
}

TEST(Bursts, IdleBeyondMinIdleIsSurplus) {
    using namespace s5d;
    PoolLimits l{2, 4096};
    EXPECT_EQ(idle_surplus({256, 0, 0, 0}, l), 254u);
    EXPECT_EQ(idle_surplus({256, 0, 0, 300}, l), 0u);
    EXPECT_EQ(idle_surplus({2, 0, 10, 0}, l), 0u);
}

TEST(Refill, AHandOutsRefillWaitsOnlyWhileHalfThePoolIsLeftAndNobodyWaits) {
    using namespace s5d;
    const PoolLimits l{8, 64};
    EXPECT_TRUE(refill_can_wait({8, 0, 0, 0}, l, ServerHealth::Up));
    EXPECT_TRUE(refill_can_wait({4, 0, 4, 0}, l, ServerHealth::Up));
    EXPECT_FALSE(refill_can_wait({3, 0, 5, 0}, l, ServerHealth::Up)) << "more than half gone: at once";
    EXPECT_FALSE(refill_can_wait({8, 0, 0, 1}, l, ServerHealth::Up)) << "somebody waits";
    EXPECT_FALSE(refill_can_wait({0, 0, 0, 0}, PoolLimits{0, 64}, ServerHealth::Up)) << "nothing idle";
    EXPECT_FALSE(refill_can_wait({8, 0, 0, 0}, l, ServerHealth::Down));
    EXPECT_FALSE(refill_can_wait({8, 0, 0, 0}, l, ServerHealth::Unknown));
}
