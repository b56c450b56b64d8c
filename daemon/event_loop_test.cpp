// EventLoop's bus driving is fair: a bus with a large backlog (a flood of
// Get/GetAll that anyone may send) is served in batches, and the loop's
// other sources (lease ends, keepalives, timers) run between batches. The
// bus is a stand-in whose fd stays readable until its backlog is served and
// whose every processPendingRequest() serves one message of it, so the test
// counts, not times: a loop that drained the backlog before anything else
// would dispatch the other source only after all of it.
#include "event_loop.hpp"

#include <gtest/gtest.h>
#include <sdbus-c++/IConnection.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <stdexcept>

#include "unique_fd.hpp"

namespace s5d {
namespace {

class BacklogBus final : public sdbus::IConnection {
public:
    explicit BacklogBus(uint64_t backlog) : backlog_(backlog), fd_(eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK)) {}
    uint64_t served() const { return served_; }

    PollData getEventLoopPollData() const override { return PollData{fd_.get(), POLLIN, UINT64_MAX}; }
    bool processPendingRequest() override {
        if (served_ == backlog_) {
            // Served it all: the fd is no longer readable, as a real bus
            // socket with nothing more to read.
            uint64_t n = 0;
            (void)!::read(fd_.get(), &n, sizeof n);
            return false;
        }
        ++served_;
        return true;
    }

    void requestName(const std::string&) override { unused(); }
    void releaseName(const std::string&) override { unused(); }
    std::string getUniqueName() const override { return ":1.0"; }
    void enterEventLoop() override { unused(); }
    void enterEventLoopAsync() override { unused(); }
    void leaveEventLoop() override { unused(); }
    void addObjectManager(const std::string&) override { unused(); }
    void setMethodCallTimeout(uint64_t) override { unused(); }
    uint64_t getMethodCallTimeout() const override { return 0; }
    void addObjectManager(const std::string&, sdbus::floating_slot_t) override { unused(); }
    sdbus::Slot addMatch(const std::string&, sdbus::message_handler) override { unused(); }
    void addMatch(const std::string&, sdbus::message_handler, sdbus::floating_slot_t) override { unused(); }

private:
    [[noreturn]] static void unused() { throw std::logic_error("not used by EventLoop"); }
    const uint64_t backlog_;
    uint64_t served_ = 0;
    s5::UniqueFd fd_;   // eventfd with a count: always readable
};

TEST(EventLoop, ABusBacklogDoesNotStarveOtherSources) {
    constexpr uint64_t kBacklog = 1'000'000;
    EventLoop loop;
    BacklogBus bus(kBacklog);
    // Another readable fd, as a lease's EOF would be.
    s5::UniqueFd other(eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(other);
    uint64_t served_when_other_ran = 0, served_when_timer_ran = 0;
    auto done = [&] {
        if (served_when_other_ran && served_when_timer_ran) loop.exit(0);
    };
    IoWatch watch(loop, other.get(), EPOLLIN, [&](uint32_t) {
        if (!served_when_other_ran) served_when_other_ran = bus.served();
        done();
    });
    // A timer due now, as a keepalive or the signal flush is.
    Timer timer(loop, [&] {
        served_when_timer_ran = bus.served();
        done();
    });
    timer.arm_in(std::chrono::microseconds(0));
    loop.attach_bus(bus);
    ASSERT_EQ(loop.run(), 0);
    loop.detach_bus();
    // Both ran after a few batches at most, long before the backlog was.
    EXPECT_GT(served_when_other_ran, 0u);
    EXPECT_LT(served_when_other_ran, 1000u);
    EXPECT_GT(served_when_timer_ran, 0u);
    EXPECT_LT(served_when_timer_ran, 1000u);
    EXPECT_LT(bus.served(), kBacklog);
}

}  // namespace
}  // namespace s5d
