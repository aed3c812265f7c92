// For the x86 ISA files only (AVX2 and AVX-512 builds), included inside their anonymous
// namespace after `kCols` (and half.h at the top of the file): the row-panel packing of the
// tile kernel with 8 × 8 register transposes, for float32 and 16-bit rows, and the F16C
// conversions.

// Writes the 8 × 8 block held in r0..r7 (register r = row r) transposed: lane k of every
// row goes to out[k * stride .. + 8).
inline void transpose8x8Registers(__m256 r0, __m256 r1, __m256 r2, __m256 r3, __m256 r4, __m256 r5,
                                  __m256 r6, __m256 r7, float* out, size_t stride) {
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

// Writes the 8 × 8 block rows[r][k0 .. k0+8) (r < 8, row stride `dim`) transposed: step k of
// the block goes to out[k * stride .. + 8).
inline void transpose8x8(const float* rows, size_t dim, float* out, size_t stride) {
  transpose8x8Registers(_mm256_loadu_ps(rows + 0 * dim), _mm256_loadu_ps(rows + 1 * dim),
                        _mm256_loadu_ps(rows + 2 * dim), _mm256_loadu_ps(rows + 3 * dim),
                        _mm256_loadu_ps(rows + 4 * dim), _mm256_loadu_ps(rows + 5 * dim),
                        _mm256_loadu_ps(rows + 6 * dim), _mm256_loadu_ps(rows + 7 * dim), out, stride);
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

// 16-bit rows (f16 with F16C, bf16 with a shift), eight elements widened to float.
inline __m256 widenF16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 widenBf16x8(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

// packPanel over 16-bit rows: widened while transposing, so the tile kernel is unchanged.
template <__m256 (*Widen8)(const uint16_t*), float (*Widen1)(uint16_t)>
void packPanel16(const uint16_t* rows, size_t dim, float* out) {
  const size_t blocked = dim / 8 * 8;
  for (int j0 = 0; j0 < kCols; j0 += 8) {
    const uint16_t* b = rows + static_cast<size_t>(j0) * dim;
    for (size_t k0 = 0; k0 < blocked; k0 += 8) {
      transpose8x8Registers(Widen8(b + k0), Widen8(b + dim + k0), Widen8(b + 2 * dim + k0),
                            Widen8(b + 3 * dim + k0), Widen8(b + 4 * dim + k0), Widen8(b + 5 * dim + k0),
                            Widen8(b + 6 * dim + k0), Widen8(b + 7 * dim + k0), out + k0 * kCols + j0, kCols);
    }
  }
  for (size_t k = blocked; k < dim; ++k) {
    for (int j = 0; j < kCols; ++j) out[k * kCols + j] = Widen1(rows[static_cast<size_t>(j) * dim + k]);
  }
}

// F16C conversions, round to nearest even (the same bits as floatToF16 for finite input).
void floatsToF16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = floatToF16(src[i]);
}

void f16ToFloats(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, widenF16x8(src + i));
  for (; i < n; ++i) dst[i] = f16ToFloat(src[i]);
}
