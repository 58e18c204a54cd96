# SPDX-License-Identifier: Apache-2.0
"""Stand-in for bench/ml/serve.py: answers are hashes of the prompt; a forked
pool stands for inductor's compile workers."""
import argparse
import hashlib
import json
import multiprocessing as mp
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WARM = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        body = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200 if WARM.is_set() else 503, "ok")

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = [int(hashlib.sha256(f"{req['ids']}{i}".encode()).hexdigest()[:4], 16) for i in range(req["n"])]
        self.reply(200, json.dumps({"ids": ids}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=18431)
    p.add_argument("--ready-file")
    a, _ = p.parse_known_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    pool = mp.get_context("fork").Pool(3)
    time.sleep(1.5)  # "compiling"
    WARM.set()
    print("READY 1.5", flush=True)
    if a.ready_file:
        open(a.ready_file, "w").write(f"{os.getpid()}\n")
    while True:
        time.sleep(1)
