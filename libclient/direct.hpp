// Direct mode: socks5udp_associate() without s5brokerd (issue "Direct mode
// without a broker"). The application's Socket is connected to the SOCKS
// server and becomes the association's control connection; the handshake is
// the same s5::proto::Handshake the broker drives, fed from that socket.
//
//   S5CLIENT_MODE=broker  always the broker; no fallback
//   S5CLIENT_MODE=direct  always direct; Svr is required
//   unset, "auto", other  the broker; direct only when it is not on the bus
//                         (or there is no bus) and Svr names a server
//
// Credentials: SOCKS5_USERNAME (set and non-empty: RFC 1929 username/
// password, else method "no authentication") and SOCKS5_PASSWORD, read with
// secure_getenv() at the call that starts the connection. Copies are wiped
// (explicit_bzero) once sent or abandoned; nothing is logged.
//
// Blocking Socket: connect and handshake within SO_SNDTIMEO / SO_RCVTIMEO
// (per wait, as the kernel applies them) when either is set, else within
// 10 s overall; ETIMEDOUT otherwise. Non-blocking Socket: as connect(2), the
// first call starts the connect and returns EINPROGRESS; every later call
// advances the handshake without blocking: EALREADY while in progress, 0 or
// the failure once it ended. The state in between lives in a process-wide
// table keyed by descriptor and validated by the socket's inode.
//
// On failure Socket is disconnected again (connect(AF_UNSPEC)): it is left
// unconnected but keeps the local port it was bound to. On success the
// association is entered in the lease table (LeaseTable::add_direct) so the
// datagram calls and socks5udp_current() know its relay and source IP; it
// is never renewed.
#pragma once

#include <cstddef>
#include <string>

#include "wire.hpp"

namespace s5::client {

enum class Mode { Auto, Broker, Direct };

// S5CLIENT_MODE, read now.
Mode mode_from_env();

// Does this failed broker call mean "no broker on the bus" (or no bus)?
// Only then does Auto fall back to direct mode.
bool broker_absent(const std::string& error_name);

struct DirectOutcome {
    int rc = -1;                // 0: done, relay valid; -1: err/s5err
    int err = 0;
    int s5err = 0;
    s5::wire::Endpoint relay;   // the rendezvous
};

// Starts a direct association on the unconnected stream socket `fd` to
// `server`. `dst_len`: the caller's Dst buffer, which must hold the relay
// (EINVAL otherwise, checked before connecting for the server's family and
// again for the relay). Non-blocking: rc -1 / EINPROGRESS when under way.
DirectOutcome direct_start(int fd, const s5::wire::Endpoint& server, size_t dst_len, bool nonblocking);

// Is `fd` (this very socket) a direct association in progress?
bool direct_in_progress(int fd);

// Continues the association in progress on `fd`: EALREADY while it is not
// done (non-blocking; also while another thread is advancing it), 0 or the
// failure once it is. Blocking (O_NONBLOCK cleared since): runs to the end.
DirectOutcome direct_continue(int fd, size_t dst_len, bool nonblocking);

}  // namespace s5::client
