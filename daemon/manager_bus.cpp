#include "manager_bus.hpp"

#include <fcntl.h>
#include <sdbus-c++/sdbus-c++.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "broker_adaptor.h"
#include "bus.hpp"
#include "bus_util.hpp"
#include "fd_reserve.hpp"
#include "s5broker_version.h"

namespace s5d {

using namespace busutil;

class ManagerObject final
    : public sdbus::AdaptorInterfaces<org::s5broker::Broker1::Manager_adaptor, sdbus::Properties_adaptor> {
public:
    ManagerObject(sdbus::IConnection& conn, Bus& bus) : AdaptorInterfaces(conn, kManagerPath), bus_(bus) {
        registerAdaptor();
    }
    ~ManagerObject() { unregisterAdaptor(); }

    void lease_count_changed() { emitPropertiesChangedSignal(kManagerIface, {"LeaseCount", "Leases"}); }

private:
    using AssociateResultT = sdbus::Result<sdbus::ObjectPath, sdbus::UnixFd, std::vector<uint8_t>, uint16_t>;

    struct Caller {
        std::string sender;
        uid_t uid;
        bool allowed;       // root or a member of allowed_groups
    };

    Caller caller() {
        const sdbus::Message* msg = getObject().getCurrentlyProcessedMessage();
        if (!msg) throw bus_error(Code::ServerFailure, "no message being processed");
        auto info = bus_.caller_info(*msg);
        return {msg->getSender(), info.uid, info.allowed};
    }

    // The bus policy is the first door; this is the second (docs/design.md §5).
    static void require_allowed(const Caller& c) {
        if (!c.allowed)
            throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied",
                               "uid " + std::to_string(c.uid) + " is neither root nor in allowed_groups");
    }

    void Associate(AssociateResultT&& result, std::vector<uint8_t> dst_address, uint16_t dst_port,
                   std::vector<uint8_t> server_address, uint16_t server_port,
                   std::map<std::string, sdbus::Variant> options) override {
        // Shared: std::function needs a copyable callable; Result is move-only.
        auto res = std::make_shared<AssociateResultT>(std::move(result));
        try {
            Caller c = caller();
            require_allowed(c);
            AssociateRequest req = parse_request(dst_address, dst_port, server_address, server_port, options);
            req.uid = c.uid;
            req.owner = c.sender;
            req.via_bus = true;
            bus_.manager().associate(std::move(req), [res](AssociateResult&& r) {
                if (auto* g = std::get_if<Grant>(&r)) {
                    // Our own duplicate for the message, so that running out
                    // of descriptors is an errno here, not an exception from
                    // inside sdbus-c++. The lease's copy closes with `g`, so
                    // the application holds the only one.
                    int fd = outside_reserve(fcntl(g->lease_fd.get(), F_DUPFD_CLOEXEC, 3));
                    if (fd < 0) {
                        int e = errno;
                        log_warning("cannot pass a lease fd: %s", strerror(e));
                        reply_error(*res, out_of_descriptors(e) ? Code::QuotaExceeded : Code::ServerFailure,
                                    std::string("cannot pass the lease to the caller: ") + strerror(e));
                        return;
                    }
                    try {
                        res->returnResults(sdbus::ObjectPath(g->lease_path), sdbus::UnixFd(fd, sdbus::adopt_fd),
                                           g->relay.ip_bytes(), g->relay.port);
                    } catch (...) {
                        // Not bound: the exception comes from libsdbus-c++
                        // and may be all we can say (sd-bus dups the fd once
                        // more, which fails the same way when fds run out).
                        log_warning("cannot send an Associate reply (out of file descriptors?)");
                        reply_error(*res, Code::ServerFailure, "cannot pass the lease to the caller");
                    }
                } else if (const auto* f = std::get_if<Failure>(&r)) {
                    reply_error(*res, f->code, f->message);
                } else {
                    reply_error(*res, Code::ServerFailure, "internal error");   // WouldWait: never asked for
                }
            });
        } catch (const sdbus::Error& e) {
            res->returnError(e);
        } catch (const std::exception& e) {
            log_error("Associate: %s", e.what());
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        } catch (...) {
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        }
    }

    static AssociateRequest parse_request(const std::vector<uint8_t>& dst_address, uint16_t dst_port,
                                          const std::vector<uint8_t>& server_address, uint16_t server_port,
                                          const std::map<std::string, sdbus::Variant>& options) {
        AssociateRequest req;
        req.dst = endpoint_arg(dst_address, dst_port, "dst_address");
        if (!server_address.empty()) {
            req.server = endpoint_arg(server_address, server_port, "server_address");
            if (server_port == 0) throw invalid_args("server_port must be 1..65535");
        } else if (server_port != 0) {
            throw invalid_args("server_port given without server_address");
        }
        for (const auto& [key, value] : options) {
            if (key == "timeout_ms") {
                if (value.peekValueType() != "u") throw invalid_args("option timeout_ms must be of type u");
                uint32_t ms = value.get<uint32_t>();
                if (ms == 0 || ms > kMaxTimeoutMs)
                    throw invalid_args("option timeout_ms must be 1.." + std::to_string(kMaxTimeoutMs));
                req.timeout = std::chrono::milliseconds(ms);
            } else if (key == "rendezvous_len") {
                if (value.peekValueType() != "u") throw invalid_args("option rendezvous_len must be of type u");
                req.rendezvous_len = value.get<uint32_t>();
            } else if (key == "nonblocking") {
                if (value.peekValueType() != "b") throw invalid_args("option nonblocking must be of type b");
                req.nonblocking = value.get<bool>();
            } else {
                throw invalid_args("unknown option \"" + key + "\"");
            }
        }
        return req;
    }

