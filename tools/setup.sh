#!/usr/bin/env bash
# Sets up evo on a fresh Debian machine: installs the packages it needs, configures and builds
# Release into build/. Idempotent and quick on a built tree. Not a system-wide install of evo.
#
# usage: tools/setup.sh [extra cmake -D options]   (EVO_BUILD_DIR=build by default)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EVO_BUILD_DIR:-$root/build}"

packages=(cmake g++ ninja-build catch2 libstb-dev libbenchmark-dev libopenblas-dev
          nlohmann-json3-dev libcli11-dev zlib1g-dev dataset-fashion-mnist chromium
          libonnx-dev libprotobuf-dev protobuf-compiler)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# The CUDA toolkit is optional: found at /usr/local/cuda it builds the CUDA backend too.
if [ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi

jobs="${EVO_JOBS:-$(nproc)}"
if [ ! -f "$build/CMakeCache.txt" ] || [ $# -gt 0 ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build "$build" -j "$jobs"
echo "setup: built $build/evo"
