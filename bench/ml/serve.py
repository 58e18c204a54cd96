#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An HTTP inference server for bench/ml/ml-suite.sh.

A LlamaForCausalLM built from a config (random init, fixed seed), bf16 on
CUDA, its forward compiled with torch.compile (inductor, default settings: the
compile worker pool is a tree of subprocesses of this one), served on
127.0.0.1:PORT by http.server.ThreadingHTTPServer:

  POST /generate  {"ids": [int, ...], "n": 16}  ->  {"ids": [n greedy token ids]}
  GET  /health    200 "ok" once warm, 503 before

Generation is greedy, without a KV cache, over a fixed-size buffer of
--max-len tokens (right-padded; the model is causal, so padding does not
change the logits before it): every forward has the same shape, one compiled
graph serves every request, and an answer is the same bit for bit each time.
All GPU work runs in the main thread; the handlers queue requests to it.

Once a warm-up generation has run (compilation done) it prints
"READY <seconds since start> ..." and writes --ready-file.
"""
import os
import time

T0 = time.time()

import argparse
import json
import queue
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WARM = threading.Event()
JOBS = queue.Queue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing stays established

    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/health":
            return self.reply(404, "not found\n", "text/plain")
        if WARM.is_set():
            return self.reply(200, "ok", "text/plain")
        return self.reply(503, "warming up", "text/plain")

    def do_POST(self):
        if self.path != "/generate":
            return self.reply(404, "not found\n", "text/plain")
        if not WARM.is_set():
            return self.reply(503, json.dumps({"error": "warming up"}))
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            ids, n = [int(x) for x in req["ids"]], int(req.get("n", 16))
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, json.dumps({"error": f"bad request: {e}"}))
        job = {"ids": ids, "n": n, "done": threading.Event()}
        JOBS.put(job)
        if not job["done"].wait(300):
            return self.reply(504, json.dumps({"error": "timed out"}))
        if "error" in job:
            return self.reply(job["code"], json.dumps({"error": job["error"]}))
        self.reply(200, json.dumps({"ids": job["out"], "ms": job["ms"]}))


def tree_size(root):
    """Processes in the tree rooted at root (itself included), from /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    n, todo = 0, [root]
    while todo:
        p = todo.pop()
        n += 1
        todo.extend(kids.get(p, []))
    return n


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=18431)
    p.add_argument("--ready-file", help="written once warm")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=0, help="0: hidden/128")
    p.add_argument("--intermediate", type=int, default=0, help="0: ~2.75 x hidden")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--max-len", type=int, default=128, help="prompt + generated tokens")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    a = p.parse_args()

    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="http", daemon=True).start()

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dev = torch.device(a.device)
    dtype = torch.bfloat16
    heads = a.heads or max(1, a.hidden // 128)
    inter = a.intermediate or (a.hidden * 11 // 4 + 255) // 256 * 256
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=inter,
                      num_hidden_layers=a.layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max(2048, a.max_len), tie_word_embeddings=False,
                      use_cache=False)
    torch.manual_seed(a.seed)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg)
    model = model.to(device=dev, dtype=dtype).eval()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    nparams = sum(x.numel() for x in model.parameters())

    def logits_of(ids):
        return model(input_ids=ids, use_cache=False).logits

    fwd = logits_of if a.no_compile else torch.compile(logits_of, dynamic=False)
    buf = torch.zeros(1, a.max_len, dtype=torch.long, device=dev)

    @torch.no_grad()
    def generate(ids, n):
        if not ids or n < 1 or len(ids) + n > a.max_len:
            raise ValueError(f"need 1 <= len(ids) and 1 <= n and len(ids) + n <= {a.max_len}")
        if min(ids) < 0 or max(ids) >= a.vocab:
            raise ValueError(f"token ids must be in [0, {a.vocab})")
        buf.zero_()
        buf[0, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        cur, out = len(ids), []
        for _ in range(n):
            nxt = int(fwd(buf)[0, cur - 1].argmax())
            buf[0, cur] = nxt
            out.append(nxt)
            cur += 1
        return out

    t1 = time.time()
    warm = generate(list(range(1, 17)), 16)
    t2 = time.time()
    WARM.set()
    mem = f", {torch.cuda.memory_reserved() / 2**30:.2f} GiB reserved by torch" if dev.type == "cuda" else ""
    threads = getattr(getattr(torch, "_inductor", None), "config", None)
    threads = getattr(threads, "compile_threads", "?")
    print(f"READY {t2 - T0:.2f} (model {t1 - T0:.1f} s, warm-up {t2 - t1:.1f} s; "
          f"{nparams / 1e6:.0f} M params, compile {'off' if a.no_compile else 'on'}, "
          f"compile_threads {threads}; tree {tree_size(os.getpid())} processes{mem}; "
          f"warm-up answer {warm[:4]}...)", flush=True)
    if a.ready_file:
        write_atomic(a.ready_file, f"{os.getpid()}\n")

    while True:
        job = JOBS.get()
        t = time.time()
        try:
            job["out"] = generate(job["ids"], job["n"])
        except ValueError as e:
            job["error"], job["code"] = str(e), 400
        except Exception as e:  # a CUDA error, say: answer it, log it, keep serving
            traceback.print_exc()
            job["error"], job["code"] = f"{type(e).__name__}: {e}", 500
        job["ms"] = round((time.time() - t) * 1000, 1)
        job["done"].set()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
