"""Measuring one build: the timed build itself, the /usr/bin/time report of
the helper, CPU accounting (the build's process tree, and servers from
/proc), and the seed's stats line."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .util import TIME_BIN, BenchError

if TYPE_CHECKING:
    import argparse

    from .workloads import Workload


def children_cpu() -> float:
    """User+sys CPU seconds of all waited-for descendants so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user+sys, all threads) of a running process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


TIME_LINE = re.compile(r"^(\d+) (\d+\.\d+) (\d+\.\d+)$")
SEED_STATS = re.compile(r"cacher: closing; (\d+) gets \((\d+) hits, (\d+) misses, (\d+) errors\); "
                        r"(\d+) puts \((\d+) errors\)")
SEED_STATS_KEYS = ("gets", "hits", "misses", "get_errors", "puts", "put_errors")


def time_wrapper(time_file: Path) -> list[str]:
    """The words that go before a helper's own in GOCACHEPROG: GNU time
    writes the helper's peak RSS and CPU to time_file when it exits."""
    return [TIME_BIN, "-f", "%M %U %S", "-o", str(time_file)]


def read_time_file(path: Path) -> dict[str, object] | None:
    """The `%M %U %S` line GNU time writes when the helper exits, or None
    while it is not there yet. A non-zero exit adds a line before it."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    if not lines:
        return None
    m = TIME_LINE.match(lines[-1].strip())
    if not m:
        return None
    out: dict[str, object] = {"helper_rss_mb": int(m.group(1)) / 1024,
                              "helper_cpu_s": float(m.group(2)) + float(m.group(3))}
    if len(lines) > 1:
        out["helper_exit"] = " | ".join(lines[:-1])
    return out


def parse_seed_stats(output: str) -> dict[str, int] | None:
    """The counters of go-cacher --verbose's last `cacher: closing; ...` line
    in a build's output, or None without one."""
    m = None
    for m in SEED_STATS.finditer(output):
        pass
    if not m:
        return None
    return dict(zip(SEED_STATS_KEYS, (int(g) for g in m.groups())))


def timed_build(wl: Workload, env: dict[str, str], time_file: Path | None, args: argparse.Namespace,
                tag: str) -> dict[str, object]:
    """Runs the workload's build; the clock stops when go has exited and,
    with a helper, when /usr/bin/time has written the helper's report (the
    helper has exited). cmd/go itself waits only for the helper's stdout."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(wl.argv, cwd=wl.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.build_timeout)
    except BaseException as err:
        # Timeout, Ctrl-C or SIGTERM: the build's whole process group goes
        # (go, its compilers, the helper and its /usr/bin/time wrapper).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if isinstance(err, subprocess.TimeoutExpired):
            raise BenchError(f"{tag}: `{' '.join(wl.argv)}` did not finish within {args.build_timeout} s") from None
        raise
    t_go = time.perf_counter()
    go_cpu = children_cpu() - cpu0
    rec: dict[str, object] = {"go_exit_s": t_go - t0, "go_tree_cpu_s": go_cpu, "exit_code": proc.returncode}
    text = out.decode(errors="replace")
    if time_file is not None:
        deadline = t_go + args.helper_timeout
        while True:
            report = read_time_file(time_file)
            if report is not None:
                break
            if time.perf_counter() > deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the helper is still in the build's group
                except ProcessLookupError:
                    pass
                raise BenchError(f"{tag}: the GOCACHEPROG helper had not exited {args.helper_timeout} s after go "
                                 f"(no report in {time_file}); build output:\n{text[-3000:]}")
            time.sleep(0.002)
        rec.update(report)
    rec["wall_s"] = time.perf_counter() - t0
    rec["output"] = text[-6000:]
    if proc.returncode != 0:
        raise BenchError(f"{tag}: `{' '.join(wl.argv)}` in {wl.cwd} exited {proc.returncode}:\n{text[-4000:]}")
    rec["build_cpu_s"] = go_cpu + float(rec.get("helper_cpu_s", 0.0))
    if "helper_cpu_s" in rec and rec["build_cpu_s"] > 0:
        rec["helper_cpu_pct"] = 100 * float(rec["helper_cpu_s"]) / float(rec["build_cpu_s"])
    return rec
