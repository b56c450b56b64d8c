// Manager::restore: the leases and associations an earlier broker left in
// systemd's fd store, rebuilt before this broker serves anything
// (docs/design.md §12). Each is checked with a peek: what died while no
// broker ran is released (and logged); the rest carries on with the same
// lease id, object path, relay and generation, and an application holding
// a lease notices nothing (its datagrams never passed through the broker).
#include <algorithm>
#include <set>

#include "log.hpp"
#include "manager.hpp"
#include "peer_closed.hpp"

namespace s5d {

namespace {
unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

UniqueFd take(StoredFds& fds, const std::string& name) {
    auto it = fds.by_name.find(name);
    if (it == fds.by_name.end()) return UniqueFd();
    UniqueFd fd = std::move(it->second);
    fds.by_name.erase(it);
    return fd;
}
}  // namespace

Manager::RestoreReport Manager::restore(const state::Image& image, StoredFds& fds) {
    RestoreReport rep;
    for (const auto& [k, v] : image.header.stats) stats_[k] = v;
    next_lease_id_ = std::max(next_lease_id_, image.header.next_lease_id);
    if (durable_) durable_->touch();

    // The associations first; each lease below takes its own.
    std::map<uint64_t, std::unique_ptr<Association>> assocs;
    std::map<uint64_t, std::string> assoc_pool;
    for (const auto& rec : image.associations) {
        const std::string name = state::fd_name_association(rec.id);
        UniqueFd fd = take(fds, name);
        if (!fd) continue;  // stored without its record's fd: nothing to restore
        // Claimed by a socket of ours (a source port): that socket too, if
        // the broker still held it (a leased one's went to its application).
        UniqueFd claim = rec.source.port ? take(fds, state::fd_name_claim(rec.id)) : UniqueFd();
        auto p = pools_.find(rec.server);
        // A server that is gone from the configuration, or now names
        // another address, cannot own this connection any more.
        if (p == pools_.end() || !(p->second->server().endpoint == rec.server_endpoint)) {
            log_info("association %llu: server %s is no longer configured as it was; closing it", ull(rec.id),
                     rec.server.c_str());
            if (durable_) {
                durable_->drop_fd(name);
                if (claim) durable_->drop_fd(state::fd_name_claim(rec.id));
            }
            ++rep.closed;
            continue;
        }
        auto a = std::make_unique<Association>(loop_, p->second->server(), config_.keepalive, rec, std::move(fd),
                                               std::move(claim), durable_, Association::Callbacks{});
        assoc_pool[rec.id] = rec.server;
        assocs.emplace(rec.id, std::move(a));
    }

    std::vector<uint64_t> to_renew;
    for (const auto& rec : image.leases) {
        const std::string name = state::fd_name_lease(rec.id);
        UniqueFd fd = take(fds, name);
        std::unique_ptr<Association> assoc;
        if (rec.association) {
            if (auto it = assocs.find(rec.association); it != assocs.end()) {
                assoc = std::move(it->second);
                assocs.erase(it);
            }
        }
        log::Fields f{{"S5_LEASE", std::to_string(rec.id)},
                      {"S5_UID", std::to_string(rec.uid)},
                      {"S5_SERVER", rec.server}};
        if (!fd) {
            // The store let it go (the application closed its end and PID 1
            // saw the hang-up) or never took it.
            log_info(f, "lease %llu: ended while the broker was down (its descriptor is gone)", ull(rec.id));
            count("leases_released");
            ++rep.forgotten;
            continue;  // `assoc` is closed (and leaves the store) here
        }
        if (peer_closed(fd.get())) {
            log_info(f, "lease %llu: released while the broker was down (lease fd closed)", ull(rec.id));
            count("leases_released");
            if (durable_) durable_->drop_fd(name);
            ++rep.released;
            continue;
        }
        const bool alive = assoc && assoc->alive();
        if (assoc && !alive) assoc.reset();
        if (assoc) {
            bind_to_lease(*assoc, rec.id);
            pools_.at(assoc_pool.at(rec.association))->adopt_leased();
        }
        auto lease = std::make_unique<Lease>(loop_, rec, std::move(fd), std::move(assoc),
                                             [this](Lease& l) { remove_lease(l.id(), "lease fd closed"); }, durable_);
        Lease& l = *lease;
        leases_.emplace(rec.id, std::move(lease));
        leases_by_uid_[l.uid()].insert(rec.id);
        ++rep.leases;
        switch (l.state()) {
            case LeaseState::Active:
                if (l.association()) {
                    l.resend_state();
                    break;
                }
                // Its association ended while no broker ran: renew now.
                log_warning(f, "lease %llu: its association on %s ended while the broker was down; renewing",
                            ull(rec.id), rec.server.c_str());
                dispose(l.detach_for_renewal());
                to_renew.push_back(rec.id);
                break;
            case LeaseState::Renewing:
                l.resend_state();
                to_renew.push_back(rec.id);
                break;
            case LeaseState::Pending: {
                auto c = candidates_for(l.dst(), std::nullopt);
                if (auto* names = std::get_if<std::vector<std::string>>(&c))
                    add_waiter(Waiter::Kind::PendingLease, *names, std::chrono::seconds(config_.pool.setup_timeout_s),
                               {}, {}, l.id());
                else
                    lose(l, std::get<Failure>(c).code, std::get<Failure>(c).message);
                break;
            }
            case LeaseState::Lost:
                l.resend_state();
                break;
        }
    }
    rep.renewing = to_renew.size();

    // Associations no lease took: idle ones go back to their pools.
    for (auto& [id, a] : assocs) {
        // One claimed by a socket that is gone cannot be used by anyone.
        if (!a->alive() || (a->claimed_by_socket() && a->claim_socket() < 0)) {
            ++rep.closed;
            continue;  // closed here, and out of the store
        }
        pools_.at(assoc_pool.at(id))->adopt_idle(std::move(a));
        ++rep.idle;
    }
    assocs.clear();
    for (uint64_t id : to_renew)
        if (auto it = leases_.find(id); it != leases_.end()) start_renewal(*it->second);

    // Whatever else is in the store has no record: made just before the old
    // broker died, or left by one that could not finish. It goes.
    for (auto& [name, fd] : fds.by_name) {
        if (durable_) durable_->drop_fd(name);
        ++rep.closed;
    }
    fds.by_name.clear();
    return rep;
}

}  // namespace s5d
