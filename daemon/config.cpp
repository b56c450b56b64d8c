#include "config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "one_line.hpp"
#include "socks5c_conf.hpp"
#include "unique_fd.hpp"

namespace s5::config {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxConfigBytes = 1 << 20;
// A password is at most 255 bytes (RFC 1929); the cap only bounds the read.
constexpr size_t kMaxPasswordFileBytes = 4096;
constexpr size_t kMaxPasswordBytes = 255;
constexpr size_t kMaxShown = 64;

// ---- Errors ----------------------------------------------------------------

// Error text goes to the journal and to a terminal: one line, always, even
// when it quotes a key or value from the file (s5::one_line).
using s5::one_line;

Error make_error(std::string_view path, std::string_view reason) {
    return Error{path.empty() ? "(root)" : one_line(path), one_line(reason)};
}

// Thrown by the validators below and caught in parse()/load(): validation
// stops at the first error, and unwinding keeps each check to one line.
struct Invalid {
    Error error;
};

[[noreturn]] void fail(std::string_view path, std::string_view reason) { throw Invalid{make_error(path, reason)}; }

// A value from the file as it appears in a message: bounded, so a huge
// string cannot flood the journal, and cut on a UTF-8 character boundary.
std::string excerpt(std::string_view s) {
    if (s.size() <= kMaxShown) return std::string(s);
    size_t cut = kMaxShown;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    return std::string(s.substr(0, cut)) + "...";
}

std::string in_quotes(std::string_view s) {
    // Not "\"" + excerpt(s): GCC 12 at -O3 warns (-Wrestrict, a false
    // positive) on "literal" + std::string&&.
    std::string q(1, '"');
    q += excerpt(s);
    q += '"';
    return q;
}

// ---- JSON paths --------------------------------------------------------------

std::string child(std::string_view path, std::string_view key) {
    std::string k = excerpt(key);
    return path.empty() ? k : std::string(path) + "." + k;
}

std::string element(std::string_view path, size_t i) { return std::string(path) + "[" + std::to_string(i) + "]"; }

// ---- Duplicate keys ------------------------------------------------------------

// nlohmann::json silently keeps the last of two equal keys, which would let
// a second "port" or "password_file" further down quietly win. The parser
// callback follows each open container and records the first repeated key.
// It also bounds the nesting: the schema needs 4 levels, and a document
// nested 40,000 deep (80 KB) must not cost seconds and gigabytes. Paths are
// built only for the error, so the work is linear in the document.
class DuplicateKeyFinder {
public:
    static constexpr int kMaxDepth = 32;

    bool on_event(int depth, json::parse_event_t event, const json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                if (depth >= kMaxDepth)
                    throw Invalid{make_error("", "nested deeper than " + std::to_string(kMaxDepth) + " levels")};
                open(event == json::parse_event_t::object_start);
                break;
            case json::parse_event_t::key:
                on_key(parsed.get<std::string>());
                break;
            case json::parse_event_t::value:
                if (!stack_.empty() && !stack_.back().is_object) ++stack_.back().next_index;
                break;
            case json::parse_event_t::object_end:
            case json::parse_event_t::array_end:
                stack_.pop_back();
                break;
        }
        return true;  // keep every value: this only observes
    }

    const std::optional<Error>& first() const { return first_; }

private:
    struct Frame {
        bool is_object = false;
        size_t index = 0;         // arrays: this frame's place in its parent
        size_t next_index = 0;    // arrays: the next element's
        std::string key;          // objects: the key whose value comes next
        std::set<std::string> keys;
    };

    void open(bool is_object) {
        Frame f;
        f.is_object = is_object;
        if (!stack_.empty() && !stack_.back().is_object) f.index = stack_.back().next_index++;
        stack_.push_back(std::move(f));
    }

    // The JSON path of the innermost open container ("servers[1].auth").
    std::string path() const {
        std::string p;
        for (size_t i = 1; i < stack_.size(); ++i)
            p = stack_[i - 1].is_object ? child(p, stack_[i - 1].key) : element(p, stack_[i].index);
        return p;
    }

