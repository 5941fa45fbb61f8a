#!/usr/bin/env bash
# Fetches the Debian packages evo's build needs into third_party/debs/ (ignored by git), so that
# tools/gpu_check.sh can build on a GPU machine with no network. Not an installer: nothing is
# installed here; run it on a machine that reaches Debian's package registry.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/third_party/debs"
mkdir -p "$out"
cd "$out"

# The build's libraries and their runtime dependencies (a GPU image may lack libgfortran5).
packages=(catch2 libbenchmark-dev libbenchmark1debian libopenblas-dev libopenblas-pthread-dev zlib1g
          libopenblas0-pthread libopenblas0 libgfortran5 libquadmath0 nlohmann-json3-dev
          libcli11-dev zlib1g-dev libstb-dev libstb0 ninja-build)

if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download "${packages[@]}"
fi
echo "gpu_bundle: $(ls "$out"/*.deb | wc -l) packages, $(du -sh "$out" | cut -f1) in $out"
echo "gpu_bundle: carry third_party/debs to the GPU machine and run tools/gpu_check.sh there"
