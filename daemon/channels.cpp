#include "channels.hpp"

#include "channel.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "errors.hpp"
#include "fd_passing.hpp"
#include "fd_reserve.hpp"
#include "log.hpp"

namespace s5d {

using s5::err::Code;
namespace ch = s5::channel;

namespace {

constexpr const char* kAccessDenied = "org.freedesktop.DBus.Error.AccessDenied";

ch::Reply failed(uint64_t token, std::string name, std::string message) {
    ch::Reply r;
    r.token = token;
    r.status = ch::Status::Failed;
    r.error_name = std::move(name);
    r.error_message = std::move(message);
    return r;
}

ch::Reply failed(uint64_t token, Code code, std::string message) {
    return failed(token, s5::err::full_name(code), std::move(message));
}

}  // namespace

Channels::~Channels() { channels_.clear(); }

std::variant<UniqueFd, Failure> Channels::open(uid_t uid, std::string owner) {
    if (channels_.size() >= kMaxTotal)
        return Failure{Code::QuotaExceeded, "the broker has " + std::to_string(channels_.size()) + " channels open (the limit)"};
    if (per_uid_[uid] >= kMaxPerUid)
        return Failure{Code::QuotaExceeded,
                       "uid " + std::to_string(uid) + " has " + std::to_string(kMaxPerUid) + " channels open (the limit)"};
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        const int e = errno;
        return Failure{out_of_descriptors(e) ? Code::QuotaExceeded : Code::ServerFailure,
                       std::string("cannot make a channel: ") + strerror(e)};
    }
    UniqueFd mine(sv[0]), theirs(sv[1]);
    if (outside_reserve(std::max(sv[0], sv[1])) < 0)
        return Failure{Code::QuotaExceeded, "cannot make a channel: out of file descriptors"};
    const int on = 1;
    if (setsockopt(mine.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0)
        return Failure{Code::ServerFailure, std::string("cannot make a channel: SO_PASSCRED: ") + strerror(errno)};
    auto c = std::make_unique<Channel>();
    c->id = next_id_++;
    c->uid = uid;
    c->owner = std::move(owner);
    c->fd = std::move(mine);
    const uint64_t id = c->id;
    c->watch = IoWatch(loop_, c->fd.get(), EPOLLIN, [this, id](uint32_t) { on_readable(id); });
    c->watch.set_important(true);
    log_info("channel %llu: opened for uid %u (%s)", static_cast<unsigned long long>(id), static_cast<unsigned>(uid),
             c->owner.c_str());
    channels_.emplace(id, std::move(c));
    ++per_uid_[uid];
    return theirs;
}

void Channels::close_channel(uint64_t id, const char* why) {
    auto it = channels_.find(id);
    if (it == channels_.end()) return;
    log_info("channel %llu: closed (%s)", static_cast<unsigned long long>(id), why);
    if (auto u = per_uid_.find(it->second->uid); u != per_uid_.end() && --u->second == 0) per_uid_.erase(u);
    channels_.erase(it);
}

void Channels::close_all(const char* why) {
    if (channels_.empty()) return;
    log_info("closing all %zu channel(s): %s", channels_.size(), why);
    channels_.clear();
    per_uid_.clear();
}

// Requests are IMPORTANT (ahead of pool refills and teardowns, which they
// start) until a channel uses up its reads of one wake-up: then it is back
// among the ordinary sources, where sd-event serves whatever waited longest,
// so that a flooding client cannot starve lease ends, keepalives or the
// other channels; it goes back once drained.
void Channels::on_readable(uint64_t id) {
    for (unsigned reads = 0;; ++reads) {
        auto it = channels_.find(id);
        if (it == channels_.end()) return;
        Channel& c = *it->second;
        if (reads == kMaxReadsPerWakeup) {
            if (c.important) c.watch.set_important(c.important = false);
            return;
        }
        uint8_t buf[ch::kRequestSize];
        alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
        iovec iov{buf, sizeof buf};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof cbuf;
        const ssize_t n = ::recvmsg(c.fd.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                if (!c.important) c.watch.set_important(c.important = true);
                return;
            }
            close_channel(id, strerror(errno));
            return;
        }
        // Any descriptor a client sent along is closed (a request carries
        // none); then the sender's credentials.
        (void)s5::take_passed_fd(msg);
        const ucred* sender = nullptr;
        ucred cred{};
        for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
                cm->cmsg_len == CMSG_LEN(sizeof(ucred))) {
                std::memcpy(&cred, CMSG_DATA(cm), sizeof cred);
                sender = &cred;
            }
        }
        // A zero-length read on SOCK_SEQPACKET is the application's close
        // (an empty message is nothing a client sends).
        if (n == 0) {
            close_channel(id, "closed by the application");
            return;
        }
        const bool truncated = (msg.msg_flags & MSG_TRUNC) != 0;
        if (!serve(c, std::span<const uint8_t>(buf, static_cast<size_t>(std::min<ssize_t>(n, sizeof buf))), truncated,
                   sender)) {
            close_channel(id, "the application does not read its replies");
            return;
        }
    }
}

