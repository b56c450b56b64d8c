#include "ctl_format.hpp"

#include "one_line.hpp"

#include <arpa/inet.h>
#include <libsmartcols/libsmartcols.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace s5ctl {
namespace {

// ---- Verbs -----------------------------------------------------------------

// The options a verb's help lists besides --bus-address and --help.
enum VerbOptions : unsigned {
    kOptJson = 1u << 0,
    kOptPager = 1u << 1,
    kOptLegend = 1u << 2,
    kOptAssociate = 1u << 3,  // --server, --echo
};

struct Verb {
    const char* name;
    Command command;
    size_t operands;
    const char* operand_usage;  // after the verb's name
    const char* summary;        // the global --help's line(s), wrapped at 50
    const char* description;    // VERB --help's paragraph, wrapped at 76
    const char* json;           // what --json prints
    unsigned options;
};

constexpr Verb kVerbs[] = {
    {"status", Command::Status, 0, "",
     "Version, servers with state and pool, lease\n"
     "count, statistics",
     "Show the broker's version, its number of leases, one line per server\n"
     "(name, state, idle and target pool size, address and its last error, if\n"
     "any) and the statistics counters.",
     "one status object", kOptJson | kOptPager},
    {"servers", Command::Servers, 0, "", "List the configured SOCKS5 servers",
     "List the configured SOCKS5 servers: NAME, ADDRESS, PORT, AUTH, STATE\n"
     "(up, connecting or down), POOL-IDLE, POOL-TARGET and LAST-ERROR.",
     "an array of server objects", kOptJson | kOptPager | kOptLegend},
    {"leases", Command::Leases, 0, "", "List the leases the broker has handed out",
     "List the leases the broker has handed out: ID, UID (the owner), SERVER\n"
     "(- while pending), RELAY, STATE (pending, active, renewing or lost),\n"
     "GENERATION and AGE (since the broker granted the lease).",
     "an array of lease objects", kOptJson | kOptPager | kOptLegend},
    {"associate", Command::Associate, 2, " HOST PORT [--server ADDR:PORT] [--echo TEXT]",
     "Make a UDP association for HOST:PORT through\n"
     "libs5client and print its rendezvous; it is\n"
     "released when the command exits",
     "Make a UDP association towards HOST:PORT through libs5client, the way\n"
     "every application does, and print the rendezvous (the relay to send to)\n"
     "and the broker's lease. The association is released when the command\n"
     "exits. PORT 0 only selects the route.",
     "one associate object", kOptJson | kOptAssociate},
    {"route", Command::Route, 1, " HOST", "Which server an association for HOST would use",
     "Show which server an association for HOST would use (the broker's\n"
     "GetServer method).",
     "one route object", kOptJson | kOptPager},
    {"reload", Command::Reload, 0, "", "Make s5brokerd re-read its configuration",
     "Make s5brokerd re-read its configuration file (the Reload method) and\n"
     "wait for its answer. Prints nothing on success. If the broker refuses\n"
     "the new file, it keeps the running configuration and this command\n"
     "prints the broker's reason and exits with status 1: fit for the unit's\n"
     "ExecReload=.",
     "{\"reloaded\": true}", kOptJson},
    {"monitor", Command::Monitor, 0, "", "Print lease and server events until interrupted",
     "Print one line per event of the broker (properties changing, leases\n"
     "renewed or lost, the broker starting or stopping) until SIGINT or\n"
     "SIGTERM. Never paged.",
     "one event object per line\n(--json=pretty: indented objects)", kOptJson | kOptLegend},
};

const Verb* find_verb(std::string_view name) {
    for (const auto& v : kVerbs)
        if (name == v.name) return &v;
    return nullptr;
}

const Verb& verb_of(Command c) {
    for (const auto& v : kVerbs)
        if (v.command == c) return v;
    return kVerbs[0];
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

std::string str(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "-";
    return v.dump();
}

std::string or_dash(const json& v) {
    std::string s = v.is_string() ? v.get<std::string>() : (v.is_null() ? "" : v.dump());
    return s.empty() ? "-" : one_line(s);
}

bool is_false(std::string_view v) {
    for (const char* f : {"0", "no", "n", "false", "f", "off"})
        if (v == f) return true;
    return false;
}

bool terminal_is_dumb(const Getenv& env) {
    const char* term = env("TERM");
    return !term || std::string_view(term) == "dumb";
}

// ---- Tables (libsmartcols) -------------------------------------------------

constexpr const char* kUnderline = "\033[4m";
constexpr const char* kGreen = "\033[32m";
constexpr const char* kYellow = "\033[33m";
constexpr const char* kRed = "\033[1;31m";

struct Column {
    std::string header;
    bool truncate = false;  // may be cut to fit style.width
};

struct Cell {
    std::string text;
    const char* color = nullptr;
    Cell(std::string t, const char* c = nullptr) : text(std::move(t)), color(c) {}
    Cell(const char* t) : text(t) {}
};

using Row = std::vector<Cell>;

struct TableDeleter {
    void operator()(libscols_table* t) const { scols_unref_table(t); }
};

void check(int rc) {
    if (rc == -ENOMEM) throw std::bad_alloc();
}

// Drops blanks at the ends of lines, indents each line, ends with a newline.
std::string tidy(const std::string& text, const std::string& indent) {
    std::string out;
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(start, end - start);
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line.empty() ? "\n" : indent + line + "\n";
        start = end + 1;
    }
    return out;
}

// The columns and rows as libsmartcols prints them: two spaces between
// columns, colours and truncation only if `style` asks for them.
std::string scols(const std::vector<Column>& columns, const std::vector<Row>& rows, bool headings, const Style& style,
                  const std::string& indent = "") {
    std::unique_ptr<libscols_table, TableDeleter> tb(scols_new_table());
    if (!tb) throw std::bad_alloc();
    check(scols_table_set_column_separator(tb.get(), "  "));
    check(scols_table_enable_noheadings(tb.get(), !headings));
    check(scols_table_enable_colors(tb.get(), style.color));
    const bool fit = style.width > indent.size();
    if (fit) {
        check(scols_table_set_termforce(tb.get(), SCOLS_TERMFORCE_ALWAYS));
        check(scols_table_set_termwidth(tb.get(), style.width - indent.size()));
    } else {
        check(scols_table_set_termforce(tb.get(), SCOLS_TERMFORCE_NEVER));
    }
    for (const auto& c : columns) {
        // Without headings, a header must not widen its column either.
        libscols_column* cl =
            scols_table_new_column(tb.get(), headings ? c.header.c_str() : "", 0, c.truncate ? SCOLS_FL_TRUNC : 0);
        if (!cl) throw std::bad_alloc();
        if (style.color) check(scols_cell_set_color(scols_column_get_header(cl), kUnderline));
    }
    for (const auto& r : rows) {
        libscols_line* ln = scols_table_new_line(tb.get(), nullptr);
        if (!ln) throw std::bad_alloc();
        for (size_t i = 0; i < r.size() && i < columns.size(); ++i) {
            check(scols_line_set_data(ln, i, r[i].text.c_str()));
            if (style.color && r[i].color) check(scols_cell_set_color(scols_line_get_cell(ln, i), r[i].color));
        }
    }
    char* data = nullptr;
    if (scols_print_table_to_string(tb.get(), &data) != 0 || !data) {
        std::free(data);
        throw std::bad_alloc();
    }
    std::string text(data);
    std::free(data);
    return tidy(text, indent);
}

// "Label:  value" lines.
std::string key_values(const std::vector<std::pair<std::string, std::string>>& kv, const std::string& indent = "") {
    std::vector<Row> rows;
    for (const auto& [k, v] : kv) rows.push_back({Cell(k), Cell(v)});
    return scols({{""}, {""}}, rows, false, Style{}, indent);
}

// "No leases." or the table and "\n3 leases listed."; with --no-legend
// neither header nor footer, and nothing at all for no rows.
std::string list(const std::vector<Column>& columns, const std::vector<Row>& rows, const Style& style,
                 const char* singular, const char* plural, const char* none) {
    if (rows.empty()) return style.legend ? std::string(none) + "\n" : "";
    std::string out = scols(columns, rows, style.legend, style);
    if (style.legend)
        out += "\n" + std::to_string(rows.size()) + " " + (rows.size() == 1 ? singular : plural) + " listed.\n";
    return out;
}

const char* server_state_color(const std::string& state) {
    if (state == "up") return kGreen;
    if (state == "connecting") return kYellow;
    if (state == "down") return kRed;
    return nullptr;
}

const char* lease_state_color(const std::string& state) {
    if (state == "active") return kGreen;
    if (state == "pending" || state == "renewing") return kYellow;
    if (state == "lost") return kRed;
    return nullptr;
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
        if (arg[1] != '-') {
            // Short options, also bundled: -h, -j, -hj.
            for (char c : arg.substr(1)) {
                if (c == 'h')
                    a.help = true;
                else if (c == 'j')
                    a.json = JsonArg::Auto;
                else
                    return usage_error(std::string("unknown option '-") + c + "'");
            }
            continue;
        }
        std::string name = arg, value;
        bool has_value = false;
        if (auto eq = arg.find('='); eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
            has_value = true;
        }
        if (name == "--json") {
            // A value only after "=": a bare --json is the default mode (the
            // next word is the command or an operand).
            if (!has_value)
                a.json = JsonArg::Bare;
            else if (value == "pretty")
                a.json = JsonArg::Pretty;
            else if (value == "short")
                a.json = JsonArg::Short;
            else if (value == "off")
                a.json = JsonArg::None;
            else if (value == "help")
                a.json_help = true;
            else
                return usage_error("invalid --json mode '" + one_line(value) + "': expected pretty, short or off");
            continue;
        }
        if (name == "--help" || name == "--version" || name == "--no-pager" || name == "--no-legend") {
            if (has_value) return usage_error("option " + name + " takes no value");
            if (name == "--help") a.help = true;
            if (name == "--version") a.version = true;
            if (name == "--no-pager") a.pager = false;
            if (name == "--no-legend") a.legend = false;
            continue;
        }
        if (name != "--bus-address" && name != "--server" && name != "--echo")
            return usage_error("unknown option '" + one_line(name) + "'");
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
    if (a.json_help || a.version) return {a, {}};

    if (positional.empty()) {
        if (a.help) return {a, {}};
        return usage_error("missing command");
    }
    const Verb* verb = find_verb(positional[0]);
    if (!verb) return usage_error("unknown command '" + one_line(positional[0]) + "'");
    a.command = verb->command;
    // VERB --help: the verb's usage, whatever else is on the line.
    if (a.help) return {a, {}};
    const std::vector<std::string> operands(positional.begin() + 1, positional.end());
    if (operands.size() != verb->operands) {
        if (verb->operands > 0)
            return usage_error(std::string("usage: ") + kProgram + " " + verb->name + verb->operand_usage);
        return usage_error(std::string("command ") + verb->name + " takes no arguments");
    }
    if (verb->command != Command::Associate && (server_text || a.echo))
        return usage_error(std::string("option ") + (server_text ? "--server" : "--echo") +
                           " is only for the associate command");

    if (verb->command == Command::Associate || verb->command == Command::Route) {
        auto host = parse_host(operands[0]);
        if (!host) return usage_error("invalid HOST '" + one_line(operands[0]) + "': not an IPv4 or IPv6 address");
        a.destination = *host;
    }
    if (verb->command == Command::Associate) {
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

namespace {

// Two columns: the term padded to 27, the text; continuation lines indented.
std::string help_item(const std::string& term, const std::string& text) {
    std::string out = "  " + term;
    out += term.size() < 25 ? std::string(25 - term.size(), ' ') : "\n" + std::string(27, ' ');
    for (char c : text) {
        out += c;
        if (c == '\n') out += std::string(27, ' ');
    }
    return out + "\n";
}

constexpr const char* kBusAddressHelp =
    "D-Bus address of the broker's bus (default:\n"
    "$DBUS_SYSTEM_BUS_ADDRESS, else the system bus)";

}  // namespace

std::string usage() {
    std::string out = std::string("Usage: ") + kProgram + " [OPTIONS] COMMAND [ARGS]\n" +
                      "       " + kProgram + " COMMAND --help\n\n" +
                      "Query and control s5brokerd (org.s5broker.Broker1) over D-Bus.\n\nCommands:\n";
    for (const auto& v : kVerbs) {
        std::string term = std::string(v.name) + (v.command == Command::Associate ? " HOST PORT" : v.operand_usage);
        out += help_item(term, v.summary);
        if (v.command == Command::Associate) {
            out += help_item("  --server ADDR:PORT",
                             "Use this configured server ([IPV6]:PORT) instead\n"
                             "of the route for HOST");
            out += help_item("  --echo TEXT",
                             "Send TEXT to HOST:PORT through the association and\n"
                             "print the reply (waits 3 s)");
        }
    }
    out += "\nOptions:\n";
    out += help_item("--json=pretty|short|off",
                     "JSON output; --json alone is pretty (monitor: one\n"
                     "object per line); --json=help lists the modes");
    out += help_item("-j", "--json=pretty on a terminal, else --json=short");
    out += help_item("--no-pager", "Do not pipe the output into a pager");
    out += help_item("--no-legend", "No column headers and footers (monitor: no\nbanner)");
    out += help_item("--bus-address ADDRESS", kBusAddressHelp);
    out += help_item("-h, --help", "Show this help, or COMMAND's");
    out += help_item("--version", "Show the version");
    out += std::string("\nHOST and ADDR are IP addresses (no host names). Output to a terminal\n") +
           "goes through a pager ($SYSTEMD_PAGER, $PAGER, less) and has colours\n" +
           "(not with NO_COLOR or SYSTEMD_COLORS=0). Exit status: 0 success,\n" +
           "1 failure, 2 usage error. See s5brokerctl(1).\n";
    return out;
}

std::string usage(Command command) {
    const Verb& v = verb_of(command);
    std::string out = std::string("Usage: ") + kProgram + " [OPTIONS] " + v.name + v.operand_usage + "\n\n" +
                      v.description + "\n\nOptions:\n";
    if (v.options & kOptAssociate) {
        out += help_item("--server ADDR:PORT",
                         "Use this configured server ([IPV6]:PORT) instead\n"
                         "of the route for HOST");
        out += help_item("--echo TEXT",
                         "Also send TEXT to HOST:PORT through the\n"
                         "association and print the reply (waits 3 s)");
    }
    if (v.options & kOptJson) {
        out += help_item("--json=pretty|short|off", std::string("JSON output: ") + v.json);
        out += help_item("-j", "--json=pretty on a terminal, else --json=short");
    }
    if (v.options & kOptPager) out += help_item("--no-pager", "Do not pipe the output into a pager");
    if (v.options & kOptLegend)
        out += help_item("--no-legend", command == Command::Monitor ? "Do not print the banner line"
                                                                    : "No column headers and no footer");
    out += help_item("--bus-address ADDRESS", kBusAddressHelp);
    out += help_item("-h, --help", "Show this help");
    return out + "\nSee s5brokerctl(1).\n";
}

// ---- Output conventions ----------------------------------------------------

JsonMode json_mode(const Args& args, bool stdout_is_tty) {
    switch (args.json) {
        case JsonArg::None: return JsonMode::Off;
        case JsonArg::Pretty: return JsonMode::Pretty;
        case JsonArg::Short: return JsonMode::Short;
        case JsonArg::Auto: return stdout_is_tty ? JsonMode::Pretty : JsonMode::Short;
        case JsonArg::Bare: return args.command == Command::Monitor ? JsonMode::Short : JsonMode::Pretty;
    }
    return JsonMode::Off;
}

std::string dump_json(const json& doc, JsonMode mode) {
    return doc.dump(mode == JsonMode::Pretty ? 2 : -1, ' ', false, json::error_handler_t::replace) + "\n";
}

bool colors_enabled(bool stdout_is_tty, const Getenv& env) {
    if (!stdout_is_tty || env("NO_COLOR") || terminal_is_dumb(env)) return false;
    const char* sc = env("SYSTEMD_COLORS");
    return !(sc && is_false(sc));
}

unsigned terminal_width(const Getenv& env, unsigned ioctl_columns) {
    if (const char* c = env("COLUMNS")) {
        std::string_view s(c);
        unsigned v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec == std::errc() && end == s.data() + s.size() && v > 0) return v;
    }
    return ioctl_columns ? ioctl_columns : 80;
}

std::optional<PagerChoice> pager_for(bool stdout_is_tty, bool pager_allowed, const Getenv& env) {
    if (!stdout_is_tty || !pager_allowed || terminal_is_dumb(env)) return std::nullopt;
    const char* p = env("SYSTEMD_PAGER");
    if (!p) p = env("PAGER");
    PagerChoice c;
    if (p) {
        c.argv = split_command(p);
        if (c.argv.empty() || (c.argv.size() == 1 && c.argv[0] == "cat")) return std::nullopt;
    }
    const char* less = env("SYSTEMD_LESS");
    c.less = less ? less : "FRSXMK";
    if (const char* cs = env("SYSTEMD_LESSCHARSET")) c.lesscharset = cs;
    return c;
}

std::vector<std::string> split_command(std::string_view command) {
    std::vector<std::string> words;
    std::string word;
    bool in_word = false;
    char quote = 0;
    for (size_t i = 0; i < command.size(); ++i) {
        const char c = command[i];
        if (quote) {
            if (c == quote)
                quote = 0;
            else if (c == '\\' && quote == '"' && i + 1 < command.size())
                word += command[++i];
            else
                word += c;
        } else if (c == ' ' || c == '\t' || c == '\n') {
            if (in_word) words.push_back(std::move(word));
            word.clear();
            in_word = false;
        } else {
            in_word = true;
            if (c == '\'' || c == '"')
                quote = c;
            else if (c == '\\' && i + 1 < command.size())
                word += command[++i];
            else
                word += c;
        }
    }
    if (in_word) words.push_back(std::move(word));
    return words;
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

std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                         const Style& style) {
    std::vector<Column> columns;
    for (const auto& h : header) columns.push_back({h, false});
    if (!columns.empty()) columns.back().truncate = true;
    std::vector<Row> cells;
    for (const auto& r : rows) {
        Row row;
        for (const auto& c : r) row.emplace_back(c);
        cells.push_back(std::move(row));
    }
    return scols(columns, cells, style.legend, style);
}

std::string render_servers(const json& servers, const Style& style) {
    std::vector<Row> rows;
    if (servers.is_array())
        for (const auto& s : servers) {
            const std::string state = str(s.value("state", json()));
            rows.push_back({str(s.value("name", json())), str(s.value("address", json())),
                            str(s.value("port", json())), str(s.value("auth", json())),
                            Cell(state, server_state_color(state)), str(s.value("pool_idle", json())),
                            str(s.value("pool_target", json())), or_dash(s.value("last_error", json()))});
        }
    return list({{"NAME"},
                 {"ADDRESS"},
                 {"PORT"},
                 {"AUTH"},
                 {"STATE"},
                 {"POOL-IDLE"},
                 {"POOL-TARGET"},
                 {"LAST-ERROR", true}},
                rows, style, "server", "servers", "No servers configured.");
}

std::string format_age(int64_t s) {
    if (s < 0) s = 0;
    auto two = [](int64_t big, const char* bu, int64_t small, const char* su) {
        std::string out = std::to_string(big) + bu;
        if (small) out += " " + std::to_string(small) + su;
        return out;
    };
    if (s < 60) return std::to_string(s) + "s";
    if (s < 3600) return two(s / 60, "min", s % 60, "s");
    if (s < 86400) return two(s / 3600, "h", s % 3600 / 60, "min");
    return two(s / 86400, "d", s % 86400 / 3600, "h");
}

std::string render_leases(const json& leases, const Style& style) {
    std::vector<Row> rows;
    if (leases.is_array())
        for (const auto& l : leases) {
            const json age = l.value("age_s", json());
            const std::string state = str(l.value("state", json()));
            rows.push_back({str(l.value("id", json())), str(l.value("uid", json())),
                            or_dash(l.value("server", json())), format_endpoint(l.value("relay", json())),
                            Cell(state, lease_state_color(state)), str(l.value("generation", json())),
                            age.is_number() ? format_age(age.get<int64_t>()) : "-"});
        }
    return list({{"ID"}, {"UID"}, {"SERVER", true}, {"RELAY"}, {"STATE"}, {"GENERATION"}, {"AGE"}}, rows, style,
                "lease", "leases", "No leases.");
}

std::string render_status(const json& status, const Style& style) {
    std::string out = key_values(
        {{"Version:", str(status.value("version", json()))}, {"Lease count:", str(status.value("lease_count", json()))}});
    out += "\nServers:\n";
    const json servers = status.value("servers", json::array());
    if (servers.empty()) {
        out += "  none configured\n";
    } else {
        std::vector<Row> rows;
        for (const auto& s : servers) {
            json ep = {{"address", s.value("address", json())}, {"port", s.value("port", json())}};
            const std::string state = str(s.value("state", json()));
            std::string e = or_dash(s.value("last_error", json()));
            rows.push_back({str(s.value("name", json())), Cell(state, server_state_color(state)),
                            "pool " + str(s.value("pool_idle", json())) + "/" + str(s.value("pool_target", json())),
                            format_endpoint(ep), e == "-" ? "" : "(" + e + ")"});
        }
        Style st = style;
        st.legend = false;
        out += scols({{"NAME"}, {"STATE"}, {"POOL"}, {"ADDRESS"}, {"LAST-ERROR", true}}, rows, false, st, "  ");
    }
    out += "\nStatistics:\n";
    const json stats = status.value("statistics", json::object());
    if (stats.empty()) {
        out += "  none\n";
    } else {
        std::vector<std::pair<std::string, std::string>> kv;
        for (const auto& [k, v] : stats.items()) kv.emplace_back(k, str(v));
        out += key_values(kv, "  ");
    }
    return out;
}

std::string render_route(const json& route, const Style&) {
    json ep = {{"address", route.value("address", json())}, {"port", route.value("port", json())}};
    return key_values({{"Destination:", str(route.value("destination", json()))},
                       {"Server:", str(route.value("server", json()))},
                       {"Address:", format_endpoint(ep)}});
}

std::string render_associate(const json& r, const Style&) {
    std::vector<std::pair<std::string, std::string>> kv;
    kv.emplace_back("Rendezvous:", format_endpoint(r.value("rendezvous", json())));
    const json lease = r.value("lease", json());
    if (!lease.is_null()) {
        std::string l = str(lease);
        if (const json s = r.value("lease_server", json()); !s.is_null()) l += " (server " + str(s) + ")";
        kv.emplace_back("Lease:", l);
    }
    if (const json echo = r.value("echo", json()); echo.is_object()) {
        kv.emplace_back("Sent:", render_value(echo.value("sent", json())) + " to " +
                                     format_endpoint(r.value("destination", json())));
        char rtt[32];
        std::snprintf(rtt, sizeof rtt, "%.1f ms", echo.value("rtt_ms", 0.0));
        kv.emplace_back("Reply:", render_value(echo.value("reply", json())) + " from " +
                                      format_endpoint(echo.value("from", json())) + " in " + rtt);
    }
    return key_values(kv);
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

std::string one_line(std::string text) { return s5::one_line(text); }

// ---- Errors ------------------------------------------------------------------

std::string bus_failure(const std::string& what, const std::string& error_name, const std::string& message) {
    std::string out = "Failed to " + what + ": " + (error_name.empty() ? "unknown error" : error_name);
    if (!message.empty()) out += ": " + message;
    return one_line(out);
}

}  // namespace s5ctl
