#include "server_pool_bus.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include "broker_adaptor.h"
#include "bus_util.hpp"
#include "server_pool.hpp"

namespace s5d {

using namespace busutil;

class ServerObject final
    : public sdbus::AdaptorInterfaces<org::s5broker::Broker1::Server_adaptor, sdbus::Properties_adaptor> {
public:
    ServerObject(sdbus::IConnection& conn, const ServerPool& pool)
        : AdaptorInterfaces(conn, server_path(pool.name())), pool_(pool) {
        registerAdaptor();
    }
    ~ServerObject() { unregisterAdaptor(); }

    bool health_unannounced() const {
        return pool_.state_name() != last_.state || pool_.last_error() != last_.last_error;
    }

    // Emitted only when a value differs from what was last announced.
    void changed() {
        Snapshot now{pool_.state_name(), pool_.idle(), pool_.last_error()};
        std::vector<std::string> props;
        if (now.state != last_.state) props.push_back("State");
        if (now.idle != last_.idle) props.push_back("PoolIdle");
        if (now.last_error != last_.last_error) props.push_back("LastError");
        last_ = now;
        if (!props.empty()) emitPropertiesChangedSignal("org.s5broker.Broker1.Server", props);
    }

private:
    struct Snapshot {
        std::string state;
        unsigned idle = 0;
        std::string last_error;
    };

    std::string Name() override { return pool_.name(); }
    std::vector<uint8_t> Address() override { return pool_.server().endpoint.ip_bytes(); }
    uint16_t Port() override { return pool_.server().endpoint.port; }
    std::string AuthMethod() override {
        return pool_.server().auth.method == s5::config::AuthMethod::Username ? "username" : "none";
    }
    std::string State() override { return pool_.state_name(); }
    uint32_t PoolIdle() override { return pool_.idle(); }
    uint32_t PoolTarget() override { return pool_.min_idle(); }
    std::string LastError() override { return pool_.last_error(); }

    const ServerPool& pool_;  // outlives the object (Bus dies before Manager)
    Snapshot last_;
};

void ServerObjectDeleter::operator()(ServerObject* o) const { delete o; }

ServerObjectPtr make_server_object(sdbus::IConnection& conn, const ServerPool& pool) {
    return ServerObjectPtr(new ServerObject(conn, pool));
}

void announce_changes(ServerObject& o) { o.changed(); }
bool health_unannounced(const ServerObject& o) { return o.health_unannounced(); }

std::string server_path(const std::string& name) { return std::string(kManagerPath) + "/server/" + name; }

}  // namespace s5d
