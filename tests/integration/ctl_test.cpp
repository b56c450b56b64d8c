// s5brokerctl end to end: the real CLI binary against the real s5brokerd on
// a private dbus-daemon, with real danted servers and a UDP echo service.
// Every command runs as a child process; its stdout and stderr are kept
// apart so that the JSON output can be parsed and the error line counted.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <s5broker/socks5.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "harness.hpp"

namespace {

using namespace s5test;
using json = nlohmann::json;

struct Env {
    TempDir dir;
    PrivateBus bus{dir};
    UdpEcho echo{dir};
    Danted plain{dir};  // socksmethod: none, 127.0.0.1 and ::1
    Danted spare{dir};  // its own server entry: killed and restarted by the monitor test
    uint16_t closed_port = free_tcp_port();
    std::string config;
    std::unique_ptr<Broker> broker;
    std::unique_ptr<BusClient> client;

    Env() {
        config = R"({"servers": [)" + server_json("plain", "127.0.0.1", plain.port()) + "," +
                 server_json("plain6", "::1", plain.port()) + "," + server_json("spare", "127.0.0.1", spare.port()) +
                 "," + server_json("closed", "127.0.0.1", closed_port) +
                 R"(], "routes": [{"destination": "0.0.0.0/0", "servers": ["plain"]},
                                 {"destination": "::/0", "servers": ["plain6"]}]})";
        broker = std::make_unique<Broker>(dir, bus, config);
        if (!broker->start()) throw std::runtime_error("s5brokerd did not become ready:\n" + broker->log());
        client = std::make_unique<BusClient>(bus);
    }
};

Env* env = nullptr;

class Ctl : public ::testing::Test {
protected:
    static void SetUpTestSuite() { env = new Env; }
    static void TearDownTestSuite() {
        delete env;
        env = nullptr;
    }
    void TearDown() override {
        EXPECT_TRUE(eventually([] { return env->client->lease_count() == 0; }))
            << "leases left: " << env->client->lease_count();
        if (HasFailure()) std::cerr << "--- s5brokerd log ---\n" << env->broker->log();
    }
};

// ---- running the CLI ---------------------------------------------------------

struct Result {
    int status = -1;  // exit status; 128+N for signal N; -1 for a timeout
    std::string out, err;

    std::vector<std::string> err_lines() const {
        std::vector<std::string> v;
        std::istringstream in(err);
        for (std::string l; std::getline(in, l);) v.push_back(l);
        return v;
    }
    json parsed() const { return json::parse(out); }
};

std::ostream& operator<<(std::ostream& o, const Result& r) {
    return o << "exit " << r.status << "\n--- stdout ---\n" << r.out << "--- stderr ---\n" << r.err;
}

int exit_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

// The CLI as a child: stdout to `out`, stderr to `err` (sh only sets up the
// redirection, then is replaced by s5brokerctl: the pid is the CLI's).
struct CtlProcess {
    std::string out, err;
    std::unique_ptr<Process> proc;

    CtlProcess(const std::vector<std::string>& args, std::vector<std::string> extra_env = {}) {
        static int n = 0;
        ++n;
        out = env->dir.file("ctl" + std::to_string(n) + ".out");
        err = env->dir.file("ctl" + std::to_string(n) + ".err");
        std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>\"$S5CTL_STDERR\"", S5BROKERCTL_PATH};
        argv.insert(argv.end(), args.begin(), args.end());
        extra_env.push_back("S5CTL_STDERR=" + err);
        proc = std::make_unique<Process>(Process::Options{argv, extra_env, out, false});
    }
    std::string output() const { return read_file(out); }
    Result finish(std::optional<int> st) {
        Result r;
        if (st) r.status = exit_code(*st);
        r.out = read_file(out);
        r.err = read_file(err);
        return r;
    }
};

Result ctl(const std::vector<std::string>& args, std::vector<std::string> extra_env = {},
           std::chrono::milliseconds timeout = 20s) {
    CtlProcess p(args, std::move(extra_env));
    auto st = p.proc->wait(timeout);
    if (!st) p.proc->stop(SIGKILL);
    return p.finish(st);
}

// A failed command: the exit status, nothing on stdout, one line on stderr
// starting with the program's name.
void expect_one_error_line(const Result& r, int status, const std::string& starts_with) {
    EXPECT_EQ(r.status, status) << r;
    EXPECT_EQ(r.out, "") << r;
    auto lines = r.err_lines();
    ASSERT_EQ(lines.size(), 1u) << r;
    EXPECT_EQ(lines[0].rfind("s5brokerctl: " + starts_with, 0), 0u) << r;
    EXPECT_EQ(r.err.back(), '\n');
}

