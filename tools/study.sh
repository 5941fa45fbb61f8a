#!/usr/bin/env bash
# A study: the same search repeated over seeds for several settings, one run after another, then a
# markdown table of each setting's mean +- sd and a comparison page (OUT_DIR/compare.html). Not a
# benchmark of evo's speed (bench/ has those) and not a test: it asserts nothing.
#
# usage: tools/study.sh OUT_DIR SEEDS NAME=ARGS [NAME=ARGS ...] [-- COMMON_ARGS]
#   OUT_DIR       folder of the study; created when missing
#   SEEDS         runs per setting, with --seed 1 .. SEEDS
#   NAME=ARGS     one setting: a name ([A-Za-z0-9_.-]+, used in folder names) and the options of
#                 `evo search` that make it, split on spaces (no quoting inside), e.g.
#                 'pop8=--population 8' 'pop16=--population 16'; ARGS may be empty ('base=')
#   COMMON_ARGS   options every run gets, after the settings', e.g. --time-limit 15m --max-val 5000
#   EVO=PATH      the evo binary (default: build/evo of this checkout)
#   PYTHON=PATH   python3 for the statistics (stdlib only; default python3)
#
# Each run is `evo search --run-dir OUT_DIR/NAME-sSEED --seed SEED --json ARGS COMMON_ARGS`; its
# JSON line goes to OUT_DIR/NAME-sSEED.json and its console to OUT_DIR/NAME-sSEED.log. Runs never
# overlap: a search already uses every core. The study resumes: a run whose .json exists is not
# run again. A run folder without its .json was interrupted; it is moved aside to
# NAME-sSEED.partial-UNIXTIME and run afresh, so every run of the study has the same budget.
#
# Example (2 settings x 3 seeds of 15 minutes, ~1.5 hours):
#   tools/study.sh studies/pop 3 'pop8=--population 8' 'pop16=--population 16' -- --time-limit 15m
#
# The table's accuracies are evo's own JSON (best_val_accuracy: the best alive at the end; final:
# the model of the final phase, --final-share, "—" for runs without one; answer: the run's answer,
# the final ensemble when it wins on validation, else the final model), the
# page's come from the run folders (the best validation accuracy of any child ever); they agree
# unless selection killed the best. Settings that `evo search` does not keep in run.json (e.g.
# --max-train, --time-limit) cannot group the page's runs: give them in COMMON_ARGS, or expect the
# page to merge settings that differ only in them.
set -euo pipefail

