// One application UDP socket (AF_INET/AF_INET6) under the shim: where each
// of its datagrams goes, the leases it holds (one per SOCKS server its
// destinations are routed to, made on first use through libs5client, so the
// association comes from the broker's pool and the credentials stay in the
// broker), the proxied peer it is connect()ed to, and how its inbound
// datagrams are deframed (inbound.hpp).
//
// Datagrams are framed and sent by libs5client's socks5udp_sendto(), which
// follows the lease to whatever relay the broker renewed it on and sends
// from the source IP that association expects; the shim's own receive path
// deframes, because one socket may also talk directly to destinations
// routed NONE.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "route_cache.hpp"
#include "wire.hpp"

namespace s5::socksify {

struct ShimLease {
    int fd = -1;                      // the lease socket (Private in FdTable)
    s5::wire::Endpoint server;
    sockaddr_storage rendezvous{};    // what socks5udp_associate() returned
    socklen_t rendezvous_len = 0;
    // The application closed or dup2()ed over our number: the lease is gone
    // and the number is not ours to close.
    std::atomic<bool> stolen{false};

    ShimLease() = default;
    ShimLease(const ShimLease&) = delete;
    ShimLease& operator=(const ShimLease&) = delete;
    ~ShimLease();
};

// The process's routes: socks5_getserv() behind a RouteCache.
RouteCache& routes();

class ShimSocket {
public:
    explicit ShimSocket(int family) : family_(family) {}

    // What a send to `to` (nullptr: the connected peer) must do.
    struct Plan {
        enum class Kind { Passthrough, Proxy, Fail } kind = Kind::Passthrough;
        std::shared_ptr<ShimLease> lease;
        s5::wire::Endpoint dst;    // Proxy: the real destination, unmapped
        int err = 0;               // Fail
    };
    Plan plan_send(const sockaddr* to, socklen_t tolen);

    // Sends `len` bytes to plan.dst through plan.lease, following renewals:
    // a blocking socket waits (at most 5 s) for a renewal to end; a
    // non-blocking one drops the datagram and reports it sent, as UDP may;
    // a lease found lost is replaced once. Returns len, or -1 with errno.
    ssize_t send_proxied(int fd, Plan plan, const void* data, size_t len, int flags);

    // Whether receives must be deframed (the socket has a lease or a
    // proxied peer); else they go to the C library as they are.
    bool filters_input() const { return filters_.load(std::memory_order_acquire); }
    // recvmsg(2) semantics on a filtered socket (see inbound.hpp).
    ssize_t recv(int fd, msghdr* msg, int flags);

    // connect(2) on the socket: a proxied destination is remembered, not
    // connected (the kernel would then refuse the relay's datagrams); the
    // lease is made now, so its failure is connect()'s. Returns 0 or -1.
    int connect(int fd, const sockaddr* addr, socklen_t len);
    // getpeername(2) for a socket connected to a proxied peer: true and the
    // peer as the application gave it; false when not connected that way.
    bool peer_name(sockaddr* addr, socklen_t* len);

private:
    std::shared_ptr<ShimLease> lease_for(const s5::wire::Endpoint& server, const s5::wire::Endpoint& dst, int& err);
    void drop_lease(const std::shared_ptr<ShimLease>& l);
    // Re-reads every lease's current relay (socks5udp_current).
    void refresh_relays();
    void clear_peer();

    const int family_;
    std::mutex m_;
    std::vector<std::shared_ptr<ShimLease>> leases_;
    std::vector<s5::wire::Endpoint> relays_;   // unmapped; rendezvous and current relays
    bool has_peer_ = false;
    s5::wire::Endpoint peer_;                  // unmapped
    sockaddr_storage peer_sa_{};               // as the application gave it
    socklen_t peer_len_ = 0;
    std::atomic<bool> filters_{false};
};

}  // namespace s5::socksify
