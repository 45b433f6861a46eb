"""The serve-named scenario: manifests and packs on `gocacher serve`.

Two tests, each on a fresh server and store, repeated `--runs` times:

- `readers-N` (N from `--readers`, default 4 and 8): one PUT of a pack of
  `--pack-mb` (default 400) random bytes, then N concurrent GETs of all of
  it, each body checked against the pack's SHA-256. Peak RSS is the
  server's VmHWM, reset (clear_refs) after the PUT, so it is the readers'
  peak; the peak before it (start and PUT) is recorded too.
- `trim`: a server with `--max-size` `--trim-cap-mb` (default 300) MB is
  sent `--trim-total-mb` (default 800) MB of packs of 20 MB, every other
  one in a pull request's namespace (static tokens), one after another.
  The store's size on disk (every file under it) is sampled while they go
  in and once trim has settled; then every pack is asked for, and the
  packs still served must be the newest ones.

Python standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

from .util import (BenchError, Children, Smoke, default_gocacher, vm_kb, free_port, git_commit, http_get, log, machine_info,
                   tail)

MB = 1_000_000
TRIM_PACK_MB = 20
GLOBAL_TOKEN = "bench-global-writer-token"
PR_TOKEN = "bench-pull-request-token"


class Serve:
    """A `gocacher serve` of our own on 127.0.0.1."""

    def __init__(self, binary: Path, root: Path, children: Children, extra: list[str]) -> None:
        self.root, self.children = root, children
        self.port = free_port()
        self.store = root / "store"
        root.mkdir(parents=True)
        self.log = root / "server.log"
        argv = [str(binary), "serve", "--dir", str(self.store), "--listen", f"127.0.0.1:{self.port}"] + extra
        with open(self.log, "w") as logf:
            self.proc = children.start(argv, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while http_get(f"http://127.0.0.1:{self.port}/gocacher/v1/info", timeout=2)[0] == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"gocacher serve did not start:\n{tail(self.log)}")
            time.sleep(0.1)

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600, blocksize=1 << 20)

    def reset_peak(self) -> None:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError as err:
            raise BenchError(f"resetting the server's peak RSS (clear_refs): {err}")

    def peak_mb(self) -> float | None:
        kb = vm_kb(self.proc.pid, "VmHWM")
        return None if kb is None else round(kb / 1024, 1)

    def stop(self) -> None:
        self.children.stop(self.proc)


def put(server: Serve, kind: str, name: str, path: Path, token: str | None = None) -> None:
    headers = {"Content-Length": str(path.stat().st_size)}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c = server.conn()
    with open(path, "rb") as f:
        c.request("PUT", f"/gocacher/v1/{kind}/{name}", body=f, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 204:
        raise BenchError(f"PUT {kind}/{name}: {r.status} {body[:200]!r}\n{tail(server.log)}")


def get_digest(server: Serve, kind: str, name: str, token: str | None = None) -> tuple[int, int, str]:
    """GETs a named object; its status, length and SHA-256 (hex)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    c = server.conn()
    c.request("GET", f"/gocacher/v1/{kind}/{name}", headers=headers)
    r = c.getresponse()
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    c.close()
    return r.status, n, h.hexdigest()


