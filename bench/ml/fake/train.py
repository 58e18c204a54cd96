# SPDX-License-Identifier: Apache-2.0
"""Stand-in for bench/ml/train.py: persistent workers hash the step number, the
main process chains the hashes into the logged "loss"."""
import argparse
import hashlib
import multiprocessing as mp
import os
import time


def worker(q_in, q_out):
    for i in iter(q_in.get, None):
        q_out.put((i, hashlib.sha256(str(i).encode()).hexdigest()))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--pause-at", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--start", default="fork")
    a, _ = p.parse_known_args()
    log = open(a.log, "a", buffering=1)
    h = hashlib.sha256(b"seed")
    ws = []
    if a.workers:
        ctx = mp.get_context(a.start)
        qi, qo = ctx.Queue(), ctx.Queue()
        ws = [ctx.Process(target=worker, args=(qi, qo), daemon=True) for _ in range(a.workers)]
        for w in ws:
            w.start()
    for step in range(1, a.steps + 1):
        if ws:
            qi.put(step)
            _, d = qo.get(timeout=60)
        else:
            d = hashlib.sha256(str(step).encode()).hexdigest()
        h.update(d.encode())
        log.write(f"{step} {float(int(h.hexdigest()[:12], 16)).hex()}\n")
        if step == a.pause_at:
            open(a.log + ".ready", "w").write(f"{os.getpid()}\n")
            while not os.path.exists(a.log + ".go"):
                time.sleep(0.05)
    for _ in ws:
        qi.put(None)
    for w in ws:
        w.join()
    log.write("done\n")


if __name__ == "__main__":
    main()
