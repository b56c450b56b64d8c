#include "bus_creds.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "log.hpp"

namespace s5d {

namespace {

// sdbus-c++ 1.2.0 keeps the sd_bus_message behind a protected member; a
// pointer to it, formed in a derived class, reads it on any Message.
struct MessageAccess : sdbus::Message {
    static sd_bus_message* raw(const sdbus::Message& m) {
        return static_cast<sd_bus_message*>(m.*(&MessageAccess::msg_));
    }
};

bool is_unique_name(const char* s) { return s && s[0] == ':'; }

// Reads UnixUserID (u) and UnixGroupIDs (au) from the a{sv} answer; other
// entries (ProcessID, LinuxSecurityLabel, ...) are skipped. Returns a
// negative errno when the answer is malformed or has no uid.
int parse_credentials(sd_bus_message* reply, PeerCreds& out) {
    bool have_uid = false;
    int r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "{sv}");
    if (r < 0) return r;
    while ((r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
        const char* key = nullptr;
        if ((r = sd_bus_message_read_basic(reply, SD_BUS_TYPE_STRING, &key)) < 0) return r;
        if (std::strcmp(key, "UnixUserID") == 0) {
            uint32_t uid = 0;
            if ((r = sd_bus_message_read(reply, "v", "u", &uid)) < 0) return r;
            out.uid = static_cast<uid_t>(uid);
            have_uid = true;
        } else if (std::strcmp(key, "UnixGroupIDs") == 0) {
            if ((r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_VARIANT, "au")) < 0) return r;
            const void* data = nullptr;
            size_t size = 0;
            if ((r = sd_bus_message_read_array(reply, SD_BUS_TYPE_UINT32, &data, &size)) < 0) return r;
            const auto* gids = static_cast<const uint32_t*>(data);
            out.gids.assign(gids, gids + size / sizeof(uint32_t));
            if ((r = sd_bus_message_exit_container(reply)) < 0) return r;
        } else {
            if ((r = sd_bus_message_skip(reply, "v")) < 0) return r;
        }
        if ((r = sd_bus_message_exit_container(reply)) < 0) return r;
    }
    if (r < 0) return r;
    if ((r = sd_bus_message_exit_container(reply)) < 0) return r;
    return have_uid ? 0 : -ENODATA;
}

void reply_error(sd_bus_message* m, const char* name, const char* text) {
    if (!sd_bus_message_get_expect_reply(m)) return;
    sd_bus_error e = SD_BUS_ERROR_MAKE_CONST(name, text);
    (void)sd_bus_reply_method_error(m, &e);
}

}  // namespace

bool PeerCreds::in_group(gid_t g) const { return std::find(gids.begin(), gids.end(), g) != gids.end(); }

