// Which of the process's descriptors the shim knows, and what each is:
//
//   Shim     an AF_INET/AF_INET6 UDP socket the shim proxies (ShimSocket);
//            dup()ed descriptors share one ShimSocket, whose leases live as
//            long as some descriptor of the socket does
//   Private  a lease socket the shim holds for one of those (the
//            application never had this number)
//   NotOurs  checked once: not an IP UDP socket
//   Unknown  not seen yet (inherited across exec, or made behind the shim's
//            back): the send calls check it on first use
//
// Every call that frees or reuses a number (close, dup2/dup3, close_range,
// socket) resets it, so a mark never outlives the descriptor it describes.
// A mark is one relaxed load for descriptors below kFast; above, a map
// lookup under the lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace s5::socksify {

class ShimSocket;
struct ShimLease;

class FdTable {
public:
    enum class Mark : uint8_t { Unknown = 0, Shim, NotOurs, Private };

    static FdTable& global();

    Mark mark(int fd) const;
    // The ShimSocket on `fd`; an Unknown `fd` is checked first (getsockopt)
    // and becomes Shim or NotOurs. nullptr unless Shim.
    std::shared_ptr<ShimSocket> socket(int fd);
    void add_socket(int fd, std::shared_ptr<ShimSocket> s);
    void set_private(int fd, std::weak_ptr<ShimLease> lease);
    // A lease closing its own descriptor.
    void clear_private(int fd);
    // `fd` was closed or is about to be replaced: what it held is dropped.
    // A Private one is marked stolen: its lease is renewed on next use and
    // never closes the number, which is the application's now.
    void forget(int fd);
    void forget_range(unsigned first, unsigned last);
    // `to` was made a duplicate of `from` (dup, dup2, F_DUPFD).
    void copy(int from, int to);

    void lock() { m_.lock(); }
    void unlock() { m_.unlock(); }

private:
    static constexpr int kFast = 65536;
    void set_mark_locked(int fd, Mark m);
    // What forget() drops, handed out so it dies with the lock released
    // (a ShimSocket's end closes its leases, which call clear_private()).
    std::shared_ptr<ShimSocket> forget_locked(int fd);

    mutable std::mutex m_;
    std::unordered_map<int, std::shared_ptr<ShimSocket>> sockets_;
    std::unordered_map<int, std::weak_ptr<ShimLease>> private_;
    std::unordered_map<int, Mark> big_marks_;   // marks of fd >= kFast
    std::atomic<uint8_t> marks_[kFast] = {};
};

}  // namespace s5::socksify
