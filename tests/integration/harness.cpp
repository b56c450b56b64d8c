#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sdbus-c++/sdbus-c++.h>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "s5broker/socks5.h"
#include "unique_fd.hpp"
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

namespace {

// Every live child (negative: a process group), so that a test killed by
// meson's timeout or Ctrl-C still takes its danted, dbus-daemon and broker
// down with it. Plain atomics: the signal handler may only call kill().
constexpr size_t kMaxChildren = 128;
std::atomic<pid_t> g_children[kMaxChildren];

void kill_children_and_die(int sig) {
    for (auto& c : g_children) {
        pid_t p = c.load();
        if (p != 0) ::kill(p, SIGKILL);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void track(pid_t target) {
    static bool installed = [] {
        // SIGABRT too: an exception nobody caught (std::terminate) skips
        // the destructors that would have stopped them.
        for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGABRT}) signal(sig, kill_children_and_die);
        return true;
    }();
    (void)installed;
    for (auto& c : g_children) {
        pid_t expected = 0;
        if (c.compare_exchange_strong(expected, target)) return;
    }
}

void untrack(pid_t target) {
    for (auto& c : g_children) {
        pid_t expected = target;
        if (c.compare_exchange_strong(expected, 0)) return;
    }
}

}  // namespace

Process::Process(Options o, const ListenFds& listen_fds) : group_(o.own_process_group) {
    std::vector<char*> argv;
    for (auto& a : o.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
        if (o.own_process_group) setsid();
        // If the test dies outright, so does this child.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!o.log_path.empty()) {
            int fd = ::open(o.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                ::close(fd);
            }
        }
        if (o.nofile) {
            rlimit rl{o.nofile, o.nofile};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        if (o.hide_other_processes &&
            (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
             mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible") != 0)) {
            std::fprintf(stderr, "hide /proc: %s\n", std::strerror(errno));
            _exit(127);
        }
        if (o.run_as_uid != 0 && (setgroups(0, nullptr) != 0 || setgid(o.run_as_gid) != 0 || setuid(o.run_as_uid) != 0)) {
            std::fprintf(stderr, "run as %u: %s\n", static_cast<unsigned>(o.run_as_uid), std::strerror(errno));
            _exit(127);
        }
        for (auto& kv : o.env) putenv(kv.data());
        if (!listen_fds.empty()) {
            // Above the target range first, so that no source is
            // overwritten before it is moved; dup2 clears close-on-exec.
            const int n = static_cast<int>(listen_fds.size());
            std::vector<int> tmp;
            std::string names;
            for (const auto& [name, fd] : listen_fds) {
                tmp.push_back(fcntl(fd, F_DUPFD_CLOEXEC, 3 + n));
                names += (names.empty() ? "" : ":") + name;
            }
            for (int i = 0; i < n; ++i) dup2(tmp[static_cast<size_t>(i)], 3 + i);
            static char fds_env[64], pid_env[64];
            std::snprintf(fds_env, sizeof fds_env, "LISTEN_FDS=%d", n);
            std::snprintf(pid_env, sizeof pid_env, "LISTEN_PID=%d", static_cast<int>(getpid()));
            static std::string names_env;
            names_env = "LISTEN_FDNAMES=" + names;
            putenv(fds_env);
            putenv(pid_env);
            putenv(names_env.data());
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        execv(argv[0], argv.data());
        std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
        _exit(127);
    }
    track(group_ ? -pid_ : pid_);
}

Process::~Process() {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        int st;
        waitpid(pid_, &st, 0);
    }
    // A group outlives its leader: danted's children keep relaying.
    if (pid_ > 0 && group_) ::kill(-pid_, SIGKILL);
    untrack(group_ ? -pid_ : pid_);
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

std::string Process::describe() {
    if (running()) return "running";
    if (WIFEXITED(*status_)) return "exited with status " + std::to_string(WEXITSTATUS(*status_));
    if (WIFSIGNALED(*status_))
        return "killed by signal " + std::to_string(WTERMSIG(*status_)) + " (" + strsignal(WTERMSIG(*status_)) + ")";
    return "status " + std::to_string(*status_);
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

PrivateBus::PrivateBus(const TempDir& dir, const std::string& config) : dir_(dir), config_(config) {
    address_ = "unix:path=" + dir.file("bus");
    start();
    setenv("DBUS_SYSTEM_BUS_ADDRESS", address_.c_str(), 1);
}

void PrivateBus::start() {
    const std::string sock = dir_.file("bus");
    ::unlink(sock.c_str());
    proc_ = std::make_unique<Process>(Process::Options{
        {"/usr/bin/dbus-daemon", std::string("--config-file=") + TEST_SOURCE_DIR + "/" + config_, "--address=" + address_,
         "--nofork"},
        {},
        dir_.file("dbus-daemon.log"),
        false});
    if (!eventually([&] { return access(sock.c_str(), F_OK) == 0; }, 10s))
        throw std::runtime_error("dbus-daemon did not start: " + read_file(dir_.file("dbus-daemon.log")));
}

void PrivateBus::restart() {
    proc_->stop(SIGKILL);
    proc_.reset();
    start();
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
    // docs/design.md §7: one rule keyword per line; udpassociate and udpreply
    // rules from anywhere (the client rule limits who may connect).
    c << "logoutput: " << log_ << "\n"
      << "internal: " << opt_.address << " port = " << opt_.port << "\n";
    if (opt_.ipv6) c << "internal: ::1 port = " << opt_.port << "\n";
    c << "external: " << opt_.address << "\n";
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
    // relaying live associations (docs/design.md §7).
    // -p: without it danted writes /run/danted.pid, which is not ours.
    std::vector<std::string> argv{"/usr/sbin/danted", "-f", conf_, "-p", conf_ + ".pid"};
    if (!opt_.netns.empty()) argv.insert(argv.begin(), {"/usr/bin/ip", "netns", "exec", opt_.netns});
    proc_ = std::make_unique<Process>(Process::Options{argv, {}, log_ + ".stderr", true, 0});
    if (!eventually([&] { return tcp_accepts(opt_.address.c_str(), opt_.port); }, 10s))
        throw std::runtime_error("danted did not start: " + read_file(log_ + ".stderr") + read_file(log_));
}

pid_t Danted::pid() const { return proc_ ? proc_->pid() : -1; }

void Danted::kill() {
    if (!proc_) return;
    proc_->kill_group(SIGKILL);
    proc_->wait(5s);
    proc_.reset();
}

std::string Danted::log() const { return read_file(log_); }

// ---- network namespaces ------------------------------------------------------

namespace {
int run(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }
}  // namespace

bool netns_available() {
    static int ok = -1;
    if (ok < 0) {
        std::string n = "s5probe" + std::to_string(getpid());
        ok = run("/usr/bin/ip netns add " + n) == 0;
        if (ok) run("/usr/bin/ip netns del " + n);
    }
    return ok == 1;
}

NetnsHost::NetnsHost() {
    static int seq = 0;
    int n = (getpid() % 200) + (++seq);
    std::string id = std::to_string(getpid()) + "-" + std::to_string(seq);
    name_ = "s5t" + id;
    outer_ = "s5o" + std::to_string(getpid() % 100000) + std::to_string(seq);
    inner_ = "s5i" + std::to_string(getpid() % 100000) + std::to_string(seq);
    std::string net = "10.253." + std::to_string(n % 250) + ".";
    outside_ = net + "1";
    inside_ = net + "2";
    const std::string ip = "/usr/bin/ip ";
    const std::string in = ip + "netns exec " + name_ + " " + ip;
    for (const std::string& cmd : {ip + "netns add " + name_, ip + "link add " + outer_ + " type veth peer name " + inner_,
                                   ip + "link set " + inner_ + " netns " + name_,
                                   ip + "addr add " + outside_ + "/30 dev " + outer_, ip + "link set " + outer_ + " up",
                                   in + "addr add " + inside_ + "/30 dev " + inner_, in + "link set " + inner_ + " up",
                                   in + "link set lo up"})
        if (run(cmd) != 0) throw std::runtime_error("network namespace setup failed: " + cmd);
}

NetnsHost::~NetnsHost() {
    run("/usr/bin/ip link del " + outer_);
    run("/usr/bin/ip netns del " + name_);
}

void NetnsHost::link_down() { run("/usr/bin/ip netns exec " + name_ + " /usr/bin/ip link set " + inner_ + " down"); }
void NetnsHost::link_up() { run("/usr/bin/ip netns exec " + name_ + " /usr/bin/ip link set " + inner_ + " up"); }

int established_to(uint16_t port) {
    int n = 0;
    for (const char* f : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(f);
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line)) {
            std::istringstream ls(line);
            std::string sl, local, remote, state;
            ls >> sl >> local >> remote >> state;
            auto colon = remote.rfind(':');
            if (colon == std::string::npos || state != "01") continue;
            if (std::stoul(remote.substr(colon + 1), nullptr, 16) == port) ++n;
        }
    }
    return n;
}

double cpu_seconds(pid_t pid) {
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    auto rp = stat.rfind(')');
    if (rp == std::string::npos) return -1;
    std::istringstream in(stat.substr(rp + 2));
    std::string field;
    unsigned long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
        if (i == 14) utime = std::stoul(field);
        if (i == 15) stime = std::stoul(field);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// ---- UDP echo --------------------------------------------------------------

UdpEcho::UdpEcho(const TempDir& dir, const std::vector<std::string>& binds) {
    static int n = 0;
    std::string log = dir.file("udp-echo" + std::to_string(++n) + ".log");
    std::vector<std::string> argv{UDP_ECHO_PATH, "--port", "0"};
    for (const auto& b : binds) argv.insert(argv.end(), {"--bind", b});
    proc_ = std::make_unique<Process>(Process::Options{argv, {}, log, false, 0});
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
    if (!proc_ || !proc_->running()) return;
    // A clean SIGTERM shutdown, so that a sanitizer build reports leaks and
    // errors at exit; any such report (or a crash) fails the test.
    auto st = proc_->stop(SIGTERM, 10s);
    if (!st) {
        proc_->stop(SIGKILL, 5s);
        ADD_FAILURE() << "s5brokerd did not exit within 10 s of SIGTERM\n" << log();
    } else if (!WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
        ADD_FAILURE() << "s5brokerd exited with status " << *st << " after SIGTERM\n" << log();
    }
}

// ---- NotifyServer ----------------------------------------------------------

NotifyServer::NotifyServer(std::string path) : path_(std::move(path)) {
    sock_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::snprintf(un.sun_path, sizeof un.sun_path, "%s", path_.c_str());
    ::unlink(path_.c_str());
    if (sock_ < 0 || ::bind(sock_, reinterpret_cast<sockaddr*>(&un), sizeof un) < 0) die("bind notify socket");
    // Room for bursts of FDSTORE messages while the thread is busy.
    int big = 4 << 20;
    setsockopt(sock_, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    if (pipe2(wake_, O_CLOEXEC) != 0) die("pipe");
    thread_ = std::thread([this] { run(); });
}

NotifyServer::~NotifyServer() {
    char c = 0;
    if (::write(wake_[1], &c, 1) < 0) {}
    thread_.join();
    discard();
    ::close(sock_);
    ::close(wake_[0]);
    ::close(wake_[1]);
    ::unlink(path_.c_str());
}

std::vector<std::pair<std::string, int>> NotifyServer::stored() const {
    std::lock_guard lk(mu_);
    return fds_;
}

size_t NotifyServer::count() const {
    std::lock_guard lk(mu_);
    return fds_.size();
}

void NotifyServer::discard() {
    std::lock_guard lk(mu_);
    for (auto& [name, fd] : fds_) ::close(fd);
    fds_.clear();
}

void NotifyServer::sync() {
    // A datagram socket's queue is one FIFO whoever sent: once our marker
    // is read, so is everything before it.
    const unsigned n = ++next_sync_;
    const std::string msg = "X_S5TEST_SYNC=" + std::to_string(n);
    int c = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::snprintf(un.sun_path, sizeof un.sun_path, "%s", path_.c_str());
    if (c < 0 || ::sendto(c, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&un), sizeof un) < 0)
        die("notify sync");
    ::close(c);
    if (!eventually([&] { return synced_ >= n; }, 10s)) die("notify server did not catch up");
}

void NotifyServer::run() {
    for (;;) {
        std::vector<pollfd> p{{wake_[0], POLLIN, 0}, {sock_, POLLIN, 0}};
        {
            std::lock_guard lk(mu_);
            for (const auto& [name, fd] : fds_) p.push_back({fd, 0, 0});
        }
        if (::poll(p.data(), p.size(), 100) < 0 && errno != EINTR) return;
        if (p[0].revents) return;
        {
            // PID 1 drops what hangs up (unless stored with FDPOLL=0).
            std::lock_guard lk(mu_);
            for (size_t i = 2; i < p.size(); ++i) {
                if (!(p[i].revents & (POLLHUP | POLLERR))) continue;
                for (auto it = fds_.begin(); it != fds_.end(); ++it)
                    if (it->second == p[i].fd) {
                        ::close(it->second);
                        fds_.erase(it);
                        break;
                    }
            }
        }
        if (!(p[1].revents & POLLIN)) continue;
        for (;;) {
            char buf[4096];
            alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 16)];
            iovec iov{buf, sizeof buf - 1};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            m.msg_control = ctl;
            m.msg_controllen = sizeof ctl;
            ssize_t n = ::recvmsg(sock_, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (n < 0) break;
            buf[n] = 0;
            std::vector<int> got;
            for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
                const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; ++i) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    got.push_back(fd);
                }
            }
            std::string text(buf, static_cast<size_t>(n)), name = "stored";
            bool store = false, remove = false;
            std::istringstream lines(text);
            for (std::string line; std::getline(lines, line);) {
                if (line == "READY=1") ready_ = true;
                if (line == "FDSTORE=1") store = true;
                if (line == "FDSTOREREMOVE=1") remove = true;
                if (line.rfind("FDNAME=", 0) == 0) name = line.substr(7);
                if (line.rfind("X_S5TEST_SYNC=", 0) == 0) synced_ = static_cast<unsigned>(std::stoul(line.substr(14)));
            }
            std::lock_guard lk(mu_);
            if (store)
                for (int fd : got) fds_.emplace_back(name, fd);
            else
                for (int fd : got) ::close(fd);
            if (remove)
                for (auto it = fds_.begin(); it != fds_.end();) {
                    if (it->first == name) {
                        ::close(it->second);
                        it = fds_.erase(it);
                    } else {
                        ++it;
                    }
                }
        }
    }
}