sd_bus* raw_bus(sdbus::IConnection& conn) {
    auto proxy = sdbus::createProxy(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    auto call = proxy->createMethodCall("org.freedesktop.DBus", "GetId");
    sd_bus* bus = sd_bus_message_get_bus(MessageAccess::raw(call));
    if (!bus) throw std::runtime_error("no sd_bus behind the connection");
    return sd_bus_ref(bus);
}

BusCreds::BusCreds(sdbus::IConnection& conn) : bus_(raw_bus(conn)) {
    int r = sd_bus_add_filter(bus_, &filter_slot_, &BusCreds::on_message, this);
    if (r < 0) {
        sd_bus_unref(bus_);
        throw std::runtime_error(std::string("sd_bus_add_filter: ") + std::strerror(-r));
    }
}

BusCreds::~BusCreds() {
    for (auto& [name, p] : pending_) drop(p);
    sd_bus_slot_unref(filter_slot_);
    sd_bus_unref(bus_);
}

const PeerCreds* BusCreds::current() const {
    // sd-bus sets the current message for the whole dispatch, property
    // getters included (sdbus-c++ tells its handlers only about methods).
    sd_bus_message* m = sd_bus_get_current_message(bus_);
    const char* sender = m ? sd_bus_message_get_sender(m) : nullptr;
    return sender ? find(sender) : nullptr;
}

bool BusCreds::current_may_read(uid_t owner) const {
    const PeerCreds* c = current();
    return c && (c->uid == 0 || c->uid == owner);
}

const PeerCreds* BusCreds::find(const std::string& unique_name) const {
    auto it = known_.find(unique_name);
    return it == known_.end() ? nullptr : &it->second;
}

void BusCreds::forget(const std::string& unique_name) {
    known_.erase(unique_name);
    if (auto it = pending_.find(unique_name); it != pending_.end()) {
        drop(it->second);
        pending_.erase(it);
    }
}

void BusCreds::drop(Pending& p) {
    sd_bus_slot_unref(p.slot);
    p.slot = nullptr;
    for (auto* m : p.held) sd_bus_message_unref(m);
    p.held.clear();
}

int BusCreds::on_message(sd_bus_message* m, void* userdata, sd_bus_error*) {
    try {
        return static_cast<BusCreds*>(userdata)->filter(m);
    } catch (...) {
        // Out of memory at worst: let the call through; its handler finds no
        // credentials and refuses it.
        return 0;
    }
}

int BusCreds::filter(sd_bus_message* m) {
    uint8_t type = 0;
    if (sd_bus_message_get_type(m, &type) < 0 || type != SD_BUS_MESSAGE_METHOD_CALL) return 0;
    if (call_hook_)
        if (const char* path = sd_bus_message_get_path(m)) call_hook_(path);
    const char* sender = sd_bus_message_get_sender(m);
    if (!is_unique_name(sender)) return 0;   // peer-to-peer, or the bus daemon itself
    if (known_.count(sender)) return 0;

    auto it = pending_.find(sender);
    if (it == pending_.end()) {
        if (pending_.size() >= kMaxLookups) {
            reply_error(m, SD_BUS_ERROR_LIMITS_EXCEEDED, "too many new callers at once; try again");
            return 1;
        }
        it = pending_.emplace(sender, Pending{}).first;
        Pending& p = it->second;
        // The lookup lives in the Pending entry; forget() unrefs the slot
        // (so the callback never runs) before the entry goes.
        p.lookup = std::make_unique<Lookup>(Lookup{this, sender});
        int r = sd_bus_call_method_async(bus_, &p.slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "GetConnectionCredentials", &BusCreds::on_reply,
                                         p.lookup.get(), "s", sender);
        if (r < 0) {
            pending_.erase(it);
            log_warning("cannot ask the bus for the credentials of %s: %s", sender, std::strerror(-r));
            reply_error(m, SD_BUS_ERROR_FAILED, "cannot get the caller's credentials from the bus");
            return 1;
        }
    }
    Pending& p = it->second;
    if (p.held.size() >= kMaxHeldPerSender) {
        reply_error(m, SD_BUS_ERROR_LIMITS_EXCEEDED, "too many calls while the caller's credentials are looked up");
        return 1;
    }
    p.held.push_back(sd_bus_message_ref(m));
    return 1;   // held: nobody else sees it now
}

int BusCreds::on_reply(sd_bus_message* reply, void* userdata, sd_bus_error*) {
    const auto* lookup = static_cast<const Lookup*>(userdata);
    try {
        // A copy: answered() frees the lookup with its Pending entry.
        const std::string name = lookup->name;
        lookup->self->answered(name, reply);
    } catch (...) {
        log_error("credentials lookup: unexpected exception");
    }
    return 0;
}

void BusCreds::answered(const std::string& name, sd_bus_message* reply) {
    auto it = pending_.find(name);
    if (it == pending_.end()) return;
    Pending p = std::move(it->second);
    pending_.erase(it);
    // sd-bus holds its own reference while this reply's callback runs.
    sd_bus_slot_unref(p.slot);
    p.slot = nullptr;

    PeerCreds creds;
    const sd_bus_error* err = sd_bus_message_get_error(reply);
    int r = err ? -EIO : parse_credentials(reply, creds);
    if (r < 0) {
        // Most often the caller left before the bus daemon answered; its
        // held calls have nobody to reply to.
        log_debug("no credentials for %s: %s", name.c_str(), err ? err->message : std::strerror(-r));
        for (auto* m : p.held) {
            reply_error(m, SD_BUS_ERROR_ACCESS_DENIED, "the bus daemon gave no credentials for the caller");
            sd_bus_message_unref(m);
        }
        return;
    }
    known_.emplace(name, std::move(creds));
    for (auto* m : p.held) {
        r = sd_bus_enqueue_for_read(bus_, m);
        if (r < 0) {
            log_warning("cannot requeue a call from %s: %s", name.c_str(), std::strerror(-r));
            reply_error(m, SD_BUS_ERROR_FAILED, "internal error");
        }
        sd_bus_message_unref(m);
    }
}

}  // namespace s5d
