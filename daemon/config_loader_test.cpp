// ConfigLoader: the read runs on a worker thread while the event loop goes
// on serving; the result is applied on the loop; a reload asked for while
// one runs is answered by a fresh read. The read is injected: it blocks
// until the test (from the loop) lets it go, so nothing here waits on a
// clock, and the loop's own timer proves it kept running.
#include "config_loader.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace s5d {
namespace {

using namespace std::chrono_literals;

// A read that blocks until released, counting how often it ran.
class GatedRead {
public:
    LoadedConfig operator()() {
        std::unique_lock<std::mutex> g(m_);
        ++started_;
        cv_.notify_all();
        cv_.wait(g, [&] { return released_ >= started_; });
        LoadedConfig out;
        out.config = s5::config::parse(R"({"servers": [], "routes": []})");
        out.warnings.push_back("read " + std::to_string(started_));
        return out;
    }
    void release_one() {
        std::lock_guard<std::mutex> g(m_);
        ++released_;
        cv_.notify_all();
    }
    int started() {
        std::lock_guard<std::mutex> g(m_);
        return started_;
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    int started_ = 0, released_ = 0;
};

TEST(ConfigLoader, TheLoopKeepsServingWhileAReadBlocks) {
    EventLoop loop;
    GatedRead gate;
    const auto loop_thread = std::this_thread::get_id();
    bool applied_on_loop = false;
    std::vector<std::string> applied;
    ConfigLoader loader(
        loop, [&gate] { return gate(); },
        [&](LoadedConfig& c) -> std::optional<std::string> {
            applied_on_loop = std::this_thread::get_id() == loop_thread;
            applied.push_back(c.warnings.empty() ? "" : c.warnings.front());
            return std::nullopt;
        });
    std::vector<std::string> answers;   // which read answered each caller
    int ticks_while_blocked = 0;
    loader.load([&](const std::optional<std::string>& err) {
        EXPECT_FALSE(err);
        answers.push_back("first:" + applied.back());
    });
    // The loop ticks while the worker is stuck in the read: five ticks with
    // the first read still held, then a second reload is asked for (it must
    // get a read of its own, started after it asked), then both reads go.
    Timer tick(loop, [] {});
    tick = Timer(loop, [&] {
        if (gate.started() == 1 && applied.empty() && ++ticks_while_blocked < 5) {
            tick.arm_in(1ms);
            return;
        }
        if (ticks_while_blocked == 5) {
            ++ticks_while_blocked;
            loader.load([&](const std::optional<std::string>& err) {
                EXPECT_FALSE(err);
                answers.push_back("second:" + applied.back());
                loop.exit(0);
            });
            gate.release_one();   // the first read ends; the second starts
            gate.release_one();   // and may end too
            return;
        }
        tick.arm_in(1ms);   // the worker has not started yet
    });
    tick.arm_in(1ms);
    ASSERT_EQ(loop.run(), 0);
    EXPECT_GE(ticks_while_blocked, 5);
    EXPECT_TRUE(applied_on_loop);
    EXPECT_EQ(gate.started(), 2);
    ASSERT_EQ(answers.size(), 2u);
    EXPECT_EQ(answers[0], "first:read 1");
    EXPECT_EQ(answers[1], "second:read 2");
}

TEST(ConfigLoader, AnApplyThatThrowsIsAnErrorForItsCallers) {
    EventLoop loop;
    ConfigLoader loader(
        loop, [] { return LoadedConfig{s5::config::parse("{}"), {}, {}}; },
        [](LoadedConfig&) -> std::optional<std::string> { throw std::runtime_error("boom"); });
    std::optional<std::string> got;
    loader.load([&](const std::optional<std::string>& err) {
        got = err;
        loop.exit(0);
    });
    ASSERT_EQ(loop.run(), 0);
    ASSERT_TRUE(got);
    EXPECT_NE(got->find("boom"), std::string::npos);
}

}  // namespace
}  // namespace s5d
