#include "route_cache.hpp"

#include <string_view>

namespace s5::socksify {

using s5::wire::Endpoint;

size_t RouteCache::Hash::operator()(const Endpoint& e) const noexcept {
    return std::hash<std::string_view>{}(
               std::string_view(reinterpret_cast<const char*>(e.ip.data()), e.ip.size())) ^
           static_cast<size_t>(e.family);
}

RouteCache::RouteCache(Lookup lookup, Clock clock, int64_t ttl_ms, size_t capacity)
    : lookup_(std::move(lookup)), clock_(std::move(clock)), ttl_ms_(ttl_ms), capacity_(capacity ? capacity : 1) {}

Route RouteCache::get(const Endpoint& dst) {
    Endpoint key = dst.unmapped();
    key.port = 0;
    const int64_t now = clock_();
    {
        std::lock_guard<std::mutex> g(m_);
        auto it = entries_.find(key);
        if (it != entries_.end()) {
            if (now < it->second.expires) return it->second.route;
            entries_.erase(it);
        }
    }
    Endpoint asked = dst.unmapped();
    Route r = lookup_(asked);
    if (r.kind == Route::Kind::Fail) return r;
    std::lock_guard<std::mutex> g(m_);
    if (entries_.size() >= capacity_) {
        std::erase_if(entries_, [now](const auto& kv) { return kv.second.expires <= now; });
        if (entries_.size() >= capacity_) entries_.clear();
    }
    entries_[key] = Entry{r, now + ttl_ms_};
    return r;
}

size_t RouteCache::size() const {
    std::lock_guard<std::mutex> g(m_);
    return entries_.size();
}

}  // namespace s5::socksify
