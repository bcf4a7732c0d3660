#!/usr/bin/env bash
# The test command (README "Run the tests"; .ci/run calls it): installs what the tests need,
# builds the static images the Docker tests use, checks format and lints, fuzzes each target
# for a bounded time, then runs every test in the workspace (unit, property, end-to-end on the
# real binaries and the real Docker engine, security, benchmark smoke).
#
#   TETHER_FUZZ_SECONDS=N   seconds per fuzz target (default 30; 0 skips fuzzing)
#   extra arguments         passed to `cargo nextest run` (e.g. a filter)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== prerequisites"
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# The crash and fault tests inspect and lock the manager's database with the sqlite3 shell.
if ! command -v sqlite3 >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sqlite3
fi

echo "== images (docker/build-images.sh: static musl binaries, FROM scratch images)"
bash docker/build-images.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo tree --locked -i aws-lc-rs >/dev/null 2>&1; then
  echo "aws-lc-rs is in the dependency tree; Tether uses the ring provider only" >&2
  exit 1
fi

fuzz_seconds="${TETHER_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzzing (bounded: ${fuzz_seconds} s per target)"
  bash fuzz/run.sh "$fuzz_seconds"
fi

echo "== build binaries (the end-to-end tests run them)"
cargo build --workspace --bins --locked

echo "== tests"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The manifest test validates kubernetes/ offline against the official schemas.
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet kubernetes-validate==1.37.0
cargo nextest run --workspace --locked --profile ci "$@"
