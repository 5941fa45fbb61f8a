#!/usr/bin/env bash
# Training throughput of evo against PyTorch (bench/torch_reference.py time) on the reference DNAs:
# same net, batch 50, 28x28x1, same CPU threads; prints a markdown table. Not a test: asserts nothing.
#
# usage: bench/train_throughput.sh [BUILD_DIR (default build)] [THREADS (default 2)] [REPS (default 3)]
# evo reads Fashion-MNIST (its default data set); torch times random input of the same shape.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-2}
reps=${3:-3}
steps=${STEPS:-200}
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
field() { "$py" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["images_per_second"])'; }

echo "| DNA | evo img/s (median of $reps) | torch img/s (median of $reps) | evo / torch |"
echo "|---|---:|---:|---:|"
for dna in initial four_conv skips; do
  f=data/dna/$dna.json
  : > "$tmp/evo" ; : > "$tmp/torch"
  for ((r = 0; r < reps; r++)); do
    OMP_NUM_THREADS=$threads "$build/evo" train --dna "$f" --steps "$steps" --json 2>/dev/null \
      | field >> "$tmp/evo"
    "$py" bench/torch_reference.py time --dna "$f" --threads "$threads" --steps "$steps" \
      | field >> "$tmp/torch"
  done
  e=$(median < "$tmp/evo"); t=$(median < "$tmp/torch")
  awk -v d="$dna" -v e="$e" -v t="$t" 'BEGIN {printf "| %s | %.0f | %.0f | %.2f |\n", d, e, t, e / t}'
done
echo
echo "threads: $threads, steps: $steps, batch 50, 28x28x1; host: $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
