// The process-local table of leases (design.md §2, §4): which descriptors
// are lease sockets handed out by s5brokerd, what each lease's relay and
// source IP are now, and which relays datagrams may come from.
//
// A lease is keyed by its descriptor number and validated by the socket's
// inode (st_dev/st_ino), so a number the application closed and reused is
// never mistaken for the lease. Lease events (wire.hpp) are read from the
// lease socket without blocking and applied in order; the table keeps the
// latest state:
//
//   pending --Ready/Renewed--> active --Renewed (newer generation)--> active
//   active --Renewing (this or a newer generation)--> renewing
//   renewing --Renewed (newer generation)--> active
//   pending/active/renewing --Lost, EOF or a socket error--> lost (final)
//
// While renewing, the relay stays the last one (datagrams from it are still
// accepted) but the C API refuses to send to it: EAGAIN + S5_ERENEWING.
// A Renewing whose generation is newer than the table's (the broker
// replaced an unsent Ready/Renewed with it) also brings that generation's
// relay and source. Brokers that do not send Renewing go straight from
// active to active.
//
// Entries are added by socks5udp_associate() and removed when a call finds
// the descriptor closed or reused (and, lazily, by a sweep when the table
// has doubled since the last one). A lost lease stays until then, so calls
// keep reporting the loss. One mutex guards everything; nothing blocks
// while holding it but MSG_DONTWAIT reads and fstat(). A forked child keeps
// the table: it inherits the descriptors.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "unique_fd.hpp"
#include "wire.hpp"

namespace s5::client {

enum class LeaseState { Pending, Active, Renewing, Lost };

// A copy of one lease's state, safe to use after the lock is released.
struct LeaseInfo {
    int fd = -1;
    LeaseState state = LeaseState::Pending;
    uint32_t generation = 0;
    s5::wire::Endpoint relay;       // current relay (renewing: the ended one); unset while pending or once lost
    s5::wire::Endpoint source;      // IP to send from (port unused); may be unset
    bool source_refused = false;    // the kernel refused `source` as a local address
    int err = 0;                    // lost: errno to report
    int s5err = 0;                  // lost: socks5_errno to report
    bool completed = false;         // socks5udp_associate() has returned 0 for it
    bool direct = false;            // direct mode: fd is the TCP control connection
    // The association came with its claim socket (claim_socket.hpp): its
    // datagrams must leave from that socket, bound to `source`, which is
    // in place on descriptor `placed` (-1: not yet).
    bool claimed = false;
    int placed = -1;
};

struct EndpointHash {
    size_t operator()(const s5::wire::Endpoint& e) const noexcept;
};

class LeaseTable {
public:
    // The table the C API uses (process_global.hpp: never destroyed, its
    // lock held across fork()).
    static LeaseTable& global();

    LeaseTable() = default;
    LeaseTable(const LeaseTable&) = delete;
    LeaseTable& operator=(const LeaseTable&) = delete;

    // Records descriptor `fd` as a lease whose socket is `lease_fd` (the same
    // socket; it may be a different descriptor that is about to be dup3()ed
    // onto `fd`). Replaces any entry for `fd`. Returns the lease's state, or
    // nullopt if `lease_fd` cannot be fstat()ed.
    //
    // `relay` is the relay of the Associate reply: the lease is active and
    // completed, and the one event the broker queued before replying (Ready,
    // with the source IP) is read at once, so a poll() on the lease only
    // wakes for what comes later. nullptr: the lease is pending and nothing
    // is read, so the socket becomes readable when Ready or Lost arrives,
    // however soon that is.
    std::optional<LeaseInfo> add(int fd, int lease_fd, const s5::wire::Endpoint* relay);

    // Records the direct-mode association (direct.hpp) whose control
    // connection is `fd` itself: active and completed at once, with `relay`
    // and the `source` IP datagrams must come from. Nothing is ever read
    // from `fd` (it is a TCP stream, not a lease socket) and it is never
    // renewed or marked lost: datagram calls keep using `relay` even after
    // the control connection ended. nullopt if `fd` cannot be fstat()ed.
    std::optional<LeaseInfo> add_direct(int fd, const s5::wire::Endpoint& relay,
                                        const s5::wire::Endpoint& source);

    void remove(int fd);

    // The lease on `fd` with its pending events applied; nullopt if `fd` is
    // not a lease of this process (any stale entry for it is dropped).
    std::optional<LeaseInfo> lookup(int fd);

