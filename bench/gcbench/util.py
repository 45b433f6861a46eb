"""Small helpers shared by the whole benchmark: logging, running setup
commands, errors, free ports, tree removal, the process group of the
servers and proxies we own, and the environment every build starts from."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent  # bench/
REPO_ROOT = BENCH_DIR.parent
TIME_BIN = "/usr/bin/time"


class BenchError(Exception):
    """Setup or a build failed; the message says why."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP, handled like Ctrl-C."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_result(json_path: Path, md_path: Path, payload: dict, md: str) -> None:
    """Writes a scenario's result (the JSON record and the Markdown table), prints the table and logs where."""
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    md_path.write_text(md)
    print(md)
    log(f"# wrote {json_path} and {md_path}")


def run_text(argv: list[str], **kw) -> str:
    """Output of a short informational command, or '?' if it fails."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_checked(argv: list[str], what: str, **kw) -> str:
    """Runs a setup command; raises BenchError with its output if it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, **kw)
    except (OSError, subprocess.SubprocessError) as err:
        raise BenchError(f"{what}: `{' '.join(argv)}` could not run: {err}") from None
    if proc.returncode != 0:
        raise BenchError(f"{what}: `{' '.join(argv)}` exited {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_tree(path: Path) -> None:
    """rmtree that also clears read-only files (as the module cache has)."""
    def onerror(func, p, _exc):
        try:
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def go_quote(arg: str) -> str:
    """Quotes one word for GOCACHEPROG, which cmd/go splits like a command line."""
    if arg and not any(c.isspace() or c in "'\"" for c in arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if '"' not in arg:
        return f'"{arg}"'
    raise BenchError(f"cannot quote {arg!r} for GOCACHEPROG")


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (OSError, urllib.error.URLError):
        return 0, ""


def vm_kb(pid: int, field: str) -> int | None:
    """A field of /proc/PID/status in kB (VmHWM: peak RSS); None once the
    process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def parse_list(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


# --------------------------------------------------------------------------
# Child processes we own: servers and proxies. Each gets its own session, so
# a Ctrl-C in the terminal reaches only us, and we stop them in order.
# --------------------------------------------------------------------------

class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 10) -> None:
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except ProcessLookupError:
                pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            self.stop(p)


# --------------------------------------------------------------------------
# Setup: tools, environment, machine
# --------------------------------------------------------------------------

def tools_dir() -> Path:
    return Path(os.environ.get("GOCACHER_TOOLS_DIR") or Path.home() / ".cache/gocacher-tools")


def default_gocacher() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    return Path(target) / "dist/gocacher" if target else REPO_ROOT / "target/dist/gocacher"


def base_env() -> dict[str, str]:
    """The environment of every build. GOFLAGS is cleared and the toolchain
    pinned; no inherited GOCACHEPROG, GOCACHER_* or AWS_* can leak in."""
    env = {k: v for k, v in os.environ.items()
           if k != "GOCACHEPROG" and not k.startswith("GOCACHER_") and not k.startswith("AWS_")}
    env["GOFLAGS"] = ""
    env["GOTOOLCHAIN"] = "local"
    return env


def check_go(env: dict[str, str]) -> None:
    """go on PATH, and no GOCACHEPROG from the go env file (or native would
    not be native, and the seed's clients would run under another helper)."""
    if shutil.which("go") is None:
        raise BenchError("`go` is not on PATH")
    prog = run_text(["go", "env", "GOCACHEPROG"], env=env)
    if prog not in ("", "?"):
        raise BenchError(f"`go env GOCACHEPROG` is {prog!r} (from the go env file): unset it with "
                         f"`go env -u GOCACHEPROG`")


def machine_info() -> dict[str, object]:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu_model": cpu_model, "cores": os.cpu_count(), "ram_gb": ram_gb, "kernel": platform.release()}


def ensure_tool(path: Path, installer: list[str], what: str) -> None:
    if os.access(path, os.X_OK):
        return
    log(f"# {what} missing at {path}: running {' '.join(installer)}")
    run_checked(installer, f"installing {what}", cwd=REPO_ROOT)
    if not os.access(path, os.X_OK):
        raise BenchError(f"{what}: {' '.join(installer)} ran but {path} is still missing")


def git_commit() -> str:
    """The short commit of the work tree, with +dirty when tracked files differ."""
    commit = run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    if run_text(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"]) not in ("", "?"):
        commit += "+dirty"
    return commit


# --------------------------------------------------------------------------
# --smoke: what a scenario would need and run, without running it
# --------------------------------------------------------------------------

class Smoke:
    """Collects a scenario's preflight: each tool found or missing, and the
    commands the scenario would run. A missing tool that the scenario
    installs itself is a note; one it cannot get (a binary to build, `go`)
    fails the smoke check."""

    def __init__(self) -> None:
        self.failed = False

    def ok(self, what: str, detail: str = "") -> None:
        print(f"  ok       {what}" + (f": {detail}" if detail else ""))

    def note(self, what: str, detail: str) -> None:
        print(f"  note     {what}: {detail}")

    def missing(self, what: str, fix: str) -> None:
        self.failed = True
        print(f"  MISSING  {what}: {fix}")

    def tool(self, what: str, path: Path | str, fix: str, installs: list[str] | None = None) -> bool:
        """An executable by path or on PATH; `installs`: the installer the
        scenario runs when it is missing (a note, not a failure)."""
        if os.path.sep in str(path):
            found = str(path) if os.access(path, os.X_OK) else None
        else:
            found = shutil.which(str(path))
        if found:
            self.ok(what, found)
            return True
        if installs:
            self.note(what, f"not at {path}; the scenario installs it first: {' '.join(installs)}")
        else:
            self.missing(what, f"not found at {path}; {fix}")
        return False

    def go_env(self, env: dict[str, str]) -> None:
        prog = run_text(["go", "env", "GOCACHEPROG"], env=env)
        if prog in ("", "?"):
            self.ok("go env GOCACHEPROG", "unset")
        else:
            self.missing("go env GOCACHEPROG", f"is {prog!r}: unset it with `go env -u GOCACHEPROG`")

    def cmd(self, argv: list[str] | str) -> None:
        print("  would run  " + (argv if isinstance(argv, str) else " ".join(argv)))
