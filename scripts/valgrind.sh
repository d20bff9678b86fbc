#!/usr/bin/env bash
# Memory safety of aio's `unsafe` code: runs a representative subset of the integration tests under
# valgrind's memcheck, on every backend (the tests are a backend matrix), and fails on any error or
# definite leak.
#
#   scripts/valgrind.sh                 # the default subset (what CI runs)
#   scripts/valgrind.sh cancel framed   # only these test files (tests/NAME.rs)
#
# What it does:
# - installs valgrind with apt-get when it is missing (as root, or through sudo);
# - builds the test binaries with `cargo test --no-run --message-format=json` and takes their paths
#   from cargo's JSON messages (no guessing at hashed file names);
# - runs each binary under `valgrind --error-exitcode=1 --leak-check=full
#   --errors-for-leak-kinds=definite`, one test at a time (`--test-threads=1`);
# - follows children (`--trace-children=yes`): tests that re-run themselves in a child process
#   (`util::in_child`, for rlimits, signal dispositions and fork) are checked in that child too, and
#   a child's valgrind error fails its parent test.
#
# Skipped, each for a stated reason (valgrind runs code 20 to 50 times slower, and each test has a
# 20 s watchdog):
# - timer.rs `a_million_timers_scheduled_and_cancelled`: a million timers, minutes under valgrind;
#   the same code paths run in the other timer tests;
# - acceptor.rs `accept_reports_emfile_without_spinning`: it exhausts the fd table, and valgrind
#   keeps fds of its own near the limit;
# - the stress_* files: load tests (10,000 connections, 16 million cross-thread jobs) sized for native
#   speed; their code paths are the ones the subset covers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_SUBSET=(stream_socket cancel service timer framed datagram fd_passing hooks device executor
    blocking acceptor connect socket_ownership cross_thread)
SUBSET=("$@")
if [ ${#SUBSET[@]} -eq 0 ]; then
    SUBSET=("${DEFAULT_SUBSET[@]}")
fi

# Tests skipped per file (cargo test `--skip` filters).
skips_for() {
    case "$1" in
        timer) echo "--skip a_million_timers_scheduled_and_cancelled" ;;
        acceptor) echo "--skip accept_reports_emfile_without_spinning" ;;
        *) echo "" ;;
    esac
}

if ! command -v valgrind >/dev/null 2>&1; then
    echo "== installing valgrind"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind
fi
valgrind --version

echo "== building the test binaries"
TEST_ARGS=()
for name in "${SUBSET[@]}"; do
    TEST_ARGS+=(--test "$name")
done
# One line per binary: "NAME PATH", from cargo's compiler-artifact messages.
BINARIES=$(cargo test --no-run --message-format=json "${TEST_ARGS[@]}" |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
            and msg["target"]["kind"] == ["test"]:
        print(msg["target"]["name"], msg["executable"])
')

failed=()
while read -r name path; do
    [ -n "$name" ] || continue
    # shellcheck disable=SC2046 # the skip filters are words
    echo "== valgrind: tests/$name.rs $(skips_for "$name")"
    start=$(date +%s)
    # RUST_BACKTRACE=0: a backtrace makes valgrind read debug info per frame, minutes for nothing.
    if RUST_BACKTRACE=0 valgrind \
        --quiet \
        --error-exitcode=1 \
        --leak-check=full \
        --errors-for-leak-kinds=definite \
        --show-leak-kinds=definite \
        --trace-children=yes \
        "$path" --test-threads=1 $(skips_for "$name"); then
        echo "-- $name: no errors, no definite leaks ($(($(date +%s) - start)) s)"
    else
        echo "-- $name: FAILED under valgrind ($(($(date +%s) - start)) s)"
        failed+=("$name")
    fi
done <<<"$BINARIES"

if [ ${#failed[@]} -ne 0 ]; then
    echo "valgrind found problems in: ${failed[*]}"
    exit 1
fi
echo "valgrind: ${#SUBSET[@]} test files, zero errors, no definite leaks"
