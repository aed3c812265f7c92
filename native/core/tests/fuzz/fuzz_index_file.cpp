// libFuzzer target for the index file loaders (CMake -DEBRIX_FUZZ=ON with clang; see
// native/core/tests/fuzz/README.md). Each input is written to a file and opened as a flat
// index (read and mapped), as an IVF-PQ index and as an HNSW index (read and mapped); whatever
// opens is searched (filtered too, when the file held attributes) and written to. Only
// ebrix::Error may come out; AddressSanitizer reports any out-of-bounds access.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "../../attributes.h"
#include "../../error.h"
#include "../../filter.h"
#include "../../flat.h"
#include "../../hnsw.h"
#include "../../ivfpq.h"
#include "../../simd/dispatch.h"

namespace {

const std::string& scratchPath() {
  static const std::string path = "/tmp/ebrix-fuzz-" + std::to_string(::getpid()) + ".ebrix";
  return path;
}

template <typename Index, typename Params>
void exercise(Index& index, size_t dim, const Params& params) {
  if (dim == 0 || dim > 4096) return;
  std::vector<float> q(dim, 0.25f);
  index.search(q.data(), 1, params);
  const uint64_t id = 0x7FFFFFFFFFFFFFF0ull;
  index.add(&id, q.data(), 1);
}

// A filter over every column of a table read from the input: each one is compiled.
void filterAll(const std::shared_ptr<ebrix::AttributeTable>& table) {
  using namespace ebrix;
  if (!table) return;
  for (const AttributeSpec& spec : table->schema()) compileFilter(*table, FilterNode::exists(spec.name));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratchPath();
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  using namespace ebrix;
  for (bool map : {false, true}) {
    try {
      FlatIndex::Opened opened = FlatIndex::open(path, map, false, simd::Level::Scalar, 1);
      filterAll(opened.attributes);
      const size_t dim = opened.index->dim();
      if (dim <= 4096) {
        std::vector<float> q(dim, 0.25f);
        opened.index->search(q.data(), 1, 3);
        const uint64_t id = 0x7FFFFFFFFFFFFFF0ull;
        opened.index->add(&id, q.data(), 1);
      }
    } catch (const Error&) {
    } catch (const std::bad_alloc&) {  // a header asking for more memory than there is (bounded by the file size)
    }
  }
  try {
    IvfPqIndex::Opened opened = IvfPqIndex::open(path, simd::Level::Scalar, 1);
    filterAll(opened.attributes);
    IvfPqSearchParams sp;
    sp.k = 3;
    sp.nprobe = 4;
    exercise(*opened.index, opened.index->params().dim, sp);
  } catch (const Error&) {
  } catch (const std::bad_alloc&) {
  }
  for (bool map : {false, true}) {
    try {
      HnswIndex::Opened opened = HnswIndex::open(path, map, false, simd::Level::Scalar, 1);
      filterAll(opened.attributes);
      HnswIndex& index = *opened.index;
      const size_t dim = index.dim();
      if (dim <= 4096) {
        std::vector<float> q(dim, 0.25f);
        HnswSearchParams sp;
        sp.k = 3;
        sp.threads = 1;
        index.search(q.data(), 1, sp);
        sp.filterStrategy = HnswFilter::Scan;
        const uint32_t odd = 0xAAAAAAAAu;
        sp.allowBits = &odd;
        sp.allowWords = 1;
        index.search(q.data(), 1, sp);
        const uint64_t id = 0x7FFFFFFFFFFFFFF0ull;
        index.add(&id, q.data(), 1, {}, 1);  // a mapped index copies itself into memory here
        index.remove(&id, 1);
        index.compact(1);
        sp.allowBits = nullptr;
        sp.filterStrategy = HnswFilter::Auto;
        index.search(q.data(), 1, sp);
      }
    } catch (const Error&) {
    } catch (const std::bad_alloc&) {
    }
  }
  return 0;
}
