// The datagram path of libs5client against the raw syscalls, on loopback
// with a fake lease (no broker): socks5udp_sendto() vs a raw sendto() of
// the same, already framed bytes, and socks5udp_recvfrom() vs a raw
// recvfrom() of the same datagrams. Run by tests/bench/run (or by hand).
// Prints a markdown table of the median cost per datagram over many rounds;
// ratios are to the raw call. Also shown: the bare syscalls of the
// library's send path (a MSG_PEEK recv on the lease socket and a two-iovec
// sendmsg), the floor any library doing the lease check must pay.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <s5broker/socks5.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fd_passing.hpp"
#include "datagram.hpp"
#include "lease_table.hpp"
#include "datagram_loop.hpp"
#include "wire.hpp"

namespace {

using s5::wire::Endpoint;

constexpr int kPerRound = 20000;
constexpr int kRounds = 25;
constexpr size_t kPayload = 128;

// How the fake lease's association is claimed: by the first datagram from
// the source IP (with_source: the library adds IP_PKTINFO) or not at all,
// or (claim) by a UDP socket bound to that IP that comes with the Ready
// event, as s5brokerd sends it, and that the library puts in place of
// `app` at the first socks5udp_sendto (setup's warm-up call).
struct Setup {
    int relay = -1, app = -1, lease_app = -1, lease_broker = -1;
    sockaddr_storage relay_sa{};
    socklen_t relay_len = 0;
    Endpoint relay_ep;

