#!/usr/bin/env bash
# The test command (README "Run the tests"; .ci/run calls it): installs what the tests need,
# builds the static images the Docker tests use, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== prerequisites"
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
if [ -x docker/build-images.sh ] || [ -f docker/build-images.sh ]; then
  echo "== images (docker/build-images.sh)"
  bash docker/build-images.sh
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo tree --locked -i aws-lc-rs >/dev/null 2>&1; then
  echo "aws-lc-rs is in the dependency tree; Tether uses the ring provider only" >&2
  exit 1
fi

echo "== build binaries (the end-to-end tests run them)"
cargo build --workspace --bins --locked

echo "== tests"
ulimit -n 65536 2>/dev/null || true
cargo nextest run --workspace --locked --profile ci "$@"
