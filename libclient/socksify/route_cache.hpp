// Where the shim sends a destination: through a SOCKS server (a lease from
// the broker), straight out (routed NONE, or no route at all), or nowhere
// (no broker: the send fails closed). Pure: the lookup and the clock are
// injected; the shim's lookup is socks5_getserv().
//
// A decision is kept for `ttl_ms` per destination address (the port does not
// route), so a program talking to one server asks the broker once, and a
// route the operator changes is followed within the TTL. A failure is not
// kept: the next datagram asks again. At most `capacity` destinations are
// kept; when full, expired ones go first, then everything.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "wire.hpp"

namespace s5::socksify {

struct Route {
    enum class Kind { Proxy, Direct, Fail };
    Kind kind = Kind::Fail;
    s5::wire::Endpoint server;   // Proxy: the SOCKS server
    int err = 0;                 // Fail: errno for the send
    int s5err = 0;               // Fail: socks5_errno as socks5_getserv set it
};

class RouteCache {
public:
    using Lookup = std::function<Route(const s5::wire::Endpoint& dst)>;
    using Clock = std::function<int64_t()>;   // milliseconds, monotonic

    RouteCache(Lookup lookup, Clock clock, int64_t ttl_ms = 30000, size_t capacity = 4096);

    // `dst`'s route (its port ignored; IPv4-mapped addresses as IPv4).
    // The lookup runs without the lock held.
    Route get(const s5::wire::Endpoint& dst);

    size_t size() const;
    void lock() { m_.lock(); }
    void unlock() { m_.unlock(); }

private:
    struct Hash {
        size_t operator()(const s5::wire::Endpoint& e) const noexcept;
    };
    struct Entry {
        Route route;
        int64_t expires = 0;
    };
    Lookup lookup_;
    Clock clock_;
    int64_t ttl_ms_;
    size_t capacity_;
    mutable std::mutex m_;
    std::unordered_map<s5::wire::Endpoint, Entry, Hash> entries_;
};

}  // namespace s5::socksify
