// The client side of org.s5broker.Broker1.Manager, shared by libs5client
// and s5brokerctl: the proxy generated from the XML (broker_proxy.h), bound
// to the broker's well-known name and object path.
#pragma once

#include <sdbus-c++/sdbus-c++.h>

#include "broker_proxy.h"

namespace s5::bus {

inline constexpr const char* kBusName = "org.s5broker.Broker1";
inline constexpr const char* kManagerPath = "/org/s5broker/Broker1";

class ManagerProxy final : public sdbus::ProxyInterfaces<org::s5broker::Broker1::Manager_proxy> {
public:
    explicit ManagerProxy(sdbus::IConnection& conn) : ProxyInterfaces(conn, kBusName, kManagerPath) {
        registerProxy();
    }
    ~ManagerProxy() { unregisterProxy(); }
};

}  // namespace s5::bus
