# SPDX-License-Identifier: Apache-2.0
"""dump -> restore of real processes with real CRIU (and the fake libcuda)."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (CRIU, KC, alive, calls, cuda_state, kill_pid, proc_ppid, proc_state, run_kc,
                      wait_gone, wait_state)

GPU_OPS = ("lock", "checkpoint", "restore", "unlock")


def steps(env):
    """The fake driver's state-changing calls and CRIU runs, in order."""
    out = []
    for line in calls(env):
        op = line.split()[0]
        if op in GPU_OPS or op.startswith("criu-"):
            out.append(op if op.startswith("criu-") else f"{op} {line.split()[1]}")
    return out


@pytest.fixture
def criu_wrapper(tmp_path):
    """A criu that notes each run in the fake driver's call log, so the
    order of GPU and CRIU steps can be checked; KC_TEST_CRIU_FAIL=dump makes
    the real CRIU fail (it is handed an option it does not know)."""
    w = tmp_path / "criu"
    w.write_text(f"""#!/bin/sh
case "$1" in dump|restore) [ -n "$KC_FAKE_CUDA_DIR" ] && echo "criu-$1" >> "$KC_FAKE_CUDA_DIR/calls.log";; esac
if [ "$1" = "$KC_TEST_CRIU_FAIL" ]; then exec {CRIU} "$@" --no-such-option; fi
exec {CRIU} "$@"
""")
    w.chmod(0o755)
    return str(w)


def test_cpu_roundtrip_images_dir(tmp_path, kc_env, workloads):
    w = workloads(mb=256, seed=11)
    before = w.probe()
    assert before["ok"] == "1"
    img = tmp_path / "img"
    p = run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    assert "criu-dump" in p.stderr and "total" in p.stderr
    w.reap()
    assert wait_gone(w.pid), "the dumped process must be gone"
    manifest = json.loads((img / "kcheckpoint.json").read_text())
    assert manifest["root_pid"] == w.pid
    assert [pr["pid"] for pr in manifest["processes"]] == [w.pid]
    assert manifest["versions"]["criu"].startswith("4.")
    assert (img / "criu-dump.log").exists()

    p = run_kc(kc_env, "restore", img, check=0)
    assert int(p.stdout.strip()) == w.pid
    assert alive(w.pid)
    # runs on its own, not as kcheckpoint's or CRIU's child
    assert proc_ppid(w.pid) != os.getpid()
    after = w.probe()
    assert after["ok"] == "1"
    assert after["checksum"] == before["checksum"]
    assert int(after["counter"]) >= int(before["counter"])
    time.sleep(0.2)
    assert int(w.probe()["counter"]) > int(after["counter"]), "counter must keep advancing"


def test_process_tree(tmp_path, kc_env, workloads):
    w = workloads(mb=32, children=2)
    sums = [w.probe(status=s)["checksum"] for s in w.status_files()[:1]]
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    m = json.loads((img / "kcheckpoint.json").read_text())
    pids = [pr["pid"] for pr in m["processes"]]
    assert len(pids) == 3 and pids[0] == w.pid
    w.reap()
    for pid in pids:
        assert wait_gone(pid)
    run_kc(kc_env, "restore", img, check=0)
    for pid in pids:
        assert alive(pid)
    assert w.probe()["checksum"] == sums[0]
    for i, pid in enumerate(pids[1:]):
        st = w.probe(pid=pid, status=f"{w.status}.{i}")
        assert st["ok"] == "1"


def test_json_report(tmp_path, kc_env, workloads):
    w = workloads(mb=16)
    p = run_kc(kc_env, "dump", "--json", "-q", "-D", tmp_path / "img", w.pid, check=0)
    doc = json.loads(p.stdout)
    assert doc["command"] == "dump" and doc["root_pid"] == w.pid
    names = [s["stage"] for s in doc["stages"]]
    assert "criu-dump" in names
    crit = next(s for s in doc["stages"] if s["stage"] == "criu-dump")
    # CRIU writes the small memory; kcheckpoint reads the large runs itself
    memory = sum(s["bytes"] for s in doc["stages"] if s["stage"] in ("criu-dump", "memory-read"))
    assert memory >= 16 * 1000 * 1000 and crit["gb_per_s"] > 0, doc["stages"]
    assert doc["criu"]["pages_written"] > 0  # CRIU's own pages: the small rest
    assert p.stderr == "", "-q keeps stderr empty"
    w.reap()
    p = run_kc(kc_env, "restore", "--json", "-q", tmp_path / "img", check=0)
    doc = json.loads(p.stdout)
    assert doc["root_pid"] == w.pid and doc["criu"]["pages_restored"] > 0


