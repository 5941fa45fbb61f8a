#!/usr/bin/env bash
# Search throughput against the number of workers sharing a device: children per hour and
# training FLOP/s (the paper's analytic count: training + validation FLOPs of every child) for
# 1, 2 and 4 workers on the CPU (default) or on one GPU (DEVICE_ARGS="--gpus 0"
# WORKER_OPTION=--workers-per-gpu, as tools/gpu_check.sh runs it). Not a test: asserts nothing;
# prints a markdown table.
#
# Every measurement resumes a copy of the same population (made first by a short search, or given
# with SEED_RUN), so all of them train the same mix of mid-search nets rather than the one-layer
# initial models. The worker counts take turns, REPS times each; the table gives medians.
#
# usage: bench/search_throughput.sh [BUILD_DIR (default build)]
#   SEED_RUN=DIR    resume copies of this run folder instead of growing one (SEED_MINUTES=4)
#   MINUTES=3       length of each measurement (fractions allowed: 0.5)
#   REPS=3          measurements per worker count
#   WORKERS="1 2 4" worker counts (threads per worker: cores / workers, at least 1)
#   STEPS=1000      training steps per child (must match SEED_RUN's)
#   POPULATION=16   population size
#   DATA=fashion-mnist                 the data set (any evo --data SPEC)
#   DEVICE_ARGS="--gpus none"          where the workers run
#   WORKER_OPTION=--workers            the option that sets the worker count on that device
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
minutes=${MINUTES:-3}
reps=${REPS:-3}
workers_list=${WORKERS:-"1 2 4"}
steps=${STEPS:-1000}
data=${DATA:-fashion-mnist}
population=${POPULATION:-16}
read -r -a device_args <<<"${DEVICE_ARGS:---gpus none}"
worker_option=${WORKER_OPTION:---workers}
py=${PYTHON:-python3}
evo="$build/evo"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -n "${SEED_RUN:-}" ]]; then
  seed_run=$SEED_RUN
else
  seed_run="$tmp/seed"
  echo "growing the seed population: ${SEED_MINUTES:-4} minutes of search ..." >&2
  "$evo" search "${device_args[@]}" --data "$data" --steps "$steps" \
    --population "$population" --time-limit "${SEED_MINUTES:-4}m" --run-dir "$seed_run" \
    --json > /dev/null
fi

# Children and FLOPs of the individuals born after $2 in run folder $1 (alive and dead).
count() { "$py" bench/count_children.py "$1" "$2"; }

declare -A rates flops_s
for ((rep = 0; rep < reps; rep++)); do
  for k in $workers_list; do
    run="$tmp/run-$k-$rep"
    rm -rf "$run"
    cp -a "$seed_run" "$run"
    rm -f "$run/report.html"
    start=$(date +%s.%N)
    "$evo" search "${device_args[@]}" "$worker_option" "$k" --data "$data" --steps "$steps" \
      --population "$population" --time-limit "${minutes}m" --run-dir "$run" \
      --json > "$tmp/out.json"
    read -r children flops < <(count "$run" "$start")
    # The window is the time limit (data loading included); the end-of-run test evaluation and
    # report that follow it are not search throughput.
    seconds=$("$py" -c "print($minutes * 60)")
    rates[$k]+="$("$py" -c "print($children * 3600 / $seconds)") "
    flops_s[$k]+="$("$py" -c "print($flops / $seconds / 1e9)") "
    echo "workers $k, rep $rep: $children children in ${seconds%.*} s" >&2
    rm -rf "$run"
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
first=""
echo "| workers | threads per worker | children per hour (median of $reps) | GFLOP/s (median) | vs ${workers_list%% *} worker(s) |"
echo "|---:|---:|---:|---:|---:|"
for k in $workers_list; do
  r=$(echo "${rates[$k]}" | median)
  f=$(echo "${flops_s[$k]}" | median)
  [[ -z "$first" ]] && first=$f
  threads=$(( $(nproc) / k )); (( threads < 1 )) && threads=1
  [[ "$worker_option" == --workers ]] || threads=-
  awk -v k="$k" -v t="$threads" -v r="$r" -v f="$f" -v b="$first" \
    'BEGIN {printf "| %d | %s | %.0f | %.2f | %.2fx |\n", k, t, r, f, f / b}'
done
echo
echo "${device_args[*]} ($(nproc) cores), data $data, $minutes min per measurement, $steps steps" \
  "per child, seed population:" \
  "$(ls "$seed_run/alive" | wc -l) individuals; load average before: $load_before"
