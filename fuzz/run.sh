#!/usr/bin/env bash
# Runs each fuzz target for a bounded time: fuzz/run.sh [SECONDS_PER_TARGET]
# (default 60). Stable toolchain, no sanitizer (`-s none`). Exits non-zero if
# any target crashes (the input is kept in fuzz/artifacts/<target>/); prints
# one line per target with the executions run.
#
# FUZZ_DEV=1 builds without optimisations (about half the build time, with
# overflow checks on; CI uses it).
#
# Each target reads its committed seeds (fuzz/seeds/<target>/) and writes
# what it finds to a scratch corpus, so a run leaves the tree as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
targets=(token request_body key_set)
profile=()
if [[ "${FUZZ_DEV:-0}" == 1 ]]; then
  profile=(--dev)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "==> cargo fuzz build -s none"
start=$SECONDS
cargo fuzz build -s none "${profile[@]}"
echo "built in $((SECONDS - start)) s"

stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

failed=()
summary=()
for target in "${targets[@]}"; do
  echo "==> cargo fuzz run -s none $target (${seconds} s)"
  mkdir -p "$scratch/corpus/$target"
  log="$scratch/$target.log"
  status=0
  cargo fuzz run -s none "${profile[@]}" "$target" "$scratch/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  execs=$(stat number_of_executed_units "$log")
  rate=$(stat average_exec_per_sec "$log")
  corpus=$(find "$scratch/corpus/$target" -type f | wc -l)
  if [[ $status -ne 0 ]]; then
    grep -m 1 -A 2 'panicked at' "$log" || true
    tail -n 25 "$log"
    failed+=("$target")
    result="FAILED (exit $status; see fuzz/artifacts/$target/)"
  else
    result="ok"
  fi
  summary+=("fuzz $target: ${execs:-?} executions in ${seconds} s (${rate:-?}/s), $corpus new corpus inputs: $result")
done

printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
