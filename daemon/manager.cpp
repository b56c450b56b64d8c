#include "manager.hpp"

#include <cerrno>
#include <cstring>
#include <system_error>

#include "log.hpp"
#include "s5broker/socks5.h"

namespace s5d {

using s5::err::Code;

Manager::Manager(EventLoop& loop, s5::config::Config config) : loop_(loop), config_(std::move(config)) {
    for (const char* k : {"associations_made", "associations_failed", "leases_granted", "leases_released",
                          "leases_lost", "served_from_pool", "renewals"})
        stats_[k] = 0;
}

Manager::~Manager() {
    // Leases first: their associations and fds close with them.
    leases_.clear();
    pending_.clear();
}

std::variant<const s5::config::Server*, Failure> Manager::select_server(
    const s5::wire::Endpoint& dst, const std::optional<s5::wire::Endpoint>& server) const {
    if (server) {
        if (const auto* s = config_.find_server(*server)) return s;
        return Failure{Code::NoServer, server->to_string() + " is not a configured SOCKS server"};
    }
    const auto* route = config_.route_for(dst);
    if (!route || route->servers.empty())
        return Failure{Code::NoServer, "no route for " + dst.to_string()};
    if (const auto* s = config_.find_server(route->servers.front())) return s;
    return Failure{Code::NoServer, "route for " + dst.to_string() + " names no configured server"};
}

std::optional<Failure> Manager::check_quota(uid_t uid) const {
    size_t total = leases_.size() + pending_.size();
    if (total >= config_.limits.leases_total)
        return Failure{Code::QuotaExceeded, "lease table full (" + std::to_string(total) + " leases)"};
    size_t mine = 0;
    for (const auto& [id, l] : leases_) mine += l->uid() == uid;
    for (const auto& [id, p] : pending_) mine += p.req.uid == uid;
    if (mine >= config_.limits.leases_per_uid)
        return Failure{Code::QuotaExceeded,
                       "uid " + std::to_string(uid) + " holds " + std::to_string(mine) + " leases (the limit)"};
    return std::nullopt;
}

void Manager::associate(AssociateRequest req, AssociateDone done) {
    auto sel = select_server(req.dst, req.server);
    if (auto* f = std::get_if<Failure>(&sel)) {
        count("associations_failed");
        done(std::move(*f));
        return;
    }
    if (auto q = check_quota(req.uid)) {
        done(std::move(*q));
        return;
    }
    const auto* server = std::get<const s5::config::Server*>(sel);
    Association::Callbacks cb{
        [this](Association& a) { on_ready(a); },
        [this](Association& a, Code c, const std::string& t) { on_failed(a, c, t); },
        [this](Association& a, const std::string& why) { on_closed(a, why); },
    };
    auto assoc = std::make_unique<Association>(loop_, *server, config_.keepalive, req.timeout, std::move(cb));
    uint64_t id = assoc->id();
    log::debug("association %llu: connecting to %s (%s) for uid %u", static_cast<unsigned long long>(id),
               server->name.c_str(), server->endpoint.to_string().c_str(), static_cast<unsigned>(req.uid));
    pending_.emplace(id, Pending{std::move(req), std::move(done), std::move(assoc)});
}

void Manager::on_ready(Association& a) {
    auto it = pending_.find(a.id());
    if (it == pending_.end()) return;
    Pending p = std::move(it->second);
    pending_.erase(it);
    count("associations_made");
    uint64_t lease_id = next_lease_id_++;
    std::unique_ptr<Lease> lease;
    try {
        lease = std::make_unique<Lease>(loop_, lease_id, p.req.uid, p.req.owner, std::move(p.assoc),
                                        [this](Lease& l) { remove_lease(l.id(), "lease fd closed"); });
    } catch (const std::system_error& e) {
        log::error("association %llu: cannot create lease: %s", static_cast<unsigned long long>(a.id()), e.what());
        p.done(Failure{Code::ServerFailure, std::string("cannot create lease: ") + e.what()});
        return;
    }
    Lease& l = *lease;
    leases_.emplace(lease_id, std::move(lease));
    lease_of_assoc_[l.association()->id()] = lease_id;
    count("leases_granted");
    log::info("lease %llu: granted to uid %u (%s) on server %s, relay %s, source %s",
              static_cast<unsigned long long>(lease_id), static_cast<unsigned>(l.uid()), l.owner().c_str(),
              l.server_name().c_str(), l.relay().to_string().c_str(), l.source().to_string().c_str());
    if (observer_) observer_->lease_added(l);
    p.done(Grant{l.path(), l.take_client_end(), l.relay()});
}

void Manager::on_failed(Association& a, Code code, const std::string& text) {
    auto it = pending_.find(a.id());
    if (it == pending_.end()) return;
    AssociateDone done = std::move(it->second.done);
    std::string server = a.server_name();
    pending_.erase(it);  // destroys `a`
    count("associations_failed");
    log::warning("association to %s failed: %s", server.c_str(), text.c_str());
    done(Failure{code, text});
}

void Manager::on_closed(Association& a, const std::string& why) {
    auto it = lease_of_assoc_.find(a.id());
    if (it == lease_of_assoc_.end()) return;
    uint64_t lease_id = it->second;
    lease_of_assoc_.erase(it);
    auto lit = leases_.find(lease_id);
    if (lit == leases_.end()) return;
    Lease& l = *lit->second;
    // Renewal onto a fresh association comes with the pool; until then the
    // lease is lost and the application is told on its lease fd.
    log::warning("lease %llu: association on %s ended (%s); lease lost", static_cast<unsigned long long>(lease_id),
                 l.server_name().c_str(), why.c_str());
    count("leases_lost");
    const auto& lost = s5::err::info(Code::Lost);
    l.mark_lost(lost.err, lost.s5err);  // destroys `a`
    if (observer_) observer_->lease_lost(l, why);
}

void Manager::remove_lease(uint64_t id, const char* why) {
    auto it = leases_.find(id);
    if (it == leases_.end()) return;
    std::unique_ptr<Lease> l = std::move(it->second);
    leases_.erase(it);
    if (l->association()) lease_of_assoc_.erase(l->association()->id());
    count("leases_released");
    log::info("lease %llu: released (%s)", static_cast<unsigned long long>(id), why);
    if (observer_) observer_->lease_removed(*l);
}

Manager::ReleaseResult Manager::release(const std::string& path, uid_t caller_uid) {
    for (auto& [id, l] : leases_) {
        if (l->path() != path) continue;
        if (caller_uid != 0 && caller_uid != l->uid()) return ReleaseResult::NotOwner;
        remove_lease(id, "Release() called");
        return ReleaseResult::Released;
    }
    return ReleaseResult::NotFound;
}

void Manager::owner_left(const std::string& bus_name) {
    std::vector<uint64_t> gone;
    for (auto& [id, l] : leases_)
        if (l->owner() == bus_name) gone.push_back(id);
    for (uint64_t id : gone) remove_lease(id, "owner left the bus");
    // Requests still being set up for it: nobody is waiting for the reply.
    for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->second.req.owner == bus_name)
            it = pending_.erase(it);
        else
            ++it;
    }
}

}  // namespace s5d
