// How many association setups (TCP connect + SOCKS handshake) may be in
// flight in the whole broker. Per server the pool policy already caps them
// (kMaxConnecting); across servers this does: 10,000 configured servers once
// meant ~19,800 sockets opened at start-up, and a route of 2,000 servers that
// were all down a request answered after 71 s instead of its timeout_ms.
// A pool that finds no slot says so (it is "starved") and is pumped again
// when one frees up. No I/O: a counter and RAII slots.
#pragma once

#include <functional>
#include <optional>
#include <utility>

namespace s5d {

class SetupBudget {
public:
    static constexpr unsigned kDefaultMax = 256;

    explicit SetupBudget(unsigned max = kDefaultMax) : max_(max) {}
    SetupBudget(const SetupBudget&) = delete;
    SetupBudget& operator=(const SetupBudget&) = delete;

    // Held by one setup; gives its place back when destroyed.
    class Slot {
    public:
        Slot() = default;
        Slot(Slot&& o) noexcept : budget_(std::exchange(o.budget_, nullptr)) {}
        Slot& operator=(Slot&& o) noexcept {
            if (this != &o) {
                reset();
                budget_ = std::exchange(o.budget_, nullptr);
            }
            return *this;
        }
        ~Slot() { reset(); }
        void reset() {
            if (budget_) std::exchange(budget_, nullptr)->release();
        }

    private:
        friend class SetupBudget;
        explicit Slot(SetupBudget* b) : budget_(b) {}
        SetupBudget* budget_ = nullptr;
    };

    std::optional<Slot> acquire() {
        if (used_ >= max_) return std::nullopt;
        ++used_;
        return Slot(this);
    }
    unsigned used() const { return used_; }
    unsigned free() const { return max_ - used_; }
    // Called after a slot is given back (the owner must not re-enter the
    // pools from here: post the work).
    void set_on_freed(std::function<void()> f) { on_freed_ = std::move(f); }

private:
    void release() {
        --used_;
        if (on_freed_) on_freed_();
    }
    unsigned max_;
    unsigned used_ = 0;
    std::function<void()> on_freed_;
};

}  // namespace s5d
