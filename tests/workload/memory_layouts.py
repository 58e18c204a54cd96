#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Memory of many shapes, for tests/integration/test_memory_fill.py.

    memory_layouts.py DIR

Maps, with known contents: a 24 MiB private anonymous region with a
read-only middle (mprotect), a region with a hole punched in it
(MADV_DONTNEED) and pages never touched, a 16 MiB region asked to be huge
pages (MADV_HUGEPAGE), 8 MiB only ever read (the kernel's zero page), 8 MiB of shared anonymous memory, and a private
mapping of a file, partly written (copy-on-write pages).  Writes DIR/ready
with each region's address, length and expected permissions, and on
SIGUSR1 writes DIR/sums: the SHA-256 of every region, as this process
reads its memory now (read-only parts included).
"""
import ctypes
import hashlib
import mmap
import os
import signal
import sys
import time

MiB = 1 << 20
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
RW = mmap.PROT_READ | mmap.PROT_WRITE
PRIV_ANON = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
SHARED_ANON = mmap.MAP_SHARED | mmap.MAP_ANONYMOUS


def region(length, flags, fd=-1, off=0, prot=RW):
    a = libc.mmap(None, length, prot, flags, fd, off)
    if a in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    return a


def fill(addr, length, seed):
    """A pattern that differs in every 8 bytes, so a misplaced page shows."""
    words = (ctypes.c_uint64 * (length // 8)).from_address(addr)
    x = seed * 0x9E3779B97F4A7C15 & (2**64 - 1)
    for i in range(0, length // 8, 512):  # one word in 512 differs; the rest keeps the seed
        words[i] = (x + i * 0x100000001B3) & (2**64 - 1)
    ctypes.memset(addr + 8, seed & 0xFF, 8)


def sha(addr, length):
    return hashlib.sha256(ctypes.string_at(addr, length)).hexdigest()


def main():
    d = sys.argv[1]
    regions = []  # (name, addr, length, perms)

    a = region(24 * MiB, PRIV_ANON)
    for k in range(24):
        fill(a + k * MiB, MiB, 100 + k)
    libc.mprotect(a + 8 * MiB, 8 * MiB, mmap.PROT_READ)
    regions += [("anon-rw-1", a, 8 * MiB, "rw-p"), ("anon-ro", a + 8 * MiB, 8 * MiB, "r--p"),
                ("anon-rw-2", a + 16 * MiB, 8 * MiB, "rw-p")]

    h = region(32 * MiB, PRIV_ANON)
    fill(h, 12 * MiB, 7)
    fill(h + 20 * MiB, 6 * MiB, 8)
    libc.madvise(h + 4 * MiB, 2 * MiB, 4)  # MADV_DONTNEED: a hole of zeros in the middle
    # 12..20 MiB and 26..32 MiB never touched
    regions.append(("holes", h, 32 * MiB, "rw-p"))

    t = region(16 * MiB, PRIV_ANON)
    libc.madvise(t, 16 * MiB, 14)  # MADV_HUGEPAGE
    fill(t, 16 * MiB, 9)
    regions.append(("thp", t, 16 * MiB, "rw-p"))

    s = region(8 * MiB, SHARED_ANON)
    fill(s, 8 * MiB, 10)
    regions.append(("shared", s, 8 * MiB, "rw-s"))

    z = region(8 * MiB, PRIV_ANON, prot=mmap.PROT_READ)
    for off in range(0, 8 * MiB, 4096):  # read, never written: the kernel's zero page
        ctypes.c_char.from_address(z + off).value
    regions.append(("zero-read", z, 8 * MiB, "r--p"))

    path = os.path.join(d, "backing")
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * (12 * MiB // 256))
    fd = os.open(path, os.O_RDWR)
    p = region(12 * MiB, mmap.MAP_PRIVATE, fd)
    os.close(fd)
    fill(p + 2 * MiB, 6 * MiB, 11)  # copy-on-write pages in the middle
    regions.append(("file-private", p, 12 * MiB, "rw-p"))

    def report(*_):
        lines = "".join(f"{n} {sha(a, l)}\n" for n, a, l, _ in regions)
        with open(os.path.join(d, "sums.tmp"), "w") as f:
            f.write(lines)
        os.rename(os.path.join(d, "sums.tmp"), os.path.join(d, "sums"))

    signal.signal(signal.SIGUSR1, report)
    report()
    with open(os.path.join(d, "ready.tmp"), "w") as f:
        f.write("".join(f"{n} {a:x} {l} {pm}\n" for n, a, l, pm in regions))
    os.rename(os.path.join(d, "ready.tmp"), os.path.join(d, "ready"))
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
