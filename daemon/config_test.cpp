#include "config.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

namespace s5::config {
namespace {

bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

wire::Endpoint ip(std::string_view text, uint16_t port = 0) {
    auto ep = wire::Endpoint::parse_ip(text, port);
    EXPECT_TRUE(ep.has_value()) << text;
    return ep.value_or(wire::Endpoint{});
}

// ---- Building test documents ---------------------------------------------------

constexpr std::string_view kServerA = R"("name":"a","address":"192.0.2.1","port":1080)";

// A valid one-server config with `extra` root members appended.
std::string root_with(std::string_view extra) {
    return R"({"servers":[{)" + std::string(kServerA) + "}]," + std::string(extra) + "}";
}

// A config whose only server has exactly these members.
std::string server_with(std::string_view members) { return R"({"servers":[{)" + std::string(members) + "}]}"; }

// Server "a" with this auth object.
std::string auth_with(std::string_view auth) {
    return server_with(std::string(kServerA) + R"(,"auth":)" + std::string(auth));
}

// Servers "a" and "b" and these routes.
std::string routes_with(std::string_view routes) {
    return R"({"servers":[{)" + std::string(kServerA) +
           R"(},{"name":"b","address":"2001:db8::1","port":1080}],"routes":)" + std::string(routes) + "}";
}

const std::string kRootKeys =
    "(expected one of: servers, routes, socks5c_conf, pool, keepalive, lease_grace_s, limits, allowed_groups)";
const std::string kServerKeys =
    "(expected one of: name, address, port, auth, relay_address_override, pipelining, server_uid, claim)";
const std::string kNameRule = "must be 1..64 characters of A-Z, a-z, 0-9 and _";

// ---- Bad configs: one exact message each -------------------------------------------

struct BadCase {
    std::string name;
    std::string json;
    std::string expected;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

std::vector<BadCase> bad_cases() {
    return {
        // Document
        {"empty_text", "",
         "(root): invalid JSON at byte 1: syntax error while parsing value - unexpected end of input; "
         "expected '[', '{', or a literal"},
        {"syntax_error", R"({"servers": [})",
         "(root): invalid JSON at byte 14: syntax error while parsing value - unexpected '}'; "
         "expected '[', '{', or a literal"},
        {"trailing_garbage", R"({} x)", 
         "(root): invalid JSON at byte 4: syntax error while parsing value - invalid literal; last read: '{} x'; "
         "expected end of input"},
        {"root_array", "[]", "(root): must be an object"},
        {"root_string", R"("servers")", "(root): must be an object"},
        {"unknown_root_key", root_with(R"("route":[])"), "route: unknown key " + kRootKeys},
        {"unknown_key_with_newline", root_with(R"("a\nb":1)"), "a\\x0ab: unknown key " + kRootKeys},
        {"duplicate_key", server_with(std::string(kServerA) + R"(,"port":0)"), "servers[0].port: duplicate key"},
        {"duplicate_key_second_server",
         R"({"servers":[{"name":"a","address":"192.0.2.1","port":1},)"
         R"({"name":"b","address":"192.0.2.2","port":1,"name":"c"}]})",
         "servers[1].name: duplicate key"},
        {"duplicate_key_in_route", routes_with(R"([1,{"destination":"::/0","servers":["a"],"destination":"::/0"}])"),
         "routes[1].destination: duplicate key"},
        // servers
        {"servers_missing", "{}", "servers: required"},
        {"servers_not_array", R"({"servers":{}})", "servers: must be an array"},
        {"servers_empty", R"({"servers":[]})", "servers: must not be empty"},
        {"server_not_object", R"({"servers":["a"]})", "servers[0]: must be an object"},
        {"server_unknown_key", server_with(std::string(kServerA) + R"(,"prot":1)"),
         "servers[0].prot: unknown key " + kServerKeys},
        {"name_missing", server_with(R"("address":"192.0.2.1","port":1080)"), "servers[0].name: required"},
        {"name_not_string", server_with(R"("name":7,"address":"192.0.2.1","port":1080)"),
         "servers[0].name: must be a string"},
        {"name_empty", server_with(R"("name":"","address":"192.0.2.1","port":1080)"), "servers[0].name: " + kNameRule},
        {"name_dash", server_with(R"("name":"a-b","address":"192.0.2.1","port":1080)"),
         "servers[0].name: " + kNameRule},
        {"name_too_long", server_with(R"("name":")" + std::string(65, 'n') + R"(","address":"192.0.2.1","port":1080)"),
         "servers[0].name: " + kNameRule},
        {"name_duplicate",
         R"({"servers":[{"name":"corp","address":"192.0.2.1","port":1080},)"
         R"({"name":"corp","address":"192.0.2.2","port":1080}]})",
         R"(servers[1].name: duplicate server name "corp")"},
        {"address_missing", server_with(R"("name":"a","port":1080)"), "servers[0].address: required"},
        {"address_hostname", server_with(R"("name":"a","address":"proxy.example","port":1080)"),
         R"(servers[0].address: must be an IPv4 or IPv6 address (got "proxy.example"))"},
        {"address_with_port", server_with(R"("name":"a","address":"192.0.2.1:1080","port":1080)"),
         R"(servers[0].address: must be an IPv4 or IPv6 address (got "192.0.2.1:1080"))"},
        {"address_any4", server_with(R"("name":"a","address":"0.0.0.0","port":1080)"),
         "servers[0].address: must not be the unspecified address 0.0.0.0"},
        {"address_any6", server_with(R"("name":"a","address":"::","port":1080)"),
         "servers[0].address: must not be the unspecified address ::"},
        {"port_missing", server_with(R"("name":"a","address":"192.0.2.1")"), "servers[0].port: required"},
        {"port_zero", server_with(R"("name":"a","address":"192.0.2.1","port":0)"), "servers[0].port: must be 1..65535"},
        {"port_too_big", server_with(R"("name":"a","address":"192.0.2.1","port":65536)"),
         "servers[0].port: must be 1..65535"},
        {"port_negative", server_with(R"("name":"a","address":"192.0.2.1","port":-1)"),
         "servers[0].port: must be 1..65535"},
        {"port_string", server_with(R"("name":"a","address":"192.0.2.1","port":"1080")"),
         "servers[0].port: must be an integer in 1..65535"},
        {"port_float", server_with(R"("name":"a","address":"192.0.2.1","port":1080.0)"),
         "servers[0].port: must be an integer in 1..65535"},
        {"port_bool", server_with(R"("name":"a","address":"192.0.2.1","port":true)"),
         "servers[0].port: must be an integer in 1..65535"},
        {"port_overflowing_float", server_with(R"("name":"a","address":"192.0.2.1","port":1e999)"),
         "(root): invalid JSON: number overflow parsing '1e999'"},
        {"port_huge", server_with(R"("name":"a","address":"192.0.2.1","port":18446744073709551616)"),
         "servers[0].port: must be an integer in 1..65535"},
        {"relay_override_not_ip", server_with(std::string(kServerA) + R"(,"relay_address_override":"relay")"),
         R"(servers[0].relay_address_override: must be an IPv4 or IPv6 address (got "relay"))"},
        {"relay_override_number", server_with(std::string(kServerA) + R"(,"relay_address_override":1)"),
         "servers[0].relay_address_override: must be null or a string"},
        {"pipelining_string", server_with(std::string(kServerA) + R"(,"pipelining":"yes")"),
         "servers[0].pipelining: must be a boolean"},
        {"claim_unknown", server_with(std::string(kServerA) + R"(,"claim":"first")"),
         R"(servers[0].claim: must be "socket" or "first_datagram")"},
        {"claim_bool", server_with(std::string(kServerA) + R"(,"claim":true)"),
         "servers[0].claim: must be a string"},
        {"server_uid_string", server_with(std::string(kServerA) + R"(,"server_uid":"nobody")"),
         "servers[0].server_uid: must be an integer in 0..4294967294"},
        {"server_uid_negative", server_with(std::string(kServerA) + R"(,"server_uid":-1)"),
         "servers[0].server_uid: must be 0..4294967294"},
        {"server_uid_no_user", server_with(std::string(kServerA) + R"(,"server_uid":4294967295)"),
         "servers[0].server_uid: must be 0..4294967294"},
        // auth
        {"auth_not_object", auth_with(R"("none")"), "servers[0].auth: must be an object"},
        {"auth_method_missing", auth_with(R"({"username":"u"})"), "servers[0].auth.method: required"},
        {"auth_method_unknown", auth_with(R"({"method":"gssapi"})"),
         R"(servers[0].auth.method: must be "none" or "username" (got "gssapi"))"},
        {"auth_unknown_key", auth_with(R"({"method":"username","username":"u","password":"x"})"),
         "servers[0].auth.password: unknown key (expected one of: method, username, password_file)"},
        {"auth_username_missing", auth_with(R"({"method":"username"})"), "servers[0].auth.username: required"},
        {"auth_username_empty", auth_with(R"({"method":"username","username":""})"),
         "servers[0].auth.username: must be 1..255 bytes"},
        {"auth_username_too_long", auth_with(R"({"method":"username","username":")" + std::string(256, 'u') + "\"}"),
         "servers[0].auth.username: must be 1..255 bytes"},
        {"auth_password_file_relative", auth_with(R"({"method":"username","username":"u","password_file":"corp.pw"})"),
         "servers[0].auth.password_file: must be an absolute path"},
        {"auth_password_file_empty", auth_with(R"({"method":"username","username":"u","password_file":""})"),
         "servers[0].auth.password_file: must be an absolute path"},
        {"auth_password_file_number", auth_with(R"({"method":"username","username":"u","password_file":1})"),
         "servers[0].auth.password_file: must be a string"},
        {"auth_none_with_username", auth_with(R"({"method":"none","username":"u"})"),
         R"(servers[0].auth.username: not allowed with method "none")"},
        {"auth_none_with_password_file", auth_with(R"({"method":"none","password_file":"/x"})"),
         R"(servers[0].auth.password_file: not allowed with method "none")"},
        // routes
        {"routes_not_array", routes_with("{}"), "routes: must be an array"},
        {"route_not_object", routes_with("[1]"), "routes[0]: must be an object"},
        {"route_unknown_key", routes_with(R"([{"destination":"::/0","servers":["a"],"via":1}])"),
         "routes[0].via: unknown key (expected one of: destination, servers)"},
        {"route_destination_missing", routes_with(R"([{"servers":["a"]}])"), "routes[0].destination: required"},
        {"route_destination_hostname", routes_with(R"([{"destination":"example.org/8","servers":["a"]}])"),
         R"(routes[0].destination: must be an IPv4 or IPv6 prefix like 192.0.2.0/24 (got "example.org/8"))"},
        {"route_prefix_33", routes_with(R"([{"destination":"10.0.0.0/33","servers":["a"]}])"),
         R"(routes[0].destination: prefix length must be 0..32 (got "10.0.0.0/33"))"},
        {"route_prefix_129", routes_with(R"([{"destination":"2001:db8::/129","servers":["a"]}])"),
         R"(routes[0].destination: prefix length must be 0..128 (got "2001:db8::/129"))"},
        {"route_prefix_empty", routes_with(R"([{"destination":"10.0.0.0/","servers":["a"]}])"),
         R"(routes[0].destination: prefix length must be 0..32 (got "10.0.0.0/"))"},
        {"route_prefix_signed", routes_with(R"([{"destination":"10.0.0.0/+8","servers":["a"]}])"),
         R"(routes[0].destination: prefix length must be 0..32 (got "10.0.0.0/+8"))"},
        {"route_host_bits4", routes_with(R"([{"destination":"192.0.2.1/24","servers":["a"]}])"),
         "routes[0].destination: host bits are set; did you mean 192.0.2.0/24?"},
        {"route_host_bits6", routes_with(R"([{"destination":"2001:db8::1/33","servers":["a"]}])"),
         "routes[0].destination: host bits are set; did you mean 2001:db8::/33?"},
        {"route_duplicate",
         routes_with(R"([{"destination":"0.0.0.0/0","servers":["a"]},{"destination":"0.0.0.0/0","servers":["b"]}])"),
         "routes[1].destination: duplicate route for 0.0.0.0/0"},
        {"route_duplicate_bare_ip",
         routes_with(R"([{"destination":"192.0.2.7","servers":["a"]},{"destination":"192.0.2.7/32","servers":["b"]}])"),
         "routes[1].destination: duplicate route for 192.0.2.7/32"},
        {"route_servers_missing", routes_with(R"([{"destination":"::/0"}])"), "routes[0].servers: required"},
        {"route_servers_empty", routes_with(R"([{"destination":"::/0","servers":[]}])"),
         "routes[0].servers: must not be empty"},
        {"route_servers_not_array", routes_with(R"([{"destination":"::/0","servers":"a"}])"),
         "routes[0].servers: must be an array"},
        {"route_server_unknown", routes_with(R"([{"destination":"::/0","servers":["a","x"]}])"),
         R"(routes[0].servers[1]: unknown server "x")"},
        {"route_server_not_string", routes_with(R"([{"destination":"::/0","servers":[1]}])"),
         "routes[0].servers[0]: must be a string"},
        {"route_server_twice", routes_with(R"([{"destination":"::/0","servers":["b","b"]}])"),
         R"(routes[0].servers[1]: duplicate server "b")"},
        // pool, keepalive, limits, lease_grace_s, allowed_groups
        {"pool_null", root_with(R"("pool":null)"), "pool: must be an object"},
        {"pool_unknown_key", root_with(R"("pool":{"max_idle":1})"),
         "pool.max_idle: unknown key (expected one of: min_idle, max_associations, max_idle_age_s, setup_timeout_s)"},
        {"pool_min_idle_too_big", root_with(R"("pool":{"min_idle":1025})"), "pool.min_idle: must be 0..1024"},
        {"pool_max_associations_zero", root_with(R"("pool":{"max_associations":0})"),
         "pool.max_associations: must be 1..1000000"},
        {"pool_max_idle_age_zero", root_with(R"("pool":{"max_idle_age_s":0})"),
         "pool.max_idle_age_s: must be 1..86400"},
        {"pool_setup_timeout_zero", root_with(R"("pool":{"setup_timeout_s":0})"),
         "pool.setup_timeout_s: must be 1..300"},
        {"pool_setup_timeout_big", root_with(R"("pool":{"setup_timeout_s":301})"),
         "pool.setup_timeout_s: must be 1..300"},
        {"pool_min_idle_above_max", root_with(R"("pool":{"min_idle":10,"max_associations":5})"),
         "pool.min_idle: must not exceed pool.max_associations (5)"},
        {"keepalive_idle_zero", root_with(R"("keepalive":{"idle_s":0})"), "keepalive.idle_s: must be 1..32767"},
        {"keepalive_interval_too_big", root_with(R"("keepalive":{"interval_s":32768})"),
         "keepalive.interval_s: must be 1..32767"},
        {"keepalive_count_too_big", root_with(R"("keepalive":{"count":128})"), "keepalive.count: must be 1..127"},
        {"keepalive_count_float", root_with(R"("keepalive":{"count":1.5})"),
         "keepalive.count: must be an integer in 1..127"},
        {"lease_grace_too_big", root_with(R"("lease_grace_s":86401)"), "lease_grace_s: must be 0..86400"},
        {"lease_grace_negative", root_with(R"("lease_grace_s":-1)"), "lease_grace_s: must be 0..86400"},
        {"lease_grace_string", root_with(R"("lease_grace_s":"30")"), "lease_grace_s: must be an integer in 0..86400"},
        {"limits_not_object", root_with(R"("limits":[])"), "limits: must be an object"},
        {"limits_total_zero", root_with(R"("limits":{"leases_total":0})"), "limits.leases_total: must be 1..1000000"},
        {"limits_per_uid_above_total", root_with(R"("limits":{"leases_per_uid":20,"leases_total":10})"),
         "limits.leases_per_uid: must not exceed limits.leases_total (10)"},
        {"groups_not_array", root_with(R"("allowed_groups":"s5broker")"), "allowed_groups: must be an array"},
        {"groups_empty_name", root_with(R"("allowed_groups":["s5broker",""])"), "allowed_groups[1]: must not be empty"},
        {"groups_number", root_with(R"("allowed_groups":[0])"), "allowed_groups[0]: must be a string"},
    };
}

class BadConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, IsRejectedWithExactMessage) {
    const BadCase& c = GetParam();
    const Result<Config> r = parse(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.error.to_string(), c.expected) << c.json;
    EXPECT_EQ(r.error.to_string().find_first_of("\r\n"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Table, BadConfig, ::testing::ValuesIn(bad_cases()),
                         [](const ::testing::TestParamInfo<BadCase>& p) { return p.param.name; });

TEST(BadConfigTable, HasAtLeast35Cases) { EXPECT_GE(bad_cases().size(), 35u); }

TEST(BadConfigMessages, LongValuesAreCut) {
    const std::string host(1000, 'h');
    const Result<Config> r = parse(server_with(R"("name":"a","port":1,"address":")" + host + "\""));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error.to_string(),
              R"(servers[0].address: must be an IPv4 or IPv6 address (got ")" + std::string(64, 'h') + R"(..."))");
}

// ---- Good configs --------------------------------------------------------------------

// docs/design.md §6, verbatim.
constexpr const char* kDesignExample = R"({
  "servers": [
    {"name": "corp", "address": "192.0.2.10", "port": 1080,
     "auth": {"method": "username", "username": "app", "password_file": "/etc/s5broker/corp.pw"},
     "relay_address_override": null},
    {"name": "backup", "address": "2001:db8::10", "port": 1080, "auth": {"method": "none"}}
  ],
  "routes": [{"destination": "0.0.0.0/0", "servers": ["corp", "backup"]},
             {"destination": "::/0", "servers": ["corp"]}],
  "pool": {"min_idle": 2, "max_associations": 4096, "max_idle_age_s": 600},
  "keepalive": {"idle_s": 10, "interval_s": 3, "count": 3},
  "lease_grace_s": 30,
  "limits": {"leases_per_uid": 256, "leases_total": 16384},
  "allowed_groups": ["s5broker-clients"]
})";