def test_leave_running(tmp_path, kc_env, workloads):
    w = workloads(mb=16)
    c0 = int(w.probe()["counter"])
    run_kc(kc_env, "dump", "--leave-running", "-D", tmp_path / "img", w.pid, check=0)
    assert proc_state(w.pid) in ("S", "R")
    time.sleep(0.1)
    assert int(w.probe()["counter"]) > c0


def test_fake_cuda_call_order(tmp_path, cuda_env, workloads, criu_wrapper):
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    before = w.probe()
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "--criu", criu_wrapper, "-D", img, w.pid, check=0)
    w.reap()
    m = json.loads((img / "kcheckpoint.json").read_text())
    assert m["processes"][0]["cuda"] is True and m["processes"][0]["cuda_state"] == "running"
    assert cuda_state(cuda_env, w.pid) == 2, "dumped while CHECKPOINTED"
    run_kc(cuda_env, "restore", "--criu", criu_wrapper, img, check=0)
    pid = w.pid
    assert steps(cuda_env) == [f"lock {pid}", f"checkpoint {pid}", "criu-dump", "criu-restore",
                               f"restore {pid}", f"unlock {pid}"]
    assert cuda_state(cuda_env, pid) == 0
    after = w.probe()
    assert after["checksum"] == before["checksum"] and after["ok"] == "1"


