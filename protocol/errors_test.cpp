// Unit tests for the error table (errors.hpp): the mapping of design.md §3.
#include "errors.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "s5broker/socks5.h"

namespace s5::err {
namespace {

// Every Code, in enum order (the table's static_assert guarantees the order).
std::vector<Code> all_codes() {
    std::vector<Code> codes;
    for (int c = static_cast<int>(Code::ServerFailure); c <= static_cast<int>(Code::Lost); ++c)
        codes.push_back(static_cast<Code>(c));
    return codes;
}

const int kS5Codes[] = {S5_ESRVFAIL,    S5_EPERM,     S5_ENETUNREACH,  S5_EHOSTUNREACH,
                        S5_ECONNREFUSED, S5_ETIMEDOUT, S5_EOPNOTSUPP,   S5_EAFNOSUPPORT,
                        S5_ENOSERV,      S5_ELOST,     S5_EPROTO,       S5_ERENEWING};

struct RepCase {
    unsigned rep;
    int err;
    int s5err;
};

// design.md §3, "SOCKS reply codes -> (errno, socks5_errno)".
const RepCase kRepCases[] = {
    {1, ECONNREFUSED, S5_ESRVFAIL},    {2, EACCES, S5_EPERM},
    {3, ENETUNREACH, S5_ENETUNREACH},  {4, EHOSTUNREACH, S5_EHOSTUNREACH},
    {5, ECONNREFUSED, S5_ECONNREFUSED}, {6, ETIMEDOUT, S5_ETIMEDOUT},
    {7, EOPNOTSUPP, S5_EOPNOTSUPP},    {8, EAFNOSUPPORT, S5_EAFNOSUPPORT},
};

TEST(Errors, RepCodesMapAsDesigned) {
    for (const RepCase& c : kRepCases) {
        const Info& i = info(from_rep(c.rep));
        EXPECT_EQ(i.err, c.err) << "REP " << c.rep;
        EXPECT_EQ(i.s5err, c.s5err) << "REP " << c.rep;
    }
}

TEST(Errors, RepCodesMapToDistinctCodes) {
    std::set<Code> seen;
    for (unsigned rep = 1; rep <= 8; ++rep) EXPECT_TRUE(seen.insert(from_rep(rep)).second) << rep;
}

TEST(Errors, UnassignedRepIsServerFailure) {
    for (unsigned rep : {9u, 10u, 0x42u, 0x80u, 0xFFu, 256u, 1000u})
        EXPECT_EQ(from_rep(rep), Code::ServerFailure) << rep;
}

TEST(Errors, InfoMatchesItsCode) {
    for (Code c : all_codes()) {
        EXPECT_EQ(info(c).code, c);
        EXPECT_FALSE(info(c).name.empty());
        EXPECT_NE(info(c).err, 0) << info(c).name;  // a failure always sets errno
    }
}

TEST(Errors, NamesAreDistinct) {
    std::set<std::string_view> names;
    for (Code c : all_codes()) EXPECT_TRUE(names.insert(info(c).name).second) << info(c).name;
}

TEST(Errors, FullNameHasPrefix) {
    EXPECT_EQ(full_name(Code::Timeout), "org.s5broker.Broker1.Error.Timeout");
    EXPECT_EQ(full_name(Code::NoServer), "org.s5broker.Broker1.Error.NoServer");
    for (Code c : all_codes()) {
        const std::string n = full_name(c);
        EXPECT_TRUE(n.starts_with(kErrorPrefix)) << n;
        EXPECT_EQ(n.substr(kErrorPrefix.size()), info(c).name);
    }
}

TEST(Errors, DesignMdErrorNamesExist) {
    // design.md §5 lists these; the broker must be able to send each one.
    const char* names[] = {"ServerFailure",      "RulesetRejected",   "NetworkUnreachable",
                           "HostUnreachable",    "ConnectionRefused", "TtlExpired",
                           "CommandNotSupported", "AddressTypeNotSupported", "NoServer",
                           "AuthFailed",         "Timeout",           "QuotaExceeded",
                           "InvalidArgs"};
    std::set<std::string_view> table;
    for (Code c : all_codes()) table.insert(info(c).name);
    for (const char* n : names) EXPECT_TRUE(table.count(n)) << n;
}

TEST(Errors, DbusNameRoundTripsForEveryCode) {
    for (Code c : all_codes()) {
        const Mapped m = from_dbus_name(full_name(c));
        EXPECT_EQ(m.err, info(c).err) << full_name(c);
        EXPECT_EQ(m.s5err, info(c).s5err) << full_name(c);
    }
}

TEST(Errors, SpecialCasesOfDesignMd) {
    // Authentication refused -> EACCES + S5_EPERM; no server -> S5_ENOSERV.
    EXPECT_EQ(info(Code::AuthFailed).err, EACCES);
    EXPECT_EQ(info(Code::AuthFailed).s5err, S5_EPERM);
    EXPECT_EQ(info(Code::NoServer).s5err, S5_ENOSERV);
    EXPECT_EQ(info(Code::QuotaExceeded).err, ENOSPC);
    EXPECT_EQ(info(Code::InvalidArgs).err, EINVAL);
}

TEST(Errors, BrokerNotOnBus) {
    const Mapped m = from_dbus_name("org.freedesktop.DBus.Error.ServiceUnknown");
    EXPECT_EQ(m.err, ECONNREFUSED);
    EXPECT_EQ(m.s5err, S5_ENOSERV);
    const Mapped n = from_dbus_name("org.freedesktop.DBus.Error.NameHasNoOwner");
    EXPECT_EQ(n.err, ECONNREFUSED);
    EXPECT_EQ(n.s5err, S5_ENOSERV);
}

TEST(Errors, UnknownBrokerErrorIsServerFailure) {
    for (const char* name : {"org.s5broker.Broker1.Error.SomethingNew", "org.s5broker.Broker1.Error.",
                             "org.s5broker.Broker1.Error.timeout"}) {
        const Mapped m = from_dbus_name(name);
        EXPECT_EQ(m.err, ECONNREFUSED) << name;
        EXPECT_EQ(m.s5err, S5_ESRVFAIL) << name;
    }
}

TEST(Errors, OtherBusErrors) {
    EXPECT_EQ(from_dbus_name("org.freedesktop.DBus.Error.AccessDenied").err, EACCES);
    EXPECT_EQ(from_dbus_name("org.freedesktop.DBus.Error.NoReply").err, ETIMEDOUT);
    EXPECT_EQ(from_dbus_name("org.freedesktop.DBus.Error.Timeout").err, ETIMEDOUT);
    EXPECT_EQ(from_dbus_name("org.freedesktop.DBus.Error.LimitsExceeded").err, ENOSPC);
    EXPECT_EQ(from_dbus_name("org.freedesktop.DBus.Error.InvalidArgs").err, EINVAL);
    // Never ENOTCONN with socks5_errno 0: that pair means nothing to an
    // application. An error nobody documented is the broker's failure.
    for (const char* name : {"com.example.Whatever", "org.freedesktop.DBus.Error.Failed"}) {
        const Mapped m = from_dbus_name(name);
        EXPECT_EQ(m.err, EIO) << name;
        EXPECT_EQ(m.s5err, S5_ESRVFAIL) << name;
    }
}

TEST(Errors, ActivationFailuresMeanNoBroker) {
    // What dbus-daemon replies when it cannot start the broker: its own
    // Spawn.* errors, or the error systemd gave for the unit.
    for (const char* name : {"org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.UnitMasked",
                             "org.freedesktop.DBus.Error.Spawn.ChildExited",
                             "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"}) {
        const Mapped m = from_dbus_name(name);
        EXPECT_EQ(m.err, ECONNREFUSED) << name;
        EXPECT_EQ(m.s5err, S5_ENOSERV) << name;
    }
}

// One classification serves the library's errno mapping, its fallback to
// direct mode and its reconnect, and s5brokerctl: they cannot disagree.
TEST(Errors, OneClassificationOfBusErrors) {
    using s5::err::BusFailure;
    using s5::err::classify_dbus_error;
    EXPECT_EQ(classify_dbus_error("org.s5broker.Broker1.Error.Timeout"), BusFailure::Broker);
    EXPECT_EQ(classify_dbus_error(s5::err::kNoBusError), BusFailure::NotOnBus);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.ServiceUnknown"), BusFailure::NotOnBus);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.NameHasNoOwner"), BusFailure::NotOnBus);
    for (const char* n : {"org.freedesktop.DBus.Error.Disconnected", "org.freedesktop.DBus.Error.NoServer",
                          "org.freedesktop.DBus.Error.NotConnected", "System.Error.ENOTCONN", "System.Error.ECONNRESET",
                          "System.Error.EPIPE", "System.Error.ECHILD"})
        EXPECT_EQ(classify_dbus_error(n), BusFailure::ConnectionLost) << n;
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.Spawn.ChildExited"), BusFailure::ActivationFailed);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.systemd1.UnitMasked"), BusFailure::ActivationFailed);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.UnknownObject"), BusFailure::NotTheBroker);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.UnknownMethod"), BusFailure::NotTheBroker);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.AuthFailed"), BusFailure::AccessDenied);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.TimedOut"), BusFailure::Timeout);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.NoMemory"), BusFailure::Limits);
    EXPECT_EQ(classify_dbus_error("org.freedesktop.DBus.Error.Failed"), BusFailure::Other);
    // A connection that stayed lost (the bus daemon is gone) means no broker
    // to ask, as an absent one: ECONNREFUSED with S5_ENOSERV.
    const Mapped m = from_dbus_name("org.freedesktop.DBus.Error.Disconnected");
    EXPECT_EQ(m.err, ECONNREFUSED);
    EXPECT_EQ(m.s5err, S5_ENOSERV);
    const Mapped nb = from_dbus_name(s5::err::kNoBusError);
    EXPECT_EQ(nb.err, ECONNREFUSED);
    EXPECT_EQ(nb.s5err, S5_ENOSERV);
}

