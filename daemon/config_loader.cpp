#include "config_loader.hpp"

#include <grp.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "log.hpp"

namespace s5d {

std::set<gid_t> resolve_groups(const std::vector<std::string>& names, std::vector<std::string>& warnings) {
    std::set<gid_t> gids;
    for (const auto& name : names) {
        group gr{};
        group* found = nullptr;
        std::vector<char> buf(16384);
        int r = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
        if (r == 0 && found)
            gids.insert(found->gr_gid);
        else
            warnings.push_back("allowed_groups: no group named \"" + name + "\"; ignored");
    }
    return gids;
}

void warn_unguarded_local_servers(const s5::config::Config& c, std::vector<std::string>& warnings) {
    std::vector<s5::wire::Endpoint> mine;
    if (ifaddrs* all = nullptr; getifaddrs(&all) == 0) {
        for (ifaddrs* i = all; i; i = i->ifa_next) {
            if (!i->ifa_addr) continue;
            const socklen_t len = i->ifa_addr->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
            if (auto e = s5::wire::Endpoint::from_sockaddr(i->ifa_addr, len)) mine.push_back(*e);
        }
        freeifaddrs(all);
    }
    auto local = [&](const s5::wire::Endpoint& e) {
        if (e.is_loopback()) return true;
        for (const auto& m : mine)
            if (m.family == e.family && m.ip == e.ip) return true;
        return false;
    };
    for (const auto& s : c.servers)
        if (s.auth.method == s5::config::AuthMethod::Username && !s.server_uid && s.endpoint.port >= 1024 &&
            local(s.endpoint))
            warnings.push_back("server " + s.name + ": " + s.endpoint.to_string() +
                               " is on this host at a port any user may bind while the server is down; the password "
                               "goes only to a listener owned by root (set server_uid to the uid that runs it)");
}

ConfigLoader::ConfigLoader(EventLoop& loop, std::string path, std::string credentials_dir, Apply apply)
    : ConfigLoader(
          loop,
          [path = std::move(path), credentials_dir = std::move(credentials_dir)] {
              LoadedConfig out{s5::config::load(path, credentials_dir), {}, {}};
              if (out.config.ok()) {
                  out.allowed_gids = resolve_groups(out.config.value->allowed_groups, out.warnings);
                  warn_unguarded_local_servers(*out.config.value, out.warnings);
              }
              return out;
          },
          std::move(apply)) {}

ConfigLoader::ConfigLoader(EventLoop& loop, Read read, Apply apply)
    : loop_(loop), read_(std::move(read)), apply_(std::move(apply)) {
    wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) throw std::system_error(errno, std::generic_category(), "eventfd");
    wake_watch_ = IoWatch(loop_, wake_.get(), EPOLLIN, [this](uint32_t) { finished(); });
}

ConfigLoader::~ConfigLoader() {
    if (worker_.joinable()) worker_.join();
}

LoadedConfig ConfigLoader::load_now() const { return read_(); }

void ConfigLoader::load(Done done) {
    (running_ ? next_ : current_).push_back(std::move(done));
    if (!running_) start();
}

void ConfigLoader::start() {
    running_ = true;
    result_.reset();
    worker_ = std::thread([this] {
        result_ = load_now();
        const uint64_t one = 1;
        // Cannot fail short of a bug: an eventfd write of 1 only blocks
        // past 2^64-2, and this one is non-blocking.
        (void)!::write(wake_.get(), &one, sizeof one);
    });
}

void ConfigLoader::finished() {
    uint64_t n = 0;
    if (::read(wake_.get(), &n, sizeof n) != sizeof n) return;
    worker_.join();   // it has written its result and is ending
    running_ = false;
    auto callers = std::move(current_);
    current_ = std::move(next_);
    next_.clear();
    LoadedConfig result = std::move(*result_);
    result_.reset();
    std::optional<std::string> error;
    try {
        error = apply_(result);
    } catch (const std::exception& e) {
        log_error("reload: %s", e.what());
        error = std::string("internal error: ") + e.what();
    }
    if (!current_.empty()) start();
    for (auto& done : callers) {
        try {
            done(error);
        } catch (const std::exception& e) {
            log_error("reload reply: %s", e.what());
        }
    }
}

}  // namespace s5d
