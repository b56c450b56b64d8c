// s5brokerctl end to end: the real CLI binary against the real s5brokerd on
// a private dbus-daemon, with real danted servers and a UDP echo service.
// Every command runs as a child process; its stdout and stderr are kept
// apart so that the JSON output can be parsed and the error line counted.
// Most run with stdout to a file (not a terminal: no pager, no colours, no
// truncation); the terminal conventions run on a pseudo-terminal.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <s5broker/socks5.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

extern char** environ;

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
// starting with `starts_with`. Failures read "Failed to ...: ..." as in
// systemd's tools; usage errors start with the program's name.
void expect_one_error_line(const Result& r, int status, const std::string& starts_with) {
    EXPECT_EQ(r.status, status) << r;
    EXPECT_EQ(r.out, "") << r;
    auto lines = r.err_lines();
    ASSERT_EQ(lines.size(), 1u) << r;
    EXPECT_EQ(lines[0].rfind(starts_with, 0), 0u) << r;
    EXPECT_EQ(r.err.back(), '\n');
}

void expect_usage_error(const Result& r) { expect_one_error_line(r, 2, "s5brokerctl: "); }

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> v;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
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

// ---- running the CLI on a terminal ---------------------------------------------

// Unset: the variable is removed from the CLI's environment.
using Vars = std::map<std::string, std::optional<std::string>>;

// What the terminal conventions depend on, all unset: tests set what they need.
Vars terminal_vars(Vars extra) {
    Vars v{{"TERM", "xterm"},      {"NO_COLOR", std::nullopt},      {"SYSTEMD_COLORS", std::nullopt},
           {"COLUMNS", std::nullopt}, {"SYSTEMD_PAGER", std::nullopt}, {"PAGER", std::nullopt},
           {"SYSTEMD_LESS", std::nullopt}, {"LESS", std::nullopt}};
    for (auto& [k, x] : extra) v[k] = x;
    return v;
}

// The CLI with stdin, stdout and its controlling terminal on a new
// pseudo-terminal `columns` wide, stderr to a file; `vars` changes this
// process's environment for it. Returns when the terminal has no more
// writers (the CLI and any pager are gone), "\r\n" read as "\n".
Result ctl_tty(const std::vector<std::string>& args, const Vars& vars, unsigned short columns = 80,
               std::chrono::milliseconds timeout = 20s) {
    static int n = 0;
    const std::string err = env->dir.file("tty" + std::to_string(++n) + ".err");
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e) {
        std::string kv(*e);
        if (!vars.count(kv.substr(0, kv.find('=')))) envs.push_back(kv);
    }
    for (const auto& [k, v] : vars)
        if (v) envs.push_back(k + "=" + *v);
    std::vector<std::string> argv{S5BROKERCTL_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    auto pointers = [](std::vector<std::string>& v) {
        std::vector<char*> p;
        for (auto& x : v) p.push_back(x.data());
        p.push_back(nullptr);
        return p;
    };
    auto argvp = pointers(argv), envp = pointers(envs);

    int master = -1, slave = -1;
    winsize ws{};
    ws.ws_row = 24;
    ws.ws_col = columns;
    if (openpty(&master, &slave, nullptr, nullptr, &ws) != 0)
        throw std::runtime_error(std::string("openpty: ") + std::strerror(errno));
    fcntl(master, F_SETFD, FD_CLOEXEC);
    fcntl(slave, F_SETFD, FD_CLOEXEC);
    const int errfd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const pid_t pid = fork();
    if (pid == 0) {
        setsid();
        ioctl(slave, TIOCSCTTY, 0);
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(errfd, 2);
        execve(argvp[0], argvp.data(), envp.data());
        _exit(127);
    }
    ::close(slave);
    ::close(errfd);
    Result r;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{master, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        char buf[4096];
        const ssize_t k = ::read(master, buf, sizeof buf);
        if (k > 0)
            r.out.append(buf, static_cast<size_t>(k));
        else if (k < 0 && errno == EINTR)
            continue;
        else
            break;  // EIO: nobody has the terminal open any more
    }
    ::close(master);
    int st = 0;
    for (;;) {
        const pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            r.status = exit_code(st);
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        std::this_thread::sleep_for(10ms);
    }
    r.out.erase(std::remove(r.out.begin(), r.out.end(), '\r'), r.out.end());
    r.err = read_file(err);
    return r;
}

