# SPDX-License-Identifier: Apache-2.0
"""Workers forked after CUDA init: kcheckpoint's CRIU plugin, and its checks.

CI has no /dev/nvidia*.  A loop device stands in for them: the workload maps
and opens it as a CUDA program's driver does, the test names it in
KCHECKPOINT_GPU_DEVICES (which kcheckpoint and its plugin read, see
include/kc/gpu_device.h), and CRIU, which knows neither a loop device's
mapping nor its descriptor, needs the plugin exactly as for the real ones.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BUILD, SRC, alive, calls, cuda_state, kill_all, reap, run_kc, wait_gone

WORKLOAD = SRC / "tests" / "workload" / "fork_after_cuda.py"
PLUGIN = BUILD / "criu-plugins" / "kcheckpoint_gpu_fork.so"


@pytest.fixture
def gpu_standin(tmp_path, cuda_env):
    """A loop device over a small file, declared a GPU device."""
    backing = tmp_path / "gpu.img"
    backing.write_bytes(b"\0" * (1 << 20))
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    st = os.stat(dev)
    cuda_env["KCHECKPOINT_GPU_DEVICES"] = f"b{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


class Job:
    def __init__(self, tmp, env, dev, workers=2, extra=()):
        self.out = tmp / "out"
        self.out.mkdir()
        self.workers = workers
        with open(tmp / "job.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKLOAD), "--device", dev, "--cuda-dir", env["KC_FAKE_CUDA_DIR"],
                 "--workers", str(workers), "--out", str(self.out), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env)
        self.pid = self.proc.pid
        deadline = time.time() + 20
        while not all((self.out / n).exists() for n in self.names()):
            assert time.time() < deadline, (tmp / "job.log").read_text()
            time.sleep(0.02)
        self.worker_pids = [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        assert len(self.worker_pids) == workers

    def names(self):
        return ["parent"] + [f"worker.{i}" for i in range(self.workers)]

    def counters(self):
        return {n: int((self.out / n).read_text().split()[0]) for n in self.names()}

    def advancing(self, timeout=10):
        before = self.counters()
        deadline = time.time() + timeout
        while time.time() < deadline:
            now = self.counters()
            if all(now[n] > before[n] for n in now):
                return True
            time.sleep(0.05)
        return False

    def kill(self):
        kill_all(self.pid, *self.worker_pids)
        reap(self.proc)


def device_maps(pid, dev):
    """Start addresses of pid's mappings of path dev."""
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith(" " + dev) or line.endswith(" " + dev + " (deleted)"):
            out.append(line.split("-", 1)[0])
    return out


def fds_to(pid, target):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                out.append(int(fd))
        except FileNotFoundError:
            pass
    return sorted(out)


def test_plugin_is_built():
    # the rest of this file means nothing without it
    assert PLUGIN.exists(), f"{PLUGIN} missing: was CRIU's plugin header found at configure time?"


def test_workers_forked_after_cuda_dump_and_restore(tmp_path, cuda_env, gpu_standin):
    job = Job(tmp_path, cuda_env, gpu_standin)
    try:
        maps = {w: device_maps(w, gpu_standin) for w in job.worker_pids}
        fds = {w: fds_to(w, gpu_standin) for w in job.worker_pids}
        assert all(len(m) == 3 for m in maps.values()) and all(fds.values()), (maps, fds)
        assert not device_maps(job.pid, gpu_standin)

        archive = tmp_path / "job.tar.zst"
        run_kc(cuda_env, "dump", "-o", archive, job.pid, check=0)
        job.proc.wait(timeout=10)
        assert cuda_state(cuda_env, job.pid) == 2  # CHECKPOINTED, as the driver leaves it
        for w in job.worker_pids:
            assert wait_gone(w)

        info = run_kc(cuda_env, "inspect", archive, check=0).stdout
        assert info.count("forked-after") == 2, info

        run_kc(cuda_env, "restore", archive, check=0)
        assert cuda_state(cuda_env, job.pid) == 0
        assert job.advancing(), job.counters()
        for w in job.worker_pids:
            # the device mapping is back, at its address, as /dev/zero; the
            # descriptors as /dev/null under their numbers
            zero = [l.split("-", 1)[0] for l in Path(f"/proc/{w}/maps").read_text().splitlines()
                    if "/dev/zero" in l]
            assert set(maps[w]) <= set(zero), (maps[w], zero)
            assert not device_maps(w, gpu_standin)
            assert set(fds[w]) <= set(fds_to(w, "/dev/null")), (fds[w], fds_to(w, "/dev/null"))
            # no stand-in descriptor left over in the task
            assert not fds_to(w, "/dev/zero"), os.listdir(f"/proc/{w}/fd")

        # and they stop cleanly when asked
        os.kill(job.pid, signal.SIGTERM)
        assert wait_gone(job.pid, timeout=10)
        exits = (job.out / "exits").read_text().split("\n")
        assert [l.split()[1] for l in exits if l] == ["0", "0"], exits
        for i in range(2):
            assert (job.out / f"worker.{i}.exit").read_text() == "clean\n"
    finally:
        job.kill()


