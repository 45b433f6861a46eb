# shellcheck shell=bash
# Helpers shared by the action's scripts (sourced, not run).

# A line for the job log and, with ::warning::, an annotation on the run.
note() { echo "gocacher: $*"; }
warn() { echo "::warning title=gocacher::$*"; }
fail() {
  echo "::error title=gocacher::$*"
  exit 1
}

# Appends name=value to this step's outputs.
output() { echo "$1=$2" >>"$GITHUB_OUTPUT"; }

# Appends name=value to the environment of the job's later steps; a value
# with a newline would end the entry, so none is accepted.
export_env() {
  if [[ "$2" == *$'\n'* ]]; then
    fail "$1: the value holds a line break"
  fi
  echo "$1=$2" >>"$GITHUB_ENV"
}

# The release target for this runner.
runner_target() {
  case "${RUNNER_OS:-}/${RUNNER_ARCH:-}" in
    Linux/X64) echo x86_64-unknown-linux-musl ;;
    Linux/ARM64) echo aarch64-unknown-linux-musl ;;
    macOS/ARM64) echo aarch64-apple-darwin ;;
    macOS/X64) echo x86_64-apple-darwin ;;
    Windows/X64) echo x86_64-pc-windows-msvc ;;
    *) return 1 ;;
  esac
}

# The sha256 of a file, or of stdin without an argument (sha256sum on Linux
# and in Git Bash, shasum on macOS).
sha256_of() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$@" | awk '{ print $1 }'
  else
    shasum -a 256 "$@" | awk '{ print $1 }'
  fi
}

download() {
  curl -fsSL --retry 3 --connect-timeout 10 --max-time 120 -o "$2" "$1"
}
