# SPDX-License-Identifier: Apache-2.0
"""Real workloads through dump -> restore with real CRIU: an HTTP server,
TCP connections (kept with --tcp-established, closed with --tcp-close,
refused without either) and Python multiprocessing pools (spawn and
forkserver), whose semaphores need CRIU's --link-remap.

Helpers: tests/workload/real_echo.py (a line server with a counter over
all connections) and tests/workload/real_pool.py (a Pool that appends its
progress to a file).  Every process is started in its own session and
killed with its whole process group at the end, pass or fail.
"""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import KC, SRC, alive, child_pids, kill_pid, proc_state, reap, run_kc, wait_gone

PY = sys.executable
REAL_ECHO = SRC / "tests" / "workload" / "real_echo.py"
REAL_POOL = SRC / "tests" / "workload" / "real_pool.py"
SHM = Path("/dev/shm")


def descendants(pid):
    out = []
    for c in child_pids(pid):
        out += [c] + descendants(c)
    return out


class Spawned:
    """A process in its own session, stdin/stdout/stderr on files."""

    def __init__(self, tmp, name, args):
        self.log = tmp / f"{name}.log"
        stdin = tmp / f"{name}.in"
        stdin.write_text("")
        with open(stdin, "rb") as fin, open(self.log, "wb") as fout:
            self.proc = subprocess.Popen([str(a) for a in args], stdin=fin, stdout=fout,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self.stop = None  # a file that makes it exit by itself

    def tree(self):
        return [self.pid] + descendants(self.pid)

    def reap(self):
        """The dumped original is killed: collect it so its pid is free."""
        reap(self.proc)

    def kill(self):
        # a pool asked to stop unlinks its semaphores; SIGKILL would leak them
        if self.stop and alive(self.pid):
            self.stop.write_text("")
            wait_gone(self.pid, timeout=5)
        # a restored tree is no child of ours, but keeps its session and group
        pids = self.tree()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in pids:
            kill_pid(p)
        self.reap()
        for p in pids:
            wait_gone(p, timeout=5)


@pytest.fixture
def spawn(tmp_path):
    started = []

    def start(name, args):
        s = Spawned(tmp_path, name, args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


@pytest.fixture
def clients():
    """TCP client sockets, closed at the end."""
    socks = []

    def connect(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
        return s

    yield connect
    for s in socks:
        s.close()


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_sockets(pid):
    """(local port, remote port, state) of the TCP sockets pid holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[9] in inodes:
                out.append((int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3]))
    return out


def lock_rules(port):
    """iptables rules of CRIU's network lock that name port."""
    out = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    return [l for l in out.splitlines()
            if "-j DROP" in l and (f"--sport {port} " in l or f"--dport {port} " in l)]


def remove_lock_rules(port):
    for rule in lock_rules(port):
        subprocess.run(["iptables", "-D", *shlex.split(rule)[1:]], capture_output=True)


def link_remaps():
    return {p.name for p in SHM.glob("link_remap.*")}


def inspect(env, image):
    return run_kc(env, "inspect", image, check=0).stdout


# --- an HTTP server ---------------------------------------------------------------------------


def http_get(port, path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=timeout) as r:
        return r.read()


def test_http_server_roundtrip(tmp_path, kc_env, spawn):
    www = tmp_path / "www"
    www.mkdir()
    content = os.urandom(4096).hex().encode()
    (www / "page.txt").write_bytes(content)
    port = free_port()
    srv = spawn("http", [PY, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, port])

    def answers():
        try:
            return http_get(port, "page.txt", timeout=1)
        except OSError:
            return None

    assert wait_for(answers, 20, "http.server to answer") == content
    # the server closes each connection (HTTP/1.0): wait until it holds only
    # its listening socket, so the dump needs no TCP option
    wait_for(lambda: all(st == "0A" for _, _, st in tcp_sockets(srv.pid)), 10, "connections to close")

    archive = tmp_path / "http.tar.zst"
    run_kc(kc_env, "dump", "-o", archive, srv.pid, check=0)
    srv.reap()
    assert wait_gone(srv.pid), "the dumped server must be gone"
    with pytest.raises(OSError):
        http_get(port, "page.txt", timeout=2)

    p = run_kc(kc_env, "restore", archive, check=0)
    assert int(p.stdout.strip()) == srv.pid
    assert alive(srv.pid)
    assert http_get(port, "page.txt") == content
    # still serving its directory, not a replay: a file made after the restore
    (www / "new.txt").write_bytes(b"after restore\n")
    assert http_get(port, "new.txt") == b"after restore\n"


# --- TCP connections --------------------------------------------------------------------------


class Line:
    """A client of real_echo.py: ask("x") -> "<n> x"."""

    def __init__(self, sock):
        self.sock = sock
        self.f = sock.makefile("rb")

    def send(self, text):
        self.sock.sendall(text.encode() + b"\n")

    def reply(self, timeout=10):
        self.sock.settimeout(timeout)
        return self.f.readline().decode().rstrip("\n")

    def ask(self, text, timeout=10):
        self.send(text)
        return self.reply(timeout)


def start_echo(tmp_path, spawn, name="echo"):
    port_file = tmp_path / f"{name}.port"
    srv = spawn(name, [PY, REAL_ECHO, port_file])
    wait_for(port_file.exists, 20, f"{name} to listen")
    return srv, int(port_file.read_text())


def test_tcp_established_connection_survives(tmp_path, kc_env, spawn, clients):
    """The test is the client and keeps its socket; only the server is dumped.

    CRIU puts the server's socket into TCP repair mode and, with its default
    network lock (iptables; here iptables-nft), adds DROP rules for the
    connection: after `criu dump --leave-stopped` both stay, so the kill
    that ends kcheckpoint's dump closes the socket silently (no FIN, no
    RST) and the client's packets meanwhile are dropped, not answered with
    a reset.  The restore rebuilds the socket in repair mode and removes
    the rules; the client's retransmission then reaches the restored
    server.  No --network-lock option is needed on this VM.
    """
    srv, port = start_echo(tmp_path, spawn)
    c = Line(clients(port))
    client_port = c.sock.getsockname()[1]
    try:
        assert c.ask("a") == "1 a"
        assert c.ask("b") == "2 b"
        archive = tmp_path / "echo.tar.zst"
        run_kc(kc_env, "dump", "--tcp-established", "-o", archive, srv.pid, check=0)
        srv.reap()
        assert wait_gone(srv.pid)
        assert "tcp-established yes" in inspect(kc_env, archive)
        assert lock_rules(client_port), "CRIU's network lock holds the connection while it is dumped"
        # sent while the server is gone: dropped by the lock, retransmitted later
        c.send("c")
        p = run_kc(kc_env, "restore", archive, check=0)
        assert int(p.stdout.strip()) == srv.pid
        assert c.reply(timeout=20) == "3 c", "the line sent during the downtime arrives"
        assert c.ask("d") == "4 d", "same connection, counter continues"
        assert any(lp == port and rp == client_port and st == "01" for lp, rp, st in tcp_sockets(srv.pid))
        assert not lock_rules(client_port), "the restore unlocks the connection"
    finally:
        remove_lock_rules(client_port)


def test_tcp_close_restores_server_with_connection_closed(tmp_path, kc_env, spawn, clients):
    srv, port = start_echo(tmp_path, spawn)
    old = Line(clients(port))
    assert old.ask("a") == "1 a"
    archive = tmp_path / "echo.tar.zst"
    run_kc(kc_env, "dump", "--tcp-close", "-o", archive, srv.pid, check=0)
    srv.reap()
    assert wait_gone(srv.pid)
    criu_line = next(l for l in inspect(kc_env, archive).splitlines() if l.startswith("criu:"))
    assert "tcp-close yes" in criu_line and "tcp-established no" in criu_line

    p = run_kc(kc_env, "restore", archive, check=0)
    assert int(p.stdout.strip()) == srv.pid
    new = Line(clients(port))
    assert new.ask("x") == "2 x", "a new connection is served, counter kept"
    # the old connection is over: EOF or an error, never an answer
    try:
        old.send("b")
        got = old.reply(timeout=5)
    except OSError:
        got = ""
    assert got == ""
    assert new.ask("y") == "3 y"
    assert alive(srv.pid)


def test_established_connection_without_flag_fails_and_rolls_back(tmp_path, kc_env, spawn, clients):
    srv, port = start_echo(tmp_path, spawn)
    c = Line(clients(port))
    assert c.ask("a") == "1 a"
    archive = tmp_path / "echo.tar.zst"
    p = run_kc(kc_env, "dump", "-o", archive, srv.pid, check=7)
    err = p.stderr
    assert f"pid {srv.pid} (" in err and "has an established TCP connection" in err, err
    assert re.search(r"use --tcp-established .* or --tcp-close", err), err
    m = re.search(r"CRIU's log: '([^']+)'", err)
    assert m, err
    log = Path(m.group(1))
    assert log.is_file(), f"the log the message names is gone: {log}"
    assert "Connected TCP socket" in log.read_text()
    assert not archive.exists()

    # rolled back: running, and the connection still works
    assert proc_state(srv.pid) in ("S", "R")
    assert c.ask("b") == "2 b"
    assert Line(clients(port)).ask("x") == "3 x"


def test_tcp_established_leave_running_unlocks_connection(tmp_path, kc_env, spawn, clients):
    """--leave-running after a --tcp-established dump: CRIU left the socket in
    repair mode and its DROP rules in place (--leave-stopped); kcheckpoint
    must undo both before resuming, or the live connection hangs."""
    srv, port = start_echo(tmp_path, spawn)
    c = Line(clients(port))
    client_port = c.sock.getsockname()[1]
    try:
        assert c.ask("a") == "1 a"
        img = tmp_path / "img"
        run_kc(kc_env, "dump", "--tcp-established", "--leave-running", "-D", img, srv.pid, check=0)
        log = (img / "criu-dump.log").read_text()
        assert "Dumping finished successfully" in log
        # CRIU did lock it: repair mode and DROP rules, left in place by --leave-stopped
        assert "Turning repair on" in log and f"--dport {client_port} -j DROP" in log, log[-2000:]
        assert "tcp-established yes" in inspect(kc_env, img)
        assert not lock_rules(client_port), "no DROP rule of CRIU's lock left"
        assert not lock_rules(port)
        assert proc_state(srv.pid) in ("S", "R")
        assert c.ask("b", timeout=5) == "2 b", "the same connection keeps working"
        assert c.ask("c", timeout=5) == "3 c"
        assert any(lp == port and rp == client_port and st == "01" for lp, rp, st in tcp_sockets(srv.pid))
        assert Line(clients(port)).ask("x", timeout=5) == "4 x", "and it accepts new ones"
    finally:
        remove_lock_rules(client_port)


def test_tcp_established_dump_failing_after_criu_unlocks_connection(tmp_path, kc_env, spawn, clients):
    """The archive goes to a 64 KiB tmpfs: CRIU dumps fine (socket in repair
    mode, DROP rules in), then the archive write fails with ENOSPC and the
    rollback must unlock the connection before resuming the server."""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "kc-test-full", str(full)], check=True)
    srv, port = start_echo(tmp_path, spawn)
    c = Line(clients(port))
    client_port = c.sock.getsockname()[1]
    try:
        assert c.ask("a") == "1 a"
        # --keep-images: the work dir stays, to read CRIU's log of a dump that failed later
        p = run_kc(kc_env, "dump", "--tcp-established", "--compress", "none", "--keep-images", "-o",
                   full / "echo.tar", srv.pid)
        assert p.returncode not in (0, 7), p.stderr
        assert "no space left on device" in p.stderr, p.stderr
        logs = list(tmp_path.glob("kcheckpoint-*/criu-dump.log"))
        assert len(logs) == 1 and "Dumping finished successfully" in logs[0].read_text(), p.stderr
        log = logs[0].read_text()
        assert "Turning repair on" in log and f"--dport {client_port} -j DROP" in log, log[-2000:]
        assert not list(full.iterdir()), "no partial archive"

        assert not lock_rules(client_port), "no DROP rule of CRIU's lock left"
        assert not lock_rules(port)
        assert proc_state(srv.pid) in ("S", "R")
        assert c.ask("b", timeout=5) == "2 b", "the same connection keeps working"
        assert any(lp == port and rp == client_port and st == "01" for lp, rp, st in tcp_sockets(srv.pid))
        assert Line(clients(port)).ask("x", timeout=5) == "3 x"
    finally:
        remove_lock_rules(client_port)
        subprocess.run(["umount", "-l", str(full)], capture_output=True)


# --- Python multiprocessing pools -------------------------------------------------------------

SQUARES = sum(i * i for i in range(1000))


def rounds(progress):
    """{round: (result, worker pids)} from real_pool.py's progress file; checks every result."""
    out = {}
    for line in progress.read_text().splitlines():
        f = line.split()
        if f[0] != "round":
            continue
        r, result = int(f[1]), int(f[2])
        # the workers compute sum(i*i + x) over i < 1000 for x in 4r .. 4r+3
        assert result == 4 * SQUARES + 1000 * (16 * r + 6), f"wrong result in {line!r}"
        assert r not in out, f"round {r} twice"
        out[r] = (result, f[3])
    assert sorted(out) == list(range(len(out))), "rounds must follow on without a gap"
    return out


def worker_pids(progress):
    """The pids of the workers that ever answered (a round may go to one of them only)."""
    return {int(p) for _, w in rounds(progress).values() for p in w.split(",")}


def start_pool(tmp_path, spawn, method, name="pool"):
    progress, stop = tmp_path / f"{name}.progress", tmp_path / f"{name}.stop"
    pool = spawn(name, [PY, REAL_POOL, method, progress, stop])
    pool.progress, pool.stop = progress, stop
    wait_for(lambda: progress.exists() and len(rounds(progress)) >= 3, 30, f"{method} pool to work")
    return pool


def stop_pool(pool):
    """Lets the pool end itself: it unlinks its semaphores."""
    pool.stop.write_text("")
    wait_for(lambda: pool.progress.read_text().endswith("done\n"), 20, "the pool to finish")
    pool.reap()
    assert wait_gone(pool.pid)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_pool_roundtrip(tmp_path, kc_env, spawn, method):
    remaps_before = link_remaps()
    pool = start_pool(tmp_path, spawn, method)
    tree = pool.tree()
    # main, resource tracker (spawn) or fork server, two workers
    assert len(tree) >= 4, tree

    archive = tmp_path / "pool.tar.zst"
    run_kc(kc_env, "dump", "-o", archive, pool.pid, check=0)
    pool.reap()
    for pid in tree:
        assert wait_gone(pid), f"{pid} of the dumped tree is still there"
    done = len(rounds(pool.progress))

    # glibc's named semaphores: mapped files deleted under one name and
    # linked under another; CRIU links them back as link_remap.* until restore
    info = inspect(kc_env, archive)
    assert "link-remap yes" in next(l for l in info.splitlines() if l.startswith("criu:"))
    needs = re.findall(r"^needs:\s+(\S+)", info, re.M)
    assert needs and all(Path(n).exists() for n in needs), info

    p = run_kc(kc_env, "restore", archive, check=0)
    assert int(p.stdout.strip()) == pool.pid
    assert sorted(pool.tree()) == sorted(tree), "the whole tree is back"
    wait_for(lambda: len(rounds(pool.progress)) >= done + 5, 30, "progress after the restore")
    # the restored workers, not new ones, do the work
    assert worker_pids(pool.progress) <= set(tree) - {pool.pid}

    assert not any(Path(n).exists() for n in needs), "the restore used the link remaps up"
    assert link_remaps() <= remaps_before, f"link_remap files left: {link_remaps() - remaps_before}"

    # a second restore of the same archive is refused at once (the links
    # are used up), from the manifest, before unpacking or waiting for pids
    wd = tmp_path / "wd"
    wd.mkdir()
    p = run_kc(kc_env, "restore", "--work-dir", wd, archive, check=5)
    assert needs[0] in p.stderr and "restore it on that node, once" in p.stderr, p.stderr
    assert not list(wd.iterdir()), "nothing unpacked, nothing left"
    stop_pool(pool)


def test_pool_dump_failing_after_criu_rolls_back_link_remaps(tmp_path, kc_env, spawn):
    """The archive goes to a 64 KiB tmpfs: CRIU dumps fine (link remaps
    made), then writing the archive fails with ENOSPC and the dump rolls back."""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "kc-test-full", str(full)], check=True)
    try:
        remaps_before = link_remaps()
        pool = start_pool(tmp_path, spawn, "spawn")
        tree = pool.tree()
        before = len(rounds(pool.progress))
        p = run_kc(kc_env, "dump", "--keep-images", "-o", full / "pool.tar.zst", pool.pid)
        assert p.returncode not in (0, 7), p.stderr
        assert "no space left on device" in p.stderr, p.stderr
        # it failed after CRIU: CRIU's log says the dump itself went through
        logs = list(tmp_path.glob("kcheckpoint-*/criu-dump.log"))
        assert len(logs) == 1 and "Dumping finished successfully" in logs[0].read_text(), p.stderr
        assert "Can't create link remap" not in logs[0].read_text()

        assert link_remaps() <= remaps_before, f"link_remap files left: {link_remaps() - remaps_before}"
        assert not list(full.iterdir()), "no partial archive"
        for pid in tree:
            assert proc_state(pid) in ("S", "R"), f"{pid} is {proc_state(pid)}, not running"
        wait_for(lambda: len(rounds(pool.progress)) >= before + 5, 30, "progress after the rollback")
        stop_pool(pool)
    finally:
        subprocess.run(["umount", "-l", str(full)], capture_output=True)