    void on_key(std::string key) {
        Frame& f = stack_.back();
        if (!f.keys.insert(key).second && !first_) first_ = make_error(child(path(), key), "duplicate key");
        f.key = std::move(key);
    }

    std::vector<Frame> stack_;
    std::optional<Error> first_;
};

// nlohmann's what() is "[json.exception.parse_error.101] parse error at
// line 1, column 2: <detail>"; the byte offset is reported separately.
std::string parse_error_detail(std::string_view what) {
    if (auto bracket = what.find("] "); bracket != std::string_view::npos) what.remove_prefix(bracket + 2);
    if (what.starts_with("parse error")) {
        if (auto colon = what.find(": "); colon != std::string_view::npos) what.remove_prefix(colon + 2);
    }
    return std::string(what.substr(0, 200));
}

json parse_json(std::string_view text) {
    DuplicateKeyFinder dups;
    json doc;
    try {
        const auto observe = [&dups](int depth, json::parse_event_t event, json& parsed) {
            return dups.on_event(depth, event, parsed);
        };
        doc = json::parse(text.begin(), text.end(), observe);
    } catch (const json::parse_error& e) {
        fail("", "invalid JSON at byte " + std::to_string(e.byte) + ": " + parse_error_detail(e.what()));
    } catch (const json::exception& e) {
        fail("", "invalid JSON: " + parse_error_detail(e.what()));
    }
    if (dups.first()) throw Invalid{*dups.first()};
    return doc;
}

// ---- Typed access ----------------------------------------------------------------

std::string joined(std::initializer_list<std::string_view> words) {
    std::string out;
    for (std::string_view w : words) out += (out.empty() ? "" : ", ") + std::string(w);
    return out;
}

// `v` as an object whose keys are all in `allowed`: a misspelt optional key
// would otherwise be ignored and its default silently used.
const json& object_with(const json& v, std::string_view path, std::initializer_list<std::string_view> allowed) {
    if (!v.is_object()) fail(path, "must be an object");
    for (auto it = v.begin(); it != v.end(); ++it) {
        if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end())
            fail(child(path, it.key()), "unknown key (expected one of: " + joined(allowed) + ")");
    }
    return v;
}

const json* optional_field(const json& obj, std::string_view key) {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
}

const json& required_field(const json& obj, std::string_view path, std::string_view key) {
    const json* v = optional_field(obj, key);
    if (!v) fail(child(path, key), "required");
    return *v;
}

std::string get_string(const json& v, std::string_view path) {
    if (!v.is_string()) fail(path, "must be a string");
    return v.get<std::string>();
}

bool get_bool(const json& v, std::string_view path) {
    if (!v.is_boolean()) fail(path, "must be a boolean");
    return v.get<bool>();
}

const json& get_array(const json& v, std::string_view path) {
    if (!v.is_array()) fail(path, "must be an array");
    return v;
}

const json& get_non_empty_array(const json& v, std::string_view path) {
    if (get_array(v, path).empty()) fail(path, "must not be empty");
    return v;
}

uint32_t get_uint(const json& v, std::string_view path, uint32_t lo, uint32_t hi) {
    const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
    // is_number_integer() excludes floats (even 1080.0) and booleans.
    if (!v.is_number_integer()) fail(path, "must be an integer in " + range);
    // Negative integers are number_integer but not number_unsigned.
    if (v.is_number_unsigned()) {
        const uint64_t n = v.get<uint64_t>();
        if (n >= lo && n <= hi) return static_cast<uint32_t>(n);
    }
    fail(path, "must be " + range);
}

// Sets `out` from obj[key] when present; otherwise `out` keeps its default.
void optional_uint(const json& obj, std::string_view path, std::string_view key, uint32_t lo, uint32_t hi,
                   uint32_t& out) {
    if (const json* v = optional_field(obj, key)) out = get_uint(*v, child(path, key), lo, hi);
}

// ---- Addresses and prefixes --------------------------------------------------------

