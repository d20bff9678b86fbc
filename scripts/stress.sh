#!/usr/bin/env bash
# Runs the stress suite (the modules tests/integration/stress_*.rs) ROUNDS times in a row on the
# chosen backends, with each test's counts shown (`--nocapture`); stops at the first failure.
# `cargo test` (and CI) runs the same tests once, on every backend.
#
#   scripts/stress.sh                 # 3 rounds, every backend
#   scripts/stress.sh 3 epoll poll    # 3 rounds, epoll and poll only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${1:-3}
shift || true
BACKENDS=("$@")

MODULES=()
for file in tests/integration/stress_*.rs; do
    MODULES+=("$(basename "$file" .rs)")
done
# Test names are MODULE::TEST::BACKEND; an empty list of backends means every backend.
MODULE_RE="^($(IFS='|' && echo "${MODULES[*]}"))::"
BACKEND_RE="::($(IFS='|' && echo "${BACKENDS[*]:-[a-z]+}"))\$"

cargo test --no-run --test integration >/dev/null 2>&1 || cargo test --no-run --test integration
# Chosen by full name: a filter would match a module's name anywhere in a test's name.
mapfile -t TESTS < <(cargo test -q --test integration -- --list --format=terse |
    sed -n 's/: test$//p' | grep -E "$MODULE_RE" | grep -E "$BACKEND_RE")
if [ ${#TESTS[@]} -eq 0 ]; then
    echo "no stress tests for backends: ${BACKENDS[*]}" >&2
    exit 1
fi
for round in $(seq 1 "$ROUNDS"); do
    echo "== stress round $round of $ROUNDS (${BACKENDS[*]:-every backend}): ${#TESTS[@]} tests"
    start=$(date +%s)
    cargo test -q --test integration -- --nocapture --exact "${TESTS[@]}"
    echo "-- round $round passed in $(($(date +%s) - start)) s"
done
