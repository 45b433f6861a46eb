#!/usr/bin/env bash
# go build std through a real MinIO on loopback: objects and bytes uploaded
# by a cold build, remote-warm time (empty local dir and GOCACHE, full
# bucket) against Go's own warm cache, and the cold build time with the
# bucket down. Usage: bash bench/s3_std.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-5}"
cargo build --release --quiet
bin="$PWD/target/release/gocacher"
minio="$(bash integration/tools/install-minio.sh 2>/dev/null)"
work="$(mktemp -d)"
trap 'kill $minio_pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MINIO_BROWSER=off MINIO_ROOT_USER=gocacher MINIO_ROOT_PASSWORD=gocacher-secret \
  "$minio" server --quiet --address "127.0.0.1:$port" --certs-dir "$work/certs" "$work/data" >"$work/minio.log" 2>&1 &
minio_pid=$!
export AWS_ACCESS_KEY_ID=gocacher AWS_SECRET_ACCESS_KEY=gocacher-secret AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port" AWS_EC2_METADATA_DISABLED=true GOFLAGS= GOTOOLCHAIN=local
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/minio/health/live" >/dev/null && break; sleep 0.2; done
mkdir -p "$work/data/bench"   # a bucket, MinIO's single-drive layout

now() { date +%s.%N; }
build() { # build NAME GOCACHE [GOCACHEPROG]; prints wall seconds
  local s e
  s=$(now)
  GOCACHE="$2" GOCACHEPROG="${3:-}" go build std
  e=$(now)
  echo "$e - $s" | bc
}
stat() { python3 -c "import json,sys; d=json.load(open('$1')); print(d['$2'])"; }

mkdir -p "$work/native"
build native "$work/native" >/dev/null # fill Go's own cache
# /usr/bin/time as the GOCACHEPROG wrapper records the helper's peak RSS.
cold=$(build cold "$(mktemp -d -p "$work")" "/usr/bin/time -f %M -o $work/cold.rss $bin --cache-dir $work/cold --stats-file $work/cold.json --remote s3://bench/std")
objects=$(find "$work/data/bench/std" -name 'xl.meta' | wc -l)
echo "cold through MinIO: ${cold}s; puts $(stat "$work/cold.json" puts), uploads $(stat "$work/cold.json" uploads), objects in bucket $objects"
sleep 0.5
echo "helper peak RSS, cold: $(cat "$work/cold.rss") KB"
echo "bytes: stored $(stat "$work/cold.json" bytes_written), uploaded $(stat "$work/cold.json" bytes_uploaded)"

for i in $(seq "$runs"); do
  n=$(build native "$work/native")
  r=$(build remote "$(mktemp -d -p "$work")" "/usr/bin/time -f %M -o $work/warm$i.rss $bin --cache-dir $work/warm$i --stats-file $work/warm$i.json --remote s3://bench/std")
  sleep 0.2
  echo "run $i: native warm ${n}s, remote warm ${r}s (remote_hits $(stat "$work/warm$i.json" remote_hits) of $(stat "$work/warm$i.json" gets) gets, helper peak RSS $(cat "$work/warm$i.rss") KB)"
done

kill $minio_pid; wait $minio_pid 2>/dev/null || true
down=$(build down "$(mktemp -d -p "$work")" "$bin --cache-dir $work/down --stats-file $work/down.json --remote s3://bench/std")
n=$(build native "$(mktemp -d -p "$work")")
echo "cold with the bucket down: ${down}s (native cold right after: ${n}s); remote_errors $(stat "$work/down.json" remote_errors), uploads_dropped $(stat "$work/down.json" uploads_dropped)"