TEST(GoodConfig, DesignExampleParses) {
    const Result<Config> r = parse(kDesignExample);
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    const Config& c = *r.value;

    ASSERT_EQ(c.servers.size(), 2u);
    const Server& corp = c.servers[0];
    EXPECT_EQ(corp.name, "corp");
    EXPECT_EQ(corp.endpoint, ip("192.0.2.10", 1080));
    EXPECT_EQ(corp.auth.method, AuthMethod::Username);
    EXPECT_EQ(corp.auth.username, "app");
    EXPECT_EQ(corp.auth.password_file, "/etc/s5broker/corp.pw");
    EXPECT_EQ(corp.auth.password.view(), "");  // parse() reads no files
    EXPECT_FALSE(corp.relay_address_override.has_value());
    EXPECT_FALSE(corp.pipelining);
    EXPECT_FALSE(corp.server_uid.has_value());

    const Server& backup = c.servers[1];
    EXPECT_EQ(backup.name, "backup");
    EXPECT_EQ(backup.endpoint, ip("2001:db8::10", 1080));
    EXPECT_EQ(backup.auth.method, AuthMethod::None);

    ASSERT_EQ(c.routes.size(), 2u);
    EXPECT_EQ(c.routes[0].destination.network, ip("0.0.0.0"));
    EXPECT_EQ(c.routes[0].destination.length, 0u);
    EXPECT_EQ(c.routes[0].servers, (std::vector<std::string>{"corp", "backup"}));
    EXPECT_EQ(c.routes[1].destination.network, ip("::"));
    EXPECT_EQ(c.routes[1].servers, (std::vector<std::string>{"corp"}));

    EXPECT_EQ(c.pool.min_idle, 2u);
    EXPECT_EQ(c.pool.max_associations, 4096u);
    EXPECT_EQ(c.pool.max_idle_age_s, 600u);
    EXPECT_EQ(c.pool.setup_timeout_s, 10u);
    EXPECT_EQ(c.keepalive.idle_s, 10u);
    EXPECT_EQ(c.keepalive.interval_s, 3u);
    EXPECT_EQ(c.keepalive.count, 3u);
    EXPECT_EQ(c.lease_grace_s, 30u);
    EXPECT_EQ(c.limits.leases_per_uid, 256u);
    EXPECT_EQ(c.limits.leases_total, 16384u);
    EXPECT_EQ(c.allowed_groups, (std::vector<std::string>{"s5broker-clients"}));
}

