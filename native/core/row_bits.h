// Bitsets over rows or slots, as the searches take them (bit r & 31 of word r >> 5 is row r;
// rows past the last word are not set), and the few operations the indexes' tombstones need.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ebrix {

inline size_t bitWords(size_t bits) { return (bits + 31) / 32; }

inline bool testBit(const uint32_t* words, size_t wordCount, size_t bit) {
  return bit / 32 < wordCount && ((words[bit / 32] >> (bit % 32)) & 1u) != 0;
}

inline void setBit(std::vector<uint32_t>& words, size_t bit) { words[bit / 32] |= 1u << (bit % 32); }
inline void clearBit(std::vector<uint32_t>& words, size_t bit) { words[bit / 32] &= ~(1u << (bit % 32)); }

// A bitset of `bits` bits, all set (bits past the end clear).
inline std::vector<uint32_t> allBits(size_t bits) {
  std::vector<uint32_t> out(bitWords(bits), ~0u);
  if (bits % 32 != 0) out.back() = (1u << (bits % 32)) - 1u;
  return out;
}

// Grows a bitset to `bits` bits, setting the bits from `from` on (bits below keep their value).
inline void extendSet(std::vector<uint32_t>& words, size_t from, size_t bits) {
  words.resize(bitWords(bits), 0u);
  for (size_t b = from; b < bits; ++b) setBit(words, b);
}

// a AND b over the shorter of the two.
inline std::vector<uint32_t> andBits(const uint32_t* a, size_t aWords, const uint32_t* b, size_t bWords) {
  std::vector<uint32_t> out(std::min(aWords, bWords));
  for (size_t w = 0; w < out.size(); ++w) out[w] = a[w] & b[w];
  return out;
}

inline size_t popcountBits(const uint32_t* words, size_t wordCount) {
  size_t n = 0;
  for (size_t w = 0; w < wordCount; ++w) n += static_cast<size_t>(__builtin_popcount(words[w]));
  return n;
}

}  // namespace ebrix