bool Channels::serve(Channel& c, std::span<const uint8_t> msg, bool truncated, const ucred* sender) {
    ++requests_;
    auto req = truncated ? std::nullopt : ch::decode_request(msg);
    if (!req)
        return send_reply(c, failed(0, Code::InvalidArgs,
                                    "malformed channel request (" + std::to_string(msg.size()) +
                                        (truncated ? "+ bytes)" : " bytes)")));
    const uint64_t token = req->token;
    if (!sender || sender->uid != c.uid)
        return send_reply(c, failed(token, kAccessDenied,
                                    "the channel belongs to uid " + std::to_string(c.uid) + ", the request came from " +
                                        (sender ? "uid " + std::to_string(sender->uid) : "an unknown sender")));
    AssociateRequest ar;
    ar.dst = req->dst;
    if (req->server) {
        if (req->server->port == 0) return send_reply(c, failed(token, Code::InvalidArgs, "server_port must be 1..65535"));
        ar.server = *req->server;
    }
    if (req->timeout_ms > kMaxTimeoutMs)
        return send_reply(c, failed(token, Code::InvalidArgs, "timeout_ms must be 1.." + std::to_string(kMaxTimeoutMs)));
    if (req->timeout_ms) ar.timeout = std::chrono::milliseconds(req->timeout_ms);
    if (req->rendezvous_len != UINT32_MAX) ar.rendezvous_len = req->rendezvous_len;
    ar.nonblocking = req->nonblocking;
    ar.immediate = true;
    ar.uid = c.uid;
    ar.owner = c.owner;

    // An immediate request is answered before associate() returns; the
    // reply goes to whatever channel still has this id if it ever is not.
    struct Outcome {
        bool answered = false, sent = true;
    };
    auto out = std::make_shared<Outcome>();   // not on the stack: the answer could come later
    const uint64_t id = c.id;
    manager_.associate(std::move(ar), [this, id, token, out](AssociateResult&& res) {
        out->answered = true;
        auto it = channels_.find(id);
        if (it == channels_.end()) return;   // a Grant's fd closes here: the lease ends at its EOF
        ch::Reply r;
        r.token = token;
        if (auto* g = std::get_if<Grant>(&res)) {
            r.status = g->relay.family ? ch::Status::Granted : ch::Status::Pending;
            r.relay = g->relay;
            r.lease_id = g->lease_id;
            out->sent = send_reply(*it->second, r, g->lease_fd.get());
        } else if (auto* f = std::get_if<Failure>(&res)) {
            out->sent = send_reply(*it->second, failed(token, f->code, f->message));
        } else {
            r.status = ch::Status::WouldWait;
            out->sent = send_reply(*it->second, r);
        }
    });
    if (!out->answered) log_error("channel %llu: a request was not answered at once", static_cast<unsigned long long>(id));
    return out->sent;
}

bool Channels::send_reply(Channel& c, const ch::Reply& r, int fd) {
    try {
        const std::vector<uint8_t> bytes = ch::encode_reply(r);
        iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        s5::OneFd control;
        if (fd >= 0) control.attach(msg, fd);
        if (::sendmsg(c.fd.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return true;
        // EAGAIN: replies the application has not read fill its buffer;
        // EPIPE: it is gone. Either way the lease (if any) ends when its
        // fd closes with the caller's Grant.
        log_debug("channel %llu: cannot send a reply: %s", static_cast<unsigned long long>(c.id), strerror(errno));
    } catch (const std::exception& e) {
        log_error("channel %llu: %s", static_cast<unsigned long long>(c.id), e.what());
    }
    return false;
}

}  // namespace s5d