TEST(GoodConfig, MinimalGetsDefaults) {
    const Result<Config> r = parse(server_with(kServerA));
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    const Config& c = *r.value;
    ASSERT_EQ(c.servers.size(), 1u);
    EXPECT_EQ(c.servers[0].auth.method, AuthMethod::None);
    EXPECT_FALSE(c.servers[0].pipelining);
    EXPECT_TRUE(c.routes.empty());
    EXPECT_EQ(c.pool.min_idle, 2u);
    EXPECT_EQ(c.pool.max_associations, 4096u);
    EXPECT_EQ(c.pool.max_idle_age_s, 600u);
    EXPECT_EQ(c.pool.setup_timeout_s, 10u);
    EXPECT_EQ(c.keepalive.idle_s, 10u);
    EXPECT_EQ(c.keepalive.interval_s, 3u);
    EXPECT_EQ(c.keepalive.count, 3u);
    EXPECT_EQ(c.lease_grace_s, 30u);
    EXPECT_EQ(c.limits.leases_per_uid, 256u);
    EXPECT_EQ(c.limits.leases_total, 16384u);
    EXPECT_TRUE(c.allowed_groups.empty());
}

TEST(GoodConfig, PartialSectionsKeepOtherDefaults) {
    const Result<Config> r = parse(root_with(R"("pool":{"min_idle":0},"keepalive":{"count":9},"lease_grace_s":0)"));
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->pool.min_idle, 0u);
    EXPECT_EQ(r.value->pool.max_associations, 4096u);
    EXPECT_EQ(r.value->keepalive.count, 9u);
    EXPECT_EQ(r.value->keepalive.idle_s, 10u);
    EXPECT_EQ(r.value->lease_grace_s, 0u);
}

