// A lease: one application's claim on one association (docs/design.md §4). The
// application holds one end of a SOCK_SEQPACKET socketpair (the "lease fd",
// dup'ed onto its Socket by libs5client); the broker holds the other, writes
// lease events on it, and releases the lease when it reads EOF.
//
// States: pending (non-blocking request, no association yet) -> active
// <-> renewing (control connection lost, waiting for a new association)
// -> lost (no association within the grace time; final).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "association.hpp"
#include "durable_state.hpp"
#include "event_loop.hpp"
#include "state_codec.hpp"
#include "wire.hpp"

namespace s5d {

using s5::UniqueFd;

enum class LeaseState { Pending, Active, Renewing, Lost };
const char* to_string(LeaseState s);

class Lease {
public:
    // Creates the socketpair; throws std::system_error when out of fds.
    // `on_eof` runs from the loop when the application's end is closed.
    // Without an association the lease starts Pending.
    // `durable` (may be null): the broker's end goes into systemd's fd
    // store and the lease's record into the state memfd.
    Lease(EventLoop& loop, uint64_t id, uid_t uid, std::string owner, s5::wire::Endpoint dst,
          std::unique_ptr<Association> assoc, std::function<void(Lease&)> on_eof, DurableState* durable = nullptr);
    // A lease an earlier broker granted, from its record and its end as
    // the fd store kept it (already stored). State, generation, relay and
    // source are the record's; `assoc` is its association if that is still
    // alive. An Active lease without one must be detach_for_renewal()ed.
    Lease(EventLoop& loop, const state::LeaseRecord& rec, UniqueFd broker_end, std::unique_ptr<Association> assoc,
          std::function<void(Lease&)> on_eof, DurableState* durable);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    uint64_t id() const { return id_; }
    const std::string& path() const { return path_; }
    uid_t uid() const { return uid_; }
    const std::string& owner() const { return owner_; }
    const s5::wire::Endpoint& dst() const { return dst_; }
    const std::string& server_name() const { return server_name_; }
    uint32_t generation() const { return generation_; }
    LeaseState state() const { return state_; }
    const s5::wire::Endpoint& relay() const { return relay_; }
    const s5::wire::Endpoint& source() const { return source_; }
    Association* association() const { return assoc_.get(); }
    Clock::time_point created() const { return created_; }
    uint64_t created_realtime_usec() const { return created_realtime_usec_; }
    const std::string& last_error() const { return last_error_; }

    // The application's end, to send in the Associate reply. Call once: the
    // lease keeps no copy, so the application's close is the broker's EOF.
    UniqueFd take_client_end() { return std::move(client_end_); }

    // Pending -> Active (gen 1, Ready event) or Renewing -> Active (gen+1,
    // Renewed event) with a new association.
    void attach(std::unique_ptr<Association> assoc);
    // Whether the application has closed its end (all its copies), seen
    // now, before the loop gets to the EOF event.
    bool app_closed() const;
    // Whether the application may not have this lease in hand yet: no
    // event sent so far (pending), or events still unread in its end
    // (SIOCOUTQ of ours). False once it read what it was sent.
    bool unread() const;
    // Active -> Renewing: the association is gone; tells the application
    // (a Renewing event) and returns the association for disposal.
    std::unique_ptr<Association> detach_for_renewal();
    // Any -> Lost (final): tell the application why. Returns the
    // association, if any, for disposal.
    std::unique_ptr<Association> mark_lost(int err, int s5err, const std::string& why);
    // On release: the association, if any, for disposal.
    // (The record keeps naming it: the lease's record goes with the lease.)
    std::unique_ptr<Association> take_association() { return std::move(assoc_); }
    // After a restore: tells the application the current state again, in
    // case the old broker died with that event unsent (the library ignores
    // a generation it has already seen).
    void resend_state() { send_current(); }
    state::LeaseRecord record() const;

private:
    void on_broker_end(uint32_t revents);
    void send_event(const s5::wire::LeaseEvent& ev);
    bool try_send(const s5::wire::LeaseEvent& ev);   // false: no room now
    void flush_unsent();
    std::optional<s5::wire::LeaseEvent> current_event() const;
    void send_current();
    void watch_broker_end();
    void save();   // the record, before the event that tells of the change


    static constexpr unsigned kMaxReadsPerWakeup = 16;
    EventLoop& loop_;
    uint64_t id_;
    std::string path_;
    uid_t uid_;
    std::string owner_;
    s5::wire::Endpoint dst_;
    std::string server_name_;
    std::unique_ptr<Association> assoc_;
    uint32_t generation_ = 0;
    LeaseState state_ = LeaseState::Pending;
    s5::wire::Endpoint relay_, source_;
    Clock::time_point created_;
    uint64_t created_realtime_usec_ = 0;
    std::string last_error_;
    UniqueFd broker_end_, client_end_;
    IoWatch watch_;
    std::optional<s5::wire::LeaseEvent> unsent_;     // the latest event, waiting for room
    std::unique_ptr<Timer> more_;                    // reads past kMaxReadsPerWakeup, made when needed
    std::function<void(Lease&)> on_eof_;
    int lost_err_ = 0, lost_s5err_ = 0;              // of the Lost event
    DurableState* durable_ = nullptr;                // null: not durable
    uint32_t slot_ = 0;                              // its record's slot in the state memfd
};

std::string lease_path(uint64_t id);

}  // namespace s5d
