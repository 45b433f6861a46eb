"""The server-load scenario: cache servers under load, side by side.

Each server (the seed's gocached, `gocacher serve`) is started fresh, on
the same machine and store filesystem, for each test of each run:

- `builds`: one cold `go build std` through the seed's go-cacher fills the
  server; then 16 (`--clients`) machines at once, each with an empty
  go-cacher dir and GOCACHE, run a remote-warm `go build std` through it.
  Every client is the seed's go-cacher, so both servers see the same
  requests (GET /action with Want-Object and lz4, PUT).
- `load-1KiB`, `load-1MiB`: bench/load (Go) puts N random objects from 16
  keep-alive connections, then gets each of them twice, checking every body;
  `-c64`: the same from 64 connections.

Each test's files stay until the end (deleting them would slow the next
test's file creation). Peak RSS is the server's VmHWM, reset (clear_refs) when the measured part
starts, so a cold fill does not count; server CPU is from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from .measure import parse_seed_stats, proc_cpu
from .util import (REPO_ROOT, BenchError, Children, Smoke, vm_kb, base_env, check_go, default_gocacher, ensure_tool,
                   free_port, git_commit, http_get, log, machine_info, parse_list, run_checked, run_text, tail,
                   tools_dir)

SERVERS = ("gocached", "gocacher-serve")
TESTS = ("builds", "load-1KiB", "load-1MiB", "load-1KiB-c64", "load-1MiB-c64")
# Object size, objects, keep-alive connections.
LOADS = {"load-1KiB": (1024, 20000, 16), "load-1MiB": (1 << 20, 400, 16),
         "load-1KiB-c64": (1024, 20000, 64), "load-1MiB-c64": (1 << 20, 400, 64)}


class Server:
    def __init__(self, kind: str, bins: dict[str, Path], root: Path, children: Children) -> None:
        self.kind, self.root, self.children = kind, root, children
        self.port = free_port()
        data = root / "data"
        data.mkdir(parents=True)
        listen = f"127.0.0.1:{self.port}"
        if kind == "gocached":
            argv = [str(bins["gocached"]), "--cache-dir", str(data), "--listen", listen]
        else:
            argv = [str(bins["gocacher"]), "serve", "--dir", str(data), "--listen", listen]
        self.log = root / "server.log"
        with open(self.log, "w") as logf:
            self.proc = children.start(argv, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while http_get(f"{self.url}/", timeout=2)[0] == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{kind} did not start on {listen}:\n{tail(self.log)}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mark(self) -> float:
        """Resets the peak RSS; the CPU seconds so far."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError as err:
            raise BenchError(f"resetting {self.kind}'s peak RSS (clear_refs; needs root or the same user): {err}")
        return proc_cpu(self.proc.pid) or 0.0

    def measured(self, cpu0: float) -> dict[str, object]:
        alive = self.proc.poll() is None
        return {"server_peak_rss_mb": round((vm_kb(self.proc.pid, "VmHWM") or 0) / 1024, 1),
                "server_cpu_s": round((proc_cpu(self.proc.pid) or 0.0) - cpu0, 2),
                "server_alive": alive}

    def stop(self) -> None:
        self.children.stop(self.proc)


def go_build_std(bins: dict[str, Path], url: str, root: Path, env: dict[str, str], tag: str,
                 timeout: float) -> subprocess.Popen:
    machine = root / tag
    (machine / "gocache").mkdir(parents=True)
    e = dict(env)
    e["GOCACHE"] = str(machine / "gocache")
    e["GOCACHEPROG"] = f"{bins['go-cacher']} --cache-server {url} --cache-dir {machine / 'cacher'} --verbose"
    log_f = open(machine / "build.log", "w")
    p = subprocess.Popen(["go", "build", "std"], env=e, cwd=root, stdout=log_f, stderr=subprocess.STDOUT)
    p.log_path = machine / "build.log"  # type: ignore[attr-defined]
    p.timeout = timeout  # type: ignore[attr-defined]
    return p


