"""The ways of the modproxy scenario to get a module graph onto a new
runner, and the servers behind them: `gocacher serve --modproxy` and
tailscale's `go-cache-plugin serve --modproxy`, each on a MinIO bucket of
its own; the zstd tarball of a GOMODCACHE kept in MinIO (what
actions/cache does); the checks and builds that bring the peers in
(go-cache-plugin built from its module, Athens looked up once)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

from .measure import proc_cpu
from .servers import S3_KEY, S3_REGION, S3_SECRET
from .util import BenchError, Children, free_port, http_get, log, run_checked, tail, vm_kb

WAYS = ("upstream", "tarball", "gocacher", "gocacher-prefetch", "gocacher-bare", "go-cache-plugin", "athens", "file", "file-stored")
PROXIES = ("gocacher", "gocacher-prefetch", "gocacher-bare", "go-cache-plugin", "athens")
GOCACHERS = ("gocacher", "gocacher-prefetch", "gocacher-bare")
GCP_MODULE = "github.com/tailscale/go-cache-plugin"
GCP_VERSION = "v0.1.1"
ATHENS_MODULE = "github.com/gomods/athens"
ATHENS_VERSIONS = ("v0.16.1", "latest")
BUCKETS = {"tarball": "modcache-tarball", "gocacher": "modproxy-gocacher", "gocacher-prefetch": "modproxy-gocacher",
           "gocacher-bare": "modproxy-gocacher",
           "go-cache-plugin": "modproxy-gcp"}
TARBALL_KEY = "linux-go-modcache.tar.zst"


def bench_cache() -> Path:
    """Where the peers' binaries are kept between runs, outside the clone."""
    return Path(os.environ.get("GOCACHER_BENCH_CACHE") or Path.home() / ".cache/gocacher-bench")


def gcp_binary() -> Path:
    return bench_cache() / f"go-cache-plugin-{GCP_VERSION}" / "go-cache-plugin"


def aws_env(minio_endpoint: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": S3_REGION,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_ENDPOINT_URL_S3": minio_endpoint}


def go_download_json(spec: str, env: dict[str, str]) -> dict[str, object]:
    """`go mod download -json SPEC`: its JSON (with "Error" when refused)."""
    argv = ["go", "mod", "download", "-json", spec]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd="/")
    try:
        meta = json.loads(proc.stdout)
    except json.JSONDecodeError:
        meta = {"Error": (proc.stdout + proc.stderr).strip()[-1000:] or f"exit {proc.returncode}"}
    meta["command"] = " ".join(argv)
    meta["exit"] = proc.returncode
    return meta


def ensure_gcp(env: dict[str, str]) -> Path:
    """go-cache-plugin, pinned, built once into the bench cache. `go install
    pkg@version` asks for the module's version list (for deprecations),
    which the module proxy here refuses; the module itself is served, so it
    is downloaded and built in a writable copy."""
    binary = gcp_binary()
    if os.access(binary, os.X_OK):
        return binary
    spec = f"{GCP_MODULE}@{GCP_VERSION}"
    log(f"# go-cache-plugin missing at {binary}: building {spec} (a minute or two)")
    meta = go_download_json(spec, env)
    if meta.get("Error"):
        raise BenchError(f"{meta['command']}: {meta['Error']}")
    src = binary.parent / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(str(meta["Dir"]), src)
    for dirpath, _dirs, _files in os.walk(src):
        os.chmod(dirpath, 0o755)
    tmp = binary.with_name(binary.name + ".tmp")
    run_checked(["go", "build", "-trimpath", "-o", str(tmp), "./cmd/go-cache-plugin"], f"building {spec}",
                cwd=src, env=dict(env, GOFLAGS="-mod=mod"))
    tmp.replace(binary)
    return binary


