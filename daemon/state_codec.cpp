#include "state_codec.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>

namespace s5d::state {

namespace {

// Slot: u32 payload length (0: free) | u64 FNV-1a of the payload | payload.
constexpr size_t kSlotPrefix = 12;
constexpr size_t kMaxPayload = kSlotSize - kSlotPrefix;
constexpr uint8_t kMagic[8] = {'S', '5', 'B', 'R', 'K', 'S', 'T', 0};
constexpr uint8_t kTypeLease = 1, kTypeAssociation = 2;
constexpr size_t kMaxStats = 32;

uint64_t fnv1a(std::span<const uint8_t> b) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint8_t c : b) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

// Little-endian writer into a bounded payload. Text is cut to its limit by
// the caller, so everything fits; `fits` guards the stats, which may not.
class Writer {
public:
    void u8(uint8_t v) { put(&v, 1); }
    void u16(uint16_t v) { le(v, 2); }
    void u32(uint32_t v) { le(v, 4); }
    void u64(uint64_t v) { le(v, 8); }
    void text(std::string_view s, size_t max) {
        s = s.substr(0, std::min(max, size_t{255}));
        u8(static_cast<uint8_t>(s.size()));
        put(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    }
    void endpoint(const s5::wire::Endpoint& e) {
        const uint8_t kind = e.family == AF_INET ? 4 : e.family == AF_INET6 ? 6 : 0;
        u8(kind);
        put(e.ip.data(), e.ip_len());
        u16(e.port);
    }
    size_t size() const { return n_; }
    bool fits(size_t more) const { return n_ + more <= kMaxPayload; }
    Slot finish() const {
        Slot s{};
        const uint32_t len = static_cast<uint32_t>(n_);
        const uint64_t sum = fnv1a({buf_.data(), n_});
        for (int i = 0; i < 4; ++i) s[i] = static_cast<uint8_t>(len >> (8 * i));
        for (int i = 0; i < 8; ++i) s[4 + i] = static_cast<uint8_t>(sum >> (8 * i));
        std::memcpy(s.data() + kSlotPrefix, buf_.data(), n_);
        return s;
    }

private:
    void le(uint64_t v, int bytes) {
        uint8_t b[8];
        for (int i = 0; i < bytes; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        put(b, static_cast<size_t>(bytes));
    }
    void put(const uint8_t* p, size_t n) {
        // Cannot overflow: every record's worst case is below kMaxPayload
        // (static_assert in encode), and stats check fits() first.
        std::memcpy(buf_.data() + n_, p, n);
        n_ += n;
    }
    std::array<uint8_t, kMaxPayload> buf_{};
    size_t n_ = 0;
};

class Reader {
public:
    explicit Reader(std::span<const uint8_t> b) : b_(b) {}
    bool ok() const { return ok_; }
    bool done() const { return ok_ && pos_ == b_.size(); }
    uint8_t u8() { return static_cast<uint8_t>(le(1)); }
    uint16_t u16() { return static_cast<uint16_t>(le(2)); }
    uint32_t u32() { return static_cast<uint32_t>(le(4)); }
    uint64_t u64() { return le(8); }
    std::string text(size_t max) {
        const size_t n = u8();
        if (n > max || !need(n)) {
            ok_ = false;
            return {};
        }
        std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
        pos_ += n;
        return s;
    }
    s5::wire::Endpoint endpoint() {
        s5::wire::Endpoint e;
        const uint8_t kind = u8();
        if (kind == 0) {
            // unset: no address bytes
        } else if (kind == 4 || kind == 6) {
            e.family = kind == 4 ? AF_INET : AF_INET6;
            const size_t n = kind == 4 ? 4 : 16;
            if (!need(n)) {
                ok_ = false;
                return e;
            }
            std::memcpy(e.ip.data(), b_.data() + pos_, n);
            pos_ += n;
        } else {
            ok_ = false;
        }
        e.port = u16();
        if (kind == 0 && e.port != 0) ok_ = false;
        return e;
    }

private:
    bool need(size_t n) const { return ok_ && b_.size() - pos_ >= n; }
    uint64_t le(int bytes) {
        if (!need(static_cast<size_t>(bytes))) {
            ok_ = false;
            return 0;
        }
        uint64_t v = 0;
        for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(b_[pos_ + static_cast<size_t>(i)]) << (8 * i);
        pos_ += static_cast<size_t>(bytes);
        return v;
    }
    std::span<const uint8_t> b_;
    size_t pos_ = 0;
    bool ok_ = true;
};

// Worst cases (text at its limit, IPv6 everywhere), checked at compile time.
constexpr size_t kEndpointMax = 1 + 16 + 2;
constexpr size_t kLeaseMax = 1 + 8 + 4 + (1 + kMaxOwner) + kEndpointMax + (1 + kMaxServer) + 4 + 1 + 2 * kEndpointMax +
                             8 + (1 + kMaxError) + 8 + 8;
constexpr size_t kAssociationMax = 1 + 8 + (1 + kMaxServer) + 3 * kEndpointMax + 8;
static_assert(kLeaseMax <= kMaxPayload);
static_assert(kAssociationMax <= kMaxPayload);

std::string slot_error(size_t index, const char* what) {
    return "slot " + std::to_string(index) + ": " + what;
}

}  // namespace

Slot encode(const Header& h) {
    Writer w;
    for (uint8_t c : kMagic) w.u8(c);
    w.u32(kVersion);
    w.u32(static_cast<uint32_t>(kSlotSize));
    w.u64(h.epoch);
    w.u64(h.next_lease_id);
    // Counters that do not fit are left out (there are nine today, and
    // room for about twenty); the count comes first, so it is patched.
    std::vector<std::pair<std::string_view, uint64_t>> kept;
    size_t room = kMaxPayload - w.size() - 1;
    for (const auto& [k, v] : h.stats) {
        const size_t need = 1 + std::min(k.size(), size_t{64}) + 8;
        if (kept.size() == kMaxStats || need > room || k.empty() || k.size() > 64) continue;
        kept.emplace_back(k, v);
        room -= need;
    }
    w.u8(static_cast<uint8_t>(kept.size()));
    for (const auto& [k, v] : kept) {
        w.text(k, 64);
        w.u64(v);
    }
    return w.finish();
}

Slot encode(const LeaseRecord& r) {
    Writer w;
    w.u8(kTypeLease);
    w.u64(r.id);
    w.u32(r.uid);
    w.text(r.owner, kMaxOwner);
    w.endpoint(r.dst);
    w.text(r.server, kMaxServer);
    w.u32(r.generation);
    w.u8(static_cast<uint8_t>(r.state));
    w.endpoint(r.relay);
    w.endpoint(r.source);
    w.u64(r.created_realtime_usec);
    w.text(r.last_error, kMaxError);
    w.u32(static_cast<uint32_t>(r.err));
    w.u32(static_cast<uint32_t>(r.s5err));
    w.u64(r.association);
    return w.finish();
}

Slot encode(const AssociationRecord& r) {
    Writer w;
    w.u8(kTypeAssociation);
    w.u64(r.id);
    w.text(r.server, kMaxServer);
    w.endpoint(r.server_endpoint);
    w.endpoint(r.relay);
    w.endpoint(r.source);
    w.u64(r.ready_since_usec);
    return w.finish();
}

std::variant<Image, std::string> parse(std::span<const uint8_t> image) {
    if (image.size() < kSlotSize) return std::string("truncated: ") + std::to_string(image.size()) + " bytes";
    if (image.size() % kSlotSize != 0)
        return "truncated: " + std::to_string(image.size()) + " bytes is not a whole number of slots";
    Image out;
    std::set<uint64_t> lease_ids, assoc_ids, claimed;
    const size_t slots = image.size() / kSlotSize;
    for (size_t i = 0; i < slots; ++i) {
        auto slot = image.subspan(i * kSlotSize, kSlotSize);
        uint32_t len = 0;
        uint64_t sum = 0;
        for (int b = 0; b < 4; ++b) len |= static_cast<uint32_t>(slot[static_cast<size_t>(b)]) << (8 * b);
        for (int b = 0; b < 8; ++b) sum |= static_cast<uint64_t>(slot[4 + static_cast<size_t>(b)]) << (8 * b);
        if (len == 0) {
            if (i == 0) return std::string("no header");
            if (std::any_of(slot.begin(), slot.end(), [](uint8_t c) { return c != 0; }))
                return slot_error(i, "a free slot that is not empty");
            continue;
        }
        if (len > kMaxPayload) return slot_error(i, "record longer than a slot");
        auto payload = slot.subspan(kSlotPrefix, len);
        if (fnv1a(payload) != sum) return slot_error(i, "checksum mismatch");
        if (std::any_of(slot.begin() + static_cast<long>(kSlotPrefix + len), slot.end(),
                        [](uint8_t c) { return c != 0; }))
            return slot_error(i, "bytes after the record");
        Reader r(payload);
        if (i == 0) {
            for (uint8_t c : kMagic)
                if (r.u8() != c) return std::string("not a state image (bad magic)");
            const uint32_t version = r.u32();
            if (version != kVersion)
                return "version " + std::to_string(version) + ", this broker reads version " +
                       std::to_string(kVersion);
            if (r.u32() != kSlotSize) return std::string("slot size mismatch");
            out.header.epoch = r.u64();
            out.header.next_lease_id = r.u64();
            const size_t n = r.u8();
            if (n > kMaxStats) return std::string("header: too many counters");
            for (size_t k = 0; k < n && r.ok(); ++k) {
                std::string key = r.text(64);
                const uint64_t v = r.u64();
                if (key.empty() || !out.header.stats.emplace(std::move(key), v).second)
                    return std::string("header: empty or repeated counter name");
            }
            if (!r.done()) return std::string("header: malformed");
            continue;
        }
        const uint8_t type = r.u8();
        if (type == kTypeLease) {
            LeaseRecord l;
            l.id = r.u64();
            l.uid = r.u32();
            l.owner = r.text(kMaxOwner);
            l.dst = r.endpoint();
            l.server = r.text(kMaxServer);
            l.generation = r.u32();
            const uint8_t st = r.u8();
            l.relay = r.endpoint();
            l.source = r.endpoint();
            l.created_realtime_usec = r.u64();
            l.last_error = r.text(kMaxError);
            l.err = static_cast<int32_t>(r.u32());
            l.s5err = static_cast<int32_t>(r.u32());
            l.association = r.u64();
            if (!r.done()) return slot_error(i, "malformed lease record");
            if (st > static_cast<uint8_t>(LeaseState::Lost)) return slot_error(i, "unknown lease state");
            l.state = static_cast<LeaseState>(st);
            if (l.id == 0 || !lease_ids.insert(l.id).second) return slot_error(i, "lease id 0 or repeated");
            if (l.dst.family == 0) return slot_error(i, "lease without a destination family");
            if (l.association != 0 && !claimed.insert(l.association).second)
                return slot_error(i, "two leases name one association");
            if (l.state == LeaseState::Active && (l.relay.family == 0 || l.server.empty() || l.generation == 0))
                return slot_error(i, "active lease without relay, server or generation");
            if (l.id >= out.header.next_lease_id && out.header.next_lease_id != 0)
                return slot_error(i, "lease id not below the header's next lease id");
            out.leases.push_back(std::move(l));
        } else if (type == kTypeAssociation) {
            AssociationRecord a;
            a.id = r.u64();
            a.server = r.text(kMaxServer);
            a.server_endpoint = r.endpoint();
            a.relay = r.endpoint();
            a.source = r.endpoint();
            a.ready_since_usec = r.u64();
            if (!r.done()) return slot_error(i, "malformed association record");
            if (a.id == 0 || !assoc_ids.insert(a.id).second) return slot_error(i, "association id 0 or repeated");
            if (a.server.empty() || a.server_endpoint.family == 0 || a.relay.family == 0 || a.relay.port == 0)
                return slot_error(i, "association without server or relay");
            out.associations.push_back(std::move(a));
        } else {
            return slot_error(i, "unknown record type");
        }
    }
    if (out.header.next_lease_id == 0) return std::string("header: next lease id 0");
    return out;
}

std::string fd_name_lease(uint64_t id) { return "lease-" + std::to_string(id); }
std::string fd_name_association(uint64_t id) { return "assoc-" + std::to_string(id); }
std::string fd_name_claim(uint64_t id) { return "claim-" + std::to_string(id); }
std::string fd_name_state(uint64_t epoch) { return "state-" + std::to_string(epoch); }

std::optional<std::pair<char, uint64_t>> parse_fd_name(std::string_view name) {
    static constexpr std::pair<std::string_view, char> kinds[] = {
        {"lease-", 'l'}, {"assoc-", 'a'}, {"claim-", 'c'}, {"state-", 's'}};
    for (const auto& [prefix, kind] : kinds) {
        if (!name.starts_with(prefix)) continue;
        auto digits = name.substr(prefix.size());
        if (digits.empty() || digits.size() > 20 || digits[0] == '0') return std::nullopt;
        uint64_t v = 0;
        auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
        if (ec != std::errc() || p != digits.data() + digits.size()) return std::nullopt;
        return std::pair{kind, v};
    }
    return std::nullopt;
}

}  // namespace s5d::state