TEST(GoodConfig, ServerOptions) {
    const Result<Config> r = parse(server_with(
        std::string(kServerA) + R"(,"relay_address_override":"198.51.100.7","pipelining":true,)" +
        R"("auth":{"method":"username","username":"app"})"));
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    const Server& s = r.value->servers[0];
    ASSERT_TRUE(s.relay_address_override.has_value());
    EXPECT_EQ(*s.relay_address_override, ip("198.51.100.7"));
    EXPECT_TRUE(s.pipelining);
    EXPECT_EQ(s.claim, Server::Claim::Socket);  // the default
    EXPECT_EQ(s.auth.method, AuthMethod::Username);
    EXPECT_EQ(s.auth.password_file, "");  // a credential, resolved by load()
}

TEST(GoodConfig, ClaimByFirstDatagramIsOptIn) {
    const Result<Config> r = parse(server_with(std::string(kServerA) + R"(,"claim":"first_datagram")"));
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].claim, Server::Claim::FirstDatagram);
}

TEST(GoodConfig, BoundaryValues) {
    const std::string name(64, 'Z');
    const std::string user(255, 'u');
    const Result<Config> r = parse(server_with(R"("name":")" + name + R"(","address":"::1","port":65535,)" +
                                               R"("auth":{"method":"username","username":")" + user + R"("})"));
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].endpoint.port, 65535);
}

TEST(GoodConfig, BareAddressIsAHostRoute) {
    const Result<Config> r = parse(routes_with(
        R"([{"destination":"192.0.2.7","servers":["a"]},{"destination":"2001:db8::7","servers":["b"]}])"));
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->routes[0].destination.length, 32u);
    EXPECT_EQ(r.value->routes[1].destination.length, 128u);
    EXPECT_EQ(r.value->routes[1].destination.network, ip("2001:db8::7"));
}

TEST(GoodConfig, SamePrefixInBothFamiliesIsNoDuplicate) {
    const Result<Config> r =
        parse(routes_with(R"([{"destination":"0.0.0.0/0","servers":["a"]},{"destination":"::/0","servers":["a"]}])"));
    EXPECT_TRUE(r.ok()) << r.error.to_string();
}

// ---- Lookups --------------------------------------------------------------------------

Config routed_config() {
    const Result<Config> r = parse(R"({
      "servers": [{"name": "a", "address": "192.0.2.1", "port": 1080},
                  {"name": "b", "address": "192.0.2.1", "port": 1081},
                  {"name": "c", "address": "2001:db8::1", "port": 1080}],
      "routes": [{"destination": "0.0.0.0/0", "servers": ["a"]},
                 {"destination": "10.0.0.0/8", "servers": ["b"]},
                 {"destination": "10.1.0.0/16", "servers": ["c"]},
                 {"destination": "10.1.2.3", "servers": ["a", "b"]},
                 {"destination": "2001:db8::/32", "servers": ["c"]}]
    })");
    EXPECT_TRUE(r.ok()) << r.error.to_string();
    return r.value.value_or(Config{});
}

