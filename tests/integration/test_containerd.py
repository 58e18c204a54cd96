# SPDX-License-Identifier: Apache-2.0
"""dump/restore of containerd containers: a real containerd (Debian's, with
runc and the CRIU >= 4.1 the suite builds), started here on a private socket,
root and state dir, running a tiny OCI image built here (busybox-static).

The workload in the container is tests/workload/cpu_workload linked
statically and bind-mounted in: a counter and a memory pattern it verifies
on SIGUSR1, with its status file on a bind-mounted host dir.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import CRIU, FAKE_CUDA, KC, SRC, run_kc

sys.path.insert(0, str(SRC / "tests" / "containerd"))
import ctrd_env  # noqa: E402

NS = ctrd_env.NAMESPACE
IMAGE = ctrd_env.IMAGE_REF
GPU_OPS = ("lock", "checkpoint", "restore", "unlock")


@pytest.fixture(scope="session")
def ctrd(tmp_path_factory):
    """containerd for the whole file; stopped and removed at the end."""
    base = Path(f"/tmp/kc-ctrd-it-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    (base / "bin").mkdir(parents=True)
    # runc runs `criu` from containerd's PATH: a wrapper in front of the
    # real one notes each run in the file named by criu-log (if any), so
    # tests can see where CRIU ran between the fake driver's calls.
    wrapper = base / "bin" / "criu"
    wrapper.write_text(f"""#!/bin/sh
