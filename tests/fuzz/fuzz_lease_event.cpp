// libFuzzer target: lease-event records (wire::decode_lease_event) and the
// lease table that applies them (libclient/lease_table.hpp).
//
// Pure part, on the whole input:
//   - if it decodes, encode(decode(x)) equals x with the bytes the decoder
//     ignores zeroed (reserved bytes, IP bytes past the family's length)
//     and decode(encode(decode(x))) == decode(x);
//   - an event built from the input's bytes survives encode -> decode.
// Table part: the input is cut into 64-byte records, each written as one
// SOCK_SEQPACKET message onto the lease socket of one of two leases (bit 0
// of reserved byte 7, which the decoder ignores, picks the lease; bits 6/7
// of byte 7 write the record one byte short / one byte long, which must be
// skipped; bit 1 of byte 6 looks at the lease at once). Bit 0 of byte 6 is
// the record's socket flag: no descriptor ever comes with these records, so
// a flagged one loses the lease with EMFILE. The table's state after lookup()/route() is compared
// with a small model of lease_table.hpp's documented state machine
// (pending / active / renewing / lost; types 1..4, Renewing = 4).

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "errors.hpp"
#include "lease_table.hpp"
#include "wire.hpp"

namespace {

namespace wire = s5::wire;
using s5::client::LeaseInfo;
using s5::client::LeaseState;
using wire::Endpoint;
using wire::LeaseEvent;
using wire::LeaseEventType;

#define CHECK(cond)                    \
    do {                               \
        if (!(cond)) __builtin_trap(); \
    } while (0)

constexpr size_t kRec = wire::kLeaseEventSize;

size_t wire_ip_len(uint8_t fam) { return fam == 4 ? 4 : fam == 6 ? 16 : 0; }

// x with every byte the decoder ignores set to zero (layout in wire.hpp /
// wire.cpp: flags 6 but bit 0, reserved 7, relay ip at 15, source ip at 32,
// reserved 56..63).
std::array<uint8_t, kRec> canonical(std::span<const uint8_t> x) {
    std::array<uint8_t, kRec> c{};
    std::copy(x.begin(), x.end(), c.begin());
    c[6] &= 1;
    c[7] = 0;
    for (size_t i = 15 + wire_ip_len(c[12]); i < 31; ++i) c[i] = 0;
    for (size_t i = 32 + wire_ip_len(c[31]); i < 48; ++i) c[i] = 0;
    for (size_t i = 56; i < kRec; ++i) c[i] = 0;
    return c;
}

void check_codec(std::span<const uint8_t> in) {
    auto ev = wire::decode_lease_event(in);
    if (!ev) {
        const bool plausible = in.size() == kRec && std::memcmp(in.data(), "S5LE", 4) == 0 && in[4] == 1 &&
                               in[5] >= 1 && in[5] <= 4 && (in[12] == 0 || in[12] == 4 || in[12] == 6) &&
                               (in[31] == 0 || in[31] == 4 || in[31] == 6);
        CHECK(!plausible);  // rejected only for a documented reason
        return;
    }
    CHECK(in.size() == kRec);
    CHECK(ev->source.port == 0);
    auto enc = wire::encode_lease_event(*ev);
    CHECK(enc == canonical(in));
    auto again = wire::decode_lease_event(enc);
    CHECK(again && *again == *ev);
}

// An event made of arbitrary field values (the encoder's domain), then
// encode -> decode.
void check_encode_first(std::span<const uint8_t> in) {
    if (in.size() < 48) return;
    static const int kFam[4] = {0, AF_INET, AF_INET6, AF_UNIX};
    LeaseEvent ev;
    ev.type = static_cast<LeaseEventType>(1 + in[0] % 4);
    std::memcpy(&ev.generation, &in[1], 4);
    ev.relay.family = kFam[in[5] & 3];
    std::memcpy(ev.relay.ip.data(), &in[6], 16);  // stale tail bytes too
    ev.relay.port = static_cast<uint16_t>(in[22] << 8 | in[23]);
    ev.source.family = kFam[in[24] & 3];
    std::memcpy(ev.source.ip.data(), &in[25], 16);
    ev.source.port = static_cast<uint16_t>(in[41] << 8 | in[42]);
    std::memcpy(&ev.err, &in[43], 4);
    ev.s5err = in[47];
    ev.socket = (in[0] & 0x40) != 0;

    auto enc = wire::encode_lease_event(ev);
    auto dec = wire::decode_lease_event(enc);
    CHECK(dec.has_value());
    LeaseEvent want = ev;
    for (Endpoint* ep : {&want.relay, &want.source}) {
        if (ep->family != AF_INET && ep->family != AF_INET6) ep->family = 0;
        for (size_t i = ep->ip_len(); i < 16; ++i) ep->ip[i] = 0;
    }
    want.source.port = 0;
    CHECK(*dec == want);
}

// ---- Model of the lease table ------------------------------------------------

Endpoint norm(const Endpoint& e) {
    Endpoint out;
    out.port = e.port;
    if (e.family == AF_INET6) {
        static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (std::memcmp(e.ip.data(), kMapped, 12) == 0) {
            out.family = AF_INET;
            std::memcpy(out.ip.data(), e.ip.data() + 12, 4);
        } else {
            out.family = AF_INET6;
            out.ip = e.ip;
        }
    } else if (e.family == AF_INET) {
        out.family = AF_INET;
        std::memcpy(out.ip.data(), e.ip.data(), 4);
    }
    return out;
}

struct Key {
    Endpoint e;
    bool operator<(const Key& o) const {
        if (e.family != o.e.family) return e.family < o.e.family;
        if (e.port != o.e.port) return e.port < o.e.port;
        return e.ip < o.e.ip;
    }
};

struct ModelLease {
    int fd = -1;
    LeaseState state = LeaseState::Pending;
    uint32_t generation = 0;
    Endpoint relay, source;
    int err = 0, s5err = 0;
    std::vector<Endpoint> relays;
};

struct Model {
    std::map<Key, int> by_relay;
    std::map<Key, int> current;
    std::vector<Key> seen;

