// Memory for secrets: RFC 1929 passwords and every buffer that carries one
// (the auth message, the handshake bytes waiting to be sent, a password
// file as read). SecretAllocator gives each allocation whole pages of its
// own, marked MADV_DONTDUMP (no core dump or gcore holds them) and locked
// in RAM where RLIMIT_MEMLOCK allows (never written to swap), and wipes
// them (explicit_bzero) before they are unmapped or kept for reuse (a few
// wiped single pages are, see SecretPageCache). A container using it
// therefore leaves no copy behind when it grows, shrinks, moves or dies.
//
// Secret is a password held that way. Not std::string: a short string
// lives inside the string object itself (small-string optimisation), in
// whatever memory holds the object, where no allocator can reach it.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <string_view>
#include <vector>

namespace s5 {

namespace detail {

// Single pages given back by SecretAllocator, already wiped and still
// marked and locked, kept for the next allocation: a handshake allocates
// and frees a few secret buffers, and mapping, marking and locking a page
// for each cost five system calls. At most kMax pages are kept. Never
// waits: a page cache that another thread holds (or a forked child
// inherited held) is simply not used for that call.
class SecretPageCache {
public:
    static constexpr size_t kMax = 16;
    static SecretPageCache& get() {
        static SecretPageCache* c = new SecretPageCache;   // never destroyed: used until exit
        return *c;
    }
    void* take() noexcept {
        if (!m_.try_lock()) return nullptr;
        void* p = n_ ? pages_[--n_] : nullptr;
        m_.unlock();
        return p;
    }
    bool put(void* p) noexcept {
        if (!m_.try_lock()) return false;
        const bool kept = n_ < kMax;
        if (kept) pages_[n_++] = p;
        m_.unlock();
        return kept;
    }

private:
    std::mutex m_;
    void* pages_[kMax] = {};
    size_t n_ = 0;
};

}  // namespace detail

template <typename T>
struct SecretAllocator {
    using value_type = T;
    SecretAllocator() noexcept = default;
    template <typename U>
    SecretAllocator(const SecretAllocator<U>&) noexcept {}

    static size_t page_size() {
        static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
        return page;
    }
    static size_t mapped_size(size_t n) {
        const size_t page = page_size();
        const size_t bytes = n * sizeof(T);
        return (bytes + page - 1) / page * page;
    }
    T* allocate(size_t n) {
        if (n == 0) n = 1;
        if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
        const size_t len = mapped_size(n);
        if (len == page_size())
            if (void* kept = detail::SecretPageCache::get().take()) return static_cast<T*>(kept);
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        // Both best effort: a kernel without MADV_DONTDUMP, or a memlock
        // limit reached, still gets wiped memory.
        (void)::madvise(p, len, MADV_DONTDUMP);
        (void)::mlock(p, len);
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t n) noexcept {
        if (n == 0) n = 1;
        const size_t len = mapped_size(n);
        ::explicit_bzero(p, len);
        if (len == page_size() && detail::SecretPageCache::get().put(p)) return;
        (void)::munlock(p, len);
        ::munmap(p, len);
    }
    template <typename U>
    bool operator==(const SecretAllocator<U>&) const noexcept {
        return true;
    }
};

using SecretBytes = std::vector<uint8_t, SecretAllocator<uint8_t>>;

class Secret {
public:
    Secret() = default;
    explicit Secret(std::string_view s) : bytes_(s.begin(), s.end()) {}
    explicit Secret(std::vector<char, SecretAllocator<char>> bytes) : bytes_(std::move(bytes)) {}

    std::string_view view() const { return {bytes_.data(), bytes_.size()}; }
    size_t size() const { return bytes_.size(); }
    bool empty() const { return bytes_.empty(); }
    // Gives the memory back, wiped.
    void clear() { std::vector<char, SecretAllocator<char>>().swap(bytes_); }

    // For telling whether a reload changed a server (not constant-time:
    // nobody but the daemon itself compares).
    friend bool operator==(const Secret& a, const Secret& b) { return a.view() == b.view(); }

private:
    std::vector<char, SecretAllocator<char>> bytes_;
};

}  // namespace s5
