"""Build comparisons: Go build caches side by side (Go's own, gocacher, a
minimal GOCACHEPROG (the floor), the seed project's go-cacher) on the
workloads and build cases chosen by flags. The std, modules, seed,
std-gocached, std-serve and std-signed scenarios are this runner with
preset flags.

For each workload, run i builds every case in order; within a case the
contenders go one after another (their order rotates from run to run), so
machine drift hits all of them alike. Cases of run i start from the state
its cold builds left (the helper's local dir, the bucket, the server),
after one untimed "settle" build per remote-capable helper (--no-settle
skips it): a remote-warm build whose manifest the measured builds prefetch.

Per build: wall time until go has exited AND the helper process has exited
(uploads included), build CPU, the helper's CPU and peak RSS (from a
/usr/bin/time wrapper inside GOCACHEPROG), the helper's stats, S3 requests
by kind (MinIO's own metrics), requests seen by the seed's server, and the
bytes through the delay proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from .measure import time_wrapper
from .plan import (CONTENDERS, DEFAULT_MINIO_GO_VERSION, MINIO_GO_MODULE, ON_MINIO, SEED_SERVED, WORKLOADS,
                   expand_scenarios, scenario_kind, scenario_rtt, takes_part)
from .render import render, summarize
from .runner import Bench, run_meta
from .util import (TIME_BIN, BenchError, Children, Interrupted, Smoke, base_env, check_go, default_gocacher, log,
                   parse_list, run_text, tools_dir)
from .workloads import prepare_workload


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=7, help="interleaved runs per workload (default 7)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)} (default all)")
    ap.add_argument("--contenders", default=",".join(c for c in CONTENDERS if c not in ("gocacher-signed", "gocacher-base")),
                    help=f"comma list of {', '.join(CONTENDERS)} (default all but gocacher-signed, which is "
                         "gocacher signing its uploads and checking every signature it reads)")
    ap.add_argument("--scenarios", default=None,
                    help="the build cases, comma list: cold, local-warm, local-warm-remote, remote-warm, "
                         "remote-warm-<N>ms, remote-warm-rtt (one per --rtts), one-file-change, "
                         "one-file-change-<N>ms, new-replica (with --serve-remote: remote-warm through a server "
                         "restarted on an empty disk) (default: all but new-replica, from --rtts and --edit-rtts)")
    ap.add_argument("--rtts", default="10,50,100", help="RTTs in ms for the remote-warm-<N>ms cases (default 10,50,100)")
    ap.add_argument("--edit-rtts", default="0,50",
                    help="RTTs in ms for one-file-change (0 = loopback direct; default 0,50)")
    ap.add_argument("--seed-server", choices=("go-cacher-server", "gocached", "gocacher-serve"), default="go-cacher-server",
                    help="the server that seed and gocacher-http use (each its own; default go-cacher-server; "
                         "gocacher-serve: the gocacher binary's own `serve`)")
    ap.add_argument("--serve-remote", action="store_true",
                    help="with --seed-server gocacher-serve: each server also keeps its entries in MinIO "
                         "(`serve --remote s3://<run's bucket>/serve-<contender>`), and each build of seed and "
                         "gocacher-http records the server's S3 requests in place of its own request counts")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/dist/gocacher, else target/dist/gocacher)")
    ap.add_argument("--base-gocacher", type=Path, default=None,
                    help="the gocacher binary of contender gocacher-base (say, a dist build of the commit before a change)")
    ap.add_argument("--minio-go-version", default=DEFAULT_MINIO_GO_VERSION,
                    help=f"version of {MINIO_GO_MODULE} for the minio-go workload (default {DEFAULT_MINIO_GO_VERSION})")
    ap.add_argument("--build-timeout", type=float, default=1800, help="seconds one build may take (default 1800)")
    ap.add_argument("--helper-timeout", type=float, default=120,
                    help="seconds the helper may take to exit after go did (default 120)")
    ap.add_argument("--bucket-state", choices=("restore", "carry"), default="restore",
                    help="restore (default): every remote build starts from the bucket/server as the run's cold "
                         "build (and its settle build) left it; carry: builds see what earlier builds of the run wrote")
    ap.add_argument("--settle", action=argparse.BooleanOptionalAction, default=True,
                    help="after each helper's cold build, one untimed remote-warm build before the store is "
                         "snapshotted, so remote cases measure the steady state (default); --no-settle: "
                         "they measure the first warm build after a cold one")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="no builds: print the tables again from a previous run's JSON records")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validates the flags; sets args.plan = (cases, rtts, edit_rtts)."""
    try:
        args.workloads = parse_list(args.workloads, WORKLOADS, "workload")
        args.contenders = parse_list(args.contenders, CONTENDERS, "contender")
        rtts = parse_list(args.rtts, None, "rtt")
        edit_rtts = parse_list(args.edit_rtts, None, "rtt")
        for r in rtts + edit_rtts:
            float(r)
        cases = expand_scenarios(args.scenarios, rtts, edit_rtts)
    except (argparse.ArgumentTypeError, ValueError) as err:
        ap.error(str(err))
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if not args.workloads or not args.contenders:
        ap.error("--workloads and --contenders need at least one entry")
    if args.serve_remote and args.seed_server != "gocacher-serve":
        ap.error("--serve-remote needs --seed-server gocacher-serve")
    if "new-replica" in cases and not args.serve_remote:
        ap.error("scenario new-replica needs --serve-remote (a server on an empty disk has only its bucket)")
    if args.serve_remote and args.bucket_state != "carry":
        ap.error("--serve-remote needs --bucket-state carry (a server's bucket is not put back between builds)")
    args.plan = (cases, rtts, edit_rtts)


