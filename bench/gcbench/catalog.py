"""Every scenario bench/run.py knows: its name, what it measures, what it
needs, and which runner module runs it with which preset flags. A new
scenario is one entry here (and, for a new kind of measurement, a runner
module with add_args, check_args, smoke and scenario)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

from . import compare, floors, installtime, ixstartup, modproxy, protocol, servenamed, serverload

NEEDS_BUILDS = "go, GNU time, a dist gocacher; MinIO installed on first use"
NEEDS_SEED = "go, GNU time, a dist gocacher; the seed's tools installed on first use"


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    needs: str
    takes: str
    runner: ModuleType
    preset: list[str] = field(default_factory=list)


SCENARIOS = [
    Scenario("std", "`go build std`: native, gocacher (MinIO), the protocol floor; cold, local-warm, "
             "local-warm with --remote, remote-warm on loopback and at 50 ms", NEEDS_BUILDS, "~20 min", compare,
             ["--runs", "7", "--workloads", "std", "--contenders", "native,gocacher,floor",
              "--scenarios", "cold,local-warm,local-warm-remote,remote-warm,remote-warm-50ms"]),
    Scenario("modules", "`go build ./...` of minio-go and the fixture: the std cases plus one-file-change",
             NEEDS_BUILDS + "; the module proxy", "~10 min", compare,
             ["--runs", "3", "--workloads", "minio-go,fixture", "--contenders", "native,gocacher,floor",
              "--scenarios", "cold,local-warm,local-warm-remote,remote-warm,remote-warm-50ms,one-file-change"]),
    Scenario("seed", "every workload: gocacher (MinIO) against the seed's go-cacher on go-cacher-server, "
             "remote-warm at 10, 50 and 100 ms, one-file-change", NEEDS_SEED + "; MinIO; the module proxy",
             "~35 min", compare, ["--runs", "3", "--contenders", "native,gocacher,seed"]),
    Scenario("std-gocached", "`go build std` through gocached: the seed's go-cacher against gocacher "
             "--cache-server, each on a gocached of its own", NEEDS_SEED, "~6 min", compare,
             ["--runs", "3", "--workloads", "std", "--contenders", "native,seed,gocacher-http",
              "--seed-server", "gocached", "--scenarios", "remote-warm,remote-warm-50ms", "--rtts", "50"]),
    Scenario("std-serve", "`go build std` through `gocacher serve`: the seed's go-cacher against gocacher "
             "--cache-server", NEEDS_SEED, "~7 min", compare,
             ["--runs", "3", "--workloads", "std", "--contenders", "native,seed,gocacher-http",
              "--seed-server", "gocacher-serve", "--scenarios", "remote-warm,remote-warm-50ms", "--rtts", "50"]),
    Scenario("std-serve-remote", "`go build std` through `gocacher serve --remote` on MinIO: what the server "
             "asks of its bucket for each build (cold, remote-warm, and remote-warm through a new replica on an "
             "empty disk)", NEEDS_SEED + "; MinIO",
             "~6 min", compare,
             ["--runs", "3", "--workloads", "std", "--contenders", "seed,gocacher-http",
              "--seed-server", "gocacher-serve", "--serve-remote", "--bucket-state", "carry",
              "--scenarios", "cold,remote-warm,new-replica"]),
    Scenario("std-signed", "`go build std`: gocacher against gocacher signing its uploads and checking "
             "every signature", NEEDS_BUILDS, "~6 min", compare,
             ["--runs", "3", "--workloads", "std", "--contenders", "native,gocacher,gocacher-signed",
              "--scenarios", "remote-warm,remote-warm-50ms", "--rtts", "50"]),
    Scenario("std-base", "`go build std`: this gocacher against another build of it (--base-gocacher, say the "
             "commit before a change), side by side in one run: local-warm and remote-warm",
             NEEDS_BUILDS + "; --base-gocacher", "~12 min", compare,
             ["--runs", "5", "--workloads", "std", "--contenders", "native,gocacher,gocacher-base",
              "--scenarios", "local-warm,remote-warm", "--rtts", "0"]),
    Scenario("server-load", "gocached and `gocacher serve` under load: 16 concurrent remote-warm "
             "`go build std`, then 1 KiB and 1 MiB request loads (bench/load) from 16 and 64 connections",
             "go, a dist gocacher; the seed's tools installed on first use", "~25 min", serverload),
    Scenario("serve-named", "manifests and packs on `gocacher serve`: concurrent GETs of a 400 MB pack "
             "(peak RSS), and --max-size trimming packs", "a dist gocacher; ~2 GB of temp disk", "~5 min",
             servenamed),
    Scenario("modproxy", "a new runner's `go mod download` + `go build ./...` of bench/modgraph (138 modules): "
             "straight from the upstream, a zstd tarball of GOMODCACHE in MinIO, `gocacher serve --modproxy` and "
             "go-cache-plugin's module proxy, each with a warm bucket and an empty disk; a file:// floor, and "
             "the floor with stored zips (Athens: looked up)",
             "go, tar, zstd, a dist gocacher; MinIO, mc and go-cache-plugin built on first use", "~10 min", modproxy),
    Scenario("install-time", "`cargo install --locked --path .` from an empty target dir",
             "cargo, GNU time; the crates are fetched first", "~4 min on 2 cores", installtime),
    Scenario("ix-startup", "gocacher's first get with many local pack indexes (ix/ files) in the cache dir",
             "a gocacher binary", "~1 min", ixstartup),
    Scenario("floors", "the least a GOCACHEPROG can cost: the copy floor (writing a warm std cache beside "
             "the build) and local-warm `go build std` with the Go and Rust protocol floors beside gocacher "
             "(builds bench/floor itself)", "go, rustc, GNU time, a dist gocacher", "~10 min", floors),
    Scenario("protocol", "criterion: the protocol loop with the disk tier over in-memory pipes "
             "(benches/protocol.rs)", "cargo", "~3 min plus the bench build", protocol),
]

BY_NAME = {s.name: s for s in SCENARIOS}
