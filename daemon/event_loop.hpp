// The daemon's one event loop: sd-event from libsystemd, owning every socket,
// timer and signal, with the sdbus-c++ connection driven from it.
//
// RAII wrappers only; no policy. Callbacks run on the loop thread and may
// destroy the source that called them (sd-event keeps it alive for the
// duration of the dispatch).
#pragma once

#include <systemd/sd-event.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sdbus { class IConnection; }

namespace s5d {

using Clock = std::chrono::steady_clock;    // CLOCK_MONOTONIC, as sd-event's timers

// Owns one sd_event_source; disables and unrefs it on destruction.
class EventSource {
public:
    EventSource() = default;
    explicit EventSource(sd_event_source* s) : src_(s) {}
    EventSource(EventSource&& o) noexcept : src_(o.src_) { o.src_ = nullptr; }
    EventSource& operator=(EventSource&& o) noexcept;
    EventSource(const EventSource&) = delete;
    EventSource& operator=(const EventSource&) = delete;
    ~EventSource() { reset(); }
    void reset();
    sd_event_source* get() const { return src_; }
    explicit operator bool() const { return src_ != nullptr; }

private:
    sd_event_source* src_ = nullptr;
};

class EventLoop;

// Watches one fd. The callback gets the epoll revents.
class IoWatch {
public:
    using Callback = std::function<void(uint32_t revents)>;
    IoWatch() = default;
    IoWatch(EventLoop& loop, int fd, uint32_t events, Callback cb);
    void set_events(uint32_t events);
    // Ahead of ordinary sources (pool work) or back among them: callers'
    // requests first, as the bus (EventLoop::drain_bus).
    void set_important(bool important);
    void reset() { src_.reset(); cb_.reset(); }
    explicit operator bool() const { return static_cast<bool>(src_); }

private:
    static int on_io(sd_event_source*, int, uint32_t revents, void* userdata);
    std::unique_ptr<Callback> cb_;      // stable address for sd-event's userdata
    EventSource src_;
};

// A one-shot CLOCK_MONOTONIC timer with 1 µs accuracy (sd-event's default of
// 0 means 250 ms, see docs/design.md §9).
class Timer {
public:
    using Callback = std::function<void()>;
    Timer() = default;
    Timer(EventLoop& loop, Callback cb);
    void arm_in(std::chrono::microseconds delay);
    void arm_at(uint64_t monotonic_usec);
    void disarm();
    bool armed() const;

private:
    static int on_time(sd_event_source*, uint64_t, void* userdata);
    EventLoop* loop_ = nullptr;
    std::unique_ptr<Callback> cb_;
    EventSource src_;
};

class EventLoop {
public:
    EventLoop();                                 // throws std::system_error
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    sd_event* get() const { return ev_; }
    uint64_t now_usec() const;                   // CLOCK_MONOTONIC, cached per iteration
    Clock::time_point now() const;

    // Blocks the signal and calls `cb` from the loop when it arrives.
    void on_signal(int signo, std::function<void()> cb);
    // Sends WATCHDOG=1 by itself when $WATCHDOG_USEC is set.
    void enable_watchdog();

    // Drives `bus` from this loop: an io source on its fd and a timer, both
    // re-armed from getEventLoopPollData() in a prepare callback before every
    // poll, and processPendingRequest() until it returns false on each wake-up.
    void attach_bus(sdbus::IConnection& bus);
    // Stops driving it (before the connection is destroyed).
    void detach_bus();
    // Called (from the loop, once) when the attached connection fails; the
    // bus is detached first. Without it the loop exits with status 1.
    void on_bus_lost(std::function<void(const std::string& why)> cb) { bus_lost_ = std::move(cb); }

    int run();                                   // until exit(); returns its code
    void exit(int code);

private:
    static int on_bus_prepare(sd_event_source*, void* userdata);
    static int on_bus_io(sd_event_source*, int, uint32_t, void* userdata);
    static int on_bus_time(sd_event_source*, uint64_t, void* userdata);
    static int on_signal_cb(sd_event_source*, const struct signalfd_siginfo*, void* userdata);
    void drain_bus();

    sd_event* ev_ = nullptr;
    sdbus::IConnection* bus_ = nullptr;
    EventSource bus_io_, bus_timer_;
    static constexpr unsigned kBusBatch = 64;
    int64_t bus_priority_ = 0;
    std::function<void(const std::string&)> bus_lost_;
    std::vector<std::pair<EventSource, std::unique_ptr<std::function<void()>>>> signals_;
};

}  // namespace s5d
