// What keeps leases alive across a broker restart or crash (docs/design.md
// §12): systemd's file descriptor store holds every lease end and control
// connection while no broker runs, and a memfd in the same store holds the
// state that says what they are (state_codec.hpp).
//
// The broker writes through this class as things change: a descriptor
// goes into the store when it is made and leaves it (FDSTOREREMOVE) just
// before it is closed; a record is rewritten (one slot, one pwrite) on
// every change of the object it describes. Off systemd (no NOTIFY_SOCKET),
// or when the store refuses, it does nothing and the broker works as
// before, minus the durability.
//
// At shutdown the broker freezes it first: from then on nothing is removed
// or rewritten, so what the broker closes on its way out stays in the
// store for the next one (`systemctl stop` empties the store itself).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "notify_socket.hpp"
#include "state_codec.hpp"
#include "unique_fd.hpp"

namespace s5d {

using s5::UniqueFd;

// What an earlier broker left, as passed in LISTEN_FDS/LISTEN_FDNAMES.
struct StoredFds {
    std::map<std::string, UniqueFd> by_name;
    std::vector<std::string> unnamed;   // names that mean nothing to us, "unknown", duplicates
};
// Takes the passed descriptors (once, at start; unsets LISTEN_*) and makes
// them close-on-exec.
StoredFds take_stored_fds();

// The state to restore: the newest stored state memfd that parses. Takes
// every state-<epoch> out of `fds`; those not used are listed in `unused`
// (for the caller to drop from the store). `why`: why there is none
// usable, if state memfds were there.
struct PreviousState {
    std::optional<uint64_t> epoch;
    std::optional<state::Image> image;
    std::string why;
    std::vector<std::string> unused;
};
PreviousState take_previous_state(StoredFds& fds);

class DurableState {
public:
    using HeaderSource = std::function<state::Header()>;

    // Creates the state memfd (not yet in the store: see commit()).
    // nullptr when not under a service manager that could store it.
    static std::unique_ptr<DurableState> create(uint64_t epoch, HeaderSource header);
    ~DurableState();

    uint64_t epoch() const { return epoch_; }

    // FDSTORE=1 with the name; false when the manager refused or failed.
    bool keep_fd(const std::string& name, int fd);
    // FDSTOREREMOVE=1: before the descriptor is closed, so that closing it
    // closes it (the store holds a copy).
    void drop_fd(const std::string& name);

    // Writes a record into its slot (allocated on first use; `slot` 0 means
    // none yet); erase() frees the slot.
    void put(uint32_t& slot, const state::Slot& record);
    void erase(uint32_t& slot);
    // Rewrites the header: whenever a counter or the next lease id changes,
    // the next lease id before any record with an id from it is put (the
    // parser refuses a lease id the header does not cover).
    void touch();

    // The memfd goes into the store as state-<epoch>, and the state of the
    // broker before (if any) leaves it: from here on a crash restores
    // from this one.
    void commit(std::optional<uint64_t> previous_epoch);
    // Shutdown: the header once more (the counters as they end), then
    // nothing is dropped, written or freed any more.
    void freeze() {
        if (!frozen_) write_header();
        frozen_ = true;
    }
    bool frozen() const { return frozen_; }

    // Fds stored and slots in use, for the log and tests.
    size_t stored() const { return stored_; }

private:
    DurableState(UniqueFd memfd, uint64_t epoch, HeaderSource header);
    void write_slot(uint32_t slot, const state::Slot& s);
    void write_header();

    UniqueFd memfd_;
    NotifySocket notify_;
    uint64_t epoch_;
    HeaderSource header_;
    std::vector<uint32_t> free_;      // freed slots, reused first
    uint32_t next_slot_ = 1;          // slot 0 is the header
    size_t stored_ = 0;
    bool frozen_ = false;
    bool warned_ = false;
};

}  // namespace s5d
