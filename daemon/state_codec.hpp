// The broker's durable state, as it lies in the state memfd that systemd's
// file descriptor store keeps across restarts and crashes (docs/design.md
// §12). Pure: encoding and parsing only, no I/O; the image is untrusted
// input to the next broker (it may be truncated, corrupt or from another
// version), so parse() checks everything and fuzz_state fuzzes it.
//
// The image is an array of fixed-size slots. Slot 0 is the header; every
// other slot is free (all zero) or holds one record: a lease or a ready
// association. Each change rewrites exactly one slot with one pwrite(), so
// a crash between two changes leaves a consistent image; a record names the
// file descriptors it owns by number, and the descriptors themselves are in
// the store under names made from those numbers (fd_name_*).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "wire.hpp"

namespace s5d::state {

constexpr size_t kSlotSize = 512;
constexpr uint32_t kVersion = 1;
using Slot = std::array<uint8_t, kSlotSize>;

// Field limits: longer text is cut when encoded, so every record fits.
constexpr size_t kMaxOwner = 128;       // a unique bus name (":1.42")
constexpr size_t kMaxServer = 64;       // config: server names are 1..64
constexpr size_t kMaxError = 160;       // Lease.LastError, cut

struct Header {
    uint64_t epoch = 0;                 // one more on every broker start that restores
    uint64_t next_lease_id = 0;
    std::map<std::string, uint64_t> stats;
    bool operator==(const Header&) const = default;
};

// lease.hpp's LeaseState, as stored.
enum class LeaseState : uint8_t { Pending = 0, Active = 1, Renewing = 2, Lost = 3 };

struct LeaseRecord {
    uint64_t id = 0;
    uint32_t uid = 0;
    std::string owner;                  // the bus name that asked (informational)
    s5::wire::Endpoint dst;
    std::string server;                 // empty while pending
    uint32_t generation = 0;
    LeaseState state = LeaseState::Pending;
    s5::wire::Endpoint relay, source;
    uint64_t created_realtime_usec = 0;
    std::string last_error;
    int32_t err = 0, s5err = 0;         // why it was lost (Lost only)
    uint64_t association = 0;           // its association's id; 0: none
    bool operator==(const LeaseRecord&) const = default;
};

struct AssociationRecord {
    uint64_t id = 0;
    std::string server;                 // configured name
    s5::wire::Endpoint server_endpoint; // where it is connected: must still match the config
    // source: a port other than 0 says the association was claimed by a
    // socket of the broker's, stored as fd_name_claim(id).
    s5::wire::Endpoint relay, source;
    uint64_t ready_since_usec = 0;      // CLOCK_MONOTONIC (the same in every process of a boot)
    bool operator==(const AssociationRecord&) const = default;
};

struct Image {
    Header header;
    std::vector<LeaseRecord> leases;            // by slot order
    std::vector<AssociationRecord> associations;
};

Slot encode(const Header& h);
Slot encode(const LeaseRecord& r);
Slot encode(const AssociationRecord& r);
inline Slot free_slot() { return Slot{}; }

// The whole image, or why it cannot be used (one line). Never throws.
// Checks: size (a whole number of slots, at least the header), magic,
// version and slot size, each record's length and checksum, every field
// (families, lease states, text lengths), unique ids, and that a lease
// names at most one association that no other lease names. A lease may
// name an association that has no record (it was being replaced when the
// old broker stopped): restore treats it as renewing.
std::variant<Image, std::string> parse(std::span<const uint8_t> image);

// The names the file descriptors have in systemd's store (FDNAME=).
std::string fd_name_lease(uint64_t lease_id);        // "lease-<id>": the broker's end
std::string fd_name_association(uint64_t assoc_id);  // "assoc-<id>": the control connection
std::string fd_name_claim(uint64_t assoc_id);        // "claim-<id>": its claim socket (UDP)
std::string fd_name_state(uint64_t epoch);           // "state-<epoch>": the memfd
// Parses a stored name back: kind is 'l', 'a', 'c' or 's'; nullopt for others.
std::optional<std::pair<char, uint64_t>> parse_fd_name(std::string_view name);

}  // namespace s5d::state
