#include "durable_state.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <variant>

#include "log.hpp"

namespace s5d {

StoredFds take_stored_fds() {
    StoredFds out;
    char** names = nullptr;
    const int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        log_warning("cannot take the stored file descriptors: %s", std::strerror(-n));
        return out;
    }
    for (int i = 0; i < n; ++i) {
        const int fd = SD_LISTEN_FDS_START + i;
        // Ours now: not for whatever we might start.
        if (int fl = fcntl(fd, F_GETFD); fl >= 0) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
        std::string name = names && names[i] ? names[i] : "unknown";
        UniqueFd owned(fd);
        if (state::parse_fd_name(name) && !out.by_name.count(name))
            out.by_name.emplace(std::move(name), std::move(owned));
        else
            out.unnamed.push_back(std::move(name));  // `owned` closes it
    }
    if (names) {
        for (int i = 0; i < n; ++i) std::free(names[i]);
        std::free(names);
    }
    return out;
}

namespace {
// A state of 16384 leases and as many associations is about 16 MiB.
constexpr off_t kMaxStateBytes = 64 << 20;

std::variant<state::Image, std::string> read_state(int fd) {
    struct stat st {};
    if (fstat(fd, &st) < 0) return std::string("fstat: ") + std::strerror(errno);
    if (st.st_size > kMaxStateBytes) return "too large (" + std::to_string(st.st_size) + " bytes)";
    std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < buf.size()) {
        ssize_t n = pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return std::string("read: ") + std::strerror(errno);
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    buf.resize(got);
    return state::parse(buf);
}
}  // namespace

PreviousState take_previous_state(StoredFds& fds) {
    PreviousState out;
    std::vector<std::pair<uint64_t, UniqueFd>> states;
    for (auto it = fds.by_name.begin(); it != fds.by_name.end();) {
        auto kind = state::parse_fd_name(it->first);
        if (kind && kind->first == 's') {
            states.emplace_back(kind->second, std::move(it->second));
            it = fds.by_name.erase(it);
        } else {
            ++it;
        }
    }
    // Newest first: an older one is left only if the broker died between
    // storing the new one and dropping it.
    std::sort(states.begin(), states.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    // Only the newest counts: it was complete before it was stored, so if
    // it is unusable something is badly wrong, and an older image would
    // name leases that have ended since. Then the broker starts clean.
    for (auto& [epoch, fd] : states) {
        if (&fd == &states.front().second) {
            auto r = read_state(fd.get());
            if (auto* img = std::get_if<state::Image>(&r); img && img->header.epoch == epoch) {
                out.epoch = epoch;
                out.image = std::move(*img);
                continue;
            }
            out.why = state::fd_name_state(epoch) + ": " +
                      (std::holds_alternative<std::string>(r) ? std::get<std::string>(r)
                                                               : std::string("its header names another epoch"));
        }
        out.unused.push_back(state::fd_name_state(epoch));
    }
    if (states.empty() && !fds.by_name.empty()) out.why = "no state memfd among the stored descriptors";
    return out;
}

std::unique_ptr<DurableState> DurableState::create(uint64_t epoch, HeaderSource header) {
    // sd_notify() does nothing without a service manager to talk to.
    const char* sock = std::getenv("NOTIFY_SOCKET");
    if (!sock || !*sock) return nullptr;
    UniqueFd fd(memfd_create("s5brokerd-state", MFD_CLOEXEC));
    if (!fd) {
        log_warning("leases will not survive a restart: memfd_create: %s", std::strerror(errno));
        return nullptr;
    }
    std::unique_ptr<DurableState> d(new DurableState(std::move(fd), epoch, std::move(header)));
    d->write_header();
    return d;
}

DurableState::DurableState(UniqueFd memfd, uint64_t epoch, HeaderSource header)
    : memfd_(std::move(memfd)), epoch_(epoch), header_(std::move(header)) {}

DurableState::~DurableState() = default;

bool DurableState::keep_fd(const std::string& name, int fd) {
    if (frozen_) return false;
    const std::string msg = "FDSTORE=1\nFDNAME=" + name;
    const int r = notify_.send(msg, fd);
    if (r <= 0) {
        if (!warned_)
            log_warning("the service manager did not take %s (%s): it will not survive a restart", name.c_str(),
                        r < 0 ? std::strerror(-r) : "no notification socket");
        warned_ = true;
        return false;
    }
    ++stored_;
    return true;
}

void DurableState::drop_fd(const std::string& name) {
    if (frozen_) return;
    const std::string msg = "FDSTOREREMOVE=1\nFDNAME=" + name;
    if (notify_.send(msg) > 0 && stored_ > 0) --stored_;
}

void DurableState::write_slot(uint32_t slot, const state::Slot& s) {
    // One pwrite of one slot: a record is either the old one or the new
    // one whatever moment the process dies at (a memfd write is not cut
    // short by a signal for a few hundred bytes).
    const off_t off = static_cast<off_t>(slot) * static_cast<off_t>(state::kSlotSize);
    for (;;) {
        ssize_t n = pwrite(memfd_.get(), s.data(), s.size(), off);
        if (n == static_cast<ssize_t>(s.size())) return;
        if (n < 0 && errno == EINTR) continue;
        if (!warned_) log_warning("cannot write the state memfd: %s", n < 0 ? std::strerror(errno) : "short write");
        warned_ = true;
        return;
    }
}

void DurableState::write_header() { write_slot(0, state::encode(header_())); }

void DurableState::put(uint32_t& slot, const state::Slot& record) {
    if (frozen_) return;
    if (slot == 0) {
        if (!free_.empty()) {
            slot = free_.back();
            free_.pop_back();
        } else {
            slot = next_slot_++;
        }
    }
    write_slot(slot, record);
}

void DurableState::erase(uint32_t& slot) {
    if (frozen_ || slot == 0) return;
    write_slot(slot, state::free_slot());
    free_.push_back(slot);
    slot = 0;
}

void DurableState::touch() {
    if (!frozen_) write_header();
}

void DurableState::commit(std::optional<uint64_t> previous_epoch) {
    write_header();
    if (keep_fd(state::fd_name_state(epoch_), memfd_.get()) && previous_epoch)
        drop_fd(state::fd_name_state(*previous_epoch));
}

}  // namespace s5d
