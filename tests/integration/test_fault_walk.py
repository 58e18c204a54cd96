# SPDX-License-Identifier: Apache-2.0
"""Fault injection walk (issue 11): every stage of dump and restore, with
SIGINT, SIGTERM and SIGKILL, against the rule of the man page (SIGNALS):

after any failure, signal or SIGKILL at any point, the target is either
running with its state intact or `kcheckpoint recover` makes it so (a
restored tree whose memory is not all back is never let run: recover
refuses it, and the image restores again); no archive or images dir is
published for a dump that did not exit 0.

KCHECKPOINT_TEST_PAUSE=<stage> holds kcheckpoint at the start of that
stage (src/core/report.c) until a signal comes, so each case hits its
stage for sure.  Real CRIU, the fake CUDA driver, a real workload that
checks its own memory.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KC, alive, cuda_state, kill_all, kill_pid, proc_state, run_kc, wait_gone, wait_state

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def start_paused(env, tmp_path, stage, *args):
    mark = tmp_path / f"paused-{stage}"
    mark.unlink(missing_ok=True)
    env = dict(env, KCHECKPOINT_TEST_PAUSE=stage, KCHECKPOINT_TEST_PAUSE_FILE=str(mark))
    p = subprocess.Popen([str(KC), *map(str, args)], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not mark.exists():
        if p.poll() is not None:
            out, err = p.communicate()
            raise AssertionError(f"exited {p.returncode} before stage {stage}: {err}")
        assert time.time() < deadline, f"stage {stage} not reached"
        time.sleep(0.01)
    return p


def recover_until_done(env, pid):
    """recover answers 9 while an orphaned CRIU still traces the tree."""
    deadline = time.time() + 30
    while True:
        p = run_kc(env, "recover", pid)
        if p.returncode != 9 or time.time() > deadline:
            return p
        time.sleep(0.2)


def assert_running_intact(env, w):
    assert proc_state(w.pid) in ("R", "S"), proc_state(w.pid)
    assert cuda_state(env, w.pid) == 0
    assert w.probe()["ok"] == "1"


def leftovers(d, keep=()):
    return sorted(n for n in os.listdir(d) if n not in keep)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("kind,stage", [("-o", "gpu-checkpoint"), ("-o", "criu-dump"), ("-o", "archive"),
                                        ("-D", "memory-read")])
def test_dump_walk(tmp_path, cuda_env, workloads, kind, stage, sig):
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    outdir = tmp_path / "out"
    outdir.mkdir()
    target = outdir / ("a.tar.zst" if kind == "-o" else "img")
    p = start_paused(cuda_env, tmp_path, stage, "dump", "--fill-threads", "1", kind, target, w.pid)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    if sig != signal.SIGKILL:
        assert p.returncode == 130, err
        assert "rolled back" in err or "interrupted" in err, err
    else:
        assert p.returncode == -signal.SIGKILL
        # state tells what is wrong before recover fixes it
        st = json.loads(run_kc(cuda_env, "state", "--json", w.pid, check=0).stdout)["processes"][0]
        want = {"gpu-checkpoint": ("locked", "running"), "criu-dump": ("checkpointed", "running"),
                "archive": ("checkpointed", "stopped"), "memory-read": ("checkpointed", "stopped")}[stage]
        assert (st["state"], st["process"]) == want, st
        r = recover_until_done(cuda_env, w.pid)
        assert r.returncode == 0, r.stderr
    assert_running_intact(cuda_env, w)
    # nothing published, no hidden temporary archive
    if kind == "-o":
        assert leftovers(outdir) == [], leftovers(outdir)
    else:
        assert not (target / "kcheckpoint.json").exists()
    # and the same dump works now
    run_kc(cuda_env, "dump", "--fill-threads", "1", kind, tmp_path / ("b.tar.zst" if kind == "-o" else "img2"),
           w.pid, check=0)
    w.reap()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("stage", ["unpack", "criu-restore", "memory-fill", "gpu-restore"])
def test_restore_walk(tmp_path, cuda_env, workloads, stage, sig):
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    before = w.probe()
    archive = tmp_path / "a.tar.zst"
    run_kc(cuda_env, "dump", "--fill-threads", "1", "-o", archive, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    p = start_paused(cuda_env, tmp_path, stage, "restore", "--fill-threads", "2", archive)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    if sig != signal.SIGKILL:
        assert p.returncode == 130, err
        assert wait_gone(w.pid), "an interrupted restore leaves no process behind"
    elif stage == "memory-fill":
        # stopped by CRIU, memory not back: recover must not let it run
        assert proc_state(w.pid) in ("T", "t"), proc_state(w.pid)
        st = json.loads(run_kc(cuda_env, "state", "--json", w.pid, check=0).stdout)
        assert st["processes"][0]["process"] == "filling", st
        r = run_kc(cuda_env, "recover", w.pid)
        assert r.returncode == 7, r.stderr
        assert proc_state(w.pid) in ("T", "t")
        kill_pid(w.pid)
        assert wait_gone(w.pid)
        # a stopped process that later gets the pid is not the one whose
        # fill did not finish: the mark holds that one's start time
        deadline = time.time() + 20  # until init has reaped it too
        while os.path.exists(f"/proc/{w.pid}") and time.time() < deadline:
            time.sleep(0.05)
        other = None
        for _ in range(5):
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(w.pid - 1))
            other = subprocess.Popen(["sleep", "60"])
            if other.pid == w.pid:
                break
            other.kill()
            other.wait()
        assert other.pid == w.pid, "could not get the pid again"
        os.kill(other.pid, signal.SIGSTOP)
        assert wait_state(other.pid, "T")
        st = json.loads(run_kc(cuda_env, "state", "--json", other.pid, check=0).stdout)
        assert st["processes"][0]["process"] == "stopped", st
        other.kill()
        other.wait()
    elif stage == "gpu-restore":
        # memory back, the tree stopped but for its restore thread, whose
        # signals the killed restore had blocked; its GPU still
        # checkpointed: recover puts the mask back, runs it, restores the GPU
        assert list((tmp_path / "run").glob("held-*")), "the mask to put back is kept"
        r = recover_until_done(cuda_env, w.pid)
        assert r.returncode == 0, r.stderr
        assert not list((tmp_path / "run").glob("held-*"))
        assert_running_intact(cuda_env, w)
        after = w.probe()
        assert after["checksum"] == before["checksum"]
        kill_pid(w.pid)
        assert wait_gone(w.pid)
    else:
        assert wait_gone(w.pid), "killed before CRIU ran: nothing restored"
    # the archive is whole and restores.  The fake driver keeps each pid's
    # state in a file, which the restore stage just changed; a real process
    # restored from the archive brings its CHECKPOINTED state with it
    if stage == "gpu-restore":
        (Path(cuda_env["KC_FAKE_CUDA_DIR"]) / str(w.pid)).write_text("2")
    run_kc(cuda_env, "inspect", "--verify", archive, check=0)
    run_kc(cuda_env, "restore", archive, check=0)
    after = w.probe()
    assert after["ok"] == "1" and after["checksum"] == before["checksum"]
    assert cuda_state(cuda_env, w.pid) == 0
    kill_pid(w.pid)
    wait_gone(w.pid)
    # no work dir is left behind by the commands that ended normally
    if sig != signal.SIGKILL:
        assert not [n for n in os.listdir(tmp_path) if n.startswith("kcheckpoint-")], os.listdir(tmp_path)


def test_sigkill_leftovers_are_removed_by_the_next_run(tmp_path, cuda_env, workloads):
    """Issue 11, item 12: a work dir (gigabytes) and a hidden partial archive
    that a SIGKILLed kcheckpoint left are removed by the next one that works
    there, and it says so; a kept work dir stays."""
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    out = tmp_path / "out"
    out.mkdir()
    work = tmp_path / "work"
    p = start_paused(cuda_env, tmp_path, "archive", "dump", "--work-dir", work, "-o", out / "a.tar.zst", w.pid)
    p.kill()
    p.wait()
    assert recover_until_done(cuda_env, w.pid).returncode == 0
    left = [n for n in os.listdir(work) if not n.endswith(".lock")]
    assert len(left) == 1 and (work / left[0] / "kcheckpoint.json").exists(), os.listdir(work)
    # what a filesystem without O_TMPFILE would hold: a dead pid's partial archive
    dead = subprocess.Popen(["true"])
    dead.wait()
    partial = out / f".a.tar.zst.{dead.pid}.0"
    partial.write_bytes(b"x" * 4096)
    r = run_kc(cuda_env, "dump", "--work-dir", work, "--keep-images", "-o", out / "a.tar.zst", w.pid, check=0)
    w.reap()
    assert f"removed '{work / left[0]}'" in r.stderr, r.stderr
    assert f"removed '{partial}'" in r.stderr, r.stderr
    assert not (work / left[0]).exists() and not partial.exists()
    # the kept images of this dump are not a leftover for the next run
    now = [n for n in os.listdir(work)]
    assert len(now) == 1 and not now[0].endswith(".lock"), now
    r = run_kc(cuda_env, "restore", "--work-dir", work, out / "a.tar.zst", check=0)
    assert "removed" not in r.stderr
    assert (work / now[0]).is_dir()
    kill_pid(w.pid)


def test_sweep_removes_only_its_own_dirs_and_stays_on_their_filesystem(tmp_path, kc_env, workloads):
    """Hostile test: the sweep took any kcheckpoint-* with a .lock beside
    it and followed a bind mount inside one."""
    w = workloads(mb=8)
    work = tmp_path / "work"
    work.mkdir()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    # a dead kcheckpoint's work dir with a bind mount inside
    dead = work / "kcheckpoint-dddddd"
    (dead / "mnt").mkdir(parents=True)
    (work / "kcheckpoint-dddddd.lock").write_text("")
    subprocess.run(["mount", "--bind", str(precious), str(dead / "mnt")], check=True)
    # names that are not a work dir's
    for name in ("kcheckpoint-foo", "kcheckpoint-ffffff"):
        (work / f"{name}.lock").write_text("")
    (work / "kcheckpoint-foo").mkdir()
    (work / "kcheckpoint-ffffff").write_text("a file")
    try:
        p = run_kc(kc_env, "dump", "--leave-running", "--work-dir", work, "-o", tmp_path / "a.tar.zst", w.pid,
                   check=0)
        assert (precious / "keep.txt").read_text() == "x", "nothing across the mount"
        assert "cannot remove" in p.stderr and "kcheckpoint-dddddd" in p.stderr, p.stderr
        assert (work / "kcheckpoint-foo").is_dir() and (work / "kcheckpoint-ffffff").is_file()
    finally:
        subprocess.run(["umount", str(dead / "mnt")], check=False)


def thread_field(pid, tid, field):
    for l in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if l.startswith(field + ":"):
            return l.split()[1]
    raise AssertionError(f"no {field} for thread {tid}")


def restore_paused_with_helper(tmp_path, env, workloads, stage, stopped_before=False, extra=(), backup_mb=0):
    """A fake CUDA process with an idle second thread (the fake's restore
    thread), dumped to an images dir and restored up to stage, paused.
    Returns the workload, its probe before, the restore and that thread."""
    w = workloads(mb=32, cuda_dir=env["KC_FAKE_CUDA_DIR"], helper_thread=True, backup_mb=backup_mb)
    before = w.probe()
    if stopped_before:
        os.kill(w.pid, signal.SIGSTOP)
        assert wait_state(w.pid, "T")
    img = tmp_path / "img"
    run_kc(env, "dump", "--fill-threads", "1", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    # a mark a killed restore left for a thread that is gone since
    # (pid_max is at most 4194304): the next hold sweeps it
    (tmp_path / "run" / "held-4000001").write_text("1 0\n")
    p = start_paused(env, tmp_path, stage, "restore", "--fill-threads", "1", *extra, img)
    helper = min(int(t) for t in os.listdir(f"/proc/{w.pid}/task") if int(t) != w.pid)
    return w, before, p, helper


@pytest.mark.parametrize("stopped_before", [False, True], ids=["running", "stopped"])
def test_only_the_restore_thread_runs_until_the_gpu_is_back(tmp_path, cuda_env, workloads, stopped_before):
    """As CRIU's CUDA plugin does: the tree CRIU left stopped stays so during
    the GPU restore, but for each process' restore thread (the fake driver
    refuses to restore with it stopped), held through ptrace."""
    w, before, p, helper = restore_paused_with_helper(tmp_path, cuda_env, workloads, "gpu-restore", stopped_before)
    assert thread_field(w.pid, w.pid, "State") == "T", "the program's own thread is stopped"
    assert thread_field(w.pid, helper, "State") in ("R", "S"), "the restore thread runs"
    assert thread_field(w.pid, helper, "TracerPid") == str(p.pid)
    stale = tmp_path / "run" / "held-4000001"  # see restore_paused_with_helper
    (tmp_path / "paused-gpu-restore").unlink()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "hold-threads" in err and "runs during the GPU restore" not in err, err
    assert not stale.exists()
    assert thread_field(w.pid, helper, "TracerPid") == "0", "let go after"
    assert int(thread_field(w.pid, helper, "SigBlk"), 16) == 0, "with its own signal mask"
    assert not list((tmp_path / "run").glob("held-*"))
    assert cuda_state(cuda_env, w.pid) == 0
    if stopped_before:
        # stopped when dumped: stopped after, the restore thread too
        assert wait_state(w.pid, "T")
        deadline = time.time() + 5
        while thread_field(w.pid, helper, "State") != "T":
            assert time.time() < deadline, thread_field(w.pid, helper, "State")
            time.sleep(0.02)
        os.kill(w.pid, signal.SIGCONT)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]


def test_recover_after_a_killed_restore_stops_again_what_was_stopped_when_dumped(tmp_path, cuda_env, workloads):
    """A restore SIGKILLed before it stopped again a process that was
    stopped when dumped: recover, which must let it run for its GPU
    restore, stops it afterwards (restore's stopped-<pid> mark)."""
    (tmp_path / "run").mkdir(exist_ok=True)
    stale = tmp_path / "run" / "stopped-4000001"  # a process long gone: swept
    stale.write_text("1\n")
    # the memory filled first: a restore killed during a fill beside the GPU
    # restore leaves nothing recover may run (next test)
    w, before, p, helper = restore_paused_with_helper(tmp_path, cuda_env, workloads, "gpu-restore",
                                                      stopped_before=True, extra=["--no-fill-overlap"])
    mark = tmp_path / "run" / f"stopped-{w.pid}"
    assert mark.exists() and not stale.exists()
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    r = recover_until_done(cuda_env, w.pid)
    assert r.returncode == 0, r.stderr
    assert wait_state(w.pid, "T"), "stopped, as when dumped"
    assert cuda_state(cuda_env, w.pid) == 0, "its GPU back"
    assert not mark.exists()
    assert int(thread_field(w.pid, helper, "SigBlk"), 16) == 0
    os.kill(w.pid, signal.SIGCONT)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]
    # recover again: nothing stops it now
    r = run_kc(cuda_env, "recover", w.pid, check=0)
    time.sleep(0.2)
    assert proc_state(w.pid) in ("R", "S"), proc_state(w.pid)


