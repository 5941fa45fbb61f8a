#!/usr/bin/env bash
# The evolved-nets suite: training speed of evo on the small nets a search really trains (the DNAs
# of data/dna/evolved/, taken from default CPU searches, plus the reference DNAs) against PyTorch
# on the same DNA and threads, and children per hour of the default search replayed from one
# fixed population. Not a test: asserts nothing; prints markdown tables with the machine's CPU.
#
# usage: bench/evolved_nets.sh [BUILD_DIR (default build)]
#   BASE=DIR          a second evo build (an older commit) timed beside it in the same run
#   THREADS="1 2"     CPU threads per training run (OMP_NUM_THREADS for evo, --threads for torch)
#   REPS=5            runs per (DNA, threads, program); the tables give medians
#   STEPS=400         training steps per run (batch 50, Fashion-MNIST 28x28x1); nets over
#                     ~1 MFLOP per image get fewer (about 20 GFLOP a run, at least 30 steps)
#   DNAS="..."        DNA files (default: data/dna/evolved/*.json and the reference DNAs)
#   SEARCH_MINUTES=3  length of each children-per-hour replay (0 skips the replays)
#   SEARCH_REPS=2     replays per build
#   SEED_RUN=DIR      the population to replay (default bench/data/population-fmnist-25min)
#
# evo reads Fashion-MNIST; torch (bench/torch_reference.py) times random input of the same shape.
# Programs take turns within each repetition, so a change in the machine's load hits all alike.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
base=${BASE:-}
threads_list=${THREADS:-"1 2"}
reps=${REPS:-5}
steps=${STEPS:-400}
search_minutes=${SEARCH_MINUTES:-3}
search_reps=${SEARCH_REPS:-2}
seed_run=${SEED_RUN:-bench/data/population-fmnist-25min}
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -n "${DNAS:-}" ]]; then
  read -r -a dnas <<<"$DNAS"
else
  dnas=(data/dna/evolved/*.json data/dna/initial.json data/dna/skips.json data/dna/four_conv.json)
fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni)$' | sort -u | tr '\n' ' ')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {if (NR == 0) print 0; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
ips() { "$py" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["images_per_second"])'; }
evo_ips() {  # BUILD DNA THREADS STEPS (no crops or flips: what the CPU search trains)
  OMP_NUM_THREADS=$3 "$1/evo" train --dna "$2" --steps "$4" --augment off --json 2>/dev/null | ips
}
steps_for() {  # DNA -> steps: STEPS, or fewer for big nets (reference DNAs of 40-90 MFLOP/img)
  "$build/evo" show "$1" --json | "$py" -c '
import json, sys
f = json.load(sys.stdin)["train_flops_per_image"]
print(max(30, min(int(sys.argv[1]), int(2e10 / (50 * f)))))' "$steps"
}

declare -A got
for dna in "${dnas[@]}"; do
  n_steps=$(steps_for "$dna")
  for t in $threads_list; do
    for ((r = 0; r < reps; r++)); do
      got[$dna,$t,evo]+="$(evo_ips "$build" "$dna" "$t" "$n_steps") "
      [[ -n "$base" ]] && got[$dna,$t,base]+="$(evo_ips "$base" "$dna" "$t" "$n_steps") "
      got[$dna,$t,torch]+="$("$py" bench/torch_reference.py time --dna "$dna" --threads "$t" \
                              --steps "$n_steps" | ips) "
    done
    echo "timed $dna at $t thread(s)" >&2
  done
done

torch_version=$("$py" -c 'import torch; print(torch.__version__)')
echo "### Training speed (batch 50, 28x28x1, up to $steps steps, median of $reps)"
echo
if [[ -n "$base" ]]; then
  echo "| DNA | params | train KFLOP/img | threads | evo img/s | GFLOP/s | before img/s | PyTorch img/s | evo / PyTorch | evo / before |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| DNA | params | train KFLOP/img | threads | evo img/s | GFLOP/s | PyTorch img/s | evo / PyTorch |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
fi
for dna in "${dnas[@]}"; do
  read -r params kflops < <("$build/evo" show "$dna" --json |
    "$py" -c 'import json,sys; j=json.load(sys.stdin); print(j["parameters"], j["train_flops_per_image"]/1e3)')
  for t in $threads_list; do
    e=$(echo "${got[$dna,$t,evo]}" | median)
    p=$(echo "${got[$dna,$t,torch]}" | median)
    name=$(basename "$dna" .json)
    if [[ -n "$base" ]]; then
      b=$(echo "${got[$dna,$t,base]}" | median)
      awk -v d="$name" -v n="$params" -v k="$kflops" -v t="$t" -v e="$e" -v b="$b" -v p="$p" \
        'BEGIN {printf "| %s | %d | %.0f | %d | %.0f | %.2f | %.0f | %.0f | %.2fx | %.2fx |\n", d, n, k, t, e, e*k/1e6, b, p, e/p, e/b}'
    else
      awk -v d="$name" -v n="$params" -v k="$kflops" -v t="$t" -v e="$e" -v p="$p" \
        'BEGIN {printf "| %s | %d | %.0f | %d | %.0f | %.2f | %.0f | %.2fx |\n", d, n, k, t, e, e*k/1e6, p, e/p}'
    fi
  done
done
echo

# Children and the training + validation FLOPs of the individuals born after $2 in run folder $1.
count() { "$py" bench/count_children.py "$1" "$2"; }

if [[ "$search_minutes" != 0 ]]; then
  declare -A rate
  # The replay continues the recorded run: same seed, same settings (read from its run.json).
  seed=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["settings"]["seed"])' \
         "$seed_run/run.json")
  programs=("$build")
  [[ -n "$base" ]] && programs+=("$base")
  for ((r = 0; r < search_reps; r++)); do
    for prog in "${programs[@]}"; do
      run="$tmp/run"
      rm -rf "$run"
      cp -a "$seed_run" "$run"
      start=$(date +%s.%N)
      # The default CPU search (one worker per core), resumed; the end-of-run test evaluation and
      # report that follow the time limit are not search throughput.
      "$prog/evo" search --gpus none --seed "$seed" --time-limit "${search_minutes}m" \
        --run-dir "$run" --json > /dev/null 2>&1
      read -r children flops < <(count "$run" "$start")
      rate[$prog]+="$("$py" -c "print($children * 60 / $search_minutes)") "
      echo "replay $prog: $children children in $search_minutes min" >&2
    done
  done
  echo "### Children per hour of the default CPU search, replayed from $(basename "$seed_run") ($search_minutes min each, median of $search_reps)"
  echo
  echo "| build | children per hour | vs this build |"
  echo "|---|---:|---:|"
  first=""
  for prog in "${programs[@]}"; do
    c=$(echo "${rate[$prog]}" | median)
    [[ -z "$first" ]] && first=$c
    awk -v p="$prog" -v c="$c" -v f="$first" 'BEGIN {printf "| %s | %.0f | %.2fx |\n", p, c, (f > 0 ? c / f : 0)}'
  done
  echo
fi

echo "CPU: $cpu ($(nproc) cores; vector flags: $flags); PyTorch $torch_version; evo $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'); load average before: $load_before; $(date -u +%F)"
