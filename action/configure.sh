#!/usr/bin/env bash
# Step 3 of the gocacher action: decide whether this job may write the
# bucket, export GOCACHEPROG and the GOCACHER_* settings to the job's later
# steps through GITHUB_ENV, and give the checkout stable mtimes.
#
# In:  GOCACHER_BIN (empty: gocacher could not be installed, or the binary
#      was refused), INPUT_* (the action's inputs), GITHUB_ENV,
#      GITHUB_OUTPUT, GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, GITHUB_REPOSITORY, GITHUB_ACTOR, RUNNER_TEMP.
# Out: gocacher=BINARY, read-only=true|false.
set -euo pipefail
# shellcheck source=action/lib.sh
source "$GITHUB_ACTION_PATH/action/lib.sh"

if [[ -z "${GOCACHER_BIN:-}" ]]; then
  output read-only true
  exit 0
fi
bin="$GOCACHER_BIN"
"$bin" --version >/dev/null || {
  warn "$bin does not run: Go runs without gocacher in this job"
  output read-only true
  exit 0
}

# The event's decision: whether an auto job writes, which key input a
# writing job may sign with (sign-key, pull-request-sign-key or none), why.
IFS=$'\t' read -r auto_read_only key_input reason < <("$bin" github-read-only) || true
case "${INPUT_READ_ONLY:-auto}" in
  auto) read_only="${auto_read_only:-true}" reason="${reason:-the event could not be read}" ;;
  true) read_only=true reason="read-only: true" ;;
  false) read_only=false reason="read-only: false" ;;
  *) fail "read-only: \"$INPUT_READ_ONLY\" is not auto, true or false" ;;
esac
if [[ "$read_only" == true ]]; then
  note "the bucket is read-only in this job ($reason)"
else
  note "this job writes the bucket ($reason)"
fi

# cmd/go splits GOCACHEPROG like a command line: quote a path with spaces.
if [[ "$bin" == *" "* ]]; then
  export_env GOCACHEPROG "\"$bin\""
else
  export_env GOCACHEPROG "$bin"
fi
[[ -n "${INPUT_REMOTE:-}" ]] && export_env GOCACHER_REMOTE "$INPUT_REMOTE"
[[ -n "${INPUT_REGION:-}" ]] && export_env GOCACHER_S3_REGION "$INPUT_REGION"
[[ -n "${INPUT_ENDPOINT:-}" ]] && export_env GOCACHER_S3_ENDPOINT "$INPUT_ENDPOINT"
[[ -n "${INPUT_SCOPE:-}" ]] && export_env GOCACHER_SCOPE "$INPUT_SCOPE"
[[ -n "${INPUT_ALSO_READ:-}" ]] && export_env GOCACHER_ALSO_READ "$INPUT_ALSO_READ"
[[ -n "${INPUT_TRUST_KEY:-}" ]] && export_env GOCACHER_TRUST_KEYS "$INPUT_TRUST_KEY"
[[ -n "${INPUT_CACHE_DIR:-}" ]] && export_env GOCACHER_CACHE_DIR "$INPUT_CACHE_DIR"
[[ "${INPUT_VERBOSE:-false}" == true ]] && export_env GOCACHER_VERBOSE true
export_env GOCACHER_READ_ONLY "$read_only"
for k in "${INPUT_SIGN_KEY:-}" "${INPUT_PULL_REQUEST_SIGN_KEY:-}"; do
  if [[ -n "$k" ]]; then
    echo "::add-mask::$k"
  fi
done
# The key reaches only the jobs github-read-only names for it: sign-key
# the events that build reviewed code, pull-request-sign-key the pull
# requests that may write. Any later step of the job can read the key.
case "$key_input" in
  sign-key) sign_key="${INPUT_SIGN_KEY:-}" ;;
  pull-request-sign-key) sign_key="${INPUT_PULL_REQUEST_SIGN_KEY:-}" ;;
  *) sign_key="" ;;
esac
if [[ "$read_only" == false && -n "$sign_key" ]]; then
  # A file, not the variable: the key stays out of every later step's
  # environment (and so out of the tests' reach through os.Environ).
  key="${RUNNER_TEMP:?}/gocacher-sign-key"
  (umask 077 && printf '%s\n' "$sign_key" >"$key")
  export_env GOCACHER_SIGN_KEY_FILE "$key"
  note "this job signs what it writes with the $key_input input's key"
elif [[ "$read_only" == false && -n "${INPUT_SIGN_KEY:-}${INPUT_PULL_REQUEST_SIGN_KEY:-}" ]]; then
  if [[ -n "${INPUT_TRUST_KEY:-}" ]]; then
    note "no signing key in a ${GITHUB_EVENT_NAME:-} job (sign-key reaches only push and workflow_dispatch jobs on the default branch and schedule, merge_group and release jobs; pull-request-sign-key only pull requests that write; this job: $reason): with trust-key set, this job uploads nothing"
  else
    note "no signing key in a ${GITHUB_EVENT_NAME:-} job (sign-key reaches only push and workflow_dispatch jobs on the default branch and schedule, merge_group and release jobs; pull-request-sign-key only pull requests that write; this job: $reason): what this job writes is unsigned"
  fi
fi
output gocacher "$bin"
output read-only "$read_only"

if [[ "${INPUT_FIX_MTIMES:-true}" == true ]]; then
  "$bin" fix-mtimes "${INPUT_WORKING_DIRECTORY:-.}" ||
    warn "fix-mtimes failed (see above): test results that read files will not be cached across runs"
fi
