// s5brokerctl: the admin CLI of s5brokerd, in the spirit of resolvectl.
//
// Reads the broker's objects through the proxies generated from
// dbus/org.s5broker.Broker1.xml, makes test associations through libs5client
// (the same code path as every application), and follows the broker's
// signals. Human tables by default, --json for scripts; on error exactly one
// line on stderr and a non-zero exit (2 for usage errors). The rendering is
// in ctl_format.cpp (pure, unit-tested); this file does the I/O.
#include <poll.h>
#include <s5broker/socks5.h>
#include <sdbus-c++/sdbus-c++.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "broker_proxy.h"
#include "ctl_format.hpp"
#include "s5broker_version.h"
#include "unique_fd.hpp"

namespace {

using namespace s5ctl;

constexpr const char* kBusName = "org.s5broker.Broker1";
constexpr const char* kManagerIface = "org.s5broker.Broker1.Manager";
constexpr auto kCallTimeout = std::chrono::seconds(15);
constexpr int kEchoTimeoutMs = 3000;

// A failure to report: one line, exit status 1.
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ---- Proxies ---------------------------------------------------------------

class ManagerProxy final : public sdbus::ProxyInterfaces<org::s5broker::Broker1::Manager_proxy> {
public:
    explicit ManagerProxy(sdbus::IConnection& conn) : ProxyInterfaces(conn, kBusName, kManagerPath) { registerProxy(); }
    ~ManagerProxy() { unregisterProxy(); }
};

class ServerProxy final : public sdbus::ProxyInterfaces<org::s5broker::Broker1::Server_proxy> {
public:
    ServerProxy(sdbus::IConnection& conn, const std::string& path) : ProxyInterfaces(conn, kBusName, path) {
        registerProxy();
    }
    ~ServerProxy() { unregisterProxy(); }
};

// Only its properties are read: not registered, so no match rule is added
// for its signals per lease listed (monitor uses one match for all).
class LeaseProxy final : public sdbus::ProxyInterfaces<org::s5broker::Broker1::Lease_proxy> {
public:
    LeaseProxy(sdbus::IConnection& conn, const std::string& path) : ProxyInterfaces(conn, kBusName, path) {}

private:
    void onRenewed(const uint32_t&, const std::vector<uint8_t>&, const uint16_t&) override {}
    void onLost(const std::string&) override {}
};

// ---- The bus ---------------------------------------------------------------

// Errors that mean "nobody there to answer", rather than an answer.
bool is_unreachable(const std::string& name) {
    static const char* const kNames[] = {
        "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoServer",       "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.NoReply",        "org.freedesktop.DBus.Error.Timeout",
        "org.freedesktop.DBus.Error.TimedOut",       "org.freedesktop.DBus.Error.NotConnected",
    };
    for (const char* n : kNames)
        if (name == n) return true;
    return name.rfind("System.Error.", 0) == 0;  // ECONNRESET, ENOTCONN, ... from sd-bus itself
}

// An object that went away between listing and reading it (a lease closed,
// a server dropped by a reload).
bool is_gone(const std::string& name) {
    return name == "org.freedesktop.DBus.Error.UnknownObject" ||
           name == "org.freedesktop.DBus.Error.UnknownInterface" || name == "org.freedesktop.DBus.Error.UnknownMethod";
}

std::string describe(const sdbus::Error& e) {
    std::string msg = e.getMessage();
    if (msg.empty()) return e.getName();
    return msg + " (" + e.getName() + ")";
}

// main() exports --bus-address as DBUS_SYSTEM_BUS_ADDRESS, the variable
// sd-bus and libs5client read for the system bus: one address for both.
std::string bus_where() {
    const char* env = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
    return env && *env ? env : "the system bus";
}

class Bus {
public:
    Bus() : where_(bus_where()) {
        try {
            // Not createSessionBusConnectionWithAddress(): in sdbus-c++ 1.2.0
            // it leaks the sd_bus when the address cannot be reached.
            conn_ = sdbus::createSystemBusConnection();
            conn_->setMethodCallTimeout(kCallTimeout);
        } catch (const sdbus::Error& e) {
            throw unreachable(e.getMessage().empty() ? e.getName() : e.getMessage());
        }
    }

    sdbus::IConnection& conn() { return *conn_; }
    const std::string& where() const { return where_; }

    Failure unreachable(const std::string& why) const {
        return Failure(std::string("cannot reach ") + kBusName + " on " + where_ + ": " + why);
    }

