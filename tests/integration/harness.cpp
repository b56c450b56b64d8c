#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sdbus-c++/sdbus-c++.h>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "wire.hpp"

namespace s5test {
namespace {

[[noreturn]] void die(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }

constexpr const char* kBusName = "org.s5broker.Broker1";
constexpr const char* kManagerPath = "/org/s5broker/Broker1";
constexpr const char* kManagerIface = "org.s5broker.Broker1.Manager";

uint16_t free_port(int type) {
    int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) < 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) < 0) {
        ::close(fd);
        die("bind");
    }
    ::close(fd);
    return ntohs(sin.sin_port);
}

bool tcp_accepts(const char* ip, uint16_t port) {
    sockaddr_storage ss{};
    auto ep = s5::wire::Endpoint::parse_ip(ip, port);
    socklen_t len = static_cast<socklen_t>(ep->to_sockaddr(ss));
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0;
    if (fd >= 0) ::close(fd);
    return ok;
}

}  // namespace

// ---- files and directories -------------------------------------------------

TempDir::TempDir() {
    char tmpl[] = "/tmp/s5test-XXXXXX";
    if (!mkdtemp(tmpl)) die("mkdtemp");
    path_ = tmpl;
    // danted drops to "nobody" for some children; let them reach the log.
    chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

void write_file(const std::string& path, const std::string& content, mode_t mode) {
    ::unlink(path.c_str());
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) die("open " + path);
    if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) die("write " + path);
    fchmod(fd, mode);  // regardless of umask
    ::close(fd);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// ---- processes -------------------------------------------------------------

Process::Process(Options o) : group_(o.own_process_group) {
    std::vector<char*> argv;
    for (auto& a : o.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
        if (o.own_process_group) setsid();
        if (!o.log_path.empty()) {
            int fd = ::open(o.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                ::close(fd);
            }
        }
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        for (auto& kv : o.env) putenv(kv.data());
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        execv(argv[0], argv.data());
        std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
        _exit(127);
    }
}

Process::~Process() {
    if (pid_ > 0 && !status_) {
        if (group_) ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
        int st;
        waitpid(pid_, &st, 0);
    }
}

bool Process::running() {
    if (status_) return false;
    int st;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = st;
        return false;
    }
    return true;
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running()) {
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(5ms);
    }
    return status_;
}

std::optional<int> Process::stop(int sig, std::chrono::milliseconds timeout) {
    if (!running()) return status_;
    if (group_) ::kill(-pid_, sig);
    ::kill(pid_, sig);
    return wait(timeout);
}

void Process::kill_group(int sig) {
    if (pid_ > 0) ::kill(-pid_, sig);
}

uint16_t free_tcp_port() { return free_port(SOCK_STREAM); }
uint16_t free_udp_port() { return free_port(SOCK_DGRAM); }

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (pred()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return pred();
        std::this_thread::sleep_for(10ms);
    }
}

// ---- dbus-daemon -----------------------------------------------------------

PrivateBus::PrivateBus(const TempDir& dir) {
    std::string sock = dir.file("bus");
    address_ = "unix:path=" + sock;
    proc_ = std::make_unique<Process>(Process::Options{
        {"/usr/bin/dbus-daemon", "--config-file=" TEST_SOURCE_DIR "/dbus-system.conf", "--address=" + address_,
         "--nofork"},
        {},
        dir.file("dbus-daemon.log"),
        false});
    if (!eventually([&] { return access(sock.c_str(), F_OK) == 0; }, 10s))
        throw std::runtime_error("dbus-daemon did not start: " + read_file(dir.file("dbus-daemon.log")));
    setenv("DBUS_SYSTEM_BUS_ADDRESS", address_.c_str(), 1);
}

// ---- danted ----------------------------------------------------------------

bool test_user_exists() { return getpwnam(kTestUser) != nullptr; }

