// s5brokerctl: the admin CLI of s5brokerd, following the conventions of
// systemd's own CLIs (networkctl, resolvectl, busctl).
//
// Reads the broker's objects through the proxies generated from
// dbus/org.s5broker.Broker1.xml, makes test associations through libs5client
// (the same code path as every application), and follows the broker's
// signals. Tables for humans by default, --json=pretty|short for scripts;
// output to a terminal goes through a pager and has colours; on error exactly
// one line on stderr ("Failed to ...: <D-Bus error name>: <message>") and a
// non-zero exit (2 for usage errors). The rendering and the conventions are
// in ctl_format.cpp (pure, unit-tested); this file does the I/O.
#include <fcntl.h>
#include <poll.h>
#include <s5broker/socks5.h>
#include <sdbus-c++/sdbus-c++.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
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

#include "manager_proxy.hpp"
#include "ctl_format.hpp"
#include "errors.hpp"
#include "s5broker_version.h"
#include "unique_fd.hpp"

namespace {

using namespace s5ctl;

using s5::bus::kBusName;
constexpr const char* kManagerIface = "org.s5broker.Broker1.Manager";
constexpr auto kCallTimeout = std::chrono::seconds(15);
// Reload() answers once the new files are read and applied; systemd gives a
// reload job 90 s by default.
constexpr auto kReloadTimeout = std::chrono::seconds(90);
constexpr int kEchoTimeoutMs = 3000;

// A failure to report: one line, exit status 1.
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ---- Proxies ---------------------------------------------------------------

using s5::bus::ManagerProxy;

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

// An object that went away between listing and reading it (a lease closed,
// a server dropped by a reload).
bool is_gone(const std::string& name) {
    return s5::err::classify_dbus_error(name) == s5::err::BusFailure::NotTheBroker;
}

// main() exports --bus-address as DBUS_SYSTEM_BUS_ADDRESS, the variable
// sd-bus and libs5client read for the system bus: one address for both.
std::string bus_where() {
    const char* env = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
    return env && *env ? env : "the system bus";
}

// The broker's name has no owner: it is not running (on that bus).
bool is_not_running(const std::string& name) {
    return s5::err::classify_dbus_error(name) == s5::err::BusFailure::NotOnBus;
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
            throw Failure(bus_failure("connect to " + where_, e.getName(), e.getMessage()));
        }
    }

    sdbus::IConnection& conn() { return *conn_; }
    const std::string& where() const { return where_; }

    // `what` failed with `e`: the error's own name and text, and a hint
    // when the broker is not on the bus.
    Failure failure(const std::string& what, const sdbus::Error& e) const {
        std::string line = bus_failure(what, e.getName(), e.getMessage());
        if (is_not_running(e.getName())) line += " (is s5brokerd running on " + where_ + "?)";
        return Failure(line);
    }

    // Runs `f`, turning a D-Bus error into a Failure that says what failed.
    template <typename F>
    auto call(const std::string& what, F&& f) -> decltype(f()) {
        try {
            return f();
        } catch (const sdbus::Error& e) {
            throw failure(what, e);
        }
    }

private:
    std::string where_;
    std::unique_ptr<sdbus::IConnection> conn_;
};

// ---- Output ----------------------------------------------------------------

const char* get_env(const char* name) { return std::getenv(name); }

// How this run prints: decided once, before any pager starts.
struct Output {
    bool tty = false;
    JsonMode json = JsonMode::Off;
    Style style;
    std::optional<PagerChoice> pager;  // only for `pageable` output
};

Output output_for(const Args& a, bool pageable) {
    Output o;
    o.tty = isatty(STDOUT_FILENO) == 1;
    o.json = json_mode(a, o.tty);
    if (pageable) o.pager = pager_for(o.tty, a.pager, get_env);
    o.style.legend = a.legend;
    o.style.color = colors_enabled(o.tty, get_env);
    // A terminal without a pager: cut tables to its width (less -S lets
    // the reader scroll sideways instead).
    if (o.tty && !o.pager) {
        winsize ws{};
        unsigned cols = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
        o.style.width = terminal_width(get_env, cols);
    }
    return o;
}

bool write_all(int fd, const char* data, size_t size) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}

void print(const std::string& text) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
}

// The pager's side of the pipe: the first pager that can be executed, or
// the text copied through when none can (as systemd does).
[[noreturn]] void exec_pager(const PagerChoice& p, int read_end) {
    if (dup2(read_end, STDIN_FILENO) < 0) _exit(EXIT_FAILURE);
    if (read_end != STDIN_FILENO) ::close(read_end);
    setenv("LESS", p.less.c_str(), 1);
    if (p.lesscharset) setenv("LESSCHARSET", p.lesscharset->c_str(), 1);
    if (!p.argv.empty()) {
        std::vector<char*> argv;
        for (const auto& w : p.argv) argv.push_back(const_cast<char*>(w.c_str()));
        argv.push_back(nullptr);
        execvp(argv[0], argv.data());
    }
    // Debian's alternative for pagers is "pager".
    for (const char* exe : {"pager", "less", "more"}) execlp(exe, exe, static_cast<char*>(nullptr));
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || !write_all(STDOUT_FILENO, buf, static_cast<size_t>(n))) break;
    }
    _exit(EXIT_SUCCESS);
}