void Broker::enable_fd_store() {
    if (!notify_server_) notify_server_ = std::make_unique<NotifyServer>(notify_);
}

bool Broker::start(std::chrono::milliseconds timeout) {
    if (notify_server_) {
        notify_server_->clear_ready();
        // systemd passes the newest first; the broker matches by name.
        notify_server_->sync();
        // Copies: the store's thread may close its own (a hang-up) meanwhile.
        auto fds = notify_server_->stored();
        std::reverse(fds.begin(), fds.end());
        for (auto& [name, fd] : fds) fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        proc_ = std::make_unique<Process>(Process::Options{
            debug_ ? std::vector<std::string>{S5BROKERD_PATH, "--config", config_, "--debug"}
                   : std::vector<std::string>{S5BROKERD_PATH, "--config", config_},
            {"DBUS_SYSTEM_BUS_ADDRESS=" + bus_.address(), "NOTIFY_SOCKET=" + notify_}, log_, false, nofile_, 0, 0,
            false}, fds);
        for (auto& [name, fd] : fds) ::close(fd);
        return eventually([&] { return notify_server_->ready() || !proc_->running(); }, timeout) &&
               notify_server_->ready();
    }
    // The broker's sd_notify(READY=1) comes to us, as it would to systemd.
    int ns = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::snprintf(un.sun_path, sizeof un.sun_path, "%s", notify_.c_str());
    ::unlink(notify_.c_str());
    if (ns < 0 || ::bind(ns, reinterpret_cast<sockaddr*>(&un), sizeof un) < 0) die("bind notify socket");
    std::string binary = S5BROKERD_PATH;
    if (hardened_uid_ != 0) {
        // The service user reads its own config and may write to the
        // notify socket. It may not be able to reach the build tree (a
        // clone in a 0700 directory): it runs a copy from the test's dir.
        if (::chown(config_.c_str(), hardened_uid_, hardened_gid_) != 0) die("chown config");
        if (::chmod(notify_.c_str(), 0777) != 0) die("chmod notify socket");
        binary = dir_.file("s5brokerd");
        std::error_code ec;
        std::filesystem::copy_file(S5BROKERD_PATH, binary, std::filesystem::copy_options::overwrite_existing, ec);
        if (ec || ::chmod(binary.c_str(), 0755) != 0) die("copy s5brokerd");
    }
    proc_ = std::make_unique<Process>(
        Process::Options{debug_ ? std::vector<std::string>{binary, "--config", config_, "--debug"}
                                : std::vector<std::string>{binary, "--config", config_},
                         {"DBUS_SYSTEM_BUS_ADDRESS=" + bus_.address(), "NOTIFY_SOCKET=" + notify_},
                         log_,
                         false,
                         nofile_,
                         hardened_uid_,
                         hardened_gid_,
                         hardened_uid_ != 0});
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

BusClient::SignalLog::SignalLog(const PrivateBus& bus)
    : conn_(sdbus::createSessionBusConnectionWithAddress(bus.address())) {
    slot_ = conn_->addMatch(
        "type='signal',sender='org.s5broker.Broker1',interface='org.s5broker.Broker1.Lease'",
        [this](sdbus::Message& msg) {
            Signal s;
            s.path = msg.getPath();
            s.member = msg.getMemberName();
            if (s.member == "Renewed")
                msg >> s.generation;
            else if (s.member == "Lost")
                msg >> s.error;
            std::lock_guard<std::mutex> g(m_);
            signals_.push_back(s);
        });
    conn_->enterEventLoopAsync();
}

BusClient::SignalLog::~SignalLog() {
    conn_->leaveEventLoop();
    slot_.reset();
}

std::vector<BusClient::Signal> BusClient::SignalLog::snapshot() {
    std::lock_guard<std::mutex> g(m_);
    return signals_;
}

// ---- helpers ---------------------------------------------------------------

std::string server_json(const std::string& name, const std::string& address, uint16_t port,
                        const std::string& password_file) {
    std::ostringstream s;
    s << R"({"name": ")" << name << R"(", "address": ")" << address << R"(", "port": )" << port;
    if (password_file.empty())
        s << R"(, "auth": {"method": "none"}})";
    else
        // server_uid: the harness's danted runs as nobody (user.unprivileged),
        // and so does the socket it listens on; the broker sends a local
        // server the password only if its listener is root's or this uid's.
        s << R"(, "server_uid": 65534, "auth": {"method": "username", "username": ")" << kTestUser
          << R"(", "password_file": ")" << password_file << R"("}})";
    return s.str();
}

