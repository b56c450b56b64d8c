#include "ctl_format.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace s5ctl {
namespace {

struct CommandName {
    const char* name;
    Command command;
    size_t operands;
};

constexpr CommandName kCommands[] = {
    {"status", Command::Status, 0},       {"servers", Command::Servers, 0}, {"leases", Command::Leases, 0},
    {"associate", Command::Associate, 2}, {"route", Command::Route, 1},     {"reload", Command::Reload, 0},
    {"monitor", Command::Monitor, 0},
};

const char* operand_usage(Command c) {
    switch (c) {
        case Command::Associate: return "associate HOST PORT [--server ADDR:PORT] [--echo TEXT]";
        case Command::Route: return "route HOST";
        default: return nullptr;
    }
}

ParseResult usage_error(std::string why) {
    ParseResult r;
    r.error = std::move(why);
    return r;
}

std::optional<s5::wire::Endpoint> parse_host(const std::string& text) {
    // Brackets are for ADDR:PORT; a bare HOST is the address alone.
    return s5::wire::Endpoint::parse_ip(text);
}

bool needs_quotes(const std::string& s) {
    if (s.empty()) return true;
    for (unsigned char c : s)
        if (c <= ' ' || c == '"' || c == 0x7f) return true;
    return false;
}

std::string rows_to_text(const std::vector<std::vector<std::string>>& rows, const std::string& indent) {
    std::vector<size_t> width;
    for (const auto& r : rows)
        for (size_t i = 0; i < r.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], r[i].size());
        }
    std::string out;
    for (const auto& r : rows) {
        std::string line = indent;
        for (size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line.append(width[i] - r[i].size() + 2, ' ');
        }
        while (line.size() > indent.size() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    return out;
}

std::string str(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "-";
    return v.dump();
}

std::string or_dash(const json& v) {
    std::string s = v.is_string() ? v.get<std::string>() : (v.is_null() ? "" : v.dump());
    return s.empty() ? "-" : one_line(s);
}

std::string pool(const json& server) {
    return str(server.value("pool_idle", json())) + "/" + str(server.value("pool_target", json()));
}

}  // namespace

// ---- Command line ----------------------------------------------------------

ParseResult parse_args(const std::vector<std::string>& argv) {
    Args a;
    std::vector<std::string> positional;
    std::optional<std::string> server_text;
    bool options_done = false;
    for (size_t i = 0; i < argv.size(); ++i) {
        const std::string& arg = argv[i];
        if (options_done || arg.size() < 2 || arg[0] != '-') {
            positional.push_back(arg);
            continue;
        }
        if (arg == "--") {
            options_done = true;
            continue;
        }
        if (arg == "-h") {
            a.help = true;
            continue;
        }
        if (arg.rfind("--", 0) != 0) return usage_error("unknown option '" + arg + "'");
        std::string name = arg, value;
        bool has_value = false;
        if (auto eq = arg.find('='); eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
            has_value = true;
        }
        if (name == "--json" || name == "--help" || name == "--version") {
            if (has_value) return usage_error("option " + name + " takes no value");
            if (name == "--json") a.json = true;
            if (name == "--help") a.help = true;
            if (name == "--version") a.version = true;
            continue;
        }
        if (name != "--bus-address" && name != "--server" && name != "--echo")
            return usage_error("unknown option '" + name + "'");
        if (!has_value) {
            if (i + 1 >= argv.size()) return usage_error("option " + name + " needs a value");
            value = argv[++i];
        }
        if (name == "--bus-address") {
            if (value.empty()) return usage_error("option --bus-address needs a non-empty address");
            a.bus_address = value;
        } else if (name == "--server") {
            server_text = value;
        } else {
            a.echo = value;
        }
    }
    if (a.help || a.version) return {a, {}};

    if (positional.empty()) return usage_error("missing command");
    const CommandName* cmd = nullptr;
    for (const auto& c : kCommands)
        if (positional[0] == c.name) cmd = &c;
    if (!cmd) return usage_error("unknown command '" + one_line(positional[0]) + "'");
    a.command = cmd->command;
    const std::vector<std::string> operands(positional.begin() + 1, positional.end());
    if (operands.size() != cmd->operands) {
        if (const char* u = operand_usage(cmd->command))
            return usage_error(std::string("usage: ") + kProgram + " " + u);
        return usage_error(std::string("command ") + cmd->name + " takes no arguments");
    }
    if (cmd->command != Command::Associate && (server_text || a.echo))
        return usage_error(std::string("option ") + (server_text ? "--server" : "--echo") +
                           " is only for the associate command");

    if (cmd->command == Command::Associate || cmd->command == Command::Route) {
        auto host = parse_host(operands[0]);
        if (!host) return usage_error("invalid HOST '" + one_line(operands[0]) + "': not an IPv4 or IPv6 address");
        a.destination = *host;
    }
    if (cmd->command == Command::Associate) {
        // Port 0 only selects the route; an echo needs a real destination.
        auto port = parse_port(operands[1], !a.echo);
        if (!port)
            return usage_error("invalid PORT '" + one_line(operands[1]) + "': must be " + (a.echo ? "1" : "0") +
                               "..65535");
        a.destination.port = *port;
        if (server_text) {
            a.server = parse_host_port(*server_text);
            if (!a.server)
                return usage_error("invalid --server '" + one_line(*server_text) +
                                   "': expected ADDR:PORT or [IPV6]:PORT with an IP address");
        }
    }
    return {a, {}};
}

