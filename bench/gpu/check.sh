#!/usr/bin/env bash
# The device check (`npm run bench:gpu`): needs CUDA (nvcc, cuBLAS), CMake and Python with
# PyTorch; not Node.js or npm. Builds ebrix_gpu_check with CMake, checks GPU results against
# the CPU reference on fresh random data, times the GPU paths against the card's measured
# bandwidth and GEMM rate, then times torch.topk(q @ X.T) on the same shapes (bench/gpu/peer.py).
#
#   bash bench/gpu/check.sh [ebrix_gpu_check options]     results in $OUT or build-gpu/
# Environment: EBRIX_CUDA_ARCH (default: the card present), EBRIX_CUBLAS_ROOT.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${EBRIX_GPU_BUILD:-$root/build-gpu}
out=${OUT:-$build}
mkdir -p "$out"
cmake -S "$root" -B "$build" -DEBRIX_CUDA=ON -DEBRIX_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${EBRIX_CUDA_ARCH:-native}" \
  ${EBRIX_CUBLAS_ROOT:+-DEBRIX_CUBLAS_ROOT="$EBRIX_CUBLAS_ROOT"} >"$out/cmake.log"
cmake --build "$build" -j "$(nproc)" --target ebrix_gpu_check >>"$out/cmake.log"
status=0
"$build/ebrix_gpu_check" --json "$out/gpu-check.jsonl" "$@" || status=$?
if [ "$status" -ne 2 ] && grep -q '"kind":"scan"\|"kind":"gemm"' "$out/gpu-check.jsonl"; then
  python3 "$root/bench/gpu/peer.py" --ours "$out/gpu-check.jsonl" --json "$out/gpu-peer.json"
fi
exit "$status"
