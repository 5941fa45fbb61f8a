#!/usr/bin/env bash
# Training throughput of evo against PyTorch on the three reference DNAs: bench/evolved_nets.sh
# restricted to them, at one thread count, without the search replay. Not a test: asserts nothing.
#
# usage: bench/train_throughput.sh [BUILD_DIR (default build)] [THREADS (default 2)] [REPS (default 3)]
set -euo pipefail
cd "$(dirname "$0")/.."
DNAS="data/dna/initial.json data/dna/four_conv.json data/dna/skips.json" THREADS="${2:-2}" \
  REPS="${3:-3}" STEPS="${STEPS:-200}" SEARCH_MINUTES=0 exec bench/evolved_nets.sh "${1:-build}"
