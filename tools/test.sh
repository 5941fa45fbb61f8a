#!/usr/bin/env bash
# Runs evo's whole test suite on the tree tools/setup.sh built: ctest on build/, the emulated CUDA
# kernels again under AddressSanitizer (build-asan/), there also in reverse and random thread
# orders, then the libFuzzer targets for a bounded time (tools/fuzz.sh, build-fuzz/).
# Not benchmarks.
#
# usage: tools/test.sh                      the whole suite (what .ci/run runs)
#        tools/test.sh --repeat N [REGEX]   ctest N times (only the tests matching REGEX, a ctest
#                                           -R pattern), each with fresh random seeds, then how many
#                                           runs each failing test failed and the seeds that
#                                           repeat them; exits 1 when any run failed. For a new or
#                                           changed test before it lands: a flaky test costs one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EVO_BUILD_DIR:-$root/build}"
jobs="${EVO_JOBS:-$(nproc)}"
repeat=0
pattern=""
if [ "${1:-}" = "--repeat" ]; then
  [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "usage: tools/test.sh --repeat N [REGEX] (N >= 1)" >&2; exit 2; }
  repeat="$2"
  pattern="${3:-}"
elif [ $# -gt 0 ]; then
  echo "usage: tools/test.sh [--repeat N [REGEX]]" >&2
  exit 2
fi

# Debian packages the tests need, installed with sudo when not root.
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Test-only references, installed here and not by tools/setup.sh (evo itself never needs them):
# Debian's PyTorch for tests/test_torch_reference and bench/evolved_nets.sh. Under CI a missing
# reference fails its test instead of skipping it.
# clang for the fuzz targets (libFuzzer is part of it).
if [ "${EVO_SKIP_FUZZ:-0}" != 1 ] && ! command -v clang++ >/dev/null 2>&1; then
  echo "test: installing clang (libFuzzer, for tools/fuzz.sh)"
  apt_install clang
fi
if ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  echo "test: installing python3-torch (the PyTorch reference of test_torch_reference)"
  apt_install python3-torch
fi
# The judges of `evo export` (tests/test_export): onnx (Debian's, the same release as the
# libonnx-dev evo builds with) for onnx.checker, and from PyPI, in a venv beside the build that
# also sees the Debian packages, ONNX Runtime and the safetensors package.
if ! /usr/bin/python3 -c 'import onnx, ensurepip' >/dev/null 2>&1; then
  echo "test: installing python3-onnx python3-venv (the references of test_export)"
  apt_install python3-onnx python3-venv
fi
pyenv="$build/pyenv"
if ! "$pyenv/bin/python" -c 'import onnxruntime, safetensors' >/dev/null 2>&1; then
  echo "test: installing onnxruntime and safetensors from PyPI into $pyenv"
  /usr/bin/python3 -m venv --system-site-packages "$pyenv"
  "$pyenv/bin/pip" install -q --disable-pip-version-check onnxruntime safetensors
fi
export EVO_TEST_PYTHON="$pyenv/bin/python"
# Every test above runs its reference; none may skip for want of one.
export EVO_REQUIRE_REFERENCES=1

if [ "$repeat" -gt 0 ]; then
  # Each run draws new seeds (every test program prints "random seed S (replay with --rng-seed
  # S)"); a failing run's log is kept, so its seed repeats the failure.
  logs="$(mktemp -d)"
  failed_runs=0
  for ((i = 1; i <= repeat; i++)); do
    log="$logs/run-$i.log"
    if ctest --test-dir "$build" --output-on-failure -j "$jobs" ${pattern:+-R "$pattern"} >"$log" 2>&1; then
      echo "test: run $i of $repeat passed"
    else
      failed_runs=$((failed_runs + 1))
      echo "test: run $i of $repeat FAILED:" \
           "$(grep -E '^[0-9/ ]*Test +#[0-9]+: .*\*\*\*Failed' "$log" | sed -E 's/.*: ([A-Za-z0-9_]+) .*/\1/' | tr '\n' ' ')" \
           "(seeds: $(grep -oE 'replay with --rng-seed [0-9]+' "$log" | awk '{print $4}' | sort -u | tr '\n' ' '); log $log)"
    fi
  done
  echo "test: $((repeat - failed_runs)) of $repeat runs passed${pattern:+ (tests matching $pattern)}"
  [ "$failed_runs" -eq 0 ] && rm -rf "$logs"
  [ "$failed_runs" -eq 0 ]
  exit
fi

echo "== ctest ($build)"
ctest --test-dir "$build" --output-on-failure -j "$jobs"

if [ "${EVO_SKIP_ASAN:-0}" != 1 ]; then
    # Out-of-bounds accesses in CUDA kernels only show under the emulator with ASan.
    asan="$root/build-asan"
    echo "== emulated CUDA kernels under AddressSanitizer ($asan)"
    if [ ! -f "$asan/CMakeCache.txt" ]; then
        cmake -S "$root" -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEVO_CUDA=OFF \
              -DEVO_EMU_ASAN=ON -DEVO_BUILD_BENCH=OFF >/dev/null
    fi
    # Every test that runs kernels on the emulator: the emulator's own, and the ops' [emu] cases
    # (ctest's test_ops_emu; test_ops's CPU cases already ran above).
    targets=(test_emulator test_ops)
    tests=(test_emulator test_ops_emu)
    cmake --build "$asan" -j "$jobs" --target "${targets[@]}"
    ctest --test-dir "$asan" --output-on-failure -j "$jobs" \
          -R "^($(IFS='|'; echo "${tests[*]}"))\$"
    # Again with the threads of each block in other orders (cuda/README.md, "EVO_EMU_SCHEDULE"): a
    # kernel whose result depends on the order has a race, such as a missing __syncthreads, that
    # the default forward order can hide. A fresh seed each run (EVO_TEST_SCHEDULE_SEED picks one)
    # tries new orders over time; a failure prints the seed that repeats it. Measured on the
    # 2-core build machine: 8 s for the pass above, 9-11 s for each order below.
    seed="${EVO_TEST_SCHEDULE_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
    for schedule in reverse "random:$seed"; do
        echo "== the same under EVO_EMU_SCHEDULE=$schedule"
        EVO_EMU_SCHEDULE="$schedule" ctest --test-dir "$asan" --output-on-failure -j "$jobs" \
            -R "^($(IFS='|'; echo "${tests[*]}"))\$" || {
            echo "test: failed under EVO_EMU_SCHEDULE=$schedule; repeat with" \
                 "EVO_EMU_SCHEDULE=$schedule $asan/tests/<test>" >&2
            exit 1
        }
    done
fi

if [ "${EVO_SKIP_FUZZ:-0}" != 1 ]; then
    # Hostile input, found by the fuzzers: DNA, weight files, data sets, population records.
    echo "== fuzz targets (tools/fuzz.sh, ${EVO_FUZZ_SECONDS:-15} s each)"
    "$root/tools/fuzz.sh" "${EVO_FUZZ_SECONDS:-15}"
fi
