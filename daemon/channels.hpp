// The broker's end of the private channels (protocol/channel.hpp,
// docs/design.md §5a): a process that was let through the bus's two doors
// (the bus policy, then allowed_groups in OpenChannel) gets one
// SOCK_SEQPACKET socket to the broker and makes its Associate requests on
// it, without dbus-daemon on the path.
//
// What makes it as safe as the bus:
// - Every request is authenticated by the kernel, not by the channel: the
//   broker's end has SO_PASSCRED, so each message arrives with its
//   sender's uid (SCM_CREDENTIALS), and a request from any uid but the one
//   that opened the channel is refused (a descriptor passed to another
//   user does not pass the right to use it).
// - Requests are answered at once or not at all (WouldWait), so nothing
//   waits here and a channel holds no state between messages; the quota of
//   leases per uid is the Manager's, as for the bus.
// - A channel's replies go into that channel's own socket buffer: a
//   client that stops reading fills only its own buffer, and loses its
//   channel when its reply does not fit. It can stall nobody else.
// - At most kMaxPerUid channels per uid and kMaxTotal in all (each costs
//   the broker one descriptor); reads are bounded per wake-up, so a
//   flooding client takes its turn with the others.
// - A change of allowed_groups closes every channel: each process opens a
//   new one through the bus, which checks it again.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>

#include "channel.hpp"
#include "event_loop.hpp"
#include "manager.hpp"
#include "unique_fd.hpp"

namespace s5d {

class Channels {
public:
    static constexpr size_t kMaxPerUid = 32;
    static constexpr size_t kMaxTotal = 1024;
    static constexpr unsigned kMaxReadsPerWakeup = 16;

    Channels(EventLoop& loop, Manager& manager) : loop_(loop), manager_(manager) {}
    ~Channels();
    Channels(const Channels&) = delete;
    Channels& operator=(const Channels&) = delete;

    // A channel for `uid` (already let in), whose leases name `owner` (the
    // caller's unique bus name). The application's end, or a Failure:
    // QuotaExceeded at the limits or out of descriptors.
    std::variant<UniqueFd, Failure> open(uid_t uid, std::string owner);
    void close_all(const char* why);
    size_t count() const { return channels_.size(); }
    uint64_t requests() const { return requests_; }

private:
    struct Channel {
        uint64_t id;
        uid_t uid;
        std::string owner;
        UniqueFd fd;
        IoWatch watch;
        bool important = true;   // the watch's priority (see on_readable)
    };
    void on_readable(uint64_t id);
    // Serves one message; false when the channel must close.
    bool serve(Channel& c, std::span<const uint8_t> msg, bool truncated, const ::ucred* sender);
    // False when the reply could not be sent (the channel must close).
    bool send_reply(Channel& c, const s5::channel::Reply& r, int fd = -1);
    void close_channel(uint64_t id, const char* why);

    EventLoop& loop_;
    Manager& manager_;
    uint64_t next_id_ = 1;
    uint64_t requests_ = 0;
    std::map<uint64_t, std::unique_ptr<Channel>> channels_;
    std::unordered_map<uid_t, size_t> per_uid_;
};

}  // namespace s5d
