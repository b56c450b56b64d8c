#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/ (run from anywhere).

The seeds are committed; rerun this after changing an input layout of a
target (documented at the top of each tests/fuzz/fuzz_*.cpp). Files that
came from fuzzing findings (named finding-*) are left alone.
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def reset(target):
    d = os.path.join(CORPUS, target)
    if os.path.isdir(d):
        for n in os.listdir(d):
            if not n.startswith("finding-"):
                os.remove(os.path.join(d, n))


V4 = bytes([127, 0, 0, 1])
V6 = bytes(15) + b"\x01"
PORT = struct.pack(">H", 1080)


def reply(rep=0, atyp=1, addr=V4, port=PORT, ver=5, rsv=0):
    if atyp == 3:
        return bytes([ver, rep, rsv, 3, len(addr)]) + addr + port
    return bytes([ver, rep, rsv, atyp]) + addr + port


# ---- fuzz_server_replies: opts | nsplit | splits | stream ----------------------
def server_replies():
    t = "fuzz_server_replies"
    reset(t)

    def seed(name, opts, stream, splits=()):
        write(t, name, bytes([opts, len(splits)]) + bytes(splits) + stream)

    seed("none-v4", 0, b"\x05\x00" + reply())
    seed("none-v6", 4, b"\x05\x00" + reply(atyp=4, addr=V6))
    seed("none-domain", 0, b"\x05\x00" + reply(atyp=3, addr=b"relay.example"))
    seed("none-domain-empty", 0, b"\x05\x00" + reply(atyp=3, addr=b""))
    seed("pipelined-none-v4", 2, b"\x05\x00" + reply(), splits=(1, 3))
    seed("creds-v4", 1, b"\x05\x02\x01\x00" + reply())
    seed("creds-pipelined-v6-split", 3 | 0x18, b"\x05\x02\x01\x00" + reply(atyp=4, addr=V6), splits=(1, 2, 3, 5, 9))
    seed("creds-auth-ver5", 1, b"\x05\x02\x05\x00" + reply())
    seed("creds-auth-rejected", 1, b"\x05\x02\x01\x01")
    seed("creds-method-ff", 1, b"\x05\xff")
    seed("none-method-ff", 0, b"\x05\xff")
    seed("none-method-mismatch", 0, b"\x05\x02\x01\x00" + reply())
    for rep in range(1, 10):
        seed("rep-%d" % rep, 0, b"\x05\x00" + reply(rep=rep))
    seed("rep-ff-creds", 1, b"\x05\x02\x01\x00" + reply(rep=0xFF))
    seed("bad-version-socks4", 0, b"\x00\x5a\x00\x00\x00\x00\x00\x00")
    seed("bad-version-reply", 0, b"\x05\x00\x04\x00\x00\x01" + V4 + PORT)
    seed("unknown-atyp", 0, b"\x05\x00\x05\x00\x00\x02" + V4 + PORT)
    seed("truncated-reply", 0, b"\x05\x00\x05\x00\x00\x04" + V6[:7], splits=(2,))
    seed("trailing-bytes", 0, b"\x05\x00" + reply() + b"garbage")
    seed("rsv-nonzero", 0, b"\x05\x00" + reply(rsv=0x7F))
    seed("http", 0, b"HTTP/1.1 400 Bad Request\r\n\r\n")
    seed("empty", 0, b"")


# ---- fuzz_udp_header: opts | datagram ---------------------------------------------
def udp_header():
    t = "fuzz_udp_header"
    reset(t)
    h4 = b"\x00\x00\x00\x01" + bytes([198, 51, 100, 7]) + struct.pack(">H", 53)
    h6 = b"\x00\x00\x00\x04" + bytes.fromhex("20010db8000000000000000000000053") + struct.pack(">H", 443)
    payload = b"hello, datagram"
    write(t, "v4-big-buf", bytes([14]) + h4 + payload)
    write(t, "v4-small-buf-trunc", bytes([2 | 16]) + h4 + payload)
    write(t, "v4-empty-payload", bytes([5]) + h4)
    write(t, "v6-big-buf", bytes([14]) + h6 + payload)
    write(t, "v6-len12", bytes([5]) + h6 + payload)
    write(t, "v6-len13-peek", bytes([6 | 32]) + h6 + payload * 3)
    write(t, "v6-len0-trunc", bytes([0 | 16]) + h6 + payload)
    write(t, "v6-len23-shortfrom", bytes([9 | 128]) + h6 + payload)
    write(t, "v6-exact-header", bytes([8]) + h6)
    write(t, "frag1", bytes([14]) + h4[:2] + b"\x01" + h4[3:] + payload)
    write(t, "rsv-nonzero", bytes([14]) + b"\x01" + h4[1:] + payload)
    write(t, "domain", bytes([14]) + b"\x00\x00\x00\x03\x07example" + struct.pack(">H", 80) + payload)
    write(t, "short-v6", bytes([14]) + h6[:15])
    write(t, "stranger", bytes([14 | 64]) + h4 + payload)
    write(t, "empty", bytes([3]))


