#include "socks5c_conf.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <unordered_map>

#include "one_line.hpp"
#include "unique_fd.hpp"

namespace s5::socks5c {

namespace {

// Concatenation by appending: GCC 12 at -O3 warns falsely (-Wrestrict) about
// `"literal" + std::string&&`, and this reads as well.
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (std::string_view p : parts) out += p;
    return out;
}

// Text from the file in a message: one line, quoted, shortened when long.
std::string quoted(std::string_view s) {
    constexpr size_t kMax = 64;
    std::string out = "\"";
    out += one_line(s.substr(0, kMax));
    if (s.size() > kMax) out += "...";
    out += '"';
    return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool all_digits(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_digit); }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool fragment_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '_' || c == '.';
}

std::string ip_text(const wire::Endpoint& ip) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (!inet_ntop(ip.family, ip.ip.data(), buf, sizeof buf)) return "?";
    return buf;
}

std::string prefix_text(const wire::Endpoint& network, unsigned length) {
    return cat({ip_text(network), "/", std::to_string(length)});
}

unsigned max_length(const wire::Endpoint& ip) { return static_cast<unsigned>(ip.ip_len() * 8); }


wire::Endpoint masked(wire::Endpoint ip, unsigned length) {
    const unsigned total = max_length(ip);
    for (unsigned bit = length; bit < total; ++bit) ip.ip[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
    return ip;
}

using wire::same_leading_bits;

// Up to 65535 from plain decimal digits; nullopt otherwise (also for huge
// digit strings, which must not overflow).
std::optional<unsigned long> small_number(std::string_view digits, unsigned long max) {
    if (!all_digits(digits)) return std::nullopt;
    unsigned long v = 0;
    for (char c : digits) {
        v = v * 10 + static_cast<unsigned long>(c - '0');
        if (v > max) return max + 1;
    }
    return v;
}

const char* family_name(const wire::Endpoint& ip) { return ip.family == AF_INET ? "an IPv4" : "an IPv6"; }

}  // namespace

// ---- Parsing -----------------------------------------------------------------

struct Parser {
    std::string file;
    unsigned line = 0;
    Socks5cConf conf;
    std::optional<Error> error;
    // Destinations seen so far -> their line: a 1 MiB file has tens of
    // thousands of records, too many to compare pairwise.
    std::unordered_map<std::string, unsigned> seen;

    void fail(std::string reason) {
        if (!error) error = Error{file, line, std::move(reason), 0};
    }

    std::optional<uint16_t> port(std::string_view text, std::string_view server) {
        if (text.empty()) {
            fail(cat({"missing port after ':' in server ", quoted(server)}));
            return std::nullopt;
        }
        auto v = small_number(text, 65535);
        if (!v) {
            fail(cat({"port ", quoted(text), " is not a number (in server ", quoted(server), ")"}));
            return std::nullopt;
        }
        if (*v < 1 || *v > 65535) {
            fail(cat({"port ", one_line(text.substr(0, 16)), text.size() > 16 ? "..." : "",
                      " is out of range (1..65535)"}));
            return std::nullopt;
        }
        return static_cast<uint16_t>(*v);
    }

    // A server address (an IP literal) or the reason it is not one.
    std::optional<wire::Endpoint> server_address(std::string_view text, std::string_view server) {
        auto ip = wire::Endpoint::parse_ip(text);
        if (!ip) {
            fail(cat({"server ", quoted(server),
                      " is not an IP address (host names are not resolved here; write the address, or NONE for "
                      "no SOCKS server)"}));
            return std::nullopt;
        }
        if (ip->is_unspecified()) {
            fail(cat({"server address ", ip_text(*ip), " is unspecified"}));
            return std::nullopt;
        }
        return ip->unmapped();
    }

