#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of tether-protocol (and of the manager's REST bodies) with
# cargo-fuzz (libFuzzer).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (or FUZZ_SECONDS=N; default 60 s)
#
# Runs on the STABLE toolchain: cargo-fuzz with `--sanitizer none` passes no -Z flag, only
# stable codegen options (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*), and
# builds in release mode with debug assertions and overflow checks on. No AddressSanitizer:
# tether-protocol, tether-manager and the fuzz drivers forbid unsafe code, so ASan (nightly-only) would buy
# little here; panics, failed invariant assertions, overflows and timeouts are the findings.
# Steps: install cargo-fuzz if missing; run the seed regression tests (seeds reach the deep
# paths; every single-bit flip of every seed holds the invariants); write the seed corpus
# (built by tether-protocol itself, `write-seeds`); fuzz each target for the given time; print
# the executions per target and fail on any crash. The summary goes to target/fuzz-summary.txt.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-${FUZZ_SECONDS:-60}}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(frame_split server_handshake client_handshake session_decode token_parse sealed_token_open rest_bodies text_bound manager_ack)
fi
case "$seconds" in ''|*[!0-9]*) echo "seconds must be a whole number, got '$seconds'" >&2; exit 64;; esac

echo "== prerequisites"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz
fi
if ! command -v c++ >/dev/null; then
  echo "a C++ compiler is needed to build libFuzzer (e.g. apt-get install g++)" >&2
  exit 1
fi
cargo fuzz --version

echo "== seed regression tests (stable, no libFuzzer)"
cargo test --release --quiet

echo "== seed corpus"
cargo run --release --quiet --example write-seeds corpus

echo "== build (stable, --sanitizer none, debug assertions on)"
cargo fuzz build --sanitizer none

mkdir -p target
summary=target/fuzz-summary.txt
: > "$summary"
status=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  log="target/fuzz-$t.log"
  if cargo fuzz run --sanitizer none "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
      -dict=dict/protocol.dict -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
    tail -n 40 "$log" >&2
  fi
  runs=$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || echo "?")
  corpus=$(find "corpus/$t" -type f | wc -l)
  printf '%-18s %-6s executions=%s seconds=%s edges=%s corpus=%s\n' \
    "$t" "$result" "$runs" "$seconds" "$cov" "$corpus" | tee -a "$summary"
done
echo "== summary ($summary)"
cat "$summary"
echo "== corpus inputs that reach the text bounds (64-byte type, 512-byte ack detail)"
cargo run --release --quiet --example reach corpus || true
exit "$status"