    // Runs `f`, turning a D-Bus error into a Failure that says what failed.
    template <typename F>
    auto call(const std::string& what, F&& f) -> decltype(f()) {
        try {
            return f();
        } catch (const sdbus::Error& e) {
            if (e.getName() == "org.freedesktop.DBus.Error.ServiceUnknown" ||
                e.getName() == "org.freedesktop.DBus.Error.NameHasNoOwner")
                throw unreachable("not on the bus (is s5brokerd running?)");
            if (is_unreachable(e.getName())) throw unreachable(describe(e));
            throw Failure(what + " failed: " + describe(e));
        }
    }

private:
    std::string where_;
    std::unique_ptr<sdbus::IConnection> conn_;
};

// ---- Reading the broker's objects ------------------------------------------

std::optional<json> read_server(Bus& bus, const std::string& path) {
    try {
        ServerProxy p(bus.conn(), path);
        json s;
        s["name"] = p.Name();
        s["path"] = path;
        s["address"] = format_ip(p.Address());
        s["port"] = p.Port();
        s["auth"] = p.AuthMethod();
        s["state"] = p.State();
        s["pool_idle"] = p.PoolIdle();
        s["pool_target"] = p.PoolTarget();
        s["last_error"] = p.LastError();
        return s;
    } catch (const sdbus::Error& e) {
        if (is_gone(e.getName())) return std::nullopt;
        throw;
    }
}

std::optional<json> read_lease(Bus& bus, const std::string& path) {
    try {
        LeaseProxy p(bus.conn(), path);
        json l;
        l["id"] = lease_id_of(path).empty() ? path : lease_id_of(path);
        l["path"] = path;
        l["uid"] = p.Owner();
        const std::string server_path = p.Server();
        const std::string server = server_name_of(server_path);
        l["server"] = server.empty() ? json() : json(server);  // the manager's path while pending
        l["server_path"] = server_path;
        auto relay = p.Relay();
        l["relay"] = endpoint_json(relay.get<0>(), relay.get<1>());
        l["state"] = p.State();
        l["generation"] = p.Generation();
        {
            // Whole seconds since the broker granted it (wall clock).
            auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
            int64_t created = static_cast<int64_t>(p.Created());
            l["age_s"] = created > 0 && now_us >= created ? (now_us - created) / 1000000 : 0;
        }
        return l;
    } catch (const sdbus::Error& e) {
        if (is_gone(e.getName())) return std::nullopt;
        throw;
    }
}

json read_servers(Bus& bus, ManagerProxy& m) {
    json out = json::array();
    for (const auto& path : bus.call("reading Servers", [&] { return m.Servers(); }))
        if (auto s = bus.call("reading server " + path, [&] { return read_server(bus, path); })) out.push_back(*s);
    return out;
}

json read_leases(Bus& bus, ManagerProxy& m) {
    json out = json::array();
    for (const auto& path : bus.call("reading Leases", [&] { return m.Leases(); }))
        if (auto l = bus.call("reading lease " + path, [&] { return read_lease(bus, path); })) out.push_back(*l);
    return out;
}

void print(const std::string& text) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
}

void print_json(const json& j) { print(j.dump(2, ' ', false, json::error_handler_t::replace) + "\n"); }

// ---- Commands --------------------------------------------------------------

int cmd_status(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    json st;
    st["version"] = bus.call("reading Version", [&] { return m.Version(); });
    st["lease_count"] = bus.call("reading LeaseCount", [&] { return m.LeaseCount(); });
    st["servers"] = read_servers(bus, m);
    json stats = json::object();
    for (const auto& [k, v] : bus.call("reading Statistics", [&] { return m.Statistics(); })) stats[k] = v;
    st["statistics"] = stats;
    a.json ? print_json(st) : print(render_status(st));
    return 0;
}

int cmd_servers(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    json servers = read_servers(bus, m);
    a.json ? print_json(servers) : print(render_servers(servers));
    return 0;
}

int cmd_leases(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    json leases = read_leases(bus, m);
    a.json ? print_json(leases) : print(render_leases(leases));
    return 0;
}

int cmd_route(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    const std::string dst = format_ip(a.destination);
    auto [name, address, port] =
        bus.call("GetServer for " + dst, [&] { return m.GetServer(a.destination.ip_bytes(), a.destination.port); });
    json r;
    r["destination"] = dst;
    r["name"] = name;
    r["address"] = format_ip(address);
    r["port"] = port;
    a.json ? print_json(r) : print(render_route(r));
    return 0;
}