    Setup(int family, bool with_source, bool claim = false) {
        const char* lo = family == AF_INET ? "127.0.0.1" : "::1";
        relay = ::socket(family, SOCK_DGRAM, 0);
        Endpoint any = *Endpoint::parse_ip(lo);
        sockaddr_storage b;
        socklen_t blen = static_cast<socklen_t>(any.to_sockaddr(b));
        if (::bind(relay, reinterpret_cast<sockaddr*>(&b), blen) < 0) std::perror("bind");
        int big = 4 << 20;
        ::setsockopt(relay, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        relay_len = sizeof relay_sa;
        ::getsockname(relay, reinterpret_cast<sockaddr*>(&relay_sa), &relay_len);
        relay_ep = *Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&relay_sa), relay_len);
        app = ::socket(family, SOCK_DGRAM, 0);
        int sv[2];
        ::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv);
        lease_app = sv[0];
        lease_broker = sv[1];
        s5::wire::LeaseEvent ev{s5::wire::LeaseEventType::Ready, 1, relay_ep,
                                with_source ? *Endpoint::parse_ip(lo) : Endpoint{}, 0, 0};
        ev.socket = claim;
        auto rec = s5::wire::encode_lease_event(ev);
        if (claim) {
            const int c = ::socket(family, SOCK_DGRAM, 0);
            if (::bind(c, reinterpret_cast<sockaddr*>(&b), blen) < 0) std::perror("bind");
            iovec iov{rec.data(), rec.size()};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            s5::OneFd control;
            control.attach(m, c);
            if (::sendmsg(lease_broker, &m, 0) < 0) std::perror("sendmsg");
            ::close(c);
        } else {
            ::send(lease_broker, rec.data(), rec.size(), 0);
        }
        s5::client::LeaseTable::global().add(lease_app, lease_app, &relay_ep);
        if (claim) {
            // The first datagram puts the claim socket in place (not timed).
            uint8_t one = 0;
            Endpoint d = *Endpoint::parse_ip("192.0.2.7", 7);
            sockaddr_storage dsa;
            socklen_t dlen = static_cast<socklen_t>(d.to_sockaddr(dsa));
            if (socks5udp_sendto(app, &one, 1, 0, reinterpret_cast<sockaddr*>(&dsa), dlen,
                                 reinterpret_cast<sockaddr*>(&relay_sa), relay_len) != 0)
                std::perror("socks5udp_sendto (placing the claim socket)");
            drain();
        }
    }
    ~Setup() {
        s5::client::LeaseTable::global().remove(lease_app);
        for (int fd : {relay, app, lease_app, lease_broker}) ::close(fd);
    }
    void drain() const {
        char buf[2048];
        while (::recv(relay, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
    }
};

using s5bench::median;

// One round of kPerRound calls of `fn`, per call.
template <typename Fn>
double round_ns(const Setup& s, Fn&& fn) {
    return s5bench::ns_per_call(s, kPerRound, fn);
}

struct Row {
    std::string what;
    double ns, ratio;
};

void send_rows(int family, bool with_source, std::vector<Row>& rows, bool claim = false) {
    Setup s(family, with_source, claim);
    std::vector<uint8_t> payload(kPayload, 0x5a);
    Endpoint dst = *Endpoint::parse_ip("192.0.2.7", 7);
    sockaddr_storage dst_sa;
    socklen_t dst_len = static_cast<socklen_t>(dst.to_sockaddr(dst_sa));
    // The same bytes, framed once, for the raw sendto.
    uint8_t hdr[s5::wire::kUdpHeaderMax];
    size_t hlen = s5::wire::encode_udp_header(dst, std::span<uint8_t, s5::wire::kUdpHeaderMax>(hdr));
    std::vector<uint8_t> framed(hdr, hdr + hlen);
    framed.insert(framed.end(), payload.begin(), payload.end());

    // The framing without a copy: header and payload in two iovecs.
    auto iov_send = [&] {
        iovec iov[2] = {{hdr, hlen}, {payload.data(), payload.size()}};
        msghdr m{};
        m.msg_name = &s.relay_sa;
        m.msg_namelen = s.relay_len;
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        ::sendmsg(s.app, &m, MSG_NOSIGNAL);
    };
    // The syscalls the library cannot avoid: the lease check, then that.
    auto floor_send = [&] {
        char probe;
        (void)::recv(s.lease_app, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        iov_send();
    };
    std::vector<double> raw, iovs, floor, lib;
    for (int r = 0; r < kRounds; ++r) {
        raw.push_back(round_ns(s, [&] {
            ::sendto(s.app, framed.data(), framed.size(), 0, reinterpret_cast<sockaddr*>(&s.relay_sa), s.relay_len);
        }));
        iovs.push_back(round_ns(s, iov_send));
        floor.push_back(round_ns(s, floor_send));
        lib.push_back(round_ns(s, [&] {
            if (socks5udp_sendto(s.app, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&dst_sa),
                                 dst_len, reinterpret_cast<sockaddr*>(&s.relay_sa), s.relay_len) != 0)
                std::perror("socks5udp_sendto");
        }));
    }
    const double mr = median(raw), mi = median(iovs), mf = median(floor), ml = median(lib);
    std::string tag = std::string(family == AF_INET ? "IPv4" : "IPv6") +
                      (claim ? ", claim socket in place" : with_source ? ", source IP set" : "");
    rows.push_back({"raw `sendto` of pre-framed bytes (" + tag + ")", mr, 1.0});
    rows.push_back({"two-iovec `sendmsg`, header and payload (" + tag + ")", mi, mi / mr});
    rows.push_back({"lease peek + two-iovec `sendmsg` (" + tag + ")", mf, mf / mr});
    rows.push_back({"`socks5udp_sendto` (" + tag + ")", ml, ml / mr});
}

// Receiving: the relay queues kBatch framed datagrams on the application's
// socket (not timed), then they are read back one by one, raw or through
// socks5udp_recvfrom (which checks the source against the lease's relay
// and strips the header).
void recv_rows(int family, std::vector<Row>& rows) {
    constexpr int kBatch = 2000;
    Setup s(family, true);
    const char* lo = family == AF_INET ? "127.0.0.1" : "::1";
    Endpoint any = *Endpoint::parse_ip(lo);
    sockaddr_storage b;
    socklen_t blen = static_cast<socklen_t>(any.to_sockaddr(b));
    if (::bind(s.app, reinterpret_cast<sockaddr*>(&b), blen) < 0) std::perror("bind");
    int big = 16 << 20;
    ::setsockopt(s.app, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    sockaddr_storage app_sa;
    socklen_t app_len = sizeof app_sa;
    ::getsockname(s.app, reinterpret_cast<sockaddr*>(&app_sa), &app_len);
    Endpoint src = *Endpoint::parse_ip("192.0.2.7", 7);
    const auto framed = s5bench::framed(src, std::vector<uint8_t>(kPayload, 0x5a));
    auto fill = [&] {
        for (int i = 0; i < kBatch; ++i)
            if (::sendto(s.relay, framed.data(), framed.size(), 0, reinterpret_cast<sockaddr*>(&app_sa), app_len) < 0)
                std::perror("sendto");
    };
    auto timed = [&](auto&& read_one) {
        fill();
        auto t0 = std::chrono::steady_clock::now();
        int got = 0;
        while (got < kBatch && read_one() > 0) ++got;
        auto t1 = std::chrono::steady_clock::now();
        if (got != kBatch) std::fprintf(stderr, "datagram_bench: read %d of %d datagrams\n", got, kBatch);
        return std::chrono::duration<double, std::nano>(t1 - t0).count() / kBatch;
    };
    std::vector<double> raw, lib;
    char buf[2048];
    for (int r = 0; r < kRounds; ++r) {
        raw.push_back(timed([&] {
            sockaddr_storage from;
            socklen_t flen = sizeof from;
            return ::recvfrom(s.app, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &flen);
        }));
        lib.push_back(timed([&] {
            sockaddr_storage from;
            socklen_t flen = sizeof from;
            return socks5udp_recvfrom(s.app, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from),
                                      &flen);
        }));
    }
    const double mr = median(raw), ml = median(lib);
    std::string tag = family == AF_INET ? "IPv4" : "IPv6";
    rows.push_back({"raw `recvfrom` of framed datagrams (" + tag + ")", mr, 1.0});
    rows.push_back({"`socks5udp_recvfrom` (" + tag + ")", ml, ml / mr});
}

// Batches of 64: raw sendmmsg of pre-framed bytes vs socks5udp_sendmmsg,
// raw recvmmsg of framed datagrams vs socks5udp_recvmmsg. Per datagram; the
// goal is throughput >= 0.9x raw, i.e. a ratio <= 1.11.
void batch_rows(std::vector<Row>& rows) {
    constexpr unsigned kBatch = 64;
    Setup s(AF_INET, true);
    std::vector<uint8_t> payload(kPayload, 0x5a);
    Endpoint dst = *Endpoint::parse_ip("192.0.2.7", 7);
    sockaddr_storage dst_sa;
    socklen_t dst_len = static_cast<socklen_t>(dst.to_sockaddr(dst_sa));
    auto framed = s5bench::framed(dst, payload);

    std::vector<iovec> raw_iov(kBatch, iovec{framed.data(), framed.size()});
    std::vector<iovec> lib_iov(kBatch, iovec{payload.data(), payload.size()});
    std::vector<mmsghdr> raw(kBatch), lib(kBatch);
    for (unsigned i = 0; i < kBatch; ++i) {
        raw[i].msg_hdr.msg_name = &s.relay_sa;
        raw[i].msg_hdr.msg_namelen = s.relay_len;
        raw[i].msg_hdr.msg_iov = &raw_iov[i];
        raw[i].msg_hdr.msg_iovlen = 1;
        lib[i].msg_hdr.msg_name = &dst_sa;
        lib[i].msg_hdr.msg_namelen = dst_len;
        lib[i].msg_hdr.msg_iov = &lib_iov[i];
        lib[i].msg_hdr.msg_iovlen = 1;
    }
    // round_ns drains the relay every 64 calls: one call is a batch here,
    // so drain after each.
    auto per_datagram = [&](auto&& send_batch) {
        constexpr int kBatches = kPerRound / kBatch;
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < kBatches; ++i) {
            send_batch();
            s.drain();
        }
        auto t1 = std::chrono::steady_clock::now();
        return std::chrono::duration<double, std::nano>(t1 - t0).count() / (kBatches * kBatch);
    };
    std::vector<double> r, l;
    for (int k = 0; k < kRounds; ++k) {
        r.push_back(per_datagram([&] {
            if (::sendmmsg(s.app, raw.data(), kBatch, 0) != static_cast<int>(kBatch)) std::perror("sendmmsg");
        }));
        l.push_back(per_datagram([&] {
            if (socks5udp_sendmmsg(s.app, lib.data(), kBatch, 0, reinterpret_cast<sockaddr*>(&s.relay_sa),
                                   s.relay_len) != static_cast<int>(kBatch))
                std::perror("socks5udp_sendmmsg");
        }));
    }
    const double sr = median(r), sl = median(l);
    rows.push_back({"raw `sendmmsg`, 64 pre-framed datagrams a call", sr, 1.0});
    rows.push_back({"`socks5udp_sendmmsg`, 64 a call", sl, sl / sr});

    // Receiving: the relay queues 64 framed datagrams, one batch reads them.
    const char* lo = "127.0.0.1";
    Endpoint any = *Endpoint::parse_ip(lo);
    sockaddr_storage b;
    socklen_t blen = static_cast<socklen_t>(any.to_sockaddr(b));
    const int rx = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (::bind(rx, reinterpret_cast<sockaddr*>(&b), blen) < 0) std::perror("bind");
    int big = 16 << 20;
    ::setsockopt(rx, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    sockaddr_storage rx_sa;
    socklen_t rx_len = sizeof rx_sa;
    ::getsockname(rx, reinterpret_cast<sockaddr*>(&rx_sa), &rx_len);
    std::vector<std::vector<uint8_t>> bufs(kBatch, std::vector<uint8_t>(2048));
    std::vector<iovec> in_iov(kBatch);
    std::vector<sockaddr_storage> from(kBatch);
    std::vector<mmsghdr> in(kBatch);
    auto reset = [&] {
        for (unsigned i = 0; i < kBatch; ++i) {
            in_iov[i] = {bufs[i].data(), bufs[i].size()};
            in[i].msg_hdr = {};
            in[i].msg_hdr.msg_iov = &in_iov[i];
            in[i].msg_hdr.msg_iovlen = 1;
            in[i].msg_hdr.msg_name = &from[i];
            in[i].msg_hdr.msg_namelen = sizeof from[i];
        }
    };
    std::vector<mmsghdr> fill(kBatch);
    std::vector<iovec> fill_iov(kBatch, iovec{framed.data(), framed.size()});
    for (unsigned i = 0; i < kBatch; ++i) {
        fill[i].msg_hdr.msg_name = &rx_sa;
        fill[i].msg_hdr.msg_namelen = rx_len;
        fill[i].msg_hdr.msg_iov = &fill_iov[i];
        fill[i].msg_hdr.msg_iovlen = 1;
    }
    auto timed = [&](auto&& read_batch) {
        constexpr int kBatches = 40;
        double ns = 0;
        for (int i = 0; i < kBatches; ++i) {
            if (::sendmmsg(s.relay, fill.data(), kBatch, 0) != static_cast<int>(kBatch)) std::perror("fill");
            reset();
            auto t0 = std::chrono::steady_clock::now();
            int n = read_batch();
            auto t1 = std::chrono::steady_clock::now();
            if (n != static_cast<int>(kBatch)) std::fprintf(stderr, "datagram_bench: batch of %d\n", n);
            ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
        }
        return ns / (kBatches * kBatch);
    };
    std::vector<double> rr, rl;
    for (int k = 0; k < kRounds; ++k) {
        rr.push_back(timed([&] { return ::recvmmsg(rx, in.data(), kBatch, MSG_DONTWAIT, nullptr); }));
        rl.push_back(timed([&] { return socks5udp_recvmmsg(rx, in.data(), kBatch, MSG_DONTWAIT, nullptr); }));
    }
    const double rrm = median(rr), rlm = median(rl);
    rows.push_back({"raw `recvmmsg`, 64 framed datagrams a call", rrm, 1.0});
    rows.push_back({"`socks5udp_recvmmsg`, 64 a call", rlm, rlm / rrm});
    ::close(rx);
}

}  // namespace

int main() {
    std::vector<Row> rows;
    send_rows(AF_INET, true, rows);
    send_rows(AF_INET, false, rows);
    send_rows(AF_INET6, true, rows);
    send_rows(AF_INET, true, rows, true);
    send_rows(AF_INET6, true, rows, true);
    recv_rows(AF_INET, rows);
    recv_rows(AF_INET6, rows);
    batch_rows(rows);
    std::printf("**Datagram path** (%zu-byte payload, median of %d rounds)\n\n"
                "| call | ns per datagram | ratio to raw |\n|---|---|---|\n",
                kPayload, kRounds);
    for (const auto& r : rows) std::printf("| %s | %.0f | %.3f× |\n", r.what.c_str(), r.ns, r.ratio);
    std::printf("\n");
    return 0;
}
