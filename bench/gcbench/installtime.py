"""The install-time scenario: what a user without a release binary waits
for. `cargo install --locked --path .` from an empty target dir, timed with
GNU time; the crates are fetched first (untimed), so the network is not in
the number."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from pathlib import Path

from .util import REPO_ROOT, TIME_BIN, BenchError, Children, Smoke, git_commit, log, write_result, machine_info, run_checked, run_text

TIME_FIELDS = {
    "wall": re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)"),
    "user_s": re.compile(r"User time \(seconds\): ([\d.]+)"),
    "sys_s": re.compile(r"System time \(seconds\): ([\d.]+)"),
    "max_rss_kb": re.compile(r"Maximum resident set size \(kbytes\): (\d+)"),
}


def install_argv(args: argparse.Namespace, root: Path) -> list[str]:
    argv = ["cargo", "install", "--locked", "--path", str(REPO_ROOT), "--root", str(root / "install")]
    if args.features:
        argv += ["--features", args.features]
    if args.timings:
        argv.append("--timings")
    return argv


def seconds(clock: str) -> float:
    """GNU time's h:mm:ss or m:ss.ss as seconds."""
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=1, help="installs, one after another (default 1)")
    ap.add_argument("--features", default="", help="cargo features to install with (default none; e.g. sso)")
    ap.add_argument("--timings", action="store_true",
                    help="cargo's --timings report (per-crate times); kept in the temp root with --keep")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runs < 1:
        ap.error("--runs must be at least 1")


def smoke(args: argparse.Namespace) -> bool:
    s = Smoke()
    s.tool("cargo", "cargo", "install Rust")
    s.tool("GNU time", TIME_BIN, "install GNU time (apt-get install time)")
    s.cmd(["cargo", "fetch", "--locked"])
    s.cmd(f"CARGO_TARGET_DIR=<tmp>/target-N {TIME_BIN} -v " + " ".join(install_argv(args, Path("<tmp>"))))
    return not s.failed


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    if shutil.which("cargo") is None:
        raise BenchError("`cargo` is not on PATH")
    if not os.access(TIME_BIN, os.X_OK):
        raise BenchError(f"{TIME_BIN} (GNU time) is needed")
    log("# cargo fetch --locked (untimed)")
    run_checked(["cargo", "fetch", "--locked"], "fetching the crates", cwd=REPO_ROOT)
    m = machine_info()
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gocacher_commit": git_commit(),
            "rustc": run_text(["rustc", "--version"]), "features": args.features or "none",
            "machine": f"{m['cpu_model']} ({m['cores']} cores, {m['ram_gb']} GB RAM)",
            "loadavg_start": list(os.getloadavg()), "argv": args.argv}
    records = []
    for run in range(1, args.runs + 1):
        run_root = root / f"run{run}"
        run_root.mkdir()
        argv = install_argv(args, run_root)
        env = dict(os.environ, CARGO_TARGET_DIR=str(run_root / "target"))
        env.pop("RUSTFLAGS", None)
        log(f"# run {run}/{args.runs}: CARGO_TARGET_DIR={run_root / 'target'} {' '.join(argv)}")
        report = run_root / "time.txt"
        run_checked([TIME_BIN, "-v", "-o", str(report)] + argv, "cargo install", cwd=REPO_ROOT, env=env)
        text = report.read_text()
        rec: dict[str, object] = {"run": run}
        for key, pat in TIME_FIELDS.items():
            mt = pat.search(text)
            if not mt:
                raise BenchError(f"no {key} in GNU time's report:\n{text[-1000:]}")
            rec[key] = mt.group(1)
        rec["wall_s"] = round(seconds(str(rec.pop("wall"))), 1)
        rec["binary_bytes"] = (run_root / "install/bin/gocacher").stat().st_size
        records.append(rec)
        log(f"#   {json.dumps(rec)}")
    lines = [f"# `cargo install` from an empty target dir ({meta['date']})", "",
             f"{meta['machine']} · {meta['rustc']} · gocacher {meta['gocacher_commit']} · features: "
             f"{meta['features']} · load avg at start {meta['loadavg_start'][0]:.2f}", "",
             "| run | wall | user s | sys s | peak RSS MB | binary MB |", "|--:|--:|--:|--:|--:|--:|"]
    for r in records:
        w = float(r["wall_s"])
        lines.append(f"| {r['run']} | {int(w // 60)}m{w % 60:04.1f}s | {r['user_s']} | {r['sys_s']} "
                     f"| {int(r['max_rss_kb']) / 1024:.0f} | {int(r['binary_bytes']) / 1e6:.1f} |")
    lines += ["", "- `cargo install --locked --path .` with `CARGO_TARGET_DIR` empty and the crates fetched "
              "before; GNU `time -v`."]
    write_result(args.json, args.md, {"meta": meta, "records": records}, "\n".join(lines) + "\n")
    return 0
