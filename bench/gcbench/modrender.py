"""The modproxy scenario's summary (one row per way: medians, quartiles,
ratios against the tarball of the same run) and its markdown."""

from __future__ import annotations

from .modways import GCP_VERSION
from .render import med, quartiles

GOAL_RATIO = 1.2


def stats(vals: list[float]) -> dict[str, float | None]:
    q1, q3 = quartiles(vals)
    return {"median": med(vals), "q1": q1, "q3": q3, "min": min(vals, default=None), "max": max(vals, default=None)}


def summarize(records: list[dict[str, object]]) -> list[dict[str, object]]:
    ok = [r for r in records if "error" not in r]
    tar = {r["run"]: r for r in ok if r["way"] == "tarball"}
    rows = []
    for way in dict.fromkeys(r["way"] for r in records):
        rs = [r for r in ok if r["way"] == way]
        col = lambda k: [float(r[k]) for r in rs if r.get(k) is not None]  # noqa: E731
        row: dict[str, object] = {"way": way, "n": len(rs), "errors": sum(1 for r in records
                                                                       if r["way"] == way and "error" in r)}
        for k in ("total_s", "fetch_s", "restore_s", "restore_download_s", "restore_extract_s", "download_s",
                  "build_s", "server_peak_rss_mb", "server_cpu_s", "download_dir_bytes"):
            row[k] = stats(col(k))
        row["client_cpu_s"] = med([float(r.get("restore_download_cpu_s", 0)) + float(r.get("restore_extract_cpu_s", 0))
                                   + float(r["download_cpu_s"]) + float(r["build_cpu_s"]) for r in rs])
        for k in ("total_s", "fetch_s"):
            row[f"{k}_vs_tarball"] = med([float(r[k]) / float(tar[r["run"]][k]) for r in rs
                                          if r["run"] in tar and float(tar[r["run"]][k]) > 0])
        s3 = [r["s3"] for r in rs if r.get("s3")]
        row["s3_gets"] = med([float(s["get"]) for s in s3])
        row["s3_bytes_sent"] = med([float(s["bytes_sent"]) for s in s3])
        if way.startswith("gocacher"):
            lat = [r["latency_ms"] for r in rs if r.get("latency_ms")]
            kinds = sorted({k for x in lat for k in x})
            row["latency_ms"] = {k: {"n": med([x[k]["n"] for x in lat if k in x]),
                                     "median": med([x[k]["median"] for x in lat if k in x]),
                                     "p90": med([x[k]["p90"] for x in lat if k in x]),
                                     "max": max(x[k]["max"] for x in lat if k in x),
                                     "sum": med([x[k]["sum"] for x in lat if k in x])} for k in kinds}
            row["upstream_immutable"] = sum(int(r.get("upstream_immutable", 0)) for r in rs)
            row["upstream_mutable"] = sum(int(r.get("upstream_mutable", 0)) for r in rs)
            row["from_bucket"] = med([float(r["from_bucket"]) for r in rs if "from_bucket" in r])
            row["requests_not_200"] = sum(int(r.get("requests_not_200", 0)) for r in rs)
            row["prefetch_s"] = med([float(r["prefetch_s"]) for r in rs if "prefetch_s" in r])
            for k in ("stored_made", "stored_from_bucket", "stored_not_made"):
                row[k] = sum(int(r.get(k, 0)) for r in rs)
            row["server_start_s"] = med([float(r["server_start_s"]) for r in rs if "server_start_s" in r])
        if way == "go-cache-plugin":
            # Its cacher's puts are what it fetched from the upstream.
            row["upstream_immutable"] = sum(int(r.get("gcp_modcache", {}).get("put_request", 0)) for r in rs)
            row["from_bucket"] = med([float(r.get("gcp_modcache", {}).get("get_fault_hit", 0)) for r in rs])
        rows.append(row)
    return rows