// `text` through the pager, which reads it from a pipe and writes to our
// stdout (the terminal); returns when the pager has exited.
void page(const PagerChoice& p, const std::string& text) {
    std::fflush(stdout);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return print(text);
    const pid_t pid = fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        return print(text);
    }
    if (pid == 0) {
        ::close(fds[1]);
        exec_pager(p, fds[0]);
    }
    ::close(fds[0]);
    // The pager may quit before it has read everything (EPIPE, not a
    // SIGPIPE death), and Ctrl-C is the pager's to handle (less: K).
    struct sigaction ignore {}, old_pipe{}, old_int{};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old_pipe);
    sigaction(SIGINT, &ignore, &old_int);
    (void)write_all(fds[1], text.data(), text.size());
    ::close(fds[1]);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    sigaction(SIGPIPE, &old_pipe, nullptr);
    sigaction(SIGINT, &old_int, nullptr);
}

void emit(const Output& o, const std::string& text) {
    if (text.empty()) return;
    o.pager ? page(*o.pager, text) : print(text);
}

// A document: JSON in the chosen mode, else the human rendering.
template <typename Render>
void emit_doc(const Output& o, const json& doc, Render&& render) {
    emit(o, o.json == JsonMode::Off ? render(doc, o.style) : dump_json(doc, o.json));
}

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
    for (const auto& path : bus.call("get property Servers", [&] { return m.Servers(); }))
        if (auto s = bus.call("read server " + path, [&] { return read_server(bus, path); })) out.push_back(*s);
    return out;
}

json read_leases(Bus& bus, ManagerProxy& m) {
    json out = json::array();
    for (const auto& path : bus.call("get property Leases", [&] { return m.Leases(); }))
        if (auto l = bus.call("read lease " + path, [&] { return read_lease(bus, path); })) out.push_back(*l);
    return out;
}

// ---- Commands --------------------------------------------------------------

int cmd_status(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    json st;
    st["version"] = bus.call("get property Version", [&] { return m.Version(); });
    st["lease_count"] = bus.call("get property LeaseCount", [&] { return m.LeaseCount(); });
    st["servers"] = read_servers(bus, m);
    json stats = json::object();
    for (const auto& [k, v] : bus.call("get property Statistics", [&] { return m.Statistics(); })) stats[k] = v;
    st["statistics"] = stats;
    emit_doc(output_for(a, true), st, [](const json& d, const Style& s) { return render_status(d, s); });
    return 0;
}

int cmd_servers(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    json servers = read_servers(bus, m);
    emit_doc(output_for(a, true), servers, [](const json& d, const Style& s) { return render_servers(d, s); });
    return 0;
}

int cmd_leases(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    json leases = read_leases(bus, m);
    emit_doc(output_for(a, true), leases, [](const json& d, const Style& s) { return render_leases(d, s); });
    return 0;
}

int cmd_route(const Args& a) {
    Bus bus;
    ManagerProxy m(bus.conn());
    const std::string dst = format_ip(a.destination);
    auto [name, address, port] = bus.call("look up the server for " + dst, [&] {
        return m.GetServer(a.destination.ip_bytes(), a.destination.port);
    });
    json r;
    r["destination"] = dst;
    r["server"] = name;
    r["address"] = format_ip(address);
    r["port"] = port;
    emit_doc(output_for(a, true), r, [](const json& d, const Style& s) { return render_route(d, s); });
    return 0;
}

