"""The floors scenario: the least any GOCACHEPROG can cost on this machine,
measured beside gocacher with `go build std`. It builds bench/floor itself:

- the copy floor (`bench/floor/main.go`): a remote-warm build cannot beat
  writing the files cmd/go will stat, each verified. It copies a warm
  GOCACHE's files (read, sha256, write a temp file, rename) while a warm
  `go build std` runs on that cache, and prints the medians;
- the protocol floors, for local-warm builds: `bench/floor/proto` (Go) and
  `bench/floor/proto-rs` (Rust, one thread, no runtime), a local cache
  behind the protocol and nothing else. Each helper's local dir is filled
  by one untimed cold build; then the local-warm builds of native, both
  floors and gocacher are interleaved, their order rotating run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

from .measure import time_wrapper, timed_build
from .util import (REPO_ROOT, TIME_BIN, BenchError, Children, Smoke, base_env, check_go, default_gocacher, go_quote,
                   git_commit, log, machine_info, run_checked, run_text)
from .workloads import Workload

HELPERS = ("native", "proto", "proto-rs", "gocacher")
COPY_LINE = re.compile(r"(\d+) files; medians of (\d+) runs: go build std warm ([\d.]+) s; copy\+verify alone "
                       r"([\d.]+) s; both at once ([\d.]+) s \(([\d.]+)x the build\)")


def builds(root: Path) -> list[tuple[str, list[str]]]:
    """The floor binaries and the commands that build them (from the repo root)."""
    return [
        ("proto", ["go", "build", "-o", str(root / "proto"), "bench/floor/proto/main.go"]),
        ("copy", ["go", "build", "-o", str(root / "copy"), "bench/floor/main.go"]),
        ("proto-rs", ["rustc", "-O", "--edition", "2021", "-o", str(root / "proto-rs"),
                      "bench/floor/proto-rs/main.rs"]),
    ]


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=5, help="runs of the copy floor (default 5; 0 skips it)")
    ap.add_argument("--warm-runs", type=int, default=11,
                    help="interleaved local-warm builds per helper (default 11; 0 skips them)")
    ap.add_argument("--packages", default="std",
                    help="what the local-warm builds build (default std; the copy floor always builds std)")
    ap.add_argument("--workers", type=int, default=2, help="the copy floor's copying goroutines (default 2)")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/dist/gocacher, else target/dist/gocacher)")
    ap.add_argument("--build-timeout", type=float, default=1800, help="seconds one build may take (default 1800)")
    ap.add_argument("--helper-timeout", type=float, default=120,
                    help="seconds the helper may take to exit after go did (default 120)")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runs < 0 or args.warm_runs < 0 or args.workers < 1:
        ap.error("--workers must be at least 1, --runs and --warm-runs at least 0")
    if not args.packages.split():
        ap.error("--packages needs at least one package")


def smoke(args: argparse.Namespace) -> bool:
    """Checks the tools and builds the three floors into a temp dir (seconds)."""
    s = Smoke()
    s.tool("go", "go", "install Go")
    s.tool("rustc", "rustc", "install Rust")
    s.tool("GNU time", TIME_BIN, "install GNU time (apt-get install time)")
    env = base_env()
    s.go_env(env)
    if args.warm_runs:
        s.tool("gocacher", Path(args.gocacher or default_gocacher()).resolve(),
               "build it (cargo build --profile dist) or pass --gocacher")
    tmp = Path(args.smoke_dir)
    for name, argv in builds(tmp):
        try:
            run_checked(argv, f"building the {name} floor", cwd=REPO_ROOT, env=env)
            s.ok(f"built the {name} floor", " ".join(argv))
        except BenchError as err:
            s.missing(f"the {name} floor", str(err))
    s.cmd(f"GOCACHE=<tmp>/native go build {args.packages}   (untimed: the warm cache)")
    if args.runs:
        s.cmd(f"<tmp>/copy -cache <tmp>/native -runs {args.runs} -workers {args.workers}")
    if args.warm_runs:
        print(f"  one untimed cold build per helper, then {args.warm_runs} interleaved local-warm "
              f"`go build {args.packages}` each of: {', '.join(HELPERS)}")
        for h in HELPERS[1:]:
            s.cmd(f"GOCACHEPROG='{' '.join(time_wrapper(Path('<f>')))} {' '.join(helper_argv(h, Path('gocacher' if h == 'gocacher' else '<tmp>/' + h), Path('<dir>')))}' "
                  f"go build {args.packages}")
    return not s.failed


def helper_argv(name: str, binary: Path, local: Path) -> list[str]:
    if name == "proto":
        return [str(binary), "-dir", str(local)]
    if name == "proto-rs":
        return [str(binary), str(local)]
    return [str(binary), "--cache-dir", str(local)]


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    env = base_env()
    check_go(env)
    env["GOMODCACHE"] = run_text(["go", "env", "GOMODCACHE"], env=env)
    started = time.time()
    bins = {"gocacher": Path(args.gocacher or default_gocacher()).resolve()}
    if args.warm_runs and not os.access(bins["gocacher"], os.X_OK):
        raise BenchError(f"gocacher binary not found at {bins['gocacher']}: build it (cargo build --profile dist) "
                         "or pass --gocacher")
    for name, argv in builds(root):
        log(f"# building the {name} floor: {' '.join(argv)}")
        run_checked(argv, f"building the {name} floor", cwd=REPO_ROOT, env=env)
        bins[name] = root / name
    m = machine_info()
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gocacher_commit": git_commit(),
            "gocacher": str(bins["gocacher"]), "go_version": run_text(["go", "version"], env=env),
            "machine": f"{m['cpu_model']} ({m['cores']} cores, {m['ram_gb']} GB RAM)",
            "loadavg_start": list(os.getloadavg()), "argv": args.argv}
    cwd = root / "std"
    cwd.mkdir()
    argv = ["go", "build"] + args.packages.split()
    wl = Workload("std", argv, cwd, None, {"command": " ".join(argv)})
    meta["packages"] = args.packages
    native = root / "native"
    log(f"# the warm cache: GOCACHE=<tmp>/native {' '.join(argv)} (untimed)")
    timed_build(wl, dict(env, GOCACHE=str(native)), None, args, "native cold")

    copy: dict[str, float] | None = None
    if args.runs:
        log(f"# the copy floor: {bins['copy']} -cache {native} -runs {args.runs}")
        out = run_checked([str(bins["copy"]), "-cache", str(native), "-runs", str(args.runs), "-workers",
                           str(args.workers)], "the copy floor", env=env)
        mcopy = COPY_LINE.search(out)
        if not mcopy:
            raise BenchError(f"the copy floor printed no result line: {out[-500:]}")
        copy = dict(zip(("files", "runs", "build_s", "copy_s", "both_s", "ratio"),
                        (float(x) for x in mcopy.groups())))
        log(f"#   {out.strip()}")

    records: list[dict[str, object]] = []
    if args.warm_runs:
        locals_ = {h: root / f"{h}-local" for h in HELPERS[1:]}
        for h in HELPERS[1:]:
            log(f"# {h}: one cold build to fill its local dir (untimed)")
            gc = root / f"{h}-cold-gocache"
            prog = " ".join(go_quote(a) for a in helper_argv(h, bins[h], locals_[h]))
            timed_build(wl, dict(env, GOCACHE=str(gc), GOCACHEPROG=prog), None, args, f"{h} cold")
        for run in range(1, args.warm_runs + 1):
            k = (run - 1) % len(HELPERS)
            for h in HELPERS[k:] + HELPERS[:k]:
                e = dict(env)
                tf = None
                if h == "native":
                    e["GOCACHE"] = str(native)
                else:
                    e["GOCACHE"] = str(root / f"{h}-warm{run}-gocache")
                    tf = root / f"{h}-warm{run}.time"
                    e["GOCACHEPROG"] = " ".join(go_quote(a) for a in time_wrapper(tf) +
                                                helper_argv(h, bins[h], locals_[h]))
                rec = timed_build(wl, e, tf, args, f"{h} local-warm run {run}")
                rec.pop("output", None)
                rec.update(helper=h, run=run)
                records.append(rec)
                log(f"# run {run}/{args.warm_runs} {h:<9} {rec['wall_s']:.3f} s")
    meta["elapsed_s"] = round(time.time() - started, 1)
    md = render(meta, copy, records)
    args.json.write_text(json.dumps({"meta": meta, "copy_floor": copy, "records": records}, indent=1) + "\n")
    args.md.write_text(md)
    print(md)
    log(f"# wrote {args.json} and {args.md} ({meta['elapsed_s']:.0f} s)")
    return 0


def render(meta: dict[str, object], copy: dict[str, float] | None, records: list[dict[str, object]]) -> str:
    lines = [f"# Floors: the least a GOCACHEPROG can cost ({meta['date']})", "",
             f"{meta['machine']} · {meta['go_version']} · gocacher {meta['gocacher_commit']} · "
             f"load avg at start {meta['loadavg_start'][0]:.2f}", ""]
    if copy:
        lines += ["## Copy floor (`bench/floor/main.go`): writing a warm `go build std`'s cache beside the build", "",
                  "| files | warm build alone s | copy + verify alone s | both at once s | both / build |",
                  "|--:|--:|--:|--:|--:|",
                  f"| {copy['files']:.0f} | {copy['build_s']:.3f} | {copy['copy_s']:.3f} | {copy['both_s']:.3f} "
                  f"| {copy['ratio']:.2f}× |", "",
                  f"Medians of {copy['runs']:.0f} runs: the least a remote-warm / native-warm ratio can be here.",
                  ""]
    if records:
        native = {r["run"]: float(r["wall_s"]) for r in records if r["helper"] == "native"}
        lines += [f"## Protocol floors: local-warm `go build {meta['packages']}`", "",
                  "| helper | n | median wall s | min–max s | vs native | helper CPU s | peak RSS MB |",
                  "|---|--:|--:|--:|--:|--:|--:|"]
        for h in HELPERS:
            rs = [r for r in records if r["helper"] == h]
            walls = [float(r["wall_s"]) for r in rs]
            ratio = statistics.median(float(r["wall_s"]) / native[r["run"]] for r in rs)
            cpu = [float(r["helper_cpu_s"]) for r in rs if "helper_cpu_s" in r]
            rss = [float(r["helper_rss_mb"]) for r in rs if "helper_rss_mb" in r]
            lines.append(f"| {h} | {len(rs)} | {statistics.median(walls):.3f} | {min(walls):.3f}–{max(walls):.3f} "
                         f"| {ratio:.2f}× | {statistics.median(cpu):.2f} | {statistics.median(rss):.1f} |"
                         if cpu else
                         f"| {h} | {len(rs)} | {statistics.median(walls):.3f} | {min(walls):.3f}–{max(walls):.3f} "
                         f"| {ratio:.2f}× | — | — |")
        lines += ["", "- Each helper's local dir is the one its own untimed cold build filled; GOCACHE is empty "
                  "for every helper build (native uses its warm one). `vs native`: median of per-run ratios.",
                  "- proto: `bench/floor/proto` (Go); proto-rs: `bench/floor/proto-rs` (Rust, one thread, no "
                  "runtime). Neither verifies, indexes or keeps stats."]
    return "\n".join(lines) + "\n"
