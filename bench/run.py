#!/usr/bin/env python3
"""The benchmark harness: one entry point for every scenario.

    python3 bench/run.py --list                  # the scenarios, what each needs
    python3 bench/run.py SCENARIO [FLAGS]        # writes bench/results/SCENARIO.md and .json
    python3 bench/run.py SCENARIO --smoke        # checks tools, prints what it would run
    python3 bench/run.py SCENARIO --help         # the scenario's flags

A scenario is a runner (bench/gcbench/) with preset flags
(bench/gcbench/catalog.py); flags given here come after the preset, so they
override it. Each run replaces its scenario's results file: the latest
measurement of each scenario is what bench/results/ holds. See
bench/README.md. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gcbench.catalog import BY_NAME, SCENARIOS  # noqa: E402
from gcbench.util import BENCH_DIR, BenchError, Children, Interrupted, log, remove_tree  # noqa: E402


def print_list() -> None:
    width = max(len(s.name) for s in SCENARIOS)
    for s in SCENARIOS:
        print(f"{s.name:<{width}}  {s.what}")
        print(f"{'':<{width}}  needs: {s.needs}; takes {s.takes}")
        if s.preset:
            print(f"{'':<{width}}  preset: {' '.join(s.preset)}")


def scenario_parser(name: str) -> argparse.ArgumentParser:
    sc = BY_NAME[name]
    ap = argparse.ArgumentParser(prog=f"bench/run.py {name}", description=sc.what,
                                 epilog=f"Needs: {sc.needs}. Preset: {' '.join(sc.preset) or 'none'}. "
                                        f"See bench/README.md.")
    ap.add_argument("--smoke", action="store_true",
                    help="check the tools and print what would run, without measuring anything")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results",
                    help=f"directory of {name}.md and {name}.json (default bench/results)")
    ap.add_argument("--json", type=Path, default=None, help=f"JSON output (default OUT/{name}.json)")
    ap.add_argument("--md", type=Path, default=None, help="markdown output (default: the JSON path with .md)")
    ap.add_argument("--keep", action="store_true", help="keep the temp root (logs, servers' data)")
    sc.runner.add_args(ap)
    return ap


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nScenarios:\n")
        print_list()
        return 0 if argv else 2
    if argv[0] == "--list":
        print_list()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BY_NAME:
        log(f"bench/run.py: unknown scenario {name!r}; --list shows them: {', '.join(BY_NAME)}")
        return 2
    sc = BY_NAME[name]
    ap = scenario_parser(name)
    args = ap.parse_args(sc.preset + rest)
    sc.runner.check_args(ap, args)
    args.argv = ["bench/run.py", name] + rest
    args.preset = sc.preset
    args.json = (args.json or args.out / f"{name}.json").resolve()
    args.md = (args.md or args.json.with_suffix(".md")).resolve()

    if args.smoke:
        print(f"{name}: {sc.what}")
        flags = " ".join(a for a in sc.preset + rest if a != "--smoke")
        print(f"  flags: {flags or '(none)'}")
        with tempfile.TemporaryDirectory(prefix="gocacher-bench-smoke-") as tmp:
            args.smoke_dir = tmp
            ok = sc.runner.smoke(args)
        print(f"  writes {args.md} and {args.json}")
        print(f"{name}: smoke {'ok' if ok else 'FAILED (see MISSING above)'}")
        return 0 if ok else 1

    def on_signal(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored
    # (as a shell's background job is).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    children = Children()
    root = Path(tempfile.mkdtemp(prefix=f"gocacher-bench-{name}-"))
    try:
        return sc.runner.scenario(args, root, children)
    except BenchError as err:
        log(f"bench/run.py {name}: {err}")
        return 1
    except (KeyboardInterrupt, Interrupted) as err:
        log(f"bench/run.py {name}: interrupted ({err or 'Ctrl-C'})")
        return 1
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
