#!/usr/bin/python3
"""The PySocks baseline of tests/bench: UDP associations made the way a
Python application makes them with python3-socks.

    pysocks_client.py PROXY_HOST PROXY_PORT TARGET_HOST TARGET_PORT COUNT

For each of COUNT rounds (after one warm-up round that is not reported):
a socksocket(AF_INET, SOCK_DGRAM) is bound, which makes PySocks open the
control connection and send UDP ASSOCIATE; then one datagram goes to the
target through the relay and its echo is awaited. Prints one line per
round: seconds to the association, seconds to the first echo, both from the
start of bind(). Run with Debian's /usr/bin/python3 (the python3 on PATH
may not see python3-socks).
"""
import socket
import sys
import time

import socks


def one_round(proxy, target):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, proxy[0], proxy[1])
    s.settimeout(5)
    try:
        t0 = time.perf_counter()
        s.bind(("127.0.0.1", 0))  # UDP ASSOCIATE happens here
        t1 = time.perf_counter()
        s.sendto(b"pysocks-bench", target)
        data, _ = s.recvfrom(2048)
        t2 = time.perf_counter()
        if data != b"pysocks-bench":
            raise RuntimeError("unexpected echo %r" % data)
        return t1 - t0, t2 - t0
    finally:
        s.close()


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    proxy = (sys.argv[1], int(sys.argv[2]))
    target = (sys.argv[3], int(sys.argv[4]))
    count = int(sys.argv[5])
    one_round(proxy, target)
    for _ in range(count):
        assoc, echo = one_round(proxy, target)
        print("%.9f %.9f" % (assoc, echo), flush=True)


if __name__ == "__main__":
    main()