t=$(cat {base}/criu-log 2>/dev/null)
[ -n "$t" ] && echo "criu-$1" >> "$t"
exec {CRIU} "$@"
""")
    wrapper.chmod(0o755)
    c = ctrd_env.Containerd(str(base), criu_dir=str(base / "bin"))
    try:
        c.start(timeout=30)
        tarball = base / "busybox-oci.tar"
        ctrd_env.build_oci_image(str(tarball))
        c.import_image(str(tarball))
        # the workload, static: the image has no libc
        c.workload = base / "cpu_workload"
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-static", "-O2", "-D_GNU_SOURCE", "-o", str(c.workload),
                        str(SRC / "tests" / "workload" / "cpu_workload.c")],
                       check=True, timeout=120)
        c.criu_log_target = base / "criu-log"
        yield c
    finally:
        c.destroy()


def tasks(ctrd):
    """{id: (pid, status)} from `ctr tasks ls`."""
    out = {}
    for line in ctrd.ctr("-n", NS, "tasks", "ls", timeout=20).stdout.splitlines()[1:]:
        f = line.split()
        if len(f) >= 3:
            out[f[0]] = (int(f[1]), f[2])
    return out


def containers(ctrd, ns=NS):
    return ctrd.ctr("-n", ns, "containers", "ls", "-q", timeout=20).stdout.split()


def snapshots(ctrd):
    return [l.split()[0] for l in
            ctrd.ctr("-n", NS, "snapshots", "ls", timeout=20).stdout.splitlines()[1:] if l.split()]


def container_info(ctrd, cid):
    return json.loads(ctrd.ctr("-n", NS, "containers", "info", cid, timeout=20).stdout)


def parse_status(text):
    return dict(kv.split("=", 1) for kv in text.split())


class Ctr:
    """A container running cpu_workload (or a command of the test's)."""

    def __init__(self, ctrd, tmp, cid, mb=32, seed=5, args=None, extra=(), wait=True):
        self.ctrd = ctrd
        self.id = cid
        self.data = tmp / f"data-{cid}"
        self.data.mkdir()
        self.status = self.data / "w.status"
        if args is None:
            args = ["/kc/cpu_workload", "--mb", str(mb), "--seed", str(seed),
                    "--status", "/data/w.status"]
        ctrd.ctr("-n", NS, "run", "-d", "--null-io",
                 "--mount", f"type=bind,src={self.data},dst=/data,options=rbind:rw",
                 "--mount", f"type=bind,src={ctrd.workload},dst=/kc/cpu_workload,options=rbind:ro",
                 *extra, IMAGE, cid, *args, timeout=60)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.status.exists() and self.status.read_text().strip():
                return
            time.sleep(0.02)
        raise AssertionError(f"container {self.id} not ready: {tasks(self.ctrd)}")

    def task(self, cid=None):
        return tasks(self.ctrd).get(cid or self.id)

    def probe(self, cid=None, timeout=10):
        """SIGUSR1 to the task's init -> a fresh, verified status line."""
        pid, status = self.task(cid)
        assert status == "RUNNING", f"{cid or self.id} is {status}"
        before = self.status.read_text()
        os.kill(pid, signal.SIGUSR1)
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.status.read_text()
            if text != before:
                return parse_status(text)
            time.sleep(0.02)
        raise AssertionError(f"container {cid or self.id} did not answer SIGUSR1")

    def probe_after(self, counter, timeout=20):
        """Probes until the counter passed `counter`: a restored process
        goes on from there, one started afresh would be far below."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.probe()
            if int(st["counter"]) >= counter:
                return st
            time.sleep(0.1)
        raise AssertionError(f"container {self.id} counter stuck below {counter}")


@pytest.fixture
def ctrs(ctrd, tmp_path):
    """Starts containers; removes them (and any restored ids) afterwards."""
    made = []
    extra_ids = []

    def start(cid, **kw):
        made.append(cid)
        return Ctr(ctrd, tmp_path, cid, **kw)

    start.also_remove = extra_ids.append
    yield start
    for cid in made + extra_ids:
        ctrd.ctr("-n", NS, "tasks", "kill", "-a", "-s", "KILL", cid, check=False, timeout=20)
        ctrd.ctr("-n", NS, "tasks", "rm", "-f", cid, check=False, timeout=20)
        ctrd.ctr("-n", NS, "containers", "rm", cid, check=False, timeout=20)
    ctrd.criu_log_target.unlink(missing_ok=True)


@pytest.fixture
def env(kc_env, ctrd):
    e = dict(kc_env)
    e["KCHECKPOINT_CONTAINERD_ADDRESS"] = ctrd.sock
    return e


def one_line_error(p):
    lines = [l for l in p.stderr.splitlines() if l.startswith("kcheckpoint:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


# ---- dump, delete, restore ------------------------------------------------

def test_dump_delete_restore(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-rt1", mb=64, seed=21)
    before = c.probe_after(100)
    assert before["ok"] == "1"
    old_pid, _ = c.task()
    archive = tmp_path / "c.tar.zst"

    run_kc(env, "dump", "--containerd", c.id, "-o", archive, check=0)
    assert archive.exists()
    # the dump ended the container: task, container and its snapshot are gone
    assert c.task() is None
    assert c.id not in containers(ctrd)
    assert c.id not in snapshots(ctrd)

    p = run_kc(env, "restore", "--containerd", c.id, archive, check=0)
    pid, status = c.task()
    assert status == "RUNNING"
    assert int(p.stdout.strip()) == pid
    assert pid != old_pid
    after = c.probe()
    assert after["ok"] == "1"
    assert after["checksum"] == before["checksum"]
    # the counter went on from where it was, it did not start again
    assert int(after["counter"]) >= int(before["counter"])
    info = container_info(ctrd, c.id)
    assert info["Image"] == IMAGE
    assert info["Snapshotter"] == "overlayfs" and info["SnapshotKey"] == c.id
    # keeps running afterwards
    time.sleep(0.3)
    assert int(c.probe()["counter"]) > int(after["counter"])


def test_images_dir_holds_container_description(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-desc", mb=8, seed=3)
    img = tmp_path / "img"
    run_kc(env, "dump", "--containerd", c.id, "--leave-running", "-D", img, check=0)
    desc = json.loads((img / "containerd.json").read_text())
    assert desc["id"] == c.id and desc["namespace"] == NS
    assert desc["image"] == IMAGE
    assert desc["runtime"]["name"] == "io.containerd.runc.v2"
    assert desc["snapshotter"] == "overlayfs" and desc["snapshot_key"] == c.id
    assert desc["snapshot_parent"].startswith("sha256:")
    assert desc["spec"]["json"]["process"]["args"][0] == "/kc/cpu_workload"
    pid, _ = c.task()
    assert desc["task"]["pid"] == pid
    assert {"pid": pid, "ns_pid": 1} in desc["processes"]
    # CRIU's images and log are there, written through runc
    assert (img / "inventory.img").exists() and (img / "criu-dump.log").exists()
    assert (img / "kcheckpoint.json").exists()


def test_leave_running_then_restore(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-lr0", mb=32, seed=12)
    before = c.probe_after(100)
    archive = tmp_path / "lr0.tar.zst"
    run_kc(env, "dump", "--containerd", c.id, "--leave-running", "-o", archive, check=0)
    pid, status = c.task()
    assert status == "RUNNING"  # not killed, not left paused
    time.sleep(0.2)
    assert int(c.probe()["counter"]) > int(before["counter"])
    # the operator removes it later; the image brings back the dumped state
    ctrd.ctr("-n", NS, "tasks", "kill", "-s", "KILL", c.id, timeout=20)
    deadline = time.time() + 10
    while c.task() and c.task()[1] != "STOPPED" and time.time() < deadline:
        time.sleep(0.05)
    ctrd.ctr("-n", NS, "tasks", "rm", c.id, timeout=20)
    ctrd.ctr("-n", NS, "containers", "rm", c.id, timeout=20)
    run_kc(env, "restore", "--containerd", c.id, archive, check=0)
    after = c.probe()
    assert after["ok"] == "1" and after["checksum"] == before["checksum"]
    assert int(after["counter"]) >= int(before["counter"])
    assert c.task()[0] != pid


def test_restore_into_existing_id_refused(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-exists", mb=8)
    img = tmp_path / "img"
    run_kc(env, "dump", "--containerd", c.id, "--leave-running", "-D", img, check=0)
    pid, _ = c.task()
    p = run_kc(env, "restore", "--containerd", c.id, img, check=8)
    msg = one_line_error(p)
    assert f"container '{c.id}' already exists in namespace '{NS}'" in msg
    # untouched
    assert c.task() == (pid, "RUNNING")
    assert c.probe()["ok"] == "1"


def test_env_and_options_pick_socket_and_namespace(ctrd, ctrs, kc_env, tmp_path):
    c = ctrs("kc-opts", mb=8)
    e = dict(kc_env)
    e.pop("KCHECKPOINT_CONTAINERD_ADDRESS", None)
    # the option wins over the environment
    e["KCHECKPOINT_CONTAINERD_ADDRESS"] = "/nonexistent/containerd.sock"
    run_kc(e, "dump", "--containerd", c.id, "--address", ctrd.sock, "--leave-running",
           "-D", tmp_path / "a", check=0)
    # the environment wins over the default
    e["KCHECKPOINT_CONTAINERD_ADDRESS"] = ctrd.sock
    e["KCHECKPOINT_CONTAINERD_NAMESPACE"] = "no-such-ns"
    p = run_kc(e, "dump", "--containerd", c.id, "--leave-running", "-D", tmp_path / "b", check=3)
    assert "containerd namespace 'no-such-ns' does not exist" in one_line_error(p)
    run_kc(e, "dump", "--containerd", c.id, "--namespace", NS, "--leave-running",
           "-D", tmp_path / "c", check=0)
    assert c.task()[1] == "RUNNING"


# ---- errors: one line, documented exit code, container still running ------

def test_errors_leave_container_running(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-err", mb=8)
    pid, _ = c.task()
    out = tmp_path / "x.tar.zst"

    def dump(*args, code, want, e=env):
        p = run_kc(e, "dump", *args, "-o", out, check=code)
        msg = one_line_error(p)
        assert want in msg, msg
        assert not out.exists()
        assert c.task() == (pid, "RUNNING")

    dump("--containerd", c.id, "--address", str(tmp_path / "nope.sock"), code=3,
         want=f"containerd socket '{tmp_path / 'nope.sock'}' does not exist")
    dump("--containerd", "no-such-container", code=3,
         want=f"container 'no-such-container' not found in namespace '{NS}'")
    dump("--containerd", c.id, "--namespace", "wrong-ns", code=3,
         want="containerd namespace 'wrong-ns' does not exist")
    dump("--containerd", "bad/id", code=2, want="invalid container id 'bad/id'")

    # a socket file nobody listens on
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()
    dump("--containerd", c.id, "--address", str(dead), code=8,
         want=f"containerd is not listening on '{dead}'")

    # a daemon that accepts and never answers: bounded wait
    mute = tmp_path / "mute.sock"
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(str(mute))
    ls.listen(16)
    held = []
    stop = threading.Event()

    def accept_all():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(ls.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept_all, daemon=True)
    t.start()
    try:
        e = dict(env, KCHECKPOINT_CONTAINERD_TIMEOUT="2")
        t0 = time.time()
        dump("--containerd", c.id, "--address", str(mute), code=8, e=e,
             want="containerd did not answer 'Version.Version' within 2 s")
        assert time.time() - t0 < 30
    finally:
        stop.set()
        t.join(5)
        for h in held:
            h.close()
        ls.close()


def test_task_not_running(ctrd, ctrs, env, tmp_path):
    cid = "kc-notask"
    ctrs.also_remove(cid)
    ctrd.ctr("-n", NS, "containers", "create", IMAGE, cid, "sh", timeout=30)
    p = run_kc(env, "dump", "--containerd", cid, "-o", tmp_path / "x.tar.zst", check=3)
    assert f"container '{cid}' has no task: it is not running" in one_line_error(p)
    assert cid in containers(ctrd)


TCP_SCRIPT = ("ip link set lo up; sleep 100000 | nc -l -p 5000 >/dev/null & sleep 0.5; "
              "i=0; while true; do i=$((i+1)); echo $i > /data/w.status; echo x; sleep 0.1; "
              "done | nc 127.0.0.1 5000")


def tcp_container(ctrs, cid):
    """busybox holding an established TCP connection: CRIU refuses it
    without --tcp-established."""
    return ctrs(cid, args=["sh", "-c", TCP_SCRIPT], extra=["--cap-add", "CAP_NET_ADMIN"])


def test_checkpoint_refused_rolls_back(ctrd, ctrs, env, tmp_path):
    c = tcp_container(ctrs, "kc-tcp")
    pid, _ = c.task()
    out = tmp_path / "x.tar.zst"
    p = run_kc(env, "dump", "--containerd", c.id, "-o", out, check=7)
    msg = one_line_error(p)
    assert f"cannot checkpoint container '{c.id}': CRIU failed:" in msg
    assert "Connected TCP socket" in msg
    assert not out.exists()
    # resumed, not left paused, and still ticking
    assert c.task() == (pid, "RUNNING")
    n = int(c.status.read_text())
    time.sleep(0.5)
    assert int(c.status.read_text()) > n


# ---- the rw layer ----------------------------------------------------------

# Writes into its rootfs (a file it keeps open, a new file, a deleted one)
# and reports what it sees: "<marker> <i> <group?> <log lines>".
RW_SCRIPT = ("echo hello > /etc/marker; rm /etc/group; mkdir -p /var/log; "
             "exec 3>>/var/log/app.log; i=0; while true; do i=$((i+1)); echo $i >&3; "
             "g=no-group; [ -e /etc/group ] && g=has-group; "
             "echo \"$(cat /etc/marker) $i $g $(wc -l < /var/log/app.log)\" > /data/w.status.tmp; "
             "mv /data/w.status.tmp /data/w.status; sleep 0.1; done")


def rw_state(c):
    f = c.status.read_text().split()
    assert len(f) == 4, f
    return f[0], int(f[1]), f[2], int(f[3])


def test_rw_layer_roundtrip(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-rw", args=["sh", "-c", RW_SCRIPT])
    deadline = time.time() + 20
    while rw_state(c)[1] < 20 and time.time() < deadline:
        time.sleep(0.1)
    archive = tmp_path / "rw.tar.zst"
    # the rw layer goes in by default (issue 12), as with podman and the kubelet
    run_kc(env, "dump", "--containerd", c.id, "-o", archive, check=0)
    info = run_kc(env, "inspect", archive, check=0).stdout
    assert f"container:   '{c.id}' in namespace" in info and "rw layer in the image" in info, info
    _, dumped_i, _, _ = rw_state(c)
    assert c.id not in containers(ctrd)
    run_kc(env, "restore", "--containerd", c.id, archive, check=0)
    assert c.task()[1] == "RUNNING"
    time.sleep(0.5)
    marker, i, group, lines = rw_state(c)
    # the files came back (the new one, the deletion, the open log with
    # all its lines), and the loop went on from where it was
    assert marker == "hello" and group == "no-group"
    assert i > dumped_i
    assert lines == i


def test_without_rw_layer_restore_fails_cleanly(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-norw", args=["sh", "-c", RW_SCRIPT])
    archive = tmp_path / "norw.tar.zst"
    run_kc(env, "dump", "--containerd", c.id, "--ignore-rootfs", "-o", archive, check=0)
    assert "rw layer left out" in run_kc(env, "inspect", archive, check=0).stdout
    p = run_kc(env, "restore", "--containerd", c.id, archive, check=7)
    msg = one_line_error(p)
    assert f"cannot restore container '{c.id}': CRIU failed:" in msg
    assert "var/log/app.log" in msg
    # nothing left behind: no task, container or snapshot
    assert c.task() is None
    assert c.id not in containers(ctrd)
    assert c.id not in snapshots(ctrd)


# ---- with the fake libcuda: the container's process is a CUDA process ----

@pytest.fixture
def gpu_env(env, tmp_path, ctrd):
    d = tmp_path / "fakecuda"
    d.mkdir()
    e = dict(env, KCHECKPOINT_LIBCUDA=str(FAKE_CUDA), KC_FAKE_CUDA_DIR=str(d))
    ctrd.criu_log_target.write_text(str(d / "calls.log"))
    return e


def mark_cuda(e, pid):
    (Path(e["KC_FAKE_CUDA_DIR"]) / str(pid)).write_text("0\n")


def cuda_state(e, pid):
    return int((Path(e["KC_FAKE_CUDA_DIR"]) / str(pid)).read_text().split()[0])


def steps(e):
    """GPU state changes and CRIU runs, in order (CRIU runs merged)."""
    f = Path(e["KC_FAKE_CUDA_DIR"]) / "calls.log"
    out = []
    for line in f.read_text().splitlines() if f.exists() else []:
        op = line.split()[0]
        if op.startswith("criu-"):
            if not out or out[-1] != "criu":
                out.append("criu")
        elif op in GPU_OPS:
            out.append(f"{op} {line.split()[1]} {line.split()[2]}")
    return out


def test_gpu_call_order_leave_running(ctrd, ctrs, gpu_env, tmp_path):
    c = ctrs("kc-gpu1", mb=16, seed=4)
    pid, _ = c.task()
    mark_cuda(gpu_env, pid)
    before = c.probe()
    run_kc(gpu_env, "dump", "--containerd", c.id, "--leave-running", "-o",
           tmp_path / "g.tar.zst", check=0)
    assert steps(gpu_env) == [f"lock {pid} 0", f"checkpoint {pid} 0", "criu",
                              f"restore {pid} 0", f"unlock {pid} 0"]
    assert cuda_state(gpu_env, pid) == 0
    assert c.task() == (pid, "RUNNING")
    assert c.probe()["checksum"] == before["checksum"]


def test_gpu_dump_kills_after_checkpoint(ctrd, ctrs, gpu_env, tmp_path):
    c = ctrs("kc-gpu2", mb=16, seed=4)
    pid, _ = c.task()
    mark_cuda(gpu_env, pid)
    run_kc(gpu_env, "dump", "--containerd", c.id, "-o", tmp_path / "g.tar.zst", check=0)
    assert steps(gpu_env) == [f"lock {pid} 0", f"checkpoint {pid} 0", "criu"]
    assert c.task() is None and c.id not in containers(ctrd)
    # the GPU state stays with the image: CHECKPOINTED, as the driver left it
    assert cuda_state(gpu_env, pid) == 2
    p = run_kc(gpu_env, "inspect", "--json", tmp_path / "g.tar.zst", check=0)
    procs = {pr["pid"]: pr for pr in json.loads(p.stdout)["processes"]}
    assert procs[pid]["cuda"] is True and procs[pid]["cuda_state"] == "running"


@pytest.mark.parametrize("fail", ["lock:600", "checkpoint:999"])
def test_gpu_failure_rolls_back(ctrd, ctrs, gpu_env, tmp_path, fail):
    c = ctrs("kc-gpu-" + fail.split(":")[0], mb=16, seed=6)
    pid, _ = c.task()
    mark_cuda(gpu_env, pid)
    before = c.probe()
    e = dict(gpu_env, KC_FAKE_CUDA_FAIL=fail)
    out = tmp_path / "g.tar.zst"
    p = run_kc(e, "dump", "--containerd", c.id, "--lock-timeout", "200", "-o", out)
    assert p.returncode in (6, 9), p.stderr
    one_line_error(p)
    assert not out.exists()
    # CRIU never ran; what was locked is unlocked again
    s = steps(gpu_env)
    assert "criu" not in s
    if fail.startswith("checkpoint"):
        assert s == [f"lock {pid} 0", f"checkpoint {pid} 999", f"unlock {pid} 0"]
    assert cuda_state(gpu_env, pid) == 0
    assert c.task() == (pid, "RUNNING")
    after = c.probe()
    assert after["checksum"] == before["checksum"] and after["ok"] == "1"


def test_gpu_criu_failure_rolls_back(ctrd, ctrs, gpu_env, tmp_path):
    c = tcp_container(ctrs, "kc-gpu-tcp")
    pid, _ = c.task()
    mark_cuda(gpu_env, pid)
    out = tmp_path / "g.tar.zst"
    p = run_kc(gpu_env, "dump", "--containerd", c.id, "-o", out, check=7)
    assert "Connected TCP socket" in one_line_error(p)
    # the GPU stage was undone after the container was resumed
    assert steps(gpu_env) == [f"lock {pid} 0", f"checkpoint {pid} 0", "criu",
                              f"restore {pid} 0", f"unlock {pid} 0"]
    assert cuda_state(gpu_env, pid) == 0
    assert c.task() == (pid, "RUNNING")
    n = int(c.status.read_text())
    time.sleep(0.5)
    assert int(c.status.read_text()) > n


# ---- restored under new host pids (pids live in the container's namespace) --

def test_leave_running_and_restore_as_new_id(ctrd, ctrs, env, tmp_path):
    c = ctrs("kc-lr1", mb=32, seed=9)
    before = c.probe_after(100)
    archive = tmp_path / "lr.tar.zst"
    run_kc(env, "dump", "--containerd", c.id, "--leave-running", "-o", archive, check=0)
    # not killed, not left paused
    _, status = c.task()
    assert status == "RUNNING"
    mid = c.probe()
    assert mid["checksum"] == before["checksum"]
    time.sleep(0.2)
    assert int(c.probe()["counter"]) > int(mid["counter"])

    # a copy next to the original: its own id, snapshot and cgroup
    new = "kc-lr1-copy"
    ctrs.also_remove(new)
    run_kc(env, "restore", "--containerd", new, archive, check=0)
    assert c.task()[1] == "RUNNING" and c.task(new)[1] == "RUNNING"
    assert c.task(new)[0] != c.task()[0]
    info = container_info(ctrd, new)
    assert info["SnapshotKey"] == new
    assert info["Spec"]["linux"]["cgroupsPath"].endswith("/" + new)
    copy = c.probe(new)  # same status file: both see /data
    assert copy["ok"] == "1" and copy["checksum"] == before["checksum"]
    assert int(copy["counter"]) >= int(before["counter"])


def test_gpu_dump_delete_restore(ctrd, ctrs, gpu_env, tmp_path):
    """The CUDA process comes back under a new host pid: restore must find
    it through the container (kcheckpoint's pid map from containerd.json),
    and the fake driver follows the process through KC_FAKE_CUDA_ID in its
    environment, as the real driver's state lives inside the process."""
    cid = "kc-gpu-rt"
    key = f"ctr-{cid}"
    (Path(gpu_env["KC_FAKE_CUDA_DIR"]) / key).write_text("0\n")
    c = ctrs(cid, mb=16, seed=8, extra=["--env", f"KC_FAKE_CUDA_ID={key}"])
    pid, _ = c.task()
    before = c.probe_after(100)
    archive = tmp_path / "g.tar.zst"
    run_kc(gpu_env, "dump", "--containerd", cid, "-o", archive, check=0)
    assert steps(gpu_env) == [f"lock {pid} 0", f"checkpoint {pid} 0", "criu"]
    assert cuda_state(gpu_env, key) == 2
    assert c.task() is None

    (Path(gpu_env["KC_FAKE_CUDA_DIR"]) / "calls.log").write_text("")
    run_kc(gpu_env, "restore", "--containerd", cid, archive, check=0)
    new, status = c.task()
    assert status == "RUNNING" and new != pid
    assert steps(gpu_env) == ["criu", f"restore {new} 0", f"unlock {new} 0"]
    assert cuda_state(gpu_env, key) == 0
    after = c.probe()
    assert after["ok"] == "1" and after["checksum"] == before["checksum"]
    assert int(after["counter"]) >= int(before["counter"])