@pytest.mark.parametrize("stage", ["memory-fill", "gpu-restore", "fill-wait"])
def test_a_restore_killed_while_memory_fills_beside_the_gpu_never_runs(tmp_path, cuda_env, workloads, stage):
    """SIGKILLed while the memory goes in through the userfaultfd beside the
    GPU restore: what is not filled reads as zeros once kcheckpoint's
    descriptor is gone, so recover refuses (exit 7) and the tree stays
    stopped until it is killed, and the image, untouched, restores again;
    once every MiB was in (the fill ends before the GPU restore does) the
    marks are gone and recover brings it back, the fake driver finding the
    copy it restores from as checkpoint left it."""
    w, before, p, helper = restore_paused_with_helper(tmp_path, cuda_env, workloads, stage, backup_mb=256)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    r = recover_until_done(cuda_env, w.pid)
    if stage == "memory-fill":  # nothing filled yet: never recoverable
        assert r.returncode == 7, r.stderr
    if r.returncode == 7:
        assert "must not run" in r.stderr, r.stderr
        assert proc_state(w.pid) == "T", "nothing of the program ran"
        kill_all(w.pid)
        w.reap()
        assert wait_gone(w.pid)
        run_kc(cuda_env, "restore", "--fill-threads", "2", tmp_path / "img", check=0)
    else:
        assert r.returncode == 0, r.stderr
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]


