# SPDX-License-Identifier: Apache-2.0
"""Bad input: one clear line on stderr, the documented exit code, nothing changed."""
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import KC, alive, proc_state, run_kc

USAGE, NOENT, PERM, IMAGE = 2, 3, 4, 5


def one_error_line(p, *words):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("kcheckpoint: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert not lines[0].endswith("."), "git style: no full stop"


def tree_digest(d):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(d)):
        dirs.sort()
        for f in sorted(files):
            p = Path(root, f)
            h.update(str(p.relative_to(d)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_missing_pid(kc_env, tmp_path):
    p = run_kc(kc_env, "dump", "-D", tmp_path / "img", 4194000, check=NOENT)
    one_error_line(p, "4194000")
    assert not (tmp_path / "img").exists() or not os.listdir(tmp_path / "img")


def test_pid_1(kc_env, tmp_path):
    one_error_line(run_kc(kc_env, "dump", "-D", tmp_path / "img", 1, check=USAGE), "pid 1")


def test_own_parent(kc_env, tmp_path):
    one_error_line(run_kc(kc_env, "dump", "-D", tmp_path / "img", os.getpid(), check=USAGE), "parents")


@pytest.mark.parametrize("args,words", [
    (["dump"], ["needs <pid>"]),
    (["dump", "abc"], ["'abc' is not a pid"]),
    (["dump", "12", "13"], ["'13'"]),
    (["dump", "--bogus", "12"], ["unknown option '--bogus'"]),
    (["dump", "--lock-timeout", "x", "12"], ["--lock-timeout"]),
    (["dump", "-D"], ["needs an argument"]),
    (["dump", "--compress", "gzip", "12"], ["'--compress'", "'gzip'"]),
    (["dump", "-D", "/tmp/x", "-o", "/tmp/y", "12"], ["--images-dir"]),
    (["restore"], ["needs <image>"]),
    (["restore", "--gpu-map", "nonsense", "/tmp"], ["--gpu-map"]),
    (["nosuchcommand"], ["'nosuchcommand' is not a command"]),
])
def test_usage_errors(kc_env, args, words):
    one_error_line(run_kc(kc_env, *args, check=USAGE), *words)


def test_not_root(kc_env, tmp_path, workloads):
    w = workloads(mb=8)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(KC), "dump",
                        "-D", str(tmp_path / "img"), str(w.pid)], env=kc_env, capture_output=True, text=True)
    assert p.returncode == PERM, p.stderr
    one_error_line(p, "root")
    assert alive(w.pid)


def test_unwritable_images_dir(kc_env, tmp_path, workloads):
    w = workloads(mb=8)
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        p = run_kc(kc_env, "dump", "-D", ro / "img", w.pid, check=PERM)
        one_error_line(p, "read-only")
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert proc_state(w.pid) in ("S", "R")


def test_nonempty_images_dir(kc_env, tmp_path, workloads):
    w = workloads(mb=8)
    d = tmp_path / "img"
    d.mkdir()
    (d / "precious").write_text("keep me")
    one_error_line(run_kc(kc_env, "dump", "-D", d, w.pid, check=USAGE), "not empty")
    assert (d / "precious").read_text() == "keep me"
    assert alive(w.pid)


@pytest.fixture
def dumped(tmp_path, kc_env, workloads):
    """A real image dir, and the workload reaped so its pid is free."""
    w = workloads(mb=8)
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    return img


def test_images_dir_from_another_tool(kc_env, tmp_path, dumped):
    other = tmp_path / "criu-only"
    shutil.copytree(dumped, other)
    (other / "kcheckpoint.json").unlink()
    digest = tree_digest(other)
    one_error_line(run_kc(kc_env, "restore", other, check=IMAGE), "is not a kcheckpoint image")
    assert tree_digest(other) == digest


@pytest.mark.parametrize("mutate,words", [
    (lambda m: "garbage{", ["not valid JSON"]),
    (lambda m: json.dumps(dict(m, tool="podman")), ["another tool"]),
    (lambda m: json.dumps(dict(m, format=99)), ["newer"]),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "root_pid"}), ["'root_pid'"]),
    (lambda m: json.dumps(dict(m, processes="x")), ["'processes'"]),
])
def test_bad_manifest(kc_env, dumped, mutate, words):
    mf = dumped / "kcheckpoint.json"
    mf.write_text(mutate(json.loads(mf.read_text())))
    digest = tree_digest(dumped)
    p = run_kc(kc_env, "restore", dumped, check=IMAGE)
    one_error_line(p, "malformed manifest", *words)
    assert tree_digest(dumped) == digest


