// Product quantization: a vector of `dim` floats is cut into `m` sub-vectors of dim / m, each
// replaced by the index of its nearest centroid in that sub-space's codebook of 2^nbits
// entries (nbits 8: one byte per sub-vector; nbits 4: two per byte). Scores against a query
// are sums of m table lookups (asymmetric distance computation, ADC): the query stays exact,
// only the database vectors are quantized.
//
// Scores follow the FlatIndex convention, higher is better: inner product, or
// -|q - x|^2 for l2 (cosine: the caller normalises).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "metric.h"
#include "simd/kernels.h"
#include "thread_pool.h"

namespace ebrix {

struct PqTrainParams {
  uint64_t seed = 1;
  size_t maxIterations = 25;
  // k-means trains each codebook on at most 2^nbits × this many points (a seeded sample).
  size_t maxPointsPerCentroid = 256;
  // Learn an orthogonal rotation R (OPQ, alternating with the codebooks) so that R·x
  // quantizes with less error. The rotation is then applied to every vector and query.
  bool opq = false;
  size_t opqIterations = 8;
  unsigned threads = 1;
  // Called between steps with a fraction in [0, 1]; may be empty.
  std::function<void(double)> progress;
};

class ProductQuantizer {
 public:
  // dim must be a multiple of m; nbits 4 or 8. Throws Error(InvalidArgument) otherwise.
  ProductQuantizer(size_t dim, size_t m, unsigned nbits);

  size_t dim() const { return dim_; }
  size_t m() const { return m_; }
  unsigned nbits() const { return nbits_; }
  size_t ksub() const { return size_t{1} << nbits_; }
  size_t dsub() const { return dim_ / m_; }
  bool trained() const { return !centroids_.empty(); }
  bool rotated() const { return !rotation_.empty(); }

  // Bytes of one vector's code in the plain layout: m (8-bit) or ceil(m / 2) (4-bit, sub-
  // quantizer 2j in the low nibble of byte j, 2j + 1 in the high nibble).
  size_t codeBytes() const { return nbits_ == 8 ? m_ : (m_ + 1) / 2; }

  // Trains the codebooks (and the rotation, with opq) on n vectors. Deterministic for a seed.
  void train(const float* vectors, size_t n, const PqTrainParams& params, const simd::Kernels& kernels,
             ThreadPool& pool);

  // Applies the rotation (identity without opq) to n vectors: out = R·x. out may not alias.
  void rotate(const float* vectors, size_t n, float* out) const;

  // Plain-layout codes of n (already rotated) vectors, codeBytes() each.
  void encode(const float* vectors, size_t n, uint8_t* codes, ThreadPool& pool) const;
  // The reconstruction (in the rotated space) of n codes.
  void decode(const uint8_t* codes, size_t n, float* out) const;

  // The ADC table of one (already rotated) query: m × ksub floats, entry [j][c] the score
  // contribution of centroid c of sub-space j: q_j·c for ip, -|q_j - c|^2 for l2. The score
  // of a code is the sum of its m entries (for l2 that is -|q - x̂|^2 exactly).
  void computeTable(const float* query, Metric metric, float* table) const;

  // Float ADC over plain codes: scores[i] = sum_j table[j][code_i[j]] + bias (one value).
  void scan(const float* table, const uint8_t* codes, size_t n, float bias, float* scores) const;

  // m × ksub × dsub floats, and the dim × dim rotation (row-major; empty without opq).
  const std::vector<float>& centroids() const { return centroids_; }
  const std::vector<float>& rotation() const { return rotation_; }
  // Restores a trained quantizer (persistence, tests). Throws on size mismatches.
  void load(std::vector<float> centroids, std::vector<float> rotation);

