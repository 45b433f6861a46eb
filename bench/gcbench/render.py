"""Summaries and markdown: one summary row per workload x scenario x
contender (medians, quartiles, ratios against native), the tables, and
writing the JSON and markdown outputs; and the progress line of one build."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .plan import NOT_RUN, ON_MINIO, SETTLE, ratio_base


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def quartiles(values: list[float]) -> tuple[float | None, float | None]:
    """First and third quartiles (inclusive method) with at least 4 values,
    else (None, None): fewer say nothing about the spread min–max does not."""
    if len(values) < 4:
        return None, None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def summarize(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per workload x scenario x contender; ratios are medians of
    per-run ratios against the native build of the same workload and run.
    Settle builds are left out (they are only in the raw records)."""
    records = [r for r in records if r["scenario"] != SETTLE]
    native = {(r["workload"], r["run"], r["scenario"]): r["wall_s"] for r in records if r["contender"] == "native"}
    keys: list[tuple[str, str, str]] = []
    for r in records:
        k = (r["workload"], r["scenario"], r["contender"])
        if k not in keys:
            keys.append(k)
    rows = []
    for wl, scen, cont in keys:
        recs = [r for r in records if (r["workload"], r["scenario"], r["contender"]) == (wl, scen, cont)]
        walls = [float(r["wall_s"]) for r in recs]
        q1, q3 = quartiles(walls)
        base = ratio_base(scen)
        ratios = [float(r["wall_s"]) / native[(wl, r["run"], base)] for r in recs
                  if native.get((wl, r["run"], base))]
        row: dict[str, object] = {
            "workload": wl, "scenario": scen, "contender": cont, "n": len(recs),
            "wall_median_s": med(walls), "wall_min_s": min(walls), "wall_max_s": max(walls),
            "wall_q1_s": q1, "wall_q3_s": q3,
            "ratio_vs_native": med(ratios), "ratio_base": f"native {base}",
            "build_cpu_median_s": med([r.get("build_cpu_s") for r in recs]),
            "helper_cpu_median_s": med([r.get("helper_cpu_s") for r in recs]),
            "helper_cpu_pct_median": med([r.get("helper_cpu_pct") for r in recs]),
            "helper_rss_median_mb": med([r.get("helper_rss_mb") for r in recs]),
            "helper_rss_max_mb": max((r["helper_rss_mb"] for r in recs if "helper_rss_mb" in r), default=None),
            "wire_median_mb": med([r["wire_bytes"] / 1e6 for r in recs if "wire_bytes" in r]),
            "wire_source": next((r["wire_source"] for r in recs if "wire_source" in r), None),
            "proxy_cpu_median_s": med([r.get("proxy_cpu_s") for r in recs]),
            "server_cpu_median_s": med([r.get("server_cpu_s") for r in recs]),
        }
        s3 = [r["s3"] for r in recs if isinstance(r.get("s3"), dict)]
        if s3:
            row["s3_median"] = {k: med([float(s[k]) for s in s3]) for k in ("get", "put", "head", "list", "other")}
        seed = [r["seed_requests"] for r in recs if isinstance(r.get("seed_requests"), dict)]
        if seed:
            row["seed_requests_median"] = {k: med([float(s[k]) for s in seed]) for k in seed[0]}
        stats = [r["stats"] for r in recs if isinstance(r.get("stats"), dict)]
        if stats:
            all_keys = sorted({k for s in stats for k in s if isinstance(s[k], (int, float))})
            # A key missing from a binary's stats stays missing (not 0).
            row["stats_median"] = {k: med([float(s[k]) for s in stats if k in s]) for k in all_keys}
        rows.append(row)
    return rows


