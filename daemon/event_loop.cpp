#include "event_loop.hpp"

#include <sdbus-c++/IConnection.h>
#include <signal.h>

#include <cerrno>
#include <memory>
#include <system_error>
#include <vector>

#include "log.hpp"

namespace s5d {
namespace {

void check(int r, const char* what) {
    if (r < 0) throw std::system_error(-r, std::generic_category(), what);
}

}  // namespace

EventSource& EventSource::operator=(EventSource&& o) noexcept {
    if (this != &o) {
        reset();
        src_ = o.src_;
        o.src_ = nullptr;
    }
    return *this;
}

void EventSource::reset() {
    if (src_) {
        sd_event_source_set_enabled(src_, SD_EVENT_OFF);
        sd_event_source_unref(src_);
        src_ = nullptr;
    }
}

IoWatch::IoWatch(EventLoop& loop, int fd, uint32_t events, Callback cb)
    : cb_(std::make_unique<Callback>(std::move(cb))) {
    sd_event_source* s = nullptr;
    check(sd_event_add_io(loop.get(), &s, fd, events, &IoWatch::on_io, cb_.get()), "sd_event_add_io");
    src_ = EventSource(s);
}

void IoWatch::set_events(uint32_t events) {
    if (src_) check(sd_event_source_set_io_events(src_.get(), events), "sd_event_source_set_io_events");
}

void IoWatch::set_important(bool important) {
    if (src_)
        check(sd_event_source_set_priority(src_.get(),
                                           important ? SD_EVENT_PRIORITY_IMPORTANT : SD_EVENT_PRIORITY_NORMAL),
              "sd_event_source_set_priority");
}

int IoWatch::on_io(sd_event_source*, int, uint32_t revents, void* userdata) {
    // Copy: the callback may reset() the watch that owns it.
    Callback cb = *static_cast<Callback*>(userdata);
    try {
        cb(revents);
    } catch (const std::exception& e) {
        log_error("unhandled exception in I/O handler: %s", e.what());
    } catch (...) {
        log_error("unhandled non-standard exception in I/O handler");
    }
    return 0;
}

Timer::Timer(EventLoop& loop, Callback cb) : loop_(&loop), cb_(std::make_unique<Callback>(std::move(cb))) {
    sd_event_source* s = nullptr;
    check(sd_event_add_time(loop.get(), &s, CLOCK_MONOTONIC, UINT64_MAX, 1, &Timer::on_time, cb_.get()),
          "sd_event_add_time");
    sd_event_source_set_enabled(s, SD_EVENT_OFF);
    src_ = EventSource(s);
}

void Timer::arm_at(uint64_t usec) {
    if (!src_) return;
    check(sd_event_source_set_time(src_.get(), usec), "sd_event_source_set_time");
    check(sd_event_source_set_enabled(src_.get(), SD_EVENT_ONESHOT), "sd_event_source_set_enabled");
}

void Timer::arm_in(std::chrono::microseconds delay) {
    if (loop_) arm_at(loop_->now_usec() + static_cast<uint64_t>(std::max<int64_t>(0, delay.count())));
}

void Timer::disarm() {
    if (src_) sd_event_source_set_enabled(src_.get(), SD_EVENT_OFF);
}

bool Timer::armed() const {
    int enabled = SD_EVENT_OFF;
    if (src_) sd_event_source_get_enabled(src_.get(), &enabled);
    return enabled != SD_EVENT_OFF;
}

int Timer::on_time(sd_event_source*, uint64_t, void* userdata) {
    Callback cb = *static_cast<Callback*>(userdata);
    try {
        cb();
    } catch (const std::exception& e) {
        log_error("unhandled exception in timer handler: %s", e.what());
    } catch (...) {
        log_error("unhandled non-standard exception in timer handler");
    }
    return 0;
}

EventLoop::EventLoop() { check(sd_event_new(&ev_), "sd_event_new"); }

EventLoop::~EventLoop() {
    bus_io_.reset();
    bus_timer_.reset();
    signals_.clear();
    sd_event_unref(ev_);
}

uint64_t EventLoop::now_usec() const {
    uint64_t now = 0;
    if (sd_event_now(ev_, CLOCK_MONOTONIC, &now) < 0) {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
    }
    return now;
}

Clock::time_point EventLoop::now() const {
    return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::microseconds(now_usec())));
}

void EventLoop::on_signal(int signo, std::function<void()> cb) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) < 0) check(-errno, "sigprocmask");
    auto fn = std::make_unique<std::function<void()>>(std::move(cb));
    sd_event_source* s = nullptr;
    check(sd_event_add_signal(ev_, &s, signo, &EventLoop::on_signal_cb, fn.get()), "sd_event_add_signal");
    signals_.emplace_back(EventSource(s), std::move(fn));
}

