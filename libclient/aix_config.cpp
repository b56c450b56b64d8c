#include "aix_config.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>

#include "s5broker/socks5.h"
#include "socks5c_conf.hpp"

namespace s5::client {

namespace {

// The reverse-resolved name of `e`, for host-name fragment records (asked
// only when the file has some, as AIX does). This may wait for DNS, in the
// caller's thread, as a blocking socks5udp_associate may.
std::optional<std::string> reverse_name(const s5::wire::Endpoint& e) {
    sockaddr_storage ss{};
    const size_t len = e.to_sockaddr(ss);
    if (len == 0) return std::nullopt;
    char host[NI_MAXHOST];
    if (getnameinfo(reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len), host, sizeof host, nullptr, 0,
                    NI_NAMEREQD) != 0)
        return std::nullopt;
    return std::string(host);
}

AixServer none(int err) {
    AixServer a;
    a.err = err;
    a.s5err = S5_ENOSERV;
    return a;
}

}  // namespace

AixServer server_from_socks5c_conf(const s5::wire::Endpoint& dst) {
    const auto path = s5::socks5c::config_path_from_env();
    if (!path) return none(ENOENT);   // SOCKS5C_CONFIG="": SOCKS is not used
    auto loaded = s5::socks5c::load(*path);
    if (!loaded.ok()) return none(loaded.error.err == ENOENT ? ENOENT : EINVAL);
    const auto route = loaded.value->match(dst, reverse_name);
    if (route.direct()) return none(ENOENT);
    AixServer a;
    a.ok = true;
    a.server = route.target.server;
    return a;
}

}  // namespace s5::client
