// s5brokerd: holds authenticated SOCKS5 control connections and hands out
// UDP associations over D-Bus (org.s5broker.Broker1). See s5brokerd(8).
#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <time.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <set>
#include <random>

#include "bus.hpp"
#include "config.hpp"
#include "config_loader.hpp"
#include "durable_state.hpp"
#include "event_loop.hpp"
#include "log.hpp"
#include "log_control.hpp"
#include "manager.hpp"
#include "pool_policy.hpp"
#include "s5broker_version.h"
#include "startup_refusal.hpp"

namespace {

constexpr const char* kBusName = "org.s5broker.Broker1";
constexpr const char* kDefaultConfig = S5BROKER_DEFAULT_CONFIG;  // sysconfdir/s5broker/s5brokerd.json
constexpr int kExitConfig = 78;  // EX_CONFIG: systemd shows it as "CONFIG"

struct Options {
    std::string config = kDefaultConfig;
    bool session_bus = false;
    bool debug = false;
};

void usage(FILE* out) {
    std::fprintf(out,
                 "Usage: s5brokerd [OPTIONS]\n"
                 "Broker for SOCKS5 UDP associations over D-Bus (%s).\n\n"
                 "  --config PATH        configuration file (default %s)\n"
                 "  --bus=system|session bus to serve on (default system; DBUS_SYSTEM_BUS_ADDRESS\n"
                 "                       selects a private system-type bus)\n"
                 "  --debug              log debug messages\n"
                 "  --help               show this help\n"
                 "  --version            show the version\n",
                 kBusName, kDefaultConfig);
}

// Lease ids are never reused within a boot, so that `journalctl
// S5_LEASE=<id>` names one lease across daemon restarts: each start counts
// up from the CLOCK_BOOTTIME microsecond it started at. A broker that ran
// before made at most one lease per microsecond it ran (a lease costs tens
// of microseconds), so its ids all lie below this one.
uint64_t first_lease_id() {
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

// Returns -1 to go on, else the exit code.
int parse_args(int argc, char** argv, Options& o) {
    enum { OPT_CONFIG = 1, OPT_BUS, OPT_HELP, OPT_VERSION, OPT_DEBUG };
    static const option longopts[] = {
        {"config", required_argument, nullptr, OPT_CONFIG}, {"bus", required_argument, nullptr, OPT_BUS},
        {"help", no_argument, nullptr, OPT_HELP},           {"version", no_argument, nullptr, OPT_VERSION},
        {"debug", no_argument, nullptr, OPT_DEBUG},         {nullptr, 0, nullptr, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, nullptr)) != -1) {
        switch (c) {
            case OPT_CONFIG: o.config = optarg; break;
            case OPT_BUS:
                if (std::strcmp(optarg, "system") == 0)
                    o.session_bus = false;
                else if (std::strcmp(optarg, "session") == 0)
                    o.session_bus = true;
                else {
                    std::fprintf(stderr, "s5brokerd: --bus must be \"system\" or \"session\", not \"%s\"\n", optarg);
                    return 2;
                }
                break;
            case OPT_DEBUG: o.debug = true; break;
            case OPT_HELP: usage(stdout); return 0;
            case OPT_VERSION: std::printf("s5brokerd %s\n", S5BROKER_VERSION); return 0;
            default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        std::fprintf(stderr, "s5brokerd: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    return -1;
}

// One connection to the bus with everything published on it. Rebuilt when
// the bus daemon comes back; the manager, its leases and pools outlive it.
struct BusSession {
    std::unique_ptr<sdbus::IConnection> conn;
    std::unique_ptr<s5d::Bus> bus;
    std::unique_ptr<s5d::LogControl> log_control;
    ~BusSession() {
        // The objects go before the connection they are registered on.
        log_control.reset();
        bus.reset();
    }
};

// Connects, publishes every object and then owns the name (so that the
// name's appearance means the service is complete); nullptr and `error` on
// failure.
std::unique_ptr<BusSession> open_session(const Options& opts, s5d::Manager& manager, const std::set<gid_t>& gids,
                                         const s5d::Bus::Reloader& reloader, std::string& error) {
    auto s = std::make_unique<BusSession>();
    try {
        s->conn = opts.session_bus ? sdbus::createSessionBusConnection() : sdbus::createSystemBusConnection();
    } catch (const sdbus::Error& e) {
        error = std::string("cannot connect to the ") + (opts.session_bus ? "session" : "system") +
                " bus: " + e.getMessage();
        return nullptr;
    }
    try {
        s->bus = std::make_unique<s5d::Bus>(*s->conn, manager);
        s->bus->set_allowed_gids(gids);
        s->bus->set_reloader(reloader);
        s->log_control = std::make_unique<s5d::LogControl>(*s->conn, s->bus->creds());
        s->conn->requestName(kBusName);
    } catch (const sdbus::Error& e) {
        error = std::string("cannot own ") + kBusName + ": " + e.getMessage();
        return nullptr;
    }
    return s;
}

// What an earlier broker left in systemd's fd store becomes this broker's
// leases and associations, then this broker's own state memfd takes over
// (docs/design.md §12). Returns null when not under systemd.
std::unique_ptr<s5d::DurableState> restore_or_start_clean(s5d::Manager& manager, s5d::StoredFds stored) {
    s5d::PreviousState prev = s5d::take_previous_state(stored);
    const uint64_t epoch = prev.epoch ? *prev.epoch + 1 : 1;
    auto durable = s5d::DurableState::create(epoch, [&manager, epoch] { return manager.state_header(epoch); });
    const auto drop = [&](const std::string& name) {
        if (durable) durable->drop_fd(name);
    };
    for (const auto& name : stored.unnamed) log_warning("stored descriptor \"%s\" is not one of ours; closing it", name.c_str());
    for (const auto& name : prev.unused) drop(name);
    manager.set_durable(durable.get());
    if (!prev.image) {
        if (!stored.by_name.empty()) {
            // One line, and a clean start: without the state nobody knows
            // whose these are. The applications see their leases end.
            log_error("previous state not usable (%s): starting clean, releasing %zu stored descriptor(s)",
                      prev.why.c_str(), stored.by_name.size());
            for (const auto& [name, fd] : stored.by_name) drop(name);
        }
    } else {
        const auto t0 = std::chrono::steady_clock::now();
        auto r = manager.restore(*prev.image, stored);
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
        log_notice("restored %zu lease(s) (%zu renewing) and %zu idle association(s) from state %llu in %.1f ms; "
                   "while the broker was down %zu lease(s) were released, %zu ended, %zu connection(s) closed",
                   r.leases, r.renewing, r.idle, static_cast<unsigned long long>(*prev.epoch),
                   static_cast<double>(us.count()) / 1000.0, r.released, r.forgotten, r.closed);
    }
    if (durable) durable->commit(prev.epoch);
    return durable;
}

int run(const Options& opts) {
    // First: LISTEN_FDS is for this process only.
    s5d::StoredFds stored = s5d::take_stored_fds();
    const char* creds = std::getenv("CREDENTIALS_DIRECTORY");
    s5d::EventLoop loop;
    s5d::Manager* manager_p = nullptr;
    s5d::Bus* bus_p = nullptr;               // none while off the bus
    std::set<gid_t> allowed_gids;
    // SIGHUP and Reload(): the files are read off the loop; a bad new file
    // changes nothing.
    s5d::ConfigLoader loader(loop, opts.config, creds ? creds : "",
                             [&](s5d::LoadedConfig& next) -> std::optional<std::string> {
                                 if (!next.config.ok()) {
                                     log_error("reload: configuration not applied: %s",
                                               next.config.error.to_string().c_str());
                                     return next.config.error.to_string();
                                 }
                                 for (const auto& w : next.warnings) log_warning("%s", w.c_str());
                                 manager_p->apply(std::move(*next.config.value));
                                 allowed_gids = std::move(next.allowed_gids);
                                 if (bus_p) bus_p->set_allowed_gids(allowed_gids);
                                 return std::nullopt;
                             });
    auto loaded = loader.load_now();
    if (!loaded.config.ok()) {
        // One line naming the JSON path and the reason, at priority err
        // (journalctl -p err shows it).
        log_error("invalid configuration: %s", loaded.config.error.to_string().c_str());
        s5d::refuse_calls_until_quiet(kBusName, opts.session_bus);
        return kExitConfig;
    }
    for (const auto& w : loaded.warnings) log_warning("%s", w.c_str());
    // The passwords are in memory now: no core dump holds them, and no
    // process of the same uid may ptrace or read /proc/<pid>/mem.
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) log_warning("cannot make the process undumpable: %s", strerror(errno));

    loop.on_signal(SIGTERM, [&] { loop.exit(0); });
    loop.on_signal(SIGINT, [&] { loop.exit(0); });
    signal(SIGPIPE, SIG_IGN);
    loop.enable_watchdog();

    std::unique_ptr<s5d::DurableState> durable;   // outlives the manager
    s5d::Manager manager(loop, std::move(*loaded.config.value));
    manager_p = &manager;
    manager.set_next_lease_id(first_lease_id());
    durable = restore_or_start_clean(manager, std::move(stored));
    // However run() ends (signal, exception), what the manager closes on
    // its way out stays in the store: `systemctl restart` keeps every
    // lease, `systemctl stop` empties the store.
    struct Freeze {
        s5d::DurableState* d;
        ~Freeze() {
            if (d) d->freeze();
        }
    } freeze{durable.get()};
    allowed_gids = std::move(loaded.allowed_gids);
    const auto reloader = [&](s5d::ConfigLoader::Done done) { loader.load(std::move(done)); };

    std::string error;
    std::unique_ptr<BusSession> session = open_session(opts, manager, allowed_gids, reloader, error);
    if (!session) {
        log_error("%s", error.c_str());
        return 1;
    }
    bus_p = session->bus.get();
    loop.attach_bus(*session->conn);

    // The bus daemon went away (restarted, or it crashed): no datagram
    // crosses the bus, so every lease and association stays; only calls
    // and properties are unavailable until the broker is back on the bus.
    s5d::Backoff backoff(std::chrono::milliseconds(100), std::chrono::milliseconds(5000));
    std::mt19937_64 rng(std::random_device{}());
    s5d::Timer reconnect;
    reconnect = s5d::Timer(loop, [&] {
        std::string why;
        session = open_session(opts, manager, allowed_gids, reloader, why);
        if (!session) {
            log_debug("still off the bus: %s", why.c_str());
            reconnect.arm_in(backoff.next(rng));
            return;
        }
        backoff.reset();
        bus_p = session->bus.get();
        loop.attach_bus(*session->conn);
        log_notice("back on the bus, serving %zu lease(s)", manager.leases().size());
        sd_notify(0, "STATUS=Serving");
    });
    loop.on_bus_lost([&](const std::string& why) {
        log_warning("D-Bus connection lost (%s); keeping %zu lease(s), reconnecting", why.c_str(),
                    manager.leases().size());
        sd_notify(0, "STATUS=Reconnecting to the bus");
        bus_p = nullptr;
        session.reset();   // the objects and the connection; the manager stays
        reconnect.arm_in(backoff.next(rng));
    });
    loop.on_signal(SIGHUP, [&] {
        if (bus_p) bus_p->reload([](const std::optional<std::string>&) {});
        else loader.load([](const std::optional<std::string>&) {});
    });
    manager.start();
    log_notice("s5brokerd %s serving %s on the %s bus with %zu server(s)", S5BROKER_VERSION, kBusName,
               opts.session_bus ? "session" : "system", manager.config().servers.size());
    sd_notify(0, "READY=1\nSTATUS=Serving");
    int rc = loop.run();
    sd_notify(0, "STOPPING=1");
    log_notice("shutting down");
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    Options opts;
    int rc = parse_args(argc, argv, opts);
    if (rc >= 0) return rc;
    s5d::log::init_from_environment();
    if (opts.debug) s5d::log::set_max_level(s5d::log::Level::Debug);
    try {
        return run(opts);
    } catch (const std::exception& e) {
        log_error("fatal: %s", e.what());
        return 1;
    }
}
