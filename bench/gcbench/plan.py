"""The names of a build comparison: workloads, contenders, the build cases
(cold, local-warm, remote-warm-<N>ms, ...) and their kinds, and which
contender takes part in which case. Pure: no I/O, no imports from the rest
of the package but util."""

from __future__ import annotations

import argparse
import re

from .util import parse_list

WORKLOADS = ("std", "minio-go", "fixture")
CONTENDERS = ("native", "gocacher", "floor", "seed", "gocacher-http", "gocacher-signed", "gocacher-base")
# Contenders with a remote tier (a bucket or a server): they get settle
# builds, store snapshots and restores. native and floor are local only.
# gocacher-http is gocacher with --cache-server, on a seed server of its own
# of the same kind as the seed's (--seed-server).
REMOTE_HELPERS = ("gocacher", "seed", "gocacher-http", "gocacher-signed", "gocacher-base")
# gocacher on MinIO: gocacher-signed is gocacher with a signing key (which it
# also trusts, so its remote builds check every signature), under its own
# prefix of the same bucket. gocacher-base is another gocacher binary
# (--base-gocacher: an older commit, say) under a prefix of its own, so a
# change is measured before and after in one run.
ON_MINIO = ("gocacher", "gocacher-signed", "gocacher-base")
# Each gocacher-on-MinIO contender's key prefix in the bucket.
MINIO_PREFIXES = {"gocacher": "gocacher", "gocacher-signed": "gocacher-signed", "gocacher-base": "gocacher-base"}
# A fixed test key for gocacher-signed (64 hex digits: an ed25519 seed).
BENCH_SIGN_KEY = "5e" * 32
# The contenders that talk to a seed server, each its own per run.
SEED_SERVED = ("seed", "gocacher-http")
MINIO_GO_MODULE = "github.com/minio/minio-go/v7"
DEFAULT_MINIO_GO_VERSION = "v7.4.1"
SEED_MODULE = "github.com/bradfitz/go-tool-cache"
FLOOR_SOURCE = "bench/floor/proto/main.go"  # relative to the repo root
NOT_RUN = {
    "tailscale/go-cache-plugin": "not run here: its GOCACHEPROG side is not a contender of the build "
                                 "comparisons; its module proxy (v0.1.1) is, in the modproxy scenario",
}


# --------------------------------------------------------------------------
# Build cases: names, kinds, who takes part
# --------------------------------------------------------------------------

SETTLE = "settle"
LOCAL_WARM_REMOTE = "local-warm-remote"
# A remote-warm build through a server just restarted on an empty disk, its
# bucket warm (--serve-remote): a replica joining a fleet.
NEW_REPLICA = "new-replica"
# Kinds whose builds read the bucket / server (and so are restored after).
STORE_KINDS = ("remote-warm", LOCAL_WARM_REMOTE, "one-file-change")
# Kinds after which a build should have missed only the link steps.
WARM_KINDS = ("local-warm", LOCAL_WARM_REMOTE, "remote-warm", SETTLE, NEW_REPLICA)


def scenario_rtt(scenario: str) -> float:
    m = re.search(r"-(\d+(?:\.\d+)?)ms$", scenario)
    return float(m.group(1)) if m else 0.0


def scenario_kind(scenario: str) -> str:
    """cold | local-warm | local-warm-remote | remote-warm | one-file-change |
    new-replica | settle (the untimed remote-warm build after a cold one;
    never in the tables)"""
    if scenario in (SETTLE, LOCAL_WARM_REMOTE, NEW_REPLICA):
        return scenario
    for kind in ("one-file-change", "remote-warm", "local-warm", "cold"):
        if scenario.startswith(kind):
            return kind
    raise ValueError(scenario)


def native_scenario(scenario: str) -> str:
    """The native build that stands for a scenario: native has no remote, so
    remote-warm* and local-warm-remote map to its local-warm, and
    one-file-change* to one one-file-change build on its warm GOCACHE."""
    kind = scenario_kind(scenario)
    return {"remote-warm": "local-warm", LOCAL_WARM_REMOTE: "local-warm", NEW_REPLICA: "local-warm"}.get(kind, kind)


def ratio_base(scenario: str) -> str:
    kind = scenario_kind(scenario)
    return {"cold": "cold", "one-file-change": "one-file-change"}.get(kind, "local-warm")


def takes_part(contender: str, scenario: str) -> bool:
    """Whether a contender builds in a scenario. native always does (through
    native_scenario); floor has no remote tier, so only cold and local-warm;
    local-warm-remote is gocacher's alone (native's local-warm is its base);
    new-replica is the seed server's clients' alone."""
    kind = scenario_kind(scenario)
    if contender == "floor":
        return kind in ("cold", "local-warm")
    if kind == NEW_REPLICA:
        return contender in ("native",) + SEED_SERVED
    if kind == LOCAL_WARM_REMOTE:
        return contender in ("native",) + ON_MINIO
    return True


def expand_scenarios(spec: str | None, rtts: list[str], edit_rtts: list[str]) -> list[str]:
    def name(base: str, rtt: str) -> str:
        return base if float(rtt) == 0 else f"{base}-{rtt}ms"
    default = (["cold", "local-warm", LOCAL_WARM_REMOTE, "remote-warm"]
               + [name("remote-warm", r) for r in rtts if float(r)]
               + [name("one-file-change", r) for r in edit_rtts])
    if not spec:
        return default
    out = []
    for s in parse_list(spec, None, "scenario"):
        if s == "remote-warm-rtt":
            out += [name("remote-warm", r) for r in rtts if float(r)]
        elif s in ("cold", "local-warm", LOCAL_WARM_REMOTE, NEW_REPLICA) or \
                re.fullmatch(r"(remote-warm|one-file-change)(-\d+(\.\d+)?ms)?", s):
            out.append(s)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {s!r}: use cold, local-warm, local-warm-remote, remote-warm, remote-warm-<N>ms, "
                f"remote-warm-rtt (every --rtts), one-file-change, one-file-change-<N>ms, new-replica "
                f"(with --serve-remote)")
    # cold always runs first: every other scenario starts from its state.
    out = ["cold"] + [s for s in out if s != "cold"]
    return list(dict.fromkeys(out))
