// Real parts for integration tests: a private dbus-daemon, danted, a UDP echo
// service and the s5brokerd binary, each a child process that the harness
// stops by PID (danted by process group) when the object goes away, also
// when a test fails.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sdbus { class IConnection; class IProxy; }

namespace s5test {

using namespace std::chrono_literals;

// A directory under /tmp, removed with everything in it.
class TempDir {
public:
    TempDir();
    ~TempDir();
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

void write_file(const std::string& path, const std::string& content, mode_t mode = 0600);
std::string read_file(const std::string& path);

// A child process. Its stdout and stderr go to `log_path`.
class Process {
public:
    struct Options {
        std::vector<std::string> argv;
        std::vector<std::string> env;           // "K=V" added to the environment
        std::string log_path;                   // empty: inherit
        bool own_process_group = false;         // setsid(): kill the whole group
        unsigned long nofile = 0;               // RLIMIT_NOFILE for the child (0: inherit)
        // As the installed unit runs the broker: its own user, and a /proc
        // that hides every other user's processes (ProtectProc=invisible
        // mounts procfs with hidepid=invisible).
        uid_t run_as_uid = 0;                   // 0: stay root
        gid_t run_as_gid = 0;
        bool hide_other_processes = false;
    };
    // `listen_fds` are passed as systemd passes its fd store: at 3, 4, ...
    // with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set.
    using ListenFds = std::vector<std::pair<std::string, int>>;
    explicit Process(Options o, const ListenFds& listen_fds = {});
    ~Process();                                 // SIGKILL (group) and reap
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }
    bool running();
    // Sends `sig` to the process (or its group); waits up to `timeout` for
    // it to exit. Returns the exit status as from waitpid, or nullopt.
    std::optional<int> stop(int sig = 15, std::chrono::milliseconds timeout = 5000ms);
    std::optional<int> wait(std::chrono::milliseconds timeout);
    void kill_group(int sig);
    // "running", "exited with status N" or "killed by signal N (NAME)".
    std::string describe();

private:
    pid_t pid_ = -1;
    bool group_ = false;
    std::optional<int> status_;
};

uint16_t free_tcp_port();
uint16_t free_udp_port();
// Polls `pred` every 10 ms until true or `timeout`; returns its last value.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5000ms);

// dbus-daemon with tests/dbus-system.conf on a socket in `dir`. Exports
// DBUS_SYSTEM_BUS_ADDRESS to this process, so libs5client uses it.
class PrivateBus {
public:
    // `config`: a file in tests/ (dbus-system.conf allows everything;
    // dbus-system-policy.conf applies dbus/org.s5broker.Broker1.conf).
    explicit PrivateBus(const TempDir& dir, const std::string& config = "dbus-system.conf");
    const std::string& address() const { return address_; }
    Process& process() { return *proc_; }
    // A new dbus-daemon on the same address (after the old one was stopped
    // or killed).
    void restart();

private:
    void start();
    const TempDir& dir_;
    std::string config_;
    std::string address_;
    std::unique_ptr<Process> proc_;
};

struct DantedOptions {
    bool username_auth = false;                 // socksmethod: username (system users)
    bool ipv6 = true;                           // also listen on ::1
    uint16_t port = 0;                          // 0: pick a free one
    std::string address = "127.0.0.1";          // internal and external address
    std::string netns;                          // run inside this network namespace
};

// A test host of our own: a network namespace joined to this one by a veth
// pair, 10.253.N.2 inside, 10.253.N.1 here. link_down() makes it go silent
// (no RST, no FIN): what a pulled cable or a dead host looks like.
class NetnsHost {
public:
    NetnsHost();
    ~NetnsHost();
    const std::string& name() const { return name_; }
    const std::string& address() const { return inside_; }     // the host's
    const std::string& outside() const { return outside_; }    // ours, on its link
    void link_down();
    void link_up();

private:
    std::string name_, outer_, inner_, inside_, outside_;
};
bool netns_available();

// TCP connections in ESTABLISHED state whose remote port is `port`, as seen
// in /proc/net/tcp{,6}: the broker's control connections to a server.
int established_to(uint16_t port);
// utime + stime of a process, in seconds.
double cpu_seconds(pid_t pid);

// The test system user scripts/setup creates for socksmethod: username.
inline constexpr const char* kTestUser = "s5test";
inline constexpr const char* kTestPassword = "s5test-password";
bool test_user_exists();

class Danted {
public:
    Danted(const TempDir& dir, DantedOptions o = {});
    ~Danted();
    uint16_t port() const { return opt_.port; }
    void start();                               // waits until it accepts connections
    void kill();                                // SIGKILL to the whole process group
    pid_t pid() const;                          // its main process, leader of its process group
    std::string log() const;

private:
    std::string conf_, log_, tag_;
    DantedOptions opt_;
    std::unique_ptr<Process> proc_;
};

// tests/tools/udp-echo, by default on 127.0.0.1 and ::1.
class UdpEcho {
public:
    explicit UdpEcho(const TempDir& dir, const std::vector<std::string>& binds = {});
    uint16_t port() const { return port_; }

private:
    uint16_t port_ = 0;
    std::unique_ptr<Process> proc_;
};

// What systemd 252 does with a service's notifications, for the restart
// tests: READY=1, and its file descriptor store (FDSTORE=1 with FDNAME=,
// FDSTOREREMOVE=1; a stored descriptor that reports POLLHUP or POLLERR is
// dropped, as PID 1 drops it). A thread of its own reads the socket.
class NotifyServer {
public:
    explicit NotifyServer(std::string path);
    ~NotifyServer();                        // closes every stored descriptor
    NotifyServer(const NotifyServer&) = delete;
    NotifyServer& operator=(const NotifyServer&) = delete;
    const std::string& path() const { return path_; }
    // READY=1 seen since the last clear_ready().
    bool ready() const { return ready_; }
    void clear_ready() { ready_ = false; }
    // The store's contents, newest last; the descriptors stay the store's
    // (and the store's thread may close one that hangs up at any time).
    std::vector<std::pair<std::string, int>> stored() const;
    size_t count() const;
    // As after `systemctl stop`: every stored descriptor closed.
    void discard();
    // Returns once every message sent before the call has been handled (a
    // broker's last FDSTORE before it died, say): PID 1 handles pending
    // notifications before it sees its child exit.
    void sync();

private:
    void run();
    std::string path_;
    int sock_ = -1, wake_[2] = {-1, -1};
    std::atomic<bool> ready_{false};
    std::atomic<unsigned> synced_{0};
    unsigned next_sync_ = 0;
    mutable std::mutex mu_;
    std::vector<std::pair<std::string, int>> fds_;
    std::thread thread_;
};

// s5brokerd as a child on the private bus, started with a config of the
// test's making; ready when it sends READY=1 on $NOTIFY_SOCKET.
class Broker {
public:
    Broker(const TempDir& dir, const PrivateBus& bus, const std::string& config_json);
    ~Broker();
    bool start(std::chrono::milliseconds timeout = 10000ms);   // false: exited or no READY
    void set_nofile(unsigned long n) { nofile_ = n; }
    void set_debug(bool on) { debug_ = on; }    // --debug (default on)
    // Runs the broker as uid/gid with other users' processes hidden in its
    // /proc, as under the unit; the config file is handed to that uid.
    void set_hardened(uid_t uid, gid_t gid) {
        hardened_uid_ = uid;
        hardened_gid_ = gid;
    }
    std::optional<int> stop(int sig = 15);
    // systemd's fd store for this broker (before the first start): what it
    // stores survives stop() and goes to the next start(), as across
    // `systemctl restart` and a crash with Restart=on-failure.
    void enable_fd_store();
    NotifyServer* fd_store() { return notify_server_.get(); }
    Process& process() { return *proc_; }
    std::string log() const;
    const std::string& config_path() const { return config_; }

private:
    const TempDir& dir_;
    const PrivateBus& bus_;
    std::string config_, log_, notify_;
    unsigned long nofile_ = 0;
    bool debug_ = true;
    uid_t hardened_uid_ = 0;
    gid_t hardened_gid_ = 0;
    std::unique_ptr<NotifyServer> notify_server_;
    std::unique_ptr<Process> proc_;
};

// A plain D-Bus client of the broker for assertions (properties, calls).
class BusClient {
public:
    explicit BusClient(const PrivateBus& bus);
    // Another connection that records the Renewed and Lost signals of
    // every lease, from its own event-loop thread.
    struct Signal {
        std::string path, member;
        uint32_t generation = 0;
        std::string error;
    };
    class SignalLog {
    public:
        explicit SignalLog(const PrivateBus& bus);
        ~SignalLog();
        std::vector<Signal> snapshot();

