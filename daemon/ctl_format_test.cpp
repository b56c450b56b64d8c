// s5brokerctl's pure half: argument parsing, help, the output conventions,
// addresses, tables and lines.
#include "ctl_format.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>
#include <sstream>

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
        EXPECT_EQ(r.args->json, JsonArg::None);
        EXPECT_TRUE(r.args->pager);
        EXPECT_TRUE(r.args->legend);
        EXPECT_FALSE(r.args->help);
        EXPECT_FALSE(r.args->bus_address);
    }
}

TEST(ParseArgs, OptionsAnywhere) {
    auto r = parse({"--json", "servers", "--bus-address", "unix:path=/x"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->json, JsonArg::Bare);
    EXPECT_EQ(r.args->bus_address, "unix:path=/x");
    r = parse({"leases", "--bus-address=unix:path=/y", "--json", "--no-pager", "--no-legend"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->bus_address, "unix:path=/y");
    EXPECT_EQ(r.args->json, JsonArg::Bare);
    EXPECT_FALSE(r.args->pager);
    EXPECT_FALSE(r.args->legend);
}

TEST(ParseArgs, JsonModes) {
    EXPECT_EQ(parse({"status", "--json=pretty"}).args->json, JsonArg::Pretty);
    EXPECT_EQ(parse({"status", "--json=short"}).args->json, JsonArg::Short);
    EXPECT_EQ(parse({"status", "--json", "--json=off"}).args->json, JsonArg::None);
    EXPECT_EQ(parse({"-j", "status"}).args->json, JsonArg::Auto);
    // A bare --json takes no value: the next word is the command.
    auto r = parse({"--json", "leases"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(*r.args->command, Command::Leases);
    EXPECT_EQ(r.args->json, JsonArg::Bare);
    // --json=help lists the modes, no command needed.
    EXPECT_TRUE(parse({"--json=help"}).args->json_help);
    EXPECT_EQ(parse({"status", "--json=yaml"}).error, "invalid --json mode 'yaml': expected pretty, short or off");
}

TEST(ParseArgs, JsonModeResolution) {
    Args a;
    a.command = Command::Leases;
    a.json = JsonArg::None;
    EXPECT_EQ(json_mode(a, true), JsonMode::Off);
    a.json = JsonArg::Bare;  // --json as before: indented
    EXPECT_EQ(json_mode(a, false), JsonMode::Pretty);
    a.json = JsonArg::Auto;  // -j, as systemd's
    EXPECT_EQ(json_mode(a, true), JsonMode::Pretty);
    EXPECT_EQ(json_mode(a, false), JsonMode::Short);
    a.json = JsonArg::Short;
    EXPECT_EQ(json_mode(a, true), JsonMode::Short);
    a.json = JsonArg::Pretty;
    EXPECT_EQ(json_mode(a, false), JsonMode::Pretty);
    a.command = Command::Monitor;  // monitor --json: one object per line, as before
    a.json = JsonArg::Bare;
    EXPECT_EQ(json_mode(a, true), JsonMode::Short);
    a.json = JsonArg::Pretty;
    EXPECT_EQ(json_mode(a, true), JsonMode::Pretty);
}

TEST(ParseArgs, HelpAndVersionNeedNoCommand) {
    EXPECT_TRUE(parse({"--help"}).args->help);
    EXPECT_FALSE(parse({"--help"}).args->command);
    EXPECT_TRUE(parse({"-h"}).args->help);
    EXPECT_TRUE(parse({"--version"}).args->version);
    EXPECT_TRUE(parse({"status", "--help"}).args->help);
}

TEST(ParseArgs, HelpPerVerb) {
    // VERB -h: that verb's help, also without its operands.
    for (std::vector<std::string> v : std::vector<std::vector<std::string>>{
             {"leases", "-h"}, {"-h", "leases"}, {"leases", "--help", "--no-legend"}}) {
        auto r = parse(v);
        ASSERT_TRUE(r.args) << r.error;
        EXPECT_TRUE(r.args->help);
        EXPECT_EQ(r.args->command, Command::Leases);
    }
    auto r = parse({"associate", "-h"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->command, Command::Associate);
    r = parse({"route", "--help", "not-an-address"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->command, Command::Route);
    // Bundled short options.
    r = parse({"leases", "-jh"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_TRUE(r.args->help);
    EXPECT_EQ(r.args->json, JsonArg::Auto);
    EXPECT_EQ(parse({"frobnicate", "-h"}).error, "unknown command 'frobnicate'");
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
             {"status", "--json="},
             {"status", "--no-pager=yes"},
             {"status", "--no-legend=1"},
             {"status", "-hx"},
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
    EXPECT_EQ(parse({"-x", "status"}).error, "unknown option '-x'");
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
    for (const char* w : {"status", "servers", "leases", "associate", "route", "reload", "monitor",
                          "--json=pretty|short|off", "-j ", "--no-pager", "--no-legend", "--bus-address", "--help",
                          "--version", "--server", "--echo", "s5brokerctl(1)"})
        EXPECT_NE(u.find(w), std::string::npos) << w;
    EXPECT_EQ(u.rfind("Usage: s5brokerctl [OPTIONS] COMMAND", 0), 0u);
}

TEST(Usage, PerVerb) {
    const std::string leases = usage(Command::Leases);
    EXPECT_EQ(leases.rfind("Usage: s5brokerctl [OPTIONS] leases\n", 0), 0u) << leases;
    for (const char* w : {"--no-legend", "--no-pager", "--json=", "-h, --help", "GENERATION"})
        EXPECT_NE(leases.find(w), std::string::npos) << w;
    for (const char* w : {"--server", "--echo", "--version", "monitor"})
        EXPECT_EQ(leases.find(w), std::string::npos) << w;

    const std::string assoc = usage(Command::Associate);
    EXPECT_EQ(assoc.rfind("Usage: s5brokerctl [OPTIONS] associate HOST PORT [--server ADDR:PORT] [--echo TEXT]\n", 0),
              0u)
        << assoc;
    EXPECT_NE(assoc.find("--echo TEXT"), std::string::npos);
    EXPECT_EQ(assoc.find("--no-pager"), std::string::npos);  // never paged
    EXPECT_EQ(usage(Command::Reload).find("--no-pager"), std::string::npos);
    EXPECT_NE(usage(Command::Reload).find("ExecReload="), std::string::npos);
    EXPECT_EQ(usage(Command::Route).rfind("Usage: s5brokerctl [OPTIONS] route HOST\n", 0), 0u);
    // Every line fits 80 columns.
    for (Command c : {Command::Status, Command::Servers, Command::Leases, Command::Associate, Command::Route,
                      Command::Reload, Command::Monitor}) {
        std::istringstream in(usage(c));
        for (std::string line; std::getline(in, line);) {
            if (line.rfind("Usage:", 0) != 0) {
                EXPECT_LE(line.size(), 80u) << line;
            }
        }
    }
    std::istringstream in(usage());
    for (std::string line; std::getline(in, line);) EXPECT_LE(line.size(), 80u) << line;
}

// ---- output conventions ------------------------------------------------------

Getenv env_of(std::map<std::string, std::string> vars) {
    auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
    return [shared](const char* name) -> const char* {
        auto it = shared->find(name);
        return it == shared->end() ? nullptr : it->second.c_str();
    };
}

TEST(Conventions, DumpJson) {
    json doc = json::array({json{{"id", "1"}, {"relay", endpoint_json({127, 0, 0, 1}, 9)}}});
    EXPECT_EQ(dump_json(doc, JsonMode::Short), R"([{"id":"1","relay":{"address":"127.0.0.1","port":9}}])"
                                               "\n");
    EXPECT_EQ(dump_json(doc, JsonMode::Pretty),
              "[\n  {\n    \"id\": \"1\",\n    \"relay\": {\n      \"address\": \"127.0.0.1\",\n"
              "      \"port\": 9\n    }\n  }\n]\n");
    // Invalid UTF-8 from the bus does not throw.
    EXPECT_NO_THROW(dump_json(json("\xff"), JsonMode::Short));
}

TEST(Conventions, Colors) {
    const auto term = env_of({{"TERM", "xterm"}});
    EXPECT_TRUE(colors_enabled(true, term));
    EXPECT_FALSE(colors_enabled(false, term));  // never off a terminal
    EXPECT_FALSE(colors_enabled(false, env_of({{"TERM", "xterm"}, {"SYSTEMD_COLORS", "1"}})));
    EXPECT_FALSE(colors_enabled(true, env_of({{"TERM", "xterm"}, {"NO_COLOR", "1"}})));
    EXPECT_FALSE(colors_enabled(true, env_of({{"TERM", "xterm"}, {"NO_COLOR", ""}})));
    for (const char* off : {"0", "no", "false", "off"})
        EXPECT_FALSE(colors_enabled(true, env_of({{"TERM", "xterm"}, {"SYSTEMD_COLORS", off}}))) << off;
    EXPECT_TRUE(colors_enabled(true, env_of({{"TERM", "xterm"}, {"SYSTEMD_COLORS", "256"}})));
    EXPECT_FALSE(colors_enabled(true, env_of({{"TERM", "dumb"}})));
    EXPECT_FALSE(colors_enabled(true, env_of({})));
}

TEST(Conventions, Width) {
    EXPECT_EQ(terminal_width(env_of({}), 132), 132u);
    EXPECT_EQ(terminal_width(env_of({}), 0), 80u);
    EXPECT_EQ(terminal_width(env_of({{"COLUMNS", "50"}}), 132), 50u);
    EXPECT_EQ(terminal_width(env_of({{"COLUMNS", "0"}}), 132), 132u);
    EXPECT_EQ(terminal_width(env_of({{"COLUMNS", "wide"}}), 0), 80u);
}

TEST(Conventions, Pager) {
    const auto term = env_of({{"TERM", "xterm"}});
    auto p = pager_for(true, true, term);
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->argv.empty());  // pager, less, more
    EXPECT_EQ(p->less, "FRSXMK");
    EXPECT_FALSE(p->lesscharset);
    EXPECT_FALSE(pager_for(false, true, term));  // not a terminal
    EXPECT_FALSE(pager_for(true, false, term));  // --no-pager
    EXPECT_FALSE(pager_for(true, true, env_of({{"TERM", "dumb"}})));
    EXPECT_FALSE(pager_for(true, true, env_of({})));
    EXPECT_FALSE(pager_for(true, true, env_of({{"TERM", "xterm"}, {"PAGER", "cat"}})));
    EXPECT_FALSE(pager_for(true, true, env_of({{"TERM", "xterm"}, {"SYSTEMD_PAGER", ""}, {"PAGER", "most"}})));
    EXPECT_FALSE(pager_for(true, true, env_of({{"TERM", "xterm"}, {"SYSTEMD_PAGER", " cat "}})));
    p = pager_for(true, true, env_of({{"TERM", "xterm"}, {"SYSTEMD_PAGER", "less -S"}, {"PAGER", "most"}}));
    ASSERT_TRUE(p);
    EXPECT_EQ(p->argv, (std::vector<std::string>{"less", "-S"}));
    p = pager_for(true, true,
                  env_of({{"TERM", "xterm"}, {"PAGER", "most"}, {"SYSTEMD_LESS", "FRK"}, {"SYSTEMD_LESSCHARSET", "ascii"}}));
    ASSERT_TRUE(p);
    EXPECT_EQ(p->argv, (std::vector<std::string>{"most"}));
    EXPECT_EQ(p->less, "FRK");
    EXPECT_EQ(p->lesscharset, "ascii");
}

TEST(Conventions, SplitCommand) {
    EXPECT_EQ(split_command("  less  -R "), (std::vector<std::string>{"less", "-R"}));
    EXPECT_EQ(split_command("sh -c 'cat > \"/tmp/a b\"'"),
              (std::vector<std::string>{"sh", "-c", "cat > \"/tmp/a b\""}));
    EXPECT_EQ(split_command(R"(a\ b "c\"d" '')"), (std::vector<std::string>{"a b", "c\"d", ""}));
    EXPECT_TRUE(split_command(" \t").empty());
}

TEST(Conventions, BusFailure) {
    EXPECT_EQ(bus_failure("reload the configuration", "org.s5broker.Broker1.Error.InvalidArgs",
                          "configuration not applied: line 1\nunexpected end"),
              "Failed to reload the configuration: org.s5broker.Broker1.Error.InvalidArgs: configuration not "
              "applied: line 1\\x0aunexpected end");
    EXPECT_EQ(bus_failure("get property Servers", "org.example.Odd", ""),
              "Failed to get property Servers: org.example.Odd");
    EXPECT_EQ(bus_failure("x", "", "m"), "Failed to x: unknown error: m");
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
    Style no_legend;
    no_legend.legend = false;
    EXPECT_EQ(render_table({"A", "B"}, {{"1", "2"}}, no_legend), "1  2\n");
}

// No escape sequences, no line ending in a blank.
void expect_plain(const std::string& text) {
    EXPECT_EQ(text.find('\033'), std::string::npos) << text;
    EXPECT_EQ(text.find(" \n"), std::string::npos) << text;
}

// The width of the widest line, escape sequences not counted.
size_t widest(const std::string& text) {
    size_t w = 0, cur = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\033') {
            while (i < text.size() && text[i] != 'm') ++i;
        } else if (text[i] == '\n') {
            w = std::max(w, cur);
            cur = 0;
        } else {
            ++cur;
        }
    }
    return std::max(w, cur);
}

const std::string kLongError =
    "connect to 127.0.0.1:1081: connection refused, and then some more words so that it is long";

TEST(Render, Servers) {
    json servers = json::array({server("plain", "up", 2, ""), server("closed", "down", 0, "connection refused")});
    const std::string table = render_servers(servers);
    EXPECT_EQ(table,
              "NAME    ADDRESS    PORT  AUTH  STATE  POOL-IDLE  POOL-TARGET  LAST-ERROR\n"
              "plain   127.0.0.1  1080  none  up     2          2            -\n"
              "closed  127.0.0.1  1080  none  down   0          2            connection refused\n"
              "\n2 servers listed.\n");
    expect_plain(table);
    const std::string one = render_servers(json::array({server("plain", "up", 2, "")}));
    EXPECT_EQ(one.substr(one.find("\n\n")), "\n\n1 server listed.\n");
    EXPECT_EQ(render_servers(json::array()), "No servers configured.\n");

    // --no-legend: no header, no footer, nothing for no rows.
    Style no_legend;
    no_legend.legend = false;
    EXPECT_EQ(render_servers(servers, no_legend),
              "plain   127.0.0.1  1080  none  up    2  2  -\n"
              "closed  127.0.0.1  1080  none  down  0  2  connection refused\n");
    EXPECT_EQ(render_servers(json::array(), no_legend), "");
}

TEST(Render, TerminalWidthAndColours) {
    json servers = json::array({server("plain", "up", 2, ""), server("closed", "down", 0, kLongError)});
    // Off a terminal (width 0): nothing is cut, however long.
    const std::string full = render_servers(servers);
    EXPECT_NE(full.find(kLongError), std::string::npos) << full;
    EXPECT_GT(widest(full), 100u);

    // On a terminal: LAST-ERROR is cut to fit, the rest stays whole.
    Style term;
    term.width = 80;
    const std::string cut = render_servers(servers, term);
    EXPECT_LE(widest(cut), 80u) << cut;
    EXPECT_EQ(cut.find(kLongError), std::string::npos) << cut;
    EXPECT_NE(cut.find("closed  127.0.0.1  1080  none  down   0          2            connect to"), std::string::npos)
        << cut;
    expect_plain(cut);

    // Colours: headers underlined, states coloured; the text is the same.
    term.color = true;
    const std::string coloured = render_servers(servers, term);
    EXPECT_NE(coloured.find("\033[4mNAME"), std::string::npos) << coloured;
    EXPECT_NE(coloured.find("\033[32mup"), std::string::npos) << coloured;
    EXPECT_NE(coloured.find("\033[1;31mdown"), std::string::npos) << coloured;
    std::string stripped;
    for (size_t i = 0; i < coloured.size(); ++i) {
        if (coloured[i] == '\033')
            while (coloured[i] != 'm') ++i;
        else
            stripped += coloured[i];
    }
    // Padding may sit inside a colour: compare the words.
    std::istringstream a(stripped), b(cut);
    std::vector<std::string> wa, wb;
    for (std::string w; a >> w;) wa.push_back(w);
    for (std::string w; b >> w;) wb.push_back(w);
    EXPECT_EQ(wa, wb);

    // Leases and status follow the same rules.
    json lost{{"id", "9"},      {"path", "/org/s5broker/Broker1/lease/9"}, {"uid", 0},
              {"server", "x"},  {"server_path", "/org/s5broker/Broker1/server/x"},
              {"relay", endpoint_json({127, 0, 0, 1}, 1)},                 {"state", "lost"},
              {"generation", 3}, {"age_s", 5}};
    EXPECT_NE(render_leases(json::array({lost}), term).find("\033[1;31mlost"), std::string::npos);
    expect_plain(render_leases(json::array({lost})));
    json st{{"version", "0.1.0"}, {"lease_count", 0}, {"servers", servers}, {"statistics", json::object()}};
    const std::string status_full = render_status(st);
    EXPECT_NE(status_full.find("(" + kLongError + ")"), std::string::npos) << status_full;
    expect_plain(status_full);
    term.color = false;
    EXPECT_LE(widest(render_status(st, term)), 80u) << render_status(st, term);
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
           {"age_s", 75}};
    json pending = l;
    pending["id"] = "4";
    pending["server"] = nullptr;
    pending["state"] = "pending";
    pending["generation"] = 0;
    pending["age_s"] = 0;
    pending["relay"] = endpoint_json({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0);
    EXPECT_EQ(render_leases(json::array({l, pending})),
              "ID  UID   SERVER  RELAY            STATE    GENERATION  AGE\n"
              "3   1000  plain   127.0.0.1:40000  active   1           1min 15s\n"
              "4   1000  -       [::]:0           pending  0           0s\n"
              "\n2 leases listed.\n");
    EXPECT_EQ(render_leases(json::array()), "No leases.\n");
    Style no_legend;
    no_legend.legend = false;
    EXPECT_EQ(render_leases(json::array({l}), no_legend), "3  1000  plain  127.0.0.1:40000  active  1  1min 15s\n");
    EXPECT_EQ(render_leases(json::array(), no_legend), "");
    // An age the broker could not tell.
    l["age_s"] = nullptr;
    EXPECT_NE(render_leases(json::array({l})).find("active  1           -\n"), std::string::npos)
        << render_leases(json::array({l}));
}

TEST(Render, Age) {
    EXPECT_EQ(format_age(0), "0s");
    EXPECT_EQ(format_age(-3), "0s");
    EXPECT_EQ(format_age(59), "59s");
    EXPECT_EQ(format_age(60), "1min");
    EXPECT_EQ(format_age(65), "1min 5s");
    EXPECT_EQ(format_age(3600), "1h");
    EXPECT_EQ(format_age(3 * 3600 + 125), "3h 2min");
    EXPECT_EQ(format_age(86400 * 2 + 3600 * 5 + 7), "2d 5h");
}

TEST(Render, Status) {
    json st{{"version", "0.1.0"},
            {"lease_count", 1},
            {"servers", json::array({server("plain", "up", 2, ""), server("closed", "down", 0, "refused")})},
            {"statistics", json{{"associations_made", 5}, {"renewals", 0}}}};
    const std::string expected =
        "Version:      0.1.0\n"
        "Lease count:  1\n"
        "\nServers:\n"
        "  plain   up    pool 2/2  127.0.0.1:1080\n"
        "  closed  down  pool 0/2  127.0.0.1:1080  (refused)\n"
        "\nStatistics:\n"
        "  associations_made  5\n"
        "  renewals           0\n";
    EXPECT_EQ(render_status(st), expected);
    // Nothing there to leave out.
    Style no_legend;
    no_legend.legend = false;
    EXPECT_EQ(render_status(st, no_legend), expected);
    st["servers"] = json::array();
    st["statistics"] = json::object();
    EXPECT_EQ(render_status(st),
              "Version:      0.1.0\nLease count:  1\n\nServers:\n  none configured\n\nStatistics:\n  none\n");
}

TEST(Render, RouteAndAssociate) {
    json route{{"destination", "::1"}, {"server", "plain6"}, {"address", "::1"}, {"port", 1080}};
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

TEST(Render, OneLine) { EXPECT_EQ(one_line("a\nb\tc\r"), "a\\x0ab\\x09c\\x0d"); }

}  // namespace