def test_fake_cuda_tree_is_parallel_and_complete(tmp_path, cuda_env, workloads):
    w = workloads(mb=8, children=2, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    m = json.loads((img / "kcheckpoint.json").read_text())
    pids = [pr["pid"] for pr in m["processes"]]
    assert all(pr["cuda"] for pr in m["processes"]) and len(pids) == 3
    run_kc(cuda_env, "restore", img, check=0)
    s = steps(cuda_env)
    # lock all before any checkpoint; restore all before any unlock
    assert max(s.index(f"lock {p}") for p in pids) < min(s.index(f"checkpoint {p}") for p in pids)
    assert max(s.index(f"restore {p}") for p in pids) < min(s.index(f"unlock {p}") for p in pids)
    assert all(cuda_state(cuda_env, p) == 0 for p in pids)


@pytest.mark.parametrize("fail,code,seq", [
    # the failed call is logged too; everything after it is the rollback
    ("lock:600", 9, ["lock"]),
    ("lock:1", 6, ["lock"]),
    ("checkpoint:1", 6, ["lock", "checkpoint", "unlock"]),
    ("criu", 7, ["lock", "checkpoint", "criu-dump", "restore", "unlock"]),
])
def test_rollback_keeps_process_running(tmp_path, cuda_env, workloads, criu_wrapper, fail, code, seq):
    w = workloads(mb=16, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    before = w.probe()
    if fail == "criu":
        cuda_env["KC_TEST_CRIU_FAIL"] = "dump"
    else:
        cuda_env["KC_FAKE_CUDA_FAIL"] = fail
    img = tmp_path / "img"
    p = run_kc(cuda_env, "dump", "--criu", criu_wrapper, "-D", img, w.pid, check=code)
    assert p.stderr.startswith("kcheckpoint: ") and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert proc_state(w.pid) in ("S", "R"), "running, not stopped"
    assert cuda_state(cuda_env, w.pid) == 0, "RUNNING again"
    after = w.probe()
    assert int(after["counter"]) > int(before["counter"]) and after["checksum"] == before["checksum"]
    assert [x.split()[0] for x in steps(cuda_env)] == seq


def test_criu_failure_message_has_criu_error(tmp_path, kc_env, workloads, criu_wrapper):
    w = workloads(mb=8)
    kc_env["KC_TEST_CRIU_FAIL"] = "dump"
    p = run_kc(kc_env, "dump", "--criu", criu_wrapper, "-D", tmp_path / "img", w.pid, check=7)
    assert "criu dump failed" in p.stderr
    assert alive(w.pid)


def test_sigint_during_gpu_checkpoint_rolls_back(tmp_path, cuda_env, workloads):
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    cuda_env["KC_FAKE_CUDA_DELAY_MS"] = "checkpoint:1500"
    proc = subprocess.Popen([str(KC), "dump", "-D", str(tmp_path / "img"), str(w.pid)], env=cuda_env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while cuda_state(cuda_env, w.pid) != 1 and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert cuda_state(cuda_env, w.pid) == 0
    assert proc_state(w.pid) in ("S", "R")
    w.probe()


def test_restore_gpu_failure_kills_restored_tree_and_keeps_image(tmp_path, cuda_env, workloads):
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    files = {f: (img / f).read_bytes() for f in os.listdir(img)}
    env = dict(cuda_env, KC_FAKE_CUDA_FAIL="restore:1")
    p = run_kc(env, "restore", img, check=6)
    assert "GPU restore" in p.stderr
    assert wait_gone(w.pid), "the half-restored process is removed"
    # CRIU adds its restore log and stats; what the dump wrote stays as it was
    assert {f: (img / f).read_bytes() for f in files} == files, "the image is untouched"
    # the CHECKPOINTED state file stays; a plain retry works
    run_kc(cuda_env, "restore", img, check=0)
    assert cuda_state(cuda_env, w.pid) == 0 and alive(w.pid)


def test_wrong_gpu_map_is_refused_then_plain_restore_works(tmp_path, cuda_env, workloads):
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    bad = "GPU-11111111-2222-3333-4444-555555555555=GPU-00000000-0000-0000-0000-000000000001"
    run_kc(cuda_env, "restore", "--gpu-map", bad, img, check=6)
    run_kc(cuda_env, "restore", img, check=0)
    assert cuda_state(cuda_env, w.pid) == 0


def test_pid_still_taken(tmp_path, kc_env, workloads):
    w = workloads(mb=8)
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "--leave-running", "-D", img, w.pid, check=0)
    t0 = time.time()
    p = run_kc(kc_env, "restore", "--pid-wait", "300", img, check=9)
    assert time.time() - t0 < 5
    assert f"pid {w.pid} is still taken" in p.stderr and "--pid-wait" in p.stderr
    assert alive(w.pid)


def test_restore_waits_for_pid_to_free(tmp_path, kc_env, workloads):
    """The dumped pid is a zombie until its parent reaps it: restore waits."""
    w = workloads(mb=8)
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    assert wait_state(w.pid, "Z"), "our child: a zombie until we reap it"
    proc = subprocess.Popen([str(KC), "restore", "--pid-wait", "10000", str(img)], env=kc_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert proc.poll() is None, "still waiting for the pid"
    w.reap()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "pid-wait" in err
    assert alive(w.pid)


def test_state_and_recover(tmp_path, cuda_env, workloads):
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    # leave it CHECKPOINTED as a killed dump would
    Path(cuda_env["KC_FAKE_CUDA_DIR"], str(w.pid)).write_text("2\n")
    p = run_kc(cuda_env, "state", w.pid, check=0)
    assert "checkpointed" in p.stdout
    p = run_kc(cuda_env, "state", "--json", w.pid, check=0)
    assert json.loads(p.stdout)["processes"][0]["state"] == "checkpointed"
    p = run_kc(cuda_env, "recover", w.pid, check=0)
    assert "running" in p.stdout
    assert cuda_state(cuda_env, w.pid) == 0


def test_already_locked_process_stays_locked(tmp_path, cuda_env, workloads):
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    Path(cuda_env["KC_FAKE_CUDA_DIR"], str(w.pid)).write_text("1\n")
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    assert [x.split()[0] for x in steps(cuda_env)] == ["checkpoint"]
    run_kc(cuda_env, "restore", img, check=0)
    assert [x.split()[0] for x in steps(cuda_env)] == ["checkpoint", "restore"]
    assert cuda_state(cuda_env, w.pid) == 1, "LOCKED, as it was"


@pytest.mark.parametrize("fail", [False, True])
def test_thp_set_while_running_and_put_back(tmp_path, kc_env, workloads, fail):
    thp = tmp_path / "thp"
    thp.write_text("always [madvise] never\n")
    seen = tmp_path / "seen"
    wrapper = tmp_path / "criu-thp"
    wrapper.write_text(f"""#!/bin/sh
[ "$1" = dump ] && cat {thp} >> {seen}
[ "$1" = dump ] && [ -n "$KC_TEST_CRIU_FAIL" ] && exec {CRIU} "$@" --no-such-option
exec {CRIU} "$@"
""")
    wrapper.chmod(0o755)
    kc_env["KCHECKPOINT_THP_PATH"] = str(thp)
    if fail:
        kc_env["KC_TEST_CRIU_FAIL"] = "1"
    w = workloads(mb=8)
    run_kc(kc_env, "dump", "--thp", "always", "--criu", wrapper, "-D", tmp_path / "img", w.pid,
           check=7 if fail else 0)
    assert seen.read_text().split()[0] == "always", "always while CRIU ran"
    assert thp.read_text().strip() == "madvise", "the old mode is back"
    run_kc(kc_env, "dump", "--thp", "sometimes", "-D", tmp_path / "img2", w.pid, check=2)


G1, G2, G3 = (f"GPU-00000000-0000-0000-0000-00000000000{i}" for i in (1, 2, 3))


def test_gpu_map_moves_process_to_other_gpu(tmp_path, cuda_env, workloads):
    """The driver wants every GPU of the node mapped; one OLD=NEW is completed."""
    cuda_env["KC_FAKE_CUDA_GPU"] = f"{G1},{G2}"
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    assert json.loads((img / "kcheckpoint.json").read_text())["node_gpus"] == [G1, G2]
    run_kc(cuda_env, "restore", "--gpu-map", f"{G1}={G2}", img, check=0)
    gpu = Path(cuda_env["KC_FAKE_CUDA_DIR"], f"{w.pid}.gpu").read_text().strip()
    assert gpu == G2 and cuda_state(cuda_env, w.pid) == 0
    w.probe()


def test_restore_on_node_without_the_gpu_maps_automatically(tmp_path, cuda_env, workloads):
    cuda_env["KC_FAKE_CUDA_GPU"] = G1
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    cuda_env["KC_FAKE_CUDA_GPU"] = G3  # "another node"
    run_kc(cuda_env, "restore", img, check=0)
    gpu = Path(cuda_env["KC_FAKE_CUDA_DIR"], f"{w.pid}.gpu").read_text().strip()
    assert gpu == G3 and cuda_state(cuda_env, w.pid) == 0


def test_gpu_map_to_absent_gpu_is_refused(tmp_path, cuda_env, workloads):
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    p = run_kc(cuda_env, "restore", "--gpu-map", f"{G1}={G3}", img, check=2)
    assert "is not on this node" in p.stderr
    assert not (img / "criu-restore.log").exists(), "refused before CRIU restored anything"
    assert not alive(w.pid)
    run_kc(cuda_env, "restore", img, check=0)


def fake_procfs(path, gpus):
    """/proc/driver/nvidia/gpus as the kernel module writes it."""
    for i, g in enumerate(gpus):
        d = path / f"0000:{i + 0x18:02x}:00.0"
        d.mkdir(parents=True)
        (d / "information").write_text(f"Model: \t\t NVIDIA H200\nIRQ:   \t\t 0\n"
                                       f"GPU UUID: \t {g}\nVideo BIOS: \t ??.??.??.??.??\n")
    return path


def test_gpu_map_checked_before_unpack_where_the_module_lists_gpus(tmp_path, cuda_env, workloads):
    """With the kernel module's GPU list a --gpu-map is checked before anything is
    unpacked and driver start-up still overlaps CRIU; without it restore waits for
    the driver before CRIU, so a wrong map never costs a restore."""
    cuda_env["KC_FAKE_CUDA_GPU"] = f"{G1},{G2}"
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    archive = tmp_path / "a.tar.zst"
    run_kc(cuda_env, "dump", "-o", archive, w.pid, check=0)
    w.reap()
    env = dict(cuda_env, KC_FAKE_CUDA_DELAY_MS="init:3000",
               KCHECKPOINT_NVIDIA_PROCFS=str(fake_procfs(tmp_path / "gpus", [G1, G2])))
    wd = tmp_path / "wd"
    wd.mkdir()
    inits = Path(cuda_env["KC_FAKE_CUDA_DIR"], ".count.init")
    before = inits.read_text() if inits.exists() else ""
    p = run_kc(env, "restore", "--work-dir", wd, "--gpu-map", f"{G1}={G3}", archive, check=2)
    assert "is not on this node" in p.stderr
    assert (inits.read_text() if inits.exists() else "") == before, "refused without starting the driver"
    assert not os.listdir(wd), "refused before unpacking"

    def stages(extra_env):
        # the fake driver's record of pid as the dump left it: CHECKPOINTED on G1
        Path(cuda_env["KC_FAKE_CUDA_DIR"], str(w.pid)).write_text("2\n")
        Path(cuda_env["KC_FAKE_CUDA_DIR"], f"{w.pid}.gpu").write_text(G1 + "\n")
        p = run_kc(dict(env, **extra_env), "restore", "--json", "--gpu-map", f"{G1}={G2}", archive, check=0)
        assert Path(cuda_env["KC_FAKE_CUDA_DIR"], f"{w.pid}.gpu").read_text().strip() == G2
        kill_pid(w.pid)
        assert wait_gone(w.pid)
        return [s["stage"] for s in json.loads(p.stdout)["stages"]]

    got = stages({})
    assert got.index("criu-restore") < got.index("gpu-init-wait"), got
    got = stages({"KCHECKPOINT_NVIDIA_PROCFS": str(tmp_path / "none")})  # no list: driver first
    assert got.index("gpu-init-wait") < got.index("criu-restore"), got


@pytest.mark.parametrize("leave_running", [True, False])
def test_children_forked_during_gpu_stage_are_not_left_stopped(tmp_path, cuda_env, leave_running):
    """CRIU dumps (and stops) what the tree forked while the GPU was being
    checkpointed; kcheckpoint must resume or kill those too."""
    from conftest import child_pids
    sh = subprocess.Popen(["sh", "-c", "while :; do sleep 0.1; done"], start_new_session=True,
                          stdin=subprocess.DEVNULL)
    try:
        Path(cuda_env["KC_FAKE_CUDA_DIR"], str(sh.pid)).write_text("0\n")
        cuda_env["KC_FAKE_CUDA_DELAY_MS"] = "checkpoint:800"
        args = ["dump", "-D", tmp_path / "img", sh.pid] + (["--leave-running"] if leave_running else [])
        run_kc(cuda_env, *args, check=0)
        m = json.loads((tmp_path / "img" / "kcheckpoint.json").read_text())
        if leave_running:
            time.sleep(0.5)
            assert proc_state(sh.pid) in ("S", "R")
            kids = child_pids(sh.pid)
            assert kids and all(proc_state(k) in ("S", "R", "Z") for k in kids), kids
        else:
            sh.wait(timeout=10)
            # every process CRIU stopped is gone: nothing of the session is left stopped
            for p in m["processes"]:
                assert proc_state(p["pid"]) in (None, "Z"), p
            left = subprocess.run(["pgrep", "-s", str(sh.pid)], capture_output=True, text=True).stdout.split()
            assert [pid for pid in left if proc_state(int(pid)) == "T"] == [], left
    finally:
        subprocess.run(["pkill", "-9", "-s", str(sh.pid)])
        sh.wait(timeout=10)


def test_cpu_image_restores_without_a_driver(tmp_path, kc_env, workloads):
    """The driver loads in the background; a CPU-only image must not need it."""
    w = workloads(mb=8)
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    run_kc(dict(kc_env, KCHECKPOINT_LIBCUDA="/nonexistent/libcuda.so.1"), "restore", img, check=0)
    assert alive(w.pid)


def test_cuda_child_that_exits_during_the_dump_is_left_out(tmp_path, cuda_env, workloads):
    """A CUDA child that ends between its GPU checkpoint and CRIU's freeze is
    not in CRIU's images: the manifest must not promise it either, or every
    restore fails on its GPU state (issue 11, item 3)."""
    from conftest import child_pids
    w = workloads(mb=16, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], children=2)
    victim = child_pids(w.pid)[0]
    slow = tmp_path / "criu-after-a-pause"
    slow.write_text(f'#!/bin/sh\n[ "$1" = dump ] && touch "{tmp_path}/gpu-done" && sleep 2\nexec "{CRIU}" "$@"\n')
    slow.chmod(0o755)
    archive = tmp_path / "a.tar.zst"
    p = subprocess.Popen([str(KC), "dump", "--criu", str(slow), "-o", str(archive), str(w.pid)], env=cuda_env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (tmp_path / "gpu-done").exists():
        assert time.time() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else ""
        time.sleep(0.01)
    assert cuda_state(cuda_env, victim) == 2
    kill_pid(victim)
    assert wait_gone(victim)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    info = run_kc(cuda_env, "inspect", "--json", archive, check=0).stdout
    assert victim not in [q["pid"] for q in json.loads(info)["processes"]]
    w.reap()
    assert wait_gone(w.pid)
    run_kc(cuda_env, "restore", archive, check=0)
    assert w.probe()["ok"] == "1"


def wait_locked(env, pid, timeout=20):
    """Until the fake driver has pid out of RUNNING: a dump is in its GPU stage."""
    deadline = time.time() + timeout
    while cuda_state(env, pid) == 0:
        assert time.time() < deadline, f"pid {pid} never left RUNNING"
        time.sleep(0.01)


def slow_dump(env, checkpoint_ms, *args):
    """A dump in the background whose GPU checkpoint the fake driver stretches."""
    return subprocess.Popen([str(KC), "dump", *map(str, args)], stdin=subprocess.DEVNULL,
                            env=dict(env, KC_FAKE_CUDA_DELAY_MS=f"checkpoint:{checkpoint_ms}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_two_dumps_into_one_images_dir(tmp_path, cuda_env, workloads):
    """The second dump into a dir the first is still writing is refused,
    busy, and the first one's images stay whole (issue 11, item 2)."""
    a = workloads(mb=16, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], name="a")
    b = workloads(mb=16, seed=9, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], name="b")
    img = tmp_path / "img"
    first = slow_dump(cuda_env, 2000, "-D", img, a.pid)
    wait_locked(cuda_env, a.pid)
    p = run_kc(cuda_env, "dump", "-D", img, b.pid, check=9)
    assert "being written by another dump" in p.stderr, p.stderr
    assert b.probe()["ok"] == "1" and cuda_state(cuda_env, b.pid) == 0, "the second target runs on untouched"
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert not (img / ".kcheckpoint-lock").exists()
    a.reap()
    assert wait_gone(a.pid)
    run_kc(cuda_env, "restore", img, check=0)
    assert a.probe()["ok"] == "1"


def test_two_dumps_to_one_archive_name(tmp_path, cuda_env, workloads):
    """Both pass the early 'exists' check; the one that finishes second must
    not replace the other's archive: it is refused, busy, and rolled back
    (issue 11, item 1)."""
    a = workloads(mb=16, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], name="a")
    b = workloads(mb=16, seed=9, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], name="b")
    out = tmp_path / "one.tar.zst"
    first = slow_dump(cuda_env, 2500, "-o", out, a.pid)
    wait_locked(cuda_env, a.pid)
    run_kc(cuda_env, "dump", "-o", out, b.pid, check=0)  # the quick one publishes first
    _, err = first.communicate(timeout=60)
    assert first.returncode == 9, err
    assert "appeared while this dump ran" in err, err
    assert a.probe()["ok"] == "1" and cuda_state(cuda_env, a.pid) == 0, "the slow one's target is rolled back"
    info = json.loads(run_kc(cuda_env, "inspect", "--json", out, check=0).stdout)
    assert info["root_pid"] == b.pid, "the archive is the one that was published first"


def test_thp_after_sigkill_and_overlapping_runs(tmp_path, kc_env, workloads):
    """Issue 11, item 8: a kcheckpoint killed while it holds a THP mode, and
    two runs that overlap, both end on the mode found before either."""
    thp = tmp_path / "thp"
    thp.write_text("always [madvise] never\n")
    kc_env["KCHECKPOINT_THP_PATH"] = str(thp)
    slow = tmp_path / "criu-slow"
    slow.write_text(f'#!/bin/sh\n[ "$1" = dump ] && touch "{tmp_path}/in-criu" && sleep 2\nexec "{CRIU}" "$@"\n')
    slow.chmod(0o755)

    def dump_in_background(w, mode, name):
        (tmp_path / "in-criu").unlink(missing_ok=True)
        p = subprocess.Popen([str(KC), "dump", "--thp", mode, "--leave-running", "--criu", str(slow), "-D",
                              str(tmp_path / name), str(w.pid)], env=kc_env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while not (tmp_path / "in-criu").exists():
            assert time.time() < deadline and p.poll() is None
            time.sleep(0.01)
        return p

    w = workloads(mb=8)
    # killed while it holds 'always': recover puts 'madvise' back
    p = dump_in_background(w, "always", "img1")
    assert thp.read_text().strip() == "always"
    p.kill()
    p.wait()
    deadline = time.time() + 30
    while True:  # recover says busy (9) while the orphaned CRIU still works
        r = run_kc(kc_env, "recover", w.pid)
        if r.returncode != 9 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0, r.stderr
    assert thp.read_text().strip() == "madvise"

    # two runs overlap: the first to finish must not put its 'old' mode
    # (the second's setting) back; the last one restores the original
    v = workloads(mb=8, seed=5, name="v")
    a = dump_in_background(w, "always", "img2")
    run_kc(kc_env, "dump", "--thp", "never", "--leave-running", "-D", tmp_path / "img3", v.pid, check=0)
    assert thp.read_text().strip() != "madvise", "a holder is still running"
    _, err = a.communicate(timeout=60)
    assert a.returncode == 0, err
    assert thp.read_text().strip() == "madvise"


def test_one_kcheckpoint_at_a_time_per_process(tmp_path, cuda_env, workloads):
    """Issue 11, item 7: a second dump (or a recover) of a process another
    kcheckpoint is dumping is refused, busy, without touching it."""
    w = workloads(mb=16, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    first = slow_dump(cuda_env, 2000, "--leave-running", "-D", tmp_path / "a", w.pid)
    wait_locked(cuda_env, w.pid)
    p = run_kc(cuda_env, "dump", "-D", tmp_path / "b", w.pid, check=9)
    assert "being dumped, restored, recovered or asked about by another kcheckpoint" in p.stderr, p.stderr
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    p = run_kc(cuda_env, "recover", w.pid, check=9)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert cuda_state(cuda_env, w.pid) == 0 and w.probe()["ok"] == "1"
    run_kc(cuda_env, "dump", "--leave-running", "-D", tmp_path / "c", w.pid, check=0)


def test_read_only_images_dir_restores_and_stays_as_it_was(tmp_path, kc_env, workloads):
    """Issue 11, item 14: CRIU's log, pidfile and stats of a restore go to a
    private dir, not into the user's images."""
    w = workloads(mb=32)
    before = w.probe()
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    listing = sorted(os.listdir(img))
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(img), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        p = run_kc(kc_env, "restore", ro, check=0)
        assert "criu-restore" in p.stderr
        after = w.probe()
        assert after["ok"] == "1" and after["checksum"] == before["checksum"]
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    assert sorted(os.listdir(img)) == listing, "the image is left as it was"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("kcheckpoint-criu-")], "nor anything beside"