int cmd_reload(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    bus.call("Reload", [&] { m.Reload(); });
    a.json ? print_json(json{{"reloaded", true}}) : print("Configuration reloaded.\n");
    return 0;
}

// A descriptor closed on scope exit.
// The project's one owner of a descriptor.
using Fd = s5::UniqueFd;

std::string library_error(int err, int s5err) {
    std::string why = std::strerror(err);
    if (s5err != 0) why += std::string(" (") + socks5_strerror(s5err) + ")";
    return why;
}

// Which lease of the broker is ours: our uid and the rendezvous we got.
// Best effort (only for display): nothing when it cannot be told.
void find_own_lease(const s5::wire::Endpoint& rendezvous, json& out) {
    try {
        Bus bus;
        ManagerProxy m(bus.conn());
        const json want = endpoint_json(rendezvous);
        for (const auto& path : m.Leases()) {
            auto l = read_lease(bus, path);
            if (l && (*l)["uid"] == getuid() && (*l)["relay"] == want) {
                out["lease"] = (*l)["id"];
                out["lease_server"] = (*l)["server"];
                return;
            }
        }
    } catch (const std::exception&) {
    }
}

int cmd_associate(const Args& a) {
    const std::string where = bus_where();
    json dst_json = endpoint_json(a.destination);
    const std::string dst_text = format_endpoint(dst_json);

    sockaddr_storage dst{}, svr{};
    a.destination.to_sockaddr(dst);
    size_t svrlen = a.server ? a.server->to_sockaddr(svr) : 0;
    // The lease: an ordinary TCP socket that socks5udp_associate() turns
    // into the broker's lease socket. Closing it (at exit) releases it.
    Fd lease(::socket(a.destination.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (lease.get() < 0) throw Failure(std::string("socket: ") + std::strerror(errno));
    if (socks5udp_associate(lease.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst,
                            a.server ? reinterpret_cast<sockaddr*>(&svr) : nullptr, svrlen) != 0) {
        const int err = errno, s5err = socks5_errno;
        if (err == ECONNREFUSED && s5err == S5_ENOSERV)
            throw Failure(std::string("cannot reach ") + kBusName + " on " + where + ": " + std::strerror(err) +
                          " (is s5brokerd running?)");
        throw Failure("cannot associate for " + dst_text + ": " + library_error(err, s5err));
    }
    auto rendezvous = s5::wire::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&dst), sizeof dst);
    if (!rendezvous) throw Failure("socks5udp_associate returned a rendezvous of an unknown family");

    json r;
    r["destination"] = dst_json;
    r["server"] = a.server ? endpoint_json(*a.server) : json();
    r["rendezvous"] = endpoint_json(*rendezvous);
    r["lease"] = nullptr;
    r["lease_server"] = nullptr;
    find_own_lease(*rendezvous, r);

    if (a.echo) {
        Fd u(::socket(rendezvous->family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (u.get() < 0) throw Failure(std::string("socket: ") + std::strerror(errno));
        sockaddr_storage target{};
        size_t tlen = a.destination.to_sockaddr(target);
        size_t rlen = rendezvous->to_sockaddr(dst);
        std::string payload = *a.echo;
        const auto t0 = std::chrono::steady_clock::now();
        if (socks5udp_sendto(u.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&target), tlen,
                             reinterpret_cast<sockaddr*>(&dst), rlen) != 0) {
            const int err = errno, s5err = socks5_errno;
            throw Failure("cannot send to " + dst_text + " through " + format_endpoint(r["rendezvous"]) + ": " +
                          library_error(err, s5err));
        }
        const auto deadline = t0 + std::chrono::milliseconds(kEchoTimeoutMs);
        std::vector<char> buf(65536);
        for (;;) {
            sockaddr_storage from{};
            socklen_t fromlen = sizeof from;
            ssize_t n = socks5udp_recvfrom(u.get(), buf.data(), buf.size(), MSG_DONTWAIT,
                                           reinterpret_cast<sockaddr*>(&from), &fromlen);
            if (n >= 0) {
                const auto rtt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0);
                auto f = s5::wire::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&from), fromlen);
                json echo;
                echo["sent"] = payload;
                echo["reply"] = std::string(buf.data(), static_cast<size_t>(n));
                echo["from"] = f ? endpoint_json(*f) : json();
                echo["rtt_ms"] = static_cast<double>(static_cast<int64_t>(rtt.count() * 1000)) / 1000;
                r["echo"] = echo;
                break;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                throw Failure("cannot receive the echo reply: " + library_error(errno, socks5_errno));
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0)
                throw Failure("no reply from " + dst_text + " through " + format_endpoint(r["rendezvous"]) +
                              " within " + std::to_string(kEchoTimeoutMs / 1000) + " s");
            pollfd p{u.get(), POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left.count()));
        }
    }
    a.json ? print_json(r) : print(render_associate(r));
    return 0;
}

