// s5brokerctl's pure half: command-line parsing, the help texts, address
// parsing and formatting, the output conventions of systemd's CLIs (JSON
// modes, colours, pager choice, terminal width) and the rendering of the JSON
// documents the CLI builds from the broker's D-Bus objects into tables
// (libsmartcols) and lines. No D-Bus and no terminal I/O, so ctl_format_test
// covers all of it. The JSON shapes below are what `s5brokerctl --json`
// prints; the human output is rendered from the same documents, so both
// always show the same data.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wire.hpp"

namespace s5ctl {

// Keys keep the order they were added in: the output reads like the tables.
using json = nlohmann::ordered_json;

inline constexpr const char* kProgram = "s5brokerctl";

// ---- Command line ----------------------------------------------------------

enum class Command { Status, Servers, Leases, Associate, Route, Reload, Monitor };

// What was asked for with --json / -j (see json_mode()).
enum class JsonArg {
    None,    // neither: human output (also --json=off)
    Bare,    // --json: the verb's default, pretty (monitor: one object per line)
    Auto,    // -j: pretty on a terminal, short otherwise (as systemd's -j)
    Pretty,  // --json=pretty
    Short,   // --json=short
};

struct Args {
    std::optional<Command> command;
    JsonArg json = JsonArg::None;
    bool pager = true;        // --no-pager clears it
    bool legend = true;       // --no-legend clears it
    bool help = false;        // -h, --help: of `command` when one was given
    bool version = false;
    bool json_help = false;   // --json=help: list the modes
    std::optional<std::string> bus_address;  // --bus-address
    // associate HOST PORT [--server ADDR:PORT] [--echo TEXT]; route HOST
    s5::wire::Endpoint destination;            // HOST (and PORT for associate)
    std::optional<s5::wire::Endpoint> server;  // --server
    std::optional<std::string> echo;           // --echo
};

// Either the arguments or a one-line usage error (the CLI exits 2 with it).
struct ParseResult {
    std::optional<Args> args;
    std::string error;
};

// `argv` without the program name. Options may come before or after the
// command; "--" ends them. --help, --version and --json=help need no command;
// `VERB --help` needs no operands.
ParseResult parse_args(const std::vector<std::string>& argv);

// The --help text, and the text of `VERB --help`.
std::string usage();
std::string usage(Command command);

// ---- Output conventions ----------------------------------------------------

enum class JsonMode { Off, Pretty, Short };

// The JSON mode for `args` when stdout is (not) a terminal.
JsonMode json_mode(const Args& args, bool stdout_is_tty);
// `doc` in that mode with a final newline: pretty is indented by 2, short is
// one line. Invalid UTF-8 is replaced, never an exception.
std::string dump_json(const json& doc, JsonMode mode);

// An environment lookup (getenv in the CLI, a map in the tests).
using Getenv = std::function<const char*(const char*)>;

// Colours as systemd's tools decide them, except that they never appear
// off a terminal (SYSTEMD_COLORS=1 does not force them): stdout must be a
// terminal, NO_COLOR unset, TERM set and not "dumb", and SYSTEMD_COLORS not
// false ("0", "no", "n", "false", "f", "off").
bool colors_enabled(bool stdout_is_tty, const Getenv& env);
// The width to fit tables into on a terminal: $COLUMNS if it is a positive
// number, else `ioctl_columns` if not 0, else 80.
unsigned terminal_width(const Getenv& env, unsigned ioctl_columns);

// Which pager to run for output to a terminal (systemd's rules): none with
// --no-pager, when stdout is not a terminal, when TERM is unset or "dumb",
// or when $SYSTEMD_PAGER (else $PAGER) is empty or "cat". Otherwise `argv`
// is that variable's value split into words (split_command), or empty for
// the default chain (pager, less, more; then copying the output through
// unpaged); `less` is LESS for the pager: $SYSTEMD_LESS, else FRSXMK.
struct PagerChoice {
    std::vector<std::string> argv;
    std::string less;
    std::optional<std::string> lesscharset;  // $SYSTEMD_LESSCHARSET
};
std::optional<PagerChoice> pager_for(bool stdout_is_tty, bool pager_allowed, const Getenv& env);

// A command line split into words as systemd splits $PAGER (no shell):
// blanks separate words, '...' and "..." quote, a backslash escapes the next
// character.
std::vector<std::string> split_command(std::string_view command);

// How human output is laid out.
struct Style {
    bool legend = true;   // column headers and the "N ... listed." footer
    bool color = false;   // ANSI colours (states, headers)
    unsigned width = 0;   // truncate tables to this many columns; 0: never
};

// ---- Addresses -------------------------------------------------------------

// 0..65535 (or 1..65535 without allow_zero), decimal digits only.
std::optional<uint16_t> parse_port(std::string_view text, bool allow_zero);
// "192.0.2.1:1080" or "[2001:db8::1]:1080" (port 1..65535).
std::optional<s5::wire::Endpoint> parse_host_port(std::string_view text);
// A raw 4 or 16 byte address as on the bus: "192.0.2.1", "2001:db8::1";
// anything else: "?" followed by the byte count, e.g. "?3".
std::string format_ip(const std::vector<uint8_t>& bytes);
std::string format_ip(const s5::wire::Endpoint& ep);
// {"address": "...", "port": N}
json endpoint_json(const std::vector<uint8_t>& bytes, uint16_t port);
json endpoint_json(const s5::wire::Endpoint& ep);
// "192.0.2.1:1080", "[::1]:1080" from an endpoint_json() object.
std::string format_endpoint(const json& ep);

// ---- Object paths ----------------------------------------------------------

inline constexpr const char* kManagerPath = "/org/s5broker/Broker1";
// The last element of .../server/<name> or .../lease/<id>; "" if `path` is
// not of that kind.
std::string server_name_of(std::string_view path);
std::string lease_id_of(std::string_view path);
// "manager", "server/<name>", "lease/<id>", or the path itself.
std::string object_name(std::string_view path);

// ---- Documents -------------------------------------------------------------
// Field names are the table's column names (or the label of a "Label:" line)
// in lower snake_case; a number with a unit has the unit as a suffix (age_s,
// rtt_ms); an address and its port are one endpoint object, or two fields
// "address" and "port" at the top of a server or route object.
// server:  {"name", "path", "address", "port", "auth", "state", "pool_idle",
//           "pool_target", "last_error"}
// lease:   {"id", "path", "uid", "server" (name, null while pending),
//           "server_path", "relay": endpoint, "state", "generation", "age_s"}
// status:  {"version", "lease_count", "servers": [server...],
//           "statistics": {name: count}}
// route:   {"destination", "server" (name), "address", "port"}
// associate: {"destination": endpoint, "server": endpoint|null,
//           "rendezvous": endpoint, "lease": id|null, "lease_server": name|null,
//           "echo": {"sent", "reply", "from": endpoint, "rtt_ms"} (only with --echo)}
// reload:  {"reloaded": true}
// event:   {"time", "object", "path", "event", ...} — see render_event.

// A table: one header per column, rows of cells, columns separated by two
// spaces, no line ending in blanks. With style.width, a table wider than
// that is cut to fit, last column first.
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                         const Style& style = {});