// The widest line of `text`, escape sequences not counted.
size_t widest(const std::string& text) {
    size_t w = 0;
    for (const auto& line : lines_of(text)) {
        size_t cur = 0;
        for (size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '\033') {
                while (i < line.size() && line[i] != 'm') ++i;
            } else {
                ++cur;
            }
        }
        w = std::max(w, cur);
    }
    return w;
}

bool has_escapes(const std::string& text) { return contains(text, "\033"); }

// A pager for the tests: writes LESS and what it reads to `path`.out.
std::string recording_pager(const std::string& name) {
    const std::string path = env->dir.file(name);
    write_file(path, "#!/bin/sh\n{ echo \"LESS=$LESS\"; cat; } > \"$0.out\"\n", 0755);
    return path;
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// The closed server's LastError, once the broker has tried it.
std::string closed_server_error() {
    std::string e;
    eventually(
        [&] {
            Result r = ctl({"servers", "--json"});
            if (r.status != 0) return false;
            e = find_by(r.parsed(), "name", "closed").value("last_error", std::string());
            return !e.empty();
        },
        15s);
    return e;
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
    for (const char* opt : {"--no-pager", "--no-legend", "--json=pretty|short|off", "-j "})
        EXPECT_NE(h.out.find(opt), std::string::npos) << opt;
    EXPECT_EQ(ctl({"-h"}).out, h.out);

    Result modes = ctl({"--json=help"});
    expect_ok(modes);
    EXPECT_EQ(modes.out, "short\npretty\noff\n");
}

TEST_F(Ctl, HelpPerVerb) {
    // No bus needed, nor the verb's operands.
    const std::string nowhere = "unix:path=" + env->dir.file("nothing");
    for (const char* verb : {"status", "servers", "leases", "associate", "route", "reload", "monitor"}) {
        SCOPED_TRACE(verb);
        Result r = ctl({verb, "-h", "--bus-address", nowhere});
        expect_ok(r);
        EXPECT_EQ(r.out.rfind(std::string("Usage: s5brokerctl [OPTIONS] ") + verb, 0), 0u) << r;
        EXPECT_TRUE(contains(r.out, "-h, --help")) << r;
        EXPECT_FALSE(contains(r.out, "Commands:")) << r;  // not the global help
        EXPECT_EQ(ctl({"--help", verb}).out, r.out);
    }
    Result l = ctl({"leases", "--help"});
    expect_ok(l);
    EXPECT_TRUE(contains(l.out, "--no-legend")) << l;
    EXPECT_FALSE(contains(l.out, "--echo")) << l;
    Result a = ctl({"associate", "-h"});
    expect_ok(a);
    EXPECT_TRUE(contains(a.out, "--echo TEXT")) << a;
    expect_usage_error(ctl({"frobnicate", "-h"}));
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
        expect_usage_error(ctl(args));
    }
    for (const char* bad : {"--json=yaml", "--json=", "--no-pager=1", "--no-legend=yes", "-x"}) {
        SCOPED_TRACE(bad);
        expect_usage_error(ctl({"servers", bad}));
    }
    EXPECT_EQ(ctl({"servers", "--json=yaml"}).err,
              "s5brokerctl: invalid --json mode 'yaml': expected pretty, short or off (see 's5brokerctl --help')\n");
    Result r = ctl({"frobnicate"});
    EXPECT_EQ(r.err, "s5brokerctl: unknown command 'frobnicate' (see 's5brokerctl --help')\n");
}

// ---- reading the broker --------------------------------------------------------