Danted::Danted(const TempDir& dir, DantedOptions o) : opt_(o) {
    static int n = 0;
    tag_ = "danted" + std::to_string(++n);
    conf_ = dir.file(tag_ + ".conf");
    log_ = dir.file(tag_ + ".log");
    if (opt_.port == 0) opt_.port = free_tcp_port();
    if (opt_.username_auth && !test_user_exists())
        throw std::runtime_error(std::string("test user ") + kTestUser + " missing: run scripts/setup");
    std::ostringstream c;
    // design.md §7: one rule keyword per line; udpassociate and udpreply
    // rules from anywhere (the client rule limits who may connect).
    c << "logoutput: " << log_ << "\n"
      << "internal: 127.0.0.1 port = " << opt_.port << "\n";
    if (opt_.ipv6) c << "internal: ::1 port = " << opt_.port << "\n";
    c << "external: 127.0.0.1\n";
    if (opt_.ipv6) c << "external: ::1\n";
    c << "clientmethod: none\n"
      << "socksmethod: " << (opt_.username_auth ? "username" : "none") << "\n"
      << "user.privileged: root\n"
      << "user.unprivileged: nobody\n";
    for (const char* any : {"0.0.0.0/0", "::/0"}) {
        c << "client pass {\n  from: " << any << " to: " << any << "\n  log: connect disconnect error\n}\n";
        for (const char* cmd : {"udpassociate", "udpreply"})
            c << "socks pass {\n  from: " << any << " to: " << any << "\n  command: " << cmd
              << "\n  log: connect disconnect error\n}\n";
    }
    write_file(conf_, c.str(), 0644);
    start();
}

Danted::~Danted() { kill(); }

void Danted::start() {
    // Own process group: killing only the main process leaves the io-child
    // relaying live associations (design.md §7).
    proc_ = std::make_unique<Process>(
        Process::Options{{"/usr/sbin/danted", "-f", conf_}, {}, log_ + ".stderr", true});
    if (!eventually([&] { return tcp_accepts("127.0.0.1", opt_.port); }, 10s))
        throw std::runtime_error("danted did not start: " + read_file(log_ + ".stderr") + read_file(log_));
}

void Danted::kill() {
    if (!proc_) return;
    proc_->kill_group(SIGKILL);
    proc_->wait(5s);
    proc_.reset();
}

std::string Danted::log() const { return read_file(log_); }

// ---- UDP echo --------------------------------------------------------------

UdpEcho::UdpEcho(const TempDir& dir) {
    static int n = 0;
    std::string log = dir.file("udp-echo" + std::to_string(++n) + ".log");
    proc_ = std::make_unique<Process>(Process::Options{{UDP_ECHO_PATH, "--port", "0"}, {}, log, false});
    std::string line;
    if (!eventually(
            [&] {
                line = read_file(log);
                return line.find("ready port=") != std::string::npos;
            },
            10s))
        throw std::runtime_error("udp-echo did not start: " + line);
    port_ = static_cast<uint16_t>(std::stoi(line.substr(line.find("port=") + 5)));
}

// ---- s5brokerd -------------------------------------------------------------

Broker::Broker(const TempDir& dir, const PrivateBus& bus, const std::string& config_json) : dir_(dir), bus_(bus) {
    static int n = 0;
    ++n;
    config_ = dir.file("s5brokerd" + std::to_string(n) + ".json");
    log_ = dir.file("s5brokerd" + std::to_string(n) + ".log");
    notify_ = dir.file("notify" + std::to_string(n));
    write_file(config_, config_json, 0600);
}

Broker::~Broker() {
    if (proc_) proc_->stop(SIGKILL, 5s);
}

