// D-Bus glue of the Manager object (/org/s5broker/Broker1, org.s5broker.Broker1.Manager):
// calls into Manager (manager.cpp) with the caller's credentials checked
// (bus_creds.hpp), replies, and the coalesced property signals.
#pragma once

#include <memory>
#include <string>

namespace sdbus { class IConnection; }

namespace s5d {

class Bus;
class ManagerObject;
struct ManagerObjectDeleter {
    void operator()(ManagerObject* o) const;
};
using ManagerObjectPtr = std::unique_ptr<ManagerObject, ManagerObjectDeleter>;

ManagerObjectPtr make_manager_object(sdbus::IConnection& conn, Bus& bus);
// PropertiesChanged of LeaseCount/Leases, and of Servers.
void announce_lease_count(ManagerObject& o);
void announce_servers(ManagerObject& o);

}  // namespace s5d