def builds(bins: dict[str, Path], server: Server, root: Path, env: dict[str, str], clients: int,
           timeout: float) -> dict[str, object]:
    fill = go_build_std(bins, server.url, root, env, "fill", timeout)
    if fill.wait(timeout=timeout) != 0:
        raise BenchError(f"the cold fill through {server.kind} failed:\n{tail(fill.log_path)}")  # type: ignore
    time.sleep(1)
    cpu0 = server.mark()
    start = time.monotonic()
    procs = [go_build_std(bins, server.url, root, env, f"client{i}", timeout) for i in range(clients)]
    walls, failed, first = [], 0, None
    for p in procs:
        try:
            rc = p.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = -1
        walls.append(time.monotonic() - start)
        if rc != 0:
            failed += 1
            first = first or tail(p.log_path)  # type: ignore[attr-defined]
    total = time.monotonic() - start
    # go-cacher --verbose's closing line counts its misses and errors.
    misses = errors = 0
    for p in procs:
        st = parse_seed_stats(Path(p.log_path).read_text(errors="replace"))  # type: ignore[attr-defined]
        if st is None:
            errors += 1
        else:
            misses += st["misses"]
            errors += st["get_errors"] + st["put_errors"]
    out = {"clients": clients, "wall_s": round(total, 2), "slowest_client_s": round(max(walls), 2),
           "builds_failed": failed, "client_misses": misses, "client_errors": errors}
    if first:
        out["first_failure"] = first[-2000:]
    out.update(server.measured(cpu0))
    return out


def load(bins: dict[str, Path], server: Server, test: str) -> dict[str, object]:
    size, n, conns = LOADS[test]
    cpu0 = server.mark()
    text = run_checked([str(bins["load"]), "-url", server.url, "-size", str(size), "-n", str(n), "-c", str(conns)],
                       f"the {test} load against {server.kind}")
    out: dict[str, object] = json.loads(text)
    out.update(server.measured(cpu0))
    return out


def median(records: list[dict[str, object]], path: tuple[str, ...]) -> float | None:
    vals = []
    for r in records:
        v: object = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(float(v))
    return round(statistics.median(vals), 2) if vals else None


def render(meta: dict[str, object], records: list[dict[str, object]]) -> str:
    lines = [f"# Cache servers under load ({meta['date']})", "",
             f"{meta['machine']} · {meta['go_version']} · gocacher {meta['gocacher_commit']} · "
             f"seed {meta['seed']} · {meta['runs']} run(s), medians", ""]
    for test in TESTS:
        rows = [r for r in records if r["test"] == test]
        if not rows:
            continue
        lines.append(f"## {test}")
        lines.append("")
        if test == "builds":
            lines += ["| server | clients | wall s (all done) | slowest client s | failed builds | client misses "
                      "| client errors | server CPU s | server peak RSS MB |",
                      "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
            for s in SERVERS:
                rs = [r for r in rows if r["server"] == s]
                if rs:
                    cells = [median(rs, (k,)) for k in ("clients", "wall_s", "slowest_client_s", "builds_failed",
                                                        "client_misses", "client_errors", "server_cpu_s",
                                                        "server_peak_rss_mb")]
                    lines.append(f"| {s} | " + " | ".join("—" if c is None else f"{c:g}" for c in cells) + " |")
        else:
            lines += ["| server | put ops/s | put MB/s | put p99 ms | get ops/s | get MB/s | get p99 ms "
                      "| errors | server CPU s | server peak RSS MB |",
                      "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
            for s in SERVERS:
                rs = [r for r in rows if r["server"] == s]
                if not rs:
                    continue
                errors = sum(int(r["put"]["errors"]) + int(r["get"]["errors"]) for r in rs)  # type: ignore
                cells = [median(rs, ("put", "ops_per_s")), median(rs, ("put", "mb_per_s")),
                         median(rs, ("put", "p99_ms")), median(rs, ("get", "ops_per_s")),
                         median(rs, ("get", "mb_per_s")), median(rs, ("get", "p99_ms")), errors,
                         median(rs, ("server_cpu_s",)), median(rs, ("server_peak_rss_mb",))]
                lines.append(f"| {s} | " + " | ".join("—" if c is None else f"{c:g}" for c in cells) + " |")
        lines.append("")
    _, n1k, conns = LOADS["load-1KiB"]
    _, n1m, _ = LOADS["load-1MiB"]
    lines += [
        "- **builds**: after one cold `go build std` through the seed's go-cacher, that many remote-warm "
        "builds start at once, each on its own empty go-cacher dir and GOCACHE; wall until the last exits.",
        f"- **load**: bench/load puts {n1k} objects of 1 KiB (or {n1m} of 1 MiB) from {conns} keep-alive "
        "connections (`-c64`: 64), then gets each twice (`Want-Object: 1`, no compression asked); a non-2xx, "
        "a transport error or a body that does not hash to its output ID is an error.",
        "- **server peak RSS**: VmHWM, reset when the measured part starts; both servers are started fresh "
        "for every test and share the two cores with the clients.",
    ]
    for r in records:
        if r.get("error"):
            lines.append(f"- {r['server']} {r['test']} run {r['run']}: {r['error']}")
    return "\n".join(lines) + "\n"


def run(args, root: Path, env: dict[str, str], children: Children, tools: Path) -> str:
    bins = {"gocached": tools / "bin" / "gocached", "go-cacher": tools / "bin" / "go-cacher",
            "gocacher": Path(args.gocacher).resolve(), "load": root / "load"}
    for b in ("gocached", "go-cacher"):
        ensure_tool(bins[b], ["bash", str(REPO_ROOT / "integration/tools/install-seed.sh")], b)
    if not os.access(bins["gocacher"], os.X_OK):
        raise BenchError(f"gocacher binary not found at {bins['gocacher']}: pass --gocacher")
    run_checked(["go", "build", "-o", str(bins["load"]), "."], "building bench/load", cwd=REPO_ROOT / "bench/load",
                env=env)
    stamp = tools / "bin" / ".seed.version"
    commit = git_commit()
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
            "go_version": run_text(["go", "version"], env=env), "gocacher_commit": commit,
            "seed": stamp.read_text().strip() if stamp.exists() else "?", "runs": args.runs,
            "argv": args.argv}
    m = meta["machine"]
    meta["machine"] = f"{m['cpu_model']} ({m['cores']} cores, {m['ram_gb']} GB RAM)"  # type: ignore[index]
    records: list[dict[str, object]] = []
    for run_i in range(args.runs):
        for test in [t for t in TESTS if t in args.server_tests.split(",")]:
            servers = SERVERS if run_i % 2 == 0 else tuple(reversed(SERVERS))
            for s in servers:
                sroot = root / f"run{run_i}-{test}-{s}"
                log(f"# run {run_i + 1}/{args.runs}: {test} against {s}")
                server = Server(s, bins, sroot, children)
                rec: dict[str, object] = {"server": s, "test": test, "run": run_i + 1}
                try:
                    if test == "builds":
                        rec.update(builds(bins, server, sroot, env, args.clients, args.build_timeout))
                    else:
                        rec.update(load(bins, server, test))
                except BenchError as err:
                    rec["error"] = str(err)[-2000:]
                finally:
                    # Kept until the end, not deleted here: on ext4, creating
                    # an inode right after thousands were deleted is slow
                    # (see Bench.discard), and the next server's clients
                    # would pay for this one's files.
                    server.stop()
                log(f"#   {json.dumps({k: v for k, v in rec.items() if k != 'first_failure'})}")
                records.append(rec)
    args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    md = render(meta, records)
    args.md.write_text(md)
    return md


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=3, help="runs of each test (default 3)")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/dist/gocacher, else target/dist/gocacher)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent builds in the builds test (default 16)")
    ap.add_argument("--server-tests", default=",".join(TESTS),
                    help=f"comma list of the tests to run (default all: {','.join(TESTS)})")
    ap.add_argument("--build-timeout", type=float, default=1800, help="seconds one build may take (default 1800)")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runs < 1 or args.clients < 1:
        ap.error("--runs and --clients must be at least 1")
    try:
        args.server_tests = ",".join(parse_list(args.server_tests, TESTS, "server test"))
    except argparse.ArgumentTypeError as err:
        ap.error(str(err))


