#!/usr/bin/env bash
# Memory safety of aio's `unsafe` code: runs a representative subset of the integration tests under
# valgrind's memcheck, on every backend (the tests are a backend matrix), and fails on any error or
# definite leak.
#
#   scripts/valgrind.sh                 # the default subset (what CI runs)
#   scripts/valgrind.sh cancel framed   # only these test modules (tests/*/NAME.rs)
#   scripts/valgrind.sh --list [NAME...] # print the tests it would run, run nothing
#
# What it does:
# - installs valgrind with apt-get when it is missing (as root, or through sudo);
# - builds the test binaries (`integration`, `timing`) with `cargo test --no-run
#   --message-format=json` and takes their paths from cargo's JSON messages (no guessing at hashed
#   file names);
# - for each module, lists the tests named `MODULE::...` of the binary that has it, leaves out the
#   skipped ones (below) and runs the rest by their exact names under `valgrind --error-exitcode=1
#   --leak-check=full --errors-for-leak-kinds=definite`, one test at a time (`--test-threads=1`):
#   one valgrind run per module, with that module's leak options;
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
# - the stress modules other than stress_panic and stress_fork: load tests (10,000 connections, 16
#   million cross-thread jobs, 48,000 sockets) sized for native speed, over the same code paths.
# stress_fork.rs runs without leak checking (memory errors still fail it): a forked child leaves
# with _exit, on purpose, so what the threads that did not survive the fork held reads as "lost".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_SUBSET=(stream_socket cancel service timer framed datagram fd_passing hooks device executor
    blocking acceptor connect socket_ownership cross_thread stress_panic stress_fork read_each read_stream)
LIST_ONLY=false
if [ "${1:-}" = "--list" ]; then
    LIST_ONLY=true
    shift
fi
SUBSET=("$@")
if [ ${#SUBSET[@]} -eq 0 ]; then
    SUBSET=("${DEFAULT_SUBSET[@]}")
fi

# Tests skipped per module, one per line: a test whose name contains one of these is skipped.
skips_for() {
    echo "::uring"
    case "$1" in
        timer) printf '%s\n' a_million_timers_scheduled_and_cancelled timers_are_never_early ;;
        acceptor) echo accept_reports_emfile_without_spinning ;;
        datagram) echo echo_of_10000_datagrams ;;
        cross_thread) echo posts_racing_with_the_drop_of_the_service ;;
    esac
}

# Leak checking per module (see above for stress_fork).
leak_check_for() {
    case "$1" in
        stress_fork) echo "--leak-check=no" ;;
        *) echo "--leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" ;;
    esac
}

if ! $LIST_ONLY && ! command -v valgrind >/dev/null 2>&1; then
    echo "== installing valgrind"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind
fi
$LIST_ONLY || valgrind --version

echo "== building the test binaries" >&2
# One line per binary: "NAME PATH", from cargo's compiler-artifact messages.
BINARIES=$(cargo test --no-run --message-format=json --test integration --test timing |
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
for name in "${SUBSET[@]}"; do
    # The module's tests by full name (a filter would match `NAME::` anywhere in a name), from the
    # binary that has the module, less the skipped ones.
    binary=""
    while read -r target path; do
        mapfile -t tests < <("$path" --list --format=terse | sed -n 's/: test$//p' | grep "^$name::" || true)
        if [ ${#tests[@]} -ne 0 ]; then
            binary=$path
            file="tests/$target/$name.rs"
            break
        fi
    done <<<"$BINARIES"
    if [ -z "$binary" ]; then
        echo "no test module $name (tests/*/$name.rs)" >&2
        exit 1
    fi
    mapfile -t tests < <(printf '%s\n' "${tests[@]}" | grep -vF -f <(skips_for "$name") || true)
    if [ ${#tests[@]} -eq 0 ]; then
        # (No names would run every test of the binary.)
        echo "-- $name: every test skipped" >&2
        continue
    fi
    if $LIST_ONLY; then
        printf '%s\n' "${tests[@]}"
        continue
    fi
    echo "== valgrind: $file, ${#tests[@]} tests (skipping $(skips_for "$name" | paste -sd' '))"
    start=$(date +%s)
    # RUST_BACKTRACE=0: a backtrace makes valgrind read debug info per frame, minutes for nothing.
    # shellcheck disable=SC2046 # the options are words
    if RUST_BACKTRACE=0 valgrind \
        --quiet \
        --error-exitcode=1 \
        $(leak_check_for "$name") \
        --suppressions=scripts/valgrind.supp \
        --trace-children=yes \
        "$binary" --test-threads=1 --exact "${tests[@]}"; then
        echo "-- $name: no errors, no definite leaks ($(($(date +%s) - start)) s)"
    else
        echo "-- $name: FAILED under valgrind ($(($(date +%s) - start)) s)"
        failed+=("$name")
    fi
done

$LIST_ONLY && exit 0
if [ ${#failed[@]} -ne 0 ]; then
    echo "valgrind found problems in: ${failed[*]}"
    exit 1
fi
echo "valgrind: ${#SUBSET[@]} test modules, zero errors, no definite leaks"
