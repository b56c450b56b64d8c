#include "log_control.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include "bus_creds.hpp"
#include "log.hpp"
#include "logcontrol_adaptor.h"

namespace s5d {

class LogControlObject final
    : public sdbus::AdaptorInterfaces<org::freedesktop::LogControl1_adaptor, sdbus::Properties_adaptor> {
public:
    LogControlObject(sdbus::IConnection& conn, const BusCreds& creds)
        : AdaptorInterfaces(conn, "/org/freedesktop/LogControl1"), creds_(creds) {
        registerAdaptor();
    }
    ~LogControlObject() { unregisterAdaptor(); }

private:
    // The bus policy already lets only root Set; this is the second door,
    // with the credentials the bus daemon gave (bus_creds.hpp).
    void require_root() {
        const sdbus::Message* msg = getObject().getCurrentlyProcessedMessage();
        const PeerCreds* c = msg ? creds_.find(msg->getSender()) : nullptr;
        if (!c || c->uid != 0)
            throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied", "only root may change logging");
    }

    std::string LogLevel() override { return log::level_name(log::max_level()); }
    void LogLevel(const std::string& value) override {
        require_root();
        log::Level l;
        if (!log::parse_level(value, l))
            throw sdbus::Error("org.freedesktop.DBus.Error.InvalidArgs", "unknown log level \"" + value + "\"");
        log::set_max_level(l);
        log_notice("log level set to %s", value.c_str());
    }
    std::string LogTarget() override { return log::target_name(log::target()); }
    void LogTarget(const std::string& value) override {
        require_root();
        log::Target t;
        if (!log::parse_target(value, t))
            throw sdbus::Error("org.freedesktop.DBus.Error.InvalidArgs", "unknown log target \"" + value + "\"");
        log::set_target(t);
    }
    std::string SyslogIdentifier() override { return "s5brokerd"; }

    const BusCreds& creds_;
};

LogControl::LogControl(sdbus::IConnection& conn, const BusCreds& creds)
    : obj_(std::make_unique<LogControlObject>(conn, creds)) {}
LogControl::~LogControl() = default;

}  // namespace s5d
