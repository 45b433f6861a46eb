"""The protocol scenario: criterion's microbenchmarks of the protocol loop
with the real disk tier over in-memory pipes (benches/protocol.rs), run by
`cargo bench --bench protocol`; their estimates as a table."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .util import REPO_ROOT, BenchError, Children, Smoke, git_commit, log, write_result, machine_info, run_text

ESTIMATE = re.compile(r"^(.*?)\s*(time|thrpt):\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]")


def parse(output: str) -> list[dict[str, str]]:
    """Criterion's `name time: [low estimate high]` and `thrpt: [...]` lines;
    a long name stands on a line of its own before them."""
    rows: list[dict[str, str]] = []
    name = ""
    for line in output.splitlines():
        m = ESTIMATE.match(line)
        if not m:
            if line.strip() and not line.startswith(" ") and not line.startswith(("Benchmarking", "Found",
                                                                                   "Gnuplot", "Running")):
                name = line.strip()
            continue
        if m.group(1).strip():
            name = m.group(1).strip()
        if m.group(2) == "time":
            rows.append({"bench": name, "time": m.group(4), "time_range": f"{m.group(3)} – {m.group(5)}"})
        elif rows and rows[-1]["bench"] == name:
            rows[-1]["thrpt"] = m.group(4)
    return rows


def bench_argv(args: argparse.Namespace) -> list[str]:
    argv = ["cargo", "bench", "--bench", "protocol"]
    if args.filter:
        argv += ["--", args.filter]
    return argv


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--filter", default="", help="only the benchmarks whose name contains this")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    pass


def smoke(args: argparse.Namespace) -> bool:
    s = Smoke()
    s.tool("cargo", "cargo", "install Rust")
    target = os.environ.get("CARGO_TARGET_DIR")
    s.ok("CARGO_TARGET_DIR", target) if target else s.note("CARGO_TARGET_DIR", "unset: cargo uses target/")
    s.cmd(bench_argv(args))
    return not s.failed


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    if shutil.which("cargo") is None:
        raise BenchError("`cargo` is not on PATH")
    argv = bench_argv(args)
    log(f"# {' '.join(argv)}")
    started = time.time()
    proc = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` exited {proc.returncode}")
    rows = parse(proc.stdout)
    if not rows:
        raise BenchError(f"no criterion estimates in the output of `{' '.join(argv)}`:\n{proc.stdout[-2000:]}")
    m = machine_info()
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gocacher_commit": git_commit(),
            "rustc": run_text(["rustc", "--version"]),
            "machine": f"{m['cpu_model']} ({m['cores']} cores, {m['ram_gb']} GB RAM)",
            "loadavg_start": list(os.getloadavg()), "elapsed_s": round(time.time() - started, 1),
            "argv": args.argv}
    lines = [f"# The protocol loop alone: `{' '.join(argv)}` ({meta['date']})", "",
             f"{meta['machine']} · {meta['rustc']} · gocacher {meta['gocacher_commit']}", "",
             "| benchmark | time (estimate) | low – high | throughput |", "|---|--:|--:|--:|"]
    lines += [f"| {r['bench']} | {r['time']} | {r['time_range']} | {r.get('thrpt', '—')} |" for r in rows]
    lines += ["", "- criterion's estimates; the put benchmarks' time includes base64-encoding the body, "
              "as cmd/go sends it."]
    write_result(args.json, args.md, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")
    return 0