std::string route_servers(const Route* r) {
    if (!r) return "(none)";
    std::string out;
    for (const auto& s : r->servers) out += (out.empty() ? "" : ",") + s;
    return out;
}

TEST(RouteFor, LongestPrefixWins) {
    const Config c = routed_config();
    EXPECT_EQ(route_servers(c.route_for(ip("192.0.2.99", 53))), "a");
    EXPECT_EQ(route_servers(c.route_for(ip("10.200.0.1"))), "b");
    EXPECT_EQ(route_servers(c.route_for(ip("10.1.9.9"))), "c");
    EXPECT_EQ(route_servers(c.route_for(ip("10.1.2.3"))), "a,b");
    EXPECT_EQ(route_servers(c.route_for(ip("10.1.2.4"))), "c");
}

TEST(RouteFor, FamiliesDoNotMix) {
    const Config c = routed_config();
    EXPECT_EQ(route_servers(c.route_for(ip("2001:db8:ffff::1"))), "c");
    // No IPv6 default route: 0.0.0.0/0 must not catch IPv6 destinations.
    EXPECT_EQ(c.route_for(ip("2001:db9::1")), nullptr);
    EXPECT_EQ(c.route_for(wire::Endpoint{}), nullptr);
}

TEST(RouteFor, Ipv4MappedDestinationsTakeTheIpv4Routes) {
    // ::ffff:10.1.2.3 is the IPv4 host 10.1.2.3: its IPv4 route applies,
    // so that the mapped spelling cannot step around it.
    const Config c = routed_config();
    EXPECT_EQ(route_servers(c.route_for(ip("::ffff:10.1.2.3"))), route_servers(c.route_for(ip("10.1.2.3"))));
    EXPECT_EQ(route_servers(c.route_for(ip("::ffff:10.1.2.4"))), "c");
    EXPECT_EQ(route_servers(c.route_for(ip("::ffff:192.0.2.99", 53))), "a");
    // Only the ::ffff:0:0/96 prefix is mapped; ::10.1.2.3 (compatible) is not.
    EXPECT_EQ(c.route_for(ip("::10.1.2.3")), nullptr);
}

TEST(RouteFor, NoRoutesNoMatch) {
    const Result<Config> r = parse(server_with(kServerA));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value->route_for(ip("192.0.2.1")), nullptr);
}

TEST(FindServer, ByName) {
    const Config c = routed_config();
    ASSERT_NE(c.find_server("b"), nullptr);
    EXPECT_EQ(c.find_server("b")->endpoint.port, 1081);
    EXPECT_EQ(c.find_server("B"), nullptr);
    EXPECT_EQ(c.find_server(""), nullptr);
}

TEST(FindServer, ByExactEndpoint) {
    const Config c = routed_config();
    ASSERT_NE(c.find_server(ip("192.0.2.1", 1081)), nullptr);
    EXPECT_EQ(c.find_server(ip("192.0.2.1", 1081))->name, "b");
    EXPECT_EQ(c.find_server(ip("2001:db8::1", 1080))->name, "c");
    EXPECT_EQ(c.find_server(ip("192.0.2.1", 9999)), nullptr);
    EXPECT_EQ(c.find_server(ip("192.0.2.2", 1080)), nullptr);
    EXPECT_EQ(c.find_server(ip("::ffff:192.0.2.1", 1080)), nullptr);
}

// ---- Prefix::contains -------------------------------------------------------------------

Prefix prefix(std::string_view network, unsigned length) { return Prefix{ip(network), length}; }

TEST(PrefixContains, ZeroLengthMatchesItsFamilyOnly) {
    EXPECT_TRUE(prefix("0.0.0.0", 0).contains(ip("255.255.255.255")));
    EXPECT_TRUE(prefix("0.0.0.0", 0).contains(ip("0.0.0.0")));
    EXPECT_FALSE(prefix("0.0.0.0", 0).contains(ip("::")));
    EXPECT_TRUE(prefix("::", 0).contains(ip("ffff::1")));
    EXPECT_FALSE(prefix("::", 0).contains(ip("1.2.3.4")));
}

TEST(PrefixContains, FullLengthIsOneHost) {
    EXPECT_TRUE(prefix("192.0.2.1", 32).contains(ip("192.0.2.1", 4242)));  // port ignored
    EXPECT_FALSE(prefix("192.0.2.1", 32).contains(ip("192.0.2.0")));
    EXPECT_TRUE(prefix("2001:db8::1", 128).contains(ip("2001:db8::1")));
    EXPECT_FALSE(prefix("2001:db8::1", 128).contains(ip("2001:db8::")));
}

TEST(PrefixContains, OddLengths) {
    // 172.16.0.0/13 is 172.16.0.0 .. 172.23.255.255.
    EXPECT_TRUE(prefix("172.16.0.0", 13).contains(ip("172.16.0.0")));
    EXPECT_TRUE(prefix("172.16.0.0", 13).contains(ip("172.23.255.255")));
    EXPECT_FALSE(prefix("172.16.0.0", 13).contains(ip("172.24.0.0")));
    EXPECT_FALSE(prefix("172.16.0.0", 13).contains(ip("172.15.255.255")));
    // /1 splits the space in two.
    EXPECT_TRUE(prefix("128.0.0.0", 1).contains(ip("200.1.1.1")));
    EXPECT_FALSE(prefix("128.0.0.0", 1).contains(ip("127.255.255.255")));
    // 2001:db8::/33: the 33rd bit is the top bit of the fifth byte.
    EXPECT_TRUE(prefix("2001:db8::", 33).contains(ip("2001:db8:7fff::1")));
    EXPECT_FALSE(prefix("2001:db8::", 33).contains(ip("2001:db8:8000::")));
    EXPECT_TRUE(prefix("2001:db8::8000", 113).contains(ip("2001:db8::ffff")));
    EXPECT_FALSE(prefix("2001:db8::8000", 113).contains(ip("2001:db8::7fff")));
    EXPECT_TRUE(prefix("2001:db8::fe", 127).contains(ip("2001:db8::ff")));
    EXPECT_FALSE(prefix("2001:db8::fe", 127).contains(ip("2001:db8::fc")));
}

