#!/usr/bin/env bash
# Step 4 of the gocacher action: Go modules through the bucket. Starts
# `gocacher serve --modproxy` on 127.0.0.1 (a port the kernel picks, so
# jobs sharing a machine never collide) as a background process for the
# rest of the job, with the bucket behind it, and puts it first in the
# job's GOPROXY: http://127.0.0.1:PORT/mod|<the GOPROXY the job had>. After
# a `|` go moves on to the next entry on any error, so a proxy that dies
# or fails costs a download from the usual place, never the build.
#
# In:  GOCACHER_BIN, READ_ONLY (configure.sh's decision, which the proxy's
#      bucket writes follow), INPUT_MODULES, INPUT_REMOTE, INPUT_REGION,
#      INPUT_ENDPOINT, RUNNER_OS, RUNNER_TEMP, GITHUB_WORKSPACE (its go.sum
#      files are prefetched), GITHUB_ENV, GITHUB_OUTPUT.
# Out: modules=URL of the proxy (empty when GOPROXY was left as it was).
#
# Nothing here fails the job but a bad `modules` input: whatever stops the
# proxy leaves GOPROXY as it was, with one line saying why.
set -euo pipefail
# shellcheck source=action/lib.sh
source "$GITHUB_ACTION_PATH/action/lib.sh"

# How long the proxy may take to listen, in tenths of a second.
READY_TENTHS=100
# go.sum files looked for in the workspace: how deep, and how many at most.
SUM_DEPTH=4
MAX_SUMS=64

skip() {
  [[ $# -gt 0 ]] && note "$*"
  output modules ""
  exit 0
}

# A URL with any user:password@ replaced by ***@ (a GOPROXY may hold one).
redact() { sed -E 's#://[^/@[:space:]]*@#://***@#g'; }

case "${INPUT_MODULES:-auto}" in
  auto | true) ;;
  false) skip ;;
  *) fail "modules: \"$INPUT_MODULES\" is not auto, true or false" ;;
esac
if [[ -z "${INPUT_REMOTE:-}" ]]; then
  [[ "${INPUT_MODULES:-auto}" == true ]] &&
    skip "modules: true, but no remote to keep modules in: GOPROXY stays as it is"
  skip
fi
# From here on, anything unexpected leaves GOPROXY as it was and the job
# going.
trap 'warn "the module proxy step stopped at line $LINENO: GOPROXY stays as it is"; output modules ""; exit 0' ERR
[[ -n "${GOCACHER_BIN:-}" ]] || skip "no gocacher in this job: GOPROXY stays as it is"
if [[ "${RUNNER_OS:-}" == Windows ]]; then
  skip "the module proxy does not run on Windows runners yet: GOPROXY stays as it is"
fi
# GOTOOLCHAIN=local: reading a setting downloads no toolchain.
if ! previous="$(GOTOOLCHAIN=local go env GOPROXY 2>/dev/null)"; then
  skip "go env GOPROXY failed (no go on PATH yet? put actions/setup-go before this step): GOPROXY stays as it is, and no module proxy is started"
fi
# The action run twice in one job: the first run's proxy is not an upstream.
if [[ -n "${GOCACHER_MODULES_URL:-}" && "$previous" == "$GOCACHER_MODULES_URL|"* ]]; then
  previous="${previous#"$GOCACHER_MODULES_URL|"}"
fi
shown="$(redact <<<"$previous")"
first="${previous%%[,|]*}"
case "$first" in
  off) skip "GOPROXY is off in this job (no module downloads): it stays so, and no module proxy is started" ;;
  direct) skip "GOPROXY=$shown starts with direct: go fetches modules from their origins as the job asks, and the module proxy (which needs a module proxy to fetch from) is not started" ;;
  http://* | https://*) ;;
  *) skip "GOPROXY=$shown starts with no http(s) module proxy to fetch from: it stays as it is, and no module proxy is started" ;;
esac

detach=()
if command -v setsid >/dev/null; then
  detach=(setsid)
