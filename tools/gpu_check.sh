#!/usr/bin/env bash
# The one prepared check for a machine with a GPU and no network: builds evo for its GPU from the
# .deb files tools/gpu_bundle.sh fetched, runs the GPU tests, compute-sanitizer, the GPU benchmarks
# and a PyTorch/cuDNN baseline, the search's children per hour against workers per GPU, data-parallel
# training through NCCL (evo train --gpus all), and writes
# markdown tables to bench/results/. Not for CI (no GPU).
#
#   tools/gpu_bundle.sh      # on a machine with network: third_party/debs/*.deb
#   tools/gpu_check.sh       # on the GPU machine (about 9 minutes expected on an H100, build
#                            # included; the GPU part has not run on one yet)
#
# Every step runs even when an earlier one failed (except when the build itself failed: nothing
# else can run then); the summary lists the failed steps and the exit code is 1 when any failed.
# Environment: JOBS (build parallelism, default all cores), EVO_CHECK_BUILD (build dir, default
# build-gpu), EVO_CHECK_TARGETS (build only these targets, e.g. "test_ops test_emulator
# bench_ops"; default everything), EVO_BENCH_FULL=1 (every benchmark shape: much longer),
# EVO_SEARCH_MINUTES (length of each search-throughput measurement, default 0.25).
# EVO_CHECK_DRY=1: a rehearsal without a GPU, so that a step is not first run on a lent one: the
# already-built EVO_CHECK_BUILD (default build) and the emulator stand in for the build and cuda:0,
# sizes are tiny, the GPU-only steps (compute-sanitizer, the cuDNN baseline, the search against
# workers per GPU) are left out, and the tables go to $build/dry-results instead of bench/results.
set -u
set -o pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
dry="${EVO_CHECK_DRY:-0}"
if [ "$dry" = 1 ]; then build="${EVO_CHECK_BUILD:-build}"; else build="${EVO_CHECK_BUILD:-build-gpu}"; fi
prefix="$root/$build/prefix"
logs="$root/$build/logs"
jobs="${JOBS:-$(nproc)}"
start_time=$(date +%s)
failed=()

say() { printf '\n== gpu_check: %s (%ds)\n' "$*" "$(( $(date +%s) - start_time ))"; }
# step NAME CMD...: runs CMD with its output in the terminal and in $logs/NAME.log; records a
# failure instead of stopping.
step() {
  local name="$1"
  shift
  say "$name"
  "$@" 2>&1 | tee "$logs/$name.log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "gpu_check: step '$name' FAILED (exit $rc; log: $logs/$name.log)"
    failed+=("$name")
  fi
  return "$rc"
}

# ---- 0. is there a GPU at all? -----------------------------------------------------------------
results="$root/bench/results"
dev=cuda:0                # the device of the single-GPU steps
all_gpus=(--gpus all)     # data-parallel over every GPU
if [ "$dry" = 1 ]; then
  results="$root/$build/dry-results"
  dev=emu
  all_gpus=(--device emu --gpus 0-1)
  gpu_name="evo CUDA emulator (dry run)"
  mkdir -p "$logs" "$results"
  echo "gpu_check: dry run on the emulator with $root/$build (no GPU, nothing built)"
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no GPU: nvidia-smi is not installed; this script needs a machine with an NVIDIA GPU"
  exit 1
fi
if [ "$dry" != 1 ]; then
  if ! gpu_list="$(nvidia-smi -L 2>&1)" || ! grep -q '^GPU ' <<<"$gpu_list"; then
    echo "gpu_check: no GPU: nvidia-smi -L failed or lists none:"
    printf '  %s\n' "$gpu_list"
    exit 1
  fi
  mkdir -p "$logs" "$results"
  gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
  echo "gpu_check: $(grep -c '^GPU ' <<<"$gpu_list") GPU(s); using $gpu_name"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv |
    tee "$logs/gpu.txt"
fi

