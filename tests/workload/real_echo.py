#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A line server for tests/integration/test_workloads.py.

    real_echo.py PORT_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE once it listens)
and answers every line of every connection with "<n> <line>", n a counter
over all connections: after a restore the counter shows the process kept
its state.  One thread, one epoll set, blocking sockets.
"""
import os
import selectors
import socket
import sys


def main():
    port_file = sys.argv[1]
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{srv.getsockname()[1]}\n")
    os.rename(tmp, port_file)

    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    pending = {}
    counter = 0
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is srv:
                conn, _ = srv.accept()
                pending[conn] = b""
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                del pending[sock]
                sock.close()
                continue
            buf = pending[sock] + data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                counter += 1
                sock.sendall(b"%d %s\n" % (counter, line))
            pending[sock] = buf


if __name__ == "__main__":
    main()