TEST(PrefixContains, UnsetOrImpossiblePrefixMatchesNothing) {
    EXPECT_FALSE(Prefix{}.contains(ip("1.2.3.4")));
    EXPECT_FALSE(Prefix{}.contains(wire::Endpoint{}));
    EXPECT_FALSE(prefix("1.2.3.4", 33).contains(ip("1.2.3.4")));
}

// A deeply nested document is refused at the nesting limit, before any of
// it is validated (40,000 levels used to take 6 s and 2.9 GB).
TEST(Parse, NestingIsBounded) {
    const auto nested = [](size_t depth) {
        std::string open, close;
        for (size_t i = 0; i < depth; ++i) {
            open += R"({"a":)";
            close += "}";
        }
        return open + "1" + close;
    };
    for (size_t depth : {33u, 40000u}) {
        const Result<Config> r = parse(nested(depth));
        ASSERT_FALSE(r.ok()) << depth;
        EXPECT_EQ(r.error.to_string(), "(root): nested deeper than 32 levels") << depth;
    }
    // 32 levels parse (and fail validation as an ordinary document does).
    const Result<Config> r = parse(nested(32));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error.reason, "nested deeper than 32 levels");
    std::string arrays = std::string(40000, '[') + std::string(40000, ']');
    EXPECT_EQ(parse(arrays).error.to_string(), "(root): nested deeper than 32 levels");
}

TEST(Parse, DuplicateKeyPathsThroughArraysAndObjects) {
    const Result<Config> r = parse(
        R"({"servers":[{"name":"a","address":"192.0.2.1","port":1},{"name":"b","address":"192.0.2.2","port":2,"auth":{"method":"none","method":"none"}}]})");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error.to_string(), "servers[1].auth.method: duplicate key");
}

// ---- load() ----------------------------------------------------------------------------

constexpr std::string_view kSecret = "hunter2-s3cret";

class Load : public ::testing::Test {
protected:
    void SetUp() override {
        std::string tmpl = (std::filesystem::temp_directory_path() / "s5broker-config-XXXXXX").string();
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
        dir_ = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    // Creates `name` in the temp dir with exactly `mode` (no umask) and,
    // when gid >= 0, that group. Returns its path.
    std::string write(const std::string& name, std::string_view content, mode_t mode, gid_t gid = getegid()) {
        const std::string path = dir_ + "/" + name;
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        EXPECT_GE(fd, 0) << path << ": " << std::strerror(errno);
        if (fd < 0) return path;
        EXPECT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
        chown_ok_ = ::fchown(fd, static_cast<uid_t>(-1), gid) == 0;
        EXPECT_EQ(::fchmod(fd, mode), 0);
        ::close(fd);
        return path;
    }

    // A config with one username server "corp"; `password_file` may be empty.
    std::string write_config(const std::string& password_file, mode_t mode = 0600) {
        std::string auth = R"({"method":"username","username":"app")";
        if (!password_file.empty()) auth += R"(,"password_file":")" + password_file + "\"";
        auth += "}";
        return write("s5brokerd.json",
                     R"({"servers":[{"name":"corp","address":"192.0.2.10","port":1080,"auth":)" + auth + "}]}",
                     mode);
    }

    // load() expected to fail; checks the message never carries the secret.
    std::string load_error(const std::string& path, const std::string& credentials_dir = "") {
        const Result<Config> r = load(path, credentials_dir);
        EXPECT_FALSE(r.ok());
        const std::string msg = r.error.to_string();
        EXPECT_FALSE(contains(msg, kSecret)) << msg;
        EXPECT_EQ(msg.find_first_of("\r\n"), std::string::npos) << msg;
        return msg;
    }

    std::string dir_;
    bool chown_ok_ = true;
};

TEST_F(Load, MissingFile) {
    const std::string path = dir_ + "/nope.json";
    EXPECT_EQ(load_error(path), path + ": cannot read: No such file or directory");
}

TEST_F(Load, NotARegularFile) {
    EXPECT_EQ(load_error(dir_), dir_ + ": is not a regular file");
    // A FIFO must be refused, not block start-up waiting for a writer.
    const std::string fifo = dir_ + "/fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    EXPECT_EQ(load_error(fifo), fifo + ": is not a regular file");
}

TEST_F(Load, WorldReadableConfigRefused) {
    const std::string path = write("c.json", server_with(kServerA), 0644);
    EXPECT_EQ(load_error(path),
              path + ": is readable by others (mode 0644); chmod 0600 or 0640 with the daemon's group");
}

TEST_F(Load, WorldWritableConfigRefused) {
    const std::string path = write("c.json", server_with(kServerA), 0602);
    EXPECT_EQ(load_error(path),
              path + ": is writable by others (mode 0602); chmod 0600 or 0640 with the daemon's group");
}

TEST_F(Load, PrivateConfigLoads) {
    const std::string path = write("c.json", server_with(kServerA), 0600);
    const Result<Config> r = load(path, "");
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].name, "a");
}

TEST_F(Load, GroupReadableByDaemonsGroupLoads) {
    const std::string path = write("c.json", server_with(kServerA), 0640, getegid());
    ASSERT_TRUE(chown_ok_);
    const Result<Config> r = load(path, "");
    EXPECT_TRUE(r.ok()) << r.error.to_string();
}

TEST_F(Load, GroupReadableByAnotherGroupRefused) {
    const gid_t other = getegid() == 0 ? 1 : 0;
    const std::string path = write("c.json", server_with(kServerA), 0640, other);
    if (!chown_ok_) GTEST_SKIP() << "cannot chgrp to gid " << other << " (needs root)";
    const std::string msg = load_error(path);
    EXPECT_TRUE(msg.starts_with(path + ": is accessible by group ")) << msg;
    EXPECT_TRUE(contains(msg, "(mode 0640), which is not the daemon's group; chmod 0600 or chgrp")) << msg;
}