void expect_ok(const Result& r) {
    EXPECT_EQ(r.status, 0) << r;
    EXPECT_EQ(r.err, "") << r;
}

json find_by(const json& array, const std::string& key, const std::string& value) {
    for (const auto& x : array)
        if (x.value(key, std::string()) == value) return x;
    return json();
}

// ---- a lease held by this process through the library ------------------------

struct HeldLease {
    int fd = -1;
    sockaddr_storage rendezvous{};
    std::string address;
    uint16_t port = 0;

    HeldLease(const sockaddr_storage* server = nullptr, socklen_t server_len = 0) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        auto* sin = reinterpret_cast<sockaddr_in*>(&rendezvous);
        sin->sin_family = AF_INET;
        sin->sin_port = htons(env->echo.port());
        inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
        if (socks5udp_associate(fd, reinterpret_cast<sockaddr*>(&rendezvous), sizeof rendezvous,
                                reinterpret_cast<const sockaddr*>(server), server_len) != 0)
            throw std::runtime_error(std::string("socks5udp_associate: ") + std::strerror(errno) + " / " +
                                     socks5_strerror(socks5_errno));
        char buf[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
        address = buf;
        port = ntohs(sin->sin_port);
    }
    ~HeldLease() { ::close(fd); }
    HeldLease(const HeldLease&) = delete;
};

// ---- options and usage -------------------------------------------------------

TEST_F(Ctl, VersionAndHelp) {
    Result v = ctl({"--version"});
    expect_ok(v);
    EXPECT_EQ(v.out.rfind("s5brokerctl ", 0), 0u) << v;
    Result st = ctl({"status", "--json"});
    expect_ok(st);
    // One version for the whole project: the CLI's and the daemon's.
    EXPECT_EQ(v.out, "s5brokerctl " + st.parsed()["version"].get<std::string>() + "\n");

    Result h = ctl({"--help"});
    expect_ok(h);
    EXPECT_NE(h.out.find("Usage: s5brokerctl"), std::string::npos) << h;
    for (const char* cmd : {"status", "servers", "leases", "associate", "route", "reload", "monitor"})
        EXPECT_NE(h.out.find(cmd), std::string::npos) << cmd;
}

TEST_F(Ctl, UsageErrorsExit2WithOneLine) {
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {},
             {"frobnicate"},
             {"--frobnicate", "status"},
             {"status", "extra"},
             {"route"},
             {"route", "example.com"},
             {"associate", "localhost", "7"},
             {"associate", "127.0.0.1", "99999"},
             {"associate", "127.0.0.1", "7", "--server", "::1:1080"},
             {"servers", "--echo", "x"},
             {"status", "--bus-address"},
         }) {
        SCOPED_TRACE(::testing::PrintToString(args));
        expect_one_error_line(ctl(args), 2, "");
    }
    Result r = ctl({"frobnicate"});
    EXPECT_EQ(r.err, "s5brokerctl: unknown command 'frobnicate' (see 's5brokerctl --help')\n");
}

// ---- reading the broker --------------------------------------------------------

TEST_F(Ctl, Status) {
    Result r = ctl({"status"});
    expect_ok(r);
    for (const char* w : {"Version:", "Leases:", "Servers:", "Statistics:", "plain ", "plain6", "spare", "closed",
                          "pool ", "associations_made"})
        EXPECT_NE(r.out.find(w), std::string::npos) << w << "\n" << r;

    Result j = ctl({"status", "--json"});
    expect_ok(j);
    json st = j.parsed();
    EXPECT_TRUE(st["version"].is_string());
    EXPECT_EQ(st["lease_count"], 0);
    ASSERT_TRUE(st["servers"].is_array());
    EXPECT_EQ(st["servers"].size(), 4u);
    for (const auto& s : st["servers"]) {
        EXPECT_TRUE(s["state"].is_string()) << s;
        EXPECT_TRUE(s["pool_idle"].is_number_unsigned()) << s;
        EXPECT_TRUE(s["pool_target"].is_number_unsigned()) << s;
    }
    ASSERT_TRUE(st["statistics"].is_object());
    EXPECT_TRUE(st["statistics"].contains("associations_made")) << st;
}