def workload_cases(name: str, cases: list[str]) -> list[str]:
    return [s for s in cases if not (name == "std" and scenario_kind(s) == "one-file-change")]


def preflight(env: dict[str, str]) -> None:
    """go on PATH, no GOCACHEPROG from the go env file, and GNU time."""
    check_go(env)
    if not os.access(TIME_BIN, os.X_OK):
        raise BenchError(f"{TIME_BIN} (GNU time) is needed to measure the helpers")


def needs_gocacher(args: argparse.Namespace) -> bool:
    serve = args.seed_server == "gocacher-serve" and any(c in args.contenders for c in SEED_SERVED)
    return serve or any(c in args.contenders for c in ON_MINIO + ("gocacher-http",))


def smoke(args: argparse.Namespace) -> bool:
    cases, _, _ = args.plan
    s = Smoke()
    env = base_env()
    s.tool("go", "go", "install Go")
    s.tool("GNU time", TIME_BIN, "install GNU time (apt-get install time)")
    s.go_env(env)
    tools = tools_dir()
    if needs_gocacher(args):
        s.tool("gocacher", (args.gocacher or default_gocacher()).resolve(),
               "build it (cargo build --profile dist) or pass --gocacher")
    if "gocacher-base" in args.contenders:
        s.tool("gocacher-base", Path(args.base_gocacher or "--base-gocacher not given").resolve(),
               "pass --base-gocacher with a dist build of the commit to compare against")
    if any(c in args.contenders for c in ON_MINIO) or args.serve_remote:
        s.tool("MinIO", tools / "bin/minio", "", ["bash", "integration/tools/install-minio.sh"])
    if any(c in args.contenders for c in SEED_SERVED):
        names = ["go-cacher"] + ([args.seed_server] if args.seed_server != "gocacher-serve" else [])
        for n in names:
            s.tool(n, tools / "bin" / n, "", ["bash", "integration/tools/install-seed.sh"])
    if "floor" in args.contenders:
        s.cmd("go build -o <tmp>/proto bench/floor/proto/main.go")
    if "minio-go" in args.workloads:
        s.cmd(f"go mod download -json {MINIO_GO_MODULE}@{args.minio_go_version}")
    builds = 0
    for wl in args.workloads:
        argv = "go build std" if wl == "std" else "go build ./..."
        wcases = workload_cases(wl, cases)
        print(f"  {wl}: `{argv}`, {args.runs} run(s) of: " + ", ".join(
            f"{c} ({'/'.join(x for x in args.contenders if takes_part(x, c))})" for c in wcases))
        per_run = sum(1 for c in wcases for x in args.contenders if takes_part(x, c))
        builds += args.runs * per_run
    print(f"  {builds} timed builds, plus warm-up and settle builds")
    wrap = " ".join(time_wrapper(Path("<tmp>/F.time")))
    if "gocacher" in args.contenders:
        s.cmd(f"GOCACHEPROG='{wrap} gocacher --cache-dir <dir> --stats-file <f> [--remote s3://<bucket>/gocacher "
              f"--s3-endpoint http://127.0.0.1:<port>]' go build ...")
    for c in ("seed", "gocacher-http"):
        if c in args.contenders:
            helper = "go-cacher --verbose" if c == "seed" else "gocacher --stats-file <f>"
            s.cmd(f"GOCACHEPROG='{wrap} {helper} --cache-dir <dir> [--cache-server http://127.0.0.1:<port>]' "
                  f"go build ...   (server: {args.seed_server})")
    if any(scenario_rtt(c) for c in cases):
        s.cmd("python3 bench/gcbench/delayproxy.py --target 127.0.0.1:<port> --rtt-ms N   (one per -<N>ms build)")
    return not s.failed


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    if args.from_json:
        old = json.loads(args.from_json.read_text())
        print(render(old["meta"], old["workloads"], summarize(old["records"]), old["problems"], old["error"],
                     old["partial"]))
        return 0
    cases, rtts, edit_rtts = args.plan
    started = time.time()
    bench: Bench | None = None
    error = None
    try:
        env = base_env()
        preflight(env)
        env["GOMODCACHE"] = run_text(["go", "env", "GOMODCACHE"], env=env)
        meta = run_meta(args, cases, rtts, edit_rtts, root, env)
        bench = Bench(args, root, env, children, meta)
        bench.setup_contenders(tools_dir())
        src_root = root / "src"
        src_root.mkdir()
        for name in args.workloads:
            wl = prepare_workload(name, src_root, env, args)
            wl_cases = workload_cases(name, cases)
            wl.info["scenarios"] = wl_cases
            bench.workload_infos[name] = wl.info
            try:
                bench.run_workload(wl, wl_cases)
            finally:
                wl.revert_edit()
    except BenchError as err:
        error = str(err)
    except (KeyboardInterrupt, Interrupted) as err:
        error = "interrupted (" + (f"{err}" if isinstance(err, Interrupted) else "Ctrl-C") + ")"
    finally:
        children.stop_all()
    if bench is None:
        raise BenchError(error or "stopped before the first build")
    bench.meta["loadavg_end"] = list(os.getloadavg())
    bench.meta["elapsed_s"] = round(time.time() - started, 1)
    md = bench.write_outputs(partial=error is not None, error=error)
    print(md)
    log(f"# wrote {args.json} and {args.md} ({bench.meta['elapsed_s']:.0f} s)")
    if error:
        log(f"bench: {error}")
        return 1
    return 0
