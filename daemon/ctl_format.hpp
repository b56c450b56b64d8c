// s5brokerctl's pure half: command-line parsing, address parsing and
// formatting, and rendering of the JSON documents the CLI builds from the
// broker's D-Bus objects into human tables and lines. No I/O, no D-Bus, so
// ctl_format_test covers all of it. The JSON shapes below are what
// `s5brokerctl --json` prints; the human output is rendered from the same
// documents, so both always show the same data.
#pragma once

#include <cstdint>
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

struct Args {
    std::optional<Command> command;
    bool json = false;
    bool help = false;
    bool version = false;
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
// command; "--" ends them. --help and --version need no command.
ParseResult parse_args(const std::vector<std::string>& argv);

// The --help text.
std::string usage();

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
// server:  {"name", "path", "address", "port", "auth", "state", "pool_idle",
//           "pool_target", "last_error"}
// lease:   {"id", "path", "uid", "server" (name, null while pending),
//           "server_path", "relay": endpoint, "state", "generation",
//           "age_s" (null: the broker does not publish a creation time)}
// status:  {"version", "lease_count", "servers": [server...],
//           "statistics": {name: count}}
// route:   {"destination", "name", "address", "port"}
// associate: {"destination": endpoint, "server": endpoint|null,
//           "rendezvous": endpoint, "lease": id|null, "lease_server": name|null,
//           "echo": {"sent", "reply", "from": endpoint, "rtt_ms"} (only with --echo)}
// event:   {"time", "object", "path", "event", ...} — see render_event.

// A table: header and rows, columns separated by two spaces, the last column
// not padded.
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

std::string render_servers(const json& servers);  // array of server
std::string render_leases(const json& leases);    // array of lease
std::string render_status(const json& status);
std::string render_route(const json& route);
std::string render_associate(const json& result);

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

}  // namespace s5ctl