std::string usage() {
    return std::string("Usage: ") + kProgram + R"( [OPTIONS] COMMAND [ARGS]

Query and control s5brokerd (org.s5broker.Broker1) over D-Bus.

Commands:
  status                   Version, servers with state and pool, lease count,
                           statistics
  servers                  List the configured SOCKS5 servers
  leases                   List the leases the broker has handed out
  associate HOST PORT      Make a UDP association for HOST:PORT through
                           libs5client and print its rendezvous; it is
                           released when the command exits
    --server ADDR:PORT     Use this configured server ([IPV6]:PORT) instead
                           of the route for HOST
    --echo TEXT            Send TEXT to HOST:PORT through the association and
                           print the reply (waits 3 s)
  route HOST               Which server an association for HOST would use
  reload                   Make s5brokerd re-read its configuration
  monitor                  Print lease and server events until interrupted

Options:
  --json                   JSON output (monitor: one object per line)
  --bus-address ADDRESS    D-Bus address of the broker's bus (default:
                           $DBUS_SYSTEM_BUS_ADDRESS, else the system bus)
  -h, --help               Show this help
  --version                Show the version

HOST and ADDR are IP addresses (no host names). Exit status: 0 success,
1 failure, 2 usage error.
)";
}

// ---- Addresses -------------------------------------------------------------

std::optional<uint16_t> parse_port(std::string_view text, bool allow_zero) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    unsigned v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v > 65535) return std::nullopt;
    if (v == 0 && !allow_zero) return std::nullopt;
    return static_cast<uint16_t>(v);
}

std::optional<s5::wire::Endpoint> parse_host_port(std::string_view text) {
    std::string_view host, port;
    if (!text.empty() && text[0] == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        if (host.find(':') == std::string_view::npos) return std::nullopt;  // [v4]:port is not a thing
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs brackets
    }
    auto p = parse_port(port, false);
    if (!p) return std::nullopt;
    return s5::wire::Endpoint::parse_ip(host, *p);
}

std::string format_ip(const std::vector<uint8_t>& bytes) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (bytes.size() == 4) {
        in_addr a;
        std::memcpy(&a, bytes.data(), 4);
        inet_ntop(AF_INET, &a, buf, sizeof buf);
    } else if (bytes.size() == 16) {
        in6_addr a;
        std::memcpy(&a, bytes.data(), 16);
        inet_ntop(AF_INET6, &a, buf, sizeof buf);
    } else {
        return "?" + std::to_string(bytes.size());
    }
    return buf;
}

std::string format_ip(const s5::wire::Endpoint& ep) { return format_ip(ep.ip_bytes()); }

json endpoint_json(const std::vector<uint8_t>& bytes, uint16_t port) {
    json j;
    j["address"] = format_ip(bytes);
    j["port"] = port;
    return j;
}

json endpoint_json(const s5::wire::Endpoint& ep) { return endpoint_json(ep.ip_bytes(), ep.port); }

std::string format_endpoint(const json& ep) {
    if (!ep.is_object()) return "-";
    std::string addr = str(ep.value("address", json()));
    std::string port = str(ep.value("port", json()));
    if (addr.find(':') != std::string::npos) return "[" + addr + "]:" + port;
    return addr + ":" + port;
}

// ---- Object paths ----------------------------------------------------------

namespace {
std::string leaf_under(std::string_view path, const std::string& prefix) {
    if (path.size() <= prefix.size() || path.substr(0, prefix.size()) != prefix) return "";
    std::string_view rest = path.substr(prefix.size());
    if (rest.find('/') != std::string_view::npos) return "";
    return std::string(rest);
}
}  // namespace

std::string server_name_of(std::string_view path) { return leaf_under(path, std::string(kManagerPath) + "/server/"); }
std::string lease_id_of(std::string_view path) { return leaf_under(path, std::string(kManagerPath) + "/lease/"); }

std::string object_name(std::string_view path) {
    if (path == kManagerPath) return "manager";
    if (auto s = server_name_of(path); !s.empty()) return "server/" + s;
    if (auto l = lease_id_of(path); !l.empty()) return "lease/" + l;
    return std::string(path);
}

// ---- Rendering -------------------------------------------------------------

std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::vector<std::string>> all;
    all.reserve(rows.size() + 1);
    all.push_back(header);
    all.insert(all.end(), rows.begin(), rows.end());
    return rows_to_text(all, "");
}

std::string render_servers(const json& servers) {
    if (!servers.is_array() || servers.empty()) return "No servers configured.\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : servers)
        rows.push_back({str(s.value("name", json())), str(s.value("address", json())), str(s.value("port", json())),
                        str(s.value("auth", json())), str(s.value("state", json())), pool(s),
                        or_dash(s.value("last_error", json()))});
    return render_table({"NAME", "ADDRESS", "PORT", "AUTH", "STATE", "IDLE/TARGET", "LAST-ERROR"}, rows);
}

