# SPDX-License-Identifier: Apache-2.0
"""UDP and unix sockets of a server survive dump -> restore (real CRIU)."""
import os
import signal
import socket
import subprocess
import sys
import time

from conftest import SRC, run_kc, wait_gone

SERVER = SRC / "tests" / "workload" / "real_dgram.py"


def ask_udp(port, data):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(4096)


def ask_unix(path, data):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(data)
        return s.recv(4096)


def test_udp_and_unix_listener_roundtrip(tmp_path, kc_env):
    d = tmp_path / "srv"
    d.mkdir()
    with open(tmp_path / "srv.log", "wb") as log:
        p = subprocess.Popen([sys.executable, str(SERVER), str(d)], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 10
        while not (d / "udp.port").exists():
            assert time.time() < deadline, (tmp_path / "srv.log").read_text()
            time.sleep(0.02)
        port = int((d / "udp.port").read_text())
        assert ask_udp(port, b"a") == b"1 a"
        assert ask_unix(d / "sock", b"b") == b"2 b"

        archive = tmp_path / "srv.tar.zst"
        run_kc(kc_env, "dump", "-o", archive, p.pid, check=0)
        p.wait(timeout=10)
        assert wait_gone(p.pid)
        # nothing answers while it is gone
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            assert s.connect_ex(str(d / "sock")) != 0

        out = run_kc(kc_env, "restore", archive, check=0).stdout
        assert int(out.split()[-1]) == p.pid
        # same sockets, same counter
        assert ask_udp(port, b"c") == b"3 c"
        assert ask_unix(d / "sock", b"d") == b"4 d"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
