"""The ix-startup scenario: what local pack indexes (ix/ files) cost at
start-up. Time from starting gocacher to the answer of its first get, with
FILES index files of ENTRIES random entries each in the cache dir, against
an empty cache dir. The get misses its -a file, so it waits for the index
files to be read."""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import time
from pathlib import Path

from .util import BenchError, Children, Smoke, default_gocacher, git_commit, log, write_result, machine_info


def first_get_ms(gocacher: Path, cache_dir: Path) -> float:
    start = time.perf_counter()
    p = subprocess.Popen([str(gocacher), "--cache-dir", str(cache_dir)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    try:
        if not p.stdout.readline():  # capabilities
            raise BenchError(f"{gocacher} --cache-dir {cache_dir} exited before it announced its capabilities")
        aid = base64.b64encode(secrets.token_bytes(32)).decode()
        p.stdin.write((json.dumps({"ID": 1, "Command": "get", "ActionID": aid}) + "\n\n").encode())
        p.stdin.flush()
        if not p.stdout.readline():
            raise BenchError(f"{gocacher} exited before it answered the first get")
        took = (time.perf_counter() - start) * 1e3
        p.stdin.write(b'{"ID":2,"Command":"close"}\n\n')
        p.stdin.close()
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return took


def fill(cache_dir: Path, files: int, entries: int) -> None:
    ix = cache_dir / "ix"
    ix.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = [f"gocacher1 {secrets.token_hex(32)} {secrets.token_hex(32)} 1234 1700000000000000000\n"
                 for _ in range(entries)]
        (ix / f"{f:032x}").write_text("".join(lines))


def parse_cases(spec: str) -> list[tuple[int, int]]:
    """"1000x100,1000x1000" -> [(1000, 100), (1000, 1000)]; the empty dir is always measured first."""
    out = []
    for c in spec.split(","):
        if c.strip():
            files, _, entries = c.strip().partition("x")
            out.append((int(files), int(entries)))
    return out


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=7, help="first gets timed per case (default 7)")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/dist/gocacher, else target/dist/gocacher)")
    ap.add_argument("--cases", default="1000x100,1000x1000",
                    help="comma list of FILESxENTRIES: index files in the cache dir and entries in each "
                         "(default 1000x100,1000x1000; an empty cache dir is always measured too)")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        args.case_list = parse_cases(args.cases)
    except ValueError:
        ap.error(f"--cases: not a comma list of FILESxENTRIES: {args.cases!r}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")


def smoke(args: argparse.Namespace) -> bool:
    s = Smoke()
    s.tool("gocacher", Path(args.gocacher or default_gocacher()).resolve(),
           "build it (cargo build --profile dist) or pass --gocacher")
    for files, entries in [(0, 0)] + args.case_list:
        print(f"  case: {files} index files x {entries} entries; one untimed first get, then {args.runs} timed")
    s.cmd("gocacher --cache-dir <tmp>/case   (stdin: one get of a random action ID, then close)")
    return not s.failed


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    gocacher = Path(args.gocacher or default_gocacher()).resolve()
    if not os.access(gocacher, os.X_OK):
        raise BenchError(f"gocacher binary not found at {gocacher}: build it (cargo build --profile dist) or "
                         "pass --gocacher")
    m = machine_info()
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gocacher_commit": git_commit(), "gocacher": str(gocacher),
            "machine": f"{m['cpu_model']} ({m['cores']} cores, {m['ram_gb']} GB RAM)", "runs": args.runs,
            "loadavg_start": list(os.getloadavg()), "argv": args.argv}
    records = []
    for i, (files, entries) in enumerate([(0, 0)] + args.case_list):
        d = root / f"case{i}"
        d.mkdir()
        log(f"# {files} index files x {entries} entries")
        fill(d, files, entries)
        first_get_ms(gocacher, d)  # the page cache warm
        ms = [first_get_ms(gocacher, d) for _ in range(args.runs)]
        records.append({"files": files, "entries": entries, "ms": [round(x, 2) for x in ms],
                        "median_ms": round(statistics.median(ms), 1), "max_ms": round(max(ms), 1)})
        log(f"#   {records[-1]['median_ms']} ms median, {records[-1]['max_ms']} ms max")
    lines = [f"# Start-up with local pack indexes ({meta['date']})", "",
             f"{meta['machine']} · gocacher {meta['gocacher_commit']} ({gocacher}) · {args.runs} runs a case · "
             f"load avg at start {meta['loadavg_start'][0]:.2f}", "",
             "| cache dir | first get answered, median ms | max ms |", "|---|--:|--:|"]
    for r in records:
        label = "empty" if not r["files"] else f"{r['files']:,} index files × {r['entries']:,} entries"
        lines.append(f"| {label} | {r['median_ms']} | {r['max_ms']} |")
    lines += ["", "- From starting gocacher to the answer of its first get, which misses its `-a` file and so "
              "waits for the index files to be read. One untimed start first warms the page cache."]
    write_result(args.json, args.md, {"meta": meta, "records": records}, "\n".join(lines) + "\n")
    return 0