// sshd's StrictModes: no symlink at the last component, owned by root or the
// service user, writable by nobody else, in directories nobody else may
// write to. Each refusal names the file and the reason.
TEST_F(Load, SymlinkRefused) {
    const std::string target = write("real.json", server_with(kServerA), 0600);
    const std::string link = dir_ + "/link.json";
    ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
    EXPECT_EQ(load_error(link), link + ": is a symbolic link; name the file itself");

    const std::string pw = write("corp.pw", kSecret, 0600);
    const std::string pw_link = dir_ + "/corp-link.pw";
    ASSERT_EQ(::symlink(pw.c_str(), pw_link.c_str()), 0);
    EXPECT_EQ(load_error(write_config(pw_link)),
              "servers[0].auth.password_file: " + pw_link + " is a symbolic link; name the file itself");
}

TEST_F(Load, FileOfAnotherUserRefused) {
    const std::string pw = write("corp.pw", kSecret, 0600);
    if (::chown(pw.c_str(), 65534, static_cast<gid_t>(-1)) != 0) GTEST_SKIP() << "cannot chown (needs root)";
    const std::string msg = load_error(write_config(pw));
    EXPECT_TRUE(msg.starts_with("servers[0].auth.password_file: " + pw + " is owned by uid 65534")) << msg;
    EXPECT_TRUE(contains(msg, "not by root or the service user; chown root")) << msg;
}

TEST_F(Load, GroupWritableRefused) {
    const std::string path = write("c.json", server_with(kServerA), 0620, getegid());
    EXPECT_EQ(load_error(path),
              path + ": is writable by its group (mode 0620); chmod 0600 or 0640 with the daemon's group");
}

TEST_F(Load, DirectoryWritableByOthersRefused) {
    const std::string path = write("c.json", server_with(kServerA), 0600);
    ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
    char* real = ::realpath(dir_.c_str(), nullptr);
    ASSERT_NE(real, nullptr);
    const std::string dir = real;
    std::free(real);
    EXPECT_EQ(load_error(path), path + ": is in directory " + dir + ", which others may write to (mode 0777); chmod go-w");
    // Sticky and owned by root, as /tmp is: others cannot replace the file.
    if (geteuid() == 0) {
        ASSERT_EQ(::chmod(dir_.c_str(), 01777), 0);
        const Result<Config> r = load(path, "");
        EXPECT_TRUE(r.ok()) << r.error.to_string();
    }
}

TEST_F(Load, DirectoryOfAnotherUserRefused) {
    const std::string sub = dir_ + "/sub";
    ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
    if (::chown(sub.c_str(), 65534, static_cast<gid_t>(-1)) != 0) GTEST_SKIP() << "cannot chown (needs root)";
    const std::string path = write("sub/c.json", server_with(kServerA), 0600);
    const std::string msg = load_error(path);
    EXPECT_TRUE(contains(msg, ": is in directory ")) << msg;
    EXPECT_TRUE(contains(msg, "/sub, owned by uid 65534")) << msg;
}

TEST_F(Load, DaemonsOwnGroupIsNoClientGroup) {
    const group* own = getgrgid(getegid());
    ASSERT_NE(own, nullptr);
    const std::string name = own->gr_name;
    const std::string path =
        write("c.json", R"({"servers":[{"name":"a","address":"192.0.2.1","port":1080}],"allowed_groups":["nogroup",")" +
                            name + R"("]})",
              0600);
    EXPECT_EQ(load_error(path), "allowed_groups[1]: \"" + name +
                                    "\" is the daemon's own group, which may read the configuration and password "
                                    "files; clients need a group of their own (s5broker-clients)");
}

TEST_F(Load, ParseErrorsKeepTheirJsonPath) {
    const std::string path = write("c.json", R"({"servers":[]})", 0600);
    EXPECT_EQ(load_error(path), "servers: must not be empty");
}

TEST_F(Load, PasswordFileReadAndNewlineStripped) {
    const std::string pw = write("corp.pw", std::string(kSecret) + "\n", 0600);
    const Result<Config> r = load(write_config(pw), "");
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].auth.password.view(), kSecret);
    EXPECT_EQ(r.value->servers[0].auth.password_file, pw);
}

TEST_F(Load, CrLfStripped) {
    const std::string pw = write("corp.pw", std::string(kSecret) + "\r\n", 0400);
    const Result<Config> r = load(write_config(pw), "");
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].auth.password.view(), kSecret);
}

TEST_F(Load, OnlyOneNewlineStripped) {
    const std::string pw = write("corp.pw", std::string(kSecret) + "\n\n", 0600);
    const Result<Config> r = load(write_config(pw), "");
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].auth.password.view(), std::string(kSecret) + "\n");
}

TEST_F(Load, NoNewlineKeptAsIs) {
    const std::string pw = write("corp.pw", kSecret, 0600);
    const Result<Config> r = load(write_config(pw), "");
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].auth.password.view(), kSecret);
}

TEST_F(Load, WorldReadablePasswordFileRefused) {
    const std::string pw = write("corp.pw", std::string(kSecret) + "\n", 0644);
    EXPECT_EQ(load_error(write_config(pw)),
              "servers[0].auth.password_file: " + pw +
                  " is readable by others (mode 0644); chmod 0600 or 0640 with the daemon's group");
}

TEST_F(Load, MissingPasswordFile) {
    const std::string pw = dir_ + "/absent.pw";
    EXPECT_EQ(load_error(write_config(pw)),
              "servers[0].auth.password_file: cannot read " + pw + ": No such file or directory");
}

TEST_F(Load, EmptyPasswordRefused) {
    const std::string pw = write("corp.pw", "\n", 0600);
    EXPECT_EQ(load_error(write_config(pw)), "servers[0].auth.password_file: " + pw + " holds an empty password");
    const std::string empty = write("empty.pw", "", 0600);
    EXPECT_EQ(load_error(write_config(empty)),
              "servers[0].auth.password_file: " + empty + " holds an empty password");
}

TEST_F(Load, LongPasswordRefused) {
    std::string text;
    while (text.size() <= 255) text += kSecret;
    const std::string pw = write("corp.pw", text + "\n", 0600);
    EXPECT_EQ(load_error(write_config(pw)),
              "servers[0].auth.password_file: " + pw + " holds a password longer than 255 bytes");

    std::string huge;
    while (huge.size() <= 4096) huge += kSecret;
    const std::string big = write("big.pw", huge, 0600);
    EXPECT_EQ(load_error(write_config(big)), "servers[0].auth.password_file: " + big + " is larger than 4096 bytes");
}

