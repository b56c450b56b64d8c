// libs5client's private channel to s5brokerd (protocol/channel.hpp,
// docs/design.md §5a): one SOCK_SEQPACKET socket per process, opened with
// one OpenChannel call on the bus and then used for every Associate the
// broker can answer at once (a pooled association, a pending lease, an
// error): one sendmsg and one recvmsg, the lease fd attached to the reply.
// Anything else (the channel cannot be had, the broker would have to wait
// for an association) goes to the bus as before, so the semantics are the
// bus's.
//
// - One request at a time on the channel, under a mutex held for one
//   round trip to a broker that answers without waiting. A non-blocking
//   call never waits for that mutex (it uses the bus when the channel is
//   busy), as it never waits for the shared bus connection.
// - A broker that went away (restart) is noticed at the send or the
//   receive; the channel is opened again, once, and the request repeated.
//   A reply lost with the old broker carried the only copy of its lease
//   fd, so no lease is made twice.
// - A request the channel refuses for its uid (the process changed uid
//   after opening it) is asked on the bus, whose connection carries the
//   credentials it was made with, as before the channel existed.
// - fork(): the child never touches the parent's channel (the socket is
//   shared); it closes its copy and opens its own on first use.
// - S5CLIENT_CHANNEL=0 turns it off (every call goes to the bus).
#pragma once

#include <functional>
#include <optional>

#include "broker_link.hpp"
#include "channel.hpp"
#include "unique_fd.hpp"

namespace s5::client {

// OpenChannel on the bus: the channel, or an invalid fd.
using ChannelOpener = std::function<s5::UniqueFd()>;

// The broker's answer on the channel, or nullopt: ask on the bus.
std::optional<AssociateOutcome> channel_associate(s5::channel::Request req, bool may_wait, const ChannelOpener& open);

}  // namespace s5::client
