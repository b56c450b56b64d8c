#!/usr/bin/python3
"""udp_witness.py --port P --log FILE --relay-pgid G... [--dns] ADDRESS...

A UDP service for the s5socksify tests that says who it heard: every
datagram's source address and port is appended to FILE as "IP PORT LENGTH
WHO", WHO being G when the socket it came from belongs to a process of
process group G (a danted's: the datagram came through its relay) and 0
when it belongs to none of them (sent directly). It is decided when the
datagram arrives, while the relay's socket still exists; a socket no
process holds (danted passes sockets between its processes) is looked at
again until one does. It echoes each datagram back, or with --dns answers it as a DNS server would: every A
query with 192.0.2.7. Port 0 picks a free port (the same on every address).
Prints "udp-witness ready port=N" once bound; exits on SIGTERM."""
import argparse
import ipaddress
import os
import selectors
import signal
import socket
import struct
import sys
import time


def dns_answer(query: bytes) -> bytes:
    if len(query) < 12:
        return b""
    qid, _flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return b""
    i = 12
    while i < len(query) and query[i] != 0:
        i += 1 + query[i]
    end = i + 5  # the root label, QTYPE, QCLASS
    if end > len(query):
        return b""
    question = query[12:end]
    qtype = struct.unpack("!H", query[end - 4:end - 2])[0]
    answers = 1 if qtype == 1 else 0
    out = struct.pack("!HHHHHH", qid, 0x8180, 1, answers, 0, 0) + question
    if answers:
        out += struct.pack("!HHHLH", 0xC00C, 1, 1, 60, 4) + bytes([192, 0, 2, 7])
    return out


def table_address(hex_addr: str) -> ipaddress._BaseAddress:
    """An address of /proc/net/udp{,6}: 32-bit words in host (little-endian)
    order, each written as 8 hex digits."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def udp_inodes(ip: str, port: int) -> set:
    """The sockets that can have sent from ip:port: bound to that port and
    to that address or to the wildcard (another address's socket with the
    same port number is somebody else's)."""
    src = ipaddress.ip_address(ip)
    if src.version == 6 and src.ipv4_mapped:
        src = src.ipv4_mapped
    found = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                addr, p = fields[1].rsplit(":", 1)
                if int(p, 16) != port:
                    continue
                local = table_address(addr)
                if local.version == 6 and local.ipv4_mapped:
                    local = local.ipv4_mapped
                if local == src or local.is_unspecified:
                    found.add(int(fields[9]))
    return found


def owner_groups(ip: str, port: int) -> set:
    """The process groups of the processes that hold the UDP socket bound to
    `port`: empty while no process holds it, which happens for an instant
    when danted hands a socket from one of its processes to another."""
    inodes = udp_inodes(ip, port)
    groups = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                    groups.add(os.getpgid(int(pid)))
        except OSError:
            continue
    return groups


def sender_group(ip: str, port: int, relay_pgids: list) -> int:
    """The relay process group that sent from ip:port, or 0 when the socket
    is someone else's. Asked again (for at most a second) while no process
    holds the socket."""
    deadline = time.monotonic() + 1.0
    while True:
        groups = owner_groups(ip, port)
        for g in relay_pgids:
            if g in groups:
                return g
        if groups or time.monotonic() >= deadline:
            return 0
        time.sleep(0.005)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--dns", action="store_true")
    ap.add_argument("--relay-pgid", type=int, action="append", required=True)
    ap.add_argument("address", nargs="+")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    port = a.port
    for addr in a.address:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((addr, port))
        port = s.getsockname()[1]
        sel.register(s, selectors.EVENT_READ)
    log = open(a.log, "a", buffering=1)
    print(f"udp-witness ready port={port}", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            data, src = s.recvfrom(65535)
            who = sender_group(src[0], src[1], a.relay_pgid)
            log.write(f"{src[0]} {src[1]} {len(data)} {who}\n")
            reply = dns_answer(data) if a.dns else data
            if reply:
                s.sendto(reply, src)


if __name__ == "__main__":
    sys.exit(main())