fi
dir="${RUNNER_TEMP:?}/gocacher-modules"
log="$RUNNER_TEMP/gocacher-modules.log"
# There before the proxy starts: the wait below reads it at once.
: >"$log" 2>/dev/null || skip "cannot write $log: GOPROXY stays as it is, and no module proxy is started"
args=(serve --modproxy --listen 127.0.0.1:0 --dir "$dir" --remote "$INPUT_REMOTE" --verbose)
[[ -n "${INPUT_REGION:-}" ]] && args+=(--s3-region "$INPUT_REGION")
[[ -n "${INPUT_ENDPOINT:-}" ]] && args+=(--s3-endpoint "$INPUT_ENDPOINT")
[[ "${READ_ONLY:-true}" == true ]] && args+=(--read-only)
# The job's go.sum files: what they name is copied from the bucket to the
# proxy's disk as it starts, many files at a time, before go asks.
sums=()
if [[ -d "${GITHUB_WORKSPACE:-}" ]]; then
  while IFS= read -r -d '' f && ((${#sums[@]} < MAX_SUMS)); do
    sums+=("$f")
  done < <(find "$GITHUB_WORKSPACE" -maxdepth "$SUM_DEPTH" \
    \( -name .git -o -name vendor -o -name testdata -o -name node_modules \) -prune -o \
    -type f -name go.sum -print0 2>/dev/null || true)
fi
for f in ${sums[@]+"${sums[@]}"}; do
  args+=(--modproxy-prefetch "$f")
done
# go runs on this machine: zips go to it with their files stored, which it
# reads without inflating them (taken from the bucket, where the first
# writer job to need each one put it).
args+=(--modproxy-stored-zips)
# Its own stdin, stdout and stderr, so that no step waits for it to close
# them, and (with setsid) its own session, so that nothing that stops this
# step's processes stops it. The client's settings that serve refuses
# (signing, fallbacks) stay out of its environment; the upstream goes in
# through it, not the command line (a GOPROXY may hold a password).
(
  unset GOCACHER_SIGN_KEY_FILE GOCACHER_SIGN_KEY GOCACHER_TRUST_KEYS GOCACHER_ALSO_READ \
    GOCACHER_READ_ONLY GOCACHER_LISTEN GOCACHER_SERVE_DIR
  export GOCACHER_MODPROXY_UPSTREAM="$first"
  # No load balancer in front of it: SIGTERM at the job's end stops it at once.
  export GOCACHER_DRAIN=0s
  exec ${detach[@]+"${detach[@]}"} "$GOCACHER_BIN" "${args[@]}"
) </dev/null >"$log" 2>&1 &
pid=$!

addr=""
for ((i = 0; i < READY_TENTHS; i++)); do
  addr="$(sed -n -E 's#^gocacher serve: listening on http://([0-9.]+:[0-9]+),.*#\1#p' "$log" 2>/dev/null |
    head -n 1 || true)"
  [[ -n "$addr" ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$addr" ]]; then
  if kill -0 "$pid" 2>/dev/null; then
    why="it did not listen within $((READY_TENTHS / 10)) s; stopped it"
    kill "$pid" 2>/dev/null || true
  else
    why="it exited"
  fi
  warn "the module proxy did not start ($why): GOPROXY stays as it is, and go downloads modules from there"
  tail -n 5 "$log" 2>/dev/null | redact | sed 's/^/gocacher: module proxy log: /'
  output modules ""
  exit 0
fi

# Stopped when the process that runs the job's steps ends (the runner
# stops what a job left running too; this covers runners that do not).
job_pid="$(ps -o ppid= -p "$PPID" 2>/dev/null | tr -d ' ' || true)"
if [[ "$job_pid" =~ ^[0-9]+$ && "$job_pid" -gt 1 ]]; then
  # shellcheck disable=SC2016 # expanded by the watchdog's own bash
  ${detach[@]+"${detach[@]}"} bash -c 'while kill -0 "$1" && kill -0 "$2"; do sleep 2; done; kill "$2"' \
    watchdog "$job_pid" "$pid" </dev/null >/dev/null 2>&1 &
fi

url="http://$addr/mod"
export_env GOPROXY "$url|$previous"
export_env GOCACHER_MODULES_URL "$url"
export_env GOCACHER_MODULES_LOG "$log"
output modules "$url"
if [[ "${READ_ONLY:-true}" == true ]]; then
  how="reads modules from the bucket and writes none to it"
else
  how="reads modules from the bucket and copies those it fetches to it"
fi
if ((${#sums[@]} > 0)); then
  how="$how; it copies what ${#sums[@]} go.sum file(s) name from the bucket first"
fi
note "module proxy at $url (pid $pid, log $log): it $how, and fetches the rest from $(redact <<<"$first"); GOPROXY=$url|$shown for the job's later steps"
