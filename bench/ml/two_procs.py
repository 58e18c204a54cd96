#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Two CUDA processes started by torch.multiprocessing (spawn), for
bench/ml/ml-suite.sh.

Each child holds --gib GiB of VRAM (a square fp32 matrix W, seeded by
--seed + rank) and runs a deterministic loop: X = tanh(W @ X), then a rank-1
update of W, so that every step depends on all of its memory.  It appends
"STEP sum(X).hex() sum(W).hex()" to LOG.r<rank> (flushed), then "done".  The
parent waits for both and appends "done" to LOG.

--pause-at K: each child, after step K, creates LOG.r<rank>.ready and sleeps
until LOG.go exists; the parent creates LOG.ready once both have.
"""
import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse
import sys
import time

import torch
import torch.multiprocessing as mp


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def wait_for(path, timeout, who):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"{who}: no {path} after {timeout} s")
        time.sleep(0.05)


def child(rank, a):
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.enabled = False  # (fp32 matmuls stay IEEE: torch's default, no TF32)
    dev = torch.device(a.device)
    torch.manual_seed(a.seed + rank)
    n = max(256, int((a.gib * 2**30 / 4) ** 0.5) // 256 * 256)
    w = torch.randn(n, n, device=dev).div_(n ** 0.5)
    x = torch.randn(n, a.cols, device=dev)
    log = open(f"{a.log}.r{rank}", "a", buffering=1)
    print(f"two_procs: rank {rank} pid {os.getpid()}: W {n}x{n} fp32 "
          f"({w.numel() * 4 / 2**30:.2f} GiB)", flush=True)
    for step in range(1, a.steps + 1):
        x = torch.tanh(w @ x)
        w.addr_(x[:, 0], x[:, 1], alpha=1e-4)
        log.write(f"{step} {x.sum().item().hex()} {w.sum().item().hex()}\n")
        log.flush()
        if step == a.pause_at:
            write_atomic(f"{a.log}.r{rank}.ready", f"{os.getpid()} {step}\n")
            wait_for(a.log + ".go", a.pause_timeout, f"two_procs rank {rank}")
    log.write("done\n")
    log.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", required=True, help="the parent's log; children write LOG.r0, LOG.r1")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--pause-at", type=int, default=0, help="pause after this step (0: never)")
    p.add_argument("--pause-timeout", type=float, default=1800)
    p.add_argument("--gib", type=float, default=1.5, help="VRAM of W in each child")
    p.add_argument("--cols", type=int, default=512)
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    a = p.parse_args()
    if not 0 <= a.pause_at < a.steps:
        p.error("need 0 <= --pause-at < --steps")

    ctx = mp.start_processes(child, args=(a,), nprocs=a.nprocs, join=False, start_method="spawn")
    print(f"two_procs: parent {os.getpid()}, children {[q.pid for q in ctx.processes]}", flush=True)
    ready = a.pause_at == 0
    while not ctx.join(timeout=0.05):  # raises if a child fails
        if not ready and all(os.path.exists(f"{a.log}.r{r}.ready") for r in range(a.nprocs)):
            write_atomic(a.log + ".ready", f"{os.getpid()} {a.pause_at}\n")
            ready = True
    with open(a.log, "a") as f:
        f.write("done\n")


if __name__ == "__main__":
    main()
