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
# Skipped, each for a stated reason (valgrind runs code 20 to 50 times slower, one thread at a time,
# and each test has a 20 s watchdog):
# - timer.rs `a_million_timers_scheduled_and_cancelled` (minutes under valgrind; the other timer
#   tests run the same code) and `timers_are_never_early_and_late_by_little` (it measures lateness,
#   and valgrind's first translation of the code makes a timer tens of milliseconds late);
# - acceptor.rs `accept_reports_emfile_without_spinning` and stress_fd_exhaustion.rs: they exhaust
#   the fd table, and valgrind keeps fds of its own there (it refuses the lowered limit);
# - datagram.rs `*_echo_of_10000_datagrams*`: throughput tests that take most of their watchdog
#   under valgrind; the smaller datagram tests run the same code;
# - cross_thread.rs `posts_racing_with_the_drop_of_the_service_run_or_are_refused`: its posters spin
#   without bound until the loop is dropped; with valgrind's one-thread-at-a-time scheduling they
#   queue closures far faster than the loop thread gets to run them;
# - every uring variant: memcheck cannot see the kernel write into a buffer through the ring (a
#   receive into a buffer that starts uninitialised reads as uninitialised afterwards: false
#   reports), and under valgrind 3.19 no other thread runs while one waits in io_uring_enter (tests
#   woken by another thread or a signal never finish). The same tests run here on epoll and poll,
#   which share all of the operation and buffer code but the submission; on uring, the suite's data
#   checks (every byte verified) and the close/cancel tests stand in (see the README, io_uring);
# - the stress files other than stress_panic and stress_fork: load tests (10,000 connections, 16
#   million cross-thread jobs, 48,000 sockets) sized for native speed, over the same code paths.
# stress_fork.rs runs without leak checking (memory errors still fail it): a forked child leaves
# with _exit, on purpose, so what the threads that did not survive the fork held reads as "lost".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_SUBSET=(stream_socket cancel service timer framed datagram fd_passing hooks device executor
    blocking acceptor connect socket_ownership cross_thread stress_panic stress_fork read_each read_stream)
SUBSET=("$@")
if [ ${#SUBSET[@]} -eq 0 ]; then
    SUBSET=("${DEFAULT_SUBSET[@]}")
fi

# Tests skipped per file (cargo test `--skip` filters: a test whose name contains one is skipped).
skips_for() {
    local uring="--skip ::uring"
    case "$1" in
        timer) echo "$uring --skip a_million_timers_scheduled_and_cancelled --skip timers_are_never_early" ;;
        acceptor) echo "$uring --skip accept_reports_emfile_without_spinning" ;;
        datagram) echo "$uring --skip echo_of_10000_datagrams" ;;
        cross_thread) echo "$uring --skip posts_racing_with_the_drop_of_the_service" ;;
        *) echo "$uring" ;;
    esac
}

# Leak checking per file (see above for stress_fork).
leak_check_for() {
    case "$1" in
        stress_fork) echo "--leak-check=no" ;;
        *) echo "--leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" ;;
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
    echo "== valgrind: tests/$name.rs $(skips_for "$name")"
    start=$(date +%s)
    # RUST_BACKTRACE=0: a backtrace makes valgrind read debug info per frame, minutes for nothing.
    # shellcheck disable=SC2046 # the options are words
    if RUST_BACKTRACE=0 valgrind \
        --quiet \
        --error-exitcode=1 \
        $(leak_check_for "$name") \
        --suppressions=scripts/valgrind.supp \
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
