# SPDX-License-Identifier: Apache-2.0
"""A private containerd for the tests, and a tiny OCI image to run in it.

containerd runs as root with its own root, state dir and sockets under a
base dir in /tmp.  containerd 1.6 puts shim sockets under the hard-coded
/run/containerd/s and runc state under /run/containerd/runc, so it is
started in a private mount namespace with a tmpfs over /run: nothing of the
host's /run (or a host containerd) is touched, and everything it mounted
disappears with its processes.

Used by tests/integration/test_containerd.py; also by hand:

    python3 tests/containerd/ctrd_env.py start [--base DIR]   # prints the socket
    python3 tests/containerd/ctrd_env.py image [--base DIR]   # builds + imports
    python3 tests/containerd/ctrd_env.py stop  [--base DIR]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

DEFAULT_BASE = "/tmp/kc-ctrd"
NAMESPACE = "k8s.io"
IMAGE_REF = "docker.io/kcheckpoint/busybox:test"
BUSYBOX = "/bin/busybox"


def find_criu(source_dir=None):
    """The directory of a CRIU >= 4.1 binary for runc to find in PATH."""
    cands = []
    if os.environ.get("KC_CRIU"):
        cands.append(os.environ["KC_CRIU"])
    if source_dir:
        cands.append(os.path.join(source_dir, ".deps/criu/bin/criu"))
    here = os.path.dirname(os.path.abspath(__file__))
    cands.append(os.path.join(here, "../../.deps/criu/bin/criu"))
    cands.append("/tmp/criu-src/criu/criu")
    for c in cands:
        if os.access(c, os.X_OK):
            return os.path.dirname(os.path.abspath(c))
    return None


class Containerd:
    def __init__(self, base=DEFAULT_BASE, criu_dir=None):
        self.base = base
        self.sock = os.path.join(base, "containerd.sock")
        self.root = os.path.join(base, "root")
        self.state = os.path.join(base, "state")
        self.config = os.path.join(base, "config.toml")
        self.log = os.path.join(base, "containerd.log")
        self.pidfile = os.path.join(base, "containerd.pid")
        self.criu_dir = criu_dir or find_criu()
        self.proc = None

    # --- lifecycle -------------------------------------------------------

    def _write_config(self):
        disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.internal.v1.opt",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.tracing.processor.v1.otlp",
        ]
        cfg = f"""version = 2
root = "{self.root}"
state = "{self.state}"
disabled_plugins = {json.dumps(disabled)}

[grpc]
  address = "{self.sock}"

[ttrpc]
  address = "{self.sock}.ttrpc"

[debug]
  address = "{self.base}/debug.sock"
  level = "info"
"""
        with open(self.config, "w") as f:
            f.write(cfg)

    def env(self):
        e = dict(os.environ)
        path = e.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        if self.criu_dir:
            path = self.criu_dir + ":" + path
        e["PATH"] = path
        return e

    def start(self, timeout=30):
        if self.running():
            return
        os.makedirs(self.base, exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.state, exist_ok=True)
        self._write_config()
        inner = ("mount -t tmpfs -o mode=755 kc-ctrd-run /run && "
                 f"exec containerd --config {self.config}")
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=self.env(),
            start_new_session=True)
        logf.close()
        with open(self.pidfile, "w") as f:
            f.write(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.proc.returncode}); see {self.log}:\n"
                                   + self.log_tail())
            if os.path.exists(self.sock):
                r = self.ctr("version", check=False, timeout=10)
                if r.returncode == 0:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"containerd did not answer on '{self.sock}' in {timeout}s:\n"
                           + self.log_tail())

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def _pid(self):
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def running(self):
        return self._pid() is not None and os.path.exists(self.sock)

    def _shim_pids(self):
        """Shims this containerd started: their command line names our socket."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and \
                    self.sock.encode() in argv:
                pids.append(int(d))
        return pids

    def cleanup_namespace(self, ns=NAMESPACE):
        """Kills and deletes every task and container of ns."""
        r = self.ctr("-n", ns, "tasks", "ls", "-q", check=False, timeout=20)
        for cid in r.stdout.split():
            self.ctr("-n", ns, "tasks", "kill", "-a", "-s", "KILL", cid, check=False, timeout=20)
        r = self.ctr("-n", ns, "containers", "ls", "-q", check=False, timeout=20)
        for cid in r.stdout.split():
            self.ctr("-n", ns, "tasks", "rm", "-f", cid, check=False, timeout=20)
            self.ctr("-n", ns, "containers", "rm", cid, check=False, timeout=20)

    def stop(self, timeout=20):
        pid = self._pid()
        if pid is not None and os.path.exists(self.sock):
            try:
                self.cleanup_namespace()
            except Exception:
                pass
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc is not None:
                    if self.proc.poll() is not None:
                        break
                else:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if self.proc is not None:
                    self.proc.wait(5)
        # Shims outlive containerd; they hold the private mount namespace.
        for spid in self._shim_pids():
            try:
                os.kill(spid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def destroy(self):
        """stop() and remove the base dir."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # --- helpers ---------------------------------------------------------

    def ctr(self, *args, check=True, timeout=60, input=None):
        argv = ["ctr", "-a", self.sock] + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=self.env(), input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def import_image(self, tarball, ns=NAMESPACE):
        self.ctr("-n", ns, "images", "import", "--no-unpack=false", tarball, timeout=120)


# --- the OCI image --------------------------------------------------------

def _sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _layer_tar(busybox=BUSYBOX):
    """rootfs: static busybox with its applet links, and the usual dirs."""
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add_dir(name, mode=0o755):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = mode
            ti.mtime = 0
            t.addfile(ti)
        for d in ["bin", "dev", "proc", "sys", "etc", "data", "run", "var"]:
            add_dir(d)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as f:
            data = f.read()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size = len(data)
        ti.mode = 0o755
        ti.mtime = 0
        t.addfile(ti, io.BytesIO(data))
        for a in sorted(set(applets)):
            if a == "busybox":
                continue
            ti = tarfile.TarInfo("bin/" + a)
            ti.type = tarfile.SYMTYPE
            ti.linkname = "busybox"
            ti.mtime = 0
            t.addfile(ti)
        for name, content in [("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n"),
                              ("etc/group", b"root:x:0:\n")]:
            ti = tarfile.TarInfo(name)
            ti.size = len(content)
            ti.mode = 0o644
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def build_oci_image(out_path, ref=IMAGE_REF, busybox=BUSYBOX):
    """Writes an OCI image layout tarball for `ctr images import`."""
    layer = _layer_tar(busybox)
    layer_gz = gzip.compress(layer, mtime=0)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = json.dumps({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(layer_gz), "size": len(layer_gz)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _sha(manifest), "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
        }],
    }, sort_keys=True).encode()
    blobs = [config, manifest, layer_gz]
    with tarfile.open(out_path, "w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for b in blobs:
            add("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b)
    return out_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["start", "stop", "image", "destroy"])
    p.add_argument("--base", default=DEFAULT_BASE)
    a = p.parse_args(argv)
    c = Containerd(a.base)
    if a.action == "start":
        if not c.criu_dir:
            print("warning: no CRIU >= 4.1 found; checkpoints will fail", file=sys.stderr)
        c.start()
        print(c.sock)
    elif a.action == "image":
        tarball = os.path.join(a.base, "busybox-oci.tar")
        build_oci_image(tarball)
        c.import_image(tarball)
        print(IMAGE_REF)
    elif a.action == "stop":
        c.stop()
    else:
        c.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
