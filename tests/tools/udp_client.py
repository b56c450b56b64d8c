#!/usr/bin/python3
"""udp_client.py MODE HOST PORT PAYLOAD: a plain Python UDP client, as an
unmodified program uses UDP, for the s5socksify tests. It sends PAYLOAD to
HOST:PORT and prints each reply's payload on a line, "from IP PORT" after
it, and exits 0; on an error it prints "error ERRNO" and exits 1.

MODE:
  sendto    sendto() / recvfrom() on an unconnected socket
  connect   connect() / send() / recv(); also prints "peer IP PORT" (getpeername)
  nonblock  a non-blocking socket: sendto(), then poll() and recvfrom()
  recvmsg   IP_PKTINFO / IPV6_RECVPKTINFO asked, recvmsg(); prints "cmsg N" (how many came)
  fork      the child of a fork sends and receives on the parent's socket,
            then the parent does, on a dup() of it after closing the original
  mixed     sendto to HOST:PORT, then to ALSO:PORT (argv[5]) on the same socket
  threads   8 threads, each with a socket of its own, 20 round trips each,
            while 4 more share one socket for 20 sends each and one of them
            reads all 80 replies; prints "threads ok"
  renew     a round trip, then "waiting" until SIGUSR1 arrives, then another
            on the same socket (the test moves the lease in between)
"""
import os
import select
import signal
import socket
import sys
import threading


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def roundtrip(s, payload, dest):
    s.sendto(payload, dest)
    data, src = s.recvfrom(65535)
    print(data.decode(errors="replace"))
    print("from", src[0], src[1])


def main():
    mode, host, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
    s = socket.socket(family_of(host), socket.SOCK_DGRAM)
    s.settimeout(5)
    dest = (host, port)
    try:
        if mode == "sendto":
            roundtrip(s, payload, dest)
        elif mode == "connect":
            s.connect(dest)
            peer = s.getpeername()
            s.send(payload)
            print(s.recv(65535).decode(errors="replace"))
            print("peer", peer[0], peer[1])
        elif mode == "nonblock":
            s.setblocking(False)
            s.sendto(payload, dest)
            p = select.poll()
            p.register(s, select.POLLIN)
            if not p.poll(5000):
                print("error timeout")
                return 1
            data, src = s.recvfrom(65535)
            print(data.decode(errors="replace"))
            print("from", src[0], src[1])
        elif mode == "recvmsg":
            if s.family == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_PKTINFO", 8), 1)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            s.sendto(payload, dest)
            data, anc, _flags, src = s.recvmsg(65535, 1024)
            print(data.decode(errors="replace"))
            print("from", src[0], src[1])
            print("cmsg", len(anc))
        elif mode == "fork":
            s.sendto(payload, dest)   # the lease is made here, in the parent
            s.recvfrom(65535)
            pid = os.fork()
            if pid == 0:
                try:
                    roundtrip(s, payload + b"-child", dest)
                    os._exit(0)
                except OSError as e:
                    print("error", e.errno)
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                return 1
            d = s.dup()
            s.close()
            d.settimeout(5)
            roundtrip(d, payload + b"-dup", dest)
            d.close()
        elif mode == "threads":
            errors = []

            def own(i):
                try:
                    t = socket.socket(family_of(host), socket.SOCK_DGRAM)
                    t.settimeout(5)
                    for k in range(20):
                        msg = payload + b"-%d-%d" % (i, k)
                        t.sendto(msg, dest)
                        data, _ = t.recvfrom(65535)
                        if data != msg:
                            errors.append("own %d: sent %r got %r" % (i, msg, data))
                    t.close()
                except OSError as e:
                    errors.append("own %d: errno %d" % (i, e.errno))

            shared = s
            sent = []

            def send_shared(i):
                try:
                    for k in range(20):
                        msg = payload + b"-s%d-%d" % (i, k)
                        shared.sendto(msg, dest)
                        sent.append(msg)
                except OSError as e:
                    errors.append("shared %d: errno %d" % (i, e.errno))

            workers = [threading.Thread(target=own, args=(i,)) for i in range(8)]
            workers += [threading.Thread(target=send_shared, args=(i,)) for i in range(4)]
            for w in workers:
                w.start()
            got = set()
            while len(got) < 80:
                data, _ = shared.recvfrom(65535)
                got.add(data)
            for w in workers:
                w.join()
            if errors or got != set(sent):
                print("error", errors[:3], len(got), len(sent))
                return 1
            print("threads ok")
        elif mode == "renew":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            roundtrip(s, payload + b"-1", dest)
            print("waiting", flush=True)
            signal.sigwait({signal.SIGUSR1})
            roundtrip(s, payload + b"-2", dest)
        elif mode == "mixed":
            roundtrip(s, payload, dest)
            roundtrip(s, payload, (sys.argv[5], port))
        else:
            print("unknown mode", mode)
            return 2
    except socket.timeout:
        print("error timeout")
        return 1
    except OSError as e:
        print("error", e.errno)
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