std::string render_leases(const json& leases) {
    if (!leases.is_array() || leases.empty()) return "No leases.\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& l : leases) {
        const json age = l.value("age_s", json());
        rows.push_back({str(l.value("id", json())), str(l.value("uid", json())), or_dash(l.value("server", json())),
                        format_endpoint(l.value("relay", json())), str(l.value("state", json())),
                        str(l.value("generation", json())), age.is_number() ? age.dump() + "s" : "-"});
    }
    return render_table({"ID", "UID", "SERVER", "RELAY", "STATE", "GEN", "AGE"}, rows);
}

std::string render_status(const json& status) {
    std::string out = rows_to_text(
        {{"Version:", str(status.value("version", json()))}, {"Leases:", str(status.value("lease_count", json()))}},
        "");
    out += "\nServers:\n";
    const json servers = status.value("servers", json::array());
    if (servers.empty()) {
        out += "  none configured\n";
    } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& s : servers) {
            json ep = {{"address", s.value("address", json())}, {"port", s.value("port", json())}};
            std::vector<std::string> row{str(s.value("name", json())), str(s.value("state", json())), "pool " + pool(s),
                                         format_endpoint(ep)};
            if (std::string e = or_dash(s.value("last_error", json())); e != "-") row.push_back("(" + e + ")");
            rows.push_back(std::move(row));
        }
        out += rows_to_text(rows, "  ");
    }
    out += "\nStatistics:\n";
    const json stats = status.value("statistics", json::object());
    if (stats.empty()) {
        out += "  none\n";
    } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& [k, v] : stats.items()) rows.push_back({k, str(v)});
        out += rows_to_text(rows, "  ");
    }
    return out;
}

std::string render_route(const json& route) {
    json ep = {{"address", route.value("address", json())}, {"port", route.value("port", json())}};
    return rows_to_text({{"Destination:", str(route.value("destination", json()))},
                         {"Server:", str(route.value("name", json()))},
                         {"Address:", format_endpoint(ep)}},
                        "");
}

std::string render_associate(const json& r) {
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"Rendezvous:", format_endpoint(r.value("rendezvous", json()))});
    const json lease = r.value("lease", json());
    if (!lease.is_null()) {
        std::string l = str(lease);
        if (const json s = r.value("lease_server", json()); !s.is_null()) l += " (server " + str(s) + ")";
        rows.push_back({"Lease:", l});
    }
    if (const json echo = r.value("echo", json()); echo.is_object()) {
        rows.push_back({"Sent:", render_value(echo.value("sent", json())) + " to " +
                                     format_endpoint(r.value("destination", json()))});
        char rtt[32];
        std::snprintf(rtt, sizeof rtt, "%.1f ms", echo.value("rtt_ms", 0.0));
        rows.push_back({"Reply:", render_value(echo.value("reply", json())) + " from " +
                                      format_endpoint(echo.value("from", json())) + " in " + rtt});
    }
    return rows_to_text(rows, "");
}

std::string render_value(const json& v) {
    if (v.is_string()) {
        const std::string s = v.get<std::string>();
        return needs_quotes(s) ? json(s).dump(-1, ' ', false, json::error_handler_t::replace) : s;
    }
    if (v.is_null()) return "-";
    if (v.is_object()) {
        if (v.size() == 2 && v.contains("address") && v.contains("port")) return format_endpoint(v);
        std::string out = "{";
        for (const auto& [k, x] : v.items()) out += (out.size() > 1 ? ", " : "") + k + "=" + render_value(x);
        return out + "}";
    }
    if (v.is_array()) {
        std::string out = "[";
        for (const auto& x : v) out += (out.size() > 1 ? ", " : "") + render_value(x);
        return out + "]";
    }
    return v.dump();
}

std::string render_event(const json& e) {
    std::string time = str(e.value("time", json()));
    if (auto t = time.find('T'); t != std::string::npos) time = time.substr(t + 1);
    const std::string event = str(e.value("event", json()));
    std::string line = time + " " + str(e.value("object", json())) + " " + event;
    auto add = [&](const std::string& k, const json& v) { line += " " + k + "=" + render_value(v); };
    if (event == "PropertiesChanged") {
        const json changed = e.value("changed", json::object());
        const json invalidated = e.value("invalidated", json::array());
        for (const auto& [k, v] : changed.items()) add(k, v);
        for (const auto& k : invalidated) line += " " + str(k) + "=<invalidated>";
    } else if (event == "Renewed") {
        add("generation", e.value("generation", json()));
        add("relay", e.value("relay", json()));
    } else if (event == "Lost") {
        add("error", e.value("error", json()));
    } else if (event == "BrokerStarted" || event == "BrokerStopped") {
        add("owner", e.value("owner", json()));
    } else if (e.contains("args")) {
        add("args", e["args"]);
    }
    return one_line(line);
}

std::string one_line(std::string text) {
    for (char& c : text)
        if (static_cast<unsigned char>(c) < ' ' || c == 0x7f) c = ' ';
    return text;
}

}  // namespace s5ctl
