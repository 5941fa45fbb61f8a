#!/usr/bin/env bash
# Builds evo's libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang and AddressSanitizer +
# UndefinedBehaviorSanitizer, and runs each for a bounded time from its committed seed corpus
# (tests/fuzz/corpus/<target>/). tools/test.sh runs it in CI so the fuzzers keep finding what the
# hostile-input work fixed; tools/fuzz_soak.sh runs them for hours. Not a unit test: a target fails
# only when evo crashes, trips a sanitizer, hangs, exceeds the memory limit, or throws anything but
# evo::Error (tests/fuzz/fuzz_common.h).
#
# usage: tools/fuzz.sh [SECONDS_PER_TARGET (default 15)] [TARGET ...]
#   FUZZ_BUILD=DIR   objects and binaries (default build-fuzz/; sources newer than their object
#                    are recompiled)
#   CXX_FUZZ=clang++ the compiler (clang: libFuzzer is part of it)
# A finding is saved as build-fuzz/findings/<target>/crash-* (or leak-, timeout-, oom-) and the
# script exits 1 naming it; reproduce with `build-fuzz/<target> FILE`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=${1:-15}
shift || true
build="${FUZZ_BUILD:-$root/build-fuzz}"
cxx="${CXX_FUZZ:-clang++}"
command -v "$cxx" >/dev/null ||
  { echo "fuzz: $cxx not found (tools/test.sh installs clang; or set CXX_FUZZ)" >&2; exit 2; }
mkdir -p "$build/obj"

flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
       -fno-sanitize-recover=undefined -I"$root/include" -I"$root" -I/usr/include/stb
       -DEVO_SOURCE_DIR="\"$root\"")

# Each target and the sources it needs (the least that links: the CPU backend is not one of them).
declare -A sources=(
  [fuzz_dna]="src/dna.cpp src/dna_compile.cpp src/io.cpp"
  [fuzz_data]="src/data.cpp src/data_idx.cpp src/data_cifar.cpp src/data_folder.cpp src/stb_image.cpp src/io.cpp"
  [fuzz_record]="src/search/population.cpp src/io.cpp"
  [fuzz_weights]="src/train/weight_file.cpp src/dna.cpp src/dna_compile.cpp src/io.cpp"
)
libs_fuzz_data=(-lz)
libs_fuzz_weights=(-lz)
targets=("$@")
((${#targets[@]})) || targets=(fuzz_dna fuzz_data fuzz_record fuzz_weights)

object() {  # SOURCE -> its object, compiled when missing or older than any header or the source
  local src=$1 obj="$build/obj/$(echo "$1" | tr '/' '_').o"
  # stb_image (third-party) copies 0 bytes from a null buffer on an empty PNG chunk: harmless, but
  # undefined; its file alone is built without that one check, so ours keep it.
  local extra=()
  [[ $src == src/stb_image.cpp ]] && extra=(-fno-sanitize=nonnull-attribute)
  if [[ ! -f $obj || $root/$src -nt $obj || -n $(find "$root/include" "$root/tests/fuzz" -newer "$obj" -name '*.h' -print -quit) ]]; then
    "$cxx" "${flags[@]}" "${extra[@]}" -fsanitize=fuzzer-no-link -c "$root/$src" -o "$obj"
  fi
  echo "$obj"
}

# Compile every object the targets need first, $(nproc) at a time.
declare -A wanted=()
for t in "${targets[@]}"; do
  [[ -n "${sources[$t]:-}" ]] || { echo "fuzz: unknown target $t (${!sources[*]})" >&2; exit 2; }
  for s in tests/fuzz/$t.cpp ${sources[$t]}; do wanted[$s]=1; done
done
jobs_max=${EVO_JOBS:-$(nproc)}
for s in "${!wanted[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n; done
  object "$s" >/dev/null &
done
while (($(jobs -rp | wc -l) > 0)); do wait -n || { echo "fuzz: a compile failed" >&2; exit 1; }; done

failed=0
for t in "${targets[@]}"; do
  objs=()
  for s in tests/fuzz/$t.cpp ${sources[$t]}; do objs+=("$(object "$s")"); done
  libs_var="libs_$t[@]"
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "${objs[@]}" ${!libs_var+"${!libs_var}"} -o "$build/$t"

  # Run on a scratch copy of the seed corpus: what the fuzzer adds is not committed.
  corpus="$build/corpus/$t"
  findings="$build/findings/$t"
  mkdir -p "$corpus" "$findings"
  [[ -d $root/tests/fuzz/corpus/$t ]] && cp -n "$root/tests/fuzz/corpus/$t/"* "$corpus/" 2>/dev/null || true
  log="$build/$t.log"
  if "$build/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
       -artifact_prefix="$findings/" -print_final_stats=1 "$corpus" >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz: $t: $runs inputs in ${seconds}s, no finding"
  else
    echo "fuzz: $t FAILED; the input is in $findings/, the log in $log:" >&2
    grep -E 'ERROR|SUMMARY|==[0-9]+==|deadly|Test unit written' "$log" | head -20 >&2
    failed=1
  fi
done
exit $failed
