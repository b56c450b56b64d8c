// AIX's /etc/socks5c.conf (IBM, "Files Reference": socks5c.conf): which
// SOCKSv5 server, if any, serves a destination. The parser and matcher only:
// pure, no resolver, no sockets; load() reads the file.
//
// ---- Format ----------------------------------------------------------------
//
// One record per line, two whitespace-separated fields (space, tab, CR, VT,
// FF; so CRLF files read fine):
//
//     destination[/prefixlength]  server[:port]
//
// `#` starts a comment wherever it appears, to the end of the line. Blank
// lines and comment-only lines are ignored. Lines are counted from 1.
//
// destination
//   * An IPv4 or IPv6 address, optionally with /prefixlength (0..32 or
//     0..128, plain decimal). Without one every bit is compared (/32, /128).
//     Host bits beyond the prefix are ignored, as IBM defines prefixlength as
//     "the number of leading bits compared": 10.1.2.3/8 is read as
//     10.0.0.0/8 (accepted and masked, so an AIX file keeps its meaning). An
//     IPv4-mapped network (inside ::ffff:0:0/96, prefix at least 96) is
//     stored as the IPv4 network it covers: ::ffff:10.0.0.0/104 is 10.0.0.0/8.
//   * Otherwise a host-name fragment: letters, digits, '-', '_' and '.', at
//     most 253 characters. A destination containing ':' or '/', or made only
//     of digits and dots, is meant as an address and must be a valid one
//     ("10.1.2" is an error, not a fragment).
//   A destination may appear only once (after masking, and for fragments
//   regardless of case): a second record for it could never be used.
//
// server
//   * NONE (upper case only): no SOCKS server; connect directly.
//   * An IPv4 address with an optional port: a.b.c.d or a.b.c.d:port.
//   * An IPv6 address followed by a port, which IBM requires. As IBM writes
//     it, the text after the last ':' is the port: 2001:db8::1:1080 is
//     2001:db8::1 port 1080, and 2001:db8::1:2 is 2001:db8::1 port 2 (not
//     the address 2001:db8::1:2). A bare "2001:db8::1" or "::1" is refused
//     as lacking its port. [2001:db8::1]:1080 is accepted as well; the
//     port is required there too.
//   The port is 1..65535, plain decimal, default 1080. The address must be an
//   IP literal that is not unspecified (0.0.0.0, ::); a host name is refused
//   with an error, since resolving it is not the parser's job and a lookup
//   at every association would be a surprise. An IPv4-mapped server address
//   is stored as IPv4. `none` in lower case is a host name, hence refused.
//
// Errors: the first bad line rejects the whole file (as the daemon's JSON
// config does): a partly applied file would send some traffic somewhere the
// administrator did not intend. Messages name file and line, quote text
// from the file with s5::one_line (and shortened when long), e.g.
//   /etc/socks5c.conf:7: prefix length 33 is out of range for an IPv4 address
//
// ---- Matching ----------------------------------------------------------------
//
// match(dst, resolve) picks the record for the destination address `dst`
// (its port is ignored; an IPv4-mapped IPv6 address is matched as IPv4):
//   1. When the file has fragment records, and only then, `resolve` is
//      called (at most once per match) with the destination as matched, and
//      returns its reverse-resolved name, or nullopt / "" when it has none.
//      A fragment matches when it occurs anywhere in that name, compared
//      case-insensitively (ASCII), the name taken in absolute form (a final
//      '.' added unless it has one): "example.com" and ".example.com" both
//      match "Host.Example.COM" and "host.example.community"; a fragment
//      ending in '.' ends at a label boundary whether or not the resolver
//      wrote the root's dot: "example.com." matches "host.example.com" and
//      "host.example.com.au" but not "host.example.community". The longest
//      matching fragment wins (equal lengths: the earlier line); any
//      matching fragment beats every address record.
//   2. Otherwise the address record with the longest prefix that contains
//      the destination (same family).
//   3. Otherwise the implied `0.0.0.0/0 NONE` and `::/0 NONE`: direct. An
//      explicit 0.0.0.0/0 or ::/0 record replaces its implied one.
// An unset `dst` (family 0) is direct without a call to `resolve`; an empty
// `resolve` means "no name" (fragments then never match).
//
// ---- The file ----------------------------------------------------------------
//
// SOCKS5C_CONFIG names the file (read with secure_getenv, so set-id programs
// always use the default); unset: /etc/socks5c.conf; set but empty: SOCKS is
// not used at all. What a missing file means is the caller's decision
// (Error::err is ENOENT then).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wire.hpp"

namespace s5::socks5c {

inline constexpr const char* kDefaultPath = "/etc/socks5c.conf";
inline constexpr uint16_t kDefaultPort = 1080;
inline constexpr size_t kMaxFileBytes = 1 << 20;   // load() refuses larger files
inline constexpr size_t kMaxFragmentLength = 253;  // the longest DNS name

struct Error {
    std::string file;      // as given to parse() / load(), one_line'd
    unsigned line = 0;     // 1-based; 0 when about the file as a whole
    std::string reason;
    int err = 0;           // errno when the file could not be opened or read
    // "FILE:LINE: REASON", or "FILE: REASON" when line is 0.
    std::string to_string() const;
};

// What a record says: NONE (direct) or a SOCKS server.
struct Target {
    bool direct = true;
    wire::Endpoint server;         // !direct: IP literal (never unspecified), port 1..65535
    bool operator==(const Target&) const = default;
};

struct AddressRecord {
    wire::Endpoint network;        // port 0, host bits zero
    unsigned length = 0;           // 0..32 or 0..128
    Target target;
    unsigned line = 0;
    bool contains(const wire::Endpoint& ip) const;  // same family and prefix
};

struct FragmentRecord {
    std::string fragment;          // lower case
    Target target;
    unsigned line = 0;
};

// The outcome of match(): the record's target and which record it was.
struct Route {
    Target target;                 // direct when nothing matched
    unsigned line = 0;             // the deciding record; 0: the implied default
    bool by_fragment = false;      // decided by a host-name fragment
    bool direct() const { return target.direct; }
};

// Reverse resolution of a destination: its name, or nullopt when it has none.
using ResolveFn = std::function<std::optional<std::string>(const wire::Endpoint&)>;

class Socks5cConf {
public:
    Route match(const wire::Endpoint& dst, const ResolveFn& resolve) const;

    const std::vector<AddressRecord>& addresses() const { return addresses_; }
    const std::vector<FragmentRecord>& fragments() const { return fragments_; }
    bool has_fragments() const { return !fragments_.empty(); }

private:
    friend struct Parser;
    std::vector<AddressRecord> addresses_;
    std::vector<FragmentRecord> fragments_;
};

struct Result {
    std::optional<Socks5cConf> value;
    Error error;                   // meaningful when !value
    bool ok() const { return value.has_value(); }
};

// Parses the text of a socks5c.conf; `file` names it in errors.
Result parse(std::string_view text, std::string_view file);

// Reads and parses `path`: it must be a regular file (symbolic links are
// followed; a FIFO is refused without blocking) of at most kMaxFileBytes.
Result load(const std::string& path);

// The SOCKS5C_CONFIG rule for the variable's value (nullptr: unset):
// nullopt means SOCKS is not used; otherwise the file to load.
std::optional<std::string> config_path(const char* socks5c_config);
// The same for the environment, read now with secure_getenv().
std::optional<std::string> config_path_from_env();

}  // namespace s5::socks5c
