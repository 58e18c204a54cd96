#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The client of bench/ml/serve.py for bench/ml/ml-suite.sh (stdlib only).

  client.py health URL --t0 EPOCH --timeout S
      polls URL/health every 20 ms until it answers 200; prints "health SECONDS"
      (seconds since EPOCH)
  client.py gen URL --ids 1,2,3 [--n 16] --t0 EPOCH --timeout S
      POSTs URL/generate until it answers 200 (retrying while the server is
      not up: refused, reset, 503); prints "answer SECONDS ID,ID,..."

Exit status 1 when --timeout runs out, 2 on an answer that is an error.
"""
import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.request

RETRY = (ConnectionError, http.client.HTTPException, TimeoutError, OSError)


def attempt(url, body, timeout):
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                 headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["health", "gen"])
    p.add_argument("url")
    p.add_argument("--ids", default="1,2,3,4,5,6,7,8")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--t0", type=float, default=None, help="epoch seconds to measure from (default: now)")
    p.add_argument("--timeout", type=float, default=300)
    a = p.parse_args()
    t0 = a.t0 if a.t0 is not None else time.time()
    deadline = time.time() + a.timeout
    url = a.url.rstrip("/") + ("/health" if a.what == "health" else "/generate")
    body = None
    if a.what == "gen":
        body = json.dumps({"ids": [int(x) for x in a.ids.split(",")], "n": a.n}).encode()
    last = "no attempt"
    while time.time() < deadline:
        try:
            status, data = attempt(url, body, max(1.0, min(120.0, deadline - time.time())))
        except urllib.error.HTTPError as e:
            if e.code != 503:
                print(f"client: {url}: HTTP {e.code}: {e.read()[:200]!r}", file=sys.stderr)
                return 2
            last = "503"
        except RETRY as e:
            last = f"{type(e).__name__}: {e}"
        else:
            t = time.time() - t0
            if a.what == "health":
                print(f"health {t:.3f}")
            else:
                ids = json.loads(data)["ids"]
                print(f"answer {t:.3f} {','.join(map(str, ids))}")
            return 0
        time.sleep(0.02)
    print(f"client: {url}: no answer in {a.timeout} s (last: {last})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