    sdbus::UnixFd OpenChannel() override {
        return guarded("OpenChannel", [&] {
            Caller c = caller();
            require_allowed(c);
            auto r = bus_.channels().open(c.uid, c.sender);
            if (auto* f = std::get_if<Failure>(&r)) throw bus_error(f->code, f->message);
            return sdbus::UnixFd(std::get<UniqueFd>(r).release(), sdbus::adopt_fd);
        });
    }

    void Release(const sdbus::ObjectPath& lease) override {
        guarded("Release", [&] {
            Caller c = caller();
            switch (bus_.manager().release(lease, c.uid)) {
                case Manager::ReleaseResult::Released: return;
                case Manager::ReleaseResult::NotFound:
                    throw sdbus::Error("org.freedesktop.DBus.Error.UnknownObject", "no lease " + lease);
                case Manager::ReleaseResult::NotOwner:
                    throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied",
                                       "lease " + lease + " belongs to another user");
            }
        });
    }

    std::tuple<std::string, std::vector<uint8_t>, uint16_t> GetServer(const std::vector<uint8_t>& dst_address,
                                                                      const uint16_t& dst_port) override {
        return guarded("GetServer", [&] {
            auto sel = bus_.manager().select_server(endpoint_arg(dst_address, dst_port, "dst_address"));
            if (auto* f = std::get_if<Failure>(&sel)) throw bus_error(f->code, f->message);
            const auto* s = std::get<const s5::config::Server*>(sel);
            return std::make_tuple(s->name, s->endpoint.ip_bytes(), s->endpoint.port);
        });
    }

    void Reload(sdbus::Result<>&& result) override {
        auto res = std::make_shared<sdbus::Result<>>(std::move(result));
        try {
            Caller c = caller();
            // The unit's ExecReload= (s5brokerctl reload) runs as the
            // service's own user.
            if (c.uid != 0 && c.uid != geteuid())
                throw sdbus::Error("org.freedesktop.DBus.Error.AccessDenied",
                                   "only root and the service user may reload the configuration");
            bus_.reload([res](const std::optional<std::string>& err) {
                if (err) {
                    reply_error(*res, Code::InvalidArgs, "configuration not applied: " + *err);
                    return;
                }
                try {
                    res->returnResults();
                } catch (...) {
                    log_warning("cannot send a Reload reply");
                }
            });
        } catch (const sdbus::Error& e) {
            res->returnError(e);
        } catch (const std::exception& e) {
            log_error("Reload: %s", e.what());
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        } catch (...) {
            res->returnError(bus_error(Code::ServerFailure, "internal error"));
        }
    }

    std::string Version() override { return S5BROKER_VERSION; }
    uint32_t LeaseCount() override {
        return guarded("LeaseCount", [&] { return static_cast<uint32_t>(bus_.manager().leases().size()); });
    }
    std::vector<sdbus::ObjectPath> Servers() override {
        return guarded("Servers", [&] {
            std::vector<sdbus::ObjectPath> v;
            for (const auto& s : bus_.manager().config().servers) v.emplace_back(server_path(s.name));
            return v;
        });
    }
    std::vector<sdbus::ObjectPath> Leases() override {
        return guarded("Leases", [&] {
            // Each caller sees its own leases, root all of them (what a
            // lease is, and where its relay is, is its owner's business).
            std::vector<sdbus::ObjectPath> v;
            const PeerCreds* c = bus_.creds().current();
            if (!c) return v;
            const Manager& m = bus_.manager();
            if (c->uid == 0) {
                for (const auto& [id, l] : m.leases()) v.emplace_back(l->path());
            } else {
                // Through the per-uid index, in id order as for root.
                for (uint64_t id : m.lease_ids_of(c->uid)) v.emplace_back(m.leases().at(id)->path());
            }
            return v;
        });
    }
    std::map<std::string, uint64_t> Statistics() override {
        return guarded("Statistics", [&] {
            auto stats = bus_.manager().statistics();
            stats["leases"] = bus_.manager().leases().size();
            stats["channels"] = bus_.channels().count();
            stats["channel_requests"] = bus_.channels().requests();
            return stats;
        });
    }

    Bus& bus_;
};

void ManagerObjectDeleter::operator()(ManagerObject* o) const { delete o; }

ManagerObjectPtr make_manager_object(sdbus::IConnection& conn, Bus& bus) {
    return ManagerObjectPtr(new ManagerObject(conn, bus));
}

void announce_lease_count(ManagerObject& o) { o.lease_count_changed(); }
void announce_servers(ManagerObject& o) { o.emitPropertiesChangedSignal(kManagerIface, {"Servers"}); }

}  // namespace s5d
