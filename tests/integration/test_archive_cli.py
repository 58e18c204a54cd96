# SPDX-License-Identifier: Apache-2.0
"""dump -o -> restore <archive> with real CRIU; the archive's safety from the CLI."""
import json
import os
import signal
import subprocess
import time

from conftest import KC, alive, cuda_state, proc_state, run_kc, wait_gone


def test_archive_roundtrip_and_inspect(tmp_path, kc_env, workloads):
    w = workloads(mb=128, seed=5)
    before = w.probe()
    out = tmp_path / "ckpt.tar.zst"
    p = run_kc(kc_env, "dump", "-o", out, w.pid, check=0)
    assert "archive" in p.stderr
    w.reap()
    assert out.exists() and wait_gone(w.pid)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("kcheckpoint-")], "work dir removed"
    doc = json.loads(run_kc(kc_env, "inspect", "--json", "--verify", out, check=0).stdout)
    assert doc["root_pid"] == w.pid and doc["verified"] is True
    assert any(m["path"].startswith("pages-") for m in doc["members"])
    assert doc["archive_bytes"] == out.stat().st_size
    p = run_kc(kc_env, "restore", "--json", "-q", out, check=0)
    stages = [s["stage"] for s in json.loads(p.stdout)["stages"]]
    assert stages[0] == "unpack" and "criu-restore" in stages
    after = w.probe()
    assert after["checksum"] == before["checksum"] and after["ok"] == "1"
    assert int(after["counter"]) >= int(before["counter"])


def test_corrupt_archive_is_refused_and_nothing_runs(tmp_path, kc_env, workloads):
    w = workloads(mb=16)
    out = tmp_path / "ckpt.tar"
    run_kc(kc_env, "dump", "--compress", "none", "-o", out, w.pid, check=0)
    w.reap()
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the page image
    out.write_bytes(bytes(data))
    p = run_kc(kc_env, "inspect", "--verify", out, check=5)
    assert "pages-" in p.stderr or "checksum" in p.stderr
    p = run_kc(kc_env, "restore", out, check=5)
    assert len(p.stderr.strip().splitlines()) == 1
    assert not alive(w.pid), "nothing restored from a corrupt archive"
    assert not [f for f in os.listdir(tmp_path) if f.startswith("kcheckpoint-")], "no half extraction left"


def test_failed_archive_write_rolls_back(tmp_path, cuda_env, workloads):
    """A disk that fills up while archiving: no archive, the process runs on."""
    w = workloads(mb=64, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"])
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        p = run_kc(cuda_env, "dump", "--compress", "none", "-o", small / "c.tar", w.pid)
        assert p.returncode == 5, p.stderr  # "no room", as the free-space checks say it
        assert "no space left" in p.stderr, p.stderr
        assert os.listdir(small) == [], "no archive and no temporary file"
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert proc_state(w.pid) in ("S", "R")
    assert cuda_state(cuda_env, w.pid) == 0
    w.probe()


def test_existing_output_is_not_overwritten(tmp_path, kc_env, workloads):
    w = workloads(mb=8)
    out = tmp_path / "ckpt.tar.zst"
    out.write_text("precious")
    run_kc(kc_env, "dump", "-o", out, w.pid, check=2)
    assert out.read_text() == "precious" and alive(w.pid)


def test_archive_through_a_pipe(tmp_path, kc_env, workloads):
    """Issue 12: `dump -o - PID | restore -`, as over ssh; each end says
    no to a terminal and to --json on the archive's stdout."""
    w = workloads(mb=64, seed=5)
    before = w.probe()
    dump = subprocess.Popen([str(KC), "dump", "-o", "-", str(w.pid)], env=kc_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    restore = subprocess.Popen([str(KC), "restore", "-"], env=kc_env, stdin=dump.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dump.stdout.close()
    derr = dump.stderr.read().decode()
    dump.wait(timeout=120)
    w.reap()  # our child: its pid is free once reaped
    out, rerr = restore.communicate(timeout=120)
    assert dump.returncode == 0, derr
    assert "to 'stdout'" in derr and "archive-send" in derr, derr
    assert restore.returncode == 0, rerr
    assert int(out.strip()) == w.pid
    after = w.probe()
    assert after["ok"] == "1" and after["checksum"] == before["checksum"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith("kcheckpoint-")], os.listdir(tmp_path)
    p = run_kc(kc_env, "dump", "--json", "-o", "-", w.pid, check=2)
    assert "does not go with '--json'" in p.stderr
    # a reader that goes away: the dump is rolled back, the process runs on
    dump = subprocess.Popen([str(KC), "dump", "-o", "-", str(w.pid)], env=kc_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dump.stdout.close()
    dump.wait(timeout=120)
    assert dump.returncode != 0
    assert w.probe()["ok"] == "1"


def test_archive_to_stdout_refuses_a_closed_stdout_and_hears_sigint(tmp_path, kc_env, workloads):
    """Hostile test: with stdout closed the archive went into the next file
    opened and the process was ended; ^C while the reader stalls was
    ignored.  Both now keep the process running."""
    w = workloads(mb=64, seed=3)
    p = subprocess.run(f"exec '{KC}' dump -o - {w.pid} >&-", shell=True, env=kc_env, capture_output=True,
                       text=True)
    assert p.returncode == 2 and "needs stdout open on a pipe" in p.stderr, p.stderr
    assert w.probe()["ok"] == "1"
    r, wfd = os.pipe()  # nobody reads: the send blocks once the pipe is full
    dump = subprocess.Popen([str(KC), "dump", "-o", "-", str(w.pid)], env=kc_env, stdin=subprocess.DEVNULL,
                            stdout=wfd, stderr=subprocess.PIPE, text=True)
    os.close(wfd)
    deadline = time.time() + 60
    while proc_state(w.pid) not in ("T", "t") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # into archive-send, blocked on the full pipe
    dump.send_signal(signal.SIGINT)
    _, err = dump.communicate(timeout=60)
    os.close(r)
    assert dump.returncode == 130, err
    assert w.probe()["ok"] == "1", "rolled back: still running"
