#!/usr/bin/env python3
"""Benchmark `go build` with Go's own build cache against gocacher.

Two contenders, two scenarios, interleaved so that machine drift (thermal,
page cache, background load) hits both alike. For run i in 1..N:

    native   cold   fresh GOCACHE, no GOCACHEPROG
    gocacher cold   fresh GOCACHE, GOCACHEPROG=gocacher with a fresh --cache-dir
    native   warm   the GOCACHE of this run's native cold build
    gocacher warm   a FRESH, empty GOCACHE but the --cache-dir of this run's
                    gocacher cold build: every hit has to come from gocacher

Per build we record wall time, the CPU of the build's process tree and, for
gocacher, the helper's own CPU and peak RSS (from a /usr/bin/time wrapper
inside GOCACHEPROG) and its --stats-file JSON.

Python 3.11 standard library only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
TIME_BIN = "/usr/bin/time"

CONTENDERS = ("native", "gocacher")
SCENARIOS = ("cold", "warm")


class BenchError(Exception):
    """A build failed or the setup is unusable; the message says why."""


# --------------------------------------------------------------------------
# Environment and workload
# --------------------------------------------------------------------------

def base_env() -> dict[str, str]:
    """The environment shared by every build.

    GOFLAGS is cleared so a user's flags (-race, -mod=...) can't skew one
    contender, GOTOOLCHAIN=local pins the toolchain on PATH, and any inherited
    GOCACHEPROG is dropped (only gocacher builds set it).
    """
    env = dict(os.environ)
    env.pop("GOCACHEPROG", None)
    env["GOFLAGS"] = ""
    env["GOTOOLCHAIN"] = "local"
    return env


def workload_command(workload: str, scratch: Path) -> tuple[list[str], Path]:
    """Returns (argv, cwd) of the build: `go build std` in an empty scratch
    dir, or `go build ./...` inside a Go module directory."""
    if workload == "std":
        return ["go", "build", "std"], scratch
    mod = Path(workload).resolve()
    if not (mod / "go.mod").is_file():
        raise BenchError(f"--workload {workload!r}: neither 'std' nor a directory with a go.mod")
    return ["go", "build", "./..."], mod


def count_main_packages(argv: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Main packages in the workload. cmd/go does not cache linked binaries of
    `go build` (only of `go run` / `go tool`), so even a warm build misses
    once per main package (the link action) and re-puts its "link-stdout"
    entry; native Go does the same. `std` has none."""
    pkgs = argv[2:]  # after "go build"
    out = subprocess.run(["go", "list", "-f", "{{.Name}}", *pkgs], cwd=cwd, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"go list {' '.join(pkgs)} failed:\n{out.stderr[-2000:]}")
    return sum(1 for name in out.stdout.split() if name == "main")