    // socks5udp_associate() returned 0 for the lease on `fd`.
    void mark_completed(int fd);

    // The hot path of socks5udp_sendto(): the lease that has (or had) `relay`
    // as its relay, with its pending events applied. Costs one lookup under
    // the lock and one recv(MSG_PEEK | MSG_DONTWAIT) on the lease socket when
    // nothing happened. nullopt when no lease of this process knows `relay`.
    std::optional<LeaseInfo> route(const s5::wire::Endpoint& relay);

    // Puts the claim socket of the lease on `fd` in place of the UDP socket
    // `udp` (claim_socket.hpp), unless it is there already; the lease's
    // later claim sockets (renewals) go there too. Returns 0 (also for a
    // lease without a claim socket), EADDRINUSE when `udp` carries another
    // lease's claim socket (one socket per association: the server takes
    // datagrams from one source port), EINVAL when `fd` is no lease, or
    // put_in_place()'s errno.
    int place(int fd, int udp);

    // A datagram from `source` for the lease on `fd` went out only without
    // that source address (not local here): stop using it until the broker
    // declares another.
    void refuse_source(int fd, const s5::wire::Endpoint& source);

    // Is `from` the current relay of an active lease of this process?
    bool is_current_relay(const s5::wire::Endpoint& from) const;

    size_t size() const;

    // For process_global's fork handlers.
    void lock() { m_.lock(); }
    void unlock() { m_.unlock(); }

private:
    struct Lease {
        dev_t dev = 0;
        ino_t ino = 0;
        LeaseInfo info;
        // Relays this lease has had, oldest (the rendezvous first handed
        // out) first; each is a key of by_relay_ unless a newer lease took it.
        std::vector<s5::wire::Endpoint> relays;
        // The current claim socket (the library's copy, close-on-exec) and
        // its inode: descriptor info.placed is that socket while its inode
        // matches.
        s5::UniqueFd claim;
        dev_t claim_dev = 0;
        ino_t claim_ino = 0;
    };

    // All *_locked members expect m_ held.
    std::optional<LeaseInfo> refresh_locked(int fd);
    bool same_socket_locked(int fd, const Lease& l) const;
    // Reads and applies queued events, at most `max` of them.
    void drain_locked(Lease& l, int read_fd, size_t max = SIZE_MAX);
    // `sock`: the descriptor that came with the record (-1: none); the
    // table keeps it when the event is applied, else closes it.
    void apply_locked(Lease& l, const s5::wire::LeaseEvent& ev, s5::UniqueFd sock);
    // The event's relay, source, generation and claim socket become the
    // lease's; a placed claim socket is replaced by the new one.
    void take_association_locked(Lease& l, const s5::wire::LeaseEvent& ev, s5::UniqueFd sock);
    int place_locked(Lease& l, int udp);
    bool is_claim_of_locked(int udp, const Lease& l) const;
    void set_relay_locked(Lease& l, const s5::wire::Endpoint& relay);
    void clear_current_locked(Lease& l);
    void mark_lost_locked(Lease& l, int err, int s5err);
    void remove_locked(int fd);
    // A fresh entry for `fd` (any old one removed), for the socket `st` describes.
    Lease& insert_locked(int fd, const struct stat& st);
    void sweep_locked();

    mutable std::mutex m_;
    std::unordered_map<int, Lease> leases_;
    // Every relay a lease has had -> that lease's fd; the newest holder wins.
    std::unordered_map<s5::wire::Endpoint, int, EndpointHash> by_relay_;
    // Descriptors claim sockets were put in place on -> the lease's fd.
    std::unordered_map<int, int> placed_;
    // Current relays of active leases -> how many leases use it.
    std::unordered_map<s5::wire::Endpoint, int, EndpointHash> current_;
    size_t sweep_at_ = kMinSweep;
    static constexpr size_t kMinSweep = 64;
    static constexpr size_t kMaxRelaysKept = 8;  // the rendezvous + the 7 latest
};

// Endpoint with the bytes past ip_len() zeroed, and IPv4-mapped IPv6
// addresses (::ffff:a.b.c.d, as an AF_INET6 socket reports IPv4 peers)
// turned into AF_INET, so equal addresses compare and hash equal.
s5::wire::Endpoint normalized(const s5::wire::Endpoint& e);

}  // namespace s5::client
