// Reads and validates the configuration off the event loop. Reading files
// and resolving group names (NSS, which may ask the network) can block; the
// loop must not. A worker thread does the whole of config::load() plus the
// group lookups, owns no socket and touches no daemon state; the loop gets
// the result through an eventfd and applies it.
//
// One load runs at a time. A request made while one runs is answered by the
// next load, which starts when the current one ends, so that every caller's
// answer reflects the files as they were after it asked.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "event_loop.hpp"
#include "unique_fd.hpp"

namespace s5d {

struct LoadedConfig {
    s5::config::Result<s5::config::Config> config;
    std::set<gid_t> allowed_gids;          // allowed_groups resolved
    std::vector<std::string> warnings;     // e.g. a group that does not exist
};

// allowed_groups names to gids (getgrnam_r); unknown names become warnings.
std::set<gid_t> resolve_groups(const std::vector<std::string>& names, std::vector<std::string>& warnings);

// A warning for each username server on this host (loopback, or an address
// of one of its interfaces) at a port >= 1024 without server_uid: any user
// may bind such a port while the server is down, and the broker then sends
// the password only to a listener owned by root.
void warn_unguarded_local_servers(const s5::config::Config& c, std::vector<std::string>& warnings);

class ConfigLoader {
public:
    // Runs on the loop once per load: applies a good configuration (or not)
    // and returns why nothing was changed, or nullopt.
    using Apply = std::function<std::optional<std::string>(LoadedConfig&)>;
    // Each caller's answer: why nothing was changed, or nullopt.
    using Done = std::function<void(const std::optional<std::string>&)>;
    // What the worker runs: reads and validates (may block).
    using Read = std::function<LoadedConfig()>;
    // Reads `path` (config::load, then allowed_groups resolved).
    ConfigLoader(EventLoop& loop, std::string path, std::string credentials_dir, Apply apply);
    // Runs `read` instead (tests: a read that blocks until they say so).
    ConfigLoader(EventLoop& loop, Read read, Apply apply);
    ~ConfigLoader();   // waits for a running load (it only reads files)
    ConfigLoader(const ConfigLoader&) = delete;
    ConfigLoader& operator=(const ConfigLoader&) = delete;

    // Synchronous, for start-up, before the loop serves anyone.
    LoadedConfig load_now() const;
    // Reads in the worker, applies on the loop, then `done` runs.
    void load(Done done);

private:
    void start();
    void finished();

    EventLoop& loop_;
    Read read_;
    Apply apply_;
    s5::UniqueFd wake_;                    // eventfd: the worker is done
    IoWatch wake_watch_;
    std::thread worker_;
    std::optional<LoadedConfig> result_;   // written by the worker before the wake-up
    std::vector<Done> current_, next_;
    bool running_ = false;
};

}  // namespace s5d