std::string ip_text(const wire::Endpoint& ip) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (!inet_ntop(ip.family, ip.ip.data(), buf, sizeof buf)) return "?";
    return buf;
}

unsigned max_prefix_length(const wire::Endpoint& ip) { return static_cast<unsigned>(ip.ip_len() * 8); }

using wire::same_leading_bits;

wire::Endpoint with_host_bits_cleared(wire::Endpoint ip, unsigned length) {
    const unsigned total = max_prefix_length(ip);
    for (unsigned bit = length; bit < total; ++bit) ip.ip[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
    return ip;
}

std::string prefix_text(const wire::Endpoint& network, unsigned length) {
    return ip_text(network) + "/" + std::to_string(length);
}

// A server address: an IP literal the broker can connect to.
wire::Endpoint parse_address(const json& v, std::string_view path) {
    const std::string text = get_string(v, path);
    auto ip = wire::Endpoint::parse_ip(text);
    if (!ip) fail(path, "must be an IPv4 or IPv6 address (got " + in_quotes(text) + ")");
    if (ip->is_unspecified()) fail(path, "must not be the unspecified address " + text);
    return *ip;
}

// "192.0.2.0/24", "::/0", or a bare address meaning a single host.
Prefix parse_prefix(const json& v, std::string_view path) {
    const std::string text = get_string(v, path);
    const size_t slash = text.find('/');
    auto ip = wire::Endpoint::parse_ip(std::string_view(text).substr(0, slash));
    if (!ip) fail(path, "must be an IPv4 or IPv6 prefix like 192.0.2.0/24 (got " + in_quotes(text) + ")");

    const unsigned max = max_prefix_length(*ip);
    unsigned length = max;
    if (slash != std::string::npos) {
        // Plain decimal digits only: no sign, no spaces, no hex.
        const std::string digits = text.substr(slash + 1);
        const bool numeric = !digits.empty() && digits.size() <= 3 &&
                             std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
        length = numeric ? static_cast<unsigned>(std::stoul(digits)) : max + 1;
        if (length > max)
            fail(path, "prefix length must be 0.." + std::to_string(max) + " (got " + in_quotes(text) + ")");
    }

    // A prefix with host bits set is most likely a typo for another network;
    // guessing which one would route traffic the operator did not intend.
    const wire::Endpoint network = with_host_bits_cleared(*ip, length);
    if (network != *ip) fail(path, "host bits are set; did you mean " + prefix_text(network, length) + "?");
    return Prefix{network, length};
}

// ---- Sections ---------------------------------------------------------------------

// Server names become D-Bus object path elements, which allow only these.
bool valid_server_name(std::string_view name) {
    return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

Auth parse_auth(const json& v, std::string_view path) {
    const json& obj = object_with(v, path, {"method", "username", "password_file"});
    const std::string method_path = child(path, "method");
    const std::string method = get_string(required_field(obj, path, "method"), method_path);

    Auth auth;
    if (method == "none") {
        for (std::string_view key : {"username", "password_file"}) {
            if (optional_field(obj, key)) fail(child(path, key), "not allowed with method \"none\"");
        }
        return auth;
    }
    if (method != "username") fail(method_path, "must be \"none\" or \"username\" (got " + in_quotes(method) + ")");

    auth.method = AuthMethod::Username;
    const std::string user_path = child(path, "username");
    auth.username = get_string(required_field(obj, path, "username"), user_path);
    if (auth.username.empty() || auth.username.size() > 255) fail(user_path, "must be 1..255 bytes");

    if (const json* pf = optional_field(obj, "password_file")) {
        const std::string pf_path = child(path, "password_file");
        auth.password_file = get_string(*pf, pf_path);
        // The daemon's working directory is not the operator's.
        if (!auth.password_file.starts_with('/')) fail(pf_path, "must be an absolute path");
    }
    return auth;
}

Server parse_server(const json& v, std::string_view path) {
    const json& obj =
        object_with(v, path, {"name", "address", "port", "auth", "relay_address_override", "pipelining", "server_uid",
                                "claim"});
    Server s;

    const std::string name_path = child(path, "name");
    s.name = get_string(required_field(obj, path, "name"), name_path);
    if (!valid_server_name(s.name)) fail(name_path, "must be 1..64 characters of A-Z, a-z, 0-9 and _");

    s.endpoint = parse_address(required_field(obj, path, "address"), child(path, "address"));
    s.endpoint.port = static_cast<uint16_t>(get_uint(required_field(obj, path, "port"), child(path, "port"), 1, 65535));

    if (const json* auth = optional_field(obj, "auth")) s.auth = parse_auth(*auth, child(path, "auth"));

    if (const json* relay = optional_field(obj, "relay_address_override"); relay && !relay->is_null()) {
        const std::string relay_path = child(path, "relay_address_override");
        if (!relay->is_string()) fail(relay_path, "must be null or a string");
        s.relay_address_override = parse_address(*relay, relay_path);
    }

    if (const json* p = optional_field(obj, "pipelining")) s.pipelining = get_bool(*p, child(path, "pipelining"));
    // (uid_t)-1 is "no user" to the kernel: not a uid to trust.
    if (const json* u = optional_field(obj, "server_uid"))
        s.server_uid = static_cast<uid_t>(get_uint(*u, child(path, "server_uid"), 0, 4294967294u));
    if (const json* c = optional_field(obj, "claim")) {
        const std::string claim_path = child(path, "claim");
        const std::string v = get_string(*c, claim_path);
        if (v == "socket")
            s.claim = Server::Claim::Socket;
        else if (v == "first_datagram")
            s.claim = Server::Claim::FirstDatagram;
        else
            fail(claim_path, "must be \"socket\" or \"first_datagram\"");
    }
    return s;
}

std::vector<Server> parse_servers(const json& v, std::string_view path) {
    std::vector<Server> servers;
    for (const json& item : get_non_empty_array(v, path)) {
        const std::string item_path = element(path, servers.size());
        Server s = parse_server(item, item_path);
        const bool taken =
            std::any_of(servers.begin(), servers.end(), [&](const Server& o) { return o.name == s.name; });
        if (taken) fail(child(item_path, "name"), "duplicate server name " + in_quotes(s.name));
        servers.push_back(std::move(s));
    }
    return servers;
}

std::vector<std::string> parse_route_servers(const json& v, std::string_view path, const std::vector<Server>& servers) {
    std::vector<std::string> names;
    for (const json& item : get_non_empty_array(v, path)) {
        const std::string item_path = element(path, names.size());
        std::string name = get_string(item, item_path);
        const bool known = std::any_of(servers.begin(), servers.end(), [&](const Server& s) { return s.name == name; });
        if (!known) fail(item_path, "unknown server " + in_quotes(name));
        if (std::find(names.begin(), names.end(), name) != names.end())
            fail(item_path, "duplicate server " + in_quotes(name));
        names.push_back(std::move(name));
    }
    return names;
}

std::vector<Route> parse_routes(const json& v, std::string_view path, const std::vector<Server>& servers) {
    std::vector<Route> routes;
    for (const json& item : get_array(v, path)) {
        const std::string item_path = element(path, routes.size());
        const json& obj = object_with(item, item_path, {"destination", "servers"});

        const std::string dest_path = child(item_path, "destination");
        Route r;
        r.destination = parse_prefix(required_field(obj, item_path, "destination"), dest_path);
        const bool taken = std::any_of(routes.begin(), routes.end(), [&](const Route& o) {
            return o.destination.network == r.destination.network && o.destination.length == r.destination.length;
        });
        if (taken)
            fail(dest_path, "duplicate route for " + prefix_text(r.destination.network, r.destination.length));

        const std::string servers_path = child(item_path, "servers");
        r.servers = parse_route_servers(required_field(obj, item_path, "servers"), servers_path, servers);
        routes.push_back(std::move(r));
    }
    return routes;
}

Pool parse_pool(const json& v, std::string_view path) {
    const json& obj = object_with(v, path, {"min_idle", "max_associations", "max_idle_age_s", "setup_timeout_s"});
    Pool p;
    optional_uint(obj, path, "min_idle", 0, 1024, p.min_idle);
    optional_uint(obj, path, "max_associations", 1, 1000000, p.max_associations);
    optional_uint(obj, path, "max_idle_age_s", 1, 86400, p.max_idle_age_s);
    optional_uint(obj, path, "setup_timeout_s", 1, 300, p.setup_timeout_s);
    if (p.min_idle > p.max_associations)
        fail(child(path, "min_idle"),
             "must not exceed " + child(path, "max_associations") + " (" + std::to_string(p.max_associations) + ")");
    return p;
}

// Bounds are the kernel's: TCP_KEEPIDLE/TCP_KEEPINTVL <= 32767, TCP_KEEPCNT <= 127.
Keepalive parse_keepalive(const json& v, std::string_view path) {
    const json& obj = object_with(v, path, {"idle_s", "interval_s", "count"});
    Keepalive k;
    optional_uint(obj, path, "idle_s", 1, 32767, k.idle_s);
    optional_uint(obj, path, "interval_s", 1, 32767, k.interval_s);
    optional_uint(obj, path, "count", 1, 127, k.count);
    return k;
}

Limits parse_limits(const json& v, std::string_view path) {
    const json& obj = object_with(v, path, {"leases_per_uid", "leases_total"});
    Limits l;
    optional_uint(obj, path, "leases_per_uid", 1, 1000000, l.leases_per_uid);
    optional_uint(obj, path, "leases_total", 1, 1000000, l.leases_total);
    if (l.leases_per_uid > l.leases_total)
        fail(child(path, "leases_per_uid"),
             "must not exceed " + child(path, "leases_total") + " (" + std::to_string(l.leases_total) + ")");
    return l;
}

std::vector<std::string> parse_groups(const json& v, std::string_view path) {
    std::vector<std::string> groups;
    for (const json& item : get_array(v, path)) {
        const std::string item_path = element(path, groups.size());
        std::string g = get_string(item, item_path);
        if (g.empty()) fail(item_path, "must not be empty");
        groups.push_back(std::move(g));
    }
    return groups;
}

Config parse_document(std::string_view text) {
    const json doc = parse_json(text);
    const json& root = object_with(
        doc, "", {"servers", "routes", "socks5c_conf", "pool", "keepalive", "lease_grace_s", "limits", "allowed_groups"});

    Config c;
    c.servers = parse_servers(required_field(root, "", "servers"), "servers");
    if (const json* v = optional_field(root, "routes")) c.routes = parse_routes(*v, "routes", c.servers);
    if (const json* v = optional_field(root, "socks5c_conf")) {
        c.socks5c_conf = get_string(*v, "socks5c_conf");
        if (!c.socks5c_conf.starts_with('/')) fail("socks5c_conf", "must be an absolute path");
        if (optional_field(root, "routes"))
            fail("socks5c_conf", "cannot be given with routes: the routes come from the file");
    }
    if (const json* v = optional_field(root, "pool")) c.pool = parse_pool(*v, "pool");
    if (const json* v = optional_field(root, "keepalive")) c.keepalive = parse_keepalive(*v, "keepalive");
    optional_uint(root, "", "lease_grace_s", 0, 86400, c.lease_grace_s);
    if (const json* v = optional_field(root, "limits")) c.limits = parse_limits(*v, "limits");
    if (const json* v = optional_field(root, "allowed_groups")) c.allowed_groups = parse_groups(*v, "allowed_groups");
    return c;
}

// ---- Files --------------------------------------------------------------------------

std::string mode_text(mode_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
    return buf;
}

std::string group_text(gid_t gid) {
    group gr{};
    group* found = nullptr;
    char buf[4096];
    if (getgrgid_r(gid, &gr, buf, sizeof buf, &found) == 0 && found) return in_quotes(found->gr_name);
    return std::to_string(gid);
}

std::string user_text(uid_t uid) {
    passwd pw{};
    passwd* found = nullptr;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found)
        return std::to_string(uid) + " (" + in_quotes(found->pw_name) + ")";
    return std::to_string(uid);
}

// Why a file holding configuration or a secret may have been written or read
// by someone it should not, or nullopt when it is owned by root or the
// service user, writable by its owner only, and readable at most by its owner
// and the daemon's own group (the service's private group, which is never a
// client group: see check_client_groups). Mode bits, not access(): a daemon
// running as root can read anything. The rules are sshd's StrictModes.
std::optional<std::string> exposure(const struct stat& st) {
    const std::string mode = mode_text(st.st_mode);
    if (st.st_uid != 0 && st.st_uid != geteuid())
        return "is owned by uid " + user_text(st.st_uid) + ", not by root or the service user; chown root";
    if (st.st_mode & 0020)
        return "is writable by its group (mode " + mode + "); chmod 0600 or 0640 with the daemon's group";
    if (st.st_mode & 0007) {
        const char* how = (st.st_mode & 0004) ? "readable" : (st.st_mode & 0002) ? "writable" : "accessible";
        return std::string("is ") + how + " by others (mode " + mode +
               "); chmod 0600 or 0640 with the daemon's group";
    }
    if ((st.st_mode & 0070) && st.st_gid != getegid()) {
        return "is accessible by group " + group_text(st.st_gid) + " (mode " + mode +
               "), which is not the daemon's group; chmod 0600 or chgrp to the daemon's group";
    }
    return std::nullopt;
}

// For a file others may read but nobody else may change (socks5c.conf:
// where traffic, and with it the passwords, goes): owned by root or the
// service user, writable by its owner only.
std::optional<std::string> write_exposure(const struct stat& st) {
    const std::string mode = mode_text(st.st_mode);
    if (st.st_uid != 0 && st.st_uid != geteuid())
        return "is owned by uid " + user_text(st.st_uid) + ", not by root or the service user; chown root";
    if (st.st_mode & 0022) return "is writable by others than its owner (mode " + mode + "); chmod go-w";
    return std::nullopt;
}

// Why a directory on the way to such a file lets someone else replace it, or
// nullopt. Every directory from the file's (symlinks resolved) up to "/"
// must be owned by root or the service user and writable by nobody else;
// a root-owned sticky directory (/tmp) is fine: others cannot rename or
// remove what they do not own there.
std::optional<std::string> directory_exposure(const std::string& file) {
    const auto slash = file.rfind('/');
    std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : file.substr(0, slash);
    char* real = ::realpath(parent.c_str(), nullptr);
    if (!real) return std::nullopt;   // the open that follows reports it
    std::string dir = real;
    std::free(real);
    for (;;) {
        struct stat st {};
        if (::stat(dir.c_str(), &st) != 0) return "cannot check directory " + dir + ": " + std::strerror(errno);
        const bool sticky_root = (st.st_mode & S_ISVTX) && st.st_uid == 0;
        if (st.st_uid != 0 && st.st_uid != geteuid())
            return "is in directory " + dir + ", owned by uid " + user_text(st.st_uid) +
                   ", not by root or the service user";
        if ((st.st_mode & 0022) && !sticky_root)
            return "is in directory " + dir + ", which others may write to (mode " + mode_text(st.st_mode) +
                   "); chmod go-w";
        if (dir == "/") return std::nullopt;
        const auto up = dir.rfind('/');
        dir = up == 0 ? "/" : dir.substr(0, up);
    }
}

[[noreturn]] void fail_read(std::string_view error_path, const std::string& named, int err) {
    fail(error_path, "cannot read" + (named.empty() ? "" : " " + named) + ": " + std::strerror(err));
}

// Reads a private file whole. Errors go to `error_path`; when that is a JSON
// path rather than the file itself, `name_file` puts the file name in the
// reason. fstat() on the open descriptor checks the very file that is read.
// Reads straight into `Buffer` (std::string for the configuration, secret
// memory for a password: no other copy is made on the way, not even on the
// stack).
template <typename Buffer>
Buffer read_private_file(const std::string& file, std::string_view error_path, bool name_file, size_t max_bytes,
                         std::optional<std::string> (*exposed)(const struct stat&) = exposure) {
    const std::string named = name_file ? file : "";
    const std::string subject = name_file ? file + " " : "";
    const std::string too_large = subject + "is larger than " + std::to_string(max_bytes) + " bytes";

    // O_NONBLOCK: a FIFO in place of the file must not hang start-up; it is
    // refused below as not a regular file. O_NOFOLLOW: a symlink planted in
    // place of the file must not make the daemon read (and send to a SOCKS
    // server) a file its planter could not read.
    if (auto why = directory_exposure(file)) fail(error_path, subject + *why);
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW));
    if (!fd && errno == ELOOP) fail(error_path, subject + "is a symbolic link; name the file itself");
    if (!fd) fail_read(error_path, named, errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail_read(error_path, named, errno);
    if (!S_ISREG(st.st_mode)) fail(error_path, subject + "is not a regular file");
    if (auto why = exposed(st)) fail(error_path, subject + *why);
    if (static_cast<uint64_t>(st.st_size) > max_bytes) fail(error_path, too_large);

    // One byte more than the limit: a file that grew since fstat() past
    // it is seen as too large, not cut short. Sized once, never regrown.
    Buffer text;
    text.resize(max_bytes + 1);
    size_t len = 0;
    for (;;) {
        const ssize_t n = ::read(fd.get(), text.data() + len, text.size() - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail_read(error_path, named, errno);
        if (n == 0) break;
        len += static_cast<size_t>(n);
        if (len > max_bytes) fail(error_path, too_large);
    }
    text.resize(len);
    return text;
}

// Editors and `echo` end a file with a newline that is not part of the
// password; exactly one is removed so a password may still end in "\n".
template <typename Chars>
void strip_final_newline(Chars& s) {
    const std::string_view v(s.data(), s.size());
    if (v.ends_with("\r\n"))
        s.resize(s.size() - 2);
    else if (v.ends_with('\n'))
        s.pop_back();
}

// Messages name the file and the problem, never the content.
void load_password(Server& s, std::string_view path, const std::string& credentials_dir) {
    std::string file = s.auth.password_file;
    if (file.empty()) {
        if (credentials_dir.empty()) fail(path, "required (or a systemd credential named " + in_quotes(s.name) + ")");
        file = credentials_dir + "/" + s.name;  // the name has no '/' (see valid_server_name)
    }
    using SecretChars = std::vector<char, s5::SecretAllocator<char>>;
    auto password = read_private_file<SecretChars>(file, path, true, kMaxPasswordFileBytes);
    strip_final_newline(password);
    if (password.empty()) fail(path, file + " holds an empty password");
    if (password.size() > kMaxPasswordBytes)
        fail(path, file + " holds a password longer than " + std::to_string(kMaxPasswordBytes) + " bytes");
    s.auth.password = s5::Secret(std::move(password));
}

}  // namespace

