// For the ISA files only. Include it inside the file's anonymous namespace, after its
// `template <int MR> void tileFixed(...)` and `kRows` (and <utility> at the top of the file):
// it defines `tile()`, which turns the run-time query count of a tile into the compile-time
// MR whose accumulators live in registers. Everything here has internal linkage, so no
// ISA's copy can replace another's at link time; std::index_sequence is a type only and
// instantiates no code.

using TileFixedFn = void (*)(const float*, const float*, size_t, const float*, float*, uint32_t*);

template <size_t... Counts>
struct TileTable {
  static constexpr TileFixedFn byCount[sizeof...(Counts)] = {&tileFixed<static_cast<int>(Counts) + 1>...};
};

template <size_t... Counts>
constexpr const TileFixedFn* tileTable(std::index_sequence<Counts...>) {
  return TileTable<Counts...>::byCount;
}

void tile(const float* packedQueries, int queryCount, const float* packedRows, size_t dim,
          const float* thresholds, float* out, uint32_t* masks) {
  static constexpr const TileFixedFn* byCount = tileTable(std::make_index_sequence<kRows>());
  byCount[queryCount - 1](packedQueries, packedRows, dim, thresholds, out, masks);
}