def go_quote(arg: str) -> str:
    """Quotes one word for GOCACHEPROG, which cmd/go splits like a command
    line (single or double quotes, no escapes). Our paths rarely need it."""
    if arg and not any(c.isspace() or c in "'\"" for c in arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if '"' not in arg:
        return f'"{arg}"'
    raise BenchError(f"cannot quote {arg!r} for GOCACHEPROG (holds both quote kinds)")


def run_text(argv: list[str], **kw) -> str:
    """Output of a short informational command, or '?' if it fails."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, **kw).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine_info(env: dict[str, str]) -> dict[str, object]:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    # The binary is built from the work tree, so say when it differs from HEAD.
    if run_text(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"]) not in ("", "?"):
        commit += "+dirty"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "go_version": run_text(["go", "version"], env=env),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "gocacher_commit": commit,
        "loadavg_1m_at_start": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------
# One build
# --------------------------------------------------------------------------

def children_cpu() -> float:
    """User+sys CPU seconds of all waited-for descendants so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def parse_time_output(path: Path) -> dict[str, object]:
    """Reads the `%M %U %S` line /usr/bin/time wrote for the helper. GNU time
    puts a 'Command exited with non-zero status N' / 'Command terminated by
    signal N' line before it when the helper did not exit cleanly."""
    # cmd/go waits for the helper's stdout to close, which /usr/bin/time holds
    # until it exits, so the file should be complete; allow a moment anyway.
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if (lines and len(lines[-1].split()) == 3) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not lines:
        return {"helper_error": f"no /usr/bin/time output in {path}"}
    try:
        rss_kb, user, sys_ = lines[-1].split()
        out: dict[str, object] = {
            "helper_rss_mb": int(rss_kb) / 1024,
            "helper_cpu_s": float(user) + float(sys_),
        }
    except ValueError:
        return {"helper_error": "unparsable /usr/bin/time output: " + " | ".join(lines)}
    if len(lines) > 1:
        out["helper_error"] = " | ".join(lines[:-1])
    return out


def run_build(
    *,
    contender: str,
    scenario: str,
    run: int,
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    gocache: Path,
    gocacher: Path | None = None,
    cache_dir: Path | None = None,
    logs: Path,
) -> dict[str, object]:
    """Runs one build and returns its measurements."""
    env = dict(env, GOCACHE=str(gocache))
    tag = f"{contender}-{scenario}-{run}"
    time_file = logs / f"{tag}.time"
    stats_file = logs / f"{tag}.stats.json"
    if contender == "gocacher":
        assert gocacher is not None and cache_dir is not None
        # The wrapper measures the helper alone: /usr/bin/time reports its
        # child's peak RSS and CPU when the helper exits at the end of the build.
        prog = [TIME_BIN, "-f", "%M %U %S", "-o", str(time_file),
                str(gocacher), "--cache-dir", str(cache_dir), "--stats-file", str(stats_file)]
        env["GOCACHEPROG"] = " ".join(go_quote(a) for a in prog)

    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    # go waits for its compilers and linkers, so they are in this delta. It
    # does not wait for the GOCACHEPROG process (it only waits for its stdout
    # to close), so the helper is orphaned and NOT counted here; we add its
    # CPU from the /usr/bin/time report below.
    go_cpu = children_cpu() - cpu0

    rec: dict[str, object] = {
        "contender": contender, "scenario": scenario, "run": run,
        "wall_s": wall, "go_tree_cpu_s": go_cpu, "exit_code": proc.returncode,
        # 1-minute load average at the end: a hint of outside load (other jobs).
        "loadavg_1m_after": os.getloadavg()[0],
    }
    if proc.returncode != 0:
        rec["output_tail"] = proc.stdout[-4000:]
        raise BenchError(f"{tag}: `{' '.join(argv)}` exited {proc.returncode}:\n{proc.stdout[-4000:]}", rec)

    if contender == "gocacher":
        rec.update(parse_time_output(time_file))
        try:
            rec["stats"] = json.loads(stats_file.read_text())
        except (OSError, ValueError) as err:
            rec["stats_error"] = f"stats file {stats_file}: {err}"
        if proc.stdout.strip():
            rec["output_tail"] = proc.stdout[-4000:]
    rec["build_cpu_s"] = go_cpu + float(rec.get("helper_cpu_s", 0.0))
    return rec


def check_gocacher(rec: dict[str, object], link_misses: int) -> list[str]:
    """Sanity checks of one gocacher build; returns problems found.
    link_misses: the misses a warm build has anyway (see count_main_packages)."""
    tag = f"gocacher {rec['scenario']} run {rec['run']}"
    problems = []
    for key in ("helper_error", "stats_error"):
        if key in rec:
            problems.append(f"{tag}: {rec[key]}")
    if "output_tail" in rec:
        problems.append(f"{tag}: build printed output: {str(rec['output_tail']).strip()[:500]}")
    st = rec.get("stats")
    if not isinstance(st, dict):
        return problems
    if st.get("get_errors") or st.get("put_errors"):
        problems.append(f"{tag}: get_errors={st.get('get_errors')} put_errors={st.get('put_errors')}")
    if rec["scenario"] == "warm":
        gets, hits, misses = st.get("gets"), st.get("hits"), st.get("misses")
        if misses != link_misses or hits != gets - link_misses:
            problems.append(f"{tag}: warm build not served fully from gocacher: gets={gets} hits={hits} "
                            f"misses={misses} (expected misses={link_misses}, the uncached link actions)")
    elif st.get("hits"):
        problems.append(f"{tag}: cold build had {st.get('hits')} hits from an empty --cache-dir")
    if rec["scenario"] == "cold" and not st.get("puts"):
        problems.append(f"{tag}: cold build stored nothing (puts=0)")
    return problems


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

def summarize(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per contender x scenario, from the successful builds."""
    native_median = {}
    rows = []
    for contender in CONTENDERS:
        for scenario in SCENARIOS:
            recs = [r for r in runs if r["contender"] == contender and r["scenario"] == scenario]
            if not recs:
                continue
            walls = [float(r["wall_s"]) for r in recs]
            row: dict[str, object] = {
                "contender": contender, "scenario": scenario, "n": len(recs),
                "wall_median_s": statistics.median(walls),
                "wall_min_s": min(walls), "wall_max_s": max(walls),
                "build_cpu_median_s": statistics.median(float(r["build_cpu_s"]) for r in recs),
            }
            if contender == "native":
                native_median[scenario] = row["wall_median_s"]
            base = native_median.get(scenario)
            row["ratio_to_native"] = row["wall_median_s"] / base if base else None
            helper = [r for r in recs if "helper_cpu_s" in r]
            if helper:
                row["helper_cpu_median_s"] = statistics.median(float(r["helper_cpu_s"]) for r in helper)
                row["helper_cpu_pct_median"] = statistics.median(
                    100 * float(r["helper_cpu_s"]) / float(r["build_cpu_s"]) for r in helper)
                rss = [float(r["helper_rss_mb"]) for r in helper]
                row["helper_rss_median_mb"] = statistics.median(rss)
                row["helper_rss_max_mb"] = max(rss)
            stats = [r["stats"] for r in recs if isinstance(r.get("stats"), dict)]
            if stats:
                row["stats_median"] = {
                    k: statistics.median(int(s.get(k, 0)) for s in stats)
                    for k in ("gets", "hits", "misses", "puts", "bytes_read", "bytes_written")
                }
            rows.append(row)
    return rows


def render(meta: dict[str, object], workload: str, rows: list[dict[str, object]], problems: list[str]) -> str:
    def f(x, fmt="{:.2f}"):
        return "—" if x is None else fmt.format(x)

    out = [
        f"`{workload}` build, {meta['date']} · {meta['go_version']} · nproc {meta['nproc']} · "
        f"{meta['cpu_model']} · gocacher {meta['gocacher_commit']} · load avg at start {meta['loadavg_1m_at_start']:.2f}",
        "",
        "| contender | scenario | n | median wall s | min–max wall s | vs native | median build CPU s "
        "| median helper CPU s | helper % of build CPU | helper RSS MB median / max |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        rss = "—"
        if "helper_rss_median_mb" in r:
            rss = f"{r['helper_rss_median_mb']:.1f} / {r['helper_rss_max_mb']:.1f}"
        out.append(
            f"| {r['contender']} | {r['scenario']} | {r['n']} | {f(r['wall_median_s'])} "
            f"| {f(r['wall_min_s'])}–{f(r['wall_max_s'])} | {f(r['ratio_to_native'], '{:.2f}×')} "
            f"| {f(r['build_cpu_median_s'], '{:.1f}')} | {f(r.get('helper_cpu_median_s'))} "
            f"| {f(r.get('helper_cpu_pct_median'), '{:.1f} %')} | {rss} |")
    stat_rows = [r for r in rows if "stats_median" in r]
    if stat_rows:
        out += ["", "gocacher stats (medians):", ""]
        out += ["| scenario | gets | hits | misses | puts | MB read | MB written |",
                "|---|--:|--:|--:|--:|--:|--:|"]
        for r in stat_rows:
            s = r["stats_median"]
            out.append(f"| {r['scenario']} | {s['gets']:.0f} | {s['hits']:.0f} | {s['misses']:.0f} | {s['puts']:.0f} "
                       f"| {s['bytes_read'] / 1e6:.1f} | {s['bytes_written'] / 1e6:.1f} |")
    lm = meta.get("main_packages", 0)
    rule = "misses == 0, hits == gets" if not lm else \
        f"misses == {lm} (link actions of main packages, never cached by cmd/go), hits == gets - {lm}"
    out += ["", "Checks: " + (f"all gocacher builds passed (warm: {rule}; no errors)."
                              if not problems else f"{len(problems)} problem(s) (warm rule: {rule}):")]
    out += [f"- {p}" for p in problems]
    return "\n".join(out)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def remove_tree(path: Path) -> None:
    """rmtree that also clears read-only files (as the module cache has)."""
    def onerror(func, p, _exc):
        os.chmod(p, 0o700)
        func(p)
    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs (default 5)")
    ap.add_argument("--gocacher", type=Path, default=REPO_ROOT / "target/release/gocacher",
                    help="gocacher binary (default ../target/release/gocacher from this script)")
    ap.add_argument("--json", type=Path, default=SCRIPT_DIR / "results/std.json",
                    help="where to write the table and raw data (default bench/results/std.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (they can be ~1 GB each)")
    ap.add_argument("--workload", default="std",
                    help="'std' (go build std) or a Go module directory (go build ./... in it)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    gocacher = args.gocacher.resolve()
    if not os.access(gocacher, os.X_OK):
        ap.error(f"gocacher binary not found or not executable: {gocacher}")
    if not os.access(TIME_BIN, os.X_OK):
        ap.error(f"{TIME_BIN} (GNU time) is needed to measure the helper")

    env = base_env()
    # A go env file (go env -w) could still set GOCACHEPROG for "native".
    prog = run_text(["go", "env", "GOCACHEPROG"], env=env)
    if prog not in ("", "?"):
        ap.error(f"`go env GOCACHEPROG` is {prog!r} (from the go env file); unset it with `go env -u GOCACHEPROG`")

    if args.workload != "std" and not (Path(args.workload) / "go.mod").is_file():
        ap.error(f"--workload {args.workload!r}: neither 'std' nor a directory with a go.mod")

    meta = machine_info(env)
    meta.update(workload=args.workload, runs=args.runs, gocacher=str(gocacher))
    root = Path(tempfile.mkdtemp(prefix="gocacher-bench-"))
    logs = root / "logs"
    logs.mkdir()
    scratch = root / "scratch"
    scratch.mkdir()
    argv, cwd = workload_command(args.workload, scratch)
    try:
        meta["main_packages"] = count_main_packages(argv, cwd, dict(env, GOCACHE=str(root / "list-gocache")))
    except BenchError as err:
        remove_tree(root)
        ap.error(str(err))
    print(f"# {meta['go_version']}, temp root {root}", file=sys.stderr)

    runs: list[dict[str, object]] = []
    problems: list[str] = []
    error = None
    try:
        # Untimed warm-up: pulls the toolchain's binaries and the sources into
        # the page cache so that the first timed build isn't penalized.
        print("# warm-up build (untimed)", file=sys.stderr)
        proc = subprocess.run(argv, cwd=cwd, env=dict(env, GOCACHE=str(root / "warmup-gocache")),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"warm-up `{' '.join(argv)}` failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        remove_tree(root / "warmup-gocache")

        for i in range(1, args.runs + 1):
            rd = root / f"run{i}"
            native_gocache = rd / "native-gocache"
            cache_dir = rd / "gocacher-dir"
            # Each contender x scenario gets its own directories; "warm" reuses
            # exactly one of the cold build's: GOCACHE (native) or --cache-dir (gocacher).
            plan = [
                ("native", "cold", dict(gocache=native_gocache)),
                ("gocacher", "cold", dict(gocache=rd / "gocacher-cold-gocache", gocacher=gocacher, cache_dir=cache_dir)),
                ("native", "warm", dict(gocache=native_gocache)),
                ("gocacher", "warm", dict(gocache=rd / "gocacher-warm-gocache", gocacher=gocacher, cache_dir=cache_dir)),
            ]
            for contender, scenario, dirs in plan:
                dirs["gocache"].mkdir(parents=True, exist_ok=True)
                rec = run_build(contender=contender, scenario=scenario, run=i, argv=argv, cwd=cwd,
                                env=env, logs=logs, **dirs)
                runs.append(rec)
                line = f"# run {i}/{args.runs} {contender:8} {scenario}: {rec['wall_s']:7.2f} s wall, " \
                       f"{rec['build_cpu_s']:7.1f} s CPU"
                if contender == "gocacher":
                    found = check_gocacher(rec, int(meta["main_packages"]))
                    problems += found
                    st = rec.get("stats", {})
                    line += (f", helper {rec.get('helper_cpu_s', float('nan')):.2f} s CPU "
                             f"{rec.get('helper_rss_mb', float('nan')):.1f} MB RSS, "
                             f"gets {st.get('gets')} hits {st.get('hits')} puts {st.get('puts')}")
                    if found:
                        line += "  <-- " + "; ".join(found)
                print(line, file=sys.stderr, flush=True)
            if not args.keep:
                remove_tree(rd)  # keep disk use to one run's worth
    except BenchError as err:
        error = str(err.args[0])
        if len(err.args) > 1:
            runs.append(err.args[1])
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        if args.keep:
            print(f"# kept temp dirs under {root}", file=sys.stderr)
        else:
            remove_tree(root)

    ok_runs = [r for r in runs if r.get("exit_code") == 0]
    rows = summarize(ok_runs)
    if error:
        problems.append(f"benchmark stopped early: {error}")
    table = render(meta, args.workload, rows, problems)
    print(table)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(
        {"meta": meta, "table_markdown": table, "summary": rows, "problems": problems,
         "error": error, "runs": runs}, indent=2) + "\n")
    print(f"# wrote {args.json}", file=sys.stderr)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
