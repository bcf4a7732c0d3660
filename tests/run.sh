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

# On CI every build is a cold one: incremental state only costs disk (several GB).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
disk() { echo "-- disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target $(du -sh target 2>/dev/null | cut -f1)"; }

echo "== prerequisites"
disk
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# The crash and fault tests inspect and lock the manager's database with the sqlite3 shell.
if ! command -v sqlite3 >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sqlite3
fi
# The console tests (tests/tests/console_*.rs) drive Debian's Chromium through its WebDriver.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
# The PostgreSQL store's tests (manager/tests/store_conformance.rs) run a real server from
# Debian's package binaries, as an unprivileged user in a temporary directory (tests/src/pg.rs).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
fi
# The metrics test validates /metrics with the parsers of PyPI's prometheus-client (both
# exposition formats; Debian's promtool would pull in ~100 MB): pip, else Debian's package.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check prometheus-client==0.26.0 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-prometheus-client
  }
fi

# The OpenAPI tests (tests/tests/openapi_tools.rs) run two PyPI tools, pinned.
openapi_tools=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)
export PATH="$PATH:$(python3 -m site --user-base)/bin"
if ! python3 -c 'import importlib.metadata as m, sys
sys.exit(any(m.version(n) != v for n, v in (a.split("==") for a in sys.argv[1:])))' "${openapi_tools[@]}" 2>/dev/null \
  || ! command -v schemathesis >/dev/null || ! command -v openapi-spec-validator >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "${openapi_tools[@]}"
fi

# pip's console scripts (schemathesis, openapi-spec-validator, kubernetes-validate) straight
# from the interpreter's scripts directory: under pyenv a shim appears only after a rehash.
scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$scripts_dir:$PATH"

echo "== images (docker/build-images.sh: static musl binaries, FROM scratch images)"
bash docker/build-images.sh
# The HA example's PostgreSQL (tests/tests/ha_compose.rs), from Debian's packages; cached by
# its recipe hash, so only a fresh machine pays for the debootstrap.
bash docker/build-postgres-image.sh

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

disk
echo "== build binaries (the end-to-end tests run them)"
cargo build --workspace --bins --locked

disk
echo "== tests"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The manifest test validates kubernetes/ offline against the official schemas.
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet kubernetes-validate==1.37.0
cargo nextest run --workspace --locked --profile ci "$@"
