#!/usr/bin/env bash
# The echo benchmark in one command: builds everything (bench/build.sh), runs every server under the
# same load, and rewrites BENCHMARKS.md and bench/benchmarks.svg at the repository root.
#
#   bench/run.sh              # the full run: 3 rounds, about 14 minutes on 2 cores
#   bench/run.sh --quick      # 2 short rounds, smaller counts: about 5 minutes
#   bench/run.sh --servers c,aio --scenarios pingpong    # any runner option; see --help
#   bench/target/release/runner --help
#
# Needs 2 CPUs or more (server and load generator on their own cores) and a quiet machine: other
# processes' CPU use during each measured window is reported in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench/build.sh
exec bench/target/release/runner --invoked-as "bench/run.sh${*:+ $*}" "$@"
