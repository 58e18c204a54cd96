# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: the built binaries, real CRIU, and workloads to checkpoint.

Every test here runs the real kcheckpoint binary against real processes and
the real CRIU binary; only libcuda is the fake (tests/fake/fake_libcuda.c),
since CI has no GPU.
"""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SRC = Path(os.environ.get("KC_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD = Path(os.environ.get("KC_BUILD_DIR", SRC / "build"))
KC = BUILD / "kcheckpoint"
WORKLOAD = BUILD / "workload" / "cpu_workload"
FAKE_CUDA = BUILD / "fake" / "libcuda.so.1"


def find_criu():
    for cand in (os.environ.get("KCHECKPOINT_CRIU"), SRC / ".deps" / "criu" / "bin" / "criu",
                 shutil.which("criu")):
        if cand and Path(cand).exists():
            return str(cand)
    return None


CRIU = find_criu()


def pytest_configure(config):
    # A missing CRIU is a broken setup, not a reason to skip: fail loudly.
    if CRIU is None:
        raise pytest.UsageError("no CRIU found: run scripts/build-criu.sh or set KCHECKPOINT_CRIU")
    if not KC.exists():
        raise pytest.UsageError(f"{KC} is not built")


def read_status(path):
    text = Path(path).read_text().strip()
    return dict(kv.split("=", 1) for kv in text.split())


class Workload:
    """cpu_workload started in its own session, as a service would be."""

    def __init__(self, tmp, mb=64, seed=7, cuda_dir=None, children=0, name="w", helper_thread=False, spawn_ms=0,
                 backup_mb=0):
        self.status = tmp / f"{name}.status"
        self.log = tmp / f"{name}.log"
        args = [str(WORKLOAD), "--mb", str(mb), "--seed", str(seed), "--status", str(self.status)]
        if cuda_dir:
            args += ["--cuda-dir", str(cuda_dir)]
        if children:
            args += ["--children", str(children)]
        if helper_thread:
            args += ["--helper-thread", "1"]
        if spawn_ms:
            args += ["--spawn-ms", str(spawn_ms)]
        if backup_mb:
            args += ["--backup-mb", str(backup_mb)]
        with open(os.devnull, "rb") as devnull, open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=devnull, stdout=log, stderr=log,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.children = children
        self.wait_ready()

    def status_files(self):
        return [self.status] + [Path(f"{self.status}.{i}") for i in range(self.children)]

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(p.exists() and p.read_text().strip() for p in self.status_files()):
                return
            time.sleep(0.02)
        raise AssertionError(f"workload {self.pid} not ready: {self.log.read_text()}")

    def probe(self, pid=None, status=None, timeout=10):
        """SIGUSR1 -> fresh status line with a verified checksum."""
        pid = pid or self.pid
        status = Path(status or self.status)
        # gone first: an answer can read as the last one did (a process
        # restored twice from one image answers with the same counter)
        status.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR1)
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = status.read_text() if status.exists() else ""
            if text:
                return dict(kv.split("=", 1) for kv in text.split())
            time.sleep(0.02)
        raise AssertionError(f"pid {pid} did not answer SIGUSR1")

    def reap(self):
        reap(self.proc)

    def kill(self):
        kill_all(self.pid, *child_pids(self.pid))
        self.reap()


def reap(proc, timeout=5):
    """Collects a child that was killed (a dump ends it), so its pid is free."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def kill_all(*pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def child_pids(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except FileNotFoundError:
        pass
    return out


def proc_state(pid):
    """The state letter from /proc, None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def alive(pid):
    return proc_state(pid) not in (None, "Z", "X")


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def kc_env(tmp_path):
    env = dict(os.environ)
    env["KCHECKPOINT_CRIU"] = CRIU
    env.pop("KCHECKPOINT_LIBCUDA", None)
    env["TMPDIR"] = str(tmp_path)
    env["KCHECKPOINT_RUN_DIR"] = str(tmp_path / "run")
    # a node's real GPU list must not judge the fake driver's GPUs
    env["KCHECKPOINT_NVIDIA_PROCFS"] = str(tmp_path / "no-nvidia-procfs")
    return env


@pytest.fixture
def cuda_env(tmp_path, kc_env):
    """kc_env with the fake driver: a state dir shared with the workload."""
    d = tmp_path / "fakecuda"
    d.mkdir()
    kc_env["KCHECKPOINT_LIBCUDA"] = str(FAKE_CUDA)
    kc_env["KC_FAKE_CUDA_DIR"] = str(d)
    return kc_env


def run_kc(env, *args, check=None, timeout=120, **kw):
    """Runs kcheckpoint; check=<int> asserts the exit code."""
    p = subprocess.run([str(KC), *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}, want {check}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def cuda_state(env, pid):
    """The fake driver's state of pid (0 RUNNING, 1 LOCKED, 2 CHECKPOINTED),
    read as the fake reads it: a state written for another process with
    this pid (another start time) is that of a CRIU copy, CHECKPOINTED."""
    state, *stamp = (Path(env["KC_FAKE_CUDA_DIR"]) / str(pid)).read_text().split()
    try:
        now = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        now = None
    return 2 if stamp and now and stamp[0] != now else int(state)


def calls(env):
    f = Path(env["KC_FAKE_CUDA_DIR"]) / "calls.log"
    return f.read_text().splitlines() if f.exists() else []


def wait_state(pid, state, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc_state(pid) == state:
            return True
        time.sleep(0.01)
    return False


def wait_gone(pid, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def workloads(tmp_path):
    started = []

    def start(**kw):
        w = Workload(tmp_path, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()
