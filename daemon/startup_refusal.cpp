#include "startup_refusal.hpp"

#include <systemd/sd-bus.h>
#include <time.h>

#include <cstdint>

#include "log.hpp"

namespace s5d {

namespace {

uint64_t now_usec() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

int refuse(sd_bus_message* m, void* userdata, sd_bus_error*) {
    uint8_t type = 0;
    if (sd_bus_message_get_type(m, &type) < 0 || type != SD_BUS_MESSAGE_METHOD_CALL) return 0;
    auto* answered = static_cast<unsigned*>(userdata);
    ++*answered;
    if (sd_bus_message_get_expect_reply(m)) {
        sd_bus_error e = SD_BUS_ERROR_MAKE_CONST(
            "org.freedesktop.DBus.Error.Spawn.ChildExited",
            "s5brokerd cannot start: its configuration is invalid (exit status 78; see journalctl -u s5brokerd)");
        (void)sd_bus_reply_method_error(m, &e);
    }
    return 1;   // nobody else handles anything here
}

}  // namespace

void refuse_calls_until_quiet(const char* bus_name, bool session_bus) {
    constexpr uint64_t kQuiet = 100000, kMax = 2000000;   // µs
    sd_bus* bus = nullptr;
    if ((session_bus ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus)) < 0) return;
    unsigned answered = 0;
    sd_bus_slot* slot = nullptr;
    // Not SD_BUS_NAME_QUEUE: a broker that serves already keeps the name.
    if (sd_bus_add_filter(bus, &slot, refuse, &answered) >= 0 && sd_bus_request_name(bus, bus_name, 0) >= 0) {
        const uint64_t start = now_usec();
        uint64_t last = start;
        for (;;) {
            const unsigned before = answered;
            int r = sd_bus_process(bus, nullptr);
            if (r < 0) break;
            const uint64_t t = now_usec();
            if (answered != before) last = t;
            if (t - last >= kQuiet || t - start >= kMax) break;
            if (r == 0 && sd_bus_wait(bus, kQuiet - (t - last)) < 0) break;
        }
        if (answered) log_notice("refused %u call(s) that came while the configuration is invalid", answered);
        (void)sd_bus_flush(bus);
    }
    sd_bus_slot_unref(slot);
    sd_bus_flush_close_unref(bus);
}

}  // namespace s5d