// ---- monitor ---------------------------------------------------------------

json variant_json(const sdbus::Variant& v) {
    const std::string t = v.peekValueType();
    if (t == "s") return v.get<std::string>();
    if (t == "o") return std::string(v.get<sdbus::ObjectPath>());
    if (t == "b") return v.get<bool>();
    if (t == "y") return v.get<uint8_t>();
    if (t == "q") return v.get<uint16_t>();
    if (t == "n") return v.get<int16_t>();
    if (t == "u") return v.get<uint32_t>();
    if (t == "i") return v.get<int32_t>();
    if (t == "t") return v.get<uint64_t>();
    if (t == "x") return v.get<int64_t>();
    if (t == "d") return v.get<double>();
    if (t == "ay") {
        auto bytes = v.get<std::vector<uint8_t>>();
        if (bytes.size() == 4 || bytes.size() == 16) return format_ip(bytes);  // every ay of ours is an IP
        return bytes;
    }
    if (t == "as") return v.get<std::vector<std::string>>();
    if (t == "ao") {
        json out = json::array();
        for (const auto& p : v.get<std::vector<sdbus::ObjectPath>>()) out.push_back(std::string(p));
        return out;
    }
    if (t == "(ayq)") {
        auto s = v.get<sdbus::Struct<std::vector<uint8_t>, uint16_t>>();
        return endpoint_json(s.get<0>(), s.get<1>());
    }
    if (t == "a{st}") {
        json out = json::object();
        for (const auto& [k, x] : v.get<std::map<std::string, uint64_t>>()) out[k] = x;
        return out;
    }
    return "<" + t + ">";
}

std::string now_iso8601() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    gmtime_r(&ts.tv_sec, &t);
    char buf[64];
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &t);
    std::snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
    return buf;
}

// One event from one signal; nullopt for a signal we cannot read.
std::optional<json> event_of(sdbus::Message& msg) {
    const std::string path = msg.getPath();
    const std::string iface = msg.getInterfaceName();
    const std::string member = msg.getMemberName();
    json e;
    e["time"] = now_iso8601();
    e["object"] = object_name(path);
    e["path"] = path;
    if (iface == "org.freedesktop.DBus" && member == "NameOwnerChanged") {
        std::string name, old_owner, new_owner;
        msg >> name >> old_owner >> new_owner;
        e["object"] = "broker";
        e["event"] = new_owner.empty() ? "BrokerStopped" : "BrokerStarted";
        e["owner"] = new_owner.empty() ? old_owner : new_owner;
        return e;
    }
    e["event"] = member;
    e["interface"] = iface;
    if (iface == "org.freedesktop.DBus.Properties" && member == "PropertiesChanged") {
        std::string of;
        std::map<std::string, sdbus::Variant> changed;
        std::vector<std::string> invalidated;
        msg >> of >> changed >> invalidated;
        e["interface"] = of;
        json c = json::object();
        for (const auto& [k, v] : changed) c[k] = variant_json(v);
        e["changed"] = c;
        e["invalidated"] = invalidated;
    } else if (member == "Renewed") {
        uint32_t generation = 0;
        std::vector<uint8_t> address;
        uint16_t port = 0;
        msg >> generation >> address >> port;
        e["generation"] = generation;
        e["relay"] = endpoint_json(address, port);
    } else if (member == "Lost") {
        std::string error;
        msg >> error;
        e["error"] = error;
    } else {
        e["args"] = json::array();  // a signal this version does not know
    }
    return e;
}

