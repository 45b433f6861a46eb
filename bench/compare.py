#!/usr/bin/env python3
"""Side-by-side benchmark of Go build caches: Go's own, gocacher, and the
seed project's go-cacher, on three workloads and up to nine scenarios.

    python3 bench/compare.py --runs 3

For each workload, run i builds every scenario in order; within a scenario
the contenders go one after another (their order rotates from run to run),
so machine drift hits all of them alike. Scenarios of run i start from the
state its cold builds left (the helper's local dir, the bucket, the server),
after one untimed "settle" build per remote-capable helper (--no-settle
skips it): a remote-warm build whose manifest the measured builds prefetch.

Per build: wall time until go has exited AND the helper process has exited
(uploads included), build CPU, the helper's CPU and peak RSS (from a
/usr/bin/time wrapper inside GOCACHEPROG), the helper's stats, S3 requests
by kind (MinIO's own metrics), requests seen by the seed's server, and the
bytes through the delay proxy. See bench/README.md.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
TIME_BIN = "/usr/bin/time"

WORKLOADS = ("std", "minio-go", "fixture")
CONTENDERS = ("native", "gocacher", "seed")
MINIO_GO_MODULE = "github.com/minio/minio-go/v7"
DEFAULT_MINIO_GO_VERSION = "v7.4.1"
SEED_MODULE = "github.com/bradfitz/go-tool-cache"
NOT_RUN = {
    "tailscale/go-cache-plugin": "not run: not served by the module proxy on this machine "
                                 "(it answers 403 \"not available\" for every version)",
}
S3_KEY = "benchadmin"
S3_SECRET = "bench-secret-key-0001"
S3_REGION = "us-east-1"
S3_PREFIX = "gocacher"


class BenchError(Exception):
    """Setup or a build failed; the message says why."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP, handled like Ctrl-C."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def run_text(argv: list[str], **kw) -> str:
    """Output of a short informational command, or '?' if it fails."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_checked(argv: list[str], what: str, **kw) -> str:
    """Runs a setup command; raises BenchError with its output if it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, **kw)
    except (OSError, subprocess.SubprocessError) as err:
        raise BenchError(f"{what}: `{' '.join(argv)}` could not run: {err}") from None
    if proc.returncode != 0:
        raise BenchError(f"{what}: `{' '.join(argv)}` exited {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_tree(path: Path) -> None:
    """rmtree that also clears read-only files (as the module cache has)."""
    def onerror(func, p, _exc):
        try:
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def children_cpu() -> float:
    """User+sys CPU seconds of all waited-for descendants so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user+sys, all threads) of a running process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def go_quote(arg: str) -> str:
    """Quotes one word for GOCACHEPROG, which cmd/go splits like a command line."""
    if arg and not any(c.isspace() or c in "'\"" for c in arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if '"' not in arg:
        return f'"{arg}"'
    raise BenchError(f"cannot quote {arg!r} for GOCACHEPROG")


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (OSError, urllib.error.URLError):
        return 0, ""


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# Child processes we own: servers and proxies. Each gets its own session, so
# a Ctrl-C in the terminal reaches only us, and we stop them in order.
# --------------------------------------------------------------------------

class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 10) -> None:
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except ProcessLookupError:
                pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            self.stop(p)


# --------------------------------------------------------------------------
# MinIO, with a bucket created by a SigV4-signed request
# --------------------------------------------------------------------------

def uri_encode(text: str, keep_slash: bool) -> str:
    """SigV4 URI encoding: everything but A-Z a-z 0-9 - _ . ~ (and / in paths)."""
    return urllib.parse.quote(text, safe="/~" if keep_slash else "~")


class S3Client:
    """Just enough S3 for the benchmark's own bookkeeping (create a bucket,
    list, copy objects out and back), path-style, signed with AWS Signature
    V4 in a few lines of hmac/hashlib, over one keep-alive connection."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.host = endpoint.split("://", 1)[1]
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload_hash = hashlib.sha256(body).hexdigest()
        hdrs = {k.lower(): " ".join(v.split()) for k, v in (headers or {}).items()}
        hdrs.update({"host": self.host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date})
        names = sorted(hdrs)
        canon_path = uri_encode(path, keep_slash=True)
        canon_query = "&".join(f"{uri_encode(k, False)}={uri_encode(v, False)}"
                               for k, v in sorted((query or {}).items()))
        canonical = "\n".join([method, canon_path, canon_query, "".join(f"{k}:{hdrs[k]}\n" for k in names),
                               ";".join(names), payload_hash])
        scope = f"{day}/{S3_REGION}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + S3_SECRET).encode()
        for part in (day, S3_REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={S3_KEY}/{scope}, "
                                 f"SignedHeaders={';'.join(names)}, Signature={signature}")
        del hdrs["host"]
        url = canon_path + ("?" + canon_query if canon_query else "")
        for attempt in (1, 2):  # once more on a fresh connection if the old one was closed
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, timeout=30)
            try:
                self.conn.request(method, url, body=body if body or method == "PUT" else None, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn:
            self.conn.close()
            self.conn = None

    def list_keys(self, bucket: str) -> dict[str, str]:
        """key -> ETag of every object in the bucket."""
        out: dict[str, str] = {}
        token = None
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        while True:
            q = {"list-type": "2", "max-keys": "1000"}
            if token:
                q["continuation-token"] = token
            status, _, body = self.request("GET", f"/{bucket}", q)
            if status != 200:
                raise BenchError(f"MinIO: listing bucket {bucket} answered HTTP {status}: {body[:300]!r}")
            root = ET.fromstring(body)
            for c in root.iter(f"{ns}Contents"):
                out[c.findtext(f"{ns}Key")] = c.findtext(f"{ns}ETag") or ""
            token = root.findtext(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") != "true" or not token:
                return out


# Headers of an object that a copy must carry back (besides its body).
KEPT_HEADERS = ("content-type", "content-encoding", "content-language", "cache-control", "content-disposition")


class BucketSnapshot:
    """The objects of a bucket at one moment (keys, ETags, bodies, metadata),
    so that later builds can each start from exactly that state: objects
    added since are deleted, changed or deleted ones are put back. Generic:
    it knows nothing of gocacher's key layout."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.objects: dict[str, tuple[str, dict[str, str], bytes]] = {}
        for key, etag in s3.list_keys(bucket).items():
            status, headers, body = s3.request("GET", f"/{bucket}/{key}")
            if status != 200:
                raise BenchError(f"MinIO: reading {bucket}/{key} for the snapshot answered HTTP {status}")
            kept = {k: v for k, v in headers.items() if k.startswith("x-amz-meta-") or k in KEPT_HEADERS}
            self.objects[key] = (etag, kept, body)

    def restore(self) -> dict[str, object]:
        now = self.s3.list_keys(self.bucket)
        deleted, rewritten = [], []
        for key in now:
            if key not in self.objects:
                status, _, _ = self.s3.request("DELETE", f"/{self.bucket}/{key}")
                if status not in (200, 204):
                    raise BenchError(f"MinIO: deleting {self.bucket}/{key} answered HTTP {status}")
                deleted.append(key)
        for key, (etag, headers, body) in self.objects.items():
            if now.get(key) != etag:
                status, _, resp = self.s3.request("PUT", f"/{self.bucket}/{key}", body=body, headers=headers)
                if status != 200:
                    raise BenchError(f"MinIO: restoring {self.bucket}/{key} answered HTTP {status}: {resp[:300]!r}")
                rewritten.append(key)
        return {"deleted": len(deleted), "rewritten": rewritten[:20], "rewritten_count": len(rewritten)}


# MinIO's v3 metrics are computed on each scrape (the v2 cluster/node/bucket
# endpoints are cached for up to ~10 s), so a scrape right after a build is exact.
METRICS_PATH = "/minio/metrics/v3/api/requests"
METRIC_LINE = re.compile(r'^(minio_api_requests_\w+)\{([^}]*)\}\s+(\S+)$')


class Minio:
    def __init__(self, binary: Path, root: Path, children: Children) -> None:
        self.binary = binary
        self.root = root
        self.children = children
        self.port = 0
        self.endpoint = ""
        self.proc: subprocess.Popen | None = None
        self.log = root / "minio.log"
        self.s3: S3Client | None = None

    def start(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.s3 = S3Client(self.endpoint)
        env = dict(os.environ, MINIO_ROOT_USER=S3_KEY, MINIO_ROOT_PASSWORD=S3_SECRET,
                   MINIO_PROMETHEUS_AUTH_TYPE="public", MINIO_BROWSER="off")
        with open(self.log, "w") as logf:
            self.proc = self.children.start(
                [str(self.binary), "server", "--quiet", "--address", f"127.0.0.1:{self.port}",
                 "--certs-dir", str(self.root / "certs"), str(self.root / "data")],
                env=env, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            status, _ = http_get(self.endpoint + "/minio/health/live", timeout=2)
            if status == 200:
                break
            if self.proc.poll() is not None:
                raise BenchError(f"MinIO ({self.binary}) exited with {self.proc.returncode} before it was ready:\n"
                                 f"{tail(self.log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"MinIO ({self.binary}) not ready after 90 s on {self.endpoint}:\n{tail(self.log)}")
            time.sleep(0.2)
        if self.metrics() is None:
            raise BenchError(f"MinIO at {self.endpoint}: no metrics at {METRICS_PATH} "
                             "(MINIO_PROMETHEUS_AUTH_TYPE=public should allow them)")

    def create_bucket(self, name: str) -> None:
        status, _, _ = self.s3.request("PUT", "/" + name)
        if status != 200:
            raise BenchError(f"MinIO at {self.endpoint}: creating bucket {name} answered HTTP {status}")

    def metrics(self) -> dict[str, float] | None:
        """S3 API counters: requests by API name, 4xx errors, bytes in/out."""
        status, text = http_get(self.endpoint + METRICS_PATH)
        if status != 200:
            return None
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = METRIC_LINE.match(line)
            if not m:
                continue
            metric, labels, value = m.groups()
            lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if lab.get("type") != "s3":
                continue
            if metric in ("minio_api_requests_total", "minio_api_requests_4xx_errors_total",
                          "minio_api_requests_errors_total"):
                key = {"minio_api_requests_total": "req", "minio_api_requests_4xx_errors_total": "4xx",
                       "minio_api_requests_errors_total": "err"}[metric]
                out[f"{key}:{lab.get('name', '?')}"] = float(value)
            elif metric == "minio_api_requests_traffic_received_bytes":
                out["bytes_received"] = float(value)
            elif metric == "minio_api_requests_traffic_sent_bytes":
                out["bytes_sent"] = float(value)
        return out

    def cpu(self) -> float | None:
        return proc_cpu(self.proc.pid) if self.proc else None

    def stop(self) -> None:
        if self.s3:
            self.s3.close()
        if self.proc:
            self.children.stop(self.proc)
            self.proc = None


def s3_delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, object] | None:
    if before is None or after is None:
        return None
    d = {k: int(after.get(k, 0) - before.get(k, 0)) for k in set(before) | set(after)}
    by_api = {k.split(":", 1)[1]: v for k, v in d.items() if k.startswith("req:") and v}
    get = by_api.get("GetObject", 0)
    put = by_api.get("PutObject", 0)
    head = by_api.get("HeadObject", 0)
    lst = by_api.get("ListObjectsV2", 0) + by_api.get("ListObjects", 0)
    other = sum(by_api.values()) - get - put - head - lst
    return {
        "get": get, "put": put, "head": head, "list": lst, "other": other,
        "by_api": by_api,
        "errors_4xx": {k.split(":", 1)[1]: v for k, v in d.items() if k.startswith("4xx:") and v},
        "errors": {k.split(":", 1)[1]: v for k, v in d.items() if k.startswith("err:") and v},
        "bytes_received": d.get("bytes_received", 0),
        "bytes_sent": d.get("bytes_sent", 0),
    }


# --------------------------------------------------------------------------
# The seed's HTTP server, with a request log to count requests per build
# --------------------------------------------------------------------------

SEED_LOG_LINE = re.compile(r"(\d{3}) (GET|PUT|HEAD|POST|DELETE) (\S+)")


class SeedServer:
    def __init__(self, binary: Path, root: Path, children: Children) -> None:
        self.binary = binary
        self.root = root
        self.children = children
        self.log = root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as logf:
            # --verbose logs one line per request: "<status> <method> <uri>".
            self.proc = self.children.start(
                [str(self.binary), "--cache-dir", str(self.root / "data"),
                 "--listen", f"127.0.0.1:{self.port}", "--verbose"],
                stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while http_get(f"http://127.0.0.1:{self.port}/", timeout=2)[0] != 200:
            if self.proc.poll() is not None:
                raise BenchError(f"go-cacher-server exited with {self.proc.returncode} before it was ready:\n"
                                 f"{tail(self.log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"go-cacher-server not ready after 30 s on port {self.port}:\n{tail(self.log)}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def requests_since(self, offset: int) -> dict[str, int]:
        """Requests the server logged after `offset`: GET /action (lookups),
        GET /output (downloads), PUT (uploads), by status too."""
        with open(self.log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = {"get_action": 0, "get_action_404": 0, "get_output": 0, "put": 0, "put_errors": 0, "other": 0}
        for m in SEED_LOG_LINE.finditer(text):
            status, method, uri = int(m.group(1)), m.group(2), m.group(3)
            if method == "GET" and uri.startswith("/action/"):
                out["get_action"] += 1
                out["get_action_404"] += status == 404
            elif method == "GET" and uri.startswith("/output/"):
                out["get_output"] += 1
            elif method == "PUT":
                out["put"] += 1
                out["put_errors"] += status >= 300
            elif uri != "/":
                out["other"] += 1
        return out

    def cpu(self) -> float | None:
        return proc_cpu(self.proc.pid) if self.proc else None

    def stop(self) -> None:
        if self.proc:
            self.children.stop(self.proc)
            self.proc = None


# --------------------------------------------------------------------------
# The delay proxy (bench/delayproxy.py), one per build
# --------------------------------------------------------------------------

class DelayProxy:
    def __init__(self, target_port: int, rtt_ms: float, children: Children) -> None:
        self.children = children
        self.rtt_ms = rtt_ms
        self.proc = children.start(
            [sys.executable, str(SCRIPT_DIR / "delayproxy.py"), "--target", f"127.0.0.1:{target_port}",
             "--rtt-ms", str(rtt_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # "port N", or EOF if it died
        if not line.startswith("port "):
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.children.stop(self.proc)
            raise BenchError(f"delay proxy did not start: {line!r} {err[-2000:]}")
        self.port = int(line.split()[1])

    def cpu(self) -> float | None:
        return proc_cpu(self.proc.pid)

    def stop(self) -> dict[str, object]:
        """Stops the proxy and returns its counters."""
        try:
            self.proc.send_signal(signal.SIGTERM)
            out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        finally:
            self.children.stop(self.proc)
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise BenchError(f"delay proxy exited without counters (exit {self.proc.returncode}): {err[-2000:]}")


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

class Workload:
    def __init__(self, name: str, argv: list[str], cwd: Path, module_dir: Path | None, info: dict[str, object]):
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.module_dir = module_dir
        self.info = info
        self.main_packages = 0
        self.edit_file: Path | None = None
        self.edit_original: bytes | None = None

    def apply_edit(self, n: int) -> None:
        assert self.edit_file is not None and self.edit_original is not None
        text = (f"\n// Added by bench/compare.py for the one-file-change scenario (edit {n}).\n"
                f"func BenchmarkEdit{n}() int {{ return {n} }}\n")
        self.edit_file.write_bytes(self.edit_original + text.encode())

    def revert_edit(self) -> None:
        if self.edit_file is not None and self.edit_original is not None:
            self.edit_file.write_bytes(self.edit_original)


def go_list_packages(cwd: Path, env: dict[str, str], pattern: str) -> list[dict[str, object]]:
    fmt = "{{.ImportPath}}\t{{.Name}}\t{{join .Imports \",\"}}\t{{join .GoFiles \",\"}}\t{{.Dir}}"
    out = run_checked(["go", "list", "-f", fmt, pattern], f"go list {pattern} in {cwd}", cwd=cwd, env=env)
    pkgs = []
    for line in out.splitlines():
        path, name, imports, gofiles, pdir = line.split("\t")
        pkgs.append({"path": path, "name": name, "imports": [i for i in imports.split(",") if i],
                     "gofiles": [g for g in gofiles.split(",") if g], "dir": pdir})
    return pkgs


def choose_edit_target(pkgs: list[dict[str, object]]) -> tuple[dict[str, object], str, int]:
    """The package that most other packages of the module import (ties: the
    one with the fewest imports of its own, then by path), and its first
    plain Go file. Returns (package, file name, importer count)."""
    in_module = {p["path"] for p in pkgs}
    importers = {p["path"]: 0 for p in pkgs}
    for p in pkgs:
        for imp in p["imports"]:
            if imp in importers and imp != p["path"]:
                importers[imp] += 1
    candidates = [p for p in pkgs if p["name"] != "main" and p["gofiles"] and importers[p["path"]] > 0]
    if not candidates:
        raise BenchError("one-file-change: no package in the module is imported by another one")
    candidates.sort(key=lambda p: (-importers[p["path"]], len([i for i in p["imports"] if i in in_module]),
                                   len(p["imports"]), p["path"]))
    pkg = candidates[0]
    files = sorted(f for f in pkg["gofiles"] if not f.endswith("_test.go"))
    return pkg, files[0], importers[pkg["path"]]


def prepare_workload(name: str, src_root: Path, env: dict[str, str], args: argparse.Namespace) -> Workload:
    if name == "std":
        cwd = src_root / "std"
        cwd.mkdir(parents=True)
        wl = Workload(name, ["go", "build", "std"], cwd, None, {"command": "go build std"})
        pkgs = go_list_packages(cwd, env, "std")
    else:
        if name == "minio-go":
            spec = f"{MINIO_GO_MODULE}@{args.minio_go_version}"
            log(f"# {name}: go mod download -json {spec}")
            meta = json.loads(run_checked(["go", "mod", "download", "-json", spec],
                                          f"fetching {spec} through the module proxy", env=env))
            if meta.get("Error"):
                raise BenchError(f"go mod download {spec}: {meta['Error']}")
            source = Path(meta["Dir"])
            info = {"module": MINIO_GO_MODULE, "version": meta.get("Version"), "sum": meta.get("Sum"),
                    "command": "go build ./...",
                    "note": "build only: its tests need network access (a live S3 endpoint)"}
        else:
            source = REPO_ROOT / "integration" / "fixture"
            info = {"module": "example.com/fixture (integration/fixture)", "command": "go build ./..."}
        mod_dir = src_root / name
        shutil.copytree(source, mod_dir, symlinks=True)
        for dirpath, dirnames, filenames in os.walk(mod_dir):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | 0o200)
        os.chmod(mod_dir, 0o755)
        # Untimed: every dependency into the shared module cache.
        run_checked(["go", "mod", "download"], f"go mod download in {mod_dir}", cwd=mod_dir, env=env)
        wl = Workload(name, ["go", "build", "./..."], mod_dir, mod_dir, info)
        pkgs = go_list_packages(mod_dir, env, "./...")
        pkg, fname, n_importers = choose_edit_target(pkgs)
        wl.edit_file = Path(pkg["dir"]) / fname
        wl.edit_original = wl.edit_file.read_bytes()
        wl.info["edit"] = {"file": str(wl.edit_file.relative_to(mod_dir)), "package": pkg["path"],
                           "importers_in_module": n_importers,
                           "change": "appends `func BenchmarkEdit<N>() int { return N }` (N unique per build)"}
    wl.main_packages = sum(1 for p in pkgs if p["name"] == "main")
    wl.info["packages"] = len(pkgs)
    wl.info["main_packages"] = wl.main_packages
    return wl


# --------------------------------------------------------------------------
# One build
# --------------------------------------------------------------------------

TIME_LINE = re.compile(r"^(\d+) (\d+\.\d+) (\d+\.\d+)$")
SEED_STATS = re.compile(r"cacher: closing; (\d+) gets \((\d+) hits, (\d+) misses, (\d+) errors\); "
                        r"(\d+) puts \((\d+) errors\)")


def read_time_file(path: Path) -> dict[str, object] | None:
    """The `%M %U %S` line GNU time writes when the helper exits, or None
    while it is not there yet. A non-zero exit adds a line before it."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    if not lines:
        return None
    m = TIME_LINE.match(lines[-1].strip())
    if not m:
        return None
    out: dict[str, object] = {"helper_rss_mb": int(m.group(1)) / 1024,
                              "helper_cpu_s": float(m.group(2)) + float(m.group(3))}
    if len(lines) > 1:
        out["helper_exit"] = " | ".join(lines[:-1])
    return out


def timed_build(wl: Workload, env: dict[str, str], time_file: Path | None, args: argparse.Namespace,
                tag: str) -> dict[str, object]:
    """Runs the workload's build; the clock stops when go has exited and,
    with a helper, when /usr/bin/time has written the helper's report (the
    helper has exited). cmd/go itself waits only for the helper's stdout."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(wl.argv, cwd=wl.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.build_timeout)
    except BaseException as err:
        # Timeout, Ctrl-C or SIGTERM: the build's whole process group goes
        # (go, its compilers, the helper and its /usr/bin/time wrapper).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if isinstance(err, subprocess.TimeoutExpired):
            raise BenchError(f"{tag}: `{' '.join(wl.argv)}` did not finish within {args.build_timeout} s") from None
        raise
    t_go = time.perf_counter()
    go_cpu = children_cpu() - cpu0
    rec: dict[str, object] = {"go_exit_s": t_go - t0, "go_tree_cpu_s": go_cpu, "exit_code": proc.returncode}
    text = out.decode(errors="replace")
    if time_file is not None:
        deadline = t_go + args.helper_timeout
        while True:
            report = read_time_file(time_file)
            if report is not None:
                break
            if time.perf_counter() > deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the helper is still in the build's group
                except ProcessLookupError:
                    pass
                raise BenchError(f"{tag}: the GOCACHEPROG helper had not exited {args.helper_timeout} s after go "
                                 f"(no report in {time_file}); build output:\n{text[-3000:]}")
            time.sleep(0.002)
        rec.update(report)
    rec["wall_s"] = time.perf_counter() - t0
    rec["output"] = text[-6000:]
    if proc.returncode != 0:
        raise BenchError(f"{tag}: `{' '.join(wl.argv)}` in {wl.cwd} exited {proc.returncode}:\n{text[-4000:]}")
    rec["build_cpu_s"] = go_cpu + float(rec.get("helper_cpu_s", 0.0))
    if "helper_cpu_s" in rec and rec["build_cpu_s"] > 0:
        rec["helper_cpu_pct"] = 100 * float(rec["helper_cpu_s"]) / float(rec["build_cpu_s"])
    return rec


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

def scenario_rtt(scenario: str) -> float:
    m = re.search(r"-(\d+(?:\.\d+)?)ms$", scenario)
    return float(m.group(1)) if m else 0.0


SETTLE = "settle"


def scenario_kind(scenario: str) -> str:
    """cold | local-warm | remote-warm | one-file-change | settle (the
    untimed remote-warm build after a cold one; never in the tables)"""
    if scenario == SETTLE:
        return SETTLE
    for kind in ("one-file-change", "remote-warm", "local-warm", "cold"):
        if scenario.startswith(kind):
            return kind
    raise ValueError(scenario)


def native_scenario(scenario: str) -> str:
    """The native build that stands for a scenario: native has no remote, so
    remote-warm* maps to its local-warm and one-file-change* to one
    one-file-change build on its warm GOCACHE."""
    kind = scenario_kind(scenario)
    return {"remote-warm": "local-warm"}.get(kind, kind)


def ratio_base(scenario: str) -> str:
    kind = scenario_kind(scenario)
    return {"cold": "cold", "one-file-change": "one-file-change"}.get(kind, "local-warm")


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, env: dict[str, str], children: Children,
                 meta: dict[str, object]) -> None:
        self.args = args
        self.root = root
        self.env = env
        self.children = children
        self.meta = meta
        self.records: list[dict[str, object]] = []
        self.problems: list[str] = []
        self.minio: Minio | None = None
        self.gocacher: Path | None = None
        self.seed_client: Path | None = None
        self.seed_server_bin: Path | None = None
        self.edit_counter = 0
        self.logs = root / "logs"
        # Trees a build is done with wait here until the temp root goes at
        # the end (see discard).
        self.discarded = root / "discarded"
        self.discard_count = 0
        self.logs.mkdir()

    # -- one build of one contender ------------------------------------
    def build(self, wl: Workload, contender: str, scenario: str, run: int, state: dict[str, object],
              order: int) -> dict[str, object]:
        tag = f"{wl.name}-run{run}-{scenario}-{contender}"
        bdir = self.root / "runs" / tag
        bdir.mkdir(parents=True)
        kind = scenario_kind(scenario)
        rtt = scenario_rtt(scenario)
        env = dict(self.env)
        time_file = self.logs / f"{tag}.time"
        stats_file = self.logs / f"{tag}.stats.json"
        rec: dict[str, object] = {"workload": wl.name, "contender": contender, "scenario": scenario, "run": run,
                                  "order_in_scenario": order, "rtt_ms": rtt}
        cleanup: list[Path] = []
        proxy: DelayProxy | None = None
        server_cpu0 = None
        server = None

        if contender == "native":
            gocache = state["native_gocache"]
            env["GOCACHE"] = str(gocache)
            time_file = None
        else:
            gocache = bdir / "gocache"
            gocache.mkdir()
            cleanup.append(gocache)
            env["GOCACHE"] = str(gocache)
            cold_dir = state[f"{contender}_local_cold"]
            local = cold_dir if kind == "local-warm" else (cold_dir if kind == "cold" else bdir / "local")
            if local != cold_dir:
                cleanup.append(local)
            remote = kind != "local-warm"
            if contender == "gocacher":
                assert self.gocacher and self.minio
                server = self.minio
                helper = [str(self.gocacher), "--cache-dir", str(local), "--stats-file", str(stats_file)]
                if remote:
                    endpoint = self.minio.endpoint
                    if rtt:
                        proxy = DelayProxy(self.minio.port, rtt, self.children)
                        endpoint = f"http://127.0.0.1:{proxy.port}"
                    helper += ["--remote", f"s3://{state['bucket']}/{S3_PREFIX}", "--s3-endpoint", endpoint,
                               "--s3-region", S3_REGION]
                    # The scope travels by env so that a binary without --scope still works.
                    env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_REGION=S3_REGION,
                               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent",
                               AWS_SHARED_CREDENTIALS_FILE="/nonexistent", GOCACHER_SCOPE=f"bench-{wl.name}")
            else:  # seed
                assert self.seed_client
                seed: SeedServer = state["seed_server"]
                server = seed
                helper = [str(self.seed_client), "--cache-dir", str(local), "--verbose"]
                if remote:
                    url = seed.url
                    if rtt:
                        proxy = DelayProxy(seed.port, rtt, self.children)
                        url = f"http://127.0.0.1:{proxy.port}"
                    helper += ["--cache-server", url]
            rec["helper_argv"] = helper
            prog = [TIME_BIN, "-f", "%M %U %S", "-o", str(time_file)] + helper
            env["GOCACHEPROG"] = " ".join(go_quote(a) for a in prog)

        if kind == "one-file-change":
            self.edit_counter += 1
            wl.apply_edit(self.edit_counter)
            rec["edit"] = {"file": wl.info["edit"]["file"], "n": self.edit_counter}

        metrics0 = self.minio.metrics() if contender == "gocacher" and self.minio else None
        seed_off = state["seed_server"].log_offset() if contender == "seed" else None
        if server is not None:
            server_cpu0 = server.cpu()
        proxy_cpu0 = proxy.cpu() if proxy else None
        try:
            rec.update(timed_build(wl, env, time_file, self.args, tag))
        finally:
            if kind == "one-file-change":
                wl.revert_edit()
            if proxy is not None and (sys.exc_info()[0] is not None):
                self.children.stop(proxy.proc)
        rec["loadavg_1m_after"] = os.getloadavg()[0]

        # Everything below is untimed.
        if server is not None and server_cpu0 is not None:
            c = server.cpu()
            rec["server_cpu_s"] = None if c is None else round(c - server_cpu0, 3)
        if proxy is not None:
            c = proxy.cpu()
            rec["proxy_cpu_s"] = None if c is None or proxy_cpu0 is None else round(c - proxy_cpu0, 3)
            counters = proxy.stop()
            rec["proxy"] = counters
            rec["wire_bytes"] = counters["bytes_up"] + counters["bytes_down"]
            rec["wire_source"] = "delay proxy: all TCP bytes, both directions"
        if contender == "gocacher":
            try:
                rec["stats"] = json.loads(stats_file.read_text())
            except (OSError, ValueError) as err:
                rec["stats_error"] = f"{stats_file}: {err}"
            if self.minio:
                rec["s3"] = s3_delta(metrics0, self.minio.metrics())
                if rec["s3"] is not None and "wire_bytes" not in rec:
                    rec["wire_bytes"] = rec["s3"]["bytes_received"] + rec["s3"]["bytes_sent"]
                    rec["wire_source"] = "MinIO metrics: S3 request and response bodies"
        elif contender == "seed":
            m = None
            for m in SEED_STATS.finditer(str(rec.get("output", ""))):
                pass
            if m:
                keys = ("gets", "hits", "misses", "get_errors", "puts", "put_errors")
                rec["stats"] = dict(zip(keys, (int(g) for g in m.groups())))
            else:
                rec["stats_error"] = "no 'cacher: closing' line from go-cacher --verbose"
            time.sleep(0.1)  # the server logs a request as its handler returns
            rec["seed_requests"] = state["seed_server"].requests_since(seed_off)
        for p in cleanup:
            self.discard(p)
        self.discard(bdir)
        self.check(wl, rec)
        return rec

    def check(self, wl: Workload, rec: dict[str, object]) -> None:
        """Sanity checks; problems go to the report, the run goes on."""
        tag = f"{rec['workload']} run {rec['run']} {rec['scenario']} {rec['contender']}"
        found = []
        for key in ("helper_exit", "stats_error"):
            if key in rec:
                found.append(f"{tag}: {rec[key]}")
        st = rec.get("stats")
        kind = scenario_kind(str(rec["scenario"]))
        if isinstance(st, dict):
            if st.get("get_errors") or st.get("put_errors"):
                found.append(f"{tag}: get_errors={st.get('get_errors')} put_errors={st.get('put_errors')}")
            if kind in ("local-warm", "remote-warm", SETTLE) and st.get("misses", 0) > wl.main_packages:
                found.append(f"{tag}: warm build missed {st.get('misses')} times (expected {wl.main_packages}: "
                             f"the link actions of main packages, which cmd/go never caches)")
            for key in ("remote_errors", "corrupt", "upload_errors", "uploads_dropped"):
                if st.get(key):
                    found.append(f"{tag}: {key}={st[key]}")
        s3 = rec.get("s3")
        if isinstance(s3, dict) and isinstance(st, dict) and "uploads" in st:
            puts = s3["put"]
            expect = int(st.get("uploads", 0)) + int(st.get("upload_errors", 0))
            if puts < expect:
                found.append(f"{tag}: MinIO counted {puts} PUTs but gocacher reports {expect} uploads")
        self.problems += found
        rec["problems"] = found

    # -- one workload: warm-up, then the runs ---------------------------
    def run_workload(self, wl: Workload, scenarios: list[str]) -> None:
        args = self.args
        log(f"# {wl.name}: warm-up build (untimed): {' '.join(wl.argv)} in {wl.cwd}")
        warm = self.root / "warmup-gocache"
        t0 = time.perf_counter()
        proc = subprocess.run(wl.argv, cwd=wl.cwd, env=dict(self.env, GOCACHE=str(warm)),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        self.discard(warm)
        if proc.returncode != 0:
            hint = ""
            if wl.name == "minio-go":
                hint = f"\n(try another served version with --minio-go-version; this one was {args.minio_go_version})"
            raise BenchError(f"{wl.name}: warm-up `{' '.join(wl.argv)}` failed:\n"
                             f"{(proc.stdout + proc.stderr)[-4000:]}{hint}")
        wl.info["warmup_s"] = round(time.perf_counter() - t0, 2)

        contenders = list(args.contenders)
        # Settling only matters to builds that read the store.
        settle = args.settle and any(scenario_kind(s) in ("remote-warm", "one-file-change") for s in scenarios)
        wl.info["settle"] = settle
        for run in range(1, args.runs + 1):
            run_root = self.root / "runs" / f"{wl.name}-run{run}"
            run_root.mkdir(parents=True)
            state: dict[str, object] = {"native_gocache": run_root / "native-gocache"}
            state["native_gocache"].mkdir()
            for c in ("gocacher", "seed"):
                state[f"{c}_local_cold"] = run_root / f"{c}-local"
            if "gocacher" in contenders:
                state["bucket"] = f"{wl.name}-run{run}"
                self.minio.create_bucket(state["bucket"])
            if "seed" in contenders:
                server = SeedServer(self.seed_server_bin, run_root / "seed-server", self.children)
                server.start()
                state["seed_server"] = server
            # Rotate the contenders' order from run to run.
            k = (run - 1) % len(contenders)
            order = contenders[k:] + contenders[:k]
            done_native: set[str] = set()
            try:
                for scenario in scenarios:
                    for i, contender in enumerate(order):
                        name = scenario
                        if contender == "native":
                            name = native_scenario(scenario)
                            if name in done_native:
                                continue
                            done_native.add(name)
                        rec = self.build(wl, contender, name, run, state, i)
                        if name == "cold" and contender != "native":
                            self.check_cold_filled(rec)
                        elif args.bucket_state == "restore" and scenario_kind(name) in ("remote-warm", "one-file-change") \
                                and contender != "native":
                            rec["store_restore"] = self.restore_store(contender, state)
                        self.records.append(rec)
                        self.progress(rec)
                        if name == "cold" and contender != "native":
                            if settle:
                                self.settle(wl, contender, run, state, i)
                            if args.bucket_state == "restore":
                                self.snapshot_store(contender, state)
            finally:
                if "seed_server" in state:
                    state["seed_server"].stop()
                self.discard(run_root)
            self.write_outputs(partial=True)

    def discard(self, path: Path) -> None:
        """Sets a finished tree aside instead of deleting it: the temp root
        goes at the very end. On ext4 without a journal (as on the machine
        measured here), creating an inode skips every inode deleted in the
        last minute (`recently_deleted` in the kernel's inode allocator), one
        by one: a build that writes a few thousand files right after the last
        build's few thousand were deleted spent half its helper's CPU there in
        `perf`. A fresh CI machine has no such deletions behind it, and
        native warm builds create no files, so deleting between builds
        measured the harness, not the contenders."""
        if not path.exists():
            return
        self.discarded.mkdir(exist_ok=True)
        self.discard_count += 1
        try:
            path.rename(self.discarded / str(self.discard_count))
        except OSError:
            remove_tree(path)

    def settle(self, wl: Workload, contender: str, run: int, state: dict[str, object], order: int) -> None:
        """One untimed remote-warm build (loopback, empty local dir and
        GOCACHE, the same flags, env and scope as the measured ones) right
        after the contender's cold build and before the store is snapshotted.
        For gocacher it rewrites the scope's manifest as a warm build sees it:
        the cold build's manifest lists every entry cmd/go put, including many
        a warm build never asks for, and the first warm build prunes them. So
        the measured remote builds are a CI fleet's steady state, not the first
        build after a cold one. For the seed it changes nothing but access
        times; it runs for symmetry. Recorded in the JSON, not in the tables."""
        rec = self.build(wl, contender, SETTLE, run, state, order)
        rec["untimed"] = True
        self.records.append(rec)
        self.progress(rec)
        tag = f"{wl.name} run {run}: {contender}'s settle build"
        if contender == "gocacher":
            st = rec.get("stats")
            if not isinstance(st, dict):
                raise BenchError(f"{tag} left no stats ({rec.get('stats_error')})")
            from_store = int(st.get("remote_hits", 0)) + int(st.get("prefetch_hits", 0))
            if not from_store:
                raise BenchError(f"{tag} got nothing from the bucket (stats: {json.dumps(st)}); build output:\n"
                                 f"{str(rec.get('output', ''))[-2000:]}")
        else:
            reqs = rec.get("seed_requests") or {}
            if not reqs.get("get_output"):
                raise BenchError(f"{tag} downloaded nothing from go-cacher-server (requests: {json.dumps(reqs)}); "
                                 f"build output:\n{str(rec.get('output', ''))[-2000:]}")

    def snapshot_store(self, contender: str, state: dict[str, object]) -> None:
        """Remembers the bucket / server dir as this run's cold build (and
        settle build) left it."""
        if contender == "gocacher":
            state["bucket_snapshot"] = BucketSnapshot(self.minio.s3, state["bucket"])
        else:
            data = state["seed_server"].root / "data"
            state["seed_files"] = {p for p in data.rglob("*") if p.is_file()}

    def restore_store(self, contender: str, state: dict[str, object]) -> dict[str, object]:
        """Puts the bucket / server dir back as the cold (and settle) builds
        left it, so that every remote scenario of a run starts from the same state (for
        gocacher: its per-scope manifest, which each build rewrites, and the
        objects a one-file-change build uploaded). Untimed."""
        if contender == "gocacher":
            return state["bucket_snapshot"].restore()
        data = state["seed_server"].root / "data"
        new = [p for p in data.rglob("*") if p.is_file() and p not in state["seed_files"]]
        for p in new:
            p.unlink()
        return {"deleted": len(new)}

    def check_cold_filled(self, rec: dict[str, object]) -> None:
        """Remote scenarios mean nothing if the cold build left the store empty."""
        if rec["contender"] == "gocacher":
            st = rec.get("stats") or {}
            if not st.get("uploads"):
                raise BenchError(f"{rec['workload']} run {rec['run']}: gocacher's cold build uploaded nothing "
                                 f"to MinIO (stats: {json.dumps(st)}); build output:\n{rec.get('output', '')[-2000:]}")
        else:
            reqs = rec.get("seed_requests") or {}
            if not reqs.get("put"):
                raise BenchError(f"{rec['workload']} run {rec['run']}: the seed's cold build sent no PUT to "
                                 f"go-cacher-server; build output:\n{rec.get('output', '')[-2000:]}")

    def progress(self, rec: dict[str, object]) -> None:
        line = (f"# {rec['workload']} run {rec['run']}/{self.args.runs} {rec['scenario']:<20} {rec['contender']:<8} "
                f"{rec['wall_s']:7.2f} s wall, {rec['build_cpu_s']:6.1f} s CPU")
        if "helper_cpu_s" in rec:
            line += f", helper {rec['helper_cpu_s']:.2f} s CPU {rec['helper_rss_mb']:.1f} MB"
        st = rec.get("stats")
        if isinstance(st, dict):
            line += f", gets {st.get('gets')} hits {st.get('hits')} puts {st.get('puts')}"
            if "remote_hits" in st:
                line += f" remote_hits {st.get('remote_hits')} uploads {st.get('uploads')}"
            if "prefetch_hits" in st:
                line += f" prefetch_hits {st.get('prefetch_hits')}"
            if "pack_prefetched" in st:
                line += f" pack_prefetched {st.get('pack_prefetched')} packs_written {st.get('packs_written')}"
        if isinstance(rec.get("s3"), dict):
            s = rec["s3"]
            line += f", S3 GET {s['get']} PUT {s['put']} HEAD {s['head']} LIST {s['list']}"
        if isinstance(rec.get("seed_requests"), dict):
            s = rec["seed_requests"]
            line += f", server GET {s['get_action']}+{s['get_output']} PUT {s['put']}"
        if "wire_bytes" in rec:
            line += f", wire {rec['wire_bytes'] / 1e6:.1f} MB"
        if isinstance(rec.get("store_restore"), dict):
            sr = rec["store_restore"]
            line += f", store restored (-{sr['deleted']} new, {sr.get('rewritten_count', 0)} rewritten)"
        if rec.get("problems"):
            line += "  <-- " + "; ".join(rec["problems"])
        log(line)

    # -- outputs --------------------------------------------------------
    def write_outputs(self, partial: bool = False, error: str | None = None) -> str:
        summary = summarize(self.records)
        md = render(self.meta, self.workload_infos, summary, self.problems, error, partial)
        out = {"meta": self.meta, "workloads": self.workload_infos, "not_run": NOT_RUN, "summary": summary,
               "table_markdown": md, "problems": self.problems, "error": error, "partial": partial,
               "records": self.records}
        self.args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
        tmp.replace(self.args.json)
        self.args.md.parent.mkdir(parents=True, exist_ok=True)
        self.args.md.write_text(md + "\n")
        return md

    workload_infos: dict[str, object] = {}


# --------------------------------------------------------------------------
# Summary and table
# --------------------------------------------------------------------------

def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per workload x scenario x contender; ratios are medians of
    per-run ratios against the native build of the same workload and run.
    Settle builds are left out (they are only in the raw records)."""
    records = [r for r in records if r["scenario"] != SETTLE]
    native = {(r["workload"], r["run"], r["scenario"]): r["wall_s"] for r in records if r["contender"] == "native"}
    keys: list[tuple[str, str, str]] = []
    for r in records:
        k = (r["workload"], r["scenario"], r["contender"])
        if k not in keys:
            keys.append(k)
    rows = []
    for wl, scen, cont in keys:
        recs = [r for r in records if (r["workload"], r["scenario"], r["contender"]) == (wl, scen, cont)]
        walls = [float(r["wall_s"]) for r in recs]
        base = ratio_base(scen)
        ratios = [float(r["wall_s"]) / native[(wl, r["run"], base)] for r in recs
                  if native.get((wl, r["run"], base))]
        row: dict[str, object] = {
            "workload": wl, "scenario": scen, "contender": cont, "n": len(recs),
            "wall_median_s": med(walls), "wall_min_s": min(walls), "wall_max_s": max(walls),
            "ratio_vs_native": med(ratios), "ratio_base": f"native {base}",
            "build_cpu_median_s": med([r.get("build_cpu_s") for r in recs]),
            "helper_cpu_median_s": med([r.get("helper_cpu_s") for r in recs]),
            "helper_cpu_pct_median": med([r.get("helper_cpu_pct") for r in recs]),
            "helper_rss_median_mb": med([r.get("helper_rss_mb") for r in recs]),
            "helper_rss_max_mb": max((r["helper_rss_mb"] for r in recs if "helper_rss_mb" in r), default=None),
            "wire_median_mb": med([r["wire_bytes"] / 1e6 for r in recs if "wire_bytes" in r]),
            "wire_source": next((r["wire_source"] for r in recs if "wire_source" in r), None),
            "proxy_cpu_median_s": med([r.get("proxy_cpu_s") for r in recs]),
            "server_cpu_median_s": med([r.get("server_cpu_s") for r in recs]),
        }
        s3 = [r["s3"] for r in recs if isinstance(r.get("s3"), dict)]
        if s3:
            row["s3_median"] = {k: med([float(s[k]) for s in s3]) for k in ("get", "put", "head", "list", "other")}
        seed = [r["seed_requests"] for r in recs if isinstance(r.get("seed_requests"), dict)]
        if seed:
            row["seed_requests_median"] = {k: med([float(s[k]) for s in seed]) for k in seed[0]}
        stats = [r["stats"] for r in recs if isinstance(r.get("stats"), dict)]
        if stats:
            all_keys = sorted({k for s in stats for k in s if isinstance(s[k], (int, float))})
            # A key missing from a binary's stats stays missing (not 0).
            row["stats_median"] = {k: med([float(s[k]) for s in stats if k in s]) for k in all_keys}
        rows.append(row)
    return rows


def render(meta: dict[str, object], workloads: dict[str, object], rows: list[dict[str, object]],
           problems: list[str], error: str | None, partial: bool) -> str:
    def f(x, fmt="{:.2f}"):
        return "—" if x is None else fmt.format(x)

    def n(x):
        return "—" if x is None else f"{x:.0f}"

    m = meta
    out = [
        f"# Go build caches side by side ({'PARTIAL, ' if partial else ''}{m['date']})",
        "",
        f"{m['machine']['cpu_model']} ({m['machine']['cores']} cores, {m['machine']['ram_gb']} GB RAM, "
        f"Linux {m['machine']['kernel']}) · {m['go_version']} · gocacher {m['gocacher_rev']} · "
        f"seed {m['seed_version']} · MinIO {m['minio_version']} · {m['runs']} run(s) · "
        f"load avg at start {m['loadavg_start'][0]:.2f}",
        "",
    ]
    for wl, info in workloads.items():
        wrows = [r for r in rows if r["workload"] == wl]
        if not wrows:
            continue
        out += [f"## {wl}: `{info.get('command')}`" + (f" ({info['module']}@{info['version']})" if info.get("version") else ""),
                ""]
        out += ["| scenario | contender | n | median wall s | min–max s | vs native | helper CPU s | helper % build CPU "
                "| peak RSS MB | server CPU s | GET | PUT | HEAD | LIST+other | wire MB | gets / hits / remote hits "
                "| prefetch hits / gets |",
                "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in wrows:
            st = r.get("stats_median") or {}
            get = put = head = lst = "—"
            if "s3_median" in r:
                s = r["s3_median"]
                get, put, head, lst = n(s["get"]), n(s["put"]), n(s["head"]), n(s["list"] + s["other"])
            elif "seed_requests_median" in r:
                s = r["seed_requests_median"]
                get = f"{n(s['get_action'] + s['get_output'])}¹"
                put, head, lst = n(s["put"]), "0", n(s["other"])
            wire = f(r["wire_median_mb"], "{:.1f}")
            if r["wire_median_mb"] is not None and r.get("wire_source", "").startswith("MinIO"):
                wire += "²"
            hits = "—"
            if st:
                hits = f"{n(st.get('gets'))} / {n(st.get('hits'))} / {n(st.get('remote_hits'))}"
            pre = "—"
            if "prefetch_hits" in st:
                pre = f"{n(st.get('prefetch_hits'))} / {n(st.get('gets'))}"
            if "pack_prefetched" in st:
                pre += f" ({n(st.get('pack_prefetched'))} from the pack)"
            ratio = f(r["ratio_vs_native"], "{:.2f}×")
            out.append(
                f"| {r['scenario']} | {r['contender']} | {r['n']} | {f(r['wall_median_s'])} "
                f"| {f(r['wall_min_s'])}–{f(r['wall_max_s'])} | {ratio} | {f(r['helper_cpu_median_s'])} "
                f"| {f(r['helper_cpu_pct_median'], '{:.1f} %')} "
                f"| {f(r['helper_rss_median_mb'], '{:.1f}')} | {f(r['server_cpu_median_s'])} | {get} | {put} | {head} | {lst} | {wire} "
                f"| {hits} | {pre} |")
        notes = []
        if info.get("edit"):
            e = info["edit"]
            notes.append(f"one-file-change edits `{e['file']}` (package {e['package']}, imported by "
                         f"{e['importers_in_module']} package(s) of the module): {e['change']}.")
        elif wl == "std":
            notes.append("one-file-change is not run for std: its sources are the toolchain's own GOROOT, shared "
                         "by every build on the machine (and the go command itself).")
        if info.get("note"):
            notes.append(f"{info['note']}.")
        if info.get("main_packages"):
            notes.append(f"{info['main_packages']} main package(s): cmd/go never caches `go build`'s link step, "
                         f"so warm builds miss that many times, with every contender.")
        out += [""] + [f"- {x}" for x in notes] + [""]
    out += [
        "Reading the table:",
        "",
        "- **vs native**: median over runs of (this build's wall time / native's in the same run): cold rows "
        "against native cold; local-warm and remote-warm* rows against native local-warm (native has no remote "
        "tier, so its warm build is the baseline); one-file-change* rows against native one-file-change (the "
        "same edit, built on native's warm GOCACHE).",
        "- **wall** stops when go has exited and the helper has exited (pending uploads included).",
        ("- Every remote build of a run starts from the bucket / server as that run's cold build"
         + (" and settle build" if m.get("settle") else "") + " left it "
         "(what later builds added or overwrote is undone between builds, untimed)."
         if m.get("bucket_state", "restore") == "restore" else
         "- `--bucket-state carry`: each remote build sees what earlier builds of its run wrote."),
        ("- **settle**: right after each helper's cold build, one untimed remote-warm build (loopback, empty "
         "local dir and GOCACHE) rewrites the store's state as a warm build leaves it, so remote rows show a CI "
         "fleet's steady state: gocacher prefetches the manifest a warm build wrote, not the cold build's (which "
         "also lists entries cmd/go put but a warm build never asks for). Its records are in the JSON as "
         "scenario `settle`, not in the tables."
         if m.get("settle") else
         "- `--no-settle`: remote rows start from the manifest the cold build wrote: each is the first warm "
         "build after a cold one (gocacher prefetches entries a warm build never asks for)."
         if "settle" in m else None),
        "- **helper CPU / peak RSS** from `/usr/bin/time` wrapping the helper; **helper % build CPU** is the "
        "helper's share of (go's process tree + helper).",
        "- **server CPU**: CPU the server (MinIO for gocacher, go-cacher-server for the seed) used during the "
        "build, from /proc; it runs on the same cores as the build. The delay proxy's CPU is in the JSON "
        "(`proxy_cpu_s`).",
        "- **GET/PUT/HEAD/LIST**: gocacher's S3 requests as counted by MinIO (v3 metrics, scraped before and "
        "after each build). ¹ the seed's requests as logged by go-cacher-server: GET = GET /action lookups + "
        "GET /output downloads (two round trips per remote hit).",
        "- **wire MB**: bytes through the delay proxy, both directions, on -Nms rows; ² on loopback rows "
        "of gocacher, S3 body bytes from MinIO's metrics (no headers); the seed's loopback rows have no proxy "
        "and no byte count.",
        "- **gets / hits / remote hits**: the helper's own counters (medians). gocacher's `remote_hits` are "
        "on-demand downloads; gets answered from entries it prefetched count as `prefetch_hits` instead. The "
        "seed reports no remote hits (its server's GET /output count is the number of downloads).",
        "- **prefetch hits / gets**: gocacher's `prefetch_hits` and `gets` (only when the binary reports them); "
        "in parentheses, entries that came in the scope's pack (one GET); `prefetched`, `prefetch_unused_bytes` and "
        "`packs_written` are in the JSON.",
        "- " + "; ".join(f"{k}: {v}" for k, v in NOT_RUN.items()) + ".",
    ]
    out = [x for x in out if x is not None]
    if error:
        out += ["", f"**Stopped early**: {error}"]
    if problems:
        out += ["", f"Problems ({len(problems)}):", ""] + [f"- {p}" for p in problems[:50]]
        if len(problems) > 50:
            out.append(f"- ... and {len(problems) - 50} more (see the JSON)")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Setup: tools, metadata
# --------------------------------------------------------------------------

def tools_dir() -> Path:
    return Path(os.environ.get("GOCACHER_TOOLS_DIR") or Path.home() / ".cache/gocacher-tools")


def default_gocacher() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    return Path(target) / "release/gocacher" if target else REPO_ROOT / "target/release/gocacher"


def base_env() -> dict[str, str]:
    """The environment of every build. GOFLAGS is cleared and the toolchain
    pinned; no inherited GOCACHEPROG, GOCACHER_* or AWS_* can leak in."""
    env = {k: v for k, v in os.environ.items()
           if k != "GOCACHEPROG" and not k.startswith("GOCACHER_") and not k.startswith("AWS_")}
    env["GOFLAGS"] = ""
    env["GOTOOLCHAIN"] = "local"
    return env


def machine_info() -> dict[str, object]:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu_model": cpu_model, "cores": os.cpu_count(), "ram_gb": ram_gb, "kernel": platform.release()}


def ensure_tool(path: Path, installer: list[str], what: str) -> None:
    if os.access(path, os.X_OK):
        return
    log(f"# {what} missing at {path}: running {' '.join(installer)}")
    run_checked(installer, f"installing {what}", cwd=REPO_ROOT)
    if not os.access(path, os.X_OK):
        raise BenchError(f"{what}: {' '.join(installer)} ran but {path} is still missing")


def parse_list(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def expand_scenarios(spec: str | None, rtts: list[str], edit_rtts: list[str]) -> list[str]:
    def name(base: str, rtt: str) -> str:
        return base if float(rtt) == 0 else f"{base}-{rtt}ms"
    default = (["cold", "local-warm", "remote-warm"] + [name("remote-warm", r) for r in rtts if float(r)]
               + [name("one-file-change", r) for r in edit_rtts])
    if not spec:
        return default
    out = []
    for s in parse_list(spec, None, "scenario"):
        if s == "remote-warm-rtt":
            out += [name("remote-warm", r) for r in rtts if float(r)]
        elif re.fullmatch(r"(cold|local-warm|remote-warm|one-file-change)(-\d+(\.\d+)?ms)?", s) and \
                not re.fullmatch(r"(cold|local-warm)-.*", s):
            out.append(s)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {s!r}: use cold, local-warm, remote-warm, remote-warm-<N>ms, remote-warm-rtt "
                f"(every --rtts), one-file-change, one-file-change-<N>ms")
    # cold always runs first: every other scenario starts from its state.
    out = ["cold"] + [s for s in out if s != "cold"]
    return list(dict.fromkeys(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See bench/README.md.")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs per workload (default 3)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)} (default all)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS),
                    help=f"comma list of {', '.join(CONTENDERS)} (default all)")
    ap.add_argument("--scenarios", default=None,
                    help="comma list: cold, local-warm, remote-warm, remote-warm-<N>ms, remote-warm-rtt (one per "
                         "--rtts), one-file-change, one-file-change-<N>ms (default: all, from --rtts and --edit-rtts)")
    ap.add_argument("--rtts", default="10,50,100", help="RTTs in ms for the remote-warm-<N>ms scenarios (default 10,50,100)")
    ap.add_argument("--edit-rtts", default="0,50",
                    help="RTTs in ms for one-file-change (0 = loopback direct; default 0,50)")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/release/gocacher, else target/release/gocacher)")
    ap.add_argument("--minio-go-version", default=DEFAULT_MINIO_GO_VERSION,
                    help=f"version of {MINIO_GO_MODULE} for the minio-go workload (default {DEFAULT_MINIO_GO_VERSION})")
    ap.add_argument("--json", type=Path, default=SCRIPT_DIR / "results/compare.json", help="JSON output")
    ap.add_argument("--md", type=Path, default=None, help="markdown output (default: the --json path with .md)")
    ap.add_argument("--build-timeout", type=float, default=1800, help="seconds one build may take (default 1800)")
    ap.add_argument("--helper-timeout", type=float, default=120,
                    help="seconds the helper may take to exit after go did (default 120)")
    ap.add_argument("--bucket-state", choices=("restore", "carry"), default="restore",
                    help="restore (default): every remote build starts from the bucket/server as the run's cold "
                         "build (and its settle build) left it; carry: builds see what earlier builds of the run wrote")
    ap.add_argument("--settle", action=argparse.BooleanOptionalAction, default=True,
                    help="after each helper's cold build, one untimed remote-warm build before the store is "
                         "snapshotted, so remote scenarios measure the steady state (default); --no-settle: "
                         "they measure the first warm build after a cold one")
    ap.add_argument("--keep", action="store_true", help="keep the temp root (logs, MinIO data)")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="no builds: print the table again from a previous run's JSON records")
    args = ap.parse_args()
    if args.from_json:
        old = json.loads(args.from_json.read_text())
        print(render(old["meta"], old["workloads"], summarize(old["records"]), old["problems"], old["error"],
                     old["partial"]))
        return 0
    try:
        args.workloads = parse_list(args.workloads, WORKLOADS, "workload")
        args.contenders = parse_list(args.contenders, CONTENDERS, "contender")
        rtts = parse_list(args.rtts, None, "rtt")
        edit_rtts = parse_list(args.edit_rtts, None, "rtt")
        for r in rtts + edit_rtts:
            float(r)
        scenarios = expand_scenarios(args.scenarios, rtts, edit_rtts)
    except (argparse.ArgumentTypeError, ValueError) as err:
        ap.error(str(err))
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if not args.workloads or not args.contenders:
        ap.error("--workloads and --contenders need at least one entry")
    args.json = args.json.resolve()
    args.md = (args.md or args.json.with_suffix(".md")).resolve()

    started = time.time()
    children = Children()

    def on_signal(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored
    # (as a shell's background job is).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    root = Path(tempfile.mkdtemp(prefix="gocacher-compare-"))
    bench: Bench | None = None
    error = None
    try:
        if shutil.which("go") is None:
            raise BenchError("`go` is not on PATH")
        if not os.access(TIME_BIN, os.X_OK):
            raise BenchError(f"{TIME_BIN} (GNU time) is needed to measure the helpers")
        env = base_env()
        gomodcache = run_text(["go", "env", "GOMODCACHE"], env=env)
        env["GOMODCACHE"] = gomodcache
        prog = run_text(["go", "env", "GOCACHEPROG"], env=env)
        if prog not in ("", "?"):
            raise BenchError(f"`go env GOCACHEPROG` is {prog!r} (from the go env file): unset it with "
                             f"`go env -u GOCACHEPROG`, or native would not be native")

        commit = run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
        if run_text(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"]) not in ("", "?"):
            commit += "+dirty"
        meta: dict[str, object] = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(),
            "go_version": run_text(["go", "version"], env=env),
            "go_env": {k: run_text(["go", "env", k], env=env) for k in ("GOFLAGS", "GOPROXY", "GOMODCACHE", "GOROOT")},
            "gocacher_rev": commit,
            "runs": args.runs,
            "workloads": args.workloads,
            "contenders": args.contenders,
            "scenarios": scenarios,
            "rtts_ms": [float(r) for r in rtts],
            "edit_rtts_ms": [float(r) for r in edit_rtts],
            "bucket_state": args.bucket_state,
            "settle": args.settle,
            "settle_note": (
                "after each helper's cold build, one untimed remote-warm build (loopback, empty local dir and "
                "GOCACHE, same flags and scope) ran before the store was snapshotted; remote rows measure the "
                "steady state (gocacher prefetches a warm build's manifest). Its records have scenario 'settle' "
                "and are not in the summary. Skipped for a workload without remote scenarios."
                if args.settle else
                "--no-settle: remote rows start from the store as the cold build left it (the cold build's "
                "manifest): first warm build after a cold one"),
            "loadavg_start": list(os.getloadavg()),
            "argv": sys.argv,
            "temp_root": str(root),
            "seed_version": "not run", "minio_version": "not run",
        }
        bench = Bench(args, root, env, children, meta)
        bench.workload_infos = {}

        tools = tools_dir()
        if "gocacher" in args.contenders:
            src = (args.gocacher or default_gocacher()).resolve()
            if not os.access(src, os.X_OK):
                raise BenchError(f"gocacher binary not found at {src}: build it (cargo build --release) or pass --gocacher")
            # A copy, so that a rebuild during the benchmark cannot change it.
            (root / "bin").mkdir()
            bench.gocacher = root / "bin" / "gocacher"
            shutil.copy2(src, bench.gocacher)
            meta["gocacher_binary"] = {"path": str(src),
                                       "sha256": hashlib.sha256(bench.gocacher.read_bytes()).hexdigest()[:16],
                                       "mtime": datetime.datetime.fromtimestamp(src.stat().st_mtime).isoformat(
                                           timespec="seconds")}
            helptext = run_text([str(bench.gocacher), "--help"])
            meta["gocacher_binary"]["flags"] = sorted(set(re.findall(r"--[a-z][a-z0-9-]+", helptext)))
            minio_bin = tools / "bin" / "minio"
            ensure_tool(minio_bin, ["bash", str(REPO_ROOT / "integration/tools/install-minio.sh")], "MinIO")
            stamp = tools / "bin" / ".minio.version"
            minio_v = run_text([str(minio_bin), "--version"]).splitlines()
            meta["minio_version"] = (stamp.read_text().strip() if stamp.exists() else "?") + \
                f" ({minio_v[0] if minio_v else '?'})"
            (root / "minio").mkdir()
            bench.minio = Minio(minio_bin, root / "minio", children)
            log(f"# starting MinIO ({minio_bin})")
            bench.minio.start()
            meta["minio_endpoint"] = bench.minio.endpoint
        if "seed" in args.contenders:
            bench.seed_client = tools / "bin" / "go-cacher"
            bench.seed_server_bin = tools / "bin" / "go-cacher-server"
            for b in (bench.seed_client, bench.seed_server_bin):
                ensure_tool(b, ["bash", str(SCRIPT_DIR / "install-peers.sh")], b.name)
            stamp = tools / "bin" / ".go-tool-cache.version"
            meta["seed_version"] = f"{SEED_MODULE}@" + (stamp.read_text().strip() if stamp.exists() else "?")

        src_root = root / "src"
        src_root.mkdir()
        for name in args.workloads:
            wl = prepare_workload(name, src_root, env, args)
            wl_scenarios = [s for s in scenarios if not (name == "std" and scenario_kind(s) == "one-file-change")]
            wl.info["scenarios"] = wl_scenarios
            bench.workload_infos[name] = wl.info
            try:
                bench.run_workload(wl, wl_scenarios)
            finally:
                wl.revert_edit()
    except BenchError as err:
        error = str(err)
    except (KeyboardInterrupt, Interrupted) as err:
        error = "interrupted (" + (f"{err}" if isinstance(err, Interrupted) else "Ctrl-C") + ")"
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            children.stop_all()
        finally:
            if args.keep:
                log(f"# kept the temp root {root}")
            else:
                remove_tree(root)

    if bench is None:
        log(f"compare.py: {error}")
        return 1
    bench.meta["loadavg_end"] = list(os.getloadavg())
    bench.meta["elapsed_s"] = round(time.time() - started, 1)
    md = bench.write_outputs(partial=error is not None, error=error)
    print(md)
    log(f"# wrote {args.json} and {args.md} ({bench.meta['elapsed_s']:.0f} s)")
    if error:
        log(f"compare.py: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
