# SPDX-License-Identifier: Apache-2.0
"""Memory kept out of CRIU's images and filled by kcheckpoint with many threads.

dump moves runs of at least 4 MiB of private memory out of CRIU's page
images (src/backend/criu_bulk.c); restore has CRIU leave the tree stopped,
writes those runs back through /proc/<pid>/mem (src/core/bulk_fill.c), then
lets it run.  Real CRIU, real processes; contents checked by the process
itself, hashing its own memory.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KC, SRC, alive, cuda_state, kill_all, reap, run_kc, wait_gone

LAYOUTS = SRC / "tests" / "workload" / "memory_layouts.py"


class Layouts:
    def __init__(self, tmp):
        self.dir = tmp / "mem"
        self.dir.mkdir()
        with open(tmp / "mem.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(LAYOUTS), str(self.dir)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.time() + 30
        while not (self.dir / "ready").exists():
            assert time.time() < deadline and self.proc.poll() is None, (tmp / "mem.log").read_text()
            time.sleep(0.05)
        self.regions = [l.split() for l in (self.dir / "ready").read_text().splitlines()]

    def sums(self):
        """Asks the process to hash its regions now."""
        (self.dir / "sums").unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.time() + 20
        while not (self.dir / "sums").exists():
            assert time.time() < deadline, "no answer to SIGUSR1"
            time.sleep(0.02)
        return dict(l.split() for l in (self.dir / "sums").read_text().splitlines())

    def perms(self):
        maps = Path(f"/proc/{self.pid}/maps").read_text().splitlines()
        out = {}
        for name, addr, length, _ in self.regions:
            start = int(addr, 16)
            for l in maps:
                lo, hi = (int(x, 16) for x in l.split()[0].split("-"))
                if lo <= start < hi:
                    out[name] = l.split()[1]
        return out

    def rss_kib(self, name):
        """Rss of the mapping that holds region name, from smaps."""
        start = int(next(a for n, a, _, _ in self.regions if n == name), 16)
        inside = False
        for l in Path(f"/proc/{self.pid}/smaps").read_text().splitlines():
            if "-" in l.split()[0] and not l.startswith(("Rss", "Size")) and l[0] in "0123456789abcdef":
                lo, hi = (int(x, 16) for x in l.split()[0].split("-"))
                inside = lo <= start < hi
            elif inside and l.startswith("Rss:"):
                return int(l.split()[1])
        raise AssertionError(f"no mapping holds {name}")

    def smaps_field(self, name, field):
        """A field (VmFlags, AnonHugePages, ...) of the mapping that holds region name."""
        start = int(next(a for n, a, _, _ in self.regions if n == name), 16)
        inside = False
        for l in Path(f"/proc/{self.pid}/smaps").read_text().splitlines():
            head = l.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= start < hi
            elif inside and l.startswith(field + ":"):
                return l.split(":", 1)[1].split()
        raise AssertionError(f"no mapping holds {name}")

    def kill(self):
        kill_all(self.pid)
        reap(self.proc)


@pytest.fixture
def layouts(tmp_path):
    started = []

    def start():
        w = Layouts(tmp_path)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def bulk_index(img):
    return [l.split() for l in (img / "kcheckpoint-bulk.txt").read_text().splitlines()]


def test_every_memory_shape_comes_back(tmp_path, kc_env, layouts):
    w = layouts()
    before, perms = w.sums(), w.perms()
    assert perms == {n: p for n, _, _, p in w.regions}, perms
    zero_rss = w.rss_kib("zero-read")
    img = tmp_path / "img"
    # an explicit thread count reads even on 2 cores (the default reads from 4)
    run_kc(kc_env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    w.proc.wait(timeout=10)
    assert wait_gone(w.pid)

    # the large private runs left CRIU's images; shared memory did not.
    # Anonymous ones CRIU (patches/criu/0001-*) did not even read: kcheckpoint
    # did; the copy-on-write pages of the file map came out of CRIU's pages
    idx = bulk_index(img)
    files = {f for _, _, _, f, _ in idx}
    assert "kcheckpoint-bulk-read.img" in files and len(files) == 2, idx
    assert not (img / "kcheckpoint-skipped.txt").exists()
    moved = sum(int(b) for _, _, b, _, _ in idx)
    assert moved >= 40 << 20, idx
    assert json.loads((img / "kcheckpoint.json").read_text())["format"] == 2
    pages = sum(p.stat().st_size for p in img.glob("pages-*.img"))
    assert pages < moved, (pages, moved)
    # nothing held twice: a bulk file is at most twice what the index uses of it
    for f in files:
        used = sum(int(b) for _, _, b, g, _ in idx if g == f)
        assert (img / f).stat().st_size <= 2 * used, (f, (img / f).stat().st_size, used)

    p = run_kc(kc_env, "restore", "--fill-threads", "3", img, check=0)
    assert "memory-fill" in p.stderr
    assert w.sums() == before, "every region reads as it did before the dump"
    assert w.perms() == perms, "and keeps its protection"
    # pages only ever read were the zero page: not data, not made memory
    assert w.rss_kib("zero-read") <= zero_rss + 64, (zero_rss, w.rss_kib("zero-read"))


def private_anon_vmas(pid):
    """(start, end, hg) of each private anonymous mapping, from smaps."""
    out, cur = [], None
    for l in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        f = l.split()
        if "-" in f[0] and not f[0].endswith(":"):
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            anon = f[1].endswith("p") and (len(f) < 6 or f[5] == "[heap]")
            cur = [lo, hi] if anon else None
        elif cur is not None and f[0] == "VmFlags:":
            out.append((cur[0], cur[1], "hg" in f[1:]))
    return out


@pytest.mark.parametrize("mode,flag,cuda,advised", [
    ("madvise", [], True, True),
    ("madvise", ["--no-fill-huge"], True, False),
    ("always", [], True, False),  # huge without the advice
    ("madvise", [], False, False),  # no GPU to restore: the fill alone is faster in small pages
])
def test_filled_mappings_of_gpu_processes_are_advised_huge_where_thp_is_madvise(tmp_path, cuda_env, workloads,
                                                                                 mode, flag, cuda, advised):
    # the THP mode kcheckpoint reads is a file of the test's (KCHECKPOINT_THP_PATH)
    thp = tmp_path / "thp"
    thp.write_text({"madvise": "always [madvise] never\n", "always": "[always] madvise never\n"}[mode])
    env = dict(cuda_env, KCHECKPOINT_THP_PATH=str(thp))
    w = workloads(mb=64, cuda_dir=cuda_env["KC_FAKE_CUDA_DIR"] if cuda else None)
    vmas = private_anon_vmas(w.pid)
    img = tmp_path / "img"
    run_kc(env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    assert (json.loads((img / "kcheckpoint.json").read_text())["processes"][0].get("cuda_state") is not None) == cuda
    runs = [(int(a, 16), int(a, 16) + int(b)) for _, a, b, _, _ in bulk_index(img)]
    run_kc(env, "restore", *flag, img, check=0)
    assert w.probe()["ok"] == "1", "its memory as it was"
    after = {(lo, hi): hg for lo, hi, hg in private_anon_vmas(w.pid)}
    # the rule: a mapping the filled runs cover for at least 3/4 is advised;
    # every other keeps the advice it had
    n_advised = 0
    for lo, hi, hg in vmas:
        covered = sum(max(0, min(e, hi) - max(s, lo)) for s, e in runs)
        expect = hg or (advised and covered * 4 >= (hi - lo) * 3)
        n_advised += expect and not hg
        assert after[(lo, hi)] == expect, (hex(lo), hex(hi), covered, hg)
    # the workload's 64 MB are one mapping, wholly filled
    assert n_advised >= 1 if advised else n_advised == 0


def test_variables_of_our_criu_patches_in_the_environment_do_not_reach_criu(tmp_path, kc_env, workloads):
    """Inherited from a shell, KCHECKPOINT_BULK_MIN would have CRIU leave
    memory out that this dump (--fill-threads 0) does not read."""
    env = dict(kc_env, KCHECKPOINT_BULK_MIN="4096", KCHECKPOINT_BULK_HUGE="/nonexistent")
    w = workloads(mb=32)
    before = w.probe()
    img = tmp_path / "img"
    run_kc(env, "dump", "--fill-threads", "0", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    assert not (img / "kcheckpoint-skipped.txt").exists()
    pages = sum(p.stat().st_size for p in img.glob("pages-*.img"))
    assert pages >= 32 << 20, pages
    run_kc(env, "restore", img, check=0)
    after = w.probe()
    assert after["ok"] == "1" and after["checksum"] == before["checksum"]


def test_dump_without_fill_threads_keeps_criu_images(tmp_path, kc_env, layouts):
    w = layouts()
    before = w.sums()
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "--fill-threads", "0", "-D", img, w.pid, check=0)
    w.proc.wait(timeout=10)
    assert not (img / "kcheckpoint-bulk.txt").exists()
    assert not list(img.glob("kcheckpoint-bulk-*"))
    assert json.loads((img / "kcheckpoint.json").read_text())["format"] == 1
    p = run_kc(kc_env, "restore", img, check=0)
    assert "memory-fill" not in p.stderr
    assert w.sums() == before


def test_archive_roundtrip_fills_memory(tmp_path, kc_env, layouts):
    w = layouts()
    before = w.sums()
    archive = tmp_path / "mem.tar.zst"
    run_kc(kc_env, "dump", "-o", archive, w.pid, check=0)
    w.proc.wait(timeout=10)
    info = run_kc(kc_env, "inspect", "--verify", archive, check=0).stdout
    assert "kcheckpoint-bulk-" in info, "the moved memory is a checksummed member"
    run_kc(kc_env, "restore", archive, check=0)
    assert w.sums() == before


def archive_members(archive):
    """Member names of a plain (--compress none) archive, in order."""
    import tarfile
    with tarfile.open(archive) as t:
        return [m.name for m in t.getmembers()]


def test_archive_streams_memory_both_ways(tmp_path, kc_env, layouts):
    """dump -o reads the large runs from the stopped tree into the archive
    (no plain copy in the work dir); restore fills them from the archive
    after CRIU (no copy unpacked)."""
    w = layouts()
    before = w.sums()
    archive = tmp_path / "mem.tar"
    dwork, rwork = tmp_path / "dwork", tmp_path / "rwork"
    dwork.mkdir()
    rwork.mkdir()
    d = run_kc(kc_env, "dump", "--fill-threads", "2", "--compress", "none", "--work-dir", dwork, "--keep-images",
               "-o", archive, w.pid, check=0)
    w.proc.wait(timeout=10)
    assert "memory-read" not in d.stderr, "read while archiving, not into a file first"
    kept = next(dwork.iterdir())
    assert (kept / "kcheckpoint-bulk.txt").exists()
    assert not (kept / "kcheckpoint-bulk-read.img").exists(), "no plain copy of the memory on disk"
    names = archive_members(archive)
    bulk = [i for i, n in enumerate(names) if n.startswith("kcheckpoint-bulk-") and n.endswith(".img")]
    assert "kcheckpoint-bulk-read.img" in names
    assert bulk == list(range(len(names) - len(bulk), len(names))), ("memory members last", names)
    run_kc(kc_env, "inspect", "--verify", archive, check=0)

    r = run_kc(kc_env, "restore", "--fill-threads", "2", "--work-dir", rwork, "--keep-images", archive, check=0)
    assert "memory-fill" in r.stderr, r.stderr
    assert w.sums() == before
    kept = next(rwork.iterdir())
    assert (kept / "pages-1.img").exists() or list(kept.glob("pages-*.img"))
    assert not list(kept.glob("kcheckpoint-bulk-*.img")), "memory went to the processes, not to files"


def test_archive_with_a_damaged_memory_member_kills_the_restored_tree(tmp_path, kc_env, layouts):
    w = layouts()
    archive = tmp_path / "mem.tar"
    run_kc(kc_env, "dump", "--fill-threads", "2", "--compress", "none", "-o", archive, w.pid, check=0)
    w.proc.wait(timeout=10)
    import tarfile
    with tarfile.open(archive) as t:
        m = t.getmember("kcheckpoint-bulk-read.img")
    with open(archive, "r+b") as f:
        f.seek(m.offset_data + m.size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    r = run_kc(kc_env, "restore", archive, check=5)
    assert "checksum mismatch for member 'kcheckpoint-bulk-read.img'" in r.stderr, r.stderr
    assert not alive(w.pid), "no process runs with wrong memory"


def test_archive_with_memory_members_not_last_is_unpacked_whole(tmp_path, kc_env, layouts):
    """Archives of 0.1 sort the memory members by name; they restore the old way."""
    import tarfile
    w = layouts()
    before = w.sums()
    archive = tmp_path / "mem.tar"
    run_kc(kc_env, "dump", "--fill-threads", "2", "--compress", "none", "-o", archive, w.pid, check=0)
    w.proc.wait(timeout=10)
    old = tmp_path / "old.tar"
    with tarfile.open(archive) as src:
        members = src.getmembers()
        data = {m.name: src.extractfile(m).read() for m in members if m.isfile()}
    man = json.loads(data["kcheckpoint.json"])
    man["members"].sort(key=lambda x: x["path"])
    data["kcheckpoint.json"] = json.dumps(man).encode()
    with tarfile.open(old, "w", format=tarfile.PAX_FORMAT) as dst:
        for name in ["kcheckpoint.json"] + [x["path"] for x in man["members"]]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data[name])
            ti.mode = 0o600
            import io
            dst.addfile(ti, io.BytesIO(data[name]))
    names = archive_members(old)
    assert names[-1] != "kcheckpoint-bulk-read.img", names
    r = run_kc(kc_env, "restore", old, check=0)
    assert "memory-fill" in r.stderr
    assert w.sums() == before


def test_short_bulk_file_kills_the_restored_tree_and_keeps_the_image(tmp_path, kc_env, layouts):
    w = layouts()
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.proc.wait(timeout=10)
    bulk = next(img.glob("kcheckpoint-bulk-*.img"))
    size = bulk.stat().st_size
    os.truncate(bulk, size // 2)
    p = run_kc(kc_env, "restore", img, check=5)
    assert f"has {size // 2} bytes, the manifest says {size}" in p.stderr, p.stderr
    assert not alive(w.pid), "no process runs with half its memory"
    # an image of 0.1 has no checksums: the index alone catches it
    man = json.loads((img / "kcheckpoint.json").read_text())
    man.pop("members")
    (img / "kcheckpoint.json").write_text(json.dumps(man))
    p = run_kc(kc_env, "restore", img, check=5)
    assert "shorter than its index says" in p.stderr, p.stderr
    assert not alive(w.pid)
    assert (img / "kcheckpoint.json").exists() and (img / "kcheckpoint-bulk.txt").exists()


def test_older_manifest_format_is_refused_by_format_check(tmp_path, kc_env, layouts):
    """An image with memory outside CRIU's is format 2; one that claims
    format 3 is refused before CRIU runs (what an older kcheckpoint does
    with format 2)."""
    w = layouts()
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.proc.wait(timeout=10)
    m = json.loads((img / "kcheckpoint.json").read_text())
    m["format"] = 3
    (img / "kcheckpoint.json").write_text(json.dumps(m))
    p = run_kc(kc_env, "restore", img, check=5)
    assert "format 3 is newer" in p.stderr, p.stderr
    assert not alive(w.pid)


def test_sigkill_during_fill_leaves_a_tree_recover_will_not_run(tmp_path, kc_env, workloads):
    """kcheckpoint killed while it fills: the tree stays stopped with part of
    its memory missing; recover refuses to continue it; the image restores
    again once the tree is gone."""
    from conftest import proc_state
    w = workloads(mb=1536)
    before = w.probe()
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    kc = subprocess.Popen([str(KC), "restore", "--fill-threads", "1", str(img)], env=kc_env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # CRIU is done once the restored pid shows up stopped: the fill runs
    deadline = time.time() + 60
    while proc_state(w.pid) != "T":
        assert time.time() < deadline and kc.poll() is None, "no stopped tree to kill the fill in"
        time.sleep(0.002)
    kc.kill()
    kc.wait()
    assert proc_state(w.pid) == "T", "the tree stays stopped"
    marks = list((tmp_path / "run").glob("filling-*"))
    assert marks, "the fill's mark outlives kcheckpoint"

    p = run_kc(kc_env, "recover", w.pid, check=7)
    assert "must not run" in p.stderr and "restore the image again" in p.stderr, p.stderr
    assert proc_state(w.pid) == "T"

    os.kill(w.pid, signal.SIGKILL)
    assert wait_gone(w.pid)
    run_kc(kc_env, "restore", img, check=0)
    after = w.probe()
    assert after["checksum"] == before["checksum"] and after["ok"] == "1", (before, after)
    assert not list((tmp_path / "run").glob("filling-*")), "a finished restore leaves no mark"


def test_a_process_stopped_when_dumped_stays_stopped(tmp_path, kc_env, workloads):
    """CRIU restores everything stopped for the fill; only what ran before
    the dump runs after it."""
    from conftest import proc_state
    w = workloads(mb=64, children=1)
    child = [int(x) for x in Path(f"/proc/{w.pid}/task/{w.pid}/children").read_text().split()][0]
    os.kill(child, signal.SIGSTOP)
    deadline = time.time() + 5
    while proc_state(child) != "T":
        assert time.time() < deadline
        time.sleep(0.01)
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid) and wait_gone(child)
    assert (img / "kcheckpoint-bulk.txt").exists()
    run_kc(kc_env, "restore", img, check=0)
    assert proc_state(child) == "T", "stopped before, stopped after"
    assert w.probe()["ok"] == "1", "the parent runs, its memory intact"
    # its mark went with the finished fill: recover has nothing against it
    assert not list((tmp_path / "run").glob("filling-*"))
    run_kc(kc_env, "recover", child, check=0)
    os.kill(child, signal.SIGCONT)
    assert w.probe(pid=child, status=f"{w.status}.0")["ok"] == "1"


def dumped(tmp_path, kc_env, w, name="img"):
    img = tmp_path / name
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    return img


def test_bad_index_line_after_a_good_one_is_refused(tmp_path, kc_env, workloads):
    w = workloads(mb=64)
    img = dumped(tmp_path, kc_env, w)
    idx = img / "kcheckpoint-bulk.txt"
    idx.write_text(idx.read_text().splitlines()[0] + "\ngarbage\n")
    p = run_kc(kc_env, "restore", img, check=5)
    assert "bad line 'garbage'" in p.stderr, p.stderr
    assert not alive(w.pid)


def test_index_naming_a_process_outside_the_tree_is_refused(tmp_path, kc_env, workloads):
    """A stopped bystander must never be written to, whatever the image says."""
    from conftest import proc_state
    victim = workloads(mb=8, seed=3, name="victim")
    os.kill(victim.pid, signal.SIGSTOP)
    maps = Path(f"/proc/{victim.pid}/maps").read_text().splitlines()
    addr = next(l.split("-")[0] for l in maps if l.split()[1] == "rw-p")
    w = workloads(mb=64)
    img = dumped(tmp_path, kc_env, w)
    idx = img / "kcheckpoint-bulk.txt"
    first = idx.read_text().splitlines()[0].split()
    idx.write_text(idx.read_text() + f"{victim.pid} {addr} 4096 {first[3]} 0\n")
    p = run_kc(kc_env, "restore", img, check=5)
    assert f"names pid {victim.pid}, which is not a process of the restored tree" in p.stderr, p.stderr
    assert not alive(w.pid), "the restored tree is killed"
    assert proc_state(victim.pid) == "T"
    os.kill(victim.pid, signal.SIGCONT)
    assert victim.probe()["ok"] == "1", "the bystander's memory is untouched"
    assert not list((tmp_path / "run").glob("filling-*"))


def test_format_2_image_without_its_index_is_refused(tmp_path, kc_env, workloads):
    w = workloads(mb=64)
    img = dumped(tmp_path, kc_env, w)
    (img / "kcheckpoint-bulk.txt").unlink()
    p = run_kc(kc_env, "restore", img, check=5)
    assert "kcheckpoint-bulk.txt' is missing or empty" in p.stderr, p.stderr
    assert not alive(w.pid)


def test_images_dir_checksums_refuse_a_tampered_image(tmp_path, kc_env, layouts):
    """Issue 11, item 15: dump -D records every file's checksum; restore
    checks CRIU's images before CRIU runs and the memory files while they
    fill (the tree stays stopped until they match); inspect --verify too."""
    w = layouts()
    before = w.sums()
    img = tmp_path / "img"
    d = run_kc(kc_env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    assert "checksum" in d.stderr
    w.proc.wait(timeout=10)
    members = {x["path"]: x for x in json.loads((img / "kcheckpoint.json").read_text())["members"]}
    files = {p.name for p in img.iterdir()} - {"kcheckpoint.json", "criu-dump.log"}
    assert set(members) == files, (set(members) ^ files)
    run_kc(kc_env, "inspect", "--verify", img, check=0)

    def flip(path, where):
        data = bytearray(path.read_bytes())
        data[where] ^= 0x01
        path.write_bytes(bytes(data))

    # a memory file: refused after the fill, the tree never ran
    bulk = img / "kcheckpoint-bulk-read.img"
    flip(bulk, bulk.stat().st_size // 3)
    p = run_kc(kc_env, "inspect", "--verify", img, check=5)
    assert "kcheckpoint-bulk-read.img" in p.stderr
    p = run_kc(kc_env, "restore", img, check=5)
    assert "checksum mismatch for member 'kcheckpoint-bulk-read.img'" in p.stderr, p.stderr
    assert wait_gone(w.pid), "no process runs with wrong memory"
    flip(bulk, bulk.stat().st_size // 3)

    # one of CRIU's images: refused before CRIU runs
    pages = sorted(img.glob("pages-*.img"), key=lambda p: -p.stat().st_size)[0]
    flip(pages, 0)
    p = run_kc(kc_env, "restore", img, check=5)
    assert f"'{pages.name}'" in p.stderr and "checksum mismatch" in p.stderr, p.stderr
    assert not alive(w.pid)
    flip(pages, 0)
    pages.rename(tmp_path / "moved")
    p = run_kc(kc_env, "restore", img, check=5)
    assert "missing" in p.stderr, p.stderr
    (tmp_path / "moved").rename(pages)

    run_kc(kc_env, "restore", img, check=0)
    assert w.sums() == before


def tree_hash(data, leaf=1 << 20):
    """docs/ARCHIVE.md: SHA-256 tree over 1 MiB leaves."""
    import hashlib
    hs = [hashlib.sha256(data[i:i + leaf]).digest() for i in range(0, len(data), leaf)]
    if not hs:
        return hashlib.sha256(b"").hexdigest()
    while len(hs) > 1:
        hs = [hashlib.sha256(hs[i] + hs[i + 1]).digest() if i + 1 < len(hs) else hs[i] for i in range(0, len(hs), 2)]
    return hs[0].hex()


def rebuild(src, dst, edit=None, order=None):
    """A plain archive rewritten with members edited (manifest checksums
    fixed up, as a careless or hostile tool would) or reordered."""
    import io
    import tarfile
    edit = dict(edit or {})
    with tarfile.open(src) as t:
        names = [m.name for m in t.getmembers()]
        man = json.loads(t.extractfile("kcheckpoint.json").read())
        for mm in man["members"]:
            if mm["path"] in edit:
                mm["size"] = len(edit[mm["path"]])
                mm["sha256_tree"] = tree_hash(edit[mm["path"]])
        edit["kcheckpoint.json"] = json.dumps(man).encode()
        with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
            for n in (order(names) if order else names):
                data = edit[n] if n in edit else t.extractfile(n).read()
                ti = tarfile.TarInfo(n)
                ti.size, ti.mode = len(data), 0o600
                out.addfile(ti, io.BytesIO(data))


def test_hostile_archives_are_refused_before_anything_runs(tmp_path, kc_env, layouts):
    """What a hostile test of the streamed restore found (issue 10/11): an
    index whose runs overlap or miss a run, one naming memory the process
    does not have, a member of CRIU's moved behind the memory, and a tar cut
    right after its last member; each is refused with exit 5 and nothing of
    the tree runs."""
    import tarfile
    w = layouts()
    before = w.sums()
    archive = tmp_path / "a.tar"
    run_kc(kc_env, "dump", "--fill-threads", "2", "--compress", "none", "-o", archive, w.pid, check=0)
    w.proc.wait(timeout=10)
    with tarfile.open(archive) as t:
        index = [l.split() for l in t.extractfile("kcheckpoint-bulk.txt").read().decode().splitlines()]
        offs = {m.name: (m.offset_data, m.size) for m in t.getmembers()}
    read = [l for l in index if l[3] == "kcheckpoint-bulk-read.img"]
    assert len(read) >= 2, index

    def with_index(lines):
        return {"kcheckpoint-bulk.txt": ("\n".join(" ".join(l) for l in lines) + "\n").encode()}

    overlap = [list(l) for l in index]
    j = index.index(read[1])
    overlap[j][4] = read[0][4]
    dropped = [l for l in index if l is not read[-1]]
    unmapped = [list(l) for l in index]
    unmapped[index.index(read[0])][1] = "100000"
    cases = {
        "overlap": (dict(edit=with_index(overlap)), "runs overlap"),
        "dropped": (dict(edit=with_index(dropped)), "accounts for"),
        "unmapped": (dict(edit=with_index(unmapped)), "does not have"),
        "late-pstree": (dict(order=lambda ns: [n for n in ns if n != "pstree.img"] + ["pstree.img"]),
                        "missing from"),
    }
    for name, (how, words) in cases.items():
        bad = tmp_path / f"{name}.tar"
        rebuild(archive, bad, **how)
        p = run_kc(kc_env, "restore", bad)
        assert p.returncode == 5 and words in p.stderr, (name, p.returncode, p.stderr)
        assert wait_gone(w.pid), name
    # cut right after the last member's data: no end blocks
    last = max(o + ((s + 511) // 512) * 512 for o, s in offs.values())
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[:last])
    for cmd in (["inspect", "--verify"], ["restore"]):
        p = run_kc(kc_env, *cmd, cut)
        assert p.returncode == 5 and "truncated" in p.stderr, (cmd, p.stderr)
    assert not alive(w.pid)
    run_kc(kc_env, "restore", archive, check=0)
    assert w.sums() == before


def test_leave_running_resumes_before_the_archive_is_written(tmp_path, kc_env, layouts):
    """Issue 12: --leave-running -o lets the tree go as soon as CRIU and the
    memory read are done; the archive is written while it runs, and holds
    the state of the moment of the dump."""
    w = layouts()
    before = w.sums()
    archive = tmp_path / "a.tar.zst"
    p = run_kc(kc_env, "dump", "--json", "--fill-threads", "2", "--leave-running", "-o", archive, w.pid, check=0)
    stages = [s["stage"] for s in json.loads(p.stdout)["stages"]]
    assert stages.index("resume") < stages.index("archive"), stages
    assert "memory-read" in stages, stages
    assert w.sums() == before, "left running, intact"
    w.kill()
    assert wait_gone(w.pid)
    run_kc(kc_env, "restore", archive, check=0)
    assert w.sums() == before


def test_images_dir_with_a_file_the_manifest_does_not_list_is_refused(tmp_path, kc_env, layouts):
    """Hostile test: an unlisted file went to CRIU unchecked."""
    w = layouts()
    img = tmp_path / "img"
    run_kc(kc_env, "dump", "-D", img, w.pid, check=0)
    w.proc.wait(timeout=10)
    (img / "cgroup.img").write_bytes(b"garbage")
    for cmd in (["inspect", "--verify"], ["restore"]):
        p = run_kc(kc_env, *cmd, img, check=5)
        assert "cgroup.img' is not in the manifest" in p.stderr, p.stderr
    assert not alive(w.pid)


def test_gpu_memory_fills_beside_the_gpu_restore(tmp_path, cuda_env, workloads):
    """From an images dir, the driver's copy of a CUDA process' GPU memory
    (the ranges its checkpoint mapped: kcheckpoint-gpu-backup.txt) goes in
    through a userfaultfd our CRIU hands over (patches/criu/0003) while the
    driver restores; the rest of the memory goes in before.  The fake
    driver maps that copy at checkpoint as the real one does
    (cpu_workload --backup-mb), reads 4 KiB of every MiB of it at checkpoint
    and again at restore, through faults the fill serves, and fails the
    restore where it finds other bytes."""
    fc = Path(cuda_env["KC_FAKE_CUDA_DIR"])
    w = workloads(mb=32, backup_mb=256, cuda_dir=fc, helper_thread=True)
    before = w.probe()
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    leaves = (img / "kcheckpoint-bulk-read.leaves").read_bytes()
    assert len(leaves) == 32 * (((img / "kcheckpoint-bulk-read.img").stat().st_size + (1 << 20) - 1) >> 20)
    start, length = (int(x, 16) for x in (fc / f"{w.pid}.backup").read_text().split())
    backup = [l.split() for l in (img / "kcheckpoint-gpu-backup.txt").read_text().splitlines()]
    assert backup == [[str(w.pid), f"{start:x}", f"{start + length:x}"]], (backup, hex(start))
    # slow enough that the driver's read meets pages not filled yet
    env = dict(cuda_env, KCHECKPOINT_FILL_STATS="1")
    p = run_kc(env, "restore", "--json", "--fill-threads", "2", img, check=0)
    stages = {s["stage"]: s for s in json.loads(p.stdout)["stages"]}
    assert {"fill-first", "fill-wait"} <= set(stages), stages
    assert stages["memory-fill"]["bytes"] >= (256 + 32) << 20, stages
    first, total = (int(x) for x in p.stderr.split("fill stats: ")[1].split(" leaves")[0].split(" of "))
    assert 32 <= first < total - 200, p.stderr  # the 256 MiB copy beside the GPU restore
    assert int(p.stderr.split(" faults served")[0].rsplit(" ", 1)[1]) > 0, "the driver waited for pages: " + p.stderr
    after = w.probe()
    assert after["ok"] == "1" and after["checksum"] == before["checksum"]
    assert cuda_state(cuda_env, w.pid) == 0
    deadline = time.time() + 10
    while f"{start:x}-" in Path(f"/proc/{w.pid}/maps").read_text():  # freed by the program once it runs
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("mb", [5, 7])
def test_a_tree_of_cuda_processes_fills_leaves_that_span_two_processes(tmp_path, cuda_env, workloads, mb):
    """The memory file holds the runs of every process end to end, so a
    1 MiB leaf may hold the end of one process' runs and the start of the
    next one's; each process' memory is registered before any leaf goes in
    (run 47's serve restore failed with ENOENT where it was not)."""
    fc = Path(cuda_env["KC_FAKE_CUDA_DIR"])
    w = workloads(mb=mb, children=2, cuda_dir=fc, helper_thread=True, backup_mb=16)
    before = w.probe()
    img = tmp_path / "img"
    run_kc(cuda_env, "dump", "--fill-threads", "2", "-D", img, w.pid, check=0)
    w.reap()
    assert wait_gone(w.pid)
    idx = bulk_index(img)
    pids = {p for p, _, _, f, _ in idx if f == "kcheckpoint-bulk-read.img"}
    assert len(pids) == 3, idx
    # some leaf holds two processes' runs
    spans = [(int(o) >> 20, int(o) + int(b) - 1 >> 20, p) for p, _, b, f, o in idx if f == "kcheckpoint-bulk-read.img"]
    shared = {l for lo, hi, p in spans for l in (lo, hi)
              if any(q != p and lo2 <= l <= hi2 for lo2, hi2, q in spans)}
    assert shared, spans
    p = run_kc(cuda_env, "restore", "--json", "--fill-threads", "2", img, check=0)
    assert "fill-first" in {s["stage"] for s in json.loads(p.stdout)["stages"]}
    kids = [Path(f"{w.status}.{i}") for i in range(2)]
    for k in kids:
        k.unlink(missing_ok=True)
    after = w.probe()  # passed on to the children
    assert after["ok"] == "1" and after["checksum"] == before["checksum"]
    deadline = time.time() + 10
    while not all(k.exists() and k.read_text().strip() for k in kids):
        assert time.time() < deadline, "the children answer"
        time.sleep(0.02)
    assert all(" ok=1 " in k.read_text() for k in kids), [k.read_text() for k in kids]
