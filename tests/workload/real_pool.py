#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A multiprocessing pool for tests/integration/test_workloads.py.

    real_pool.py METHOD PROGRESS_FILE STOP_FILE

Starts a Pool of 2 workers with start method METHOD (spawn, forkserver,
fork) and, round after round, has the workers compute
sum(i * i + r for i in range(1000)) for r in round*4 .. round*4+3; each
round appends "round <r> <result> <worker pids>" to PROGRESS_FILE.  When
STOP_FILE exists it closes the pool, joins it (its semaphores are
unlinked) and appends "done".
"""
import multiprocessing as mp
import os
import sys
import time


def work(r):
    return os.getpid(), sum(i * i + r for i in range(1000))


def main():
    method, progress, stop = sys.argv[1:4]
    ctx = mp.get_context(method)
    with open(progress, "a", buffering=1) as out:
        pool = ctx.Pool(2)
        out.write(f"started {os.getpid()}\n")
        rnd = 0
        while not os.path.exists(stop):
            res = pool.map(work, range(rnd * 4, rnd * 4 + 4), chunksize=1)
            pids = sorted({p for p, _ in res})
            out.write(f"round {rnd} {sum(v for _, v in res)} {','.join(map(str, pids))}\n")
            rnd += 1
            time.sleep(0.05)
        pool.close()
        pool.join()
        out.write("done\n")


if __name__ == "__main__":
    main()