// Synchronous, for ExecReload=: the broker answers after it has applied the
// new configuration or refused it. Nothing on stdout on success (systemd
// logs what a reload prints); a refusal is the broker's error, exit 1.
int cmd_reload(const Args& a) {
    Bus bus;
    bus.conn().setMethodCallTimeout(kReloadTimeout);
    ManagerProxy m(bus.conn());
    bus.call("reload the configuration", [&] { m.Reload(); });
    const Output o = output_for(a, false);
    if (o.json != JsonMode::Off) print(dump_json(json{{"reloaded", true}}, o.json));
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
    if (lease.get() < 0) throw Failure(std::string("Failed to create a socket: ") + std::strerror(errno));
    if (socks5udp_associate(lease.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst,
                            a.server ? reinterpret_cast<sockaddr*>(&svr) : nullptr, svrlen) != 0) {
        const int err = errno, s5err = socks5_errno;
        // The library reports errno and socks5_errno, not the bus error.
        if (err == ECONNREFUSED && s5err == S5_ENOSERV)
            throw Failure("Failed to associate for " + dst_text + ": " + std::strerror(err) +
                          " (is s5brokerd running on " + where + "?)");
        throw Failure("Failed to associate for " + dst_text + ": " + library_error(err, s5err));
    }
    auto rendezvous = s5::wire::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&dst), sizeof dst);
    if (!rendezvous)
        throw Failure("Failed to associate for " + dst_text + ": the rendezvous is of an unknown address family");

    json r;
    r["destination"] = dst_json;
    r["server"] = a.server ? endpoint_json(*a.server) : json();
    r["rendezvous"] = endpoint_json(*rendezvous);
    r["lease"] = nullptr;
    r["lease_server"] = nullptr;
    find_own_lease(*rendezvous, r);

    if (a.echo) {
        Fd u(::socket(rendezvous->family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (u.get() < 0) throw Failure(std::string("Failed to create a socket: ") + std::strerror(errno));
        sockaddr_storage target{};
        size_t tlen = a.destination.to_sockaddr(target);
        size_t rlen = rendezvous->to_sockaddr(dst);
        std::string payload = *a.echo;
        const auto t0 = std::chrono::steady_clock::now();
        if (socks5udp_sendto(u.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&target), tlen,
                             reinterpret_cast<sockaddr*>(&dst), rlen) != 0) {
            const int err = errno, s5err = socks5_errno;
            throw Failure("Failed to send to " + dst_text + " through " + format_endpoint(r["rendezvous"]) + ": " +
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
                throw Failure("Failed to receive the echo reply: " + library_error(errno, socks5_errno));
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0)
                throw Failure("Failed to get a reply from " + dst_text + " through " +
                              format_endpoint(r["rendezvous"]) + ": none within " +
                              std::to_string(kEchoTimeoutMs / 1000) + " s");
            pollfd p{u.get(), POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left.count()));
        }
    }
    // Not paged: the association lasts until this process exits.
    emit_doc(output_for(a, false), r, [](const json& d, const Style& s) { return render_associate(d, s); });
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
    if (sigprocmask(SIG_BLOCK, &stop, nullptr) != 0)
        throw Failure(std::string("Failed to block SIGINT and SIGTERM: ") + std::strerror(errno));
    Fd sfd(signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));
    if (sfd.get() < 0) throw Failure(std::string("Failed to create a signalfd: ") + std::strerror(errno));

    // A stream: never paged, never cut, no colours; each line flushed.
    const Output o = output_for(a, false);
    auto show = [&](const json& e) { print(o.json == JsonMode::Off ? render_event(e) + "\n" : dump_json(e, o.json)); };
    Bus bus;
    auto on_signal = [&](sdbus::Message& msg) {
        try {
            if (auto e = event_of(msg)) show(*e);
        } catch (const sdbus::Error& e) {
            // A signal with unexpected arguments: say so, keep following.
            json bad{{"time", now_iso8601()},
                     {"object", object_name(msg.getPath())},
                     {"path", msg.getPath()},
                     {"event", msg.getMemberName()},
                     {"args", json::array({"<unreadable: " + e.getMessage() + ">"})}};
            show(bad);
        }
    };
    // Every signal the broker sends (Renewed, Lost, PropertiesChanged of
    // every object), and the broker coming and going.
    auto broker_slot = bus.call("add a match for the broker's signals", [&] {
        return bus.conn().addMatch(std::string("type='signal',sender='") + kBusName + "'", on_signal);
    });
    auto owner_slot = bus.call("add a match for NameOwnerChanged", [&] {
        return bus.conn().addMatch(std::string("type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/"
                                               "DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',"
                                               "arg0='") +
                                       kBusName + "'",
                                   on_signal);
    });
    if (o.json == JsonMode::Off && a.legend) {
        // Said once, for a human wondering why nothing shows up.
        bool running = bus.call("ask whether s5brokerd is running", [&] {
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
            throw Failure(bus_failure("follow s5brokerd on " + bus.where(), e.getName(), e.getMessage()));
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
            throw Failure(std::string("Failed to wait for events: ") + std::strerror(errno));
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

// A failure: one line on stderr, as systemd's tools print it ("Failed to
// ...: ..."), without the program's name (the journal adds it).
void fail_line(const std::string& what) { std::fprintf(stderr, "%s\n", one_line(what).c_str()); }

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
    ParseResult p = parse_args(args);
    if (!p.args) {
        // Usage errors as getopt(3) reports them: with the program's name.
        std::fprintf(stderr, "%s: %s (see '%s --help')\n", kProgram, one_line(p.error).c_str(), kProgram);
        return 2;
    }
    const Args& a = *p.args;
    if (a.json_help) {
        print("short\npretty\noff\n");
        return 0;
    }
    if (a.help) {
        emit(output_for(a, true), a.command ? usage(*a.command) : usage());
        return 0;
    }
    if (a.version) {
        print(std::string(kProgram) + " " + S5BROKER_VERSION + "\n");
        return 0;
    }
    // libs5client reads only this variable; our own connection too.
    if (a.bus_address && setenv("DBUS_SYSTEM_BUS_ADDRESS", a.bus_address->c_str(), 1) != 0) {
        fail_line(std::string("Failed to set DBUS_SYSTEM_BUS_ADDRESS: ") + std::strerror(errno));
        return 1;
    }
    try {
        return run(a);
    } catch (const Failure& f) {
        fail_line(f.what());
    } catch (const sdbus::Error& e) {
        fail_line(bus_failure(std::string("talk to ") + kBusName, e.getName(), e.getMessage()));
    } catch (const std::exception& e) {
        fail_line(std::string("Failed: ") + e.what());
    }
    return 1;
}