@pytest.mark.parametrize("how", ["leave-running", "SIGINT", "SIGKILL", "SIGINT-gpu"])
def test_a_process_stopped_before_its_dump_stays_stopped(tmp_path, cuda_env, workloads, how):
    """Stopped by its user before the dump: stopped after a --leave-running
    dump, after a rolled-back one (also one rolled back before CRIU, the
    tree never resumed: its restore thread runs alone for the GPU undo),
    and after recover of a SIGKILLed one (the dump's stopped-<pid> mark),
    its GPU back each time."""
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")
    img = tmp_path / "img"
    if how == "leave-running":
        run_kc(cuda_env, "dump", "--leave-running", "--fill-threads", "1", "-D", img, w.pid, check=0)
    else:
        stage = "gpu-checkpoint" if how == "SIGINT-gpu" else "memory-read"
        p = start_paused(cuda_env, tmp_path, stage, "dump", "--fill-threads", "1", "-D", img, w.pid)
        assert (tmp_path / "run" / f"stopped-{w.pid}").exists()
        p.send_signal(getattr(signal, how.split("-")[0]))
        _, err = p.communicate(timeout=60)
        if how == "SIGKILL":
            r = recover_until_done(cuda_env, w.pid)
            assert r.returncode == 0, r.stderr
        else:
            assert p.returncode == 130, err
    assert cuda_state(cuda_env, w.pid) == 0, "its GPU back"
    time.sleep(0.2)
    assert proc_state(w.pid) == "T", "stopped, as before the dump"
    assert not list((tmp_path / "run").glob("stopped-*"))
    os.kill(w.pid, signal.SIGCONT)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]
    w.kill()