int cmd_monitor(const Args& a) {
    // SIGINT/SIGTERM end the loop through a signalfd: a clean exit 0.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &stop, nullptr) != 0) throw Failure(std::string("sigprocmask: ") + std::strerror(errno));
    Fd sfd(signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));
    if (sfd.get() < 0) throw Failure(std::string("signalfd: ") + std::strerror(errno));

    Bus bus;
    std::string failure;
    auto on_signal = [&](sdbus::Message& msg) {
        try {
            if (auto e = event_of(msg))
                a.json ? print(e->dump(-1, ' ', false, json::error_handler_t::replace) + "\n")
                       : print(render_event(*e) + "\n");
        } catch (const sdbus::Error& e) {
            // A signal with unexpected arguments: say so, keep following.
            json bad{{"time", now_iso8601()},
                     {"object", object_name(msg.getPath())},
                     {"path", msg.getPath()},
                     {"event", msg.getMemberName()},
                     {"args", json::array({"<unreadable: " + e.getMessage() + ">"})}};
            a.json ? print(bad.dump() + "\n") : print(render_event(bad) + "\n");
        }
    };
    // Every signal the broker sends (Renewed, Lost, PropertiesChanged of
    // every object), and the broker coming and going.
    auto broker_slot = bus.call("AddMatch", [&] {
        return bus.conn().addMatch(std::string("type='signal',sender='") + kBusName + "'", on_signal);
    });
    auto owner_slot = bus.call("AddMatch", [&] {
        return bus.conn().addMatch(std::string("type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/"
                                               "DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',"
                                               "arg0='") +
                                       kBusName + "'",
                                   on_signal);
    });
    if (!a.json) {
        // Said once, for a human wondering why nothing shows up.
        bool running = bus.call("NameHasOwner", [&] {
            bool has = false;
            sdbus::createProxy(bus.conn(), "org.freedesktop.DBus", "/org/freedesktop/DBus")
                ->callMethod("NameHasOwner")
                .onInterface("org.freedesktop.DBus")
                .withArguments(std::string(kBusName))
                .storeResultsTo(has);
            return has;
        });
        print(std::string("Monitoring ") + kBusName + " on " + bus.where() + (running ? "" : " (not running now)") +
              "; Ctrl-C to stop.\n");
    }

    for (;;) {
        try {
            while (bus.conn().processPendingRequest()) {
            }
        } catch (const sdbus::Error& e) {
            throw Failure("lost the connection to " + bus.where() + ": " + describe(e));
        }
        auto pd = bus.conn().getEventLoopPollData();
        int timeout_ms = -1;
        if (pd.timeout_usec != UINT64_MAX) {
            timespec now{};
            clock_gettime(CLOCK_MONOTONIC, &now);
            const uint64_t now_us =
                static_cast<uint64_t>(now.tv_sec) * 1000000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
            timeout_ms = pd.timeout_usec <= now_us
                             ? 0
                             : static_cast<int>(std::min<uint64_t>((pd.timeout_usec - now_us + 999) / 1000, 60000));
        }
        pollfd fds[2] = {{pd.fd, pd.events, 0}, {sfd.get(), POLLIN, 0}};
        if (::poll(fds, 2, timeout_ms) < 0 && errno != EINTR)
            throw Failure(std::string("poll: ") + std::strerror(errno));
        if (fds[1].revents & POLLIN) return 0;
    }
}

int run(const Args& a) {
    switch (*a.command) {
        case Command::Status: return cmd_status(a);
        case Command::Servers: return cmd_servers(a);
        case Command::Leases: return cmd_leases(a);
        case Command::Associate: return cmd_associate(a);
        case Command::Route: return cmd_route(a);
        case Command::Reload: return cmd_reload(a);
        case Command::Monitor: return cmd_monitor(a);
    }
    return 1;
}

void fail_line(const std::string& what) { std::fprintf(stderr, "%s: %s\n", kProgram, one_line(what).c_str()); }

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
    ParseResult p = parse_args(args);
    if (!p.args) {
        fail_line(p.error + " (see '" + kProgram + " --help')");
        return 2;
    }
    const Args& a = *p.args;
    if (a.help) {
        print(usage());
        return 0;
    }
    if (a.version) {
        print(std::string(kProgram) + " " + S5BROKER_VERSION + "\n");
        return 0;
    }
    // libs5client reads only this variable; our own connection too.
    if (a.bus_address && setenv("DBUS_SYSTEM_BUS_ADDRESS", a.bus_address->c_str(), 1) != 0) {
        fail_line(std::string("setenv: ") + std::strerror(errno));
        return 1;
    }
    try {
        return run(a);
    } catch (const Failure& f) {
        fail_line(f.what());
    } catch (const sdbus::Error& e) {
        fail_line(describe(e));
    } catch (const std::exception& e) {
        fail_line(e.what());
    }
    return 1;
}