    std::optional<Target> target(std::string_view text) {
        if (text == "NONE") return Target{};
        std::string_view address, port_text;
        bool has_port = false;
        if (text.starts_with('[')) {
            const size_t close = text.find(']');
            if (close == std::string_view::npos) {
                fail(cat({"server ", quoted(text), " lacks the closing ']'"}));
                return std::nullopt;
            }
            address = text.substr(1, close - 1);
            std::string_view rest = text.substr(close + 1);
            auto v6 = wire::Endpoint::parse_ip(address);
            if (!v6 || v6->family != AF_INET6) {
                fail(cat({"server ", quoted(text), ": only an IPv6 address goes in brackets"}));
                return std::nullopt;
            }
            if (rest.empty()) {
                fail(cat({"IPv6 server ", quoted(text), " must be followed by a port, as in ",
                          quoted(cat({text, ":", std::to_string(kDefaultPort)}))}));
                return std::nullopt;
            }
            if (!rest.starts_with(':')) {
                fail(cat({"server ", quoted(text), ": expected ':' and a port after ']'"}));
                return std::nullopt;
            }
            has_port = true;
            port_text = rest.substr(1);
        } else if (const size_t colons = static_cast<size_t>(std::count(text.begin(), text.end(), ':')); colons >= 2) {
            // IPv6, IBM's way: the text after the last ':' is the port.
            const size_t last = text.rfind(':');
            address = text.substr(0, last);
            port_text = text.substr(last + 1);
            has_port = true;
            auto ip = wire::Endpoint::parse_ip(address);
            if (!ip || ip->family != AF_INET6 || ip->is_unspecified()) {
                // "2001:db8::1" splits into "2001:db8:" and "1", "::1" into
                // "::" and "1": say what is missing rather than what it parsed as.
                if (wire::Endpoint::parse_ip(text)) {
                    fail(cat({"IPv6 server ", quoted(text),
                              " must be followed by a port (the text after the last ':'), as in ",
                              quoted(cat({text, ":", std::to_string(kDefaultPort)}))}));
                    return std::nullopt;
                }
                if (!ip) {
                    fail(cat({"server ", quoted(text), " is not an IPv6 address followed by ':' and a port"}));
                    return std::nullopt;
                }
            }
        } else if (colons == 1) {
            const size_t colon = text.find(':');
            address = text.substr(0, colon);
            port_text = text.substr(colon + 1);
            has_port = true;
        } else {
            address = text;
        }
        auto ip = server_address(address, text);
        if (!ip) return std::nullopt;
        if (has_port) {
            auto p = port(port_text, text);
            if (!p) return std::nullopt;
            ip->port = *p;
        } else {
            ip->port = kDefaultPort;
        }
        Target t;
        t.direct = false;
        t.server = *ip;
        return t;
    }

    void address_record(std::string_view dest, const Target& t) {
        const size_t slash = dest.find('/');
        const std::string_view addr = dest.substr(0, slash);
        auto ip = wire::Endpoint::parse_ip(addr);
        if (!ip) {
            fail(cat({"destination ", quoted(dest), " is not a valid IP address",
                      slash == std::string_view::npos ? "" : " (a prefix length follows only an address)"}));
            return;
        }
        const unsigned max = max_length(*ip);
        unsigned length = max;
        if (slash != std::string_view::npos) {
            const std::string_view digits = dest.substr(slash + 1);
            if (digits.empty()) return fail(cat({"missing prefix length after '/' in ", quoted(dest)}));
            auto v = small_number(digits, max);
            if (!v) return fail(cat({"prefix length ", quoted(digits), " is not a number"}));
            if (*v > max)
                return fail(cat({"prefix length ", one_line(digits.substr(0, 16)), digits.size() > 16 ? "..." : "",
                                 " is out of range for ", family_name(*ip), " address"}));
            length = static_cast<unsigned>(*v);
        }
        wire::Endpoint network = masked(*ip, length);
        if (network.is_v4_mapped() && length >= 96) {
            network = network.unmapped();
            length -= 96;
        }
        network.port = 0;
        std::string key(1, network.family == AF_INET ? '4' : '6');
        key.append(reinterpret_cast<const char*>(network.ip.data()), network.ip_len());
        key += static_cast<char>(length);
        if (auto [it, fresh] = seen.emplace(std::move(key), line); !fresh)
            return fail(cat({"duplicate destination ", prefix_text(network, length), " (already on line ",
                             std::to_string(it->second), ")"}));
        conf.addresses_.push_back(AddressRecord{network, length, t, line});
    }

    void fragment_record(std::string_view dest, const Target& t) {
        if (dest.size() > kMaxFragmentLength)
            return fail(cat({"host-name fragment ", quoted(dest), " is longer than ",
                             std::to_string(kMaxFragmentLength), " characters"}));
        std::string f(dest);
        std::transform(f.begin(), f.end(), f.begin(), lower);
        if (auto [it, fresh] = seen.emplace(cat({"n", f}), line); !fresh)
            return fail(cat({"duplicate destination ", quoted(dest), " (already on line ", std::to_string(it->second),
                             ")"}));
        conf.fragments_.push_back(FragmentRecord{std::move(f), t, line});
    }