def f(v: float | None, digits: int = 2, unit: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{unit}"


def x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def spread(st: dict[str, float | None], digits: int = 2) -> str:
    if st["median"] is None:
        return "—"
    if st["q1"] is None:
        return f"{st['median']:.{digits}f} ({st['min']:.{digits}f}–{st['max']:.{digits}f})"
    return f"{st['median']:.{digits}f} ({st['q1']:.{digits}f}–{st['q3']:.{digits}f})"


def mb(v: float | None) -> str:
    return "—" if v is None else f"{v / 1e6:.1f}"


def goal_lines(by: dict[str, dict[str, object]], meta: dict[str, object]) -> list[str]:
    g = by.get("gocacher")
    if not g or not g["n"]:
        return ["- gocacher did not complete a run: no verdict."]
    out = []
    ratio = g["total_s_vs_tarball"]
    if ratio is not None:
        out.append(f"- **gocacher against the tarball restore**: {ratio:.2f}× (median of per-run ratios of the "
                   f"whole new-runner time; goal ≤ {GOAL_RATIO}×): "
                   f"**{'met' if ratio <= GOAL_RATIO else 'missed'}**. "
                   f"Getting the modules alone (restore + `go mod download`): "
                   f"{f(g['fetch_s_vs_tarball'])}×.")
    for peer in ("go-cache-plugin", "gocacher-prefetch", "gocacher-bare", "upstream"):
        p = by.get(peer)
        if p and p["n"] and g["total_s"]["median"] is not None and p["total_s"]["median"] is not None:
            ahead = g["total_s"]["median"] < p["total_s"]["median"]
            out.append(f"- **gocacher against {peer}**: {g['total_s']['median']:.2f} s against "
                       f"{p['total_s']['median']:.2f} s (medians): {'ahead' if ahead else 'behind'}; modules alone "
                       f"{g['fetch_s']['median']:.2f} s against {p['fetch_s']['median']:.2f} s.")
    if "athens" in meta:
        out.append("- **gocacher against Athens**: not measured (above).")
    fl = by.get("file")
    if fl and fl["n"] and fl["total_s_vs_tarball"] is not None:
        out.append(f"- **The floor** (GOPROXY=file://, go's own work with no server and no network): "
                   f"{x(fl['total_s_vs_tarball'])} the tarball in all, {x(fl['fetch_s_vs_tarball'])} for the modules "
                   f"alone; gocacher {f(g['total_s']['median'])} s against the floor's {f(fl['total_s']['median'])} s, "
                   f"`go mod download` {f(g['download_s']['median'])} s against {f(fl['download_s']['median'])} s. "
                   f"No module proxy can be below the floor: where the floor is over {GOAL_RATIO}× the tarball, "
                   f"the goal is out of reach of any GOPROXY on this machine.")
    st = by.get("file-stored")
    if st and st["n"] and st["total_s_vs_tarball"] is not None:
        out.append(f"- **Stored zips** (GOPROXY=file:// of the same zips re-packed without compression): "
                   f"{x(st['total_s_vs_tarball'])} the tarball in all, `go mod download` "
                   f"{f(st['download_s']['median'])} s against {f(fl['download_s']['median']) if fl else '—'} s "
                   f"with the deflated zips.")
    return out


def render(meta: dict[str, object], summary: list[dict[str, object]], records: list[dict[str, object]]) -> str:
    m = meta["machine"]
    g = meta.get("graph", {})
    by = {r["way"]: r for r in summary}
    lines = [f"# A new runner's modules: `go mod download` + `go build ./...` ({meta['date']})", "",
             f"{m['cpu_model']} ({m['cores']} cores, {m['ram_gb']} GB RAM, Linux {m['kernel']}) · "
             f"{meta['go_version']} · "
             f"gocacher {meta['gocacher_rev']} (dist) · {meta['runs']} run(s) per way, round-robin · load average "
             f"{meta['loadavg_start'][0]:.2f} at start, {meta.get('loadavg_end', [0])[0]:.2f} at the end", "",
             f"The graph: `bench/modgraph`, {g.get('modules_in_go_list_m_all', '?')} modules in `go list -m all` "
             f"(the main one included), "
             f"{g.get('zips_downloaded', '?')} zips downloaded; GOMODCACHE {mb(g.get('gomodcache_bytes'))} MB "
             f"(of which cache/download {mb(g.get('download_dir_bytes'))} MB); the tarball "
             f"{mb(meta.get('tarball_bytes'))} MB.", "",
             "Cells: median (q1–q3 with 4+ runs, else min–max), seconds unless said. \"vs tarball\": median of "
             "per-run ratios to the tarball way of the same run.", "",
             "| way | total | vs tarball | modules (restore + go mod download) | vs tarball | restore = download "
             "+ extract | go mod download | go build | server peak RSS MB | server CPU s | from MinIO MB (GETs) | "
             "into the module cache MB | go CPU s |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in summary:
        if r["way"] == "athens":
            continue
        rs = r["restore_s"]
        restore = "—" if rs["median"] is None else (
            f"{spread(rs)} = {f(r['restore_download_s']['median'])} + {f(r['restore_extract_s']['median'])}")
        from_minio = "—" if r["s3_gets"] is None or r["way"] == "upstream" else (
            f"{mb(r['s3_bytes_sent'])} ({r['s3_gets']:.0f})")
        lines.append(f"| {r['way']} | {spread(r['total_s'])} | {x(r['total_s_vs_tarball'])} | "
                     f"{spread(r['fetch_s'])} | {x(r['fetch_s_vs_tarball'])} | {restore} | "
                     f"{spread(r['download_s'])} | {spread(r['build_s'])} | "
                     f"{spread(r['server_peak_rss_mb'], 1)} | {f(r['server_cpu_s']['median'])} | {from_minio} | "
                     f"{mb(r['download_dir_bytes']['median'])} | {f(r['client_cpu_s'])} |"
                     + (f" ({r['errors']} failed)" if r["errors"] else ""))
    if "athens" in meta:
        a = meta["athens"]
        why = "; ".join(f"`{t['command']}`: {t['error'] or 'served'}" for t in a["tries"])
        lines.append("| athens | blocked | | | | | | | | | | | |")
        state = ("served now, but not yet a contender of this harness" if a["served"]
                 else "not run: the module proxy refuses it")
        lines += ["", f"**Athens**: {state}: {why}"]
    lines += ["", "## Goal: gocacher at most 1.2× the tarball restore, and ahead of both peers", ""]
    lines += goal_lines(by, meta)
    gc = by.get("gocacher")
    if gc and gc.get("latency_ms"):
        lines += ["", "## gocacher serve, per request (its `--verbose` log; per-run medians, then their median)", "",
                  "| file | requests | median ms | p90 ms | max ms | sum ms |", "|---|--:|--:|--:|--:|--:|"]
        for k, v in gc["latency_ms"].items():
            lines.append(f"| {k} | {v['n']:.0f} | {v['median']:.1f} | {v['p90']:.1f} | {v['max']:.1f} "
                         f"| {v['sum']:.0f} |")
        lines += ["", f"Answers other than 200: {gc['requests_not_200']}."]
    counters = [f"- {w}: {f(by[w]['from_bucket'], 0)} files from the bucket per run (median); upstream fetches "
                f"in all timed runs: {by[w]['upstream_immutable']}"
                + (f" immutable, {by[w]['upstream_mutable']} mutable" if w != "go-cache-plugin" else "")
                + (f"; server start {f(by[w]['server_start_s'], 3)} s, prefetch done {f(by[w]['prefetch_s'])} s after"
                   if by[w].get("prefetch_s") is not None else "")
                + (f"; stored copies of zips in all timed runs: {by[w]['stored_from_bucket']} from the bucket, "
                   f"{by[w]['stored_made']} made, {by[w]['stored_not_made']} not made"
                   if by[w].get("stored_made", 0) + by[w].get("stored_from_bucket", 0) else "")
                for w in ("gocacher", "gocacher-prefetch", "gocacher-bare", "go-cache-plugin") if w in by and by[w]["n"]]
    if counters:
        lines += ["", "The proxies' own counters (gocacher: its stop line; go-cache-plugin: its expvar "
                  "`modcache`, where a put is a fetch from the upstream):", ""] + counters
    lines += ["", "## How", "",
              "- **A new runner**: per run, fresh GOPATH and GOMODCACHE at the same paths (the last run's tree moved "
              "aside), a fresh copy of the module; `go mod download`, then `go build ./...` (-trimpath). The build "
              "part is the same for every way: one GOCACHE, warmed once before the runs and shared, so `go build` "
              "reads it and links; only getting the modules differs.",
              f"- **upstream**: GOPROXY `{meta['goproxy']}` (the machine's `go env GOPROXY`), over the real network.",
              "- **tarball**: the GOMODCACHE of the warm-up (`tar --posix --use-compress-program 'zstd -T0'`) kept "
              "in MinIO; restore = `mc cp` to the runner's disk, then `tar -x` with `zstd -d` (as actions/cache "
              "does); then GOPROXY=off, so a missing module fails the run.",
              "- **gocacher**: `gocacher serve --modproxy --remote s3://BUCKET/bench --verbose` with an empty "
              "`--dir`, with `--modproxy-prefetch` (the runner's go.sum) and "
              "`--modproxy-stored-zips` (copies taken from the bucket, where the warm-up put them), as the action "
              "starts it; **gocacher-prefetch**: the prefetch only; "
              "**gocacher-bare**: the same "
              "server without those two flags, on the same bucket; **go-cache-plugin**: `go-cache-plugin serve --modproxy` (" + GCP_VERSION + ", built from its "
              "module) with an empty `--cache-dir`; each on its own MinIO bucket, warmed once before the runs by "
              "one `go mod download` through it, then a new server per run, started inside the timed run. GOPROXY is the server alone (no "
              "fallback), GOSUMDB unchanged (go.sum has every module, so go asks it nothing).",
              "- **file**: GOPROXY=file:// of the warm-up's cache/download on the runner's disk: the least any "
              "module proxy can cost (go's own fetching, hashing and extracting; no network, no server).",
              "- **file-stored**: the same, every zip re-packed with its files stored, not deflated (same names, "
              "modes and contents, so go.sum's hash, which is over the files, still matches; "
              f"{mb(meta.get('stored_zips', {}).get('deflated_bytes'))} MB of zips become "
              f"{mb(meta.get('stored_zips', {}).get('stored_bytes'))} MB): what a proxy serving stored zips could "
              "reach; go then skips inflating each file twice (hash, then extract).",
              "- **Measured**: wall time of each phase; the server's peak RSS (VmHWM over its whole life, one "
              "run) and CPU; MinIO's bytes sent and GETs (v3 metrics); the size of GOMODCACHE/cache/download "
              "after the run; go's CPU. MinIO, the servers and go share the 2 cores."]
    bad = [r for r in records if "error" in r]
    if meta.get("stopped_early"):
        lines += ["", f"**Stopped early**: {meta['stopped_early']}"]
    lines += ["", "## Every run", "",
              "| run | order | way | restore | go mod download | go build | total | server peak RSS MB | "
              "from MinIO MB | load 1m |", "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['run']} | {r['order']} | {r['way']} | failed | | | | | | |")
            continue
        s3 = r.get("s3") or {}
        lines.append(f"| {r['run']} | {r['order']} | {r['way']} | {f(r.get('restore_s'))} | {f(r['download_s'])} | "
                     f"{f(r['build_s'])} | {f(r['total_s'])} | {f(r.get('server_peak_rss_mb'), 1)} | "
                     f"{mb(s3.get('bytes_sent')) if r['way'] != 'upstream' else '—'} | {r['loadavg_1m']} |")
    if bad:
        lines += ["", "Failed runs:", ""] + [f"- run {r['run']} {r['way']}: {r['error'][-600:]}" for r in bad]
    return "\n".join(lines) + "\n"