def test_missing_image(kc_env, tmp_path):
    one_error_line(run_kc(kc_env, "restore", tmp_path / "nope", check=NOENT), "nope")


def test_inspect_dir(kc_env, dumped):
    p = run_kc(kc_env, "inspect", dumped, check=0)
    assert "root pid:" in p.stdout
    doc = json.loads(run_kc(kc_env, "inspect", "--json", dumped, check=0).stdout)
    assert doc["tool"] == "kcheckpoint"


@pytest.mark.parametrize("opt, says", [
    ("-D/tmp", "use --images-dir"),
    ("--leave-running", "use --leave-running"),
    ("--tcp-close", "use --tcp-close"),
    ("-v4", "kcheckpoint sets that CRIU option itself"),
    ("ext-unix-sk", "takes a CRIU option"),
])
def test_criu_opt_that_kcheckpoint_owns_is_refused(kc_env, opt, says):
    p = run_kc(kc_env, "dump", "-D", "/nonexistent/img", f"--criu-opt={opt}", "4242", check=2)
    assert says in p.stderr, p.stderr


def test_criu_opt_criu_rejects_is_named(tmp_path, kc_env, workloads):
    w = workloads(mb=8)
    p = run_kc(kc_env, "dump", "-D", tmp_path / "img", "--criu-opt=--bogus", w.pid, check=7)
    assert "unrecognized option '--bogus'" in p.stderr and "check --criu-opt" in p.stderr, p.stderr
    assert w.probe()  # rolled back: still running and answering


def test_json_failure_is_json_too(kc_env):
    p = run_kc(kc_env, "dump", "--json", "-D", "/nonexistent/img", "999999", check=3)
    doc = json.loads(p.stdout)
    assert doc == {"schema_version": 1,
                   "error": {"command": "dump", "message": "no process with pid 999999", "exit_code": 3}}, doc
    assert list(doc)[0] == "schema_version", "first, where a reader looks"
    assert "no process with pid 999999" in p.stderr
    p = run_kc(kc_env, "restore", "--json", "/nonexistent/archive", check=3)
    assert json.loads(p.stdout)["error"]["exit_code"] == 3
    # without --json stdout stays empty
    assert run_kc(kc_env, "dump", "-D", "/nonexistent/img", "999999", check=3).stdout == ""


def test_targets_refused_up_front(kc_env, workloads, tmp_path):
    """Issue 11, item 17: kernel threads and traced processes are refused
    before anything is frozen; an archive name too long to publish is
    refused before the dump, not after it."""
    kthread = next(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) > 2 and
                   os.path.exists(f"/proc/{p}/stat") and
                   int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == 2)
    p = run_kc(kc_env, "dump", "-D", tmp_path / "k", kthread, check=2)
    assert "is a kernel thread" in p.stderr, p.stderr
    w = workloads(mb=8)
    p = run_kc(kc_env, "dump", "-o", tmp_path / ("x" * 240 + ".tar.zst"), w.pid, check=2)
    assert "name is too long" in p.stderr, p.stderr
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())
    assert w.probe()["ok"] == "1"