@pytest.mark.parametrize("damage", ["middle", "start"])
def test_a_damaged_memory_file_of_a_gpu_image_is_found_before_the_tree_runs(tmp_path, cuda_env, workloads, damage):
    """Checked before anything of the tree runs, the driver's restore
    thread included: exit 5, never the GPU failure that a damaged stack
    of that thread (the file starts with the top of a thread stack) made
    when the check ran beside the GPU restore; the tree killed, the image
    not touched."""
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    bulk = img / "kcheckpoint-bulk-read.img"
    good = bulk.read_bytes()
    mib = 1 << 20
    bad = bytearray(good)
    if damage == "middle":
        bad[len(bad) // 2] ^= 0x40
    else:  # the first two 1 MiB blocks swapped
        bad[:2 * mib] = good[mib:2 * mib] + good[:mib]
    bulk.write_bytes(bytes(bad))
    p = run_kc(cuda_env, "restore", "--fill-threads", "2", img, check=5)
    assert "checksum mismatch for member 'kcheckpoint-bulk-read.img'" in p.stderr, p.stderr
    assert "runs during the GPU restore" not in p.stderr, p.stderr
    assert wait_gone(w.pid), "no process runs with wrong memory"
    assert not list((tmp_path / "run").glob("filling-*")) and not list((tmp_path / "run").glob("held-*"))
    bulk.write_bytes(good)
    run_kc(cuda_env, "restore", "--fill-threads", "2", img, check=0)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]


@pytest.mark.parametrize("leaf", [0, 4])
def test_a_damaged_memory_file_kills_every_process_of_the_tree_not_only_those_it_fills(
        tmp_path, cuda_env, workloads, leaf):
    """The fill beside the GPU restore kills the processes it fills when a
    leaf fails its check; the children whose memory all stayed in CRIU's
    images (1 MiB each, below the bulk size) die in the rollback too, though
    the root's death has made them orphans: none is left stopped, holding
    the image's pids (every later restore failed with exit 9, hostile test).
    Leaf 0: the driver's copy (beside the GPU); leaf 4: the root's heap, first."""
    w = workloads(mb=1, backup_mb=4, children=2, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    tree = [w.pid] + [int(c) for t in Path(f"/proc/{w.pid}/task").iterdir()
                      for c in (t / "children").read_text().split()]
    assert len(tree) == 3, tree
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    for pid in tree:
        assert wait_gone(pid)
    index = [l.split() for l in (img / "kcheckpoint-bulk.txt").read_text().splitlines()]
    assert {(int(l[0]), l[3]) for l in index} == {(w.pid, "kcheckpoint-bulk-read.img")}, index
    bulk = img / "kcheckpoint-bulk-read.img"
    good = bulk.read_bytes()
    bad = bytearray(good)
    bad[leaf * (1 << 20) + 100] ^= 1
    bulk.write_bytes(bytes(bad))
    for _ in range(2):  # and again: no pid of the image is left taken
        p = run_kc(cuda_env, "restore", "--fill-threads", "2", img, check=5)
        assert "checksum mismatch for member 'kcheckpoint-bulk-read.img'" in p.stderr, p.stderr
        for pid in tree:
            assert wait_gone(pid), f"pid {pid} left behind: {proc_state(pid)}"
    bulk.write_bytes(good)
    run_kc(cuda_env, "restore", "--fill-threads", "2", img, check=0)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]