def render(meta: dict[str, object], workloads: dict[str, object], rows: list[dict[str, object]],
           problems: list[str], error: str | None, partial: bool) -> str:
    def f(x, fmt="{:.2f}"):
        return "—" if x is None else fmt.format(x)

    def n(x):
        return "—" if x is None else f"{x:.0f}"

    m = meta
    out = [
        f"# Go build caches side by side ({'PARTIAL, ' if partial else ''}{m['date']})",
        "",
        f"{m['machine']['cpu_model']} ({m['machine']['cores']} cores, {m['machine']['ram_gb']} GB RAM, "
        f"Linux {m['machine']['kernel']}) · {m['go_version']} · gocacher {m['gocacher_rev']} · "
        f"seed {m['seed_version']} · MinIO {m['minio_version']} · {m['runs']} run(s) · "
        f"load avg at start {m['loadavg_start'][0]:.2f}",
        "",
    ]
    for wl, info in workloads.items():
        wrows = [r for r in rows if r["workload"] == wl]
        if not wrows:
            continue
        out += [f"## {wl}: `{info.get('command')}`" + (f" ({info['module']}@{info['version']})" if info.get("version") else ""),
                ""]
        out += ["| scenario | contender | n | median wall s | q1–q3 s | min–max s | vs native | helper CPU s "
                "| helper % build CPU | peak RSS MB | server CPU s | GET | PUT | HEAD | LIST+other | wire MB | MB down "
                "| gets / hits / remote hits | prefetch hits / gets |",
                "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in wrows:
            st = r.get("stats_median") or {}
            get = put = head = lst = "—"
            if "s3_median" in r:
                s = r["s3_median"]
                get, put, head, lst = n(s["get"]), n(s["put"]), n(s["head"]), n(s["list"] + s["other"])
            elif "seed_requests_median" in r:
                s = r["seed_requests_median"]
                get = f"{n(s['get_action'] + s['get_output'])}¹"
                put, head, lst = n(s["put"]), "0", n(s["other"])
            wire = f(r["wire_median_mb"], "{:.1f}")
            if r["wire_median_mb"] is not None and r.get("wire_source", "").startswith("MinIO"):
                wire += "²"
            down = "—"
            if r["contender"] in ON_MINIO and "bytes_downloaded" in st:
                down = f"{st['bytes_downloaded'] / 1e6:.1f}"
            iqr = "—"
            if r.get("wall_q1_s") is not None:
                iqr = f"{f(r['wall_q1_s'])}–{f(r['wall_q3_s'])}"
            hits = "—"
            if st:
                hits = f"{n(st.get('gets'))} / {n(st.get('hits'))} / {n(st.get('remote_hits'))}"
            pre = "—"
            if "prefetch_hits" in st:
                pre = f"{n(st.get('prefetch_hits'))} / {n(st.get('gets'))}"
            if "pack_prefetched" in st:
                pre += f" ({n(st.get('pack_prefetched'))} from the pack)"
            ratio = f(r["ratio_vs_native"], "{:.2f}×")
            out.append(
                f"| {r['scenario']} | {r['contender']} | {r['n']} | {f(r['wall_median_s'])} | {iqr} "
                f"| {f(r['wall_min_s'])}–{f(r['wall_max_s'])} | {ratio} | {f(r['helper_cpu_median_s'])} "
                f"| {f(r['helper_cpu_pct_median'], '{:.1f} %')} "
                f"| {f(r['helper_rss_median_mb'], '{:.1f}')} | {f(r['server_cpu_median_s'])} | {get} | {put} | {head} | {lst} | {wire} "
                f"| {down} | {hits} | {pre} |")
        notes = []
        if info.get("edit"):
            e = info["edit"]
            notes.append(f"one-file-change edits `{e['file']}` (package {e['package']}, imported by "
                         f"{e['importers_in_module']} package(s) of the module): {e['change']}.")
        elif wl == "std":
            notes.append("one-file-change is not run for std: its sources are the toolchain's own GOROOT, shared "
                         "by every build on the machine (and the go command itself).")
        if info.get("note"):
            notes.append(f"{info['note']}.")
        if info.get("main_packages"):
            notes.append(f"{info['main_packages']} main package(s): cmd/go never caches `go build`'s link step, "
                         f"so warm builds miss that many times, with every contender.")
        out += [""] + [f"- {x}" for x in notes] + [""]
    out += [
        "Reading the table:",
        "",
        "- **vs native**: median over runs of (this build's wall time / native's in the same run): cold rows "
        "against native cold; local-warm, local-warm-remote and remote-warm* rows against native local-warm (native "
        "has no remote tier, so its warm build is the baseline); one-file-change* rows against native "
        "one-file-change (the same edit, built on native's warm GOCACHE).",
        "- **wall** stops when go has exited and the helper has exited (pending uploads included). **q1–q3**: "
        "the wall times' first and third quartiles (inclusive method), with 4 runs or more.",
        ("- **floor**: `bench/floor/proto`, the least a GOCACHEPROG can be (a local cache behind the protocol: "
         "a get is one file read and a stat, a put writes the body; no verification, no index, no stats, no "
         "remote), run like gocacher's local builds; cold and local-warm only."
         if "floor" in m.get("contenders", ()) else None),
        ("- **local-warm-remote** (gocacher only): the local dir its cold build of the run left (a copy, so "
         "the same state local-warm starts from) plus the bucket on loopback, as remote-warm uses it: what a "
         "warm machine with a bucket configured pays."
         if "local-warm-remote" in m.get("scenarios", ()) else None),
        ("- **new-replica** (seed and gocacher-http, with `--serve-remote`): right before the build, untimed, "
         "the server is stopped and started again on an empty disk, its bucket as the run's earlier builds left "
         "it: a replica joining a fleet; then a remote-warm build through it."
         if "new-replica" in m.get("scenarios", ()) else None),
        ("- Every remote build of a run starts from the bucket / server as that run's cold build"
         + (" and settle build" if m.get("settle") else "") + " left it "
         "(what later builds added or overwrote is undone between builds, untimed)."
         if m.get("bucket_state", "restore") == "restore" else
         "- `--bucket-state carry`: each remote build sees what earlier builds of its run wrote."),
        ("- **settle**: right after each helper's cold build, one untimed remote-warm build (loopback, empty "
         "local dir and GOCACHE) rewrites the store's state as a warm build leaves it, so remote rows show a CI "
         "fleet's steady state: gocacher prefetches the manifest a warm build wrote, not the cold build's (which "
         "also lists entries cmd/go put but a warm build never asks for). Its records are in the JSON as "
         "scenario `settle`, not in the tables."
         if m.get("settle") else
         "- `--no-settle`: remote rows start from the manifest the cold build wrote: each is the first warm "
         "build after a cold one (gocacher prefetches entries a warm build never asks for)."
         if "settle" in m else None),
        "- **helper CPU / peak RSS** from `/usr/bin/time` wrapping the helper; **helper % build CPU** is the "
        "helper's share of (go's process tree + helper).",
        "- **server CPU**: CPU the server (MinIO for gocacher, go-cacher-server for the seed) used during the "
        "build, from /proc; it runs on the same cores as the build. The delay proxy's CPU is in the JSON "
        "(`proxy_cpu_s`).",
        "- **GET/PUT/HEAD/LIST**: gocacher's S3 requests as counted by MinIO (v3 metrics, scraped before and "
        "after each build). ¹ the seed's requests as logged by go-cacher-server: GET = GET /action lookups + "
        "GET /output downloads (two round trips per remote hit).",
        ("- `--serve-remote`: each `gocacher serve` keeps its entries in MinIO too (`--remote`); the GET/PUT/"
         "HEAD/LIST columns of seed and gocacher-http are then the server's requests to its bucket during the "
         "build (MinIO's metrics), and the JSON's `s3` has their bytes (`bytes_received`: up, `bytes_sent`: down)."
         if m.get("serve_remote") else None),
        "- **wire MB**: bytes through the delay proxy, both directions, on -Nms rows; ² on loopback rows "
        "of gocacher, S3 body bytes from MinIO's metrics (no headers); the seed's loopback rows have no proxy "
        "and no byte count.",
        "- **MB down**: gocacher's own `bytes_downloaded` counter (object bytes it read from the bucket, "
        "whatever fetched them), median, in MB (10^6 bytes); — for other contenders.",
        "- **gets / hits / remote hits**: the helper's own counters (medians). gocacher's `remote_hits` are "
        "on-demand downloads; gets answered from entries it prefetched count as `prefetch_hits` instead. The "
        "seed reports no remote hits (its server's GET /output count is the number of downloads).",
        "- **prefetch hits / gets**: gocacher's `prefetch_hits` and `gets` (only when the binary reports them); "
        "in parentheses, entries that came in the scope's pack (one GET); `prefetched`, `prefetch_unused_bytes` and "
        "`packs_written` are in the JSON.",
        "- " + "; ".join(f"{k}: {v}" for k, v in NOT_RUN.items()) + ".",
    ]
    out = [x for x in out if x is not None]
    if error:
        out += ["", f"**Stopped early**: {error}"]
    if problems:
        out += ["", f"Problems ({len(problems)}):", ""] + [f"- {p}" for p in problems[:50]]
        if len(problems) > 50:
            out.append(f"- ... and {len(problems) - 50} more (see the JSON)")
    return "\n".join(out)


def progress_line(rec: dict[str, object], runs: int) -> str:
    """One build's progress line: wall, CPU, the helper's counters, requests, bytes."""
    line = (f"# {rec['workload']} run {rec['run']}/{runs} {rec['scenario']:<20} {rec['contender']:<8} "
            f"{rec['wall_s']:7.2f} s wall, {rec['build_cpu_s']:6.1f} s CPU")
    if "helper_cpu_s" in rec:
        line += f", helper {rec['helper_cpu_s']:.2f} s CPU {rec['helper_rss_mb']:.1f} MB"
    st = rec.get("stats")
    if isinstance(st, dict):
        line += f", gets {st.get('gets')} hits {st.get('hits')} puts {st.get('puts')}"
        if "remote_hits" in st:
            line += f" remote_hits {st.get('remote_hits')} uploads {st.get('uploads')}"
        if "prefetch_hits" in st:
            line += f" prefetch_hits {st.get('prefetch_hits')}"
        if "pack_prefetched" in st:
            line += f" pack_prefetched {st.get('pack_prefetched')} packs_written {st.get('packs_written')}"
    if isinstance(rec.get("s3"), dict):
        s = rec["s3"]
        line += f", S3 GET {s['get']} PUT {s['put']} HEAD {s['head']} LIST {s['list']}"
    if isinstance(rec.get("seed_requests"), dict):
        s = rec["seed_requests"]
        line += f", server GET {s['get_action']}+{s['get_output']} PUT {s['put']}"
    if "wire_bytes" in rec:
        line += f", wire {rec['wire_bytes'] / 1e6:.1f} MB"
    if isinstance(rec.get("store_restore"), dict):
        sr = rec["store_restore"]
        line += f", store restored (-{sr['deleted']} new, {sr.get('rewritten_count', 0)} rewritten)"
    if rec.get("problems"):
        line += "  <-- " + "; ".join(rec["problems"])
    return line


def write_outputs(json_path: Path, md_path: Path, meta: dict[str, object], workloads: dict[str, object],
                  records: list[dict[str, object]], problems: list[str], partial: bool = False,
                  error: str | None = None) -> str:
    """Writes the JSON (header, summary, markdown, every raw record) and the
    markdown; returns the markdown."""
    summary = summarize(records)
    md = render(meta, workloads, summary, problems, error, partial)
    out = {"meta": meta, "workloads": workloads, "not_run": NOT_RUN, "summary": summary,
           "table_markdown": md, "problems": problems, "error": error, "partial": partial,
           "records": records}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
    tmp.replace(json_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(md + "\n")
    return md