usage() {
  sed -n '/^# usage/,/^#$/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
(($# >= 3)) || usage
out_dir=$1
seeds=$2
shift 2
[[ "$seeds" =~ ^[1-9][0-9]*$ ]] || { echo "study: SEEDS should be a positive whole number, not '$seeds'" >&2; exit 2; }

names=()
declare -A args_of
while (($# > 0)) && [[ "$1" != "--" ]]; do
  [[ "$1" =~ ^([A-Za-z0-9_.-]+)=(.*)$ ]] ||
    { echo "study: '$1' is not a setting NAME=ARGS (NAME of letters, digits, _ . -); e.g. 'pop8=--population 8'" >&2; exit 2; }
  name=${BASH_REMATCH[1]}
  [[ -z "${args_of[$name]+set}" ]] || { echo "study: setting '$name' is given twice; give each a new name" >&2; exit 2; }
  names+=("$name")
  args_of[$name]=${BASH_REMATCH[2]}
  shift
done
((${#names[@]} > 0)) || usage
common=()
if (($# > 0)); then
  shift  # the --
  common=("$@")
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
evo=${EVO:-$repo/build/evo}
py=${PYTHON:-python3}
[[ -x "$evo" ]] || { echo "study: no evo binary at '$evo'; build it (tools/setup.sh) or set EVO=path" >&2; exit 2; }
mkdir -p "$out_dir"

# The machine, as bench/evolved_nets.sh prints it: the study's numbers mean little without it.
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni)$' | sort -u | tr '\n' ' ')
version=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$repo" diff --quiet 2>/dev/null || version+="+changes"

run_dirs=()
total=$((${#names[@]} * seeds))
done_count=0
for name in "${names[@]}"; do
  read -r -a setting_args <<<"${args_of[$name]}"
  for ((seed = 1; seed <= seeds; seed++)); do
    run="$out_dir/$name-s$seed"
    result="$run.json"
    done_count=$((done_count + 1))
    run_dirs+=("$run")
    if [[ -s "$result" ]]; then
      echo "study: [$done_count/$total] $name seed $seed: done before ($result)" >&2
      continue
    fi
    if [[ -e "$run" ]]; then
      aside="$run.partial-$(date +%s)"
      echo "study: $run has no result (interrupted); moved aside to $aside, running it afresh" >&2
      mv "$run" "$aside"
    fi
    echo "study: [$done_count/$total] $name seed $seed: evo search ${args_of[$name]} ${common[*]}" >&2
    rc=0
    "$evo" search --run-dir "$run" --seed "$seed" --json "${setting_args[@]}" "${common[@]}" \
      >"$run.stdout" 2>"$run.log" || rc=$?
    # The JSON object is evo's last line of stdout; keep it only when evo finished and it parses.
    if ((rc != 0)) || ! tail -n 1 "$run.stdout" | "$py" -c 'import json, sys; json.loads(sys.stdin.read())' 2>/dev/null; then
      echo "study: $name seed $seed failed (evo exit $rc); see $run.log and $run.stdout, fix it and run the same command again: finished runs are kept" >&2
      exit 1
    fi
    tail -n 1 "$run.stdout" >"$result.tmp"
    mv "$result.tmp" "$result"
    rm -f "$run.stdout"
  done
done

echo "CPU: $cpu ($(nproc) cores; vector flags: $flags); evo $version; $(date -u +%F)"
echo "Common options: ${common[*]:-(none)}; $seeds seed(s) per setting"
echo
# Statistics in python (stdlib): mean and sample sd (n - 1) per setting, over runs that have the value.
for name in "${names[@]}"; do
  for ((seed = 1; seed <= seeds; seed++)); do
    printf '%s\t%s\t%s\n' "$name" "${args_of[$name]}" "$out_dir/$name-s$seed.json"
  done
done | "$py" -c '
import json, math, sys

rows = {}  # name -> (args, [results])
for line in sys.stdin:
    name, args, path = line.rstrip("\n").split("\t")
    with open(path) as f:
        rows.setdefault(name, (args, []))[1].append(json.loads(f.read()))

def number(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

def stat(results, key, scale, fmt):
    v = [number(r.get(key)) for r in results]
    v = [x * scale for x in v if x is not None]
    if not v:
        return "—"
    mean = sum(v) / len(v)
    text = fmt(mean)
    if len(v) >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
        text += " ± " + fmt(sd)
    if len(v) < len(results):
        text += " (%d of %d)" % (len(v), len(results))
    return text

pct = lambda x: "%.2f" % x
print("| setting | options | runs | best val acc (%) | best test acc (%) | ensemble test acc (%) "
      "| final test acc (%) | final ensemble test (%) | answer test acc (%) | children | children / hour "
      "| total FLOPs |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, (args, results) in rows.items():
    print("| %s | `%s` | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        name, args or "(defaults)", len(results),
        stat(results, "best_val_accuracy", 100, pct),
        stat(results, "best_test_accuracy", 100, pct),
        stat(results, "ensemble_test_accuracy", 100, pct),
        stat(results, "final_test_accuracy", 100, pct),
        stat(results, "final_ensemble_test_accuracy", 100, pct),
        stat(results, "answer_test_accuracy", 100, pct),
        stat(results, "children", 1, lambda x: "%.0f" % x),
        stat(results, "children_per_hour", 1, lambda x: "%.0f" % x),
        stat(results, "total_flops", 1, lambda x: "%.2e" % x)))
'
echo
"$evo" report "${run_dirs[@]}" --out "$out_dir/compare.html" >/dev/null
echo "Comparison page: $out_dir/compare.html"