// ---- Public ---------------------------------------------------------------------------

bool Prefix::contains(const wire::Endpoint& ip) const {
    if (network.family == 0 || ip.family != network.family) return false;
    if (length > max_prefix_length(network)) return false;
    return same_leading_bits(network.ip, ip.ip, length);
}

const Server* Config::find_server(std::string_view name) const {
    auto it = std::find_if(servers.begin(), servers.end(), [&](const Server& s) { return s.name == name; });
    return it == servers.end() ? nullptr : &*it;
}

const Server* Config::find_server(const wire::Endpoint& ep) const {
    // Compare only the bytes the family uses: the rest of `ip` is not
    // guaranteed to be zero in an Endpoint built by hand.
    const auto same = [&](const Server& s) {
        const wire::Endpoint& e = s.endpoint;
        return e.family == ep.family && e.port == ep.port && e.ip_len() != 0 &&
               std::memcmp(e.ip.data(), ep.ip.data(), e.ip_len()) == 0;
    };
    auto it = std::find_if(servers.begin(), servers.end(), same);
    return it == servers.end() ? nullptr : &*it;
}


// An IPv4-mapped IPv6 destination (an AF_INET6 socket sending to an IPv4
// host) is IPv4 traffic and takes the IPv4 routes: otherwise writing
// 10.1.2.3 as ::ffff:10.1.2.3 would step around the operator's route for
// 10.0.0.0/8.
const Route* Config::route_for(const wire::Endpoint& destination) const {
    const wire::Endpoint dst = destination.unmapped();
    const Route* best = nullptr;
    for (const Route& r : routes) {
        if (r.destination.contains(dst) && (!best || r.destination.length > best->destination.length)) best = &r;
    }
    return best;
}