# ---- fuzz_lease_event: 64-byte records -----------------------------------------
def lease_event():
    t = "fuzz_lease_event"
    reset(t)

    def rec(typ, gen, rfam=4, rip=bytes([192, 0, 2, 9]), rport=5000, sfam=4, sip=bytes([10, 0, 0, 1]),
            err=0, s5err=0, version=1, magic=b"S5LE", res6=0, res7=0):
        r = magic + bytes([version, typ, res6, res7]) + struct.pack(">I", gen)
        r += bytes([rfam]) + struct.pack(">H", rport) + rip + bytes(16 - len(rip))
        r += bytes([sfam]) + sip + bytes(16 - len(sip))
        r += struct.pack(">iI", err, s5err)
        return r + bytes(64 - len(r))

    v6 = bytes.fromhex("20010db8000000000000000000000099")
    mapped = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 9])
    write(t, "ready-v4", rec(1, 1))
    write(t, "renewed-v6", rec(2, 2, rfam=6, rip=v6, sfam=6, sip=bytes(15) + b"\x01"))
    write(t, "lost-errno", rec(3, 3, rfam=0, rip=b"", sfam=0, sip=b"", err=110, s5err=1006))
    write(t, "lost-noreason", rec(3, 1, rfam=0, rip=b"", sfam=0, sip=b""))
    write(t, "ready-mapped", rec(1, 1, rfam=6, rip=mapped))
    write(t, "ready-no-relay", rec(1, 1, rfam=0, rip=b""))
    write(t, "bad-magic", rec(1, 1, magic=b"S5LF"))
    write(t, "bad-version", rec(1, 1, version=2))
    write(t, "bad-type", rec(5, 1))   # 4 is Renewing
    write(t, "bad-family", rec(1, 1, rfam=5))
    write(t, "short", rec(1, 1)[:63])
    write(t, "stale-tail-bytes", rec(1, 1)[:19] + b"\xAA" * 12 + rec(1, 1)[31:])
    # The socket flag (byte 6 bit 0) without a descriptor: lost, EMFILE.
    write(t, "ready-flagged-no-socket", rec(1, 1, res6=1))
    # Sequences (one record per 64 bytes; byte 7 bit 0 = lease B, byte 6
    # bit 1 = look at once; byte 7 bit 7 = write one byte long, bit 6 = one
    # short).
    write(t, "seq-a-ready-renew-stale-lost",
          rec(1, 1) + rec(2, 2, rip=bytes([192, 0, 2, 10])) + rec(2, 1, rip=bytes([192, 0, 2, 11])) + rec(3, 3, err=104))
    write(t, "seq-b-renew-shared-relay",
          rec(2, 1, res7=1) + rec(1, 1, res6=2) + rec(2, 2, res6=2, res7=1) + rec(2, 5, rip=bytes([192, 0, 2, 1]), rport=4000))
    write(t, "seq-b-gen0-and-long",
          rec(1, 0, res7=1) + rec(2, 7, res7=0x81) + rec(2, 8, res7=0x41) + rec(2, 9, res7=1))
    write(t, "seq-a-flagged-after-ready", rec(1, 1, res6=2) + rec(2, 2, res6=1) + rec(2, 3))
    # Renewing (type 4): alone, and in sequences with stale and newer
    # generations.
    ip = lambda last: bytes([192, 0, 2, last])
    write(t, "renewing-v4", rec(4, 1))
    write(t, "renewing-no-relay", rec(4, 2, rfam=0, rip=b"", sfam=0, sip=b""))
    write(t, "seq-a-pending-renewing-lost",
          rec(4, 1, rfam=0, rip=b"", sfam=0, sip=b"", res6=2) + rec(4, 1, rip=ip(12)) + rec(3, 1, err=104))
    write(t, "seq-a-ready-renewing-renewed",
          rec(1, 1) + rec(4, 1) + rec(4, 1, res6=2) + rec(2, 1, rip=ip(11)) + rec(2, 2, rip=ip(10)))
    write(t, "seq-b-renewing-stale-and-newer",
          rec(4, 1, res7=1) + rec(4, 0, res6=2, res7=1) + rec(2, 1, res7=1) + rec(4, 3, rip=ip(13), res6=2, res7=1) +
          rec(4, 5, rfam=0, rip=b"", res7=1) + rec(2, 6, res6=2, res7=1))
    many = b"".join(rec(2, g, rip=bytes([192, 0, 2, g]), res6=g & 2, res7=g & 1) for g in range(1, 13))
    write(t, "seq-many-relays", many)