    private:
        std::unique_ptr<sdbus::IConnection> conn_;
        std::unique_ptr<void, std::function<void(void*)>> slot_;
        std::mutex m_;
        std::vector<Signal> signals_;
    };
    ~BusClient();
    uint32_t lease_count();
    std::vector<std::string> leases();
    std::map<std::string, uint64_t> statistics();
    sdbus::IConnection& connection() { return *conn_; }
    std::unique_ptr<sdbus::IProxy> manager();
    std::unique_ptr<sdbus::IProxy> object(const std::string& path);

private:
    std::unique_ptr<sdbus::IConnection> conn_;
};

// JSON for one server entry of s5brokerd.json.
std::string server_json(const std::string& name, const std::string& address, uint16_t port,
                        const std::string& password_file = "");

// A scripted SOCKS5 server for faults danted cannot produce (malformed
// replies, stalls, specific REP codes): for every connection it waits for
// the client's greeting, then plays `script` — bytes to send, each after its
// delay — and then closes, stays silent, or streams bytes forever.
class FakeSocksServer {
public:
    struct Step {
        std::string bytes;
        std::chrono::milliseconds delay{0};
    };
    enum class After { Close, Silent, Stream };
    FakeSocksServer(std::vector<Step> script, After after);
    ~FakeSocksServer();
    uint16_t port() const { return port_; }
    int connections() const { return connections_.load(); }

private:
    void serve();
    void play(int fd);
    std::vector<Step> script_;
    After after_;
    int listen_fd_ = -1, stop_fd_ = -1;
    uint16_t port_ = 0;
    std::atomic<int> connections_{0};
    std::atomic<bool> stopping_{false};
    std::vector<std::thread> threads_;
    std::mutex m_;
    std::thread acceptor_;
};

inline sockaddr* sa(sockaddr_storage& ss) { return reinterpret_cast<sockaddr*>(&ss); }
inline const sockaddr* sa(const sockaddr_storage& ss) { return reinterpret_cast<const sockaddr*>(&ss); }
// The length of the sockaddr_in / sockaddr_in6 in `ss`.
inline socklen_t len_of(const sockaddr_storage& ss) {
    return ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

DantedOptions username_auth();   // socksmethod: username, the rest default

// One datagram through `rendezvous` (a lease's, as the application knows
// it) to `target` with socks5udp_sendto, one reply in with
// socks5udp_recvfrom: the echoed payload, or nullopt on error or timeout.
std::optional<std::string> echo_via_library(const sockaddr_storage& rendezvous, const sockaddr_storage& target,
                                            const std::string& payload,
                                            std::chrono::milliseconds timeout = 1000ms);

// A sockaddr_in / sockaddr_in6 for an IP literal; *len gets its size.
sockaddr_storage sockaddr_of(const std::string& ip, uint16_t port, size_t* len = nullptr);

// Sends `payload` framed for `target` (RFC 1928 UDP header) to `relay` from
// the UDP socket `fd` with plain sendto(), as an application that frames by
// hand, and waits for one reply; returns the reply's payload, or nullopt on
// timeout or a malformed reply.
std::optional<std::string> echo_from(int fd, const sockaddr_storage& relay, const std::string& target_ip,
                                     uint16_t target_port, const std::string& payload,
                                     std::chrono::milliseconds timeout = 2000ms);
// The same from a new UDP socket, which socks5udp_bind() makes the lease
// `lease_fd`'s own first (-1: left as it is, as an outsider's).
std::optional<std::string> echo_through(int lease_fd, const sockaddr_storage& relay, const std::string& target_ip,
                                        uint16_t target_port, const std::string& payload,
                                        std::chrono::milliseconds timeout = 2000ms);

}  // namespace s5test