int EventLoop::on_signal_cb(sd_event_source*, const struct signalfd_siginfo*, void* userdata) {
    try {
        (*static_cast<std::function<void()>*>(userdata))();
    } catch (const std::exception& e) {
        log_error("unhandled exception in signal handler: %s", e.what());
    } catch (...) {
        log_error("unhandled non-standard exception in signal handler");
    }
    return 0;
}

void EventLoop::enable_watchdog() { check(sd_event_set_watchdog(ev_, 1), "sd_event_set_watchdog"); }

void EventLoop::attach_bus(sdbus::IConnection& bus) {
    bus_ = &bus;
    auto pd = bus.getEventLoopPollData();
    sd_event_source* io = nullptr;
    check(sd_event_add_io(ev_, &io, pd.fd, 0, &EventLoop::on_bus_io, this), "sd_event_add_io(bus)");
    bus_io_ = EventSource(io);
    check(sd_event_source_set_prepare(io, &EventLoop::on_bus_prepare), "sd_event_source_set_prepare");
    // Callers first: with many pool refills in flight, their handshake
    // events must not queue ahead of the bus requests they exist to serve.
    check(sd_event_source_set_priority(io, SD_EVENT_PRIORITY_IMPORTANT), "sd_event_source_set_priority");
    bus_priority_ = SD_EVENT_PRIORITY_IMPORTANT;
    sd_event_source* t = nullptr;
    check(sd_event_add_time(ev_, &t, CLOCK_MONOTONIC, UINT64_MAX, 1, &EventLoop::on_bus_time, this),
          "sd_event_add_time(bus)");
    bus_timer_ = EventSource(t);
    check(sd_event_source_set_priority(t, SD_EVENT_PRIORITY_IMPORTANT), "sd_event_source_set_priority");
    // Whatever arrived while we were connecting and requesting the name.
    drain_bus();
}

int EventLoop::on_bus_prepare(sd_event_source*, void* userdata) {
    auto* self = static_cast<EventLoop*>(userdata);
    try {
        auto pd = self->bus_->getEventLoopPollData();
        sd_event_source_set_io_events(self->bus_io_.get(), static_cast<uint32_t>(pd.events));
        if (pd.timeout_usec == UINT64_MAX) {
            sd_event_source_set_enabled(self->bus_timer_.get(), SD_EVENT_OFF);
        } else {
            sd_event_source_set_time(self->bus_timer_.get(), pd.timeout_usec);
            sd_event_source_set_enabled(self->bus_timer_.get(), SD_EVENT_ONESHOT);
        }
    } catch (const std::exception& e) {
        log_error("D-Bus poll data: %s", e.what());
        self->exit(1);
    }
    return 0;
}

int EventLoop::on_bus_io(sd_event_source*, int, uint32_t, void* userdata) {
    static_cast<EventLoop*>(userdata)->drain_bus();
    return 0;
}

int EventLoop::on_bus_time(sd_event_source*, uint64_t, void* userdata) {
    static_cast<EventLoop*>(userdata)->drain_bus();
    return 0;
}

// At most kBusBatch messages per dispatch. The bus sources are IMPORTANT
// (callers before pool refills), which would let a flood of calls from
// anyone (Get/GetAll are open to all) starve lease ends and keepalives: after
// a batch that left work behind they drop to NORMAL, where sd-event serves
// whatever has waited longest first, and go back once the bus is drained.
void EventLoop::drain_bus() {
    try {
        unsigned n = 0;
        bool more = true;
        while (n < kBusBatch && (more = bus_->processPendingRequest())) ++n;
        const int64_t prio = more ? SD_EVENT_PRIORITY_NORMAL : SD_EVENT_PRIORITY_IMPORTANT;
        if (prio != bus_priority_) {
            bus_priority_ = prio;
            sd_event_source_set_priority(bus_io_.get(), prio);
            sd_event_source_set_priority(bus_timer_.get(), prio);
        }
    } catch (const std::exception& e) {
        // The connection itself failed (bus daemon gone). With a handler the
        // broker keeps its leases and reconnects; without one nothing can
        // be served any more: exit non-zero so systemd restarts us.
        if (!bus_lost_) {
            log_error("D-Bus connection failed: %s; exiting", e.what());
            exit(1);
            return;
        }
        detach_bus();
        bus_lost_(e.what());
    }
}

void EventLoop::detach_bus() {
    bus_io_.reset();
    bus_timer_.reset();
    bus_ = nullptr;
}

int EventLoop::run() {
    int r = sd_event_loop(ev_);
    if (r < 0) throw std::system_error(-r, std::generic_category(), "sd_event_loop");
    return r;
}

void EventLoop::exit(int code) { sd_event_exit(ev_, code); }

}  // namespace s5d
