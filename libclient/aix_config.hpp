// Direct mode's answer to "which SOCKS server for this destination?" when
// the application names none (a NULL Svr, socks5_getserv): AIX's
// /etc/socks5c.conf, or the file SOCKS5C_CONFIG names, as AIX reads it
// (the rules are in protocol/socks5c_conf.hpp). Read at every call, so an
// edit applies to the next association, as on AIX. With the broker, its
// own routes answer instead (s5brokerd.json(5)).
#pragma once

#include "wire.hpp"

namespace s5::client {

struct AixServer {
    bool ok = false;
    s5::wire::Endpoint server;   // ok
    int err = 0, s5err = 0;      // !ok: what the call reports
};

// ok with the server; else, with S5_ENOSERV: ENOENT when no server serves
// `dst` (NONE, the implied default, no file, or SOCKS5C_CONFIG set but
// empty), EINVAL when the file cannot be read or parsed.
AixServer server_from_socks5c_conf(const s5::wire::Endpoint& dst);

}  // namespace s5::client
