# SPDX-License-Identifier: Apache-2.0
"""Stand-in for bench/ml/two_procs.py: two spawned children step an LCG."""
import argparse
import multiprocessing as mp
import os
import time


def child(rank, a):
    log = open(f"{a.log}.r{rank}", "a", buffering=1)
    x = rank + 1
    for step in range(1, a.steps + 1):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        log.write(f"{step} {float(x).hex()}\n")
        if step == a.pause_at:
            open(f"{a.log}.r{rank}.ready", "w").close()
            while not os.path.exists(a.log + ".go"):
                time.sleep(0.05)
        time.sleep(0.01)
    log.write("done\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--pause-at", type=int, default=0)
    a, _ = p.parse_known_args()
    ps = [mp.get_context("spawn").Process(target=child, args=(r, a)) for r in range(2)]
    for q in ps:
        q.start()
    ready = a.pause_at == 0
    while any(q.is_alive() for q in ps):
        if not ready and all(os.path.exists(f"{a.log}.r{r}.ready") for r in range(2)):
            open(a.log + ".ready", "w").close()
            ready = True
        time.sleep(0.05)
    with open(a.log, "a") as f:
        f.write("done\n")