TEST_F(Ctl, Status) {
    Result r = ctl({"status"});
    expect_ok(r);
    for (const char* w : {"Version:", "Lease count:", "Servers:", "Statistics:", "plain ", "plain6", "spare",
                          "closed", "pool ", "associations_made"})
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
    for (const char* h : {"ADDRESS", "PORT", "AUTH", "STATE", "POOL-IDLE", "POOL-TARGET", "LAST-ERROR"})
        EXPECT_NE(t.out.find(h), std::string::npos) << h;
    EXPECT_NE(t.out.find("plain6  ::1"), std::string::npos) << t;
    EXPECT_NE(t.out.find(std::to_string(env->closed_port)), std::string::npos) << t;
    // The footer, after a blank line.
    auto lines = lines_of(t.out);
    ASSERT_EQ(lines.size(), 7u) << t;
    EXPECT_EQ(lines[5], "");
    EXPECT_EQ(lines[6], "4 servers listed.");

    // Every column is a field of the JSON, in lower snake_case.
    std::istringstream header(lines[0]);
    for (std::string col; header >> col;) {
        std::string field = col;
        for (char& c : field) c = c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        EXPECT_TRUE(plain.contains(field)) << col;
    }
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
    std::istringstream header_words(lines_of(t.out).at(0));
    std::vector<std::string> header_cols;
    for (std::string w; header_words >> w;) header_cols.push_back(w);
    EXPECT_EQ(header_cols, (std::vector<std::string>{"ID", "UID", "SERVER", "RELAY", "STATE", "GENERATION", "AGE"}))
        << t;
    EXPECT_TRUE(contains(t.out, "\n\n1 lease listed.\n")) << t;
    // The columns are the JSON's fields (AGE with its unit: age_s).
    for (const char* field : {"id", "uid", "server", "relay", "state", "generation", "age_s"})
        EXPECT_TRUE(l.contains(field)) << field;
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
    EXPECT_EQ(route["server"], "plain6");
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
    expect_one_error_line(r, 1, "Failed to associate for 127.0.0.1:7: ");
    // Nobody answers on that UDP port: no reply within 3 s.
    r = ctl({"associate", "127.0.0.1", std::to_string(free_udp_port()), "--echo", "anyone?"});
    expect_one_error_line(r, 1, "Failed to get a reply from 127.0.0.1:");
    EXPECT_TRUE(contains(r.err, ": none within 3 s")) << r;
}

// ---- errors --------------------------------------------------------------------