def test_recover_after_sigkill_unlocks_tcp_connection(tmp_path, kc_env, spawn, clients):
    """kcheckpoint SIGKILLed after CRIU dumped with --tcp-established: the
    server is left stopped, its socket in repair mode, CRIU's DROP rules in.
    `recover` (no driver here) must continue it and undo the lock, and
    refuse while a CRIU still traces the tree.

    The criu given to kcheckpoint is a script that runs the real one and
    then lingers, so that the kill lands after CRIU's work at a known time.
    """
    srv, port = start_echo(tmp_path, spawn)
    c = Line(clients(port))
    client_port = c.sock.getsockname()[1]
    slow = tmp_path / "criu-then-wait"
    slow.write_text(f'#!/bin/sh\n"{kc_env["KCHECKPOINT_CRIU"]}" "$@"; rc=$?\n'
                    f'[ "$1" = dump ] && touch "{tmp_path}/criu-done" && sleep 30\nexit $rc\n')
    slow.chmod(0o755)
    env = dict(kc_env, KCHECKPOINT_CRIU=str(slow))
    try:
        assert c.ask("a") == "1 a"
        p = subprocess.Popen([str(KC), "dump", "--tcp-established", "-o", str(tmp_path / "e.tar.zst"), str(srv.pid)],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: (tmp_path / "criu-done").exists(), 30, "CRIU to finish")
        p.kill()
        p.communicate(timeout=10)
        assert proc_state(srv.pid) == "T"
        assert lock_rules(client_port), "CRIU locked the connection"

        run_kc(kc_env, "recover", srv.pid, check=0)
        assert proc_state(srv.pid) in ("S", "R")
        assert not lock_rules(client_port), "recover takes CRIU's DROP rules out"
        assert c.ask("b", timeout=5) == "2 b", "the same connection works again"
        assert not (tmp_path / "e.tar.zst").exists()
    finally:
        subprocess.run(["pkill", "-f", str(slow)], check=False)
        remove_lock_rules(client_port)