# ---- fuzz_config: JSON text ---------------------------------------------------------
DESIGN_EXAMPLE = """{
  "servers": [
    {"name": "corp", "address": "192.0.2.10", "port": 1080,
     "auth": {"method": "username", "username": "app", "password_file": "/etc/s5broker/corp.pw"},
     "relay_address_override": null},
    {"name": "backup", "address": "2001:db8::10", "port": 1080, "auth": {"method": "none"}}
  ],
  "routes": [{"destination": "0.0.0.0/0", "servers": ["corp", "backup"]},
             {"destination": "::/0", "servers": ["corp"]}],
  "pool": {"min_idle": 2, "max_associations": 4096, "max_idle_age_s": 600},
  "keepalive": {"idle_s": 10, "interval_s": 3, "count": 3},
  "lease_grace_s": 30,
  "limits": {"leases_per_uid": 256, "leases_total": 16384},
  "allowed_groups": ["s5broker"]
}
"""


def config():
    t = "fuzz_config"
    reset(t)
    write(t, "design-example.json", DESIGN_EXAMPLE)
    write(t, "minimal.json", '{"servers":[{"name":"a","address":"127.0.0.1","port":1080}]}')
    write(t, "override-pipelining.json",
          '{"servers":[{"name":"nat","address":"::1","port":1,"relay_address_override":"203.0.113.5",'
          '"pipelining":true}],"routes":[{"destination":"10.0.0.0/8","servers":["nat"]},'
          '{"destination":"10.1.2.3","servers":["nat"]},{"destination":"2001:db8::/32","servers":["nat"]}]}')
    write(t, "claim-modes.json",
          '{"servers":[{"name":"a","address":"127.0.0.1","port":1,"claim":"socket"},'
          '{"name":"b","address":"127.0.0.1","port":2,"claim":"first_datagram"}]}')
    write(t, "bad-claim.json", '{"servers":[{"name":"a","address":"127.0.0.1","port":1,"claim":"first"}]}')
    write(t, "bad-dup-name.json",
          '{"servers":[{"name":"a","address":"127.0.0.1","port":1},{"name":"a","address":"127.0.0.2","port":1}]}')
    write(t, "bad-unknown-route-server.json",
          '{"servers":[{"name":"a","address":"127.0.0.1","port":1}],'
          '"routes":[{"destination":"0.0.0.0/0","servers":["b"]}]}')
    write(t, "bad-host-bits.json",
          '{"servers":[{"name":"a","address":"127.0.0.1","port":1}],'
          '"routes":[{"destination":"10.0.0.1/8","servers":["a"]}]}')
    write(t, "bad-dup-key.json", '{"servers":[],"servers":[]}')
    write(t, "bad-json.json", '{"servers":[{"name":"a",')
    write(t, "bad-types.json",
          '{"servers":[{"name":"a b","address":"0.0.0.0","port":70000,"auth":{"method":"gssapi"}}],'
          '"pool":{"min_idle":5000},"limits":{"leases_per_uid":10,"leases_total":1},"allowed_groups":[""]}')
    write(t, "bad-control-chars.json", '{"serv\\u0000ers\\n":1}')


# ---- fuzz_state: a state image (daemon/state_codec.hpp) ---------------------
SLOT = 512


def fnv1a(b):
    h = 0xCBF29CE484222325
    for c in b:
        h ^= c
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def slot(payload):
    return (struct.pack("<IQ", len(payload), fnv1a(payload)) + payload).ljust(SLOT, b"\0")


def text(s):
    return bytes([len(s)]) + s


def endpoint(kind=4, addr=V4, port=40000):
    if kind == 0:
        return b"\0" + struct.pack("<H", 0)
    return bytes([kind]) + addr + struct.pack("<H", port)


