#include "fd_table.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <new>
#include <vector>

#include "real_calls.hpp"
#include "shim_socket.hpp"

namespace s5::socksify {

FdTable& FdTable::global() {
    // Built in static storage, without malloc: close() reaches here from
    // inside allocators (jemalloc closes a file while it initialises, under
    // its own lock). Never destroyed: atexit handlers and other libraries'
    // destructors still close descriptors after ours would have run.
    alignas(FdTable) static unsigned char storage[sizeof(FdTable)];
    static FdTable* table = new (storage) FdTable;
    return *table;
}

FdTable::Mark FdTable::mark(int fd) const {
    if (fd < 0) return Mark::NotOurs;
    if (fd < kFast) return static_cast<Mark>(marks_[fd].load(std::memory_order_acquire));
    std::lock_guard<std::mutex> g(m_);
    auto it = big_marks_.find(fd);
    return it == big_marks_.end() ? Mark::Unknown : it->second;
}

void FdTable::set_mark_locked(int fd, Mark m) {
    if (fd < 0) return;
    if (fd < kFast) {
        marks_[fd].store(static_cast<uint8_t>(m), std::memory_order_release);
    } else if (m == Mark::Unknown) {
        big_marks_.erase(fd);
    } else {
        big_marks_[fd] = m;
    }
}

namespace {

// An IP UDP socket: the family, else 0.
int udp_family(int fd) {
    int v = 0;
    socklen_t len = sizeof v;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != SOCK_DGRAM) return 0;
    int family = 0;
    len = sizeof family;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0) return 0;
    if (family != AF_INET && family != AF_INET6) return 0;
    len = sizeof v;
    if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) < 0 || v != IPPROTO_UDP) return 0;
    return family;
}

}  // namespace

std::shared_ptr<ShimSocket> FdTable::socket(int fd) {
    const Mark m = mark(fd);
    if (m == Mark::NotOurs || m == Mark::Private) return nullptr;
    if (m == Mark::Unknown) {
        const int family = udp_family(fd);
        std::lock_guard<std::mutex> g(m_);
        if (family == 0) {
            set_mark_locked(fd, Mark::NotOurs);
            return nullptr;
        }
        auto& s = sockets_[fd];
        if (!s) s = std::make_shared<ShimSocket>(family);
        set_mark_locked(fd, Mark::Shim);
        return s;
    }
    std::lock_guard<std::mutex> g(m_);
    auto it = sockets_.find(fd);
    return it == sockets_.end() ? nullptr : it->second;
}

void FdTable::add_socket(int fd, std::shared_ptr<ShimSocket> s) {
    std::shared_ptr<ShimSocket> old;
    {
        std::lock_guard<std::mutex> g(m_);
        old = forget_locked(fd);
        sockets_[fd] = std::move(s);
        set_mark_locked(fd, Mark::Shim);
    }
}

void FdTable::set_private(int fd, std::weak_ptr<ShimLease> lease) {
    std::lock_guard<std::mutex> g(m_);
    private_[fd] = std::move(lease);
    set_mark_locked(fd, Mark::Private);
}

void FdTable::clear_private(int fd) {
    std::lock_guard<std::mutex> g(m_);
    private_.erase(fd);
    set_mark_locked(fd, Mark::Unknown);
}

std::shared_ptr<ShimSocket> FdTable::forget_locked(int fd) {
    std::shared_ptr<ShimSocket> dropped;
    if (auto it = sockets_.find(fd); it != sockets_.end()) {
        dropped = std::move(it->second);
        sockets_.erase(it);
    }
    if (auto it = private_.find(fd); it != private_.end()) {
        if (auto l = it->second.lock()) l->stolen.store(true);
        private_.erase(it);
    }
    set_mark_locked(fd, Mark::Unknown);
    return dropped;
}

void FdTable::forget(int fd) {
    std::shared_ptr<ShimSocket> dropped;
    {
        std::lock_guard<std::mutex> g(m_);
        dropped = forget_locked(fd);
    }
}

void FdTable::forget_range(unsigned first, unsigned last) {
    std::vector<std::shared_ptr<ShimSocket>> dropped;
    std::lock_guard<std::mutex> g(m_);
    const unsigned fast_end = last < static_cast<unsigned>(kFast) ? last : static_cast<unsigned>(kFast) - 1;
    for (unsigned fd = first; fd <= fast_end && fd < static_cast<unsigned>(kFast); ++fd)
        marks_[fd].store(0, std::memory_order_release);
    std::vector<int> doomed;
    for (auto& [fd, s] : sockets_)
        if (static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) doomed.push_back(fd);
    for (auto& [fd, l] : private_)
        if (static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) doomed.push_back(fd);
    for (auto& [fd, m] : big_marks_)
        if (static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) doomed.push_back(fd);
    for (int fd : doomed)
        if (auto s = forget_locked(fd)) dropped.push_back(std::move(s));
    // `dropped` dies after the lock_guard: declared first.
}

void FdTable::copy(int from, int to) {
    std::shared_ptr<ShimSocket> old;
    std::lock_guard<std::mutex> g(m_);
    old = forget_locked(to);
    auto it = sockets_.find(from);
    if (it == sockets_.end()) return;
    sockets_[to] = it->second;
    set_mark_locked(to, Mark::Shim);
}

}  // namespace s5::socksify