// ---- scripted SOCKS server -------------------------------------------------------

FakeSocksServer::FakeSocksServer(std::vector<Step> script, After after) : script_(std::move(script)), after_(after) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    int on = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin) < 0 || ::listen(listen_fd_, 64) < 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sin), &len) < 0)
        die("fake server");
    port_ = ntohs(sin.sin_port);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) die("pipe");
    stop_fd_ = p[1];
    acceptor_ = std::thread([this, r = p[0]] {
        for (;;) {
            pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {r, POLLIN, 0}};
            if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
            if (fds[1].revents) break;
            if (!(fds[0].revents & POLLIN)) continue;
            int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) continue;
            ++connections_;
            std::lock_guard<std::mutex> g(m_);
            threads_.emplace_back([this, c] { play(c); });
        }
        ::close(r);
    });
}

FakeSocksServer::~FakeSocksServer() {
    stopping_ = true;
    char x = 0;
    (void)!::write(stop_fd_, &x, 1);
    acceptor_.join();
    ::close(stop_fd_);
    ::close(listen_fd_);
    std::lock_guard<std::mutex> g(m_);
    for (auto& t : threads_) t.join();
}

void FakeSocksServer::play(int fd) {
    auto sleep_unless_stopping = [&](std::chrono::milliseconds d) {
        auto until = std::chrono::steady_clock::now() + d;
        while (!stopping_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
    };
    char buf[512];
    (void)!::recv(fd, buf, sizeof buf, 0);  // the greeting
    for (const auto& step : script_) {
        sleep_unless_stopping(step.delay);
        if (stopping_) break;
        (void)!::send(fd, step.bytes.data(), step.bytes.size(), MSG_NOSIGNAL);
        // Swallow whatever the client sent meanwhile (auth, request).
        while (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
    }
    if (after_ == After::Silent) {
        while (!stopping_) sleep_unless_stopping(100ms);
    } else if (after_ == After::Stream) {
        std::string junk(4096, 'x');
        while (!stopping_ && ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL) > 0) {
        }
    }
    ::close(fd);
}

DantedOptions username_auth() {
    DantedOptions o;
    o.username_auth = true;
    return o;
}

std::optional<std::string> echo_via_library(const sockaddr_storage& rendezvous, const sockaddr_storage& target,
                                            const std::string& payload, std::chrono::milliseconds timeout) {
    int u = ::socket(rendezvous.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_storage t = target, r = rendezvous;
    std::string msg = payload;
    std::optional<std::string> out;
    if (socks5udp_sendto(u, msg.data(), msg.size(), 0, sa(t), len_of(t), sa(r), len_of(r)) == 0) {
        pollfd p{u, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
            char buf[2048];
            sockaddr_storage from{};
            socklen_t flen = sizeof from;
            ssize_t n = socks5udp_recvfrom(u, buf, sizeof buf, MSG_DONTWAIT, sa(from), &flen);
            if (n >= 0) out = std::string(buf, static_cast<size_t>(n));
        }
    }
    ::close(u);
    return out;
}

sockaddr_storage sockaddr_of(const std::string& ip, uint16_t port, size_t* len) {
    sockaddr_storage ss{};
    auto ep = s5::wire::Endpoint::parse_ip(ip, port);
    size_t n = ep ? ep->to_sockaddr(ss) : 0;
    if (len) *len = n;
    return ss;
}

std::optional<std::string> echo_from(int fd, const sockaddr_storage& relay, const std::string& target_ip,
                                     uint16_t target_port, const std::string& payload,
                                     std::chrono::milliseconds timeout) {
    auto target = s5::wire::Endpoint::parse_ip(target_ip, target_port);
    if (!target) return std::nullopt;
    std::array<uint8_t, s5::wire::kUdpHeaderMax> hdr{};
    size_t hlen = s5::wire::encode_udp_header(*target, hdr);
    std::string dgram(reinterpret_cast<char*>(hdr.data()), hlen);
    dgram += payload;
    socklen_t rlen = relay.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    std::optional<std::string> out;
    if (::sendto(fd, dgram.data(), dgram.size(), 0, reinterpret_cast<const sockaddr*>(&relay), rlen) >= 0) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
            char buf[65536];
            ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                auto h = s5::wire::decode_udp_header(std::span<const uint8_t>(reinterpret_cast<uint8_t*>(buf),
                                                                               static_cast<size_t>(n)));
                if (h && h->frag == 0) out = std::string(buf + h->header_len, static_cast<size_t>(n) - h->header_len);
            }
        }
    }
    return out;
}

std::optional<std::string> echo_through(int lease_fd, const sockaddr_storage& relay, const std::string& target_ip,
                                        uint16_t target_port, const std::string& payload,
                                        std::chrono::milliseconds timeout) {
    s5::UniqueFd fd(::socket(relay.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return std::nullopt;
    // As an application that frames by hand must: the association takes
    // datagrams from its own socket only.
    if (lease_fd >= 0 && socks5udp_bind(lease_fd, fd.get()) != 0) return std::nullopt;
    return echo_from(fd.get(), relay, target_ip, target_port, payload, timeout);
}

}  // namespace s5test