def state_header(epoch=1, next_id=100, stats=((b"leases_granted", 3),)):
    p = b"S5BRKST\0" + struct.pack("<IIQQ", 1, SLOT, epoch, next_id) + bytes([len(stats)])
    for k, v in stats:
        p += text(k) + struct.pack("<Q", v)
    return slot(p)


def state_lease(lid=5, state=1, assoc=9, gen=1, relay=None):
    relay = endpoint() if relay is None else relay
    p = bytes([1]) + struct.pack("<QI", lid, 1000) + text(b":1.42") + endpoint(6, V6, 53)
    p += text(b"corp") + struct.pack("<I", gen) + bytes([state]) + relay + endpoint(4, V4, 0)
    p += struct.pack("<Q", 1764590000000000) + text(b"") + struct.pack("<iiQ", 0, 0, assoc)
    return slot(p)


def state_association(aid=9):
    p = bytes([2]) + struct.pack("<Q", aid) + text(b"corp") + endpoint(4, V4, 1080)
    p += endpoint() + endpoint(4, V4, 0) + struct.pack("<Q", 123456)
    return slot(p)


def state():
    t = "fuzz_state"
    reset(t)
    write(t, "header-only", state_header())
    write(t, "lease-and-association", state_header() + state_lease() + state_association())
    write(t, "free-slot-between", state_header() + state_lease() + bytes(SLOT) + state_association())
    write(t, "renewing-lost-pending", state_header() + state_lease(5, 2, 0, 2) + state_lease(6, 3, 0) +
          state_lease(7, 0, 0, 0, endpoint(0)))
    write(t, "orphan-association-ref", state_header() + state_lease(5, 1, 77))
    write(t, "truncated", (state_header() + state_lease())[:700])
    write(t, "version-2", slot(b"S5BRKST\0" + struct.pack("<IIQQ", 2, SLOT, 1, 100) + b"\0"))
    write(t, "bad-checksum", state_header()[:20] + b"\xff" + state_header()[21:])


# ---- fuzz_channel: one request or reply message (protocol/channel.hpp) -------
def chan_request(flags=0, dfam=4, dip=V4, dport=53, sfam=0, sip=b"", sport=0, timeout=0, rlen=0xFFFFFFFF,
                 token=7, magic=b"S5RQ", version=1, reserved=b"\0\0\0\0"):
    return (magic + bytes([version, flags, dfam, sfam]) + struct.pack(">HHIIQ", dport, sport, timeout, rlen, token) +
            dip.ljust(16, b"\0") + sip.ljust(16, b"\0") + reserved)


def chan_reply(status=1, rfam=4, rip=V4, rport=40000, token=7, lease=12, name=b"", message=b"", magic=b"S5RP"):
    return (magic + bytes([1, status, rfam, 0]) + struct.pack(">HHH", rport, len(name), len(message)) + b"\0\0" +
            struct.pack(">QQ", token, lease) + rip.ljust(16, b"\0") + name + message)


def channel():
    t = "fuzz_channel"
    reset(t)
    write(t, "request-route-v4", chan_request())
    write(t, "request-server-v6-nonblocking", chan_request(flags=3, dfam=6, dip=V6, sfam=6, sip=V6, sport=1080,
                                                           timeout=2500, rlen=16))
    write(t, "request-server-flag-without-server", chan_request(flags=2))
    write(t, "request-v4-tail-byte", chan_request(dip=V4 + b"\1"))
    write(t, "request-reserved", chan_request(reserved=b"\0\0\0\1"))
    write(t, "request-short", chan_request()[:63])
    write(t, "reply-granted", chan_reply())
    write(t, "reply-granted-v6", chan_reply(rfam=6, rip=V6))
    write(t, "reply-pending", chan_reply(status=2, rfam=0, rip=b"", rport=0))
    write(t, "reply-wouldwait", chan_reply(status=4, rfam=0, rip=b"", rport=0, lease=0))
    write(t, "reply-failed", chan_reply(status=3, rfam=0, rip=b"", rport=0, lease=0,
                                        name=b"org.s5broker.Broker1.Error.QuotaExceeded",
                                        message="uid 1000 holds 2 leases (the limit) \u00e9".encode()))
    write(t, "reply-failed-no-name", chan_reply(status=3, rfam=0, rip=b"", rport=0, lease=0))
    write(t, "reply-bad-status", chan_reply(status=9))
    write(t, "reply-lengths-off", chan_reply(status=3, rfam=0, rip=b"", rport=0, lease=0, name=b"x")[:-1])


if __name__ == "__main__":
    server_replies()
    udp_header()
    lease_event()
    config()
    state()
    channel()
