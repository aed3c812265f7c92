// For the x86 ISA files only (AVX2 and AVX-512 builds), included inside their anonymous
// namespace: the row-panel packing of the tile kernel with 8 × 8 register transposes.

// Writes the 8 × 8 block rows[r][k0 .. k0+8) (r < 8, row stride `dim`) transposed: step k of
// the block goes to out[k * stride .. + 8).
inline void transpose8x8(const float* rows, size_t dim, float* out, size_t stride) {
  const __m256 r0 = _mm256_loadu_ps(rows + 0 * dim), r1 = _mm256_loadu_ps(rows + 1 * dim);
  const __m256 r2 = _mm256_loadu_ps(rows + 2 * dim), r3 = _mm256_loadu_ps(rows + 3 * dim);
  const __m256 r4 = _mm256_loadu_ps(rows + 4 * dim), r5 = _mm256_loadu_ps(rows + 5 * dim);
  const __m256 r6 = _mm256_loadu_ps(rows + 6 * dim), r7 = _mm256_loadu_ps(rows + 7 * dim);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(out + 0 * stride, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(out + 1 * stride, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(out + 2 * stride, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(out + 3 * stride, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(out + 4 * stride, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(out + 5 * stride, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(out + 6 * stride, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(out + 7 * stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// Packs a full panel of kCols rows: dim steps of kCols floats. Steps past the last multiple
// of 8 are copied one by one.
void packPanel(const float* rows, size_t dim, float* out) {
  const size_t blocked = dim / 8 * 8;
  for (int j0 = 0; j0 < kCols; j0 += 8) {
    const float* block = rows + static_cast<size_t>(j0) * dim;
    for (size_t k0 = 0; k0 < blocked; k0 += 8) {
      transpose8x8(block + k0, dim, out + k0 * kCols + j0, kCols);
    }
  }
  for (size_t k = blocked; k < dim; ++k) {
    for (int j = 0; j < kCols; ++j) out[k * kCols + j] = rows[static_cast<size_t>(j) * dim + k];
  }
}
