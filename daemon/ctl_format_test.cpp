// s5brokerctl's pure half: argument parsing, addresses, tables and lines.
#include "ctl_format.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

namespace {

using namespace s5ctl;

ParseResult parse(std::vector<std::string> v) { return parse_args(v); }

// ---- parse_args ------------------------------------------------------------

TEST(ParseArgs, SimpleCommands) {
    for (auto [name, cmd] : {std::pair{"status", Command::Status},
                             {"servers", Command::Servers},
                             {"leases", Command::Leases},
                             {"reload", Command::Reload},
                             {"monitor", Command::Monitor}}) {
        auto r = parse({name});
        ASSERT_TRUE(r.args) << name << ": " << r.error;
        EXPECT_EQ(*r.args->command, cmd);
        EXPECT_FALSE(r.args->json);
        EXPECT_FALSE(r.args->bus_address);
    }
}

TEST(ParseArgs, OptionsAnywhere) {
    auto r = parse({"--json", "servers", "--bus-address", "unix:path=/x"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_TRUE(r.args->json);
    EXPECT_EQ(r.args->bus_address, "unix:path=/x");
    r = parse({"leases", "--bus-address=unix:path=/y", "--json"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->bus_address, "unix:path=/y");
    EXPECT_TRUE(r.args->json);
}

TEST(ParseArgs, HelpAndVersionNeedNoCommand) {
    EXPECT_TRUE(parse({"--help"}).args->help);
    EXPECT_TRUE(parse({"-h"}).args->help);
    EXPECT_TRUE(parse({"--version"}).args->version);
    EXPECT_TRUE(parse({"status", "--help"}).args->help);
}

TEST(ParseArgs, UsageErrors) {
    for (std::vector<std::string> bad : std::vector<std::vector<std::string>>{
             {},
             {"frobnicate"},
             {"--frobnicate", "status"},
             {"-x", "status"},
             {"status", "extra"},
             {"route"},
             {"route", "example.com"},
             {"route", "1.2.3.4", "5"},
             {"associate", "127.0.0.1"},
             {"associate", "127.0.0.1", "70000"},
             {"associate", "127.0.0.1", "x7"},
             {"associate", "localhost", "7"},
             {"associate", "127.0.0.1", "7", "--server", "127.0.0.1"},
             {"associate", "127.0.0.1", "7", "--server", "::1:1080"},
             {"associate", "127.0.0.1", "7", "--server", "[127.0.0.1]:1080"},
             {"associate", "127.0.0.1", "7", "--server", "127.0.0.1:0"},
             {"associate", "127.0.0.1", "0", "--echo", "hi"},
             {"associate", "127.0.0.1", "7", "--echo"},
             {"status", "--server", "127.0.0.1:1080"},
             {"status", "--echo", "x"},
             {"status", "--json=yes"},
             {"status", "--bus-address"},
             {"status", "--bus-address="},
         }) {
        auto r = parse(bad);
        std::string joined;
        for (auto& s : bad) joined += s + " ";
        EXPECT_FALSE(r.args) << joined;
        EXPECT_FALSE(r.error.empty()) << joined;
        EXPECT_EQ(r.error.find('\n'), std::string::npos) << joined;
    }
    EXPECT_EQ(parse({"frobnicate"}).error, "unknown command 'frobnicate'");
    EXPECT_EQ(parse({"--frobnicate", "status"}).error, "unknown option '--frobnicate'");
    EXPECT_EQ(parse({}).error, "missing command");
}

TEST(ParseArgs, Associate) {
    auto r = parse({"associate", "127.0.0.1", "7", "--server", "127.0.0.1:1080", "--echo", "hello world"});
    ASSERT_TRUE(r.args) << r.error;
    const Args& a = *r.args;
    EXPECT_EQ(*a.command, Command::Associate);
    EXPECT_EQ(a.destination.family, AF_INET);
    EXPECT_EQ(a.destination.port, 7);
    ASSERT_TRUE(a.server);
    EXPECT_EQ(a.server->to_string(), "127.0.0.1:1080");
    EXPECT_EQ(a.echo, "hello world");

    r = parse({"associate", "::1", "0", "--server=[::1]:1080"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->destination.family, AF_INET6);
    EXPECT_EQ(r.args->destination.port, 0);  // route only
    EXPECT_EQ(r.args->server->family, AF_INET6);
    EXPECT_EQ(r.args->server->port, 1080);
    EXPECT_FALSE(r.args->echo);

    // "--" ends the options: an echo text may start with a dash.
    r = parse({"associate", "--echo", "-x-", "--", "127.0.0.1", "7"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->echo, "-x-");
}

TEST(ParseArgs, Route) {
    auto r = parse({"route", "2001:db8::1"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(*r.args->command, Command::Route);
    EXPECT_EQ(format_ip(r.args->destination), "2001:db8::1");
}

TEST(Usage, MentionsEveryCommandAndOption) {
    std::string u = usage();
    for (const char* w : {"status", "servers", "leases", "associate", "route", "reload", "monitor", "--json",
                          "--bus-address", "--help", "--version", "--server", "--echo"})
        EXPECT_NE(u.find(w), std::string::npos) << w;
}

// ---- addresses -------------------------------------------------------------

TEST(Addresses, Port) {
    EXPECT_EQ(parse_port("1080", false), 1080);
    EXPECT_EQ(parse_port("65535", false), 65535);
    EXPECT_EQ(parse_port("0", true), 0);
    EXPECT_FALSE(parse_port("0", false));
    EXPECT_FALSE(parse_port("65536", true));
    EXPECT_FALSE(parse_port("", true));
    EXPECT_FALSE(parse_port("+1", true));
    EXPECT_FALSE(parse_port("1 ", true));
    EXPECT_FALSE(parse_port("000001", true));
}

TEST(Addresses, HostPort) {
    EXPECT_EQ(parse_host_port("192.0.2.1:1080")->to_string(), "192.0.2.1:1080");
    EXPECT_EQ(parse_host_port("[2001:db8::1]:1080")->to_string(), "[2001:db8::1]:1080");
    for (const char* bad : {"192.0.2.1", "2001:db8::1:1080", "[2001:db8::1]", "[2001:db8::1]1080", "host:1080",
                            "[192.0.2.1]:1080", ":1080", "192.0.2.1:", "[::1:1080"})
        EXPECT_FALSE(parse_host_port(bad)) << bad;
}

TEST(Addresses, Format) {
    using Bytes = std::vector<uint8_t>;
    EXPECT_EQ(format_ip(Bytes{127, 0, 0, 1}), "127.0.0.1");
    EXPECT_EQ(format_ip(Bytes{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}), "::1");
    EXPECT_EQ(format_ip(Bytes{1, 2, 3}), "?3");
    EXPECT_EQ(format_endpoint(endpoint_json({127, 0, 0, 1}, 80)), "127.0.0.1:80");
    EXPECT_EQ(format_endpoint(endpoint_json({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 80)), "[::1]:80");
    EXPECT_EQ(format_endpoint(json()), "-");
    json ep = endpoint_json({10, 0, 0, 1}, 5);
    EXPECT_EQ(ep.dump(), R"({"address":"10.0.0.1","port":5})");
}

TEST(Paths, Names) {
    EXPECT_EQ(server_name_of("/org/s5broker/Broker1/server/corp"), "corp");
    EXPECT_EQ(server_name_of("/org/s5broker/Broker1"), "");
    EXPECT_EQ(server_name_of("/org/s5broker/Broker1/server/"), "");
    EXPECT_EQ(server_name_of("/org/s5broker/Broker1/server/a/b"), "");
    EXPECT_EQ(lease_id_of("/org/s5broker/Broker1/lease/42"), "42");
    EXPECT_EQ(lease_id_of("/org/s5broker/Broker1/server/corp"), "");
    EXPECT_EQ(object_name("/org/s5broker/Broker1"), "manager");
    EXPECT_EQ(object_name("/org/s5broker/Broker1/server/corp"), "server/corp");
    EXPECT_EQ(object_name("/org/s5broker/Broker1/lease/7"), "lease/7");
    EXPECT_EQ(object_name("/elsewhere"), "/elsewhere");
}

// ---- tables ----------------------------------------------------------------

json server(const std::string& name, const std::string& state, unsigned idle, const std::string& err) {
    return json{{"name", name},           {"path", "/org/s5broker/Broker1/server/" + name},
                {"address", "127.0.0.1"}, {"port", 1080},
                {"auth", "none"},         {"state", state},
                {"pool_idle", idle},      {"pool_target", 2},
                {"last_error", err}};
}

TEST(Render, Table) {
    EXPECT_EQ(render_table({"A", "LONGER"}, {{"xyz", "1"}, {"", "22"}}), "A    LONGER\nxyz  1\n     22\n");
    // The last column is not padded and no line ends in blanks.
    EXPECT_EQ(render_table({"A", "B"}, {{"1", ""}}), "A  B\n1\n");
}

TEST(Render, Servers) {
    json servers = json::array({server("plain", "up", 2, ""), server("closed", "down", 0, "connection refused")});
    EXPECT_EQ(render_servers(servers),
              "NAME    ADDRESS    PORT  AUTH  STATE  IDLE/TARGET  LAST-ERROR\n"
              "plain   127.0.0.1  1080  none  up     2/2          -\n"
              "closed  127.0.0.1  1080  none  down   0/2          connection refused\n");
    EXPECT_EQ(render_servers(json::array()), "No servers configured.\n");
}

TEST(Render, Leases) {
    json l{{"id", "3"},
           {"path", "/org/s5broker/Broker1/lease/3"},
           {"uid", 1000},
           {"server", "plain"},
           {"server_path", "/org/s5broker/Broker1/server/plain"},
           {"relay", endpoint_json({127, 0, 0, 1}, 40000)},
           {"state", "active"},
           {"generation", 1},
           {"age_s", nullptr}};
    json pending = l;
    pending["id"] = "4";
    pending["server"] = nullptr;
    pending["state"] = "pending";
    pending["generation"] = 0;
    pending["relay"] = endpoint_json({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0);
    EXPECT_EQ(render_leases(json::array({l, pending})),
              "ID  UID   SERVER  RELAY            STATE    GEN  AGE\n"
              "3   1000  plain   127.0.0.1:40000  active   1    -\n"
              "4   1000  -       [::]:0           pending  0    -\n");
    EXPECT_EQ(render_leases(json::array()), "No leases.\n");
}

TEST(Render, Status) {
    json st{{"version", "0.1.0"},
            {"lease_count", 1},
            {"servers", json::array({server("plain", "up", 2, ""), server("closed", "down", 0, "refused")})},
            {"statistics", json{{"associations_made", 5}, {"renewals", 0}}}};
    EXPECT_EQ(render_status(st),
              "Version:  0.1.0\n"
              "Leases:   1\n"
              "\nServers:\n"
              "  plain   up    pool 2/2  127.0.0.1:1080\n"
              "  closed  down  pool 0/2  127.0.0.1:1080  (refused)\n"
              "\nStatistics:\n"
              "  associations_made  5\n"
              "  renewals           0\n");
}

TEST(Render, RouteAndAssociate) {
    json route{{"destination", "::1"}, {"name", "plain6"}, {"address", "::1"}, {"port", 1080}};
    EXPECT_EQ(render_route(route), "Destination:  ::1\nServer:       plain6\nAddress:      [::1]:1080\n");

    json r{{"destination", endpoint_json({127, 0, 0, 1}, 7)},
           {"server", nullptr},
           {"rendezvous", endpoint_json({127, 0, 0, 1}, 40000)},
           {"lease", "3"},
           {"lease_server", "plain"}};
    EXPECT_EQ(render_associate(r), "Rendezvous:  127.0.0.1:40000\nLease:       3 (server plain)\n");
    r["lease"] = nullptr;
    r["echo"] =
        json{{"sent", "hi there"}, {"reply", "hi there"}, {"from", endpoint_json({127, 0, 0, 1}, 7)}, {"rtt_ms", 1.25}};
    EXPECT_EQ(render_associate(r),
              "Rendezvous:  127.0.0.1:40000\n"
              "Sent:        \"hi there\" to 127.0.0.1:7\n"
              "Reply:       \"hi there\" from 127.0.0.1:7 in 1.2 ms\n");
}

TEST(Render, Values) {
    EXPECT_EQ(render_value("up"), "up");
    EXPECT_EQ(render_value(""), "\"\"");
    EXPECT_EQ(render_value("connection refused"), "\"connection refused\"");
    EXPECT_EQ(render_value("a\nb"), "\"a\\nb\"");
    EXPECT_EQ(render_value(7), "7");
    EXPECT_EQ(render_value(true), "true");
    EXPECT_EQ(render_value(nullptr), "-");
    EXPECT_EQ(render_value(endpoint_json({127, 0, 0, 1}, 9)), "127.0.0.1:9");
    EXPECT_EQ(render_value(json::array({"a", "b"})), "[a, b]");
    EXPECT_EQ(render_value(json{{"x", 1}, {"y", "z"}}), "{x=1, y=z}");
}

TEST(Render, Events) {
    json changed{{"time", "2024-05-01T12:00:01.234Z"},
                 {"object", "server/plain"},
                 {"path", "/org/s5broker/Broker1/server/plain"},
                 {"event", "PropertiesChanged"},
                 {"interface", "org.s5broker.Broker1.Server"},
                 {"changed", json{{"State", "down"}, {"LastError", "connection refused"}}},
                 {"invalidated", json::array({"PoolIdle"})}};
    EXPECT_EQ(render_event(changed),
              "12:00:01.234Z server/plain PropertiesChanged State=down LastError=\"connection refused\" "
              "PoolIdle=<invalidated>");
    json renewed{{"time", "2024-05-01T12:00:02.000Z"},
                 {"object", "lease/3"},
                 {"event", "Renewed"},
                 {"generation", 2},
                 {"relay", endpoint_json({127, 0, 0, 1}, 40001)}};
    EXPECT_EQ(render_event(renewed), "12:00:02.000Z lease/3 Renewed generation=2 relay=127.0.0.1:40001");
    json lost{{"time", "T1"}, {"object", "lease/3"}, {"event", "Lost"}, {"error", "no server\nwithin 30 s"}};
    EXPECT_EQ(render_event(lost), "1 lease/3 Lost error=\"no server\\nwithin 30 s\"");
    json started{{"time", "T0"}, {"object", "broker"}, {"event", "BrokerStarted"}, {"owner", ":1.5"}};
    EXPECT_EQ(render_event(started), "0 broker BrokerStarted owner=:1.5");
}

TEST(Render, OneLine) { EXPECT_EQ(one_line("a\nb\tc\r"), "a b c "); }

}  // namespace
