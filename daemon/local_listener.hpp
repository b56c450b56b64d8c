// Who is at the other end of a TCP connection, when that end is on this
// host: the uid that owns the server's socket, from the kernel's socket
// table (NETLINK_SOCK_DIAG, an inet_diag lookup of the exact 4-tuple from
// the server's side). A socket accepted from a listener carries the
// listener's owner, so this names who listens at the server's address.
//
// Why: a configured server on a local address and an unprivileged port
// that goes down can be replaced by any local user binding the port; the
// broker must not send that user the RFC 1929 user name and password. A
// remote peer is not in the table (NotLocal): nothing to check there.
//
// The lookup is a request to the kernel answered within the same two
// syscalls; it never waits for anything outside the host.
#pragma once

#include <sys/types.h>

#include <string>
#include <variant>

namespace s5d {

struct NotLocal {};
struct LocalOwner {
    uid_t uid;
};
struct LookupError {
    int err;              // errno
};

// `fd`: a connected TCP socket.
std::variant<NotLocal, LocalOwner, LookupError> local_peer_owner(int fd);

}  // namespace s5d
