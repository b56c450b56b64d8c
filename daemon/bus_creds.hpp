// Who is calling: every method call's sender credentials, taken from the bus
// daemon (org.freedesktop.DBus.GetConnectionCredentials: UnixUserID and
// UnixGroupIDs), asked asynchronously once per unique name and cached until
// the name leaves the bus.
//
// Why not sd-bus's own sd_bus_query_sender_creds() (sdbus-c++'s
// getCredsUid()): it is a synchronous call to the bus daemon, and with its
// AUGMENT flag it completes the answer from /proc/<pid>, which the service's
// own ProtectProc=invisible hides, so under the installed unit every caller
// looked credential-less. And not from the user database either: NSS may
// block on the network. The bus daemon took the uid and groups from the
// socket (SO_PEERCRED, SO_PEERGROUPS) when the caller connected.
//
// How a handler gets them synchronously without ever blocking the loop: an
// sd-bus filter sees every incoming method call before any object does. A
// call from a sender whose credentials are not known yet is held (a message
// reference), the question goes to the bus daemon, and when the answer
// arrives the held calls are put back on the connection's read queue
// (sd_bus_enqueue_for_read) in their original order; the filter then lets
// them through, and every handler finds the sender in the cache.
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sdbus { class IConnection; }

namespace s5d {

struct PeerCreds {
    uid_t uid = 0;
    std::vector<gid_t> gids;    // primary and supplementary, as the bus daemon reports them
    bool in_group(gid_t g) const;
};

class BusCreds {
public:
    explicit BusCreds(sdbus::IConnection& conn);
    ~BusCreds();
    BusCreds(const BusCreds&) = delete;
    BusCreds& operator=(const BusCreds&) = delete;

    // The credentials of a sender whose call is being handled; nullptr only
    // for a sender the filter did not see (a peer-to-peer message).
    const PeerCreds* find(const std::string& unique_name) const;
    // The sender of the message being dispatched (a method call, or the
    // Properties.Get/GetAll a property getter runs for); nullptr outside a
    // dispatch or for a sender the filter did not see.
    const PeerCreds* current() const;
    // Whether that sender may read what `owner` holds: the owner or root.
    bool current_may_read(uid_t owner) const;
    // The name left the bus (NameOwnerChanged): forget it, drop held calls.
    void forget(const std::string& unique_name);

    // Bounds: a sender may have this many calls held while its credentials
    // are asked for, and this many senders may be asked about at once;
    // past either, the call gets LimitsExceeded at once.
    static constexpr size_t kMaxHeldPerSender = 64;
    static constexpr size_t kMaxLookups = 256;

    size_t cached() const { return known_.size(); }

    // Called with the object path of every incoming method call, before
    // any object sees it (and again when a held call is requeued): the bus
    // glue publishes a lease's object only when somebody asks for it.
    void set_call_hook(std::function<void(const char* path)> hook) { call_hook_ = std::move(hook); }

private:
    struct Lookup {
        BusCreds* self;
        std::string name;
    };
    struct Pending {
        std::vector<sd_bus_message*> held;     // referenced; released or re-queued
        sd_bus_slot* slot = nullptr;           // the outstanding GetConnectionCredentials
        std::unique_ptr<Lookup> lookup;        // its callback's userdata
    };

    std::function<void(const char* path)> call_hook_;
    static int on_message(sd_bus_message* m, void* userdata, sd_bus_error* ret_error);
    static int on_reply(sd_bus_message* reply, void* userdata, sd_bus_error* ret_error);
    int filter(sd_bus_message* m);
    void answered(const std::string& name, sd_bus_message* reply);
    static void drop(Pending& p);

    sd_bus* bus_ = nullptr;
    sd_bus_slot* filter_slot_ = nullptr;
    std::map<std::string, PeerCreds> known_;
    std::map<std::string, Pending> pending_;
};

// The sd_bus behind an sdbus-c++ connection (sdbus-c++ 1.2.0 has no getter:
// it is read off a message the connection creates), with a new reference.
sd_bus* raw_bus(sdbus::IConnection& conn);

}  // namespace s5d
