#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace ebrix::train {
namespace {

// Panels of A per task and panels of B per task: a B panel (k × tileCols floats) is reused
// against every A panel of the task while it sits in L1.
constexpr size_t kAPanelsPerTask = 16;
constexpr size_t kBPanelsPerTask = 4;
// Products smaller than this many multiply-adds run on the calling thread.
constexpr size_t kSerialBelow = size_t(1) << 16;

// Packs rows [i0, i0 + width) of the view as k steps of `width` floats (zero past `rows`).
void packPanel(Operand v, size_t i0, size_t rows, size_t width, size_t k, float* out) {
  const size_t valid = std::min(width, rows - i0);
  if (v.colStride == 1) {
    for (size_t i = 0; i < valid; ++i) {
      const float* src = v.data + (i0 + i) * v.rowStride;
      for (size_t kk = 0; kk < k; ++kk) out[kk * width + i] = src[kk];
    }
  } else {
    for (size_t kk = 0; kk < k; ++kk) {
      const float* src = v.data + kk * v.colStride + i0 * v.rowStride;
      float* dst = out + kk * width;
      if (v.rowStride == 1) {
        std::memcpy(dst, src, valid * sizeof(float));
      } else {
        for (size_t i = 0; i < valid; ++i) dst[i] = src[i * v.rowStride];
      }
    }
  }
  if (valid < width) {
    for (size_t kk = 0; kk < k; ++kk) std::fill(out + kk * width + valid, out + (kk + 1) * width, 0.0f);
  }
}

}  // namespace

void Gemm::run(const Compute& compute, size_t m, size_t n, size_t k, Operand a, Operand b, const float* bias, float* c,
               size_t ldc, bool accumulate) {
  if (m == 0 || n == 0) return;
  const simd::Kernels& kernels = *compute.kernels;
  const size_t mr = static_cast<size_t>(kernels.tileRows);
  const size_t nr = static_cast<size_t>(kernels.tileCols);
  if (k == 0) {
    for (size_t i = 0; i < m; ++i) {
      for (size_t j = 0; j < n; ++j) {
        const float v = bias ? bias[j] : 0.0f;
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + v : v;
      }
    }
    return;
  }
  const size_t aPanels = (m + mr - 1) / mr;
  const size_t bPanels = (n + nr - 1) / nr;
  const size_t aPanelFloats = k * mr;
  const size_t bPanelFloats = k * nr + nr;
  packedA_.resize(aPanels * aPanelFloats);
  packedB_.resize(bPanels * bPanelFloats);
  float* packedA = packedA_.data();
  float* packedB = packedB_.data();
  Compute run = compute;
  if (m * n * k < kSerialBelow) run.threads = 1;

  run.blocks(aPanels + bPanels, 8, [&](size_t begin, size_t end) {
    for (size_t p = begin; p < end; ++p) {
      if (p < aPanels) {
        packPanel(a, p * mr, m, mr, k, packedA + p * aPanelFloats);
        continue;
      }
      const size_t q = p - aPanels;
      const size_t j0 = q * nr;
      float* out = packedB + q * bPanelFloats;
      if (j0 + nr <= n && b.colStride == 1 && b.rowStride == k && kernels.packPanel != nullptr) {
        kernels.packPanel(b.data + j0 * k, k, out);
      } else {
        packPanel(b, j0, n, nr, k, out);
      }
      float* biasOut = out + k * nr;
      for (size_t j = 0; j < nr; ++j) biasOut[j] = (bias != nullptr && j0 + j < n) ? bias[j0 + j] : 0.0f;
    }
  });

  const size_t aTasks = (aPanels + kAPanelsPerTask - 1) / kAPanelsPerTask;
  const size_t bTasks = (bPanels + kBPanelsPerTask - 1) / kBPanelsPerTask;
  run.blocks(aTasks * bTasks, 1, [&](size_t begin, size_t end) {
    alignas(64) float tile[simd::kMaxTileRows * simd::kMaxTileCols];
    float thresholds[simd::kMaxTileRows];
    uint32_t masks[simd::kMaxTileRows];
    std::fill(thresholds, thresholds + simd::kMaxTileRows, -std::numeric_limits<float>::infinity());
    for (size_t task = begin; task < end; ++task) {
      const size_t at = task / bTasks, bt = task % bTasks;
      const size_t aEnd = std::min(aPanels, (at + 1) * kAPanelsPerTask);
      const size_t bEnd = std::min(bPanels, (bt + 1) * kBPanelsPerTask);
      for (size_t q = bt * kBPanelsPerTask; q < bEnd; ++q) {
        const size_t j0 = q * nr;
        const size_t cols = std::min(nr, n - j0);
        for (size_t p = at * kAPanelsPerTask; p < aEnd; ++p) {
          const size_t i0 = p * mr;
          const size_t rows = std::min(mr, m - i0);
          kernels.tile(packedA + p * aPanelFloats, static_cast<int>(rows), packedB + q * bPanelFloats, k, thresholds, tile,
                       masks);
          for (size_t i = 0; i < rows; ++i) {
            float* dst = c + (i0 + i) * ldc + j0;
            const float* src = tile + i * nr;
            if (accumulate) {
              for (size_t j = 0; j < cols; ++j) dst[j] += src[j];
            } else {
              std::memcpy(dst, src, cols * sizeof(float));
            }
          }
        }
      }
    }
  });
}

}  // namespace ebrix::train