 private:
  size_t dim_, m_;
  unsigned nbits_;
  std::vector<float> centroids_;
  std::vector<float> rotation_;
  // The codebooks per sub-space as dsub × ksub (centroid c of row d at [d * ksub + c]), for
  // computeTable with small sub-spaces: the loop over the ksub centroids vectorises.
  std::vector<float> transposed_;
  void setCodebooks(std::vector<float> centroids);
};

// --- 4-bit fast-scan ----------------------------------------------------------------------
//
// Codes of 4-bit quantizers re-laid in blocks of 32 vectors so that one 16-entry table per
// sub-quantizer fits a SIMD register and 32 codes are scored with byte shuffles (AVX2
// vpshufb, AVX-512, NEON tbl; a scalar reference does the same arithmetic). Tables are
// quantized to 8 bits per entry, sums accumulate in 16 bits: the scores are approximations,
// used to pick candidates that are then re-scored exactly (float ADC or refine vectors).

constexpr size_t kFastScanBlock = 32;

// Bytes of the packed layout for n vectors of m 4-bit codes (n rounded up to a block).
size_t fastScanBytes(size_t n, size_t m);
// Plain 4-bit codes (ProductQuantizer::encode) of n vectors → packed blocks; missing vectors
// of the last block are zero codes.
void packFastScan(const uint8_t* codes, size_t n, size_t m, uint8_t* packed);
// The inverse for vectors [first, first + n) of packed blocks: their plain codes, so an index
// can keep the packed layout alone (re-scoring and appending read codes back from it).
void unpackFastScan(const uint8_t* packed, size_t first, size_t n, size_t m, uint8_t* codes);

// A float table (m × 16) quantized for fast-scan: entries of sub-quantizer j are
// round((t[j][c] - min_j) / scale) in 0..255, with one scale for all j, so that a sum of
// quantized entries maps back to a score as offset + scale × sum.
struct QuantizedTable {
  std::vector<uint8_t> entries;  // m × 16 (padded to an even m)
  float scale = 1.f;
  float offset = 0.f;  // sum of the per-sub-quantizer minimums
};
QuantizedTable quantizeTable(const float* table, size_t m);

// Approximate scores of the packed blocks: out[i] = sum_j entries[j][code_i[j]] (uint16,
// saturating), for nBlocks × 32 vectors. Dispatched per ISA like the float kernels.
void fastScan(const QuantizedTable& table, size_t m, const uint8_t* packed, size_t nBlocks, uint16_t* out,
              simd::Level level);

// The packed layout (implementation notes; the declarations above are the contract).
//
//   pairs = ceil(m / 2)                 (== codeBytes() of a 4-bit quantizer)
//   block b (vectors 32b .. 32b + 31)   at packed + b × pairs × 32
//   group p of a block (sub-quantizers 2p, 2p + 1) at block + p × 32, 32 bytes:
//     byte 2i     = plain code byte p of vector 32b + i        (i = 0..15)
//     byte 2i + 1 = plain code byte p of vector 32b + 16 + i
//   so each byte keeps the plain layout's nibbles: sub-quantizer 2p low, 2p + 1 high (for an
//   odd m the unused high nibble of the last group is zero). fastScanBytes(n, m) =
//   ceil(n / 32) × pairs × 32; vectors past n are zero codes.
//
// Why: one 32-byte group is one AVX2 register; vpshufb with the 16-entry table of 2p
// (broadcast to both lanes) on the low nibbles and that of 2p + 1 on the high nibbles gives
// 32 entries of each. Seen as 16-bit lanes, the low bytes are vectors 0..15 and the high
// bytes vectors 16..31 in order, so `& 0x00FF` and `>> 8` widen them to 16 bits with no
// cross-lane shuffle and the two accumulators are stored as out[0..15] and out[16..31].
// AVX-512 loads two consecutive groups (four sub-quantizers) per 64-byte register and sums
// its halves at the end of a block; NEON splits a group into two 16-byte tbl lookups (bytes
// 0..15: vectors 0..7 low / 16..23 high; bytes 16..31: 8..15 / 24..31). The kernels are in
// simd/fastscan_{scalar,avx2,avx512,neon}.cpp (declared in simd/fastscan.h); every ISA
// returns the scalar reference's integers exactly (a saturating sum of non-negative
// entries is min(65535, the exact sum) whatever the order).
//
// Other notes:
// - train() throws Error(InvalidArgument) for n < 2^nbits and Error(InvalidVector) for a
//   non-finite training vector; encode / decode / computeTable throw Error(NotTrained)
//   before train() or load(). A 4-bit code of an odd m has a zero high nibble in its last
//   byte.
// - rotate(), encode() and computeTable() use the kernels of simd::defaultLevel() (scalar if
//   EBRIX_SIMD is unusable); encode() runs on pool.workerCount() + 1 threads.
// - OPQ starts from the identity (plain PQ), alternates an orthogonal Procrustes update of R
//   (one-sided Jacobi SVD of the dim × dim cross-covariance) with 4 warm-started k-means
//   iterations per codebook (maxIterations at the end), and keeps the state of least
//   quantization error on the training sample.

}  // namespace ebrix