def smoke(args: argparse.Namespace) -> bool:
    s = Smoke()
    s.tool("go", "go", "install Go")
    s.go_env(base_env())
    tools = tools_dir()
    for b in ("gocached", "go-cacher"):
        s.tool(b, tools / "bin" / b, "", ["bash", "integration/tools/install-seed.sh"])
    s.tool("gocacher", Path(args.gocacher or default_gocacher()).resolve(),
           "build it (cargo build --profile dist) or pass --gocacher")
    s.cmd("cd bench/load && go build -o <tmp>/load .")
    for run_i in range(args.runs):
        for test in args.server_tests.split(","):
            print(f"  run {run_i + 1}, {test}: against " + " and ".join(SERVERS) + ", each started fresh")
    s.cmd("gocached --cache-dir <tmp>/data --listen 127.0.0.1:<port>")
    s.cmd("gocacher serve --dir <tmp>/data --listen 127.0.0.1:<port>")
    if "builds" in args.server_tests:
        s.cmd(f"go build std  x{args.clients} at once, GOCACHEPROG='go-cacher --cache-server <url> --cache-dir <dir> --verbose'")
    for t, (size, n, conns) in LOADS.items():
        if t in args.server_tests:
            s.cmd(f"<tmp>/load -url <url> -size {size} -n {n} -c {conns}")
    return not s.failed


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    args.gocacher = args.gocacher or default_gocacher()
    env = base_env()
    check_go(env)
    env["GOMODCACHE"] = run_text(["go", "env", "GOMODCACHE"], env=env)
    started = time.time()
    md = run(args, root, env, children, tools_dir())
    print(md)
    log(f"# wrote {args.json} and {args.md} ({time.time() - started:.0f} s)")
    return 0
