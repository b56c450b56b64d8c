// The state image (state_codec.hpp): every field survives a round trip, and
// every corrupt form is refused with a reason, never half-read.
#include "state_codec.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>

namespace {

using namespace s5d::state;
namespace wire = s5::wire;

wire::Endpoint ep(const char* ip, uint16_t port) { return *wire::Endpoint::parse_ip(ip, port); }

Header header() {
    Header h;
    h.epoch = 7;
    h.next_lease_id = 1000;
    h.stats = {{"leases_granted", 12}, {"renewals", 3}, {"relays_refused", 0}};
    return h;
}

LeaseRecord lease(uint64_t id = 42) {
    LeaseRecord r;
    r.id = id;
    r.uid = 1001;
    r.owner = ":1.77";
    r.dst = ep("2001:db8::1", 53);
    r.server = "corp_east";
    r.generation = 3;
    r.state = LeaseState::Active;
    r.relay = ep("192.0.2.10", 40000);
    r.source = ep("192.0.2.1", 0);
    r.created_realtime_usec = 1764590000123456ull;
    r.last_error = "";
    r.err = 0;
    r.s5err = 0;
    r.association = 9;
    return r;
}

AssociationRecord association(uint64_t id = 9) {
    AssociationRecord a;
    a.id = id;
    a.server = "corp_east";
    a.server_endpoint = ep("192.0.2.10", 1080);
    a.relay = ep("192.0.2.10", 40000);
    a.source = ep("192.0.2.1", 0);
    a.ready_since_usec = 123456789;
    return a;
}

std::vector<uint8_t> image(std::initializer_list<Slot> slots) {
    std::vector<uint8_t> out;
    for (const auto& s : slots) out.insert(out.end(), s.begin(), s.end());
    return out;
}

std::string error_of(const std::vector<uint8_t>& img) {
    auto r = parse(img);
    if (auto* e = std::get_if<std::string>(&r)) return *e;
    return "";
}

TEST(StateCodec, RoundTripKeepsEveryField) {
    auto lost = lease(43);
    lost.state = LeaseState::Lost;
    lost.association = 0;
    lost.last_error = "no server could renew it within 30 s";
    lost.err = ENOTCONN;
    lost.s5err = 1007;
    auto pending = lease(44);
    pending.state = LeaseState::Pending;
    pending.server.clear();
    pending.generation = 0;
    pending.relay = {};
    pending.source = {};
    pending.association = 0;
    auto img = image({encode(header()), encode(lease()), free_slot(), encode(association()), encode(lost),
                      encode(pending)});
    auto r = parse(img);
    ASSERT_TRUE(std::holds_alternative<Image>(r)) << std::get<std::string>(r);
    const auto& i = std::get<Image>(r);
    EXPECT_EQ(i.header, header());
    ASSERT_EQ(i.leases.size(), 3u);
    EXPECT_EQ(i.leases[0], lease());
    EXPECT_EQ(i.leases[1], lost);
    EXPECT_EQ(i.leases[2], pending);
    ASSERT_EQ(i.associations.size(), 1u);
    EXPECT_EQ(i.associations[0], association());
}

TEST(StateCodec, LongTextIsCutToItsLimitAndStillFits) {
    auto l = lease();
    l.owner = std::string(500, 'o');
    l.last_error = std::string(500, 'e');
    auto r = parse(image({encode(header()), encode(l)}));
    ASSERT_TRUE(std::holds_alternative<Image>(r)) << std::get<std::string>(r);
    EXPECT_EQ(std::get<Image>(r).leases[0].owner, std::string(kMaxOwner, 'o'));
    EXPECT_EQ(std::get<Image>(r).leases[0].last_error, std::string(kMaxError, 'e'));
}

TEST(StateCodec, ManyCountersKeepTheHeaderValid) {
    Header h = header();
    for (int k = 0; k < 100; ++k) h.stats["counter_with_a_long_name_" + std::to_string(k)] = static_cast<uint64_t>(k);
    auto r = parse(image({encode(h)}));
    ASSERT_TRUE(std::holds_alternative<Image>(r)) << std::get<std::string>(r);
    EXPECT_EQ(std::get<Image>(r).header.next_lease_id, 1000u);
    EXPECT_LT(std::get<Image>(r).header.stats.size(), h.stats.size());
}

TEST(StateCodec, TruncatedImagesAreRefused) {
    auto img = image({encode(header()), encode(lease())});
    EXPECT_NE(error_of({}), "");
    EXPECT_NE(error_of(std::vector<uint8_t>(img.begin(), img.begin() + 100)).find("truncated"), std::string::npos);
    EXPECT_NE(error_of(std::vector<uint8_t>(img.begin(), img.end() - 1)).find("truncated"), std::string::npos);
}

TEST(StateCodec, EveryFlippedByteOfARecordIsNoticed) {
    const auto good = image({encode(header()), encode(lease()), encode(association())});
    // Every byte of every slot (the length, the checksum, the payload and
    // the zero padding), changed: never accepted as a different state.
    for (size_t i = 0; i < good.size(); ++i) {
        auto bad = good;
        bad[i] ^= 0x5a;
        auto r = parse(bad);
        EXPECT_TRUE(std::holds_alternative<std::string>(r)) << "byte " << i << " accepted";
    }
}

TEST(StateCodec, AnotherVersionIsRefusedByName) {
    auto h = encode(header());
    // The version follows the 8-byte magic, after the 12-byte slot prefix
    // (length, FNV-1a): patch it and recompute the checksum, so that only
    // the version is wrong.
    h[12 + 8] = 2;
    uint64_t sum = 0xcbf29ce484222325ull;
    uint32_t len = 0;
    for (int b = 0; b < 4; ++b) len |= static_cast<uint32_t>(h[static_cast<size_t>(b)]) << (8 * b);
    for (size_t k = 0; k < len; ++k) {
        sum ^= h[12 + k];
        sum *= 0x100000001b3ull;
    }
    for (int b = 0; b < 8; ++b) h[4 + static_cast<size_t>(b)] = static_cast<uint8_t>(sum >> (8 * b));
    EXPECT_NE(error_of(image({h})).find("version 2"), std::string::npos) << error_of(image({h}));
}

TEST(StateCodec, InconsistentRecordsAreRefused) {
    EXPECT_NE(error_of(image({encode(header()), encode(lease(5)), encode(lease(5))})).find("repeated"),
              std::string::npos);
    auto other = lease(6);  // names association 9 too
    EXPECT_NE(error_of(image({encode(header()), encode(lease(5)), encode(other)})).find("two leases"),
              std::string::npos);
    EXPECT_NE(error_of(image({encode(header()), encode(association()), encode(association())})).find("repeated"),
              std::string::npos);
    EXPECT_NE(error_of(image({encode(header()), encode(lease(5000))})).find("next lease id"), std::string::npos);
    auto no_relay = lease();
    no_relay.relay = {};
    EXPECT_NE(error_of(image({encode(header()), encode(no_relay)})).find("active lease"), std::string::npos);
    // A lease record where the header belongs.
    EXPECT_NE(error_of(image({encode(lease())})), "");
    // A header anywhere else is an unknown record type.
    EXPECT_NE(error_of(image({encode(header()), encode(header())})), "");
}

TEST(StateCodec, ALeaseMayNameAnAssociationWithoutARecord) {
    // The old broker stopped while replacing it: restore renews the lease.
    auto r = parse(image({encode(header()), encode(lease())}));
    ASSERT_TRUE(std::holds_alternative<Image>(r)) << std::get<std::string>(r);
    EXPECT_EQ(std::get<Image>(r).leases[0].association, 9u);
}

TEST(StateCodec, FdNames) {
    EXPECT_EQ(fd_name_lease(12), "lease-12");
    EXPECT_EQ(fd_name_association(3), "assoc-3");
    EXPECT_EQ(fd_name_state(1), "state-1");
    EXPECT_EQ(parse_fd_name("lease-12"), (std::pair<char, uint64_t>{'l', 12}));
    EXPECT_EQ(parse_fd_name("assoc-3"), (std::pair<char, uint64_t>{'a', 3}));
    EXPECT_EQ(parse_fd_name("claim-3"), (std::pair<char, uint64_t>{'c', 3}));
    EXPECT_EQ(fd_name_claim(3), "claim-3");
    EXPECT_EQ(parse_fd_name("state-18446744073709551615"), (std::pair<char, uint64_t>{'s', UINT64_MAX}));
    for (const char* bad : {"lease-", "lease-012", "lease-1x", "lease-18446744073709551616", "stored", "unknown", ""})
        EXPECT_EQ(parse_fd_name(bad), std::nullopt) << bad;
}

}  // namespace
