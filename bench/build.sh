#!/usr/bin/env bash
# Installs what the echo benchmark needs and builds every server, the load generator and the runner
# in release mode. Debian or Ubuntu; root, or sudo. Safe to run again: installed packages are skipped.
#
#   bench/build.sh
#
# A package that cannot be installed is reported and what needs it is skipped (the runner then lists
# that server as not built); only the Rust part (aio, tokio, the load generator, the runner) and the
# C epoll server are required.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
mkdir -p target/servers

say() { echo "build.sh: $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# g++ and libboost-dev: the Boost.Asio server; libuv1-dev: the libuv server; valgrind: instruction
# counts; linux-perf (Debian) or strace: syscall counts; util-linux: taskset for pinning by hand;
# pkg-config: libuv's version in the report.
PACKAGES=(gcc g++ libboost-dev libuv1-dev valgrind linux-perf strace util-linux pkg-config)
if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        $SUDO apt-get update -qq || say "WARNING: apt-get update failed; trying the package lists at hand"
        available=()
        for p in "${missing[@]}"; do
            if apt-cache show "$p" >/dev/null 2>&1; then
                available+=("$p")
            else
                say "WARNING: package $p does not exist here; what needs it is skipped"
                [ "$p" = linux-perf ] && say "  (on Ubuntu perf is in linux-tools-\$(uname -r); without perf, syscalls are counted with strace)"
            fi
        done
        if [ ${#available[@]} -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${available[@]}" >/dev/null \
                || say "WARNING: apt-get install ${available[*]} failed; building what can be built"
        fi
    fi
else
    say "WARNING: no apt-get here: install ${PACKAGES[*]} (or their equivalents) yourself"
fi

say "cargo build --release (aio servers, tokio server, load generator, runner)"
cargo build --release --quiet

CFLAGS=(-O2 -g -Wall -Wextra)
say "cc: c_epoll"
gcc "${CFLAGS[@]}" -o target/servers/c_epoll servers/c_epoll.c

if command -v g++ >/dev/null 2>&1 && [ -f /usr/include/boost/asio.hpp ]; then
    say "c++: asio_echo (Boost.Asio)"
    g++ "${CFLAGS[@]}" -std=c++17 -o target/servers/asio_echo servers/asio_echo.cpp -pthread
else
    say "WARNING: g++ or Boost headers missing: the Boost.Asio server is skipped"
    rm -f target/servers/asio_echo
fi

if [ -f /usr/include/uv.h ]; then
    say "cc: uv_echo (libuv)"
    gcc "${CFLAGS[@]}" -o target/servers/uv_echo servers/uv_echo.c -luv
else
    say "WARNING: libuv headers missing: the libuv server is skipped"
    rm -f target/servers/uv_echo
fi

# The loop's criterion micro benchmarks live in the main crate (benches/loop_ops.rs).
say "cargo bench --bench loop_ops --no-run (aio's micro benchmarks)"
(cd .. && cargo bench --bench loop_ops --no-run --quiet) \
    || say "WARNING: the micro benchmarks do not build; the runner reports them as failed"

for tool in valgrind perf strace; do
    command -v "$tool" >/dev/null 2>&1 || say "note: $tool is not installed; the runner skips what needs it"
done
say "done"
