// D-Bus glue of a Server object (/org/s5broker/Broker1/server/<name>,
// org.s5broker.Broker1.Server): ServerPool (server_pool.cpp) as properties,
// and their changes announced only when a value differs.
#pragma once

#include <memory>
#include <string>

namespace sdbus { class IConnection; }

namespace s5d {

class ServerPool;
class ServerObject;
struct ServerObjectDeleter {
    void operator()(ServerObject* o) const;
};
using ServerObjectPtr = std::unique_ptr<ServerObject, ServerObjectDeleter>;

ServerObjectPtr make_server_object(sdbus::IConnection& conn, const ServerPool& pool);
void announce_changes(ServerObject& o);
// Whether the server's State or LastError differs from what `o` announced
// last (the Bus sends those at once, not coalesced).
bool health_unannounced(const ServerObject& o);

// "/org/s5broker/Broker1/server/<name>"
std::string server_path(const std::string& name);

}  // namespace s5d