def test_traced_target_is_refused_up_front(kc_env, workloads, tmp_path):
    w = workloads(mb=8)
    tracer = subprocess.Popen(["python3", "-c", f"""
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(0x4206, {w.pid}, 0, 0) != 0:
    sys.exit(1)
open("{tmp_path}/seized", "w").close()
time.sleep(30)
"""], stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not (tmp_path / "seized").exists():
            assert time.time() < deadline
            time.sleep(0.02)
        p = run_kc(kc_env, "dump", "-D", tmp_path / "img", w.pid, check=9)
        assert f"is being traced by pid {tracer.pid}" in p.stderr, p.stderr
    finally:
        tracer.kill()
        tracer.wait()
    assert w.probe()["ok"] == "1"


def test_no_room_to_unpack_is_said_before_unpacking(tmp_path, kc_env, workloads):
    """Issue 11, item 16: the manifest knows how much an archive unpacks to."""
    w = workloads(mb=64)
    archive = tmp_path / "a.tar.zst"
    # --fill-threads 0: all memory in CRIU's images, which are unpacked
    run_kc(kc_env, "dump", "--fill-threads", "0", "-o", archive, w.pid, check=0)
    w.reap()
    w2 = workloads(mb=64, name="w2")
    streamed = tmp_path / "b.tar.zst"
    run_kc(kc_env, "dump", "-o", streamed, w2.pid, check=0)
    w2.reap()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "kc-test-small", str(small)], check=True)
    try:
        p = run_kc(kc_env, "restore", "--work-dir", small, archive, check=5)
        assert "unpacking needs" in p.stderr and "free" in p.stderr, p.stderr
        assert not list(small.iterdir()), "nothing was written"
        # the large memory of an archive goes from it into the process, not
        # into the work dir: 8 MiB of room do for 64 MiB of memory
        run_kc(kc_env, "restore", "--work-dir", small, streamed, check=0)
        assert w2.probe()["ok"] == "1"
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_odd_names_and_paths_stay_out_of_tables_and_json(tmp_path, kc_env):
    """Issue 11, item 10: a process names itself (terminal escapes, invalid
    UTF-8) and paths are any bytes; tables print neither raw, JSON stays
    valid UTF-8."""
    name = b"\x1b[31mevil\xff"
    prog = subprocess.Popen(["python3", "-c", f"""
import ctypes, time
ctypes.CDLL(None).prctl(15, ctypes.c_char_p({name!r}), 0, 0, 0)
open("{tmp_path}/named", "w").close()
time.sleep(30)
"""], stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 10
        while not (tmp_path / "named").exists():
            assert time.time() < deadline
            time.sleep(0.02)
        img = os.fsencode(tmp_path) + b"/img-\xfe"
        p = subprocess.run([str(KC), "dump", "--json", "--leave-running", "-D", img, str(prog.pid)], env=kc_env,
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout.decode("utf-8"))  # strict: valid UTF-8
        comm = next(q["comm"] for q in doc["processes"] if q["pid"] == prog.pid)
        assert "\x1b" not in comm and "evil" in comm, comm
        assert "\x1b" not in p.stderr.decode("utf-8", "replace")
        state = run_kc(kc_env, "state", prog.pid, check=0)
        assert "\x1b" not in state.stdout and "evil" in state.stdout
    finally:
        prog.kill()
        prog.wait()


def test_no_room_to_dump_is_said_before_anything_is_frozen(tmp_path, kc_env, workloads):
    """Issue 11: an images dir needs about the tree's memory; refused up front."""
    w = workloads(mb=64)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "kc-test-small", str(small)], check=True)
    try:
        p = run_kc(kc_env, "dump", "-D", small / "img", w.pid, check=5)
        assert "nothing was dumped" in p.stderr and "free" in p.stderr, p.stderr
        assert w.probe()["ok"] == "1"
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_progress_modes_and_quiet(tmp_path, cuda_env, workloads):
    """Issue 12: --progress json gives one JSON line a second per long
    stage; -q leaves stderr empty; --progress tty rewrites one line."""
    w = workloads(mb=8, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    cuda_env["KC_FAKE_CUDA_DELAY_MS"] = "checkpoint:2300"
    p = run_kc(cuda_env, "dump", "--leave-running", "--progress", "json", "-D", tmp_path / "a", w.pid, check=0)
    lines = [json.loads(l) for l in p.stderr.splitlines() if l.startswith("{")]
    gpu = [l for l in lines if l["stage"] == "gpu-checkpoint"]
    assert len(gpu) >= 2, p.stderr
    assert gpu[0]["schema_version"] == 1 and gpu[0]["bytes"] is None and gpu[0]["percent"] is None
    assert gpu[-1]["seconds"] > gpu[0]["seconds"]
    p = run_kc(cuda_env, "dump", "-q", "--leave-running", "--progress", "json", "-D", tmp_path / "b", w.pid, check=0)
    assert p.stderr == "", p.stderr
    p = run_kc(cuda_env, "dump", "--leave-running", "--progress", "tty", "-D", tmp_path / "c", w.pid, check=0)
    assert "\x1b[Kgpu-checkpoint  1." in p.stderr, repr(p.stderr)  # text mode reads \r as \n
    p = run_kc(cuda_env, "dump", "--progress", "sometimes", "-D", tmp_path / "d", w.pid, check=2)
    assert "'--progress' is auto, tty, json or none" in p.stderr


def test_restore_without_criu_says_so_before_unpacking(tmp_path, kc_env, workloads):
    """Issue 12: no CRIU is found before a large archive is unpacked."""
    w = workloads(mb=16)
    archive = tmp_path / "a.tar.zst"
    run_kc(kc_env, "dump", "-o", archive, w.pid, check=0)
    w.reap()
    work = tmp_path / "work"
    work.mkdir()
    p = run_kc(kc_env, "restore", "--criu", tmp_path / "no-criu", "--work-dir", work, archive, check=3)
    assert "CRIU: cannot run" in p.stderr, p.stderr
    assert not list(work.iterdir()), "nothing was unpacked"
