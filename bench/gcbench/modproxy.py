"""The modproxy scenario: a new runner's `go mod download` plus `go build
./...` of bench/modgraph (a real graph of 100+ modules), each way side by
side in one run, round-robin:

- `upstream`: straight from `go env GOPROXY`;
- `tarball`: GOMODCACHE restored from a zstd tarball kept in MinIO (what
  actions/cache does: download with mc, then extract; GOPROXY=off after);
- `gocacher`: through `gocacher serve --modproxy` with both flags for a
  go on the same machine (the job's go.sum prefetched from the bucket, zips
  served stored), bucket warm, empty disk; the server's start is part of
  the run;
- `gocacher-prefetch`: the prefetch only (zips as kept), as the action
  runs it;
- `gocacher-bare`: the same server without those two flags (what a client
  on another machine gets);
- `go-cache-plugin`: through tailscale's `go-cache-plugin serve
  --modproxy`, bucket warm, empty disk, each proxy on its own bucket;
- `athens`: looked up once; a row of what the module proxy refused;
- `file`: GOPROXY=file:// of the warm-up's cache/download on the
  runner's own disk: the least any module proxy can cost, go's own work
  (download, hash, extract) with no network and no server;
- `file-stored`: the same with every zip re-packed stored, not deflated
  (same files, so the same go.sum hash): what a proxy serving stored zips
  could reach.

Every run starts from a new runner: the same fixed paths (GOPATH,
GOMODCACHE, the module's checkout), the last run's tree moved aside, never
deleted while the scenario runs (bench/README.md: ext4's
recently_deleted). The build part is the same for every way: one GOCACHE
warmed before the runs and shared by all (with -trimpath its keys do not
depend on where the module cache is); a warm `go build` only reads it and
links, so the ways differ only in getting the modules. Each proxy's bucket
is warmed once before the runs; every server starts with an empty disk
and is stopped after its run (its peak RSS is its whole life's).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import time
from pathlib import Path

from .measure import children_cpu
from .modrender import render, summarize
from .modways import (BUCKETS, GCP_MODULE, GCP_VERSION, GOCACHERS, PROXIES, TARBALL_KEY, WAYS, ProxyServer, athens_refusal,
                      ensure_gcp, gcp_binary, redact, repack_stored, tree_bytes, wait_uploaded)
from .servers import S3_KEY, S3_SECRET, Minio, s3_delta
from .util import (BENCH_DIR, BenchError, Children, Interrupted, Smoke, base_env, check_go, default_gocacher,
                   ensure_tool, git_commit, log, machine_info, parse_list, run_checked, run_text, tools_dir,
                   write_result)

GRAPH_DIR = BENCH_DIR / "modgraph"


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, children: Children) -> None:
        self.args, self.root, self.children = args, root, children
        self.env0 = base_env()
        self.upstream = run_text(["go", "env", "GOPROXY"], env=self.env0)
        first = self.upstream.replace("|", ",").split(",")[0]
        if first in ("", "?", "direct", "off"):
            raise BenchError(f"`go env GOPROXY` is {self.upstream!r}: the scenario needs a module proxy first")
        self.first_upstream = first
        self.runner = root / "runner"
        self.done = root / "done"
        self.done.mkdir()
        self.template = root / "modgraph"
        shutil.copytree(GRAPH_DIR, self.template)
        self.gocache = Path(args.gocache).resolve() if args.gocache else root / "gocache"
        self.moved = 0
        self.minio: Minio | None = None
        self.tarball = root / "modcache.tar.zst"
        self.file_proxy = root / "file-proxy"
        self.stored_proxy = root / "file-stored-proxy"
        self.mc = tools_dir() / "bin/mc"
        self.mc_env = dict(self.env0, MC_CONFIG_DIR=str(root / "mc"))
        self.info: dict[str, object] = {}

    # -- a new runner ---------------------------------------------------------

    def new_runner(self) -> None:
        if self.runner.exists():
            self.moved += 1
            self.runner.rename(self.done / str(self.moved))
        (self.runner / "gopath").mkdir(parents=True)
        shutil.copytree(self.template, self.runner / "src")

    def go_env(self, goproxy: str) -> dict[str, str]:
        gopath = self.runner / "gopath"
        return dict(self.env0, GOPATH=str(gopath), GOMODCACHE=str(gopath / "pkg/mod"), GOCACHE=str(self.gocache),
                    GOPROXY=goproxy, GOFLAGS="-trimpath")

    def phase(self, rec: dict[str, object], name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> None:
        cpu0 = children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd or self.runner / "src", env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=self.args.build_timeout)
        rec[f"{name}_s"] = round(time.perf_counter() - t0, 3)
        rec[f"{name}_cpu_s"] = round(children_cpu() - cpu0, 3)
        if proc.returncode != 0:
            raise BenchError(f"{rec['way']} run {rec['run']}: `{' '.join(argv)}` exited {proc.returncode}:\n"
                             f"{redact((proc.stdout + proc.stderr)[-3000:])}")

    # -- setup ----------------------------------------------------------------

    def start_minio(self) -> None:
        ensure_tool(tools_dir() / "bin/minio", ["bash", "integration/tools/install-minio.sh"], "MinIO")
        self.minio = Minio(tools_dir() / "bin/minio", self.root / "minio", self.children)
        (self.root / "minio").mkdir()
        self.minio.start()
        for bucket in sorted(set(BUCKETS.values())):
            # A MinIO just started may answer 503 for a moment while it settles.
            for attempt in range(60):
                try:
                    self.minio.create_bucket(bucket)
                    break
                except BenchError:
                    if attempt == 59:
                        raise
                    time.sleep(0.5)
        self.mc_env["MC_HOST_bench"] = self.minio.endpoint.replace("://", f"://{S3_KEY}:{S3_SECRET}@")

    def warm(self) -> None:
        """Untimed: the graph from the upstream into a first runner (and the
        shared GOCACHE), the tarball from its GOMODCACHE into MinIO, and each
        proxy's bucket through one `go mod download`."""
        ways = self.args.ways
        self.new_runner()
        env = self.go_env(self.upstream)
        log(f"# warm-up: go mod download + go build ./... from `go env GOPROXY` (GOCACHE {self.gocache})")
        rec: dict[str, object] = {"way": "warm-up", "run": 0}
        self.phase(rec, "download", ["go", "mod", "download"], env)
        self.phase(rec, "build", ["go", "build", "./..."], env)
        mods = run_checked(["go", "list", "-m", "all"], "go list -m all", cwd=self.runner / "src", env=env)
        modcache = self.runner / "gopath/pkg/mod"
        zips = sum(1 for _ in (modcache / "cache/download").rglob("*.zip"))
        self.info["graph"] = {"modules_in_go_list_m_all": len(mods.splitlines()), "zips_downloaded": zips,
                              "gomodcache_bytes": tree_bytes(modcache),
                              "download_dir_bytes": tree_bytes(modcache / "cache/download"),
                              "warm_up_download_s": rec["download_s"], "warm_up_build_s": rec["build_s"]}
        if "file" in ways:
            shutil.copytree(modcache / "cache/download", self.file_proxy)
        if "file-stored" in ways:
            shutil.copytree(modcache / "cache/download", self.stored_proxy)
            before, after = repack_stored(self.stored_proxy)
            self.info["stored_zips"] = {"deflated_bytes": before, "stored_bytes": after}
        if "tarball" in ways:
            log("# warm-up: tar --zstd of that GOMODCACHE, into MinIO with mc")
            run_checked(["tar", "--posix", "-cf", str(self.tarball), "--use-compress-program", "zstd -T0",
                         "-C", str(self.runner / "gopath/pkg"), "mod"], "creating the tarball", env=self.env0)
            run_checked([str(self.mc), "--quiet", "cp", str(self.tarball),
                         f"bench/{BUCKETS['tarball']}/{TARBALL_KEY}"], "uploading the tarball", env=self.mc_env)
            self.info["tarball_bytes"] = self.tarball.stat().st_size
        for way in (w for w in ways if w in ("gocacher", "go-cache-plugin")
                    or (w != "gocacher" and w.startswith("gocacher") and "gocacher" not in ways
                        and w == next(x for x in ways if x.startswith("gocacher")))):
            self.new_runner()
            server = self.start_server(way, f"warm-{way}")
            log(f"# warm-up: {way}'s bucket through one go mod download")
            try:
                self.phase(rec, "download", ["go", "mod", "download"], self.go_env(server.goproxy))
                assert self.minio and self.minio.s3
                n = wait_uploaded(server, self.minio.s3, BUCKETS[way])
            finally:
                stats = server.stop()
            self.info[f"{way}_warm_up"] = {"download_s": rec["download_s"], "bucket_objects": n,
                                           **{k: v for k, v in stats.items() if k != "latency_ms"}}

    def start_server(self, way: str, name: str) -> ProxyServer:
        assert self.minio
        binary = self.args.gocacher if way in GOCACHERS else gcp_binary()
        return ProxyServer(way, binary, self.root / "servers" / name, self.minio.endpoint, self.children,
                           self.first_upstream, go_sum=self.runner / "src/go.sum")

    # -- one timed run of one way ---------------------------------------------

    def run_one(self, way: str, run: int, order: int) -> dict[str, object]:
        assert self.minio and self.minio.s3
        self.new_runner()
        rec: dict[str, object] = {"way": way, "run": run, "order": order,
                                  "loadavg_1m": round(os.getloadavg()[0], 2)}
        m0 = self.minio.metrics()
        # A proxy's start is part of the run, as it is a step of the job.
        t0 = time.perf_counter()
        server = self.start_server(way, f"{run}-{way}") if way in PROXIES else None
        if server:
            rec["server_start_s"] = round(time.perf_counter() - t0, 3)
        goproxy = (server.goproxy if server else "off" if way == "tarball"
                   else self.file_proxy.as_uri() if way == "file"
                   else self.stored_proxy.as_uri() if way == "file-stored" else self.upstream)
        env = self.go_env(goproxy)
        try:
            if way == "tarball":
                dest = self.runner / TARBALL_KEY
                self.phase(rec, "restore_download", [str(self.mc), "--quiet", "cp",
                                                     f"bench/{BUCKETS['tarball']}/{TARBALL_KEY}", str(dest)],
                           self.mc_env)
                (self.runner / "gopath/pkg").mkdir()
                self.phase(rec, "restore_extract", ["tar", "-xf", str(dest), "--use-compress-program", "zstd -d",
                                                    "-C", str(self.runner / "gopath/pkg")], self.env0)
                rec["restore_s"] = round(float(rec["restore_download_s"]) + float(rec["restore_extract_s"]), 3)
            self.phase(rec, "download", ["go", "mod", "download"], env)
            self.phase(rec, "build", ["go", "build", "./..."], env)
            rec["total_s"] = round(time.perf_counter() - t0, 3)
            rec["fetch_s"] = round(float(rec.get("restore_s", 0)) + float(rec["download_s"]), 3)
        finally:
            if server:
                rec.update(server.stop())
        rec["s3"] = s3_delta(m0, self.minio.metrics())
        rec["download_dir_bytes"] = tree_bytes(self.runner / "gopath/pkg/mod/cache/download")
        if way in BUCKETS:
            rec["bucket_objects"] = len(self.minio.s3.list_keys(BUCKETS[way]))
        return rec


