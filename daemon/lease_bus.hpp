// D-Bus glue of a Lease object (/org/s5broker/Broker1/lease/<id>,
// org.s5broker.Broker1.Lease): a Lease (lease.cpp) as properties, and its
// Renewed and Lost signals.
#pragma once

#include <memory>
#include <string>

namespace sdbus { class IConnection; }

namespace s5d {

class BusCreds;
class Lease;
class LeaseObject;
struct LeaseObjectDeleter {
    void operator()(LeaseObject* o) const;
};
using LeaseObjectPtr = std::unique_ptr<LeaseObject, LeaseObjectDeleter>;

// Its properties answer only the lease's owner and root (`creds` tells who
// is asking); anyone else gets AccessDenied.
LeaseObjectPtr make_lease_object(sdbus::IConnection& conn, const Lease& lease, const BusCreds& creds);
void announce_changed(LeaseObject& o);                 // state, server, relay, generation
void announce_renewed(LeaseObject& o);                 // Renewed, then changed
void announce_lost(LeaseObject& o, const std::string& why);

}  // namespace s5d
