#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""One-way layers (issue 13): src/base <- src/backend <- src/core <- src/cli.

Every #include "..." of a source or header is mapped to the layer that
implements the header; a file may include only its own layer and those
below it, and the CLI includes no backend header (it reaches backends
through core: src/core/backends.c opens them).  KNOWN lists arrows still to
remove: the test fails on any new arrow, and on an entry of KNOWN that is
gone, so the list only shrinks.
"""
import re
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
ORDER = ["base", "backend", "core", "cli"]
HEADERS = {
    "base": ["alloc", "error", "util", "signals", "proctree", "sha256", "threads", "version"],
    "backend": ["criu", "cuda", "nvml", "containerd", "grpc", "gpu_device", "dlib", "containerd_int", "criu_pb",
                "cuda_abi"],
    "core": ["archive", "manifest", "orchestrator", "report", "thp", "undo", "gpumap", "prefetch", "backends", "check", "workdir",
             "orchestrator_int", "archive_internal", "archive_read_int", "gpu_stage", "bulk_uffd_int"],
    "cli": ["cli"],
}
# (file, header) arrows still to remove; empty now.
KNOWN = set()


def layer_of_header(name):
    base = Path(name).name
    base = re.sub(r"\.h(\.in)?$", "", base)
    if base.endswith(".pb-c"):
        return "backend"
    for layer, names in HEADERS.items():
        if base in names:
            return layer
    return None


def main():
    bad, seen_known = [], set()
    for layer in ORDER:
        for f in sorted((SRC / "src" / layer).glob("*.[ch]")):
            rel = str(f.relative_to(SRC))
            for inc in re.findall(r'^#include "([^"]+)"', f.read_text(), re.M):
                hl = layer_of_header(inc)
                if hl is None:
                    bad.append(f"{rel}: '{inc}' belongs to no layer (add it to HEADERS)")
                    continue
                if ORDER.index(hl) <= ORDER.index(layer) and not (layer == "cli" and hl == "backend"):
                    continue
                key = (rel, Path(inc).name[:-2])
                if key in KNOWN:
                    seen_known.add(key)
                    continue
                bad.append(f"{rel} ({layer}) includes '{inc}' ({hl}): an arrow {'up' if ORDER.index(hl) > ORDER.index(layer) else 'past core'}")
    for f in sorted((SRC / "include" / "kc").glob("*.h*")):
        hl = layer_of_header(f.name)
        if hl is None:
            bad.append(f"include/kc/{f.name} belongs to no layer (add it to HEADERS)")
            continue
        for inc in re.findall(r'^#include "([^"]+)"', f.read_text(), re.M):
            il = layer_of_header(inc)
            if il is None or ORDER.index(il) > ORDER.index(hl):
                bad.append(f"include/kc/{f.name} ({hl}) includes '{inc}' ({il})")
    for key in sorted(KNOWN - seen_known):
        bad.append(f"{key[0]} no longer includes '{key[1]}.h': take it off KNOWN")
    for b in bad:
        print(b)
    print(f"layers: {len(bad)} problem(s); {len(seen_known)} known arrows left (cli -> backend)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