TEST_F(Ctl, NoBrokerOnTheBus) {
    TempDir other;
    PrivateBus empty(other);
    // PrivateBus points this process at the new bus: point it back.
    setenv("DBUS_SYSTEM_BUS_ADDRESS", env->bus.address().c_str(), 1);
    // The bus's own error, name and text, and where the broker was looked for.
    const std::string unknown =
        ": org.freedesktop.DBus.Error.ServiceUnknown: The name org.s5broker.Broker1 was not provided by any "
        ".service files (is s5brokerd running on " +
        empty.address() + "?)\n";

    for (auto [cmd, what] : {std::pair{"status", "get property Version"},
                             {"servers", "get property Servers"},
                             {"leases", "get property Leases"},
                             {"reload", "reload the configuration"}}) {
        SCOPED_TRACE(cmd);
        Result r = ctl({cmd, "--bus-address", empty.address()});
        expect_one_error_line(r, 1, std::string("Failed to ") + what + ": ");
        EXPECT_EQ(r.err, std::string("Failed to ") + what + unknown) << r;
    }
    // The same through the environment, and for the library's path.
    Result r = ctl({"route", "127.0.0.1"}, {"DBUS_SYSTEM_BUS_ADDRESS=" + empty.address()});
    expect_one_error_line(r, 1, "Failed to look up the server for 127.0.0.1: ");
    EXPECT_EQ(r.err, "Failed to look up the server for 127.0.0.1" + unknown) << r;
    r = ctl({"associate", "127.0.0.1", "7", "--bus-address", empty.address()});
    expect_one_error_line(r, 1, "Failed to associate for 127.0.0.1:7: ");
    EXPECT_TRUE(contains(r.err, "(is s5brokerd running on " + empty.address() + "?)")) << r;
    // No bus at all: sd-bus's error.
    const std::string nothing = "unix:path=" + other.file("nothing");
    for (const char* cmd : {"leases", "monitor", "reload"}) {
        SCOPED_TRACE(cmd);
        r = ctl({cmd, "--bus-address", nothing});
        expect_one_error_line(r, 1, "Failed to connect to " + nothing + ": ");
        EXPECT_TRUE(contains(r.err, "No such file or directory")) << r;
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
    // As ExecReload=: synchronous, silent on success.
    Result r = ctl({"reload"});
    expect_ok(r);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(ctl({"reload", "--json"}).parsed(), json({{"reloaded", true}}));
    EXPECT_EQ(ctl({"reload", "--json=short"}).out, "{\"reloaded\":true}\n");

    // A broken file is refused by the broker: exit 1 with its error's name
    // and its reason, on one line; the running configuration stays.
    write_file(env->broker->config_path(), "{\"servers\": [");
    r = ctl({"reload"});
    Result j = ctl({"reload", "--json"});
    write_file(env->broker->config_path(), env->config);
    const std::string prefix =
        "Failed to reload the configuration: org.s5broker.Broker1.Error.InvalidArgs: configuration not applied: ";
    expect_one_error_line(r, 1, prefix);
    expect_one_error_line(j, 1, prefix);  // no JSON for a failure
    const std::string reason = r.err_lines().at(0).substr(prefix.size());
    EXPECT_FALSE(reason.empty()) << r;
    // The daemon's own message, as it logged it.
    EXPECT_TRUE(contains(env->broker->log(), reason)) << reason << "\n" << env->broker->log();
    EXPECT_EQ(ctl({"servers", "--json"}).parsed().size(), 4u);
    expect_ok(ctl({"reload"}));
}

// ---- output conventions --------------------------------------------------------

TEST_F(Ctl, NoLegend) {
    Result t = ctl({"servers", "--no-legend"});
    expect_ok(t);
    auto lines = lines_of(t.out);
    ASSERT_EQ(lines.size(), 4u) << t;  // no header, no blank line, no footer
    for (const auto& line : lines) {
        EXPECT_FALSE(contains(line, "NAME") || contains(line, "listed")) << t;
        const std::string name = line.substr(0, line.find(' '));
        EXPECT_TRUE(name == "plain" || name == "plain6" || name == "spare" || name == "closed") << line;
    }
    Result none = ctl({"leases", "--no-legend"});
    expect_ok(none);
    EXPECT_EQ(none.out, "");  // not even "No leases."

    HeldLease lease;
    const std::string id = env->client->leases().at(0).substr(env->client->leases().at(0).rfind('/') + 1);
    Result one = ctl({"leases", "--no-legend"});
    expect_ok(one);
    ASSERT_EQ(lines_of(one.out).size(), 1u) << one;
    EXPECT_EQ(one.out.rfind(id + "  ", 0), 0u) << one;
    // JSON has no legend to drop.
    EXPECT_EQ(ctl({"leases", "--no-legend", "--json"}).parsed().size(), 1u);
}

TEST_F(Ctl, JsonModes) {
    HeldLease lease;
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"status"}, {"servers"}, {"leases"}, {"route", "127.0.0.1"}, {"reload"}}) {
        SCOPED_TRACE(::testing::PrintToString(args));
        auto with = [&](const std::string& opt) {
            auto a = args;
            a.push_back(opt);
            return ctl(a);
        };
        Result shrt = with("--json=short");
        expect_ok(shrt);
        EXPECT_EQ(lines_of(shrt.out).size(), 1u) << shrt;  // one line
        EXPECT_NO_THROW(shrt.parsed()) << shrt;
        Result pretty = with("--json=pretty");
        expect_ok(pretty);
        EXPECT_GT(lines_of(pretty.out).size(), 1u) << pretty;  // indented
        EXPECT_TRUE(contains(pretty.out, "\n  ")) << pretty;
        EXPECT_EQ(pretty.parsed().type(), shrt.parsed().type());
        EXPECT_EQ(with("--json").out.substr(0, 2), pretty.out.substr(0, 2));  // bare --json is pretty
        // -j off a terminal is short; --json=off is the human output.
        EXPECT_EQ(lines_of(with("-j").out).size(), 1u);
        Result off = with("--json=off");
        expect_ok(off);
        EXPECT_TRUE(off.out.empty() || (off.out[0] != '{' && off.out[0] != '[')) << off;
    }
    EXPECT_EQ(ctl({"servers", "--json=off"}).out.rfind("NAME  ", 0), 0u);
}

TEST_F(Ctl, NotATerminal) {
    // Stdout is a file: no colours, no pager, nothing cut, whatever the
    // environment says about the terminal.
    const std::string error = closed_server_error();
    ASSERT_FALSE(error.empty());
    const std::string pager = recording_pager("never-pager");
    const std::vector<std::string> vars{"TERM=xterm", "SYSTEMD_COLORS=1", "COLUMNS=40", "SYSTEMD_PAGER=" + pager,
                                        "PAGER=" + pager};
    HeldLease lease;
    for (const char* cmd : {"status", "servers", "leases"}) {
        SCOPED_TRACE(cmd);
        Result r = ctl({cmd}, vars);
        expect_ok(r);
        EXPECT_FALSE(has_escapes(r.out)) << r;
        if (std::string(cmd) != "leases") {
            EXPECT_TRUE(contains(r.out, error)) << r;  // whole
            EXPECT_GT(widest(r.out), 40u) << r;
        }
    }
    EXPECT_FALSE(exists(pager + ".out"));
}