Result<Config> parse(std::string_view json_text) {
    try {
        return {parse_document(json_text), {}};
    } catch (const Invalid& e) {
        return {std::nullopt, e.error};
    }
}

namespace {

// The daemon's own group may read the configuration and the passwords, so
// no client may be in it: a client group must be another group.
void check_client_groups(const Config& c) {
    for (size_t i = 0; i < c.allowed_groups.size(); ++i) {
        group gr{};
        group* found = nullptr;
        char buf[4096];
        if (getgrnam_r(c.allowed_groups[i].c_str(), &gr, buf, sizeof buf, &found) == 0 && found &&
            found->gr_gid == getegid())
            fail(element("allowed_groups", i),
                 in_quotes(c.allowed_groups[i]) +
                     " is the daemon's own group, which may read the configuration and password files; "
                     "clients need a group of their own (s5broker-clients)");
    }
}

}  // namespace

// The routes of an AIX socks5c.conf: one per address record, its server
// the configured one with that address and port (NONE: a route without
// servers, so such destinations get NoServer). Host-name fragments are
// refused: matching them needs a reverse DNS lookup per association, which
// the event loop must not wait for.
static std::vector<Route> routes_from_socks5c(const Config& c) {
    const std::string& file = c.socks5c_conf;
    const std::string text = read_private_file<std::string>(file, "socks5c_conf", true, s5::socks5c::kMaxFileBytes,
                                                            write_exposure);
    const auto parsed = s5::socks5c::parse(text, file);
    if (!parsed.ok()) fail("socks5c_conf", parsed.error.to_string());
    auto at = [&](unsigned line) { return one_line(file) + ":" + std::to_string(line) + ": "; };
    if (parsed.value->has_fragments()) {
        const auto& f = parsed.value->fragments().front();
        fail("socks5c_conf", at(f.line) + "host-name fragment " + in_quotes(f.fragment) +
                                 ": not supported by the broker (matching it needs a reverse DNS lookup per "
                                 "association); use address records");
    }
    std::vector<Route> routes;
    for (const auto& rec : parsed.value->addresses()) {
        Route r;
        r.destination.network = rec.network;
        r.destination.length = rec.length;
        if (!rec.target.direct) {
            const Server* s = c.find_server(rec.target.server);
            if (!s)
                fail("socks5c_conf", at(rec.line) + "server " + rec.target.server.to_string() +
                                         " is not one of the configured servers (by address and port)");
            r.servers.push_back(s->name);
        }
        routes.push_back(std::move(r));
    }
    return routes;
}

Result<Config> load(const std::string& path, const std::string& credentials_dir) {
    try {
        Config c = parse_document(read_private_file<std::string>(path, path, false, kMaxConfigBytes));
        if (!c.socks5c_conf.empty()) c.routes = routes_from_socks5c(c);
        check_client_groups(c);
        for (size_t i = 0; i < c.servers.size(); ++i) {
            Server& s = c.servers[i];
            if (s.auth.method == AuthMethod::Username)
                load_password(s, element("servers", i) + ".auth.password_file", credentials_dir);
        }
        return {std::move(c), {}};
    } catch (const Invalid& e) {
        return {std::nullopt, e.error};
    }
}

}  // namespace s5::config
