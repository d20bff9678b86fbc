#!/usr/bin/env bash
# Runs the stress suite (tests/stress_*.rs) ROUNDS times in a row on the chosen backends, with each
# test's counts shown (`--nocapture`); stops at the first failure. `cargo test` (and CI) runs the same
# tests once, on every backend.
#
#   scripts/stress.sh                 # 3 rounds, every backend
#   scripts/stress.sh 3 epoll poll    # 3 rounds, epoll and poll only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${1:-3}
shift || true
BACKENDS=("$@")

TESTS=()
for file in tests/stress_*.rs; do
    TESTS+=(--test "$(basename "$file" .rs)")
done
# Test names end in ::BACKEND; an empty list means every backend.
FILTERS=()
for backend in "${BACKENDS[@]}"; do
    FILTERS+=("::$backend")
done

cargo test --no-run "${TESTS[@]}" >/dev/null 2>&1 || cargo test --no-run "${TESTS[@]}"
for round in $(seq 1 "$ROUNDS"); do
    echo "== stress round $round of $ROUNDS (${BACKENDS[*]:-every backend})"
    start=$(date +%s)
    if [ ${#FILTERS[@]} -eq 0 ]; then
        cargo test -q "${TESTS[@]}" -- --nocapture
    else
        for filter in "${FILTERS[@]}"; do
            cargo test -q "${TESTS[@]}" -- --nocapture "$filter"
        done
    fi
    echo "-- round $round passed in $(($(date +%s) - start)) s"
done