bool Broker::start(std::chrono::milliseconds timeout) {
    // The broker's sd_notify(READY=1) comes to us, as it would to systemd.
    int ns = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::snprintf(un.sun_path, sizeof un.sun_path, "%s", notify_.c_str());
    ::unlink(notify_.c_str());
    if (ns < 0 || ::bind(ns, reinterpret_cast<sockaddr*>(&un), sizeof un) < 0) die("bind notify socket");
    proc_ = std::make_unique<Process>(
        Process::Options{{S5BROKERD_PATH, "--config", config_, "--debug"},
                         {"DBUS_SYSTEM_BUS_ADDRESS=" + bus_.address(), "NOTIFY_SOCKET=" + notify_},
                         log_,
                         false});
    auto deadline = std::chrono::steady_clock::now() + timeout;
    bool ready = false;
    while (!ready && proc_->running() && std::chrono::steady_clock::now() < deadline) {
        pollfd p{ns, POLLIN, 0};
        if (poll(&p, 1, 50) == 1) {
            char buf[512];
            ssize_t n = recv(ns, buf, sizeof buf - 1, 0);
            if (n > 0) {
                buf[n] = 0;
                ready = std::strstr(buf, "READY=1") != nullptr;
            }
        }
    }
    ::close(ns);
    return ready;
}

std::optional<int> Broker::stop(int sig) { return proc_ ? proc_->stop(sig, 5s) : std::nullopt; }

std::string Broker::log() const { return read_file(log_); }

// ---- D-Bus client ----------------------------------------------------------

BusClient::BusClient(const PrivateBus& bus) : conn_(sdbus::createSessionBusConnectionWithAddress(bus.address())) {}
BusClient::~BusClient() = default;

std::unique_ptr<sdbus::IProxy> BusClient::manager() { return sdbus::createProxy(*conn_, kBusName, kManagerPath); }

std::unique_ptr<sdbus::IProxy> BusClient::object(const std::string& path) {
    return sdbus::createProxy(*conn_, kBusName, path);
}

uint32_t BusClient::lease_count() {
    return manager()->getProperty("LeaseCount").onInterface(kManagerIface).get<uint32_t>();
}

std::vector<std::string> BusClient::leases() {
    auto v = manager()->getProperty("Leases").onInterface(kManagerIface).get<std::vector<sdbus::ObjectPath>>();
    return {v.begin(), v.end()};
}

std::map<std::string, uint64_t> BusClient::statistics() {
    return manager()->getProperty("Statistics").onInterface(kManagerIface).get<std::map<std::string, uint64_t>>();
}

// ---- helpers ---------------------------------------------------------------

std::string server_json(const std::string& name, const std::string& address, uint16_t port,
                        const std::string& password_file) {
    std::ostringstream s;
    s << R"({"name": ")" << name << R"(", "address": ")" << address << R"(", "port": )" << port;
    if (password_file.empty())
        s << R"(, "auth": {"method": "none"}})";
    else
        s << R"(, "auth": {"method": "username", "username": ")" << kTestUser << R"(", "password_file": ")"
          << password_file << R"("}})";
    return s.str();
}

std::optional<std::string> echo_through(const sockaddr_storage& relay, const std::string& target_ip,
                                        uint16_t target_port, const std::string& payload,
                                        std::chrono::milliseconds timeout) {
    auto target = s5::wire::Endpoint::parse_ip(target_ip, target_port);
    if (!target) return std::nullopt;
    std::array<uint8_t, s5::wire::kUdpHeaderMax> hdr{};
    size_t hlen = s5::wire::encode_udp_header(*target, hdr);
    std::string dgram(reinterpret_cast<char*>(hdr.data()), hlen);
    dgram += payload;
    int fd = ::socket(relay.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::nullopt;
    socklen_t rlen = relay.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    std::optional<std::string> out;
    if (::sendto(fd, dgram.data(), dgram.size(), 0, reinterpret_cast<const sockaddr*>(&relay), rlen) >= 0) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
            char buf[65536];
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                auto h = s5::wire::decode_udp_header(std::span<const uint8_t>(reinterpret_cast<uint8_t*>(buf),
                                                                               static_cast<size_t>(n)));
                if (h && h->frag == 0) out = std::string(buf + h->header_len, static_cast<size_t>(n) - h->header_len);
            }
        }
    }
    ::close(fd);
    return out;
}

}  // namespace s5test