    void record(std::string_view text) {
        // Fields, the comment cut off.
        if (const size_t hash = text.find('#'); hash != std::string_view::npos) text = text.substr(0, hash);
        std::vector<std::string_view> fields;
        size_t i = 0;
        while (i < text.size()) {
            while (i < text.size() && is_space(text[i])) ++i;
            const size_t start = i;
            while (i < text.size() && !is_space(text[i])) ++i;
            if (i > start) fields.push_back(text.substr(start, i - start));
            if (fields.size() > 2) break;
        }
        if (fields.empty()) return;
        const std::string_view dest = fields[0];
        if (fields.size() == 1) return fail(cat({"missing server after destination ", quoted(dest)}));
        if (fields.size() > 2)
            return fail(cat({"unexpected ", quoted(fields[2]), " after the server (a comment starts with '#')"}));

        // What the destination is meant to be decides how it is checked.
        const bool address = dest.find_first_of(":/") != std::string_view::npos ||
                             std::all_of(dest.begin(), dest.end(), [](char c) { return is_digit(c) || c == '.'; });
        if (!address && !std::all_of(dest.begin(), dest.end(), fragment_char))
            return fail(cat({"destination ", quoted(dest),
                             " is neither an IP address nor a host-name fragment (letters, digits, '-', '_', '.')"}));

        auto t = target(fields[1]);
        if (!t) return;
        if (address)
            address_record(dest, *t);
        else
            fragment_record(dest, *t);
    }
};

Result parse(std::string_view text, std::string_view file) {
    Parser p;
    p.file = one_line(file);
    size_t pos = 0;
    while (pos <= text.size() && !p.error) {
        const size_t nl = text.find('\n', pos);
        const size_t end = nl == std::string_view::npos ? text.size() : nl;
        ++p.line;
        p.record(text.substr(pos, end - pos));
        if (nl == std::string_view::npos) break;
        pos = nl + 1;
    }
    if (p.error) return {std::nullopt, std::move(*p.error)};
    return {std::move(p.conf), {}};
}

// ---- Matching ----------------------------------------------------------------

bool AddressRecord::contains(const wire::Endpoint& ip) const {
    return ip.family == network.family && length <= max_length(network) &&
           same_leading_bits(ip.ip, network.ip, length);
}

Route Socks5cConf::match(const wire::Endpoint& dst_in, const ResolveFn& resolve) const {
    Route route;  // the implied 0.0.0.0/0 NONE and ::/0 NONE
    if (dst_in.family != AF_INET && dst_in.family != AF_INET6) return route;
    const wire::Endpoint dst = dst_in.unmapped();

    if (!fragments_.empty() && resolve) {
        if (std::optional<std::string> name = resolve(dst); name && !name->empty()) {
            // In absolute form, so that a fragment ending in '.' matches at
            // the end whether or not the resolver wrote the root's dot.
            std::string n = std::move(*name);
            if (!n.ends_with('.')) n += '.';
            std::transform(n.begin(), n.end(), n.begin(), lower);
            const FragmentRecord* best = nullptr;
            for (const FragmentRecord& f : fragments_)
                if ((!best || f.fragment.size() > best->fragment.size()) && n.find(f.fragment) != std::string::npos)
                    best = &f;
            if (best) return Route{best->target, best->line, true};
        }
    }

    const AddressRecord* best = nullptr;
    for (const AddressRecord& r : addresses_)
        if ((!best || r.length > best->length) && r.contains(dst)) best = &r;
    if (best) return Route{best->target, best->line, false};
    return route;
}

// ---- The file ----------------------------------------------------------------

std::string Error::to_string() const {
    if (line == 0) return cat({file, ": ", reason});
    return cat({file, ":", std::to_string(line), ": ", reason});
}

namespace {

Result file_error(const std::string& path, std::string reason, int err = 0) {
    return {std::nullopt, Error{one_line(path), 0, std::move(reason), err}};
}

Result read_error(const std::string& path, int err) {
    return file_error(path, cat({"cannot read: ", std::strerror(err)}), err);
}

}  // namespace

Result load(const std::string& path) {
    if (path.empty()) return file_error(path, "no file name");
    if (path.find('\0') != std::string::npos) return file_error(path, "the file name contains a NUL byte");
    // O_NONBLOCK: a FIFO in place of the file must not hang the application;
    // it is refused below as not a regular file.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) return read_error(path, errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return read_error(path, errno);
    if (!S_ISREG(st.st_mode)) return file_error(path, "is not a regular file");
    const std::string too_large = cat({"is larger than ", std::to_string(kMaxFileBytes), " bytes"});
    if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) return file_error(path, too_large);

    std::string text;
    text.reserve(static_cast<size_t>(st.st_size));
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return read_error(path, errno);
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxFileBytes) return file_error(path, too_large);  // it grew since fstat()
    }
    return parse(text, path);
}

std::optional<std::string> config_path(const char* socks5c_config) {
    if (!socks5c_config) return std::string(kDefaultPath);
    if (*socks5c_config == '\0') return std::nullopt;
    return std::string(socks5c_config);
}

std::optional<std::string> config_path_from_env() { return config_path(secure_getenv("SOCKS5C_CONFIG")); }

}  // namespace s5::socks5c