TEST_F(Load, MaxLengthPasswordAccepted) {
    const std::string pw = write("corp.pw", std::string(255, 'p') + "\n", 0600);
    const Result<Config> r = load(write_config(pw), "");
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].auth.password.size(), 255u);
}

TEST_F(Load, CredentialDirectoryLookup) {
    write("corp", std::string(kSecret) + "\n", 0400);
    const Result<Config> r = load(write_config(""), dir_);
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].auth.password.view(), kSecret);
    EXPECT_EQ(r.value->servers[0].auth.password_file, "");  // as configured
}

TEST_F(Load, PasswordFileWinsOverCredential) {
    write("corp", "from-credential", 0400);
    const std::string pw = write("corp.pw", "from-file", 0600);
    const Result<Config> r = load(write_config(pw), dir_);
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    EXPECT_EQ(r.value->servers[0].auth.password.view(), "from-file");
}

TEST_F(Load, MissingCredential) {
    EXPECT_EQ(load_error(write_config(""), dir_),
              "servers[0].auth.password_file: cannot read " + dir_ + "/corp: No such file or directory");
}

TEST_F(Load, NoPasswordFileAndNoCredentialsDirectory) {
    EXPECT_EQ(load_error(write_config("")),
              R"(servers[0].auth.password_file: required (or a systemd credential named "corp"))");
}

TEST_F(Load, WorldReadableCredentialRefused) {
    write("corp", kSecret, 0604);
    EXPECT_EQ(load_error(write_config(""), dir_),
              "servers[0].auth.password_file: " + dir_ +
                  "/corp is readable by others (mode 0604); chmod 0600 or 0640 with the daemon's group");
}

TEST_F(Load, ErrorOnSecondServerNamesIt) {
    const std::string pw = write("corp.pw", kSecret, 0600);
    const std::string path = write(
        "c.json",
        R"({"servers":[{"name":"open","address":"192.0.2.1","port":1080},)"
        R"({"name":"corp","address":"192.0.2.2","port":1080,"auth":{"method":"username","username":"u",)"
        R"("password_file":")" + dir_ + R"(/other.pw"}}, {"name":"c2","address":"192.0.2.3","port":1080,)"
        R"("auth":{"method":"username","username":"u","password_file":")" + pw + R"("}}]})",
        0600);
    EXPECT_EQ(load_error(path),
              "servers[1].auth.password_file: cannot read " + dir_ + "/other.pw: No such file or directory");
}

}  // namespace

// ---- routes from AIX's socks5c.conf ------------------------------------------

TEST_F(Load, Socks5cConfGivesTheRoutes) {
    const std::string conf = write("socks5c.conf",
                                   "# AIX file, brought along\n"
                                   "10.0.0.0/8   192.0.2.1\n"
                                   "10.1.0.0/16  NONE\n"
                                   "2001:db8::/32 2001:db8::53:1081\n",
                                   0644);
    const std::string cfg = write("c.json",
                                  R"({"servers":[{"name":"a","address":"192.0.2.1","port":1080},)"
                                  R"({"name":"b","address":"2001:db8::53","port":1081}],"socks5c_conf":")" +
                                      conf + R"("})",
                                  0600);
    const Result<Config> r = load(cfg, "");
    ASSERT_TRUE(r.ok()) << r.error.to_string();
    const Config& c = *r.value;
    ASSERT_EQ(c.routes.size(), 3u);
    EXPECT_EQ(c.routes[0].servers, std::vector<std::string>{"a"});
    EXPECT_TRUE(c.routes[1].servers.empty());   // NONE
    EXPECT_EQ(c.routes[2].servers, std::vector<std::string>{"b"});
    // The broker's longest-prefix match sees them as AIX does.
    auto dst = [](const char* ip) { return *wire::Endpoint::parse_ip(ip); };
    ASSERT_NE(c.route_for(dst("10.2.3.4")), nullptr);
    EXPECT_EQ(c.route_for(dst("10.2.3.4"))->servers, std::vector<std::string>{"a"});
    ASSERT_NE(c.route_for(dst("10.1.2.3")), nullptr);
    EXPECT_TRUE(c.route_for(dst("10.1.2.3"))->servers.empty());
    EXPECT_EQ(c.route_for(dst("192.168.1.1")), nullptr);   // the implied 0.0.0.0/0 NONE
}

TEST_F(Load, Socks5cConfErrorsNameFileAndLine) {
    auto cfg_for = [&](const std::string& conf_text, mode_t mode = 0644) {
        const std::string conf = write("socks5c.conf", conf_text, mode);
        return write("c.json",
                     R"({"servers":[{"name":"a","address":"192.0.2.1","port":1080}],"socks5c_conf":")" + conf + R"("})",
                     0600);
    };
    const std::string file = dir_ + "/socks5c.conf";
    EXPECT_EQ(load_error(cfg_for("10.0.0.0/8 192.0.2.1\n10.0.0.0/8 192.0.2.9:1080\n")).find("socks5c_conf: " + file + ":2: "),
              0u);
    EXPECT_EQ(load_error(cfg_for("10.0.0.0/8 192.0.2.1\n0.0.0.0/0 192.0.2.9\n")),
              "socks5c_conf: " + file + ":2: server 192.0.2.9:1080 is not one of the configured servers (by address and port)");
    EXPECT_EQ(load_error(cfg_for("example.com 192.0.2.1\n")),
              "socks5c_conf: " + file +
                  ":1: host-name fragment \"example.com\": not supported by the broker (matching it needs a reverse DNS "
                  "lookup per association); use address records");
    EXPECT_EQ(load_error(cfg_for("10.0.0.0/8 192.0.2.1\n", 0666)),
              "socks5c_conf: " + file + " is writable by others than its owner (mode 0666); chmod go-w");
}

TEST(Parse, Socks5cConfAndRoutesExcludeEachOther) {
    const auto r = parse(R"({"servers":[{"name":"a","address":"192.0.2.1","port":1080}],"routes":[],)"
                         R"("socks5c_conf":"/etc/socks5c.conf"})");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error.to_string(), "socks5c_conf: cannot be given with routes: the routes come from the file");
    const auto rel = parse(R"({"servers":[{"name":"a","address":"192.0.2.1","port":1080}],"socks5c_conf":"x.conf"})");
    ASSERT_FALSE(rel.ok());
    EXPECT_EQ(rel.error.to_string(), "socks5c_conf: must be an absolute path");
}

}  // namespace s5::config