def run(args: argparse.Namespace, root: Path, children: Children) -> tuple[dict[str, object], list[dict]]:
    bench = Bench(args, root, children)
    check_go(bench.env0)
    meta: dict[str, object] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(), "go_version": run_text(["go", "version"], env=bench.env0),
        "goproxy": redact(bench.upstream), "gocacher_rev": git_commit(), "gocacher": str(args.gocacher),
        "runs": args.runs, "ways": args.ways, "argv": args.argv, "loadavg_start": list(os.getloadavg()),
        "gocache": "given (--gocache)" if args.gocache else "warmed in the temp root",
        "versions": {"zstd": run_text(["zstd", "--version"]), "tar": run_text(["tar", "--version"]).split("\n")[0],
                     "minio": run_text([str(tools_dir() / "bin/minio"), "--version"]).split("\n")[0],
                     "mc": run_text([str(tools_dir() / "bin/mc"), "--version"]).split("\n")[0],
                     "go-cache-plugin": f"{GCP_MODULE}@{GCP_VERSION}"}}
    if "athens" in args.ways:
        log("# athens: looking it up once through the module proxy")
        meta["athens"] = athens_refusal(bench.env0)
    measured = [w for w in args.ways if w != "athens"]
    if "go-cache-plugin" in measured:
        ensure_gcp(bench.env0)
    ensure_tool(tools_dir() / "bin/mc", ["bash", "integration/tools/install-mc.sh"], "mc")
    bench.start_minio()
    records: list[dict[str, object]] = []
    try:
        bench.warm()
        meta.update(bench.info)
        for i in range(args.runs):
            order = measured[i % len(measured):] + measured[:i % len(measured)]
            for pos, way in enumerate(order):
                try:
                    rec = bench.run_one(way, i + 1, pos + 1)
                except BenchError as err:
                    rec = {"way": way, "run": i + 1, "order": pos + 1, "error": str(err)[-3000:]}
                log(f"#   run {i + 1} {way}: " + ", ".join(
                    f"{k} {rec[k]}" for k in ("restore_s", "download_s", "build_s", "total_s", "server_peak_rss_mb",
                                              "error") if k in rec))
                records.append(rec)
    except (BenchError, KeyboardInterrupt, Interrupted) as err:
        # What was measured is still written, marked as stopped early.
        meta["stopped_early"] = f"{type(err).__name__}: {err}"[-2000:]
    finally:
        meta["loadavg_end"] = list(os.getloadavg())
        meta.update(bench.info)
        if bench.minio:
            bench.minio.stop()
    return meta, records


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=7, help="timed runs of each way, round-robin (default 7)")
    ap.add_argument("--ways", type=lambda v: parse_list(v, WAYS, "way"), default=list(WAYS),
                    help=f"comma list of ways (default all: {','.join(WAYS)})")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/dist/gocacher, else target/dist/gocacher)")
    ap.add_argument("--gocache", default=None,
                    help="a GOCACHE dir to warm or reuse for the build part (default: a new one in the temp root, "
                         "warmed by a full build first; a kept one saves that build on trial runs)")
    ap.add_argument("--build-timeout", type=float, default=1800, help="seconds one command may take (default 1800)")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    args.gocacher = (args.gocacher or default_gocacher()).resolve()


