"""The servers the contenders talk to, and what the benchmark does with
them: a small S3 client signed with SigV4, bucket snapshots and restores,
MinIO (with its request metrics), the seed's go-cacher-server (with its
request log), and the delay proxy (delayproxy.py) that adds latency."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

from .measure import proc_cpu
from .util import BenchError, Children, free_port, http_get, tail

S3_KEY = "benchadmin"
S3_SECRET = "bench-secret-key-0001"
S3_REGION = "us-east-1"


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
# endpoints are cached and lag behind), so a scrape right after a build is exact.
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
    def __init__(self, binary: Path, root: Path, children: Children, serve: bool = False,
                 extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`serve`: `binary` is gocacher, run as `gocacher serve`; `extra`
        and `env`: more flags and environment for it (say, a bucket)."""
        self.binary = binary
        self.serve = serve
        self.extra = extra or []
        self.env = env
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
                [str(self.binary), *(["serve", "--dir"] if self.serve else ["--cache-dir"]), str(self.root / "data"),
                 "--listen", f"127.0.0.1:{self.port}", "--verbose", *self.extra],
                stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 30
        while http_get(f"http://127.0.0.1:{self.port}/", timeout=2)[0] == 0:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.binary.name} exited with {self.proc.returncode} before it was ready:\n"
                                 f"{tail(self.log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.binary.name} not ready after 30 s on port {self.port}:\n{tail(self.log)}")
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
# The delay proxy (delayproxy.py beside this file), one per build
# --------------------------------------------------------------------------

class DelayProxy:
    def __init__(self, target_port: int, rtt_ms: float, children: Children) -> None:
        self.children = children
        self.rtt_ms = rtt_ms
        self.proc = children.start(
            [sys.executable, str(Path(__file__).with_name("delayproxy.py")), "--target", f"127.0.0.1:{target_port}",
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

