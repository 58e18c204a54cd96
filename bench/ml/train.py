#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A deterministic training job for bench/ml/ml-suite.sh.

A small Llama-shaped model (transformers.LlamaConfig, random init from a fixed
seed; --plain: a plain torch MLP language model instead) trained with AdamW on
synthetic token batches that a Dataset makes from their index alone, fed by a
DataLoader with --workers persistent workers started by --start (fork, spawn
or forkserver; none with --workers 0).

Each step appends "STEP LOSS.hex()" to --log (flushed); the last line is
"done".  With --pause-at K, after step K it creates LOG.ready and sleeps until
LOG.go exists (polled every 50 ms): that is where the suite checkpoints it.
Two runs with the same arguments write the same log, bit for bit, however
often the job is checkpointed and restored in between.

The first step runs on a batch built in this process, before the DataLoader's
iterator exists: CUDA is initialised and has run kernels by the time the
workers are forked (the case that matters for --start fork).

Sizes: --hidden 1024 --layers 8 (the default) is ~170 M parameters, ~3-4 GB
of VRAM with AdamW at --batch 8 --seq 256; --hidden 2048 --layers 16 is
~10 GB.
"""
import os

# must be set before torch initialises cuBLAS (deterministic cuBLAS workspaces)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader


class TokenBatches:
    """Map-style dataset: item i is a whole batch, a function of (seed, i) only.

    Each row is an arithmetic progression modulo the vocabulary (random start
    and stride) so that the loss goes down; "worker" names the process that
    made it (not part of the logged result)."""

    def __init__(self, n, batch, seq, vocab, seed):
        self.n, self.batch, self.seq, self.vocab, self.seed = n, batch, seq, vocab, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000003 + int(i))
        start = torch.randint(0, self.vocab, (self.batch, 1), generator=g)
        stride = torch.randint(1, 97, (self.batch, 1), generator=g)
        ids = (start + stride * torch.arange(self.seq + 1)) % self.vocab
        return {"ids": ids, "worker": os.getpid()}


class PlainLM(nn.Module):
    """Embedding, residual MLP blocks, output projection: no attention."""

    def __init__(self, vocab, hidden, layers):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 4 * hidden), nn.GELU(),
                          nn.Linear(4 * hidden, hidden)) for _ in range(layers))
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        for b in self.blocks:
            x = x + b(x)
        return self.head(x)


def llama_config(a):
    from transformers import LlamaConfig

    heads = a.heads or max(1, a.hidden // 128)
    inter = a.intermediate or (a.hidden * 11 // 4 + 255) // 256 * 256
    return LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=inter,
                       num_hidden_layers=a.layers, num_attention_heads=heads,
                       num_key_value_heads=heads, max_position_embeddings=max(2048, a.seq + 1),
                       tie_word_embeddings=False, use_cache=False)


def build_model(a, dev):
    torch.manual_seed(a.seed)
    with torch.device(dev):
        if a.plain:
            model = PlainLM(a.vocab, a.hidden, a.layers)
        else:
            from transformers import AutoModelForCausalLM

            # eager attention: plain matmuls and softmax, deterministic forward and backward
            model = AutoModelForCausalLM.from_config(llama_config(a), attn_implementation=a.attn)
    model = model.to(dev).train()

    if a.plain:
        return model, model
    return model, lambda ids: model(input_ids=ids, use_cache=False).logits


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def wait_for_go(a, step):
    write_atomic(a.log + ".ready", f"{os.getpid()} {step}\n")
    go = a.log + ".go"
    deadline = time.monotonic() + a.pause_timeout
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit(f"train: no {go} after {a.pause_timeout} s")
        time.sleep(0.05)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", required=True, help="per-step loss log (appended)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--pause-at", type=int, default=0, help="pause after this step (0: never)")
    p.add_argument("--pause-timeout", type=float, default=1800, help="give up waiting for LOG.go")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (0: load in this process)")
    p.add_argument("--start", choices=["fork", "spawn", "forkserver"], default="fork")
    p.add_argument("--prefetch", type=int, default=2, help="DataLoader prefetch_factor")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=0, help="0: hidden/128")
    p.add_argument("--intermediate", type=int, default=0, help="0: ~2.75 x hidden")
    p.add_argument("--attn", default="eager", help="transformers attn_implementation")
    p.add_argument("--plain", action="store_true", help="a plain torch MLP LM, no transformers")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    p.add_argument("--warn-only", action="store_true",
                   help="warn instead of failing on an op without a deterministic implementation")
    a = p.parse_args()
    if a.steps < 2 or not (a.pause_at == 0 or 2 <= a.pause_at < a.steps):
        p.error("need --steps >= 2 and --pause-at 0 (never) or 2 .. steps-1")

    torch.use_deterministic_algorithms(True, warn_only=a.warn_only)
    torch.backends.cudnn.enabled = False  # (fp32 matmuls stay IEEE: torch's default, no TF32)
    torch.backends.cudnn.benchmark = False
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("train: CUDA is not available (use --device cpu for a smoke test)")

    t0 = time.time()
    model, fwd = build_model(a, dev)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    ds = TokenBatches(a.steps, a.batch, a.seq, a.vocab, a.seed)
    log = open(a.log, "a", buffering=1)  # O_WRONLY|O_APPEND: CRIU does not check its size

    def train_step(step, batch):
        ids = batch["ids"].to(dev)
        logits = fwd(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        v = loss.item()  # synchronises: the GPU is idle between steps
        log.write(f"{step} {v.hex()}\n")
        log.flush()
        return v

    # step 1 in this process: CUDA is up and has run work before any worker exists
    train_step(1, ds[0])
    kw = {}
    if a.workers > 0:
        kw = dict(num_workers=a.workers, persistent_workers=True, prefetch_factor=a.prefetch,
                  multiprocessing_context=a.start)
    loader = DataLoader(ds, batch_size=None, sampler=range(1, a.steps), **kw)
    it = iter(loader)  # forks/spawns the workers now
    print(f"train: pid {os.getpid()}, {nparams / 1e6:.1f} M params "
          f"({'plain' if a.plain else 'llama'} hidden {a.hidden} layers {a.layers}), "
          f"workers {a.workers} ({a.start if a.workers else '-'}), setup {time.time() - t0:.1f} s",
          flush=True)

    seen = {"before": set(), "after": set()}
    phase = "before"
    for step in range(2, a.steps + 1):
        batch = next(it)
        seen[phase].add(batch["worker"])
        train_step(step, batch)
        if step == a.pause_at:
            if dev.type == "cuda":
                print(f"train: paused after step {step}, "
                      f"{torch.cuda.memory_reserved() / 2**30:.2f} GiB reserved by torch", flush=True)
            wait_for_go(a, step)
            print(f"train: resumed after step {step}", flush=True)
            phase = "after"
    del it, loader  # shuts the persistent workers down
    print(f"train: batches from pids {sorted(seen['before'])} before the pause, "
          f"{sorted(seen['after'])} after; {time.time() - t0:.1f} s", flush=True)
    log.write("done\n")
    log.close()


if __name__ == "__main__":
    main()