    void clear_current(ModelLease& l) {
        if (l.relay.ip_len() == 0) return;
        auto c = current.find({l.relay});
        if (c != current.end() && --c->second <= 0) current.erase(c);
        l.relay = Endpoint{};
    }
    void set_relay(ModelLease& l, const Endpoint& relay) {
        const Endpoint r = norm(relay);
        seen.push_back({r});
        if (!(l.relay == r)) {
            clear_current(l);
            ++current[{r}];
            l.relay = r;
        }
        by_relay[{r}] = l.fd;
        if (std::find(l.relays.begin(), l.relays.end(), r) == l.relays.end()) {
            l.relays.push_back(r);
            if (l.relays.size() > 8) {
                auto old = l.relays.begin() + 1;
                auto k = by_relay.find({*old});
                if (k != by_relay.end() && k->second == l.fd) by_relay.erase(k);
                l.relays.erase(old);
            }
        }
    }
    void lose(ModelLease& l, int err, int s5err) {
        if (l.state == LeaseState::Lost) return;
        clear_current(l);
        l.state = LeaseState::Lost;
        if (err == 0) {
            const auto& lost = s5::err::info(s5::err::Code::Lost);
            err = lost.err;
            if (s5err == 0) s5err = lost.s5err;
        }
        l.err = err;
        l.s5err = s5err;
    }
    void take(ModelLease& l, const LeaseEvent& ev) {
        set_relay(l, ev.relay);
        Endpoint src = norm(ev.source);
        src.port = 0;
        l.source = src;
        l.generation = ev.generation;
    }
    void apply(ModelLease& l, const LeaseEvent& ev) {
        if (l.state == LeaseState::Lost) return;
        if (ev.socket) return lose(l, EMFILE, 0);  // flagged, and no descriptor came
        if (ev.type == LeaseEventType::Lost) return lose(l, ev.err, ev.s5err);
        const bool has_relay = ev.relay.ip_len() != 0;
        const bool pending = l.state == LeaseState::Pending;
        if (ev.type == LeaseEventType::Renewing) {
            // Renewing of the lease's generation: renewing, relay kept. Of
            // an older one: nothing. Of a newer one, or on a pending lease:
            // it stands in for the Ready/Renewed it replaced (relay, source
            // and generation from the record; a pending lease needs a relay).
            if (!pending && ev.generation < l.generation) return;
            if (pending || ev.generation > l.generation) {
                if (has_relay) {
                    take(l, ev);
                } else if (pending) {
                    return;
                } else {
                    l.generation = ev.generation;
                }
            }
            l.state = LeaseState::Renewing;
            return;
        }
        // Ready / Renewed: a relay, and a generation newer than the
        // lease's unless the lease is pending.
        if (!has_relay) return;
        if (!pending && ev.generation <= l.generation) return;
        take(l, ev);
        l.state = LeaseState::Active;
    }
};

void check_same(const LeaseInfo& got, const ModelLease& m) {
    CHECK(got.fd == m.fd);
    CHECK(got.state == m.state);
    if (m.state == LeaseState::Lost) {
        CHECK(got.err == m.err && got.s5err == m.s5err);
        CHECK(got.err != 0);
        CHECK(got.relay.ip_len() == 0);
    } else {
        CHECK(got.generation == m.generation);
        CHECK(got.relay == m.relay);
        CHECK(got.source == m.source);
    }
}

struct Pair {
    int fd[2] = {-1, -1};
    Pair() {
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fd) < 0) std::abort();
    }
    ~Pair() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
};

void write_record(int fd, std::span<const uint8_t> rec) {
    CHECK(!rec.empty());  // a 0-byte SEQPACKET record reads as EOF; never sent
    ssize_t n = ::send(fd, rec.data(), rec.size(), MSG_NOSIGNAL);
    CHECK(n == static_cast<ssize_t>(rec.size()));
}

