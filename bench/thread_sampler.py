#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Where the threads of a restore spend their time: a poor man's profiler.

    bench/thread_sampler.py OUT_FILE NAME...

Every 2 ms, until SIGTERM or SIGINT, reads the state and the kernel stack
(/proc/<pid>/task/<tid>/stack, root only; wchan otherwise) of every thread of
every process whose comm is one of NAME, and counts (process, thread, state,
top kernel frames).  On exit it writes to OUT_FILE, per thread name, the
samples it was seen in, its CPU seconds over the window and the commonest
states and stacks: enough to tell a thread that waits on a lock (D, rwsem_*)
from one that runs (R) or waits for work (S, futex/poll).  Used by
gpu_bench.sh when KC_SAMPLE=1, for the fill and the driver's copy beside it.
"""
import collections
import os
import signal
import sys
import time

out_file, names = sys.argv[1], set(sys.argv[2:])
stop = False


def on_signal(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
hz = os.sysconf("SC_CLK_TCK")
counts = collections.Counter()
per_thread = collections.Counter()
cpu_first, cpu_last = {}, {}
samples = 0
t0 = time.monotonic()


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


while not stop:
    samples += 1
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        comm = read(f"/proc/{pid}/comm")
        if comm is None or comm.strip() not in names:
            continue
        comm = comm.strip()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            stat = read(f"{base}/stat")
            if stat is None:
                continue
            tcomm = stat[stat.index("(") + 1:stat.rindex(")")]
            # thread names with a number (kc-fill-3) count as one
            tname = tcomm.rstrip("0123456789")
            fields = stat[stat.rindex(")") + 2:].split()
            state = fields[0]
            cpu = (int(fields[11]) + int(fields[12])) / hz
            key_t = (comm, tname, tid)
            cpu_first.setdefault(key_t, cpu)
            cpu_last[key_t] = cpu
            stack = read(f"{base}/stack")
            if stack:
                frames = [ln.split()[1].split("+")[0] for ln in stack.splitlines() if len(ln.split()) > 1]
                top = " < ".join(frames[:4])
            else:
                top = (read(f"{base}/wchan") or "?").strip()
            if state == "R":
                top = "-"  # a running thread's stack is not stable; the state says enough
            counts[(comm, tname, state, top)] += 1
            per_thread[(comm, tname)] += 1
    time.sleep(0.002)

wall = time.monotonic() - t0
with open(out_file, "w") as f:
    f.write(f"{samples} samples over {wall:.2f} s\n")
    cpu = collections.Counter()
    nthr = collections.Counter()
    for (comm, tname, _), c in cpu_last.items():
        cpu[(comm, tname)] += c - cpu_first[(comm, tname, _)]
        nthr[(comm, tname)] += 1
    for (comm, tname), n in per_thread.most_common():
        f.write(f"\n{comm}/{tname}: {nthr[(comm, tname)]} threads, {n} thread-samples, "
                f"{cpu[(comm, tname)]:.2f} CPU s\n")
        rows = [(c, st, top) for (cm, tn, st, top), c in counts.items() if (cm, tn) == (comm, tname)]
        for c, st, top in sorted(rows, reverse=True)[:8]:
            f.write(f"  {100.0 * c / n:5.1f}%  {st}  {top}\n")
