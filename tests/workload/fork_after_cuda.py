#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A stand-in for a PyTorch job whose DataLoader workers were forked after CUDA init.

The parent marks itself a CUDA process for the fake driver, maps and opens a
device that stands in for /dev/nvidia* (the test names it in
KCHECKPOINT_GPU_DEVICES), and forks workers, which inherit the mapping and
the descriptors, as DataLoader workers inherit the driver's.  Then the parent
drops its own (the real driver's checkpoint does that for a CUDA process)
unless --keep-parent-map, which models a CUDA process that still holds the
device after its checkpoint (NVML, graphics).  --no-cuda: the parent is no
CUDA process at all (a graphics program, say).

Each process writes a counter to OUT/<name> every 20 ms; the workers also a
checksum of work they do.  SIGTERM to the parent stops the workers (SIGTERM),
reaps them and writes OUT/exits ("<i> <status>" lines) before it exits 0.
"""
import argparse
import ctypes
import mmap
import os
import signal
import sys
import time

MAP_BYTES = 64 * 1024


def write(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def worker(i, out):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    n, acc = 0, 0
    while not stop:
        n += 1
        acc = (acc * 31 + sum(range(n % 1000))) % 1000003
        write(f"{out}/worker.{i}", f"{n} {acc}\n")
        time.sleep(0.02)
    write(f"{out}/worker.{i}.exit", "clean\n")
    sys.exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", required=True)
    ap.add_argument("--cuda-dir")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep-parent-map", action="store_true")
    ap.add_argument("--no-cuda", action="store_true")
    a = ap.parse_args()

    fd = os.open(a.device, os.O_RDWR)
    m = mmap.mmap(fd, MAP_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[0:4] = b"kc!\n"
    # two more mappings through the very descriptor (Python's mmap dups
    # it), as the driver maps several regions of one open file: CRIU
    # restores them from one stand-in descriptor
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    for off in (4, 8):
        if libc.mmap(None, MAP_BYTES, mmap.PROT_READ, mmap.MAP_SHARED, fd, off * MAP_BYTES) in (None, 2**64 - 1):
            raise OSError(ctypes.get_errno(), "mmap")
    write(f"{a.out}/map", f"{fd}\n")
    if a.cuda_dir and not a.no_cuda:
        write(f"{a.cuda_dir}/{os.getpid()}", "0\n")

    kids = []
    for i in range(a.workers):
        pid = os.fork()
        if pid == 0:
            worker(i, a.out)
        kids.append(pid)
    if not a.keep_parent_map:
        m.close()
        os.close(fd)
        for line in open("/proc/self/maps"):
            if line.rstrip().endswith(" " + a.device):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                libc.munmap(ctypes.c_void_p(start), ctypes.c_size_t(end - start))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    n = 0
    while not stop:
        n += 1
        write(f"{a.out}/parent", f"{n}\n")
        time.sleep(0.02)
    lines = []
    for i, pid in enumerate(kids):
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        lines.append(f"{i} {status}\n")
    write(f"{a.out}/exits", "".join(lines))
    sys.exit(0)


if __name__ == "__main__":
    main()