def athens_refusal(env: dict[str, str]) -> dict[str, object]:
    """Looks Athens up once per pinned version: what the module proxy said.
    Running it is not part of the harness: the proxy has refused every
    version so far, so there is nothing to build."""
    tries = [go_download_json(f"{ATHENS_MODULE}@{v}", env) for v in ATHENS_VERSIONS]
    served = [t for t in tries if not t.get("Error")]
    return {"served": bool(served),
            "tries": [{"command": t["command"], "exit": t["exit"],
                       "error": " ".join(redact(str(t.get("Error", ""))).split())} for t in tries]}


def redact(text: str) -> str:
    """A message with the upstream's URL replaced by `<GOPROXY>`, so results
    name no registry host."""
    return re.sub(r"https?://[^/\s]+", "<GOPROXY>", text)


class ProxyServer:
    """One module proxy process on 127.0.0.1 with an empty disk of its own:
    gocacher serve or go-cache-plugin serve, on its own MinIO bucket."""

    def __init__(self, way: str, binary: Path, root: Path, minio_endpoint: str, children: Children,
                 upstream: str, go_sum: Path | None = None) -> None:
        self.way, self.root, self.children = way, root, children
        root.mkdir(parents=True)
        self.disk = root / "disk"
        self.log = root / "server.log"
        self.port = free_port()
        env = dict(os.environ, **aws_env(minio_endpoint))
        env = {k: v for k, v in env.items() if not k.startswith("GOCACHER_")}
        if way in GOCACHERS:
            argv = [str(binary), "serve", "--dir", str(self.disk), "--listen", f"127.0.0.1:{self.port}",
                    "--modproxy", "--upstream", upstream, "--remote", f"s3://{BUCKETS[way]}/bench",
                    "--s3-endpoint", minio_endpoint, "--s3-region", S3_REGION, "--verbose"]
            # gocacher: the job's go.sum prefetched (as the action runs
            # it) and zips stored for a go on the same machine.
            if way in ("gocacher", "gocacher-prefetch") and go_sum is not None:
                argv += ["--modproxy-prefetch", str(go_sum)]
            if way == "gocacher":
                argv += local_flags(binary)
            ready = "/gocacher/v1/info"
        else:
            # Its upstream is fixed in v0.1.1 (the default Go module proxy):
            # it has no flag for another one.
            argv = [str(binary), "serve", "--plugin", str(free_port()), "--http", f"127.0.0.1:{self.port}",
                    "--modproxy", "--cache-dir", str(self.disk), "--bucket", BUCKETS[way], "--region", S3_REGION,
                    "--s3-endpoint-url", minio_endpoint, "--s3-path-style", "-v"]
            ready = "/debug/vars"
        self.argv = argv
        with open(self.log, "w") as logf:
            self.proc = children.start(argv, env=env, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while http_get(self.url + ready, timeout=2)[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.children.stop(self.proc)
                raise BenchError(f"{way} did not start ({' '.join(argv)}):\n{tail(self.log)}")
            time.sleep(0.01)
        self.cpu0 = proc_cpu(self.proc.pid) or 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def goproxy(self) -> str:
        return self.url + "/mod"

    def kept_files(self, suffix: str = "") -> int:
        """Files the proxy keeps on its disk (temp files and stored copies
        left out), those ending in `suffix`."""
        n = 0
        top = self.disk / ("mod" if self.way in GOCACHERS else "module")
        for dirpath, _dirs, files in os.walk(top):
            n += sum(1 for f in files if not f.startswith(".") and ".tmp" not in f and f.endswith(suffix))
        return n

    def gcp_vars(self) -> dict[str, object]:
        status, body = http_get(self.url + "/debug/vars")
        if status != 200:
            return {}
        try:
            return json.loads(body).get("modcache", {})
        except json.JSONDecodeError:
            return {}

    def stop(self) -> dict[str, object]:
        """Stops the server; its peak RSS, CPU and counters."""
        pid = self.proc.pid
        hwm = vm_kb(pid, "VmHWM")
        cpu = proc_cpu(pid)
        out: dict[str, object] = {"server_peak_rss_mb": None if hwm is None else round(hwm / 1024, 1),
                                  "server_cpu_s": None if cpu is None else round(cpu - self.cpu0, 3)}
        if self.way == "go-cache-plugin":
            out["gcp_modcache"] = self.gcp_vars()
        self.children.stop(self.proc)
        if self.way in GOCACHERS:
            out.update(parse_gocacher_log(self.log.read_text(errors="replace")))
        return out


REQ_LINE = re.compile(r"^gocacher serve: (\d{3}) GET /mod/(\S+) ([\d.]+)ms$", re.M)
SUMMARY = re.compile(r"modproxy: upstream fetches (\d+) immutable (\d+) mutable (?:\d+ tiles)?, (\d+) from the bucket")
PREFETCH = re.compile(r"modproxy: prefetch done in ([\d.]+)s: (\d+) copied from the bucket")
STORED = re.compile(r"stored copies of zips (\d+) made (\d+) from the bucket (\d+) not made")


def local_flags(binary: Path) -> list[str]:
    """`--modproxy-stored-zips` when the binary has it (zips stored, not
    deflated, for a go on the same machine)."""
    help_text = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True).stdout
    return ["--modproxy-stored-zips"] if "--modproxy-stored-zips" in help_text else []


def parse_gocacher_log(text: str) -> dict[str, object]:
    """Per-request latencies (`--verbose`: STATUS METHOD PATH MS) by kind of
    file, and the modproxy stop line's counters."""
    by: dict[str, list[float]] = {}
    bad = 0
    for m in REQ_LINE.finditer(text):
        status, path, ms = int(m.group(1)), m.group(2), float(m.group(3))
        bad += status != 200
        kind = "sumdb" if path.startswith("sumdb/") else path.rsplit(".", 1)[-1] if "/@v/" in path else "other"
        by.setdefault(kind, []).append(ms)
    out: dict[str, object] = {"requests": {k: len(v) for k, v in by.items()}, "requests_not_200": bad,
                              "latency_ms": {k: latency(v) for k, v in by.items()}}
    m = PREFETCH.search(text)
    if m:
        out.update(prefetch_s=float(m.group(1)), prefetched=int(m.group(2)))
    m = SUMMARY.search(text)
    if m:
        out.update(upstream_immutable=int(m.group(1)), upstream_mutable=int(m.group(2)),
                   from_bucket=int(m.group(3)))
    m = STORED.search(text)
    if m:
        out.update(stored_made=int(m.group(1)), stored_from_bucket=int(m.group(2)), stored_not_made=int(m.group(3)))
    return out


def latency(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "median": pick(0.5), "p90": pick(0.9), "max": s[-1], "sum": round(sum(s), 1)}


def wait_uploaded(server: ProxyServer, s3, bucket: str, timeout: float = 180) -> int:
    """Waits until the bucket holds at least as many objects as the server
    keeps on disk and the count has stopped moving (uploads are in the
    background); the count."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    # With stored zips, the stored copy of each zip goes to the bucket too
    # (compressed, after it is made).
    stored = "--modproxy-stored-zips" in server.argv
    while True:
        keys = s3.list_keys(bucket)
        n = len(keys)
        copies_done = not stored or sum(k.endswith(".zip.zst") for k in keys) >= server.kept_files(".zip")
        if n != last:
            last, since = n, time.monotonic()
        elif n >= server.kept_files() and copies_done and time.monotonic() - since > 2:
            return n
        if time.monotonic() > deadline:
            raise BenchError(f"{server.way}: bucket {bucket} has {n} objects after {timeout:.0f} s, "
                             f"the server keeps {server.kept_files()} files:\n{tail(server.log)}")
        time.sleep(0.5)


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def repack_stored(top: Path) -> tuple[int, int]:
    """Rewrites every module zip under `top` with its files stored, not
    deflated: the same names, modes and contents, so the same go.sum hash
    (which is over the files, not the zip). Bytes before and after."""
    before = after = 0
    for path in sorted(top.rglob("*.zip")):
        before += path.stat().st_size
        tmp = path.with_name(path.name + ".stored")
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                out.external_attr = info.external_attr
                zout.writestr(out, zin.read(info))
        tmp.replace(path)
        after += path.stat().st_size
    return before, after
