#!/usr/bin/env python3
"""Side-by-side benchmark of Go build caches: Go's own, gocacher, a minimal
GOCACHEPROG (the floor), and the seed project's go-cacher, on three
workloads and a set of scenarios.

    python3 bench/compare.py

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
bytes through the delay proxy. See bench/README.md; the code is in
bench/gcbench/.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gcbench import serverload, servenamed  # noqa: E402
from gcbench.render import render, summarize  # noqa: E402
from gcbench.scenarios import (CONTENDERS, DEFAULT_MINIO_GO_VERSION, MINIO_GO_MODULE, WORKLOADS, Bench,  # noqa: E402
                               expand_scenarios, prepare_workload, run_meta, scenario_kind)
from gcbench.util import (BENCH_DIR, TIME_BIN, BenchError, Children, Interrupted, base_env,  # noqa: E402
                          default_gocacher, log, parse_list, remove_tree, run_text, tools_dir)

DEFAULT_RUNS = 7


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See bench/README.md.")
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                    help=f"interleaved runs per workload (default {DEFAULT_RUNS})")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)} (default all)")
    ap.add_argument("--contenders", default=",".join(c for c in CONTENDERS if c != "gocacher-signed"),
                    help=f"comma list of {', '.join(CONTENDERS)} (default all but gocacher-signed, which is "
                         "gocacher signing its uploads and checking every signature it reads)")
    ap.add_argument("--scenarios", default=None,
                    help="comma list: cold, local-warm, local-warm-remote, remote-warm, remote-warm-<N>ms, "
                         "remote-warm-rtt (one per --rtts), one-file-change, one-file-change-<N>ms (default: all, "
                         "from --rtts and --edit-rtts)")
    ap.add_argument("--rtts", default="10,50,100", help="RTTs in ms for the remote-warm-<N>ms scenarios (default 10,50,100)")
    ap.add_argument("--edit-rtts", default="0,50",
                    help="RTTs in ms for one-file-change (0 = loopback direct; default 0,50)")
    ap.add_argument("--seed-server", choices=("go-cacher-server", "gocached", "gocacher-serve"), default="go-cacher-server",
                    help="the server that seed and gocacher-http use (each its own; default go-cacher-server; "
                         "gocacher-serve: the gocacher binary's own `serve`)")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/dist/gocacher, else target/dist/gocacher)")
    ap.add_argument("--minio-go-version", default=DEFAULT_MINIO_GO_VERSION,
                    help=f"version of {MINIO_GO_MODULE} for the minio-go workload (default {DEFAULT_MINIO_GO_VERSION})")
    ap.add_argument("--json", type=Path, default=None,
                    help="JSON output (default bench/results/compare.json, or server-load.json, or serve-named.json)")
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
    ap.add_argument("--server-load", action="store_true",
                    help="instead of the builds above: cache servers (gocached, gocacher serve) under load, "
                         "side by side (--clients concurrent remote-warm `go build std`, then 1 KiB and 1 MiB "
                         "request loads); writes bench/results/server-load.json unless --json is given")
    ap.add_argument("--clients", type=int, default=16, help="concurrent builds for --server-load (default 16)")
    ap.add_argument("--server-tests", default="builds,load-1KiB,load-1MiB",
                    help="comma list of the --server-load tests to run (default all: builds,load-1KiB,load-1MiB)")
    ap.add_argument("--serve-named", action="store_true",
                    help="instead of the builds above: manifests and packs on `gocacher serve` (concurrent GETs "
                         "of one large pack, peak RSS; --max-size holding over packs); writes "
                         "bench/results/serve-named.json unless --json is given")
    ap.add_argument("--readers", default="4,8", help="comma list of concurrent GETs for --serve-named (default 4,8)")
    ap.add_argument("--pack-mb", type=int, default=400, help="the pack's size for --serve-named (default 400)")
    ap.add_argument("--trim-cap-mb", type=int, default=300,
                    help="--max-size of --serve-named's trim test, in MB (default 300)")
    ap.add_argument("--trim-total-mb", type=int, default=800,
                    help="MB of packs --serve-named's trim test writes (default 800)")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="no builds: print the table again from a previous run's JSON records")
    return ap


def main() -> int:
    ap = parser()
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
    if args.clients < 1:
        ap.error("--clients must be at least 1")
    default_json = ("results/server-load.json" if args.server_load
                    else "results/serve-named.json" if args.serve_named else "results/compare.json")
    args.json = (args.json or BENCH_DIR / default_json).resolve()
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
        if args.serve_named:
            args.gocacher = args.gocacher or default_gocacher()
            md = servenamed.run(args, root, children)
            print(md)
            log(f"# wrote {args.json} and {args.md} ({time.time() - started:.0f} s)")
            return 0
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

        if args.server_load:
            args.gocacher = args.gocacher or default_gocacher()
            md = serverload.run(args, root, env, children, tools_dir())
            print(md)
            log(f"# wrote {args.json} and {args.md} ({time.time() - started:.0f} s)")
            return 0
        meta = run_meta(args, scenarios, rtts, edit_rtts, root, env)
        bench = Bench(args, root, env, children, meta)
        bench.setup_contenders(tools_dir())

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