def test_recover_refuses_while_criu_still_traces_the_tree(tmp_path, kc_env, spawn):
    """A CRIU that outlives a killed kcheckpoint stops the tree again when it
    finishes: recover must not report success meanwhile."""
    srv, port = start_echo(tmp_path, spawn)
    tracer = subprocess.Popen(["python3", "-c", f"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_SEIZE = 0x4206
if libc.ptrace(PTRACE_SEIZE, {srv.pid}, 0, 0) != 0:
    sys.exit(ctypes.get_errno())
open("{tmp_path}/seized", "w").close()
time.sleep(30)
"""], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "seized").exists(), 10, "the tracer to seize the server")
        p = run_kc(kc_env, "recover", srv.pid, check=9)
        assert f"pid {srv.pid} is being traced by pid {tracer.pid}" in p.stderr, p.stderr
    finally:
        tracer.kill()
        tracer.wait()


def test_failed_dump_leaves_only_its_log_and_the_retry_works(tmp_path, kc_env, spawn, clients):
    """Issue 11, item 13: a failed -D dump must not leave half its images to
    fill the disk and block the retry into the same dir."""
    srv, port = start_echo(tmp_path, spawn)
    c = Line(clients(port))
    assert c.ask("a") == "1 a"
    img = tmp_path / "img"
    p = run_kc(kc_env, "dump", "-D", img, srv.pid, check=7)
    assert sorted(x.name for x in img.iterdir()) == ["criu-dump.log"], p.stderr
    assert f"CRIU's log: '{img.resolve()}/criu-dump.log'" in p.stderr, p.stderr
    run_kc(kc_env, "dump", "--tcp-close", "-D", img, srv.pid, check=0)
    assert (img / "kcheckpoint.json").exists()