nvcc_bin="$(command -v nvcc || true)"
[ -z "$nvcc_bin" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_bin=/usr/local/cuda/bin/nvcc
cuda_bin="$(dirname "${nvcc_bin:-/usr/local/cuda/bin/nvcc}")"
sanitizer="$(command -v compute-sanitizer || true)"
[ -z "$sanitizer" ] && [ -x "$cuda_bin/compute-sanitizer" ] && sanitizer="$cuda_bin/compute-sanitizer"

# ---- 1. the bundled Debian packages, unpacked into a private prefix ----------------------------
unpack_debs() {
  shopt -s nullglob
  local debs=("$root"/third_party/debs/*.deb)
  if [ "${#debs[@]}" -eq 0 ]; then
    echo "no .deb files in third_party/debs (run tools/gpu_bundle.sh on a machine with network);"
    echo "trying the system's own packages"
    return 0
  fi
  mkdir -p "$prefix"
  local deb tmp
  for deb in "${debs[@]}"; do
    if command -v dpkg >/dev/null 2>&1 && dpkg -x "$deb" "$prefix"; then
      continue
    fi
    # No dpkg (e.g. a RHEL image): a .deb is an ar archive holding data.tar.*.
    tmp="$(mktemp -d)"
    (cd "$tmp" && ar x "$deb" && tar -xf data.tar.* -C "$prefix") || {
      echo "cannot unpack $deb"
      rm -rf "$tmp"
      return 1
    }
    rm -rf "$tmp"
  done
  local lib="$prefix/usr/lib/x86_64-linux-gnu"
  # zlib1g-dev's libz.so points at the absolute /lib/x86_64-linux-gnu/libz.so.1.2.13 of Debian 12;
  # on another distribution point it at the system's own zlib runtime instead.
  if [ -L "$lib/libz.so" ] && [ ! -e "$lib/libz.so" ]; then
    local sysz
    for sysz in /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1 \
      /usr/lib64/libz.so.1; do
      if [ -e "$sysz" ]; then
        ln -sf "$sysz" "$lib/libz.so" && echo "libz.so -> $sysz"
        break
      fi
    done
  fi
  echo "unpacked ${#debs[@]} packages into $prefix"
}
[ "$dry" != 1 ] && step unpack unpack_debs

# ---- 2. configure and build for this GPU -------------------------------------------------------
lib="$prefix/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$lib/openblas-pthread:$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$cuda_bin:$PATH:$prefix/usr/bin"  # the bundled ninja only when there is no other
generator="Unix Makefiles"
command -v ninja >/dev/null 2>&1 && generator="Ninja"
configure() {
  cmake -S "$root" -B "$root/$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release -DEVO_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$prefix/usr" \
    ${nvcc_bin:+-DCMAKE_CUDA_COMPILER="$nvcc_bin"} \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$lib -Wl,-rpath-link,$lib/openblas-pthread -Wl,-rpath,$lib/openblas-pthread:$lib"
}
targets=()
read -r -a targets <<<"${EVO_CHECK_TARGETS:-}"
build_all() {
  if [ "${#targets[@]}" -gt 0 ]; then
    cmake --build "$root/$build" -j "$jobs" --target "${targets[@]}"
  else
    cmake --build "$root/$build" -j "$jobs"
  fi
}
if [ "$dry" != 1 ] && { ! step configure configure || ! step build build_all; }; then
  echo "gpu_check: the build failed; nothing else can run."
  echo "gpu_check: FAILED steps: ${failed[*]}"
  exit 1
fi
bin="$root/$build"

# ---- 3. tests: every op on every device (cpu, emu, then cuda:0), and the emulator's GPU comparison
if [ "$dry" != 1 ]; then  # CI runs these on the emulator already
  step tests "$bin/tests/test_ops" --durations yes
  step test_emulator "$bin/tests/test_emulator"
fi
# The training step captured as a CUDA graph and replayed, on emu and cuda:0, against launched ops.
step graphs "$bin/tests/test_train" "[graphs]"

# ---- 4. compute-sanitizer on the short GPU tests (cuda:0 only) --------------------------------
if [ "$dry" = 1 ]; then
  echo "gpu_check: dry run: no compute-sanitizer steps"
elif [ -n "$sanitizer" ]; then
  for tool in memcheck racecheck synccheck; do
    step "sanitizer_$tool" "$sanitizer" --tool "$tool" \
      --error-exitcode 1 "$bin/tests/test_ops" "[cuda][sanitize]"
  done
  # A captured graph replayed: its kernels' memory accesses at replay, not only at launch.
  step sanitizer_graphs "$sanitizer" --tool memcheck --error-exitcode 1 \
    "$bin/tests/test_train" "[graphs]"
else
  echo "gpu_check: compute-sanitizer not found next to nvcc; sanitizer steps skipped"
  failed+=("sanitizer_missing")
fi

# ---- 5. benchmarks: ours, and PyTorch/cuDNN on the same convolutions --------------------------
stamp="$(date +%Y-%m-%d)"
gpu_slug="$(tr -c 'A-Za-z0-9\n' '-' <<<"$gpu_name" | tr -s '-' | sed 's/-$//')"
ours_json="$results/gpu-$stamp-$gpu_slug-ours.json"
torch_json="$results/gpu-$stamp-$gpu_slug-cudnn.json"
table="$results/gpu-$stamp-$gpu_slug.md"
full_flag=()
[ "${EVO_BENCH_FULL:-0}" = "1" ] && full_flag=(--full)
bench_args=(--device "$dev" "${full_flag[@]}")
# A dry run times version 4 on one small shape: the emulator takes seconds per kernel.
[ "$dry" = 1 ] && bench_args=(--device emu --conv-version 4 --benchmark_filter='conv_fwd.*16-16/s1'
  --benchmark_min_time=0.01)
step bench "$bin/bench/bench_ops" "${bench_args[@]}" --benchmark_out="$ours_json" \
  --benchmark_out_format=json
if [ "$dry" = 1 ]; then
  echo "gpu_check: dry run: no cuDNN baseline"
elif python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  step torch_baseline python3 "$root/bench/torch_conv_baseline.py" "${full_flag[@]}" \
    --out "$torch_json"
else
  echo "gpu_check: python3 with a CUDA PyTorch not found; no cuDNN column"
  failed+=("torch_missing")
fi

# ---- 5b. search throughput against workers per GPU (1, 2, 4) ---------------------------------
# On a random data set in CIFAR-10's binary format (the paper's 32x32x3 shapes; the GPU machine
# has no data sets): the accuracies mean nothing, the children per hour and FLOP/s do.
search_table="$results/gpu-$stamp-$gpu_slug-search.md"
random_cifar() {
  local data_dir="$root/$build/random-cifar10"
  [ -f "$data_dir/test_batch.bin" ] && return 0
  python3 - "$data_dir" <<'PY' || return 1
import os, random, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(1)
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(out, name), "wb") as f:
        for _ in range(10000):
            f.write(bytes([rng.randrange(10)]) + os.urandom(3072))
PY
}
step random_data random_cifar
search_bench() {
  DATA="cifar10:$root/$build/random-cifar10" DEVICE_ARGS="--gpus 0" \
    WORKER_OPTION=--workers-per-gpu MINUTES="${EVO_SEARCH_MINUTES:-0.25}" \
    SEED_MINUTES="${EVO_SEARCH_MINUTES:-0.25}" REPS=1 STEPS=400 \
    "$root/bench/search_throughput.sh" "$bin" | tee "$1"
}
if [ "$dry" = 1 ]; then
  echo "gpu_check: dry run: no search throughput (evo search runs on CUDA GPUs or the CPU)"
else
  step search_throughput search_bench "$search_table"
  # The same with every child's steps launched op by op: what the graphs buy per child.
  EVO_GRAPHS=0 step search_throughput_no_graphs search_bench "${search_table%.md}-no-graphs.md"
fi

# ---- 5c. CUDA graphs, and data-parallel training through the real NCCL ---------------------------
# evo train on cuda:0 with the training step as one CUDA graph (the default) and as launched ops
# (EVO_GRAPHS=0): the images per second say what the launches cost. Then --gpus all: with one GPU
# lent this is the NCCL path with one rank (the calls run on the real library; against cuda:0
# it says what one all-reduce per step costs); with several, the same global batch split over
# them. Same random CIFAR-format data as 5b.
parallel_table="$results/gpu-$stamp-$gpu_slug-parallel.md"
parallel_bench() {
  local data="cifar10:$root/$build/random-cifar10" dna=four_conv steps=300
  # The emulator evaluates 15,000 images of four_conv in minutes: the dry run trains the initial
  # DNA (no convolution) for a few steps; it checks the commands, not the speed.
  [ "$dry" = 1 ] && dna=initial && steps=4
  local common=(--dna "$root/data/dna/$dna.json" --data "$data" --steps "$steps" --max-train 5000
    --augment on --json)
  local one ops all
  one=$("$bin/evo" train "${common[@]}" --device "$dev" --batch 50) || return 1
  ops=$(EVO_GRAPHS=0 "$bin/evo" train "${common[@]}" --device "$dev" --batch 50) || return 1
  all=$("$bin/evo" train "${common[@]}" "${all_gpus[@]}" --batch 50) || return 1
  python3 - "$one" "$ops" "$all" "$gpu_name" "$stamp" "$dna" "$steps" <<'PY' | tee "$parallel_table"
import json, sys
runs = [json.loads(a) for a in sys.argv[1:4]]
gpu, stamp, dna, steps = sys.argv[4:8]
print(f"# evo train on {gpu} ({stamp}): CUDA graphs on and off, and data-parallel (NCCL)\n")
print(f"{dna}.json, {steps} steps of global batch 50, random CIFAR-10-format images, crops and flips.\n")
print("| placement | graphs | img/s | train loss | val acc |")
print("|---|---|---:|---:|---:|")
for r in runs:
    g = "yes" if r.get("graphs") else ("no" + (f" ({r['graph_failure'][:60]})" if r.get("graph_failure") else ""))
    print(f"| {r['device']} | {g} | {r['images_per_second']:.0f} | {r['train_loss']:.4f} | {r['val_accuracy']:.4f} |")
PY
}
step data_parallel parallel_bench

# ---- 6. the table ---------------------------------------------------------------------------
make_table() {
  python3 - "$ours_json" "$torch_json" "$gpu_name" "$stamp" <<'PY'
import json, os, re, sys

ours_path, torch_path, gpu, stamp = sys.argv[1:5]
ours = json.load(open(ours_path))
cudnn = {}
meta = ""
if os.path.exists(torch_path):
    t = json.load(open(torch_path))
    cudnn = {r["name"]: r["ms"] for r in t["results"]}
    meta = f"PyTorch {t['torch']}, cuDNN {t['cudnn']}, FP32 (TF32 off), channels_last"
scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
print(f"# evo GPU ops on {gpu} ({stamp})\n")
print(f"Ours: bench_ops --device cuda:0 (CUDA events, GPU time). Baseline: {meta or 'none (no PyTorch)'}.")
print("ratio = ours / cuDNN (below 1: we are faster). SGEMM: cuBLAS FP32 on the conv's GEMM shape.\n")
print("| op | shape | ours ms | cuDNN ms | ratio | ours GFLOP/s | SGEMM GFLOP/s | GB/s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for b in ours.get("benchmarks", []):
    if b.get("run_type", "iteration") != "iteration":
        continue
    parts = [p for p in b["name"].split("/") if ":" not in p and p not in ("manual_time", "real_time")]
    # conv_fwd_v2_implicit_gemm/... is compared with cuDNN's conv_fwd/... of the same shape.
    key = "/".join([re.sub(r"_v[0-9]+_[a-z0-9_]+$", "", parts[0])] + parts[1:])
    ms = b["real_time"] * scale[b.get("time_unit", "ns")]
    ref = cudnn.get(key)
    fmt = lambda v, d=1: "" if v is None else f"{v:.{d}f}"
    print(f"| {parts[0]} | {' '.join(parts[1:])} | {ms:.4f} | {fmt(ref, 4)} | "
          f"{fmt(ms / ref if ref else None, 2)} | {fmt(b.get('GFLOP/s'))} | "
          f"{fmt(b.get('sgemm_GFLOP/s'))} | {fmt(b.get('GB/s'))} |")
PY
}
if [ -f "$ours_json" ]; then
  say "table"
  if make_table >"$table"; then
    cat "$table"
    echo "gpu_check: table written to $table"
  else
    failed+=("table")
  fi
else
  failed+=("table")
fi

# ---- summary ---------------------------------------------------------------------------------
say "done"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu_check: FAILED steps: ${failed[*]} (logs in $logs)"
  exit 1
fi
echo "gpu_check: every step passed (logs in $logs)"