TEST(Errors, ConnectErrnoMapsToSameErrno) {
    // The broker's own connect failure is reported with the errno it saw and
    // no SOCKS-specific code (design.md §3).
    for (int e : {ECONNREFUSED, ETIMEDOUT, ENETUNREACH, EHOSTUNREACH, ENETDOWN, EADDRNOTAVAIL}) {
        const Info& i = info(from_connect_errno(e));
        EXPECT_EQ(i.err, e) << std::strerror(e);
        EXPECT_EQ(i.s5err, 0) << std::strerror(e);
    }
    // A server killed mid-handshake failed; it sent nothing malformed.
    EXPECT_EQ(from_connect_errno(ECONNRESET), Code::ServerFailure);
    EXPECT_EQ(from_connect_errno(EPIPE), Code::ServerFailure);
    EXPECT_EQ(from_connect_errno(EIO), Code::ServerFailure);
}

TEST(Errors, S5CodesDistinctAndAboveErrno) {
    std::set<int> seen;
    for (int c : kS5Codes) {
        EXPECT_TRUE(seen.insert(c).second) << c;
        EXPECT_GT(c, 133) << c;  // EHWPOISON, the largest Linux errno
#ifdef EHWPOISON
        EXPECT_GT(c, EHWPOISON) << c;
#endif
    }
}

TEST(Errors, TableS5CodesAreKnown) {
    // Every non-zero socks5_errno the table can produce is an S5_E* value.
    const std::set<int> known(std::begin(kS5Codes), std::end(kS5Codes));
    for (Code c : all_codes()) {
        if (info(c).s5err != 0) {
            EXPECT_TRUE(known.count(info(c).s5err)) << info(c).name;
        }
    }
}

TEST(Errors, S5TextNonNullAndDistinct) {
    std::set<std::string> texts;
    for (int c : kS5Codes) {
        const char* t = s5_text(c);
        ASSERT_NE(t, nullptr) << c;
        EXPECT_GT(std::strlen(t), 0u) << c;
        EXPECT_TRUE(texts.insert(t).second) << c << ": " << t;
    }
}

TEST(Errors, S5TextForZeroAndErrno) {
    ASSERT_NE(s5_text(0), nullptr);
    EXPECT_STREQ(s5_text(0), "Success");
    // errno values fall through to strerror text.
    EXPECT_STREQ(s5_text(ECONNREFUSED), std::strerror(ECONNREFUSED));
    ASSERT_NE(s5_text(99999), nullptr);
}

}  // namespace
}  // namespace s5::err
