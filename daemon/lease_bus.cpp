#include "lease_bus.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include "broker_adaptor.h"
#include "bus_creds.hpp"
#include "bus_util.hpp"
#include "lease.hpp"
#include "server_pool_bus.hpp"

namespace s5d {

using namespace busutil;

class LeaseObject final
    : public sdbus::AdaptorInterfaces<org::s5broker::Broker1::Lease_adaptor, sdbus::Properties_adaptor> {
public:
    LeaseObject(sdbus::IConnection& conn, const Lease& l, const BusCreds& creds)
        : AdaptorInterfaces(conn, l.path()), lease_(l), creds_(creds) {
        registerAdaptor();
    }
    ~LeaseObject() { unregisterAdaptor(); }

    void lost(const std::string& why) {
        emitLost(why);
        emitPropertiesChangedSignal(kLeaseIface, {"State"});
    }
    void renewed() {
        emitRenewed(lease_.generation(), lease_.relay().ip_bytes(), lease_.relay().port);
        changed();
    }
    void changed() { emitPropertiesChangedSignal(kLeaseIface, {"State", "Server", "Relay", "Generation"}); }

private:
    // The relay is where a stranger's datagrams would have to go to break
    // or use the association; the owner and the rest are nobody else's
    // business either. GetAll fails as a whole.
    void require_reader() const {
        if (!creds_.current_may_read(lease_.uid()))
            throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied",
                               "lease " + lease_.path() + " belongs to another user");
    }
    uint32_t Owner() override {
        require_reader();
        return static_cast<uint32_t>(lease_.uid());
    }
    sdbus::ObjectPath Server() override {
        require_reader();
        // A pending lease has no server yet: the manager object stands in.
        return sdbus::ObjectPath(lease_.server_name().empty() ? kManagerPath : server_path(lease_.server_name()));
    }
    sdbus::Struct<std::vector<uint8_t>, uint16_t> Relay() override {
        require_reader();
        return relay_struct(lease_.relay());
    }
    uint32_t Generation() override {
        require_reader();
        return lease_.generation();
    }
    uint64_t Created() override {
        require_reader();
        return lease_.created_realtime_usec();
    }
    std::string State() override {
        require_reader();
        return to_string(lease_.state());
    }

    const Lease& lease_;      // the object dies before the lease (lease_removed)
    const BusCreds& creds_;   // the Bus's, which outlives its objects
};

void LeaseObjectDeleter::operator()(LeaseObject* o) const { delete o; }

LeaseObjectPtr make_lease_object(sdbus::IConnection& conn, const Lease& lease, const BusCreds& creds) {
    return LeaseObjectPtr(new LeaseObject(conn, lease, creds));
}

void announce_changed(LeaseObject& o) { o.changed(); }
void announce_renewed(LeaseObject& o) { o.renewed(); }
void announce_lost(LeaseObject& o, const std::string& why) { o.lost(why); }

}  // namespace s5d
