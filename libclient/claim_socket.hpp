// The association's claim socket put in place of an application's UDP
// socket (docs/design.md §7, "Claiming"): the broker bound that socket to
// the source address it named as the UDP ASSOCIATE's DST, so it is the only
// socket the SOCKS server takes the association's datagrams from. The
// application made its own socket (AIX's contract returns the rendezvous
// before it exists); the library dup3()s the claim socket onto that
// descriptor number at the first socks5udp_sendto(), or when the
// application calls socks5udp_bind(), and again after every renewal.
#pragma once

namespace s5::client {

// Makes descriptor `target` refer to the socket `claim` (a copy the library
// keeps): the same number, its close-on-exec and O_NONBLOCK state, the
// connected peer it had, and the options of kCopiedOptions (claim_socket.cpp)
// the application set on it. Returns 0, or the errno of the failing step
// (EBADF: `target` is not open), with `target` unchanged.
int put_in_place(int claim, int target);

}  // namespace s5::client
