#!/usr/bin/env bash
# The long run of what CI runs briefly: every fuzz target for HOURS (tools/fuzz.sh), then KILLS
# kill -9's of a running search at random moments, each followed by a check of the run folder's
# integrity and a restart that must resume it. Not a test CI runs (it takes hours); its last result
# goes in bench/results/soak.md with the machine.
#
# usage: tools/fuzz_soak.sh [HOURS (default 2)] [KILLS (default 200)]
#   EVO=build/evo   the binary whose search is killed
# Prints one markdown block: fuzz executions per target, findings, kills survived, individuals
# lost (must be 0), integrity violations (must be 0). Exit 1 on any finding, loss or violation.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hours=${1:-2}
kills=${2:-200}
evo=${EVO:-$root/build/evo}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

targets=(fuzz_dna fuzz_data fuzz_record fuzz_weights)
per_target=$(python3 -c "print(max(1, int($hours * 3600 / ${#targets[@]})))")
fuzz_status=0
if [[ $per_target -gt 0 ]]; then
  "$root/tools/fuzz.sh" "$per_target" "${targets[@]}" | tee "$tmp/fuzz.txt" || fuzz_status=1
fi

# The kill loop: a search of 8 on a Fashion-MNIST subset, killed after 0.5-4 s each time.
run="$tmp/run"
check() {  # the run folder's invariants; prints "alive dead" or the violation and returns 1
  python3 - "$run" <<'PY'
import json, os, sys
run = sys.argv[1]
n = json.load(open(os.path.join(run, "run.json")))["population_size"]
ls = lambda d: [x for x in os.listdir(os.path.join(run, d)) if not x.startswith(".")] if os.path.isdir(os.path.join(run, d)) else []
alive, dead = set(ls("alive")), set(ls("dead"))
free = [x for x in ls("free") if x.endswith(".json")]
held = 0
for c in ls("staging"):
    d = os.path.join(run, "staging", c)
    if os.path.isdir(d) and (os.path.exists(os.path.join(d, "slot.json")) or any(x.startswith("victim-") for x in os.listdir(d))):
        held += 1
bad = []
if alive & dead: bad.append(f"in alive and dead: {sorted(alive & dead)}")
if len(alive) + len(free) + held != n: bad.append(f"slots: {len(alive)} alive + {len(free)} free + {held} held != {n}")
for i in alive:
    for f in ("dna.json", "metrics.json"):
        if not os.path.exists(os.path.join(run, "alive", i, f)): bad.append(f"alive/{i} lacks {f}")
    try:
        json.load(open(os.path.join(run, "alive", i, "metrics.json")))
    except Exception as e:
        bad.append(f"alive/{i}/metrics.json: {e}")
if bad:
    print("; ".join(bad)); sys.exit(1)
print(len(alive), len(dead))
PY
}
survived=0 lost=0 violations=0 known=0
for ((k = 1; k <= kills; k++)); do
  "$evo" search --gpus none --run-dir "$run" --population 8 --steps 40 --max-train 2000 \
    --max-val 300 --workers 2 --threads 1 --seed 1 --time-limit 1h >/dev/null 2>>"$tmp/err" &
  pid=$!
  sleep "$(python3 -c 'import random; print(round(random.uniform(0.5, 4), 2))')"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if out=$(check); then
    read -r alive dead <<<"$out"
    now=$((alive + dead))
    ((now < known)) && lost=$((lost + known - now))
    known=$((now > known ? now : known))
    survived=$((survived + 1))
  else
    echo "soak: after kill $k: $out" >&2
    violations=$((violations + 1))
  fi
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "### Soak ($(date -u +%F), $cpu, $(nproc) cores)"
echo
echo "- fuzzing: $per_target s per target"
grep '^fuzz:' "$tmp/fuzz.txt" 2>/dev/null | sed 's/^/  - /' || true
echo "- kill -9 of a running 2-worker search: $kills kills, $survived checked and resumed, $known individuals at the end, $lost lost, $violations integrity violations"
((fuzz_status == 0 && lost == 0 && violations == 0))