std::string render_servers(const json& servers, const Style& style = {});  // array of server
std::string render_leases(const json& leases, const Style& style = {});    // array of lease
std::string render_status(const json& status, const Style& style = {});
std::string render_route(const json& route, const Style& style = {});
std::string render_associate(const json& result, const Style& style = {});

// A lease's age like systemd's timespans: "0s", "59s", "1min 5s", "2h 3min",
// "3d 4h".
std::string format_age(int64_t seconds);

// A value of a property or signal argument for a human: strings bare (quoted
// when empty or holding spaces or control characters), endpoints as
// "addr:port", arrays as [a, b], objects as {k=v, ...}.
std::string render_value(const json& v);

// One monitor line, without the newline:
//   "<HH:MM:SS.mmm>Z <object> <event> <details>"
// events: "PropertiesChanged" {"interface", "changed": {...}, "invalidated": [...]},
//         "Renewed" {"generation", "relay"}, "Lost" {"error"},
//         "BrokerStarted"/"BrokerStopped" {"owner"}, anything else {"args": [...]}.
std::string render_event(const json& event);

// Makes `text` safe for one line: control characters become spaces.
std::string one_line(std::string text);

// ---- Errors ------------------------------------------------------------------

// A failed D-Bus call as systemd's tools print it, with the error's name:
//   "Failed to <what>: <error name>: <message>"
// (just the name when the message is empty), on one line.
std::string bus_failure(const std::string& what, const std::string& error_name, const std::string& message);

}  // namespace s5ctl
