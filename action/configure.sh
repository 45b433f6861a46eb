#!/usr/bin/env bash
# Step 3 of the gocacher action: decide whether this job may write the
# bucket, export GOCACHEPROG and the GOCACHER_* settings to the job's later
# steps through GITHUB_ENV, and give the checkout stable mtimes.
#
# In:  GOCACHER_BIN (empty: gocacher could not be installed), INPUT_* (the
#      action's inputs), GITHUB_ENV, GITHUB_OUTPUT, GITHUB_EVENT_NAME,
#      GITHUB_EVENT_PATH, GITHUB_REPOSITORY, GITHUB_ACTOR, RUNNER_TEMP.
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

case "${INPUT_READ_ONLY:-auto}" in
  auto)
    decision="$("$bin" github-read-only)"
    read_only="${decision%%$'\t'*}"
    reason="${decision#*$'\t'}"
    ;;
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
if [[ -n "${INPUT_SIGN_KEY:-}" && "$read_only" == false ]]; then
  echo "::add-mask::$INPUT_SIGN_KEY"
  # A file, not the variable: the key stays out of every later step's
  # environment (and so out of the tests' reach through os.Environ).
  key="${RUNNER_TEMP:?}/gocacher-sign-key"
  (umask 077 && printf '%s\n' "$INPUT_SIGN_KEY" >"$key")
  export_env GOCACHER_SIGN_KEY_FILE "$key"
fi
output gocacher "$bin"
output read-only "$read_only"

if [[ "${INPUT_FIX_MTIMES:-true}" == true ]]; then
  "$bin" fix-mtimes "${INPUT_WORKING_DIRECTORY:-.}" ||
    warn "fix-mtimes failed (see above): test results that read files will not be cached across runs"
fi