@pytest.mark.parametrize("change", ["cut", "rewritten", "fifo"])
def test_a_memory_file_changed_while_the_fill_runs_never_runs_the_tree(tmp_path, cuda_env, workloads, change):
    """The plain fill (a process without CUDA) reads each piece once into
    its own buffer and checks and writes it from there: a file cut short
    meanwhile is a damaged image (exit 5), not a SIGBUS that left the tree
    stopped, and a byte rewritten meanwhile fails the check (hostile test:
    read twice from a mapping, 1 restore in 12 ran with the rewritten byte).
    A FIFO put in its place before the fill opens it is refused at once
    (the restore waited for a writer, for ever)."""
    w = workloads(mb=64)
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    bulk = next(img.glob("kcheckpoint-bulk-*.img"))
    good = bulk.read_bytes()
    stage = "criu-restore" if change == "fifo" else "memory-fill"
    p = start_paused(cuda_env, tmp_path, stage, "restore", "--fill-threads", "2", img)
    if change == "cut":
        os.truncate(bulk, len(good) // 2)
    elif change == "fifo":
        bulk.unlink()
        os.mkfifo(bulk)
    else:
        with open(bulk, "r+b") as f:
            f.seek(len(good) // 3)
            f.write(bytes([good[len(good) // 3] ^ 1]))
    (tmp_path / f"paused-{stage}").unlink()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 5, err
    want = {"cut": "shorter than when the restore began", "rewritten": "checksum mismatch", "fifo": "cannot open"}
    assert want[change] in err, err
    assert wait_gone(w.pid), "no process runs with that memory"
    bulk.unlink()
    bulk.write_bytes(good)
    run_kc(cuda_env, "restore", "--fill-threads", "2", img, check=0)
    assert w.probe()["ok"] == "1"


# Run as a child subreaper (as containerd-shim is), so the restored root,
# killed from outside, is reaped and its pid can go to another process.
PID_REUSE = r"""
import ctypes, json, os, signal, subprocess, sys, time
kc, img, pid, mark = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
p = subprocess.Popen([kc, "restore", img], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
deadline = time.time() + 30
while not os.path.exists(mark):
    assert p.poll() is None and time.time() < deadline, p.communicate()
    time.sleep(0.01)
os.kill(pid, signal.SIGKILL)  # the OOM killer, say
while os.path.exists(f"/proc/{pid}"):
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
    time.sleep(0.01)
victim = None
for _ in range(50):  # another program gets the pid, with a child of its own
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    v = subprocess.Popen(["sh", "-c", "sleep 300 & exec sleep 300"], start_new_session=True)
    if v.pid == pid:
        victim = v
        break
    v.kill()
    v.wait()
time.sleep(0.2)
kids = [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()] if victim else []
os.unlink(mark)
out, err = p.communicate(timeout=120)
time.sleep(0.3)
res = {"rc": p.returncode, "err": err, "victim": bool(victim),
       "alive": victim is not None and victim.poll() is None,
       "kids_alive": [k for k in kids if os.path.exists(f"/proc/{k}") and
                      open(f"/proc/{k}/stat").read().split()[2] != "Z"]}
for k in kids:
    try:
        os.kill(k, signal.SIGKILL)
    except ProcessLookupError:
        pass
if victim:
    victim.kill()
print(json.dumps(res))
"""


def test_a_rollback_leaves_alone_another_process_that_took_the_roots_pid(tmp_path, cuda_env, workloads):
    """The restored root killed from outside during the fill and reaped by a
    subreaper frees its pid; the rollback then kills what CRIU restored, not
    the program that got that pid next, nor its children (hostile test:
    both were killed)."""
    w = workloads(mb=64)
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    mark = tmp_path / "paused-memory-fill"
    env = dict(cuda_env, KCHECKPOINT_TEST_PAUSE="memory-fill", KCHECKPOINT_TEST_PAUSE_FILE=str(mark))
    r = subprocess.run([sys.executable, "-c", PID_REUSE, str(KC), str(img), str(w.pid), str(mark)], env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["rc"] == 7 and f"pid {w.pid} of the restored tree died while its memory was filled" in res["err"], res
    assert res["victim"], "the pid went to the victim"
    assert res["alive"] and res["kids_alive"], res


def test_a_restore_thread_that_cannot_be_held_lets_the_tree_run_first(tmp_path, cuda_env, workloads):
    """Traced by another (a debugger, say): the restore goes on as after a
    plain criu restore, tree running, and says so."""
    w, before, p, helper = restore_paused_with_helper(tmp_path, cuda_env, workloads, "memory-fill")
    # a tracer of its own (a debugger's way: seized, every stop continued)
    # gets there before kcheckpoint's hold after the fill
    tracer = subprocess.Popen([sys.executable, "-c", TRACER, str(helper)], stdout=subprocess.PIPE, text=True)
    assert tracer.stdout.readline().strip() == "seized"
    try:
        (tmp_path / "paused-memory-fill").unlink()
        _, err = p.communicate(timeout=60)
    finally:
        tracer.kill()
        tracer.wait()
    assert p.returncode == 0, err
    assert "the tree runs during the GPU restore" in err and "hold-threads" not in err, err
    assert cuda_state(cuda_env, w.pid) == 0
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]


TRACER = """
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_CONT, PTRACE_SEIZE, WALL = 7, 0x4206, 0x40000000
tid = int(sys.argv[1])
if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
    sys.exit("seize failed: %d" % ctypes.get_errno())
print("seized", flush=True)
while True:
    try:
        _, st = os.waitpid(tid, WALL)
    except ChildProcessError:
        break
    if not os.WIFSTOPPED(st):
        break
    sig, event = os.WSTOPSIG(st), st >> 16
    stops = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTRAP)
    libc.ptrace(PTRACE_CONT, tid, None, None if event or sig in stops else sig)
"""


@pytest.mark.parametrize("fill", ["0", "1"], ids=["criu-images", "bulk"])
def test_a_cuda_process_stopped_when_dumped_comes_back_stopped_with_its_gpu(tmp_path, cuda_env, workloads, fill):
    """Its restore thread must run for the GPU restore (the fake refuses it
    stopped), with or without memory kept out of CRIU's images."""
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "--fill-threads", fill, "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    assert (img / "kcheckpoint-bulk.txt").exists() == (fill != "0")
    p = run_kc(cuda_env, "restore", img, check=0)
    assert "hold-threads" in p.stderr, p.stderr
    assert cuda_state(cuda_env, w.pid) == 0
    assert wait_state(w.pid, "T"), "stopped before, stopped after"
    for t in os.listdir(f"/proc/{w.pid}/task"):
        assert thread_field(w.pid, t, "TracerPid") == "0"
        assert int(thread_field(w.pid, t, "SigBlk"), 16) == 0
    os.kill(w.pid, signal.SIGCONT)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]


def test_recover_names_a_debugger_that_traces_the_tree(tmp_path, cuda_env, workloads):
    """A tracer that is not CRIU is named as what it is (hostile test: a
    debugger was called 'a CRIU still at work'); exit 9, nothing touched."""
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    tracer = subprocess.Popen([sys.executable, "-c", TRACER, str(w.pid)], stdout=subprocess.PIPE, text=True)
    try:
        assert tracer.stdout.readline().strip() == "seized"
        r = run_kc(cuda_env, "recover", w.pid, check=9)
        assert "traced by pid %d ('python" % tracer.pid in r.stderr, r.stderr
        assert "once it has let go" in r.stderr and "CRIU" not in r.stderr, r.stderr
    finally:
        tracer.kill()
        tracer.wait()
    assert_running_intact(cuda_env, w)
    w.kill()


def test_a_sigstop_sent_during_the_fill_does_not_fail_the_restore(tmp_path, cuda_env, workloads):
    """A SIGSTOP left pending for the restored tree (job control, a
    debugger): the held restore thread would take it and stay trapped, the
    driver's restore failing (hostile test: exit 6); it is swallowed."""
    w, before, p, helper = restore_paused_with_helper(tmp_path, cuda_env, workloads, "memory-fill")
    os.kill(w.pid, signal.SIGSTOP)
    (tmp_path / "paused-memory-fill").unlink()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "hold-threads" in err and "runs during the GPU restore" not in err, err
    assert cuda_state(cuda_env, w.pid) == 0
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]


def test_stop_marks_stay_for_recover_after_exit_10_and_go_when_a_dump_finds_it_running(tmp_path, cuda_env,
                                                                                     workloads):
    """Exit 10 says to run recover: the dump keeps its stop marks for it
    (hostile test: they went, and recover left the process running). And a
    mark a killed dump left goes with the next dump that finds the
    process running, so a late recover does not stop it."""
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")
    env = dict(cuda_env, KC_FAKE_CUDA_FAIL="restore:999")  # the rollback's GPU restore fails
    p = start_paused(env, tmp_path, "memory-read", "dump", "--fill-threads", "1", "-D", tmp_path / "img", w.pid)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 10, err
    mark = tmp_path / "run" / f"stopped-{w.pid}"
    assert mark.exists(), "kept for recover"
    r = recover_until_done(cuda_env, w.pid)
    assert r.returncode == 0, r.stderr
    assert cuda_state(cuda_env, w.pid) == 0
    time.sleep(0.2)
    assert proc_state(w.pid) == "T" and not mark.exists()

    # a mark a killed dump left (its start time), the process continued by
    # its user since: the next dump finds it running and removes the mark,
    # so a late recover leaves it running
    os.kill(w.pid, signal.SIGCONT)
    mark.write_text(Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()[19] + "\n")
    run_kc(cuda_env, "dump", "--leave-running", "--fill-threads", "1", "-D", tmp_path / "i2", w.pid, check=0)
    assert not mark.exists(), "the running process' old mark goes"
    run_kc(cuda_env, "recover", w.pid, check=0)
    time.sleep(0.2)
    assert proc_state(w.pid) in ("R", "S"), proc_state(w.pid)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]
    w.kill()


HOLDER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
tid = int(sys.argv[1])
if libc.ptrace(0x4206, tid, None, None) != 0:  # PTRACE_SEIZE, never continued
    sys.exit("seize failed: %d" % ctypes.get_errno())
if len(sys.argv) > 2:  # a running thread: PTRACE_INTERRUPT stops it
    libc.ptrace(0x4207, tid, None, None)
    os.waitpid(tid, 0x40000000)
print("seized", flush=True)
time.sleep(600)
"""


def test_the_driver_is_asked_about_a_stopped_process_through_its_restore_thread(tmp_path, cuda_env, workloads):
    """The driver answers for a CUDA process through the process' restore
    thread and waits for it as long as it takes (run 36: get_state, lock
    and restore of a SIGSTOPped process never returned on driver 580; the
    fake waits as long).  state and dump run that thread alone to ask its
    state; a lock or checkpoint needs the whole process running (run 37),
    so the dump continues it for its GPU stage; stopped after each.  Where
    another tracer keeps that thread stopped, state says 'unknown' and dump
    refuses (exit 9), nothing waits."""
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    helper = min(int(t) for t in os.listdir(f"/proc/{w.pid}/task") if int(t) != w.pid)
    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")

    def state():
        return json.loads(run_kc(cuda_env, "state", "--json", w.pid, check=0, timeout=30).stdout)["processes"][0]

    def still_stopped():
        time.sleep(0.1)
        for t in (w.pid, helper):
            assert thread_field(w.pid, t, "State") == "T", t
            assert thread_field(w.pid, t, "TracerPid") == "0", t
            assert int(thread_field(w.pid, t, "SigBlk"), 16) == 0, t
        assert not list((tmp_path / "run").glob("held-*"))

    st = state()
    assert (st["state"], st["process"], st["restore_tid"]) == ("running", "stopped", helper), st
    still_stopped()

    # dumped stopped, left running: asked, locked and checkpointed through
    # that thread alone, GPU back, stopped as before
    run_kc(cuda_env, "dump", "--leave-running", "--fill-threads", "1", "-D", tmp_path / "img", w.pid, check=0,
           timeout=60)
    assert cuda_state(cuda_env, w.pid) == 0
    still_stopped()

    # a debugger that keeps the restore thread: nothing can ask the driver
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(helper)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "seized"
        st = state()
        assert (st["state"], st["process"]) == ("unknown", "stopped"), st
        r = run_kc(cuda_env, "dump", "--fill-threads", "1", "-D", tmp_path / "img2", w.pid, check=9, timeout=60)
        assert f"its thread {helper} traced by pid {holder.pid}" in r.stderr, r.stderr
        assert cuda_state(cuda_env, w.pid) == 0
    finally:
        holder.kill()
        holder.wait()
    still_stopped()
    os.kill(w.pid, signal.SIGCONT)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]
    w.kill()


def test_holds_survive_what_users_and_debuggers_do_meanwhile(tmp_path, cuda_env, workloads):
    """Hostile test of the holds: a signal waiting on a stopped process is
    not delivered by its dump (a SIGCONT did: the dump killed it); a
    SIGSTOP sent while the driver works does not leave it waiting forever;
    a restore thread stopped by a debugger while the process runs is
    'unknown' to state, and dump and recover refuse (exit 9) rather than
    wait; a mask a killed state left blocked is put back by the next dump."""
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    helper = min(int(t) for t in os.listdir(f"/proc/{w.pid}/task") if int(t) != w.pid)

    def sigset(tid, field):
        return int(thread_field(w.pid, tid, field), 16)

    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")
    os.kill(w.pid, signal.SIGUSR1)  # waits while the process is stopped (a SIGTERM did the same)
    run_kc(cuda_env, "dump", "--leave-running", "--fill-threads", "1", "-D", tmp_path / "img", w.pid, check=0,
           timeout=60)
    time.sleep(0.1)
    assert proc_state(w.pid) == "T", "alive and stopped"
    assert sigset(w.pid, "ShdPnd") & (1 << (signal.SIGUSR1 - 1)), "its signal still waits"
    assert cuda_state(cuda_env, w.pid) == 0

    # a SIGSTOP while the driver checkpoints (all threads held) or answers
    for op, cmd in (("checkpoint", ["dump", "--leave-running", "--fill-threads", "1", "-D", tmp_path / "img2"]),
                    ("get_state", ["state"])):
        env = dict(cuda_env, KC_FAKE_CUDA_DELAY_MS=f"{op}:1500")
        p = subprocess.Popen([str(KC), *map(str, cmd), str(w.pid)], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)
        os.kill(w.pid, signal.SIGSTOP)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, (op, err)
        time.sleep(0.1)
        assert proc_state(w.pid) == "T" and thread_field(w.pid, helper, "State") == "T", op
        assert sigset(helper, "SigBlk") == 0 and thread_field(w.pid, helper, "TracerPid") == "0", op

    # state SIGKILLed while it holds the restore thread, the process then
    # continued by its user: the next dump puts the thread's mask back
    env = dict(cuda_env, KC_FAKE_CUDA_DELAY_MS="get_state:3000")
    p = subprocess.Popen([str(KC), "state", str(w.pid)], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not list((tmp_path / "run").glob("held-*")):
        assert time.time() < deadline, "no hold"
        time.sleep(0.02)
    p.kill()
    p.wait()
    assert sigset(helper, "SigBlk") != 0
    os.kill(w.pid, signal.SIGCONT)
    time.sleep(0.1)
    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")
    run_kc(cuda_env, "dump", "--leave-running", "--fill-threads", "1", "-D", tmp_path / "img3", w.pid, check=0,
           timeout=60)
    assert sigset(helper, "SigBlk") == 0, "its own mask back"
    assert not list((tmp_path / "run").glob("held-*"))
    os.kill(w.pid, signal.SIGKILL)
    w.reap()

    # a debugger stops the restore thread of a running process
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True, name="w2")
    helper = min(int(t) for t in os.listdir(f"/proc/{w.pid}/task") if int(t) != w.pid)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(helper), "interrupt"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "seized"
        st = json.loads(run_kc(cuda_env, "state", "--json", w.pid, check=0, timeout=30).stdout)["processes"][0]
        assert st["state"] == "unknown", st
        run_kc(cuda_env, "dump", "--fill-threads", "1", "-D", tmp_path / "img4", w.pid, check=9, timeout=30)
        run_kc(cuda_env, "recover", w.pid, check=9, timeout=30)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert_running_intact(cuda_env, w)
    w.kill()


def test_recover_of_a_stopped_process_keeps_it_stopped_with_its_signals(tmp_path, cuda_env, workloads):
    """A dump of a process its user stopped, SIGKILLed after CRIU: recover
    restores its GPU through the restore thread alone and leaves it
    stopped, its waiting signal still waiting (a SIGCONT delivered it: a
    SIGTERM killed the process, hostile test); a SIGSTOP sent while the
    driver restores does not leave recover waiting for ever."""
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True)
    before = w.probe()
    helper = min(int(t) for t in os.listdir(f"/proc/{w.pid}/task") if int(t) != w.pid)
    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")
    os.kill(w.pid, signal.SIGUSR1)
    for n, stage in enumerate(["memory-read", "criu-dump"]):
        p = start_paused(cuda_env, tmp_path, stage, "dump", "--fill-threads", "1", "-D", tmp_path / f"img{n}", w.pid)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        env = dict(cuda_env, KC_FAKE_CUDA_DELAY_MS="restore:1500")
        r = subprocess.Popen([str(KC), "recover", str(w.pid)], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)
        os.kill(w.pid, signal.SIGSTOP)
        out, err = r.communicate(timeout=60)
        if r.returncode == 9:  # the killed dump's CRIU still at work
            assert recover_until_done(cuda_env, w.pid).returncode == 0
        else:
            assert r.returncode == 0, (stage, err)
        assert cuda_state(cuda_env, w.pid) == 0, stage
        time.sleep(0.1)
        assert proc_state(w.pid) == "T", stage
        assert int(thread_field(w.pid, w.pid, "ShdPnd"), 16) & (1 << (signal.SIGUSR1 - 1)), stage
        for t in (w.pid, helper):
            assert thread_field(w.pid, t, "TracerPid") == "0" and int(thread_field(w.pid, t, "SigBlk"), 16) == 0
        assert not list((tmp_path / "run").glob("stopped-*")) and not list((tmp_path / "run").glob("held-*"))
    os.kill(w.pid, signal.SIGCONT)
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]
    w.kill()


def test_threads_created_while_a_stopped_process_is_held_get_their_own_mask(tmp_path, cuda_env, workloads):
    """For its GPU stage a stopped process runs with its signals blocked;
    a thread it creates meanwhile inherits that mask (hostile test: kept
    for good, in the image too, and a new thread joining the group stop
    left the driver waiting): they are traced and held too, and get their
    creator's own mask back."""
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True, spawn_ms=20)
    before = w.probe()
    os.kill(w.pid, signal.SIGSTOP)
    assert wait_state(w.pid, "T")
    n0 = len(os.listdir(f"/proc/{w.pid}/task"))
    env = dict(cuda_env, KC_FAKE_CUDA_DELAY_MS="checkpoint:600")
    run_kc(env, "dump", "--leave-running", "--fill-threads", "1", "-D", tmp_path / "img", w.pid, check=0, timeout=60)
    time.sleep(0.1)
    tids = os.listdir(f"/proc/{w.pid}/task")
    assert len(tids) > n0 + 5, "threads were created during the GPU stage"
    for t in tids:
        assert thread_field(w.pid, t, "State") == "T", t
        assert thread_field(w.pid, t, "TracerPid") == "0", t
        assert int(thread_field(w.pid, t, "SigBlk"), 16) == 0, t
    assert not list((tmp_path / "run").glob("held-*")) and not list((tmp_path / "run").glob("stopped-*"))
    os.kill(w.pid, signal.SIGCONT)
    assert_running_intact(cuda_env, w)
    # and so once it runs: a thread let go inside pthread_create puts
    # back the mask glibc saved there (hostile test: a mask set through
    # ptrace came back that way, blocked, in every thread it made after)
    time.sleep(0.3)
    for t in os.listdir(f"/proc/{w.pid}/task"):
        assert int(thread_field(w.pid, t, "SigBlk"), 16) == 0, t
    assert w.probe()["checksum"] == before["checksum"]
    w.kill()




def test_a_stranger_on_the_fill_socket_holds_nothing_up(tmp_path, cuda_env, workloads):
    """The socket our CRIU sends its userfaultfds to is abstract (anyone may
    connect): a peer that connects and sends nothing, or a userfaultfd of
    its own, is dropped at once by its credentials, and the restore goes on."""
    import socket
    w = workloads(mb=32, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"], helper_thread=True, backup_mb=64)
    before = w.probe()
    run_kc(cuda_env, "dump", "--fill-threads", "2", "-D", tmp_path / "img", w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    p = start_paused(cuda_env, tmp_path, "criu-restore", "restore", "--fill-threads", "2", tmp_path / "img")
    name = next(l.split()[-1] for l in Path("/proc/net/unix").read_text().splitlines()
                if f"@kcheckpoint-uffd-{p.pid}-" in l)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect("\0" + name[1:])
    noisy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    noisy.connect("\0" + name[1:])
    r, wfd = os.pipe()
    try:  # dropped already, as it should be, or dropped unread
        noisy.sendmsg([w.pid.to_bytes(4, "little")], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, r.to_bytes(4, "little"))])
    except (BrokenPipeError, ConnectionResetError):
        pass
    (tmp_path / "paused-criu-restore").unlink()
    out, err = p.communicate(timeout=60)
    silent.close()
    noisy.close()
    assert p.returncode == 0, err
    assert_running_intact(cuda_env, w)
    assert w.probe()["checksum"] == before["checksum"]