def smoke(args: argparse.Namespace) -> bool:
    s = Smoke()
    s.tool("go", "go", "install Go")
    s.go_env(base_env())
    for tool in ("tar", "zstd"):
        s.tool(tool, tool, f"install {tool} (apt-get install {tool})")
    if "gocacher" in args.ways:
        s.tool("gocacher", args.gocacher, "build it (cargo build --profile dist) or pass --gocacher")
    s.tool("MinIO", tools_dir() / "bin/minio", "", ["bash", "integration/tools/install-minio.sh"])
    s.tool("mc", tools_dir() / "bin/mc", "", ["bash", "integration/tools/install-mc.sh"])
    if "go-cache-plugin" in args.ways:
        s.tool("go-cache-plugin", gcp_binary(), "", ["go", "mod", "download", "-json", f"{GCP_MODULE}@{GCP_VERSION}",
                                                     "&&", "go", "build", "./cmd/go-cache-plugin", "(in a copy)"])
    measured = [w for w in args.ways if w != "athens"]
    print(f"  the graph: {GRAPH_DIR} (go mod download; go build ./...); {args.runs} run(s) of: {', '.join(measured)}")
    s.cmd("GOPROXY=<go env GOPROXY> go mod download && go build ./...   (warm-up: GOCACHE and the tarball)")
    s.cmd(f"mc cp bench/{BUCKETS['tarball']}/{TARBALL_KEY} <runner>/ && tar -xf ... --use-compress-program 'zstd -d'")
    s.cmd(f"gocacher serve --dir <empty> --modproxy --remote s3://{BUCKETS['gocacher']}/bench --s3-endpoint <minio> "
          "--verbose [--modproxy-prefetch <runner>/go.sum --modproxy-stored-zips]")
    s.cmd(f"go-cache-plugin serve --plugin <port> --http 127.0.0.1:<port> --modproxy --cache-dir <empty> "
          f"--bucket {BUCKETS['go-cache-plugin']} --s3-endpoint-url <minio> --s3-path-style")
    if "athens" in args.ways:
        s.cmd("go mod download -json github.com/gomods/athens@v0.16.1 (and @latest): once, to record the answer")
    return not s.failed


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    started = time.time()
    meta, records = run(args, root, children)
    summary = summarize(records)
    md = render(meta, summary, records)
    write_result(args.json, args.md, {"meta": meta, "summary": summary, "records": records}, md)
    log(f"# modproxy: {time.time() - started:.0f} s")
    return 1 if meta.get("stopped_early") else 0
