"""The Bench class, which runs every build of a workload in order (the
contenders' binaries and servers, each build, settle, store snapshots and
restores, sanity checks) and keeps the records; and the run's header."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .measure import parse_seed_stats, time_wrapper, timed_build
from .plan import (BENCH_SIGN_KEY, CONTENDERS, LOCAL_WARM_REMOTE, MINIO_PREFIXES, NEW_REPLICA, ON_MINIO, REMOTE_HELPERS, SEED_MODULE, SEED_SERVED, SETTLE,
                   STORE_KINDS, WARM_KINDS, FLOOR_SOURCE, native_scenario, scenario_kind, scenario_rtt, takes_part)
from .render import progress_line, write_outputs
from .servers import S3_KEY, S3_REGION, S3_SECRET, BucketSnapshot, DelayProxy, Minio, SeedServer, s3_delta
from .util import (REPO_ROOT, BenchError, Children, default_gocacher, ensure_tool, go_quote, log, machine_info,
                   remove_tree, run_checked, run_text)
from .workloads import Workload

def run_meta(args: argparse.Namespace, scenarios: list[str], rtts: list[str], edit_rtts: list[str], root: Path,
             env: dict[str, str]) -> dict[str, object]:
    commit = run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    if run_text(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"]) not in ("", "?"):
        commit += "+dirty"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "go_version": run_text(["go", "version"], env=env),
        "go_env": {k: run_text(["go", "env", k], env=env) for k in ("GOFLAGS", "GOPROXY", "GOMODCACHE", "GOROOT")},
        "gocacher_rev": commit,
        "runs": args.runs,
        "workloads": args.workloads,
        "contenders": args.contenders,
        "scenarios": scenarios,
        "rtts_ms": [float(r) for r in rtts],
        "edit_rtts_ms": [float(r) for r in edit_rtts],
        "bucket_state": args.bucket_state,
        "serve_remote": bool(getattr(args, "serve_remote", False)),
        "settle": args.settle,
        "settle_note": (
            "after each helper's cold build, one untimed remote-warm build (loopback, empty local dir and "
            "GOCACHE, same flags and scope) ran before the store was snapshotted; remote rows measure the "
            "steady state (gocacher prefetches a warm build's manifest). Its records have scenario 'settle' "
            "and are not in the summary. Skipped for a workload without remote scenarios."
            if args.settle else
            "--no-settle: remote rows start from the store as the cold build left it (the cold build's "
            "manifest): first warm build after a cold one"),
        "loadavg_start": list(os.getloadavg()),
        "argv": getattr(args, "argv", sys.argv),
        "preset": getattr(args, "preset", []),
        "temp_root": str(root),
        "seed_version": "not run", "minio_version": "not run",
    }


# --------------------------------------------------------------------------
# The benchmark: every build of every workload, in order
# --------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, env: dict[str, str], children: Children,
                 meta: dict[str, object]) -> None:
        self.args = args
        self.root = root
        self.env = env
        self.children = children
        self.meta = meta
        self.records: list[dict[str, object]] = []
        self.problems: list[str] = []
        self.workload_infos: dict[str, object] = {}
        self.minio: Minio | None = None
        self.gocacher: Path | None = None
        self.gocacher_base: Path | None = None
        self.floor: Path | None = None
        self.seed_client: Path | None = None
        self.seed_server_bin: Path | None = None
        self.edit_counter = 0
        self.logs = root / "logs"
        # Trees a build is done with wait here until the temp root goes at
        # the end (see discard).
        self.discarded = root / "discarded"
        self.discard_count = 0
        self.logs.mkdir()

    # -- the contenders' binaries and servers, once --------------------
    def setup_contenders(self, tools: Path) -> None:
        args, root, meta = self.args, self.root, self.meta
        serve = args.seed_server == "gocacher-serve" and any(c in args.contenders for c in SEED_SERVED)
        if any(c in args.contenders for c in ON_MINIO + ("gocacher-http",)) or serve:
            src = (args.gocacher or default_gocacher()).resolve()
            if not os.access(src, os.X_OK):
                raise BenchError(f"gocacher binary not found at {src}: build it (cargo build --profile dist) or pass --gocacher")
            # A copy, so that a rebuild during the benchmark cannot change it.
            (root / "bin").mkdir()
            self.gocacher = root / "bin" / "gocacher"
            shutil.copy2(src, self.gocacher)
            meta["gocacher_binary"] = {"path": str(src),
                                       "sha256": hashlib.sha256(self.gocacher.read_bytes()).hexdigest()[:16],
                                       "mtime": datetime.datetime.fromtimestamp(src.stat().st_mtime).isoformat(
                                           timespec="seconds")}
            helptext = run_text([str(self.gocacher), "--help"])
            meta["gocacher_binary"]["flags"] = sorted(set(re.findall(r"--[a-z][a-z0-9-]+", helptext)))
        if "gocacher-base" in args.contenders:
            base = Path(args.base_gocacher or "").resolve()
            if not args.base_gocacher or not os.access(base, os.X_OK):
                raise BenchError("contender gocacher-base needs --base-gocacher: a gocacher binary to compare against")
            self.gocacher_base = root / "bin" / "gocacher-base"
            shutil.copy2(base, self.gocacher_base)
            meta["gocacher_base_binary"] = {"path": str(base),
                                            "sha256": hashlib.sha256(self.gocacher_base.read_bytes()).hexdigest()[:16]}
        if any(c in args.contenders for c in ON_MINIO) or args.serve_remote:
            minio_bin = tools / "bin" / "minio"
            ensure_tool(minio_bin, ["bash", str(REPO_ROOT / "integration/tools/install-minio.sh")], "MinIO")
            stamp = tools / "bin" / ".minio.version"
            minio_v = run_text([str(minio_bin), "--version"]).splitlines()
            meta["minio_version"] = (stamp.read_text().strip() if stamp.exists() else "?") + \
                f" ({minio_v[0] if minio_v else '?'})"
            (root / "minio").mkdir()
            self.minio = Minio(minio_bin, root / "minio", self.children)
            log(f"# starting MinIO ({minio_bin})")
            self.minio.start()
            meta["minio_endpoint"] = self.minio.endpoint
        if "floor" in args.contenders:
            # Built once, before any timed build, with the builds' environment.
            self.floor = root / "proto"
            log(f"# building the floor helper: go build -o {self.floor} {FLOOR_SOURCE}")
            run_checked(["go", "build", "-o", str(self.floor), FLOOR_SOURCE], "building the floor helper",
                        cwd=REPO_ROOT, env=self.env)
            meta["floor_binary"] = {"source": FLOOR_SOURCE,
                                    "source_sha256": hashlib.sha256((REPO_ROOT / FLOOR_SOURCE).read_bytes())
                                    .hexdigest()[:16],
                                    "sha256": hashlib.sha256(self.floor.read_bytes()).hexdigest()[:16]}
        if any(c in args.contenders for c in SEED_SERVED):
            self.seed_client = tools / "bin" / "go-cacher"
            self.seed_server_bin = self.gocacher if serve else tools / "bin" / args.seed_server
            for b in (self.seed_client, self.seed_server_bin):
                if b != self.gocacher:
                    ensure_tool(b, ["bash", str(REPO_ROOT / "integration/tools/install-seed.sh")], b.name)
            stamp = tools / "bin" / ".seed.version"
            meta["seed_version"] = f"{SEED_MODULE}@" + (stamp.read_text().strip() if stamp.exists() else "?")
            meta["seed_server"] = args.seed_server

    @staticmethod
    def bucket_env() -> dict[str, str]:
        """MinIO's credentials, and nothing else of the AWS chain."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": S3_REGION,
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}

    def on_bucket(self, contender: str) -> bool:
        """Whether the contender's builds reach MinIO: its own requests
        (gocacher) or its server's (`--serve-remote`)."""
        return contender in ON_MINIO or (self.args.serve_remote and contender in SEED_SERVED)

    # -- one build of one contender ------------------------------------
    def build(self, wl: Workload, contender: str, scenario: str, run: int, state: dict[str, object],
              order: int) -> dict[str, object]:
        tag = f"{wl.name}-run{run}-{scenario}-{contender}"
        bdir = self.root / "runs" / tag
        bdir.mkdir(parents=True)
        kind = scenario_kind(scenario)
        rtt = scenario_rtt(scenario)
        env = dict(self.env)
        time_file = self.logs / f"{tag}.time"
        stats_file = self.logs / f"{tag}.stats.json"
        rec: dict[str, object] = {"workload": wl.name, "contender": contender, "scenario": scenario, "run": run,
                                  "order_in_scenario": order, "rtt_ms": rtt}
        cleanup: list[Path] = []
        proxy: DelayProxy | None = None
        server_cpu0 = None
        server = None

        if contender == "native":
            gocache = state["native_gocache"]
            env["GOCACHE"] = str(gocache)
            time_file = None
        else:
            gocache = bdir / "gocache"
            gocache.mkdir()
            cleanup.append(gocache)
            env["GOCACHE"] = str(gocache)
            cold_dir = state[f"{contender}_local_cold"]
            if kind in ("cold", "local-warm"):
                local = cold_dir
            elif kind == LOCAL_WARM_REMOTE:
                # A copy of the cold build's local dir, this build's alone.
                local = state[f"{contender}_local_warm_copy"]
                cleanup.append(local)
            else:
                local = bdir / "local"
                cleanup.append(local)
            remote = kind != "local-warm"
            if contender in ON_MINIO:
                binary = self.gocacher_base if contender == "gocacher-base" else self.gocacher
                assert binary and self.minio
                server = self.minio
                helper = [str(binary), "--cache-dir", str(local), "--stats-file", str(stats_file)]
                if remote:
                    endpoint = self.minio.endpoint
                    if rtt:
                        proxy = DelayProxy(self.minio.port, rtt, self.children)
                        endpoint = f"http://127.0.0.1:{proxy.port}"
                    prefix = MINIO_PREFIXES[contender]
                    helper += ["--remote", f"s3://{state['bucket']}/{prefix}", "--s3-endpoint", endpoint,
                               "--s3-region", S3_REGION]
                    if contender == "gocacher-signed":
                        env["GOCACHER_SIGN_KEY"] = BENCH_SIGN_KEY
                    # The scope travels by env so that a binary without --scope still works.
                    env.update(self.bucket_env(), GOCACHER_SCOPE=f"bench-{wl.name}")
            elif contender == "floor":
                assert self.floor and kind in ("cold", "local-warm"), (contender, scenario)  # no remote tier
                helper = [str(self.floor), "-dir", str(local)]
            else:  # seed and gocacher-http: a client of a seed server
                if contender == "seed":
                    assert self.seed_client
                    helper = [str(self.seed_client), "--cache-dir", str(local), "--verbose"]
                else:
                    assert self.gocacher
                    helper = [str(self.gocacher), "--cache-dir", str(local), "--stats-file", str(stats_file)]
                seed: SeedServer = state[f"{contender}_server"]
                if kind == NEW_REPLICA:
                    # Untimed: the server again, on an empty disk.
                    seed.stop()
                    self.discard(seed.root / "data")
                    seed.start()
                server = seed
                if remote:
                    url = seed.url
                    if rtt:
                        proxy = DelayProxy(seed.port, rtt, self.children)
                        url = f"http://127.0.0.1:{proxy.port}"
                    helper += ["--cache-server", url]
            rec["helper_argv"] = helper
            prog = time_wrapper(time_file) + helper
            env["GOCACHEPROG"] = " ".join(go_quote(a) for a in prog)

        if kind == "one-file-change":
            self.edit_counter += 1
            wl.apply_edit(self.edit_counter)
            rec["edit"] = {"file": wl.info["edit"]["file"], "n": self.edit_counter}

        metrics0 = self.minio.metrics() if self.on_bucket(contender) and self.minio else None
        seed_off = state["seed_server"].log_offset() if contender == "seed" else None
        if server is not None:
            server_cpu0 = server.cpu()
        proxy_cpu0 = proxy.cpu() if proxy else None
        try:
            rec.update(timed_build(wl, env, time_file, self.args, tag))
        finally:
            if kind == "one-file-change":
                wl.revert_edit()
            if proxy is not None and (sys.exc_info()[0] is not None):
                self.children.stop(proxy.proc)
        rec["loadavg_1m_after"] = os.getloadavg()[0]

        # Everything below is untimed.
        if server is not None and server_cpu0 is not None:
            c = server.cpu()
            rec["server_cpu_s"] = None if c is None else round(c - server_cpu0, 3)
        if proxy is not None:
            c = proxy.cpu()
            rec["proxy_cpu_s"] = None if c is None or proxy_cpu0 is None else round(c - proxy_cpu0, 3)
            counters = proxy.stop()
            rec["proxy"] = counters
            rec["wire_bytes"] = counters["bytes_up"] + counters["bytes_down"]
            rec["wire_source"] = "delay proxy: all TCP bytes, both directions"
        if contender in ON_MINIO + ("gocacher-http",):
            try:
                rec["stats"] = json.loads(stats_file.read_text())
            except (OSError, ValueError) as err:
                rec["stats_error"] = f"{stats_file}: {err}"
            if self.minio and self.on_bucket(contender):
                rec["s3"] = s3_delta(metrics0, self.minio.metrics())
                if rec["s3"] is not None and "wire_bytes" not in rec and contender in ON_MINIO:
                    rec["wire_bytes"] = rec["s3"]["bytes_received"] + rec["s3"]["bytes_sent"]
                    rec["wire_source"] = "MinIO metrics: S3 request and response bodies"
        elif contender == "seed":
            stats = parse_seed_stats(str(rec.get("output", "")))
            if stats is not None:
                rec["stats"] = stats
            else:
                rec["stats_error"] = "no 'cacher: closing' line from go-cacher --verbose"
            time.sleep(0.1)  # the server logs a request as its handler returns
            rec["seed_requests"] = state["seed_server"].requests_since(seed_off)
            if self.minio and self.on_bucket(contender):
                rec["s3"] = s3_delta(metrics0, self.minio.metrics())
        for p in cleanup:
            self.discard(p)
        self.discard(bdir)
        self.check(wl, rec)
        return rec

    def check(self, wl: Workload, rec: dict[str, object]) -> None:
        """Sanity checks; problems go to the report, the run goes on."""
        tag = f"{rec['workload']} run {rec['run']} {rec['scenario']} {rec['contender']}"
        found = []
        for key in ("helper_exit", "stats_error"):
            if key in rec:
                found.append(f"{tag}: {rec[key]}")
        st = rec.get("stats")
        kind = scenario_kind(str(rec["scenario"]))
        if isinstance(st, dict):
            if st.get("get_errors") or st.get("put_errors"):
                found.append(f"{tag}: get_errors={st.get('get_errors')} put_errors={st.get('put_errors')}")
            if kind in WARM_KINDS and st.get("misses", 0) > wl.main_packages:
                found.append(f"{tag}: warm build missed {st.get('misses')} times (expected {wl.main_packages}: "
                             f"the link actions of main packages, which cmd/go never caches)")
            for key in ("remote_errors", "corrupt", "upload_errors", "uploads_dropped"):
                if st.get(key):
                    found.append(f"{tag}: {key}={st[key]}")
        s3 = rec.get("s3")
        if isinstance(s3, dict) and isinstance(st, dict) and "uploads" in st:
            puts = s3["put"]
            expect = int(st.get("uploads", 0)) + int(st.get("upload_errors", 0))
            if puts < expect:
                found.append(f"{tag}: MinIO counted {puts} PUTs but gocacher reports {expect} uploads")
        self.problems += found
        rec["problems"] = found

    # -- one workload: warm-up, then the runs ---------------------------
    def run_workload(self, wl: Workload, scenarios: list[str]) -> None:
        args = self.args
        log(f"# {wl.name}: warm-up build (untimed): {' '.join(wl.argv)} in {wl.cwd}")
        warm = self.root / "warmup-gocache"
        t0 = time.perf_counter()
        proc = subprocess.run(wl.argv, cwd=wl.cwd, env=dict(self.env, GOCACHE=str(warm)),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        self.discard(warm)
        if proc.returncode != 0:
            hint = ""
            if wl.name == "minio-go":
                hint = f"\n(try another served version with --minio-go-version; this one was {args.minio_go_version})"
            raise BenchError(f"{wl.name}: warm-up `{' '.join(wl.argv)}` failed:\n"
                             f"{(proc.stdout + proc.stderr)[-4000:]}{hint}")
        wl.info["warmup_s"] = round(time.perf_counter() - t0, 2)

        contenders = list(args.contenders)
        # Settling only matters to a helper with builds that read the store.
        settle_for = {c for c in contenders if args.settle and c in REMOTE_HELPERS and
                      any(takes_part(c, s) and scenario_kind(s) in STORE_KINDS for s in scenarios)}
        wl.info["settle"] = bool(settle_for)
        copy_warm = {c for c in contenders if c in REMOTE_HELPERS and
                     any(takes_part(c, s) and scenario_kind(s) == LOCAL_WARM_REMOTE for s in scenarios)}
        for run in range(1, args.runs + 1):
            run_root = self.root / "runs" / f"{wl.name}-run{run}"
            run_root.mkdir(parents=True)
            state: dict[str, object] = {"native_gocache": run_root / "native-gocache"}
            state["native_gocache"].mkdir()
            for c in CONTENDERS:
                state[f"{c}_local_cold"] = run_root / f"{c}-local"
            if any(c in contenders for c in ON_MINIO) or args.serve_remote:
                state["bucket"] = f"{wl.name}-run{run}"
                self.minio.create_bucket(state["bucket"])
            for c in SEED_SERVED:
                if c in contenders:
                    extra, senv = [], None
                    if args.serve_remote:
                        extra = ["--remote", f"s3://{state['bucket']}/serve-{c}", "--s3-endpoint",
                                 self.minio.endpoint, "--s3-region", S3_REGION]
                        senv = dict(os.environ, **self.bucket_env())
                    server = SeedServer(self.seed_server_bin, run_root / f"{c}-server", self.children,
                                        serve=self.args.seed_server == "gocacher-serve", extra=extra, env=senv)
                    server.start()
                    state[f"{c}_server"] = server
            # Rotate the contenders' order from run to run.
            k = (run - 1) % len(contenders)
            order = contenders[k:] + contenders[:k]
            done_native: set[str] = set()
            try:
                for scenario in scenarios:
                    for i, contender in enumerate(order):
                        if not takes_part(contender, scenario):
                            continue
                        name = scenario
                        if contender == "native":
                            name = native_scenario(scenario)
                            if name in done_native:
                                continue
                            done_native.add(name)
                        rec = self.build(wl, contender, name, run, state, i)
                        remote_helper = contender in REMOTE_HELPERS
                        if name == "cold" and remote_helper:
                            self.check_cold_filled(rec)
                        elif args.bucket_state == "restore" and scenario_kind(name) in STORE_KINDS and remote_helper:
                            rec["store_restore"] = self.restore_store(contender, state)
                        self.records.append(rec)
                        self.progress(rec)
                        if name == "cold" and remote_helper:
                            if contender in copy_warm:
                                self.copy_warm_local(contender, state, run_root)
                            if contender in settle_for:
                                self.settle(wl, contender, run, state, i)
                            if args.bucket_state == "restore":
                                self.snapshot_store(contender, state)
            finally:
                for c in SEED_SERVED:
                    if f"{c}_server" in state:
                        state[f"{c}_server"].stop()
                self.discard(run_root)
            self.write_outputs(partial=True)

    def discard(self, path: Path) -> None:
        """Sets a finished tree aside instead of deleting it: the temp root
        goes at the very end. On ext4 without a journal (as on the machine
        measured here), creating an inode skips every inode deleted in the
        last minute or so (`recently_deleted` in the kernel's inode
        allocator), one by one: a build that writes thousands of files right
        after the last build's were deleted spends much of its helper's CPU
        there (`perf` shows it). A fresh CI machine has no such deletions
        behind it, and native warm builds create no files, so deleting
        between builds would measure the harness, not the contenders."""
        if not path.exists():
            return
        self.discarded.mkdir(exist_ok=True)
        self.discard_count += 1
        try:
            path.rename(self.discarded / str(self.discard_count))
        except OSError:
            remove_tree(path)

    def copy_warm_local(self, contender: str, state: dict[str, object], run_root: Path) -> None:
        """Copies the local dir the contender's cold build left, for its
        local-warm-remote build: local-warm builds in that dir itself (and
        may write to it), and local-warm-remote must start from the same
        state. Untimed; the sync keeps the copy's writeback out of the next
        timed build."""
        src = state[f"{contender}_local_cold"]
        dst = run_root / f"{contender}-local-warm-copy"
        if src.exists():
            shutil.copytree(src, dst, symlinks=True)
        else:
            dst.mkdir()
        os.sync()
        state[f"{contender}_local_warm_copy"] = dst

    def settle(self, wl: Workload, contender: str, run: int, state: dict[str, object], order: int) -> None:
        """One untimed remote-warm build (loopback, empty local dir and
        GOCACHE, the same flags, env and scope as the measured ones) right
        after the contender's cold build and before the store is snapshotted.
        For gocacher it rewrites the scope's manifest as a warm build sees it:
        the cold build's manifest lists every entry cmd/go put, including many
        a warm build never asks for, and the first warm build prunes them. So
        the measured remote builds are a CI fleet's steady state, not the first
        build after a cold one. For the seed it changes nothing but access
        times; it runs for symmetry. Recorded in the JSON, not in the tables."""
        rec = self.build(wl, contender, SETTLE, run, state, order)
        rec["untimed"] = True
        self.records.append(rec)
        self.progress(rec)
        tag = f"{wl.name} run {run}: {contender}'s settle build"
        if contender in ON_MINIO + ("gocacher-http",):
            st = rec.get("stats")
            if not isinstance(st, dict):
                raise BenchError(f"{tag} left no stats ({rec.get('stats_error')})")
            from_store = int(st.get("remote_hits", 0)) + int(st.get("prefetch_hits", 0))
            if not from_store:
                raise BenchError(f"{tag} got nothing from the bucket (stats: {json.dumps(st)}); build output:\n"
                                 f"{str(rec.get('output', ''))[-2000:]}")
        else:
            reqs = rec.get("seed_requests") or {}
            # gocached logs no request lines; go-cacher's own hit count says it.
            if not reqs.get("get_output") and not (rec.get("stats") or {}).get("hits"):
                raise BenchError(f"{tag} downloaded nothing from go-cacher-server (requests: {json.dumps(reqs)}); "
                                 f"build output:\n{str(rec.get('output', ''))[-2000:]}")

    def snapshot_store(self, contender: str, state: dict[str, object]) -> None:
        """Remembers the bucket / server dir as this run's cold build (and
        settle build) left it."""
        if contender in ON_MINIO:
            # The whole bucket: every contender on MinIO, its prefix each.
            state["bucket_snapshot"] = BucketSnapshot(self.minio.s3, state["bucket"])
        else:
            data = state[f"{contender}_server"].root / "data"
            state[f"{contender}_files"] = {p for p in data.rglob("*") if p.is_file()}
            # gocacher serve's manifests and packs are replaced in place.
            state[f"{contender}_named"] = {p: p.read_bytes() for p in (data / "named").rglob("*") if p.is_file()}

    def restore_store(self, contender: str, state: dict[str, object]) -> dict[str, object]:
        """Puts the bucket / server dir back as the cold (and settle) builds
        left it, so that every remote scenario of a run starts from the same state (for
        gocacher: its per-scope manifest, which each build rewrites, and the
        objects a one-file-change build uploaded). Untimed."""
        if contender in ON_MINIO:
            return state["bucket_snapshot"].restore()
        data = state[f"{contender}_server"].root / "data"
        new = [p for p in data.rglob("*") if p.is_file() and p not in state[f"{contender}_files"]]
        for p in new:
            p.unlink()
        rewritten = 0
        for p, body in state.get(f"{contender}_named", {}).items():
            if not p.exists() or p.read_bytes() != body:
                p.write_bytes(body)
                rewritten += 1
        return {"deleted": len(new), "rewritten_count": rewritten}

    def check_cold_filled(self, rec: dict[str, object]) -> None:
        """Remote scenarios mean nothing if the cold build left the store empty."""
        if rec["contender"] in ON_MINIO + ("gocacher-http",):
            st = rec.get("stats") or {}
            if not st.get("uploads"):
                raise BenchError(f"{rec['workload']} run {rec['run']}: gocacher's cold build uploaded nothing "
                                 f"to MinIO (stats: {json.dumps(st)}); build output:\n{rec.get('output', '')[-2000:]}")
        else:
            reqs = rec.get("seed_requests") or {}
            if not reqs.get("put") and not (rec.get("stats") or {}).get("puts"):
                raise BenchError(f"{rec['workload']} run {rec['run']}: the seed's cold build sent no PUT to "
                                 f"go-cacher-server; build output:\n{rec.get('output', '')[-2000:]}")

    def progress(self, rec: dict[str, object]) -> None:
        log(progress_line(rec, self.args.runs))

    # -- outputs --------------------------------------------------------
    def write_outputs(self, partial: bool = False, error: str | None = None) -> str:
        return write_outputs(self.args.json, self.args.md, self.meta, self.workload_infos, self.records,
                             self.problems, partial, error)
