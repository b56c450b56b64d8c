#include "lease_bus.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include "broker_adaptor.h"
#include "bus_util.hpp"
#include "lease.hpp"
#include "server_pool_bus.hpp"

namespace s5d {

using namespace busutil;

class LeaseObject final
    : public sdbus::AdaptorInterfaces<org::s5broker::Broker1::Lease_adaptor, sdbus::Properties_adaptor> {
public:
    LeaseObject(sdbus::IConnection& conn, const Lease& l) : AdaptorInterfaces(conn, l.path()), lease_(l) {
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
    uint32_t Owner() override { return static_cast<uint32_t>(lease_.uid()); }
    sdbus::ObjectPath Server() override {
        // A pending lease has no server yet: the manager object stands in.
        return sdbus::ObjectPath(lease_.server_name().empty() ? kManagerPath : server_path(lease_.server_name()));
    }
    sdbus::Struct<std::vector<uint8_t>, uint16_t> Relay() override { return relay_struct(lease_.relay()); }
    uint32_t Generation() override { return lease_.generation(); }
    uint64_t Created() override { return lease_.created_realtime_usec(); }
    std::string State() override { return to_string(lease_.state()); }

    const Lease& lease_;  // the object dies before the lease (lease_removed)
};

void LeaseObjectDeleter::operator()(LeaseObject* o) const { delete o; }

LeaseObjectPtr make_lease_object(sdbus::IConnection& conn, const Lease& lease) {
    return LeaseObjectPtr(new LeaseObject(conn, lease));
}

void announce_changed(LeaseObject& o) { o.changed(); }
void announce_renewed(LeaseObject& o) { o.renewed(); }
void announce_lost(LeaseObject& o, const std::string& why) { o.lost(why); }

}  // namespace s5d