TEST_F(Ctl, Servers) {
    // The closed server is down with a reason once the broker has tried it.
    Result r;
    json servers;
    ASSERT_TRUE(eventually(
        [&] {
            r = ctl({"servers", "--json"});
            if (r.status != 0) return false;
            servers = r.parsed();
            return find_by(servers, "name", "plain")["state"] == "up" &&
                   find_by(servers, "name", "closed")["state"] == "down";
        },
        15s))
        << r;
    json plain = find_by(servers, "name", "plain");
    EXPECT_EQ(plain["address"], "127.0.0.1");
    EXPECT_EQ(plain["port"], env->plain.port());
    EXPECT_EQ(plain["auth"], "none");
    EXPECT_EQ(plain["path"], "/org/s5broker/Broker1/server/plain");
    EXPECT_EQ(plain["last_error"], "");
    EXPECT_EQ(find_by(servers, "name", "plain6")["address"], "::1");
    json closed = find_by(servers, "name", "closed");
    EXPECT_EQ(closed["port"], env->closed_port);
    EXPECT_NE(closed["last_error"], "") << closed;

    Result t = ctl({"servers"});
    expect_ok(t);
    EXPECT_EQ(t.out.rfind("NAME  ", 0), 0u) << t;
    for (const char* h : {"ADDRESS", "PORT", "AUTH", "STATE", "IDLE/TARGET", "LAST-ERROR"})
        EXPECT_NE(t.out.find(h), std::string::npos) << h;
    EXPECT_NE(t.out.find("plain6  ::1"), std::string::npos) << t;
    EXPECT_NE(t.out.find(std::to_string(env->closed_port)), std::string::npos) << t;
}

TEST_F(Ctl, Leases) {
    Result none = ctl({"leases"});
    expect_ok(none);
    EXPECT_EQ(none.out, "No leases.\n");
    EXPECT_EQ(ctl({"leases", "--json"}).parsed(), json::array());

    HeldLease lease;
    auto paths = env->client->leases();
    ASSERT_EQ(paths.size(), 1u);
    const std::string id = paths[0].substr(paths[0].rfind('/') + 1);

    Result j = ctl({"leases", "--json"});
    expect_ok(j);
    json leases = j.parsed();
    ASSERT_EQ(leases.size(), 1u) << j;
    json l = leases[0];
    EXPECT_EQ(l["id"], id);
    EXPECT_EQ(l["path"], paths[0]);
    EXPECT_EQ(l["uid"], getuid());
    EXPECT_EQ(l["server"], "plain");
    EXPECT_EQ(l["server_path"], "/org/s5broker/Broker1/server/plain");
    EXPECT_EQ(l["relay"]["address"], lease.address);
    EXPECT_EQ(l["relay"]["port"], lease.port);
    EXPECT_EQ(l["state"], "active");
    EXPECT_EQ(l["generation"], 1);
    // Granted moments ago (the Created property).
    ASSERT_TRUE(l["age_s"].is_number()) << l;
    EXPECT_LE(l["age_s"].get<int64_t>(), 5);

    Result t = ctl({"leases"});
    expect_ok(t);
    EXPECT_EQ(t.out.rfind("ID  UID  SERVER  RELAY", 0), 0u) << t;
    std::istringstream rows(t.out);
    std::string header, row;
    std::getline(rows, header);
    std::getline(rows, row);
    std::istringstream cells(row);
    std::vector<std::string> v;
    for (std::string c; cells >> c;) v.push_back(c);
    ASSERT_EQ(v.size(), 7u) << t;
    EXPECT_TRUE(v[6] == "0s" || v[6] == "1s") << "AGE " << v[6];
    v.pop_back();
    EXPECT_EQ(v, (std::vector<std::string>{id, std::to_string(getuid()), "plain",
                                           lease.address + ":" + std::to_string(lease.port), "active", "1"}))
        << t;

    json st = ctl({"status", "--json"}).parsed();
    EXPECT_EQ(st["lease_count"], 1);
}

TEST_F(Ctl, Route) {
    Result r = ctl({"route", "192.0.2.7"});
    expect_ok(r);
    EXPECT_NE(r.out.find("Server:       plain\n"), std::string::npos) << r;
    EXPECT_NE(r.out.find("127.0.0.1:" + std::to_string(env->plain.port())), std::string::npos) << r;

    Result j = ctl({"route", "::1", "--json"});
    expect_ok(j);
    json route = j.parsed();
    EXPECT_EQ(route["destination"], "::1");
    EXPECT_EQ(route["name"], "plain6");
    EXPECT_EQ(route["address"], "::1");
    EXPECT_EQ(route["port"], env->plain.port());
}