TEST_F(Ctl, TerminalColoursAndWidth) {
    const std::string error = closed_server_error();
    ASSERT_FALSE(error.empty());
    const std::string whole = ctl({"servers"}).out;
    ASSERT_GT(widest(whole), 80u) << whole;  // so it must be cut on 80 columns

    Result t = ctl_tty({"servers", "--no-pager"}, terminal_vars({}), 80);
    expect_ok(t);
    EXPECT_TRUE(has_escapes(t.out)) << t;
    EXPECT_TRUE(contains(t.out, "\033[4m")) << t;  // headers underlined
    EXPECT_LE(widest(t.out), 80u) << t;
    EXPECT_FALSE(contains(t.out, error)) << t;
    EXPECT_TRUE(contains(t.out, "closed")) << t;
    EXPECT_TRUE(contains(t.out, "4 servers listed.")) << t;

    // NO_COLOR and SYSTEMD_COLORS=0: the same, without colours.
    for (const auto& [k, v] : {std::pair{"NO_COLOR", "1"}, {"SYSTEMD_COLORS", "0"}}) {
        SCOPED_TRACE(k);
        Result plain = ctl_tty({"servers", "--no-pager"}, terminal_vars({{k, v}}), 80);
        expect_ok(plain);
        EXPECT_FALSE(has_escapes(plain.out)) << plain;
        EXPECT_LE(widest(plain.out), 80u) << plain;
    }
    // $COLUMNS wins over the terminal's size.
    Result wide = ctl_tty({"servers", "--no-pager"}, terminal_vars({{"COLUMNS", "400"}}), 80);
    expect_ok(wide);
    EXPECT_TRUE(contains(wide.out, error)) << wide;
    // A dumb terminal: no colours.
    Result dumb = ctl_tty({"servers"}, terminal_vars({{"TERM", "dumb"}}), 80);
    expect_ok(dumb);
    EXPECT_FALSE(has_escapes(dumb.out)) << dumb;
    // JSON is never coloured.
    Result j = ctl_tty({"servers", "--no-pager", "--json=short"}, terminal_vars({}), 80);
    expect_ok(j);
    EXPECT_FALSE(has_escapes(j.out)) << j;
    EXPECT_EQ(json::parse(j.out).size(), 4u);
}