void check_table(std::span<const uint8_t> in) {
    // At most 16 records per lease: a socketpair's queue holds more than that.
    if (in.size() > 32 * kRec) in = in.first(32 * kRec);

    Pair a, b;  // fd[0]: the lease as the library holds it, fd[1]: broker end
    s5::client::LeaseTable table;
    Model model;
    ModelLease ma, mb;
    ma.fd = a.fd[0];
    mb.fd = b.fd[0];

    // Cut into records with their target lease and length.
    struct Rec {
        bool to_b;
        std::vector<uint8_t> bytes;
    };
    std::vector<Rec> recs;
    for (size_t off = 0; off < in.size(); off += kRec) {
        auto chunk = in.subspan(off, std::min(kRec, in.size() - off));
        Rec r;
        r.to_b = chunk.size() > 7 && (chunk[7] & 1);
        r.bytes.assign(chunk.begin(), chunk.end());
        if (chunk.size() > 7 && (chunk[7] & 0x80)) r.bytes.push_back(0);               // one byte long
        else if (chunk.size() > 7 && (chunk[7] & 0x40) && r.bytes.size() > 1) r.bytes.pop_back();  // short
        recs.push_back(std::move(r));
    }

    // Lease A: pending (socks5udp_associate in non-blocking mode).
    auto ia = table.add(a.fd[0], a.fd[0], nullptr);
    CHECK(ia && ia->state == LeaseState::Pending && ia->fd == a.fd[0] && !ia->completed);

    // Lease B: active with a rendezvous; the first record for B is queued
    // before add(), which must read exactly that one.
    const Endpoint rendezvous = *Endpoint::parse_ip("192.0.2.1", 4000);
    size_t first_b = recs.size();
    for (size_t i = 0; i < recs.size(); ++i)
        if (recs[i].to_b) {
            first_b = i;
            break;
        }
    if (first_b < recs.size()) write_record(b.fd[1], recs[first_b].bytes);
    mb.state = LeaseState::Active;
    model.set_relay(mb, rendezvous);
    if (first_b < recs.size())
        if (auto ev = wire::decode_lease_event(recs[first_b].bytes)) model.apply(mb, *ev);
    auto ib = table.add(b.fd[0], b.fd[0], &rendezvous);
    CHECK(ib && ib->completed);
    check_same(*ib, mb);

    // The table applies a lease's events when that lease is looked at, and
    // "newest holder of a relay wins" is by application time: the model
    // queues events per lease and applies them at the same moments.
    std::vector<LeaseEvent> queued_a, queued_b;
    auto look = [&](bool is_b) {
        Pair& p = is_b ? b : a;
        ModelLease& m = is_b ? mb : ma;
        auto& q = is_b ? queued_b : queued_a;
        for (const LeaseEvent& ev : q) model.apply(m, ev);
        q.clear();
        auto got = table.lookup(p.fd[0]);
        CHECK(got.has_value());
        check_same(*got, m);
    };
    for (size_t i = 0; i < recs.size(); ++i) {
        if (i == first_b) continue;
        const Rec& r = recs[i];
        Pair& p = r.to_b ? b : a;
        write_record(p.fd[1], r.bytes);
        if (auto ev = wire::decode_lease_event(r.bytes)) (r.to_b ? queued_b : queued_a).push_back(*ev);
        // Sometimes look at once (bit 1 of the ignored byte 6), so events
        // are applied at different times.
        if (r.bytes.size() > 6 && (r.bytes[6] & 2)) look(r.to_b);
    }

    auto check_all = [&] {
        look(false);
        look(true);
        CHECK(table.size() == 2);
        for (const Key& k : model.seen) {
            CHECK(table.is_current_relay(k.e) == (model.current.count(k) != 0));
            auto route = table.route(k.e);
            auto want = model.by_relay.find(k);
            if (want == model.by_relay.end()) {
                CHECK(!route.has_value());
            } else {
                CHECK(route && route->fd == want->second);
            }
        }
        // An IPv4-mapped spelling of an IPv4 relay finds the same lease.
        for (const Key& k : model.seen) {
            if (k.e.family != AF_INET) continue;
            Endpoint mapped;
            mapped.family = AF_INET6;
            mapped.ip[10] = mapped.ip[11] = 0xff;
            std::memcpy(&mapped.ip[12], k.e.ip.data(), 4);
            mapped.port = k.e.port;
            CHECK(table.is_current_relay(mapped) == (model.current.count(k) != 0));
        }
    };
    check_all();

    // The broker closes B's end: B is lost (if not already), A unchanged.
    ::close(b.fd[1]);
    b.fd[1] = -1;
    model.lose(mb, 0, 0);
    check_all();
    check_same(*table.lookup(b.fd[0]), mb);

    // The application closes A: lookup drops it.
    table.remove(a.fd[0]);
    CHECK(!table.lookup(a.fd[0]).has_value());
    CHECK(table.size() == 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> in(data, size);
    check_codec(in);
    if (size >= kRec) check_codec(in.first(kRec));
    check_encode_first(in);
    check_table(in);
    return 0;
}