def test_without_plugin_refused_before_anything_is_frozen(tmp_path, cuda_env, gpu_standin):
    cuda_env["KCHECKPOINT_CRIU_LIBDIR"] = ""  # no plugin
    job = Job(tmp_path, cuda_env, gpu_standin)
    try:
        p = run_kc(cuda_env, "dump", "-D", tmp_path / "img", job.pid, check=6)
        assert "forked after CUDA init" in p.stderr and "spawn or forkserver" in p.stderr, p.stderr
        assert str(job.worker_pids[0]) in p.stderr
        assert not [c for c in calls(cuda_env) if c.startswith("lock")], calls(cuda_env)
        assert cuda_state(cuda_env, job.pid) == 0
        assert job.advancing()
    finally:
        job.kill()


def test_gpu_user_without_cuda_parent_is_refused(tmp_path, cuda_env, gpu_standin):
    job = Job(tmp_path, cuda_env, gpu_standin, extra=["--no-cuda", "--keep-parent-map"])
    try:
        p = run_kc(cuda_env, "dump", "-D", tmp_path / "img", job.pid, check=6)
        assert f"pid {job.pid} " in p.stderr and "without a CUDA context" in p.stderr, p.stderr
        assert not [c for c in calls(cuda_env) if c.startswith("lock")]
        assert job.advancing()
    finally:
        job.kill()


def test_cuda_process_still_holding_the_device_is_rolled_back(tmp_path, cuda_env, gpu_standin):
    job = Job(tmp_path, cuda_env, gpu_standin, extra=["--keep-parent-map"])
    try:
        p = run_kc(cuda_env, "dump", "-D", tmp_path / "img", job.pid, check=6)
        assert "after its GPU checkpoint" in p.stderr, p.stderr
        ops = [c.split()[0] for c in calls(cuda_env) if c.split()[0] != "get_state"]
        assert ops == ["lock", "checkpoint", "restore", "unlock"], ops
        assert cuda_state(cuda_env, job.pid) == 0
        assert alive(job.pid) and job.advancing()
    finally:
        job.kill()


def test_forked_worker_dumped_alone_is_refused_before_anything_is_frozen(tmp_path, cuda_env, gpu_standin):
    """The target is a worker itself: its CUDA parent is outside the dumped
    tree, so it holds the device without a CUDA ancestor there."""
    job = Job(tmp_path, cuda_env, gpu_standin)
    try:
        w = job.worker_pids[0]
        p = run_kc(cuda_env, "dump", "-D", tmp_path / "img", w, check=6)
        assert f"pid {w} " in p.stderr and "without a CUDA context" in p.stderr, p.stderr
        assert not [c for c in calls(cuda_env) if c.split()[0] != "get_state"], calls(cuda_env)
        assert not (tmp_path / "img").exists() or not any((tmp_path / "img").iterdir())
        assert cuda_state(cuda_env, job.pid) == 0
        assert job.advancing()
    finally:
        job.kill()
