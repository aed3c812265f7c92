// Dense matrix products for the trainer, on the register-tile kernel the exact search uses
// (simd::Kernels::tile): both operands are packed into panels, then every tileRows × tileCols
// block of the output is one kernel call.
//
// Every forward and backward product of the trainer is C = A·Bᵀ over strided views: a
// row-major matrix or the transpose of one (Linear: X·Wᵀ; its input gradient dY·W uses W's
// transpose; its weight gradient dYᵀ·X uses both transposes), so packing absorbs the
// transposes and no matrix is ever transposed in memory.
//
// Determinism: the tile kernel sums each output over k in order, in one accumulator, and adds
// the bias last. How the output is tiled and which thread runs a tile therefore never changes
// a value: results are bit-identical for any thread count (they do depend on the SIMD level,
// which may fuse multiply-adds).
#pragma once

#include <cstddef>
#include <vector>

#include "compute.h"

namespace ebrix::train {

// Element (i, k) of a matrix view is data[i * rowStride + k * colStride].
struct Operand {
  const float* data;
  size_t rowStride;
  size_t colStride;
};

// A row-major matrix with `cols` columns: (i, k) = data[i * cols + k].
inline Operand rowMajor(const float* data, size_t cols) { return {data, cols, 1}; }
// The transpose of a row-major matrix with `cols` columns: (i, k) = data[k * cols + i].
inline Operand transposeOf(const float* data, size_t cols) { return {data, 1, cols}; }

class Gemm {
 public:
  // C[i][j] = Σ_k A(i, k)·B(j, k) + bias[j] for i < m, j < n (bias may be null); with
  // `accumulate`, that sum is added to C instead. C is row-major with row stride ldc.
  void run(const Compute& compute, size_t m, size_t n, size_t k, Operand a, Operand b, const float* bias, float* c,
           size_t ldc, bool accumulate);

 private:
  // Scratch reused from call to call: a Gemm serves one caller at a time.
  std::vector<float> packedA_;
  std::vector<float> packedB_;
};

}  // namespace ebrix::train