// ---- associating through the library ------------------------------------------

TEST_F(Ctl, AssociateEchoIPv4) {
    const std::string port = std::to_string(env->echo.port());
    Result r = ctl({"associate", "127.0.0.1", port, "--echo", "hello through s5brokerctl"});
    expect_ok(r);
    EXPECT_NE(r.out.find("Rendezvous:  127.0.0.1:"), std::string::npos) << r;
    EXPECT_NE(r.out.find("Reply:       \"hello through s5brokerctl\" from 127.0.0.1:" + port), std::string::npos) << r;
    EXPECT_NE(r.out.find("(server plain)"), std::string::npos) << r;
}

TEST_F(Ctl, AssociateEchoIPv6WithServerJson) {
    const std::string port = std::to_string(env->echo.port());
    Result r = ctl({"--json", "associate", "::1", port, "--server", "[::1]:" + std::to_string(env->plain.port()),
                    "--echo", "six"});
    expect_ok(r);
    json a = r.parsed();
    EXPECT_EQ(a["destination"]["address"], "::1");
    EXPECT_EQ(a["server"]["address"], "::1");
    EXPECT_EQ(a["server"]["port"], env->plain.port());
    EXPECT_EQ(a["rendezvous"]["address"], "::1");
    EXPECT_GT(a["rendezvous"]["port"].get<int>(), 0);
    EXPECT_EQ(a["lease_server"], "plain6");
    EXPECT_TRUE(a["lease"].is_string());
    EXPECT_EQ(a["echo"]["sent"], "six");
    EXPECT_EQ(a["echo"]["reply"], "six");
    EXPECT_EQ(a["echo"]["from"]["address"], "::1");
    EXPECT_EQ(a["echo"]["from"]["port"], env->echo.port());
    EXPECT_TRUE(a["echo"]["rtt_ms"].is_number());
}

TEST_F(Ctl, AssociateWithoutEchoPrintsRendezvous) {
    Result r = ctl({"associate", "127.0.0.1", "0", "--json"});
    expect_ok(r);
    json a = r.parsed();
    EXPECT_EQ(a["rendezvous"]["address"], "127.0.0.1");
    EXPECT_TRUE(a["server"].is_null());
    EXPECT_FALSE(a.contains("echo"));
}

TEST_F(Ctl, AssociateFailures) {
    // A server that is not configured: ENOENT / S5_ENOSERV from the library.
    Result r = ctl({"associate", "127.0.0.1", "7", "--server", "127.0.0.1:" + std::to_string(free_tcp_port())});
    expect_one_error_line(r, 1, "cannot associate for 127.0.0.1:7: ");
    // Nobody answers on that UDP port: no reply within 3 s.
    r = ctl({"associate", "127.0.0.1", std::to_string(free_udp_port()), "--echo", "anyone?"});
    expect_one_error_line(r, 1, "no reply from 127.0.0.1:");
}

// ---- errors --------------------------------------------------------------------

TEST_F(Ctl, NoBrokerOnTheBus) {
    TempDir other;
    PrivateBus empty(other);
    // PrivateBus points this process at the new bus: point it back.
    setenv("DBUS_SYSTEM_BUS_ADDRESS", env->bus.address().c_str(), 1);
    const std::string prefix = "cannot reach org.s5broker.Broker1 on " + empty.address() + ": ";

    for (const char* cmd : {"status", "servers", "leases", "reload"}) {
        SCOPED_TRACE(cmd);
        expect_one_error_line(ctl({cmd, "--bus-address", empty.address()}), 1, prefix);
    }
    // The same through the environment, and for the library's path.
    expect_one_error_line(ctl({"route", "127.0.0.1"}, {"DBUS_SYSTEM_BUS_ADDRESS=" + empty.address()}), 1, prefix);
    expect_one_error_line(ctl({"associate", "127.0.0.1", "7", "--bus-address", empty.address()}), 1, prefix);
    // No bus at all.
    const std::string nothing = "unix:path=" + other.file("nothing");
    for (const char* cmd : {"leases", "monitor"}) {
        SCOPED_TRACE(cmd);
        expect_one_error_line(ctl({cmd, "--bus-address", nothing}), 1,
                              "cannot reach org.s5broker.Broker1 on " + nothing + ": ");
    }
    // monitor waits for a broker that is not there (yet), and says so.
    CtlProcess m({"monitor", "--bus-address", empty.address()});
    EXPECT_TRUE(eventually([&] { return m.output().find("(not running now)") != std::string::npos; })) << m.output();
    EXPECT_TRUE(m.proc->running());
    auto st = m.proc->stop(SIGTERM);
    ASSERT_TRUE(st);
    expect_ok(m.finish(st));
}

