#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A UDP and unix-socket server for tests/integration/test_sockets.py.

    real_dgram.py DIR

Binds a UDP socket on 127.0.0.1 (its port written to DIR/udp.port) and
listens on the unix stream socket DIR/sock.  Every datagram and every line
of every unix connection is answered with "<n> <data>", n one counter over
both: after a restore the counter shows the process kept its state.
"""
import os
import selectors
import socket
import sys


def main():
    d = sys.argv[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(os.path.join(d, "sock"))
    unix.listen(4)
    with open(os.path.join(d, "udp.port.tmp"), "w") as f:
        f.write(f"{udp.getsockname()[1]}\n")
    os.rename(os.path.join(d, "udp.port.tmp"), os.path.join(d, "udp.port"))

    sel = selectors.DefaultSelector()
    sel.register(udp, selectors.EVENT_READ)
    sel.register(unix, selectors.EVENT_READ)
    n = 0
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is udp:
                data, peer = udp.recvfrom(4096)
                n += 1
                udp.sendto(b"%d " % n + data, peer)
            elif s is unix:
                conn, _ = unix.accept()
                sel.register(conn, selectors.EVENT_READ)
            else:
                data = s.recv(4096)
                if not data:
                    sel.unregister(s)
                    s.close()
                    continue
                n += 1
                s.sendall(b"%d " % n + data)


if __name__ == "__main__":
    main()
