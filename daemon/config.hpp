// s5brokerd.json (docs/design.md §6): parsed and validated into plain structs.
//
// parse() is pure (JSON text in, Config or the first error out) so the table
// of bad configs in config_test.cpp runs without touching a file. load() adds
// the file I/O: the config file itself and every password file, with the
// permission checks a daemon holding credentials owes its users.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "secret.hpp"
#include "wire.hpp"

namespace s5::config {

// One validation failure: `path` is the JSON path ("servers[1].port",
// "(root)" for the document itself), `reason` what is wrong with it.
struct Error {
    std::string path;
    std::string reason;
    std::string to_string() const { return path + ": " + reason; }
};

enum class AuthMethod { None, Username };

struct Auth {
    AuthMethod method = AuthMethod::None;
    std::string username;                   // Username only
    std::string password_file;              // as configured; may be empty (credential)
    Secret password;                        // filled by load(), never logged
};

struct Server {
    std::string name;                       // [A-Za-z0-9_]{1,64}: it is a D-Bus path element
    wire::Endpoint endpoint;                // address + port
    Auth auth;
    std::optional<wire::Endpoint> relay_address_override;  // IP only (port 0)
    bool pipelining = false;                // send greeting+auth+request at once
    // Who may listen at `endpoint` when it is on this host, besides root:
    // credentials go to a local listener owned by root or by this uid only.
    std::optional<uid_t> server_uid;
    // Who may use an association (docs/design.md §7, "Claiming"): Socket,
    // the default, has the broker bind a UDP socket of its own to the
    // source address and name it as the request's DST, so the server takes
    // datagrams from that socket only, and hands the socket to the
    // application. FirstDatagram (opt-in, "claim": "first_datagram") names
    // the source IP with port 0, as brokers before did, for applications
    // that frame by hand from a socket they cannot give up: the first
    // datagram from that IP, whoever sends it, takes the association.
    enum class Claim { Socket, FirstDatagram };
    Claim claim = Claim::Socket;
};

struct Prefix {
    wire::Endpoint network;                 // host bits zero
    unsigned length = 0;                    // 0..32 or 0..128
    bool contains(const wire::Endpoint& ip) const;   // same family and prefix
};

struct Route {
    Prefix destination;
    std::vector<std::string> servers;       // names, each a configured server
};

struct Pool {
    uint32_t min_idle = 2;
    uint32_t max_associations = 4096;
    uint32_t max_idle_age_s = 600;
    uint32_t setup_timeout_s = 10;          // connect + handshake of one association
};

struct Keepalive {
    uint32_t idle_s = 10;
    uint32_t interval_s = 3;
    uint32_t count = 3;
};

struct Limits {
    uint32_t leases_per_uid = 256;
    uint32_t leases_total = 16384;
};

struct Config {
    std::vector<Server> servers;
    // From "routes", or, with "socks5c_conf", from that AIX file's address
    // records (load() reads it; a NONE record is a route without servers).
    std::vector<Route> routes;
    std::string socks5c_conf;               // absolute path, or empty
    Pool pool;
    Keepalive keepalive;
    uint32_t lease_grace_s = 30;
    Limits limits;
    std::vector<std::string> allowed_groups;

    const Server* find_server(std::string_view name) const;
    // The configured server with this exact address and port, if any.
    const Server* find_server(const wire::Endpoint& ep) const;
    // Longest-prefix route containing `dst`; nullptr when none matches.
    const Route* route_for(const wire::Endpoint& dst) const;
};

template <typename T>
struct Result {
    std::optional<T> value;
    Error error;                            // meaningful when !value
    bool ok() const { return value.has_value(); }
};

// Parses and validates JSON text. Password files are not read.
Result<Config> parse(std::string_view json_text);

// Reads and validates the config file, then reads each username server's
// password from its password_file, or from `$credentials_dir/<server name>`
// when password_file is absent and credentials_dir is non-empty. Refuses a
// config or password file that others may read (mode & 0007) or that a group
// other than the daemon's own may read. Errors name the JSON path, e.g.
// "servers[0].auth.password_file: /etc/x.pw is readable by others (mode 0644)".
Result<Config> load(const std::string& path, const std::string& credentials_dir);

}  // namespace s5::config