def random_file(path: Path, size: int) -> str:
    """Writes `size` random bytes to `path`; their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def name_of(i: int) -> str:
    return hashlib.sha256(f"bench pack {i}".encode()).hexdigest()[:32]


def readers(binary: Path, root: Path, children: Children, pack: Path, digest: str, n: int) -> dict[str, object]:
    server = Serve(binary, root, children, [])
    try:
        name = name_of(0)
        put(server, "packs", name, pack)
        whole_life_before = server.peak_mb()
        server.reset_peak()
        results: list[tuple[int, int, str] | str] = [""] * n

        def one(i: int) -> None:
            try:
                results[i] = get_digest(server, "packs", name)
            except (OSError, http.client.HTTPException) as err:
                results[i] = f"{type(err).__name__}: {err}"
        started = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        size = pack.stat().st_size
        bad = [r for r in results if r != (200, size, digest)]
        return {"readers": n, "pack_mb": size // MB, "wall_s": round(wall, 2),
                "mb_per_s": round(n * size / MB / wall, 1), "bad_replies": len(bad),
                "first_bad": str(bad[0])[:300] if bad else None,
                "peak_rss_mb": server.peak_mb(), "put_peak_rss_mb": whole_life_before}
    finally:
        server.stop()


def store_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def trim(binary: Path, root: Path, children: Children, cap_mb: int, total_mb: int) -> dict[str, object]:
    root.mkdir(parents=True)
    tokens = root / "tokens"
    tokens.write_text(f"{GLOBAL_TOKEN} global write\n{PR_TOKEN} refs/pull/1/merge write\n")
    server = Serve(binary, root / "server", children, ["--max-size", f"{cap_mb}MB", "--token-file", str(tokens)])
    try:
        count = total_mb // TRIM_PACK_MB
        pack = root / "pack"
        packs = []
        peak_store = 0
        started = time.monotonic()
        for i in range(count):
            digest = random_file(pack, TRIM_PACK_MB * MB)
            token = GLOBAL_TOKEN if i % 2 == 0 else PR_TOKEN
            put(server, "packs", name_of(i), pack, token)
            packs.append((name_of(i), token, digest))
            peak_store = max(peak_store, store_bytes(server.store))
        written_s = time.monotonic() - started
        # Trim runs in the background: wait until the store stops shrinking.
        settle_start = time.monotonic()
        size = store_bytes(server.store)
        while time.monotonic() - settle_start < 60:
            time.sleep(0.5)
            now = store_bytes(server.store)
            if now == size and now <= cap_mb * MB:
                break
            size = now
        settle_s = time.monotonic() - settle_start
        served = []
        for i, (name, token, digest) in enumerate(packs):
            status, _, got = get_digest(server, "packs", name, token)
            if status == 200:
                if got != digest:
                    raise BenchError(f"pack {i} served with the wrong bytes")
                served.append(i)
        newest = list(range(count - len(served), count))
        return {"cap_mb": cap_mb, "written_mb": count * TRIM_PACK_MB, "pack_mb": TRIM_PACK_MB,
                "write_s": round(written_s, 1), "settle_s": round(settle_s, 1),
                "store_mb_settled": round(size / MB, 1), "store_mb_peak_sampled": round(peak_store / MB, 1),
                "packs_served": len(served), "newest_kept": served == newest and len(served) > 0,
                "served": served}
    finally:
        server.stop()


def spread(vals: list[float]) -> str:
    if not vals:
        return "—"
    return f"{min(vals):g} / {round(statistics.median(vals), 1):g} / {max(vals):g}"


def render(meta: dict[str, object], records: list[dict[str, object]]) -> str:
    lines = [f"# Manifests and packs on gocacher serve ({meta['date']})", "",
             f"{meta['machine']} · gocacher {meta.get('label') or meta['gocacher_commit']} ({meta['gocacher']}) · "
             f"{meta['runs']} run(s); cells are min / median / max", "",
             "## Concurrent GETs of one pack", "",
             "| readers | pack MB | server peak RSS MB (the GETs) | peak RSS MB before them (start, PUT) "
             "| wall s | MB/s out | bad replies |",
             "|--:|--:|--:|--:|--:|--:|--:|"]
    for n in sorted({r["readers"] for r in records if r["test"] == "readers"}):  # type: ignore[type-var]
        rs = [r for r in records if r["test"] == "readers" and r["readers"] == n and "error" not in r]
        if not rs:
            continue
        col = lambda k: spread([float(r[k]) for r in rs if r.get(k) is not None])  # noqa: E731
        lines.append(f"| {n} | {rs[0]['pack_mb']} | {col('peak_rss_mb')} | {col('put_peak_rss_mb')} "
                     f"| {col('wall_s')} | {col('mb_per_s')} | {sum(int(r['bad_replies']) for r in rs)} |")
    rs = [r for r in records if r["test"] == "trim" and "error" not in r]
    if rs:
        r0 = rs[0]
        col = lambda k: spread([float(r[k]) for r in rs])  # noqa: E731
        lines += ["", f"## --max-size {r0['cap_mb']}MB after {r0['written_mb']} MB of {r0['pack_mb']} MB packs", "",
                  "| store MB once trimmed | store MB, largest sampled while writing | packs served "
                  "| newest kept (runs) | settle s |",
                  "|--:|--:|--:|--:|--:|",
                  f"| {col('store_mb_settled')} | {col('store_mb_peak_sampled')} | {col('packs_served')} "
                  f"| {sum(1 for r in rs if r['newest_kept'])} of {len(rs)} | {col('settle_s')} |"]
    lines += ["",
              "- **readers**: one PUT of a pack of random bytes, then that many GETs of all of it at once, "
              "each checked against the pack's SHA-256 (a wrong or short body is a bad reply). The server's "
              "peak RSS is its VmHWM, reset after the PUT; the clients share the cores with it.",
              "- **trim**: packs go in one after another, every other one in a pull request's namespace; the "
              "store's size is every file under its directory (entries, manifests, packs, every namespace). "
              "\"Newest kept\": the packs still served are exactly the newest ones."]
    for r in records:
        if r.get("error"):
            lines.append(f"- {r['test']} run {r['run']}: {r['error']}")
    return "\n".join(lines) + "\n"


def run(args, root: Path, children: Children) -> str:
    binary = Path(args.gocacher).resolve()
    if not os.access(binary, os.X_OK):
        raise BenchError(f"gocacher binary not found at {binary}: pass --gocacher")
    commit = git_commit()
    m = machine_info()
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gocacher_commit": commit, "gocacher": str(binary),
            "machine": f"{m['cpu_model']} ({m['cores']} cores, {m['ram_gb']} GB RAM)", "runs": args.runs,
            "argv": args.argv}
    counts = [int(n) for n in args.readers.split(",") if n.strip()]
    pack = root / "pack"
    log(f"# writing a {args.pack_mb} MB pack")
    digest = random_file(pack, args.pack_mb * MB)
    records: list[dict[str, object]] = []
    for run_i in range(args.runs):
        tests: list[tuple[str, int]] = [("readers", n) for n in counts] + [("trim", 0)]
        for test, n in tests:
            log(f"# run {run_i + 1}/{args.runs}: {test}{f' x{n}' if n else ''}")
            rec: dict[str, object] = {"test": test, "run": run_i + 1}
            troot = root / f"run{run_i}-{test}-{n}"
            try:
                if test == "readers":
                    rec.update(readers(binary, troot, children, pack, digest, n))
                else:
                    rec.update(trim(binary, troot, children, args.trim_cap_mb, args.trim_total_mb))
            except BenchError as err:
                rec["error"] = str(err)[-2000:]
            log(f"#   {json.dumps({k: v for k, v in rec.items() if k != 'served'})}")
            records.append(rec)
            subprocess.run(["rm", "-rf", str(troot)], check=False)
    args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    md = render(meta, records)
    args.md.write_text(md)
    return md


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=3, help="runs of each test (default 3)")
    ap.add_argument("--gocacher", type=Path, default=None,
                    help="gocacher binary (default $CARGO_TARGET_DIR/dist/gocacher, else target/dist/gocacher)")
    ap.add_argument("--readers", default="4,8", help="comma list of concurrent GETs of the pack (default 4,8)")
    ap.add_argument("--pack-mb", type=int, default=400, help="the pack's size (default 400)")
    ap.add_argument("--trim-cap-mb", type=int, default=300, help="--max-size of the trim test, in MB (default 300)")
    ap.add_argument("--trim-total-mb", type=int, default=800, help="MB of packs the trim test writes (default 800)")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        readers = [int(n) for n in args.readers.split(",") if n.strip()]
    except ValueError:
        ap.error(f"--readers: not a comma list of numbers: {args.readers!r}")
    if args.runs < 1 or not readers or min(readers) < 1 or args.pack_mb < 1:
        ap.error("--runs, --readers and --pack-mb must be at least 1")
    if args.trim_total_mb < TRIM_PACK_MB or args.trim_cap_mb < 1:
        ap.error(f"--trim-total-mb must be at least {TRIM_PACK_MB} and --trim-cap-mb at least 1")


def smoke(args: argparse.Namespace) -> bool:
    s = Smoke()
    s.tool("gocacher", Path(args.gocacher or default_gocacher()).resolve(),
           "build it (cargo build --profile dist) or pass --gocacher")
    print(f"  writes a {args.pack_mb} MB random pack to the temp dir; {args.runs} run(s) of: "
          + ", ".join(f"readers-{n}" for n in args.readers.split(",")) + ", trim")
    s.cmd("gocacher serve --dir <tmp>/store --listen 127.0.0.1:<port>   (readers; then N GETs of the pack at once)")
    s.cmd(f"gocacher serve --dir <tmp>/store --listen 127.0.0.1:<port> --max-size {args.trim_cap_mb}MB "
          f"--token-file <tmp>/tokens   (trim: {args.trim_total_mb} MB of {TRIM_PACK_MB} MB packs)")
    return not s.failed


def scenario(args: argparse.Namespace, root: Path, children: Children) -> int:
    args.gocacher = args.gocacher or default_gocacher()
    started = time.time()
    md = run(args, root, children)
    print(md)
    log(f"# wrote {args.json} and {args.md} ({time.time() - started:.0f} s)")
    return 0
