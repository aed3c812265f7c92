#!/usr/bin/env bash
# The device check of the GPU indexes' removes, upserts, get / has and compactions: builds
# ebrix_gpu_check for the card present and runs its mutation cases (--only-mutations), then
# the vitest GPU file (test/gpu.test.ts, which holds the mutation sequences against CPU
# indexes). About 3–4 minutes on an H100 / H200 with 16 cores.
#
#   bash bench/gpu/mutations.sh [--full]     outputs in $OUT (or build-gpu/)
#
# --full runs the whole correctness check (every case, no timings) instead of the mutation
# cases alone (about 40 s more). Needs CUDA (nvcc, cuBLAS) and CMake for the check, and for
# vitest Node.js with node_modules and the two addons built where nvcc and node headers are:
# build/Release/ebrix.node (`npx node-gyp rebuild`) and build-cuda/Release/ebrix_cuda.node
# (`npm run build:cuda`). Where node is missing and .devcarry/ holds node.xz and nm.tar.xz
# (a Node.js binary and node_modules, as carried to the lent machines), they are unpacked.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/build-gpu}
build=${EBRIX_GPU_BUILD:-/tmp/ebrix-gpu-build}
mkdir -p "$out"
checkArgs=(--only-mutations)
[ "${1:-}" = "--full" ] && checkArgs=(--no-bench)

if ! command -v node >/dev/null && [ -f .devcarry/node.xz ]; then
  mkdir -p /tmp/ebrix-node/bin
  xz -dc .devcarry/node.xz >/tmp/ebrix-node/bin/node
  chmod +x /tmp/ebrix-node/bin/node
  export PATH=/tmp/ebrix-node/bin:$PATH
fi
if [ ! -d node_modules ] && [ -f .devcarry/nm.tar.xz ]; then tar xJf .devcarry/nm.tar.xz; fi
# cuBLAS from the Python environment when the toolkit has none (as CMakeLists.txt finds it).
if cublas=$(python3 -c "import nvidia.cu13 as m; print(list(m.__path__)[0])" 2>/dev/null); then
  export EBRIX_CUBLAS_ROOT=${EBRIX_CUBLAS_ROOT:-$cublas}
  export LD_LIBRARY_PATH=$cublas/lib:${LD_LIBRARY_PATH:-}
fi

status=0
start=$(date +%s)
cmake -S . -B "$build" -DEBRIX_CUDA=ON -DEBRIX_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${EBRIX_CUDA_ARCH:-native}" >"$out/cmake.log"
cmake --build "$build" -j "$(nproc)" --target ebrix_gpu_check >>"$out/cmake.log"
echo "built ebrix_gpu_check in $(($(date +%s) - start)) s"
"$build/ebrix_gpu_check" "${checkArgs[@]}" --json "$out/gpu-check.jsonl" 2>&1 | tee "$out/gpu-check.txt" || status=1
if command -v node >/dev/null && [ -d node_modules ]; then
  node node_modules/vitest/vitest.mjs run test/gpu.test.ts 2>&1 | tee "$out/vitest-gpu.txt" || status=1
else
  echo "vitest not run: no node or node_modules (see the top of this script)"
  status=1
fi
echo "total $(($(date +%s) - start)) s"
exit "$status"
