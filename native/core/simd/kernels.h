// The table of float32 kernels one instruction set provides. Each ISA lives in its own
// translation unit compiled with its own flags; dispatch.cpp picks a table once, when an
// index is constructed, so no per-vector dispatch ever happens.
//
// Rule for the ISA files: they include only this header, half.h (scalar f16 / bf16
// conversions, all `static inline`) and the intrinsics header, keep every helper `static` or
// in an anonymous namespace, and use no standard-library templates.
// An inline function instantiated under -mavx512f and merged by the linker with the plain
// copy would put AVX-512 instructions on the scalar path of an older CPU.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ebrix::simd {

enum class Level { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };

// Upper bounds of the register tile over all ISAs; buffers are sized with them.
constexpr int kMaxTileRows = 12;
constexpr int kMaxTileCols = 32;

// How an index stores its rows: float32, or 16-bit IEEE half (f16) or bfloat16 (bf16) bit
// patterns. Queries of a 16-bit index are rounded to the same type but stay float arrays
// (every f16 / bf16 value is exactly a float), so only the row side of a kernel changes.
// I8: unsigned 8-bit codes of a trained scalar quantizer (sq.h), scored by KernelsI8.
enum class Element { F32 = 0, F16 = 1, BF16 = 2, I8 = 3 };

// Kernels over rows of one 16-bit element type. Products and sums are float32.
struct Kernels16 {
  float (*dot)(const float* q, const uint16_t* x, size_t dim);
  float (*l2sq)(const float* q, const uint16_t* x, size_t dim);
  // As Kernels::scanRows, over rows of 16-bit elements.
  void (*scanRows)(const float* query, const uint16_t* rows, size_t count, size_t dim,
                   const float* bias, float* scores);
  // As Kernels::packPanel, widening to float while transposing. Null: the generic loop.
  void (*packPanel)(const uint16_t* rows, size_t dim, float* out);
  // Round to nearest even (finite inputs; f16 magnitudes from 65520 up become infinity).
  void (*fromFloat)(const float* src, uint16_t* dst, size_t n);
  void (*toFloat)(const uint16_t* src, float* dst, size_t n);
};

// Kernels over rows of 8-bit scalar-quantizer codes (0..255) against a query quantized to
// signed 8 bits (sq.h folds the quantizer's steps into it). Products and sums are exact
// int32: the caller bounds the query's magnitude so that 255 × |q| summed over dim stays
// below 2^31 (ScalarQuantizer::queryLimit), and no kernel may saturate an intermediate.
struct KernelsI8 {
  // The variant, for tests and reports: one level may have several (with and without VNNI).
  const char* name;
  int32_t (*dot)(const uint8_t* codes, const int8_t* query, size_t dim);
  // scores[r] = float(dot(rows + r*dim, query)) * scale + offset + bias[r] (bias may be
  // null), for r < count; rows contiguous, row-major.
  void (*scanRows)(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale,
                   float offset, const float* bias, float* scores);
  // scanRows for a query whose bytes lie in [-kSmallQueryLimit, kSmallQueryLimit]: the same
  // scores. With the pair sums of 255 × 63 inside int16, AVX2 multiplies the bytes directly
  // (vpmaddubsw, 4 instructions per 32 codes instead of 7); levels with a 32-bit byte dot
  // product, or none at all, use their scanRows. For the IVF coarse sketch, which re-scores
  // its shortlist on floats and so can afford the query's coarser rounding.
  void (*scanRowsSmallQuery)(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale,
                             float offset, const float* bias, float* scores);
};

// The largest query byte magnitude scanRowsSmallQuery takes.
constexpr int kSmallQueryLimit = 63;

struct Kernels {
  Level level;
  const char* name;
  // Register tile of the many-queries kernel: `tileRows` queries × `tileCols` database rows.
  int tileRows;
  int tileCols;

  float (*dot)(const float* a, const float* b, size_t dim);
  float (*l2sq)(const float* a, const float* b, size_t dim);

  // Streaming scan for one query: scores[r] = dot(query, rows + r*dim) + bias[r] (bias may be
  // null), for r < count. Rows are contiguous, row-major.
  void (*scanRows)(const float* query, const float* rows, size_t count, size_t dim,
                   const float* bias, float* scores);

  // One register tile of the many-queries kernel.
  //   packedQueries: dim groups of `tileRows` floats (query i of step k at [k*tileRows + i]);
  //                  only the first `queryCount` (1..tileRows) queries are scored.
  //   packedRows:    dim groups of `tileCols` floats, then `tileCols` per-row biases.
  //   out:           queryCount × tileCols scores (dot + bias), row stride tileCols.
  //   masks[i]:      bit j set when out[i*tileCols + j] >= thresholds[i].
  void (*tile)(const float* packedQueries, int queryCount, const float* packedRows, size_t dim,
               const float* thresholds, float* out, uint32_t* masks);

  // Packs a full panel of `tileCols` contiguous rows into the `packedRows` layout above (the
  // biases excluded). Null where the generic loop in exact_search.cpp is as good.
  void (*packPanel)(const float* rows, size_t dim, float* out);

  // Machine ceiling probe: `iterations` rounds of independent fused multiply-adds, enough
  // chains in flight to fill every FMA pipe; fmaLoopFlops floating-point ops per round.
  float (*fmaLoop)(size_t iterations);
  int fmaLoopFlops;

  Kernels16 f16;
  Kernels16 bf16;
  // The level's own i8 kernels; dispatch.cpp swaps in a VNNI variant where the CPU has one.
  KernelsI8 i8;

  // scanRows for rows already in cache (a coarse quantizer's centroids): four rows at a time,
  // so that independent FMA chains overlap instead of each row waiting on its own. Null
  // where scanRows is as good (use scanRowsCachedOr below).
  void (*scanRowsCached)(const float* query, const float* rows, size_t count, size_t dim,
                         const float* bias, float* scores);
};

using ScanRowsFn = void (*)(const float*, const float*, size_t, size_t, const float*, float*);
inline ScanRowsFn scanRowsCachedOr(const Kernels& k) { return k.scanRowsCached ? k.scanRowsCached : k.scanRows; }

const Kernels& scalarKernels();
#if defined(__x86_64__) || defined(_M_X64)
const Kernels& avx2Kernels();
const Kernels& avx512Kernels();
// i8 kernels with dot-product instructions, each in its own translation unit: AVX-VNNI
// (VEX, 256-bit, with AVX2) and AVX512-VNNI (with AVX-512 F/BW/VL).
const KernelsI8& avxVnniI8Kernels();
const KernelsI8& avx512VnniI8Kernels();
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
const Kernels& neonKernels();
#endif

}  // namespace ebrix::simd