TEST_F(Ctl, Reload) {
    Result r = ctl({"reload"});
    expect_ok(r);
    EXPECT_EQ(r.out, "Configuration reloaded.\n");
    EXPECT_EQ(ctl({"reload", "--json"}).parsed(), json({{"reloaded", true}}));

    // A broken file is refused by the broker: its reason, on one line.
    write_file(env->broker->config_path(), "{\"servers\": [");
    r = ctl({"reload"});
    write_file(env->broker->config_path(), env->config);
    expect_one_error_line(r, 1, "Reload failed: ");
    EXPECT_EQ(ctl({"servers", "--json"}).parsed().size(), 4u);
}

// ---- monitor -------------------------------------------------------------------

// Associates and closes again until `pred` holds for the monitor's output.
bool lease_until(CtlProcess& m, const std::function<bool(const std::string&)>& pred) {
    return eventually(
        [&] {
            { HeldLease l; }
            return pred(m.output());
        },
        10s);
}

TEST_F(Ctl, MonitorFollowsLeasesAndStopsOnSigterm) {
    CtlProcess m({"monitor"});
    ASSERT_TRUE(eventually([&] { return m.output().find("Monitoring org.s5broker.Broker1 on ") == 0; })) << m.output();
    ASSERT_TRUE(lease_until(m, [](const std::string& out) {
        return out.find(" manager PropertiesChanged LeaseCount=1 ") != std::string::npos &&
               out.find(" manager PropertiesChanged LeaseCount=0 ") != std::string::npos;
    })) << m.output();
    auto st = m.proc->stop(SIGTERM);
    ASSERT_TRUE(st);
    Result r = m.finish(st);
    expect_ok(r);
}

TEST_F(Ctl, MonitorJsonRenewedAndServerStateStopsOnSigint) {
    CtlProcess m({"monitor", "--json"});
    // No banner in JSON mode: associate until the first event shows up.
    ASSERT_TRUE(lease_until(m, [](const std::string& out) { return !out.empty(); })) << m.output();

    // A lease on "spare", whose danted then dies and comes back: the lease is
    // renewed (generation 2) and the server goes down and up again.
    sockaddr_storage svr{};
    auto* sin = reinterpret_cast<sockaddr_in*>(&svr);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(env->spare.port());
    inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
    HeldLease lease(&svr, sizeof(sockaddr_in));
    // The leases lease_until() closed may not all be released yet.
    ASSERT_TRUE(eventually([&] { return env->client->leases().size() == 1; }));
    const std::string path = env->client->leases().at(0);
    env->spare.kill();
    env->spare.start();

    auto events = [&] {
        std::vector<json> v;
        std::istringstream in(m.output());
        for (std::string line; std::getline(in, line);) v.push_back(json::parse(line));
        return v;
    };
    auto has = [&](const std::function<bool(const json&)>& p) {
        for (const auto& e : events())
            if (p(e)) return true;
        return false;
    };
    EXPECT_TRUE(eventually(
        [&] {
            return has([&](const json& e) {
                return e["event"] == "Renewed" && e["path"] == path && e["generation"] == 2 &&
                       e["relay"]["address"] == "127.0.0.1" &&
                       e["object"] == "lease/" + path.substr(path.rfind('/') + 1);
            });
        },
        20s))
        << m.output();
    EXPECT_TRUE(has([](const json& e) {
        return e["event"] == "PropertiesChanged" && e["object"] == "server/spare" &&
               e["interface"] == "org.s5broker.Broker1.Server" && e["changed"].contains("State");
    })) << m.output();
    EXPECT_TRUE(has([](const json& e) {
        return e["event"] == "PropertiesChanged" && e["object"] == "manager" && e["changed"].contains("LeaseCount");
    })) << m.output();
    for (const auto& e : events()) EXPECT_TRUE(e["time"].is_string()) << e;

    auto st = m.proc->stop(SIGINT);
    ASSERT_TRUE(st);
    expect_ok(m.finish(st));
}

}  // namespace