TEST_F(Ctl, TerminalPager) {
    const std::string error = closed_server_error();
    ASSERT_FALSE(error.empty());
    const std::string pager = recording_pager("pager");
    Result t = ctl_tty({"servers"}, terminal_vars({{"SYSTEMD_PAGER", pager}, {"PAGER", "false"}}), 80);
    expect_ok(t);
    EXPECT_EQ(t.out, "");  // all of it went to the pager
    const std::string paged = read_file(pager + ".out");
    EXPECT_EQ(paged.rfind("LESS=FRSXMK\n", 0), 0u) << paged;
    EXPECT_TRUE(contains(paged, "\033[4mNAME")) << paged;  // colours, for less -R
    EXPECT_TRUE(contains(paged, error)) << paged;           // not cut: less -S scrolls
    EXPECT_TRUE(contains(paged, "4 servers listed.")) << paged;

    // $PAGER when $SYSTEMD_PAGER is unset; $SYSTEMD_LESS for LESS; JSON too.
    const std::string second = recording_pager("second-pager");
    t = ctl_tty({"servers", "--json=short"}, terminal_vars({{"PAGER", second}, {"SYSTEMD_LESS", "FRK"}}), 80);
    expect_ok(t);
    const std::string paged2 = read_file(second + ".out");
    EXPECT_EQ(paged2.rfind("LESS=FRK\n", 0), 0u) << paged2;
    EXPECT_EQ(json::parse(paged2.substr(paged2.find('\n') + 1)).size(), 4u) << paged2;

    // Per-verb help goes through it as well.
    const std::string third = recording_pager("help-pager");
    t = ctl_tty({"leases", "-h"}, terminal_vars({{"SYSTEMD_PAGER", third}}), 80);
    expect_ok(t);
    EXPECT_TRUE(contains(read_file(third + ".out"), "Usage: s5brokerctl [OPTIONS] leases")) << t;

    // No pager: --no-pager, SYSTEMD_PAGER=cat or empty, and never for
    // reload (ExecReload=), associate and monitor.
    const std::string unused = recording_pager("unused-pager");
    t = ctl_tty({"servers", "--no-pager"}, terminal_vars({{"SYSTEMD_PAGER", unused}}), 80);
    expect_ok(t);
    EXPECT_TRUE(contains(t.out, "4 servers listed.")) << t;
    for (const char* none : {"cat", ""}) {
        t = ctl_tty({"servers"}, terminal_vars({{"SYSTEMD_PAGER", none}, {"PAGER", unused}}), 80);
        expect_ok(t);
        EXPECT_TRUE(contains(t.out, "4 servers listed.")) << t;
    }
    t = ctl_tty({"reload"}, terminal_vars({{"SYSTEMD_PAGER", unused}}), 80);
    expect_ok(t);
    EXPECT_EQ(t.out, "");
    t = ctl_tty({"associate", "127.0.0.1", "0"}, terminal_vars({{"SYSTEMD_PAGER", unused}}), 80);
    expect_ok(t);
    EXPECT_TRUE(contains(t.out, "Rendezvous:")) << t;
    EXPECT_FALSE(exists(unused + ".out"));

    // A pager that cannot be run: then pager, less or more; with none of
    // them either, the text as it is.
    t = ctl_tty({"servers"},
                terminal_vars({{"SYSTEMD_PAGER", env->dir.file("no-such-pager")}, {"PATH", env->dir.file("no-bin")}}),
                80);
    expect_ok(t);
    EXPECT_TRUE(contains(t.out, "4 servers listed.")) << t;
    // The real less with LESS=FRSXMK: output that fits the screen (and is
    // not wider than it) is shown and less quits at once (F).
    t = ctl_tty({"leases", "-h"}, terminal_vars({{"SYSTEMD_PAGER", "less"}}), 80);
    expect_ok(t);
    EXPECT_TRUE(contains(t.out, "Usage: s5brokerctl [OPTIONS] leases")) << t;
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
    // Held until announced, then released until that is: the broker
    // coalesces property signals (one a second), so a lease taken and
    // closed at once may never show.
    {
        HeldLease l;
        ASSERT_TRUE(eventually(
            [&] { return m.output().find(" manager PropertiesChanged LeaseCount=1 ") != std::string::npos; }, 10s))
            << m.output();
    }
    ASSERT_TRUE(eventually(
        [&] { return m.output().find(" manager PropertiesChanged LeaseCount=0 ") != std::string::npos; }, 10s))
        << m.output();
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
    // Property signals are coalesced, at most one a second per object.
    EXPECT_TRUE(eventually([&] {
        return has([](const json& e) {
            return e["event"] == "PropertiesChanged" && e["object"] == "server/spare" &&
                   e["interface"] == "org.s5broker.Broker1.Server" && e["changed"].contains("State");
        });
    })) << m.output();
    EXPECT_TRUE(eventually([&] {
        return has([](const json& e) {
            return e["event"] == "PropertiesChanged" && e["object"] == "manager" && e["changed"].contains("LeaseCount");
        });
    })) << m.output();
    for (const auto& e : events()) EXPECT_TRUE(e["time"].is_string()) << e;

    auto st = m.proc->stop(SIGINT);
    ASSERT_TRUE(st);
    expect_ok(m.finish(st));
}

TEST_F(Ctl, MonitorNoLegendAndPrettyJson) {
    // --no-legend: no banner, just the events.
    CtlProcess m({"monitor", "--no-legend"});
    ASSERT_TRUE(lease_until(m, [](const std::string& out) {
        return out.find(" manager PropertiesChanged LeaseCount=0 ") != std::string::npos;
    })) << m.output();
    EXPECT_FALSE(contains(m.output(), "Monitoring")) << m.output();
    auto st = m.proc->stop(SIGTERM);
    ASSERT_TRUE(st);
    expect_ok(m.finish(st));

    // --json=pretty: indented objects, one after the other.
    CtlProcess p({"monitor", "--json=pretty"});
    ASSERT_TRUE(lease_until(p, [](const std::string& out) {
        return out.find("\n  \"event\": \"PropertiesChanged\"") != std::string::npos;
    })) << p.output();
    st = p.proc->stop(SIGINT);
    ASSERT_TRUE(st);
    Result r = p.finish(st);
    expect_ok(r);
    EXPECT_EQ(r.out.rfind("{\n", 0), 0u) << r;
}

}  // namespace
