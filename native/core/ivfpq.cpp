#include "ivfpq.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_set>

#include "attributes_file.h"
#include "error.h"
#include "flat.h"  // requireFinite, requireNewIds, requireF16Range
#include "index_file.h"
#include "kmeans.h"
#include "prefetch.h"
#include "row_bits.h"
#include "simd/dispatch.h"
#include "sq.h"
#include "thread_pool.h"
#include "topk.h"

namespace ebrix {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// The largest row count an index holds (rows are addressed with 32 bits, as FlatIndex).
constexpr size_t kMaxRows = 0xFFFFFFFFu;
// Codes scored per scan step: the score buffer stays in L1.
constexpr size_t kScanStep = 1024;
static_assert(kScanStep % kFastScanBlock == 0, "scan steps hold whole fast-scan blocks");
// Bytes of per-thread collectors one query chunk may hold (as exact_search.cpp).
constexpr size_t kCollectorBudget = size_t{128} << 20;

// The allow bitset of a search, as exact_search.cpp reads it.
struct AllowBits {
  const uint32_t* words = nullptr;  // null: every row
  size_t count = 0;
  bool row(size_t r) const { return words == nullptr || (r / 32 < count && (words[r / 32] >> (r % 32) & 1u)); }
};

std::string str(size_t v) { return std::to_string(v); }

// Reserves room for n elements, growing geometrically: exact reserves would reallocate (and
// copy) a list on every small add.
template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.capacity() < n) v.reserve(std::max(n, v.capacity() + v.capacity() / 2));
}

}  // namespace

// One inverted list. 8-bit lists keep plain codes and are scanned on them; 4-bit lists keep
// only the packed fast-scan blocks (m / 2 bytes a vector), are scanned on them, and their
// shortlisted candidates' codes are read back from the blocks for the exact float ADC.
struct IvfPqList {
  std::vector<uint64_t> ids;
  std::vector<uint32_t> rows;   // add order, for allow bitsets and refine vectors
  std::vector<uint8_t> codes;   // 8-bit only: rows.size() × codeBytes
  std::vector<uint8_t> packed;  // 4-bit only: fastScanBytes(rows.size(), m), the only copy
  // l2 only: each entry's query-independent score term (IvfPqIndex::Impl::codeTerms), so that
  // one ADC table per query serves every list, as for ip.
  std::vector<float> terms;
  size_t size() const { return rows.size(); }
};

// Concurrency: `mutex` is a reader-writer lock over everything a search reads (the trained
// state, the lists, the refine vectors, the live bitset, the counts). Searches hold it shared
// for their whole run; train and add hold it exclusively only to publish: add validates,
// assigns and encodes under `writeMutex` alone (the quantizers are immutable once trained),
// then grows and appends to the lists under the exclusive lock. So a search never sees
// half-added data, and waits at most for the copies of an add, not for its encoding (nor for
// a training).
//
// Tombstones live under the same lock, flipped in place: remove() and upsert() clear bits of
// `liveBits` while holding it exclusively. FlatIndex copies its bitset on write instead
// (flat.h) because its searches take no lock at all; here every search already holds the
// shared lock for its whole run, so a copy would buy nothing: the writer waits for the searches
// in flight either way, as an add's publish does, and a search sees the tombstones and the
// lists of one state. compact() builds the new lists under writeMutex alone (searches keep
// reading the old ones) and swaps them in under the exclusive lock.
struct IvfPqIndex::Impl {
  Impl(const IvfPqParams& params, simd::Level level, unsigned threads)
      : p(params),
        kernels(&simd::kernelsFor(level)),
        threadsOption(threads),
        pq(params.dim, params.m, params.nbits) {}

  const IvfPqParams p;
  const simd::Kernels* kernels;
  const unsigned threadsOption;  // as given: 0 follows the pool
  unsigned threads() const { return ThreadPool::shared().resolve(threadsOption); }

  mutable std::shared_mutex mutex;
  std::mutex writeMutex;  // serialises writers (train, add, upsert, remove, compact)

  bool trained = false;
  std::vector<float> centroids;         // nlist × dim (unit norm for ip / cosine)
  std::vector<float> centroidBias;      // nlist: -0.5|c|^2 (l2 coarse search)
  std::vector<uint64_t> centroidIds;    // 0 .. nlist-1, the coarse "ids"
  std::vector<float> rotatedCentroids;  // nlist × dim: R·c (c without opq)
  // l2: the mean of the rotated centroids, s below; empty for ip / cosine.
  std::vector<float> shift;
  ProductQuantizer pq;

  std::vector<IvfPqList> lists;
  std::vector<float> refineF32;     // slots × dim, by slot (== row until a compaction)
  std::vector<uint16_t> refineF16;  // slots × dim, f16 bit patterns
  // The refine slot of each row once a compaction dropped slots (kNoSlot for a dropped row);
  // empty while slot == row.
  std::vector<uint32_t> refineSlots;
  // id -> row of the live vectors; changed under the exclusive lock (and writeMutex).
  std::unordered_map<uint64_t, uint32_t> rowOfId;
  size_t count = 0;      // rows numbered (adds and upserts over the life of the index)
  size_t liveCount = 0;  // rows not removed
  size_t tombstones = 0; // list entries of removed rows, until a compaction drops them
  // Bit r set when row r is live, over [0, count); empty until the first remove or replacing
  // upsert. Searches AND it in while list entries are tombstones, and into any bitset they get.
  std::vector<uint32_t> liveBits;

  // Where each row's code is, (list << 32 | position in the list), for a filtered search that
  // scores allowed rows directly; kNoLocation for a row a compaction dropped. Changed with the
  // lists.
  std::vector<uint64_t> locationOfRow;
  static constexpr uint64_t kNoLocation = ~uint64_t{0};
  void locateRows() {
    locationOfRow.assign(count, kNoLocation);
    for (size_t l = 0; l < lists.size(); ++l) {
      for (size_t i = 0; i < lists[l].size(); ++i) locationOfRow[lists[l].rows[i]] = uint64_t{l} << 32 | i;
    }
  }

  static constexpr uint32_t kNoSlot = 0xFFFFFFFFu;
  uint32_t refineSlot(uint32_t row) const { return refineSlots.empty() ? row : refineSlots[row]; }
  void updateIdMapBytes() {
    idMapBytes.store(rowOfId.size() * (sizeof(uint64_t) + sizeof(uint32_t) + 2 * sizeof(void*)) +
                         rowOfId.bucket_count() * sizeof(void*) + liveBits.capacity() * sizeof(uint32_t),
                     std::memory_order_relaxed);
  }

  size_t codeBytes() const { return pq.codeBytes(); }
  size_t blockBytes() const { return fastScanBytes(kFastScanBlock, p.m); }

  std::atomic<size_t> idMapBytes{0};  // estimated; an atomic so memory() never races an add

  // The `k` best lists of each of n (prepared) vectors: by inner product with the (unit)
  // centroids for ip / cosine, by L2 distance for l2. Scores are exact (q·c or -|q - c|^2).
  SearchOutput nearestLists(const float* vectors, size_t n, size_t k, unsigned nthreads) const {
    return nearestOf(centroids, centroidBias, centroidIds, vectors, n, k, nthreads);
  }

  // The coarse sketch: the centroids as 8-bit scalar-quantizer codes (one byte per value, the
  // quantizer's ranges those of the centroids themselves), built when the float centroids
  // (nlist × dim × 4 bytes) pass kCoarseSketchMinBytes. A single query's coarse search then
  // reads a quarter of the bytes: past a few hundred KiB the float scan streams from L3 or
  // memory and can cost more than scanning the lists it picks (200,000 × 768 with 1,024
  // lists, 3 MiB of centroids: 87 → 69 µs a query at nprobe 1; at 2,048 × 128 no change,
  // the float scan being compute-bound there like the byte scan). The query is rounded to
  // ±kSmallQueryLimit, which lets AVX2 multiply the bytes directly: 200,000 × 128 with 2,048
  // lists (a 256 KiB sketch, held in L2), nprobe 8: about 41 → 39 µs a query; at 768-d with
  // 1,024 lists the scan streams its 768 KiB from L3, where what helped instead was the AVX2
  // scan's prefetch of the rows ahead (7-10% more queries a second).
  static constexpr size_t kCoarseSketchMinBytes = size_t{256} << 10;
  ScalarQuantizer centroidSq;
  std::vector<uint8_t> centroidCodes;  // nlist × dim; empty: no sketch
  void buildCoarseSketch() {
    centroidCodes.clear();
    if (p.nlist * p.dim * sizeof(float) < kCoarseSketchMinBytes) return;
    centroidSq = ScalarQuantizer::train(centroids.data(), p.nlist, p.dim);
    centroidCodes.resize(p.nlist * p.dim);
    for (size_t c = 0; c < p.nlist; ++c) centroidSq.encode(centroids.data() + c * p.dim, centroidCodes.data() + c * p.dim);
  }
  // Lists the sketch shortlists for a coarse search of k lists, all re-scored on the float
  // centroids: k doubled plus 32 leaves room for the sketch's ranking error (the query's
  // rounding to bytes and the codes' half step), so the k best of the shortlist are the k
  // best of all in all but near ties (test ivfpq.coarse_sketch_picks_the_exact_lists).
  static size_t sketchShortlist(size_t k) { return 2 * k + 32; }

  // The coarse search of a few queries, on the calling thread: the same lists as nearestLists.
  // Small centroid sets stay in cache, where scoring four of them at a time (scanRowsCached)
  // beats the streaming scan's one dot product after another; large ones go through the
  // sketch. Scores are exact: q·c for ip / cosine (the list constant), and for l2 the
  // ranking score q·c - |c|^2/2.
  SearchOutput nearestListsFew(const float* vectors, size_t n, size_t k) const {
    SearchOutput out;
    out.queries = n;
    out.k = k;
    out.ids.assign(n * k, kNoId);
    out.scores.assign(n * k, -std::numeric_limits<float>::infinity());
    std::vector<float> scores(p.nlist), scratch;
    std::vector<Candidate> best, shortlist;
    TopKHeap collector;
    const float* bias = p.metric == Metric::L2 ? centroidBias.data() : nullptr;
    const bool sketch = !centroidCodes.empty() && sketchShortlist(k) < p.nlist;
    std::vector<int8_t> bytes(sketch ? p.dim : 0);
    const auto collect = [&](size_t keep, auto&& candidates) {
      collector.reset(keep);
      float threshold = collector.threshold();
      candidates([&](float score, size_t l) {
        if (score >= threshold) {
          collector.offer(score, static_cast<uint32_t>(l), l);
          threshold = collector.threshold();
        }
      });
      best.clear();
      collector.drainInto(best);
    };
    // The `keep` best of the nlist scores, in no order. The keep-th best maximum of blocks of
    // 16 scores is a floor under the keep-th best score (keep blocks reach it), so only the
    // scores at or above it go to the heap: about a block's worth per kept list instead of a
    // few hundred admitted one by one while the heap fills and tightens (2,048 lists, keep 40:
    // the heap over every score cost as much as the scan; nth_element over a copy of all the
    // scores cost more). A NaN block maximum (an overflowed score) counts as -inf.
    constexpr size_t kBlock = 16;
    const size_t blocks = (p.nlist + kBlock - 1) / kBlock;
    const auto bestOfAll = [&](size_t keep) {
      float floor = kNegInf;
      if (keep < blocks) {
        scratch.resize(blocks);
        for (size_t b = 0; b < blocks; ++b) {
          float m = kNegInf;
          const size_t end = std::min(p.nlist, (b + 1) * kBlock);
          for (size_t l = b * kBlock; l < end; ++l) m = scores[l] > m ? scores[l] : m;
          scratch[b] = m;
        }
        std::nth_element(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(keep - 1), scratch.end(),
                         std::greater<float>());
        floor = scratch[keep - 1];
      }
      collect(keep, [&](auto&& offer) {
        for (size_t l = 0; l < p.nlist; ++l) {
          if (scores[l] >= floor) offer(scores[l], l);
        }
      });
    };
    for (size_t i = 0; i < n; ++i) {
      const float* q = vectors + i * p.dim;
      if (sketch) {
        const I8Query prepared = centroidSq.prepareQuery(q, bytes.data(), simd::kSmallQueryLimit);
        kernels->i8.scanRowsSmallQuery(bytes.data(), centroidCodes.data(), p.nlist, p.dim, prepared.scale,
                                       prepared.offset, bias, scores.data());
        bestOfAll(sketchShortlist(k));
        shortlist.swap(best);
        collect(k, [&](auto&& offer) {
          for (const Candidate& c : shortlist) {
            const size_t l = c.id;
            offer(kernels->dot(q, centroids.data() + l * p.dim, p.dim) + (bias ? bias[l] : 0.0f), l);
          }
        });
      } else {
        simd::scanRowsCachedOr(*kernels)(q, centroids.data(), p.nlist, p.dim, bias, scores.data());
        bestOfAll(k);
      }
      selectBest(best, k);  // sorted best first
      for (size_t j = 0; j < best.size(); ++j) {
        out.ids[i * k + j] = best[j].id;
        out.scores[i * k + j] = best[j].score;
      }
    }
    return out;
  }
  SearchOutput nearestOf(const std::vector<float>& cents, const std::vector<float>& bias,
                         const std::vector<uint64_t>& ids, const float* vectors, size_t n, size_t k,
                         unsigned nthreads) const {
    RowSet rows;
    rows.vectors = cents.data();
    rows.ids = ids.data();
    rows.l2Bias = bias.data();
    rows.count = p.nlist;
    rows.dim = p.dim;
    SearchParams params;
    params.k = k;
    params.metric = p.metric == Metric::L2 ? Metric::L2 : Metric::InnerProduct;
    params.threads = nthreads;
    return exactSearch(rows, vectors, n, params, *kernels, ThreadPool::shared());
  }

  // Cosine normalises; other metrics use the input as is.
  const float* prepare(const float* vectors, size_t n, std::vector<float>& scratch) const {
    if (p.metric != Metric::Cosine) return vectors;
    scratch.resize(n * p.dim);
    normalizeRows(vectors, scratch.data(), n, p.dim);
    return scratch.data();
  }

  // l2 scores without a table per list. In the rotated space, with c the list's centroid, r̂
  // the decoded residual and s any fixed vector:
  //   -|q - c - r̂|^2 = -|q - c|^2 + 2 (q - s)·r̂ + [-|r̂|^2 - 2 (c - s)·r̂]
  // The first term is the probe's coarse distance, the second the ADC table of 2 (q - s) (the
  // ip table of one vector, shared by every list), the bracket a float per entry computed at
  // add (these terms). s, the mean centroid, keeps q - s about as short as q - c: the table's
  // range (and so the 8-bit fast-scan table's resolution) does not grow with the data's offset
  // from the origin.
  void codeTerms(size_t list, const uint8_t* codes, size_t n, float* out) const {
    const size_t ks = pq.ksub(), ds = p.dim / p.m, cb = codeBytes();
    const float* books = pq.centroids().data();
    const float* rc = rotatedCentroids.data() + list * p.dim;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* code = codes + i * cb;
      double t = 0.0;
      for (size_t j = 0; j < p.m; ++j) {
        const size_t c = p.nbits == 8 ? code[j] : (code[j >> 1] >> ((j & 1) * 4)) & 0x0F;
        const float* r = books + (j * ks + c) * ds;
        for (size_t d = 0; d < ds; ++d) {
          const size_t at = j * ds + d;
          t += static_cast<double>(r[d]) * (static_cast<double>(r[d]) + 2.0 * (static_cast<double>(rc[at]) - shift[at]));
        }
      }
      out[i] = static_cast<float>(-t);
    }
  }
  static std::vector<float> meanRow(const std::vector<float>& rows, size_t count, size_t dim) {
    std::vector<double> sum(dim, 0.0);
    for (size_t r = 0; r < count; ++r)
      for (size_t d = 0; d < dim; ++d) sum[d] += rows[r * dim + d];
    std::vector<float> mean(dim);
    for (size_t d = 0; d < dim; ++d) mean[d] = static_cast<float>(sum[d] / static_cast<double>(count));
    return mean;
  }
  // The terms of every entry of every list (after an open).
  void computeAllTerms() {
    std::vector<uint8_t> plain;
    for (size_t l = 0; l < lists.size(); ++l) {
      IvfPqList& list = lists[l];
      list.terms.resize(list.size());
      if (list.size() == 0) continue;
      const uint8_t* codes = list.codes.data();
      if (p.nbits == 4) {
        plain.resize(list.size() * codeBytes());
        unpackFastScan(list.packed.data(), 0, list.size(), p.m, plain.data());
        codes = plain.data();
      }
      codeTerms(l, codes, list.size(), list.terms.data());
    }
  }

  // Residuals x - c(list) of n prepared vectors, rotated for the PQ.
  std::vector<float> rotatedResiduals(const float* vectors, size_t n, const SearchOutput& assigned) const {
    const size_t dim = p.dim;
    std::vector<float> residuals(n * dim);
    for (size_t i = 0; i < n; ++i) {
      const float* c = centroids.data() + assigned.ids[i] * dim;
      const float* x = vectors + i * dim;
      float* r = residuals.data() + i * dim;
      for (size_t d = 0; d < dim; ++d) r[d] = x[d] - c[d];
    }
    if (!pq.rotated()) return residuals;
    std::vector<float> rotated(n * dim);
    pq.rotate(residuals.data(), n, rotated.data());
    return rotated;
  }

  // The 4-bit shortlist of one query: each candidate carries an approximate score and (list <<
  // 32 | position in the list) as its id. Replaces both by the exact float-ADC score (the
  // query's table, the probe's list constant `bias` of probe slot j, and the entry's l2 term)
  // and the real id.
  void rescoreShortlist(const float* table, const uint64_t* probeIds, const float* probeBias, size_t nprobe,
                        std::vector<Candidate>& best) const {
    std::vector<uint8_t> code(codeBytes());
    for (Candidate& c : best) {
      const uint64_t l = c.id >> 32;
      const size_t position = static_cast<size_t>(c.id & 0xFFFFFFFFu);
      float bias = 0.0f;
      for (size_t j = 0; j < nprobe; ++j) {
        if (probeIds[j] == l) bias = probeBias[j];
      }
      const IvfPqList& list = lists[l];
      if (!list.terms.empty()) bias += list.terms[position];
      unpackFastScan(list.packed.data(), position, 1, p.m, code.data());
      pq.scan(table, code.data(), 1, bias, &c.score);
      c.id = list.ids[position];
    }
  }

  // Starts loading a refine vector into the cache, every line of it: the refine reads one
  // vector per candidate at a random place, so each waits on memory (on 200,000 x 768 f16,
  // about 290 ns a vector; with the next vectors' lines requested while one is scored, about 200).
  void prefetchRefine(uint32_t row) const {
    const size_t slot = refineSlot(row);
    const char* x = p.refine == RefineStorage::F32 ? reinterpret_cast<const char*>(refineF32.data() + slot * p.dim)
                                                   : reinterpret_cast<const char*>(refineF16.data() + slot * p.dim);
    prefetchBytes(x, p.dim * (p.refine == RefineStorage::F32 ? sizeof(float) : sizeof(uint16_t)));
  }

  // Exact scores of `best` on their refine vectors, loading a few vectors ahead of the one scored.
  void refineAll(const float* query, std::vector<Candidate>& best) const {
    constexpr size_t kAhead = 4;
    for (size_t i = 0; i < std::min(kAhead, best.size()); ++i) prefetchRefine(best[i].row);
    for (size_t i = 0; i < best.size(); ++i) {
      if (i + kAhead < best.size()) prefetchRefine(best[i + kAhead].row);
      Candidate& c = best[i];
      c.score = refineScore(query, c.row);
      if (std::isnan(c.score)) c.score = kNegInf;
    }
  }

  float refineScore(const float* query, uint32_t row) const {
    const size_t dim = p.dim;
    const size_t slot = refineSlot(row);
    if (p.refine == RefineStorage::F32) {
      const float* x = refineF32.data() + slot * dim;
      return p.metric == Metric::L2 ? -kernels->l2sq(query, x, dim) : kernels->dot(query, x, dim);
    }
    const uint16_t* x = refineF16.data() + slot * dim;
    return p.metric == Metric::L2 ? -kernels->f16.l2sq(query, x, dim) : kernels->f16.dot(query, x, dim);
  }

  SearchOutput search(const float* queries, size_t queryCount, const IvfPqSearchParams& sp) const;

  // How a filtered search finds its rows (IvfPqFilter): scan the allowed rows, or probe
  // `nprobe` lists; `allowed` is the number of live rows the bitset allows.
  struct FilterPlan {
    size_t allowed = 0;
    bool scan = false;
    size_t nprobe = 0;
  };
  FilterPlan filteredPlan(const uint32_t* bits, size_t words, size_t nprobe, IvfPqFilter strategy) const;

  // The Scan strategy: scores every allowed row (exactly on its refine vector, or its code with
  // the query's ADC table) and writes each query's top-k into `out`. Shared lock held.
  void scanAllowed(const float* prepared, size_t queryCount, size_t k, unsigned nthreads, const uint32_t* bits,
                   size_t words, SearchOutput& out) const;

  // prepareAdd, and for an upsert with held ids allowed (their rows are recorded to replace).
  std::unique_ptr<PendingAdd> prepare(const uint64_t* ids, const float* vectors, size_t count, bool upsert);
};

IvfPqIndex::IvfPqIndex(const IvfPqParams& params, simd::Level level, unsigned threads) {
  if (params.dim == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for dim but received 0");
  if (params.nlist == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for nlist but received 0");
  if (params.nlist > kMaxRows) throw Error(ErrorCode::InvalidArgument, "Expected nlist below 2^32 but received " + str(params.nlist));
  if (params.m == 0 || params.dim % params.m != 0) {
    throw Error(ErrorCode::InvalidArgument, "Expected m dividing dim " + str(params.dim) + " but received " + str(params.m));
  }
  if (params.nbits != 4 && params.nbits != 8) {
    throw Error(ErrorCode::InvalidArgument, "Expected 4 or 8 for nbits but received " + str(params.nbits));
  }
  impl_ = std::make_unique<Impl>(params, level, threads);
}

IvfPqIndex::~IvfPqIndex() = default;

const IvfPqParams& IvfPqIndex::params() const { return impl_->p; }
unsigned IvfPqIndex::threads() const { return impl_->threads(); }

bool IvfPqIndex::trained() const {
  std::shared_lock<std::shared_mutex> lock(impl_->mutex);
  return impl_->trained;
}

size_t IvfPqIndex::size() const {
  std::shared_lock<std::shared_mutex> lock(impl_->mutex);
  return impl_->liveCount;
}

void IvfPqIndex::train(const float* vectors, size_t n, const IvfPqTrainParams& tp) {
  Impl& s = *impl_;
  const IvfPqParams& p = s.p;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  if (s.trained) throw Error(ErrorCode::InvalidArgument, "The index is already trained");
  const size_t minimum = std::max(p.nlist, s.pq.ksub());
  if (n < minimum) {
    throw Error(ErrorCode::InvalidArgument, "Expected at least max(nlist, 2^nbits) = " + str(minimum) +
                                                " training vectors but received " + str(n));
  }
  requireFinite(vectors, n, p.dim, "training vectors");
  const unsigned nthreads = ThreadPool::shared().resolve(tp.threads == 0 ? s.threadsOption : tp.threads);
  auto report = [&](double fraction) {
    if (tp.progress) tp.progress(std::clamp(fraction, 0.0, 1.0));
  };
  report(0.0);

  std::vector<float> scratch;
  const float* data = s.prepare(vectors, n, scratch);

  // Coarse quantizer: spherical k-means for ip / cosine (unit centroids, assignment by inner
  // product, which for unit centroids is also the nearest in L2), plain k-means for l2.
  KMeansParams km;
  km.k = p.nlist;
  km.maxIterations = tp.maxIterations;
  km.seed = tp.seed;
  km.metric = p.metric == Metric::L2 ? Metric::L2 : Metric::InnerProduct;
  km.threads = nthreads;
  KMeansResult coarse = kmeans(data, n, p.dim, km, *s.kernels, ThreadPool::shared());
  report(0.3);

  // Staged in locals and published at the end: a failed train leaves the index untrained.
  std::vector<float> bias(p.nlist);
  std::vector<uint64_t> ids(p.nlist);
  for (size_t c = 0; c < p.nlist; ++c) {
    double sq = 0.0;
    for (size_t d = 0; d < p.dim; ++d) sq += static_cast<double>(coarse.centroids[c * p.dim + d]) * coarse.centroids[c * p.dim + d];
    bias[c] = static_cast<float>(-0.5 * sq);
    ids[c] = c;
  }
  // The PQ trains on a local quantizer, so searches and memory() never see a half-trained one.
  ProductQuantizer pq(p.dim, p.m, p.nbits);
  const std::vector<float>& cents = coarse.centroids;
  {
    const SearchOutput assigned = s.nearestOf(cents, bias, ids, data, n, 1, nthreads);
    // Residuals before rotation: the PQ learns its rotation (opq) on them.
    std::vector<float> residuals(n * p.dim);
    for (size_t i = 0; i < n; ++i) {
      const float* c = cents.data() + assigned.ids[i] * p.dim;
      for (size_t d = 0; d < p.dim; ++d) residuals[i * p.dim + d] = data[i * p.dim + d] - c[d];
    }
    report(0.35);
    PqTrainParams pqp;
    pqp.seed = tp.seed + 0x9E3779B97F4A7C15ull;  // a stream apart from the coarse k-means
    pqp.maxIterations = tp.maxIterations;
    pqp.opq = p.opq;
    pqp.threads = nthreads;
    pqp.progress = [&](double f) { report(0.35 + 0.6 * std::clamp(f, 0.0, 1.0)); };
    pq.train(residuals.data(), n, pqp, *s.kernels, ThreadPool::shared());
  }
  std::vector<float> rotated(cents.size());
  if (pq.rotated()) {
    pq.rotate(cents.data(), p.nlist, rotated.data());
  } else {
    rotated = cents;
  }
  std::vector<float> shift = p.metric == Metric::L2 ? Impl::meanRow(rotated, p.nlist, p.dim) : std::vector<float>{};
  std::vector<IvfPqList> lists(p.nlist);
  {
    std::unique_lock<std::shared_mutex> lock(s.mutex);
    s.centroids = std::move(coarse.centroids);
    s.centroidBias = std::move(bias);
    s.centroidIds = std::move(ids);
    s.rotatedCentroids = std::move(rotated);
    s.shift = std::move(shift);
    s.pq = std::move(pq);
    s.lists = std::move(lists);
    s.buildCoarseSketch();
    s.trained = true;
  }
  report(1.0);
}

struct IvfPqIndex::PendingAdd::State {
  std::unique_lock<std::mutex> writeLock;
  std::vector<uint64_t> ids;
  // An upsert: the rows its held ids had (tombstoned at commit), and their ids.
  std::vector<std::pair<uint64_t, uint32_t>> replaced;
  const float* data = nullptr;  // prepared vectors: the caller's, or `normalised`
  std::vector<float> normalised;
  size_t oldCount = 0;
  std::vector<uint32_t> lists;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> halves;  // f16 refine vectors
};

IvfPqIndex::PendingAdd::PendingAdd(std::unique_ptr<State> state) : state_(std::move(state)) {}
IvfPqIndex::PendingAdd::~PendingAdd() = default;
size_t IvfPqIndex::PendingAdd::firstRow() const { return state_->oldCount; }
size_t IvfPqIndex::PendingAdd::count() const { return state_->ids.size(); }
const uint64_t* IvfPqIndex::PendingAdd::ids() const { return state_->ids.data(); }
const uint32_t* IvfPqIndex::PendingAdd::lists() const { return state_->lists.data(); }
const uint8_t* IvfPqIndex::PendingAdd::codes() const { return state_->codes.data(); }
const float* IvfPqIndex::PendingAdd::prepared() const { return state_->data; }
std::vector<uint32_t> IvfPqIndex::PendingAdd::replacedRows() const {
  std::vector<uint32_t> rows;
  rows.reserve(state_->replaced.size());
  for (const auto& [id, row] : state_->replaced) rows.push_back(row);
  return rows;
}

void IvfPqIndex::add(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook) {
  std::unique_ptr<PendingAdd> pending = prepareAdd(ids, vectors, count);
  commitAdd(*pending, hook);
}

void IvfPqIndex::upsert(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook) {
  std::unique_ptr<PendingAdd> pending = impl_->prepare(ids, vectors, count, true);
  commitAdd(*pending, hook);
}

std::unique_ptr<IvfPqIndex::PendingAdd> IvfPqIndex::prepareAdd(const uint64_t* ids, const float* vectors,
                                                               size_t count) {
  return impl_->prepare(ids, vectors, count, false);
}

std::unique_ptr<IvfPqIndex::PendingAdd> IvfPqIndex::prepareUpsert(const uint64_t* ids, const float* vectors,
                                                                  size_t count) {
  return impl_->prepare(ids, vectors, count, true);
}

std::unique_ptr<IvfPqIndex::PendingAdd> IvfPqIndex::Impl::prepare(const uint64_t* ids, const float* vectors,
                                                                  size_t count, bool upsert) {
  Impl& s = *this;
  auto st = std::make_unique<PendingAdd::State>();
  st->writeLock = std::unique_lock<std::mutex>(s.writeMutex);
  if (!s.trained) throw Error(ErrorCode::NotTrained, "The index must be trained before vectors are added");
  st->oldCount = s.count;
  if (count == 0) return std::make_unique<PendingAdd>(std::move(st));

  // Validate everything before touching the index.
  requireFinite(vectors, count, p.dim, "vectors");
  if (p.refine == RefineStorage::F16 && p.metric != Metric::Cosine) requireF16Range(vectors, count, p.dim, "vectors");
  if (upsert) {
    requireDistinctIds(ids, count);
    for (size_t i = 0; i < count; ++i) {
      const auto it = s.rowOfId.find(ids[i]);
      if (it != s.rowOfId.end()) st->replaced.emplace_back(ids[i], it->second);
    }
  } else {
    requireNewIds(ids, count, s.rowOfId);
  }
  if (s.count + count > kMaxRows) {
    throw Error(ErrorCode::InvalidArgument,
                "An IVF-PQ index numbers at most " + str(kMaxRows) + " rows over its life (adds and upserts)");
  }

  // Assign and encode without blocking searches: only this thread changes the index.
  st->ids.assign(ids, ids + count);
  st->data = s.prepare(vectors, count, st->normalised);
  const SearchOutput assigned = s.nearestLists(st->data, count, 1, s.threads());
  st->lists.resize(count);
  for (size_t i = 0; i < count; ++i) st->lists[i] = static_cast<uint32_t>(assigned.ids[i]);
  const std::vector<float> residuals = s.rotatedResiduals(st->data, count, assigned);
  st->codes.resize(count * s.codeBytes());
  s.pq.encode(residuals.data(), count, st->codes.data(), ThreadPool::shared());
  if (p.refine == RefineStorage::F16) {
    st->halves.resize(count * p.dim);
    s.kernels->f16.fromFloat(st->data, st->halves.data(), count * p.dim);
  }
  return std::make_unique<PendingAdd>(std::move(st));
}

void IvfPqIndex::commitAdd(PendingAdd& pending, const WriteHook& hook) {
  Impl& s = *impl_;
  const IvfPqParams& p = s.p;
  PendingAdd::State& st = *pending.state_;
  if (!st.writeLock.owns_lock() || st.writeLock.mutex() != &s.writeMutex) {
    throw Error(ErrorCode::InvalidArgument, "The pending add is not one of this index's, or was committed already");
  }
  const size_t count = st.ids.size();
  const uint64_t* ids = st.ids.data();
  const float* data = st.data;
  const uint8_t* codes = st.codes.data();
  const size_t oldCount = st.oldCount;
  const size_t newCount = oldCount + count;
  const size_t cb = s.codeBytes();
  if (count == 0) {
    st.writeLock.unlock();
    return;
  }

  std::vector<size_t> perList(p.nlist, 0);
  for (size_t i = 0; i < count; ++i) ++perList[st.lists[i]];
  // 4-bit lists keep only the packed layout: each touched list is re-packed from its last
  // partial block on, whose codes are read back into `repack` ahead of this add's codes.
  std::vector<size_t> newStart(p.nlist + 1, 0);
  std::vector<uint8_t> byList, repack;
  if (p.nbits == 4) {
    for (size_t l = 0; l < p.nlist; ++l) newStart[l + 1] = newStart[l] + perList[l];
    byList.resize(count * cb);
    std::vector<size_t> fill(newStart.begin(), newStart.end() - 1);
    for (size_t i = 0; i < count; ++i) {
      std::memcpy(byList.data() + fill[st.lists[i]]++ * cb, codes + i * cb, cb);
    }
    repack.resize((kFastScanBlock + *std::max_element(perList.begin(), perList.end())) * cb);
  }

  // l2: each entry's score term (codeTerms), from the trained state, which adds do not change.
  const bool l2 = p.metric == Metric::L2;
  std::vector<float> terms(l2 ? count : 0);
  for (size_t i = 0; i < terms.size(); ++i) s.codeTerms(st.lists[i], codes + i * cb, 1, &terms[i]);

  // From here on searches wait: growing a list moves its storage. Everything is reserved
  // first, so that the appends below cannot fail half-way.
  std::unique_lock<std::shared_mutex> lock(s.mutex);
  try {
    s.rowOfId.reserve(newCount);
    for (size_t l = 0; l < p.nlist; ++l) {
      if (perList[l] == 0) continue;
      IvfPqList& list = s.lists[l];
      const size_t n = list.size() + perList[l];
      grow(list.ids, n);
      grow(list.rows, n);
      if (l2) grow(list.terms, n);
      if (p.nbits == 4) {
        grow(list.packed, fastScanBytes(n, p.m));
      } else {
        grow(list.codes, n * cb);
      }
    }
    if (p.refine == RefineStorage::F32) grow(s.refineF32, newCount * p.dim);
    if (p.refine == RefineStorage::F16) grow(s.refineF16, newCount * p.dim);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory growing the index to " + str(newCount) + " vectors");
  }
  const auto restoreMap = [&] {
    for (size_t i = 0; i < count; ++i) s.rowOfId.erase(ids[i]);
    for (const auto& [id, row] : st.replaced) s.rowOfId.emplace(id, row);
  };
  try {
    if (!st.replaced.empty() || !s.liveBits.empty()) s.liveBits.reserve(bitWords(newCount));
    if (!s.refineSlots.empty()) grow(s.refineSlots, newCount);
    grow(s.locationOfRow, newCount);
    for (size_t i = 0; i < count; ++i) s.rowOfId.insert_or_assign(ids[i], static_cast<uint32_t>(oldCount + i));
  } catch (const std::bad_alloc&) {
    restoreMap();
    throw Error(ErrorCode::OutOfMemory, "Out of memory indexing the ids of " + str(count) + " vectors");
  }
  // The records go in before the rows: a search (holding the shared lock, so not now) that
  // sees the rows finds their records.
  if (hook) {
    try {
      hook(oldCount);
    } catch (...) {
      restoreMap();
      throw;
    }
  }
  // Nothing below allocates: every vector was reserved above.
  if (!st.replaced.empty() && s.liveBits.empty()) {
    s.liveBits.assign(bitWords(oldCount), ~0u);
    if (oldCount % 32 != 0) s.liveBits.back() = (1u << (oldCount % 32)) - 1u;
  }
  if (!s.liveBits.empty()) {
    extendSet(s.liveBits, oldCount, newCount);
    for (const auto& [id, row] : st.replaced) clearBit(s.liveBits, row);
  }
  s.tombstones += st.replaced.size();
  s.liveCount += count - st.replaced.size();

  std::vector<size_t> oldSizes(p.nlist);
  for (size_t l = 0; l < p.nlist; ++l) oldSizes[l] = s.lists[l].size();
  for (size_t i = 0; i < count; ++i) {
    IvfPqList& list = s.lists[st.lists[i]];
    s.locationOfRow.push_back(uint64_t{st.lists[i]} << 32 | list.size());  // reserved above
    list.ids.push_back(ids[i]);
    list.rows.push_back(static_cast<uint32_t>(oldCount + i));
    if (l2) list.terms.push_back(terms[i]);
    if (p.nbits == 8) list.codes.insert(list.codes.end(), codes + i * cb, codes + (i + 1) * cb);
  }
  if (p.nbits == 4) {
    // Re-pack from the first block this add touched (a partial last block gains codes).
    for (size_t l = 0; l < p.nlist; ++l) {
      if (perList[l] == 0) continue;
      IvfPqList& list = s.lists[l];
      const size_t firstBlock = oldSizes[l] / kFastScanBlock;
      const size_t first = firstBlock * kFastScanBlock;
      const size_t kept = oldSizes[l] - first;  // codes of the old partial block
      unpackFastScan(list.packed.data(), first, kept, p.m, repack.data());
      std::memcpy(repack.data() + kept * cb, byList.data() + newStart[l] * cb, perList[l] * cb);
      list.packed.resize(fastScanBytes(list.size(), p.m));
      packFastScan(repack.data(), kept + perList[l], p.m, list.packed.data() + firstBlock * s.blockBytes());
    }
  }
  if (p.refine != RefineStorage::None && !s.refineSlots.empty()) {
    const size_t firstSlot = p.refine == RefineStorage::F32 ? s.refineF32.size() / p.dim : s.refineF16.size() / p.dim;
    for (size_t i = 0; i < count; ++i) s.refineSlots.push_back(static_cast<uint32_t>(firstSlot + i));
  }
  if (p.refine == RefineStorage::F32) s.refineF32.insert(s.refineF32.end(), data, data + count * p.dim);
  if (p.refine == RefineStorage::F16) s.refineF16.insert(s.refineF16.end(), st.halves.begin(), st.halves.end());
  s.count = newCount;
  s.updateIdMapBytes();
  lock.unlock();
  st.writeLock.unlock();
}

size_t IvfPqIndex::remove(const uint64_t* ids, size_t count) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  std::vector<std::pair<uint64_t, uint32_t>> found;
  std::unordered_set<uint64_t> seen;
  for (size_t i = 0; i < count; ++i) {
    const auto it = s.rowOfId.find(ids[i]);
    if (it != s.rowOfId.end() && seen.insert(ids[i]).second) found.emplace_back(ids[i], it->second);
  }
  if (found.empty()) return 0;
  std::vector<uint32_t> bits;
  if (s.liveBits.empty()) {
    try {
      bits = allBits(s.count);
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory removing " + str(found.size()) + " vectors");
    }
  }
  std::unique_lock<std::shared_mutex> lock(s.mutex);
  if (s.liveBits.empty()) s.liveBits = std::move(bits);
  for (const auto& [id, row] : found) {
    clearBit(s.liveBits, row);
    s.rowOfId.erase(id);
  }
  s.tombstones += found.size();
  s.liveCount -= found.size();
  s.updateIdMapBytes();
  return found.size();
}

bool IvfPqIndex::contains(uint64_t id) const {
  std::shared_lock<std::shared_mutex> lock(impl_->mutex);
  return impl_->rowOfId.count(id) != 0;
}

void IvfPqIndex::get(uint64_t id, float* out) const {
  const Impl& s = *impl_;
  const IvfPqParams& p = s.p;
  std::shared_lock<std::shared_mutex> lock(s.mutex);
  const auto it = s.rowOfId.find(id);
  if (it == s.rowOfId.end()) {
    throw Error(ErrorCode::UnknownId, "Expected an id in the index but received unknown id " + std::to_string(id));
  }
  if (p.refine == RefineStorage::None) {
    throw Error(ErrorCode::InvalidArgument,
                "This IVF-PQ index keeps only PQ codes (refine 'none'), which cannot give the stored vector back: "
                "create it with refine 'f16' or 'f32' to get vectors by id");
  }
  const size_t slot = s.refineSlot(it->second);
  if (p.refine == RefineStorage::F32) {
    std::memcpy(out, s.refineF32.data() + slot * p.dim, p.dim * sizeof(float));
  } else {
    s.kernels->f16.toFloat(s.refineF16.data() + slot * p.dim, out, p.dim);
  }
}

namespace {

// One list without the entries `keep` rejects (by row), codes and packed blocks included.
IvfPqList compactList(const IvfPqList& list, const std::function<bool(uint32_t)>& keep, size_t m, unsigned nbits,
                      size_t codeBytes) {
  IvfPqList out;
  std::vector<uint8_t> codes;
  const std::vector<uint8_t>* plain = &list.codes;
  if (nbits == 4) {
    // The packed blocks are the only copy: read the codes back, filter, pack again.
    codes.resize(list.size() * codeBytes);
    if (list.size() > 0) unpackFastScan(list.packed.data(), 0, list.size(), m, codes.data());
    plain = &codes;
  }
  std::vector<uint8_t> kept;
  for (size_t i = 0; i < list.size(); ++i) {
    if (!keep(list.rows[i])) continue;
    out.ids.push_back(list.ids[i]);
    out.rows.push_back(list.rows[i]);
    if (!list.terms.empty()) out.terms.push_back(list.terms[i]);
    kept.insert(kept.end(), plain->begin() + i * codeBytes, plain->begin() + (i + 1) * codeBytes);
  }
  if (nbits == 8) {
    out.codes = std::move(kept);
  } else {
    out.packed.resize(fastScanBytes(out.size(), m));
    if (out.size() > 0) packFastScan(kept.data(), out.size(), m, out.packed.data());
  }
  return out;
}

}  // namespace

size_t IvfPqIndex::compact() {
  Impl& s = *impl_;
  const IvfPqParams& p = s.p;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  if (s.tombstones == 0) return 0;
  // Built under writeMutex alone: only writers change the lists, so reading them here races
  // nothing, and searches keep reading them until the swap.
  const auto live = [&](uint32_t row) { return testBit(s.liveBits.data(), s.liveBits.size(), row); };
  std::vector<IvfPqList> lists;
  std::vector<float> refineF32;
  std::vector<uint16_t> refineF16;
  std::vector<uint32_t> refineSlots;
  try {
    lists.reserve(p.nlist);
    for (const IvfPqList& list : s.lists) lists.push_back(compactList(list, live, p.m, p.nbits, s.codeBytes()));
    if (p.refine != RefineStorage::None) {
      // Refine vectors stay in row order; the slots of the survivors are renumbered.
      refineSlots.assign(s.count, Impl::kNoSlot);
      uint32_t next = 0;
      for (uint32_t row = 0; row < s.count; ++row) {
        const uint32_t slot = s.refineSlot(row);
        if (slot == Impl::kNoSlot || !live(row)) continue;
        if (p.refine == RefineStorage::F32) {
          refineF32.insert(refineF32.end(), s.refineF32.begin() + size_t{slot} * p.dim,
                           s.refineF32.begin() + size_t{slot + 1} * p.dim);
        } else {
          refineF16.insert(refineF16.end(), s.refineF16.begin() + size_t{slot} * p.dim,
                           s.refineF16.begin() + size_t{slot + 1} * p.dim);
        }
        refineSlots[row] = next++;
      }
    }
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory compacting " + str(s.liveCount) + " vectors");
  }
  const size_t dropped = s.tombstones;
  std::vector<uint64_t> locations;
  try {
    locations.assign(s.count, Impl::kNoLocation);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory compacting " + str(s.liveCount) + " vectors");
  }
  for (size_t l = 0; l < lists.size(); ++l) {
    for (size_t i = 0; i < lists[l].size(); ++i) locations[lists[l].rows[i]] = uint64_t{l} << 32 | i;
  }
  std::unique_lock<std::shared_mutex> lock(s.mutex);
  s.lists = std::move(lists);
  s.locationOfRow = std::move(locations);
  s.refineF32 = std::move(refineF32);
  s.refineF16 = std::move(refineF16);
  s.refineSlots = std::move(refineSlots);
  // No list entry is a tombstone any more, so searches stop ANDing the live bitset in on their
  // own; it stays (ANDed into a caller's bitset) so that a filtered search counts exactly the
  // allowed rows that still have a code when it picks its strategy.
  s.tombstones = 0;
  s.updateIdMapBytes();
  return dropped;
}

void IvfPqIndex::rowsOf(const uint64_t* ids, size_t count, int64_t* rows) const {
  // rowOfId changes only under the exclusive lock (commitAdd), so the shared one suffices.
  std::shared_lock<std::shared_mutex> lock(impl_->mutex);
  for (size_t i = 0; i < count; ++i) {
    const auto it = impl_->rowOfId.find(ids[i]);
    rows[i] = it == impl_->rowOfId.end() ? -1 : static_cast<int64_t>(it->second);
  }
}

IvfPqModel IvfPqIndex::model() const {
  const Impl& s = *impl_;
  std::shared_lock<std::shared_mutex> lock(s.mutex);
  if (!s.trained) throw Error(ErrorCode::NotTrained, "The index must be trained before its model is read");
  IvfPqModel model;
  model.centroids = s.centroids;
  model.rotatedCentroids = s.rotatedCentroids;
  model.codebooks = s.pq.centroids();
  model.rotation = s.pq.rotation();
  return model;
}

SearchOutput IvfPqIndex::search(const float* queries, size_t queryCount, const IvfPqSearchParams& params) const {
  return impl_->search(queries, queryCount, params);
}

namespace {

// Per-thread state of a search: a collector per query of the chunk and scan scratch. A heap
// for the few candidates of a small k × refineFactor, a buffered selection for large ones
// (TopKSelector).
struct SlotState {
  std::vector<TopKSelector> perQuery;
  // 4-bit: the best approximate candidates of each query over all its lists; the candidate's
  // id holds (list << 32 | position in the list) until it is re-scored at the merge.
  std::vector<TopKSelector> approxPerQuery;
  // One scan step's scores (8-bit) or sums (4-bit; whole blocks: kScanStep is a multiple of
  // kFastScanBlock), held here rather than allocated per search.
  std::array<float, kScanStep> scores;
  std::array<uint16_t, kScanStep> sums;
};

}  // namespace

SearchOutput IvfPqIndex::Impl::search(const float* queries, size_t queryCount, const IvfPqSearchParams& sp) const {
  const size_t dim = p.dim;
  if (sp.k == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for k but received 0");
  if (sp.nprobe == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for nprobe but received 0");
  if (sp.refineFactor == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for refineFactor but received 0");
  if (queryCount > std::numeric_limits<size_t>::max() / 16 / sp.k) {
    throw Error(ErrorCode::InvalidArgument, "Expected a result of nq × k that fits in memory");
  }
  requireFinite(queries, queryCount, dim, "queries");

  std::shared_lock<std::shared_mutex> lock(mutex);
  if (!trained) throw Error(ErrorCode::NotTrained, "The index must be trained before it is searched");

  SearchOutput out;
  out.queries = queryCount;
  out.k = sp.k;
  out.ids.assign(queryCount * sp.k, kNoId);
  out.scores.assign(queryCount * sp.k, kNegInf);
  if (liveCount == 0 || queryCount == 0) return out;

  const unsigned nthreads = ThreadPool::shared().resolve(sp.threads == 0 ? threadsOption : sp.threads);
  size_t nprobe = std::min(sp.nprobe, p.nlist);
  const bool refined = p.refine != RefineStorage::None;
  const bool fast = p.nbits == 4;
  // Candidates kept by the float-ADC stage per query, and by fast-scan per (query, list).
  const size_t keep = refined ? sp.k * sp.refineFactor : sp.k;
  const size_t approxKeep = sp.k * std::max<size_t>(sp.refineFactor, 4);
  const size_t ksub = pq.ksub(), cb = codeBytes(), m = p.m;
  // One bitset for the scan: the filter (evaluated here, on the state this lock holds), the
  // caller's allow bitset and the live rows, ANDed; null when every row is allowed.
  std::vector<uint32_t> combined;
  const uint32_t* allowBits = sp.allowBits;
  size_t allowWords = sp.allowWords;
  const auto andInto = [&](const uint32_t* bits, size_t words) {
    if (allowBits == nullptr) {
      allowBits = bits;
      allowWords = words;
      return;
    }
    combined = andBits(allowBits, allowWords, bits, words);
    allowBits = combined.data();
    allowWords = combined.size();
  };
  std::vector<uint32_t> filtered;
  if (sp.rowFilter != nullptr) {
    filtered = (*sp.rowFilter)([this](uint64_t id, uint32_t* row) {
      const auto it = rowOfId.find(id);
      if (it == rowOfId.end()) return false;
      *row = it->second;
      return true;
    });
    andInto(filtered.data(), filtered.size());
  }
  if (!liveBits.empty() && (allowBits != nullptr || tombstones > 0)) andInto(liveBits.data(), liveBits.size());
  static const uint32_t kNone = 0;
  if (allowBits != nullptr && allowWords == 0) allowBits = &kNone;  // non-null: nothing allowed
  const AllowBits allow{allowBits, allowWords};

  std::vector<float> scratch;
  const float* prepared = prepare(queries, queryCount, scratch);

  if (allowBits != nullptr) {
    const FilterPlan plan = filteredPlan(allowBits, allowWords, nprobe, sp.filterStrategy);
    if (plan.allowed == 0) return out;
    if (plan.scan) {
      scanAllowed(prepared, queryCount, sp.k, nthreads, allowBits, allowWords, out);
      return out;
    }
    nprobe = plan.nprobe;
  }

  const size_t usable = std::min<size_t>(nthreads, ThreadPool::shared().threadCount());
  const unsigned slots = static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(usable, p.nlist)));
  const size_t collectorBytes = std::max<size_t>(2 * keep, keep + 64) * sizeof(Candidate);
  const size_t chunk = std::min(queryCount, std::max<size_t>(1, kCollectorBudget / (collectorBytes * slots)));
  std::vector<SlotState> state(slots);
  ThreadPool& pool = ThreadPool::shared();

  for (size_t q0 = 0; q0 < queryCount; q0 += chunk) {
    const size_t n = std::min(chunk, queryCount - q0);
    const float* chunkQueries = prepared + q0 * dim;
    const SearchOutput probes = n <= kStreamingMaxQueries ? nearestListsFew(chunkQueries, n, nprobe)
                                                          : nearestLists(chunkQueries, n, nprobe, nthreads);

    // One ADC table per query serves every list: for ip (and cosine) the table of R·q, for l2
    // that of 2 (R·q - shift) with each entry's term added (codeTerms). Quantized once per query
    // for fast-scan.
    std::vector<float> rotatedQueries(n * dim);
    if (pq.rotated()) {
      pq.rotate(chunkQueries, n, rotatedQueries.data());
    } else {
      std::copy(chunkQueries, chunkQueries + n * dim, rotatedQueries.begin());
    }
    const bool l2 = p.metric == Metric::L2;
    if (l2) {
      for (size_t q = 0; q < n; ++q) {
        float* rq = rotatedQueries.data() + q * dim;
        for (size_t d = 0; d < dim; ++d) rq[d] = 2.0f * (rq[d] - shift[d]);
      }
    }
    std::vector<float> tables(n * m * ksub);
    std::vector<QuantizedTable> quantized(fast ? n : 0);
    const auto buildTable = [&](size_t q) {
      pq.computeTable(rotatedQueries.data() + q * dim, Metric::InnerProduct, tables.data() + q * m * ksub);
      if (fast) quantized[q] = quantizeTable(tables.data() + q * m * ksub, m);
    };
    if (n == 1) {
      buildTable(0);
    } else {
      pool.parallelFor(n, slots, [&](size_t q, unsigned) { buildTable(q); });
    }
    // The list constant of each probe: q·c for ip / cosine (the coarse score), -|q - c|^2 for
    // l2 (computed here: the coarse search's l2 scores differ by path).
    std::vector<float> probeBias(n * nprobe, 0.0f);
    for (size_t q = 0; q < n; ++q) {
      for (size_t j = 0; j < nprobe; ++j) {
        const uint64_t l = probes.ids[q * nprobe + j];
        if (l == kNoId) continue;
        probeBias[q * nprobe + j] = l2 ? -kernels->l2sq(chunkQueries + q * dim, centroids.data() + l * dim, dim)
                                       : probes.scores[q * nprobe + j];
      }
    }

    // Group the (query, list) pairs by list, so that each list is read once per chunk: one task
    // per probed list, its probes at byList[begin, end).
    struct Probe {
      uint32_t query;
      float bias;  // the probe's list constant
    };
    struct ListTask {
      uint32_t list;
      size_t begin, end;
    };
    std::vector<Probe> byList;
    std::vector<ListTask> tasks;
    if (n == 1) {
      // One query: its probes are the tasks (distinct lists), without a pass over all nlist.
      byList.reserve(nprobe);
      tasks.reserve(nprobe);
      for (size_t j = 0; j < nprobe; ++j) {
        const uint64_t l = probes.ids[j];
        if (l == kNoId || lists[l].size() == 0) continue;
        const size_t at = byList.size();
        byList.push_back({0, probeBias[j]});
        tasks.push_back({static_cast<uint32_t>(l), at, at + 1});
      }
    } else {
      std::vector<size_t> offsets(p.nlist + 1, 0);
      for (size_t i = 0; i < n * nprobe; ++i) {
        if (probes.ids[i] != kNoId) ++offsets[probes.ids[i] + 1];
      }
      for (size_t l = 0; l < p.nlist; ++l) offsets[l + 1] += offsets[l];
      byList.resize(offsets[p.nlist]);
      {
        std::vector<size_t> fill(offsets.begin(), offsets.end() - 1);
        for (size_t q = 0; q < n; ++q) {
          for (size_t j = 0; j < nprobe; ++j) {
            const uint64_t l = probes.ids[q * nprobe + j];
            if (l != kNoId) byList[fill[l]++] = {static_cast<uint32_t>(q), probeBias[q * nprobe + j]};
          }
        }
      }
      for (size_t l = 0; l < p.nlist; ++l) {
        if (offsets[l + 1] > offsets[l] && lists[l].size() > 0) {
          tasks.push_back({static_cast<uint32_t>(l), offsets[l], offsets[l + 1]});
        }
      }
      // Heaviest lists first, so that the last tasks to start are short.
      std::stable_sort(tasks.begin(), tasks.end(), [&](const ListTask& a, const ListTask& b) {
        return lists[a.list].size() * (a.end - a.begin) > lists[b.list].size() * (b.end - b.begin);
      });
    }

    for (auto& slot : state) {
      std::vector<TopKSelector>& collectors = fast ? slot.approxPerQuery : slot.perQuery;
      if (collectors.size() < n) collectors.resize(n);
      for (size_t q = 0; q < n; ++q) collectors[q].reset(fast ? approxKeep : keep);
    }

    pool.parallelFor(tasks.size(), slots, [&](size_t task, unsigned slotIndex) {
      SlotState& slot = state[slotIndex];
      const size_t l = tasks[task].list;
      const IvfPqList& list = lists[l];
      const size_t size = list.size();
      const float* terms = list.terms.empty() ? nullptr : list.terms.data();
      for (size_t pi = tasks[task].begin; pi < tasks[task].end; ++pi) {
        const size_t q = byList[pi].query;
        const float* table = tables.data() + q * m * ksub;
        const float bias = byList[pi].bias;
        TopKSelector& collector = slot.perQuery[q];
        if (!fast) {
          for (size_t r0 = 0; r0 < size; r0 += kScanStep) {
            const size_t step = std::min(kScanStep, size - r0);
            pq.scan(table, list.codes.data() + r0 * cb, step, bias, slot.scores.data());
            if (terms != nullptr) {
              for (size_t j = 0; j < step; ++j) slot.scores[j] += terms[r0 + j];
            }
            float threshold = collector.threshold();
            for (size_t j = 0; j < step; ++j) {
              const uint32_t row = list.rows[r0 + j];
              if (slot.scores[j] >= threshold && allow.row(row)) {
                collector.offer(slot.scores[j], row, list.ids[r0 + j]);
                threshold = collector.threshold();
              }
            }
          }
          continue;
        }
        // Fast-scan: approximate scores (comparable across lists: the float value of the
        // quantized sum, plus the list constant) pick each query's best candidates over all
        // its lists; only those are re-scored exactly, at the merge.
        TopKSelector& approx = slot.approxPerQuery[q];
        const QuantizedTable* qt = &quantized[q];
        const size_t bb = blockBytes();
        const float scale = qt->scale, offset = qt->offset + bias;
        const uint64_t listTag = uint64_t{l} << 32;
        for (size_t r0 = 0; r0 < size; r0 += kScanStep) {
          const size_t step = std::min(kScanStep, size - r0);
          const size_t blocks = (step + kFastScanBlock - 1) / kFastScanBlock;
          fastScan(*qt, m, list.packed.data() + (r0 / kFastScanBlock) * bb, blocks, slot.sums.data(), kernels->level);
          float threshold = approx.threshold();
          for (size_t j = 0; j < step; ++j) {
            const float estimate =
                offset + scale * static_cast<float>(slot.sums[j]) + (terms != nullptr ? terms[r0 + j] : 0.0f);
            if (estimate >= threshold && allow.row(list.rows[r0 + j])) {
              approx.offer(estimate, list.rows[r0 + j], listTag | (r0 + j));
              threshold = approx.threshold();
            }
          }
        }
      }
    });

    // Merge the threads' collectors; with refine vectors, re-rank on them.
    constexpr size_t kMergeBlock = 32;
    std::vector<std::vector<Candidate>> merged(slots);
    pool.parallelFor((n + kMergeBlock - 1) / kMergeBlock, slots, [&](size_t block, unsigned slotIndex) {
      std::vector<Candidate>& best = merged[slotIndex];
      const size_t end = std::min(n, (block + 1) * kMergeBlock);
      for (size_t q = block * kMergeBlock; q < end; ++q) {
        best.clear();
        if (fast) {
          for (auto& slot : state) slot.approxPerQuery[q].drainInto(best);
          keepBest(best, approxKeep);
          if (refined && best.size() <= keep) {
            // Every shortlisted candidate goes on to the refine: float-ADC scores would pick
            // nothing, so only the ids are looked up.
            for (Candidate& c : best) c.id = lists[c.id >> 32].ids[c.id & 0xFFFFFFFFu];
          } else {
            rescoreShortlist(tables.data() + q * m * ksub, probes.ids.data() + q * nprobe,
                             probeBias.data() + q * nprobe, nprobe, best);
            keepBest(best, keep);
          }
        } else {
          for (auto& slot : state) slot.perQuery[q].drainInto(best);
        }
        if (refined) {
          keepBest(best, keep);
          refineAll(chunkQueries + q * dim, best);
        }
        selectBest(best, sp.k);
        const size_t base = (q0 + q) * sp.k;
        for (size_t i = 0; i < best.size(); ++i) {
          out.ids[base + i] = best[i].id;
          out.scores[base + i] = best[i].score;
        }
      }
    });
  }
  return out;
}

IvfPqIndex::Impl::FilterPlan IvfPqIndex::Impl::filteredPlan(const uint32_t* bits, size_t words, size_t nprobe,
                                                             IvfPqFilter strategy) const {
  FilterPlan plan;
  // Allowed rows that still have a code. (Bits of rows a compaction dropped may be set in a
  // caller's bitset; they would only make the estimate high, and the scan skips them.)
  const size_t usedWords = std::min(words, bitWords(count));
  for (size_t w = 0; w < usedWords; ++w) {
    uint32_t word = bits[w];
    if (w == count / 32 && count % 32 != 0) word &= (1u << (count % 32)) - 1u;
    plan.allowed += static_cast<size_t>(__builtin_popcount(word));
  }
  plan.allowed = std::min(plan.allowed, liveCount);
  if (plan.allowed == 0) return plan;
  // Probe: with a fraction f of the rows allowed, nprobe / f lists hold about as many allowed
  // rows as nprobe lists hold rows, so the candidates scored (and the recall) stay near an
  // unfiltered search's, provided the filter is not tied to the lists.
  const double fraction = static_cast<double>(plan.allowed) / static_cast<double>(liveCount);
  plan.nprobe = std::min<size_t>(p.nlist, static_cast<size_t>(std::ceil(static_cast<double>(nprobe) / fraction)));
  if (strategy == IvfPqFilter::Probe) return plan;
  if (strategy == IvfPqFilter::Scan) {
    plan.scan = true;
    return plan;
  }
  // Auto: what each reads and computes per query. The probe scans every entry of its lists
  // (a code of codeBytes, m table lookups); the scan reads the allowed rows' codes one by one
  // (a gather, about dim operations each: the ADC sum, or a decode and a distance, or the refine
  // vector).
  const double entries = static_cast<double>(liveCount + tombstones);
  const double probeCost = static_cast<double>(plan.nprobe) * entries / static_cast<double>(p.nlist) *
                           static_cast<double>(std::max<size_t>(p.m, codeBytes()));
  const double scanCost = static_cast<double>(plan.allowed) * static_cast<double>(p.dim);
  plan.scan = scanCost <= probeCost;
  return plan;
}

void IvfPqIndex::Impl::scanAllowed(const float* prepared, size_t queryCount, size_t k, unsigned nthreads,
                                   const uint32_t* bits, size_t words, SearchOutput& out) const {
  const size_t dim = p.dim, m = p.m, ksub = pq.ksub(), cb = codeBytes();
  const bool refined = p.refine != RefineStorage::None;
  const bool ipTables = !refined && p.metric != Metric::L2;
  // The allowed rows that have a code, in row order.
  std::vector<uint32_t> rows;
  const size_t usedWords = std::min(words, bitWords(count));
  for (size_t w = 0; w < usedWords; ++w) {
    for (uint32_t b = bits[w]; b != 0; b &= b - 1) {
      const size_t row = w * 32 + static_cast<size_t>(__builtin_ctz(b));
      if (row < count && locationOfRow[row] != kNoLocation) rows.push_back(static_cast<uint32_t>(row));
    }
  }
  if (rows.empty()) return;

  // Per query: the rotated query; for ip, its ADC table and its score against every centroid
  // (the per-list constant), so that a row's score is that of the probing scan.
  std::vector<float> rotated(queryCount * dim), tables(ipTables ? queryCount * m * ksub : 0),
      coarse(ipTables ? queryCount * p.nlist : 0);
  if (pq.rotated()) {
    pq.rotate(prepared, queryCount, rotated.data());
  } else {
    std::copy(prepared, prepared + queryCount * dim, rotated.begin());
  }
  ThreadPool& pool = ThreadPool::shared();
  const size_t usable = std::min<size_t>(nthreads, ThreadPool::shared().threadCount());
  if (ipTables) {
    pool.parallelFor(queryCount, static_cast<unsigned>(std::max<size_t>(1, usable)), [&](size_t q, unsigned) {
      pq.computeTable(rotated.data() + q * dim, Metric::InnerProduct, tables.data() + q * m * ksub);
      kernels->scanRows(prepared + q * dim, centroids.data(), p.nlist, dim, nullptr, coarse.data() + q * p.nlist);
    });
  }

  // Tasks: (query, chunk of rows). Each thread slot keeps a collector per query.
  constexpr size_t kRowsPerTask = 2048;
  const size_t chunks = (rows.size() + kRowsPerTask - 1) / kRowsPerTask;
  const unsigned slots = static_cast<unsigned>(std::max<size_t>(1, std::min(usable, queryCount * chunks)));
  std::vector<std::vector<TopKCollector>> collectors(slots, std::vector<TopKCollector>(queryCount));
  for (auto& perSlot : collectors) {
    for (auto& c : perSlot) c.reset(k);
  }
  pool.parallelFor(queryCount * chunks, slots, [&](size_t task, unsigned slot) {
    const size_t q = task / chunks, chunk = task % chunks;
    TopKCollector& collector = collectors[slot][q];
    std::vector<uint8_t> code(cb);
    std::vector<float> decoded(dim), shifted(dim);
    const float* query = prepared + q * dim;
    const size_t end = std::min(rows.size(), (chunk + 1) * kRowsPerTask);
    for (size_t i = chunk * kRowsPerTask; i < end; ++i) {
      const uint32_t row = rows[i];
      const uint64_t location = locationOfRow[row];
      const IvfPqList& list = lists[location >> 32];
      const size_t position = static_cast<size_t>(location & 0xFFFFFFFFu);
      float score;
      if (refined) {
        score = refineScore(query, row);
      } else {
        const uint8_t* c;
        if (p.nbits == 8) {
          c = list.codes.data() + position * cb;
        } else {
          unpackFastScan(list.packed.data(), position, 1, m, code.data());
          c = code.data();
        }
        const size_t l = static_cast<size_t>(location >> 32);
        if (ipTables) {
          pq.scan(tables.data() + q * m * ksub, c, 1, coarse[q * p.nlist + l], &score);
        } else {
          // l2: -|R(q - c) - r̂|^2, the score the probe's per-list table gives.
          pq.decode(c, 1, decoded.data());
          const float* rq = rotated.data() + q * dim;
          const float* rc = rotatedCentroids.data() + l * dim;
          for (size_t d = 0; d < dim; ++d) shifted[d] = rq[d] - rc[d];
          score = -kernels->l2sq(shifted.data(), decoded.data(), dim);
        }
      }
      if (std::isnan(score)) score = kNegInf;
      collector.offer(score, row, list.ids[position]);
    }
  });
  std::vector<Candidate> best;
  for (size_t q = 0; q < queryCount; ++q) {
    best.clear();
    for (auto& perSlot : collectors) perSlot[q].drainInto(best);
    selectBest(best, k);
    for (size_t i = 0; i < best.size(); ++i) {
      out.ids[q * k + i] = best[i].id;
      out.scores[q * k + i] = best[i].score;
    }
  }
}

IvfPqMemory IvfPqIndex::memory() const {
  const Impl& s = *impl_;
  std::shared_lock<std::shared_mutex> lock(s.mutex);
  IvfPqMemory mem;
  for (const IvfPqList& list : s.lists) {
    mem.codes += list.codes.capacity() + list.packed.capacity() + list.terms.capacity() * sizeof(float);
    mem.ids += list.ids.capacity() * sizeof(uint64_t) + list.rows.capacity() * sizeof(uint32_t);
  }
  mem.ids += s.locationOfRow.capacity() * sizeof(uint64_t);
  mem.ids += s.lists.capacity() * sizeof(IvfPqList);
  mem.centroids = (s.centroids.capacity() + s.rotatedCentroids.capacity() + s.centroidBias.capacity() +
                   2 * s.pq.centroids().capacity() + s.pq.rotation().capacity() +
                   s.shift.capacity()) *
                      sizeof(float) +
                  s.centroidIds.capacity() * sizeof(uint64_t) + s.centroidCodes.capacity() + s.centroidSq.memoryBytes();
  mem.refine = s.refineF32.capacity() * sizeof(float) + s.refineF16.capacity() * sizeof(uint16_t) +
               s.refineSlots.capacity() * sizeof(uint32_t);
  // The id → row map, estimated as FlatIndex does: a node per id and the bucket array.
  mem.idMap = s.idMapBytes.load(std::memory_order_relaxed);
  return mem;
}

// --- the file ----------------------------------------------------------------------------
//
// An IVF-PQ index file (index_file.h, type IvfPq) has these sections, little-endian:
//   1 meta        u32 dim, metric (0 ip, 1 cosine, 2 l2), nlist, m, nbits, opq (0/1),
//                 refine (0 none, 1 f16, 2 f32), trained (0/1), u64 count, u32 modelVersion
//                 bytes, then the model version id as UTF-8
//   2 centroids   nlist × dim f32 (trained only, as the rest but 10)
//   3 codebooks   m × 2^nbits × dim/m f32
//   4 rotation    dim × dim f32 (opq only)
//   5 list sizes  nlist u64
//   6 list ids    count u64, list after list
//   7 list rows   count u32, list after list (row numbers in add order)
//   8 list codes  8-bit: count × m bytes, list after list; 4-bit: each list's packed
//                 fast-scan blocks (fastScanBytes(size, m) bytes), list after list
//   9 refine      count × dim f32, or f16 bit patterns, by row (refine f16 / f32 only)
//  64 attributes  an index made with attributes: the records of the saved rows, renumbered
//                 as the rows are (attributes_file.h); absent otherwise
// count is the live vectors: removed ones are left out (the format has no tombstones), and the
// rows are renumbered 0 .. count-1 in the index's row order.
namespace {

enum IvfPqSection : uint32_t {
  kMeta = 1, kCentroids, kCodebooks, kRotation, kListSizes, kListIds, kListRows, kListCodes, kRefine
};
constexpr size_t kMetaFixedBytes = 44;
constexpr size_t kMaxModelVersionBytes = 4096;

}  // namespace

void IvfPqIndex::save(const std::string& path, const std::string& modelVersion, const AttributeTable* attributes) const {
  const Impl& s = *impl_;
  const IvfPqParams& p = s.p;
  if (modelVersion.size() > kMaxModelVersionBytes) {
    throw Error(ErrorCode::InvalidArgument, "Expected a model version id of at most 4096 bytes");
  }
  std::shared_lock<std::shared_mutex> lock(s.mutex);
  const uint32_t fixed[8] = {static_cast<uint32_t>(p.dim),
                             p.metric == Metric::InnerProduct ? 0u : p.metric == Metric::Cosine ? 1u : 2u,
                             static_cast<uint32_t>(p.nlist),
                             static_cast<uint32_t>(p.m),
                             p.nbits,
                             p.opq ? 1u : 0u,
                             p.refine == RefineStorage::None ? 0u : p.refine == RefineStorage::F16 ? 1u : 2u,
                             s.trained ? 1u : 0u};
  // The file holds the live vectors only (the format has no tombstones), renumbered 0 ..
  // count-1 in row order: `rank` maps a row to its number in the file.
  const uint64_t count = s.liveCount;
  const bool renumber = s.tombstones > 0 || !s.refineSlots.empty() || s.liveCount != s.count;
  std::vector<uint32_t> rank;
  if (renumber) {
    try {
      rank.assign(s.count, Impl::kNoSlot);
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory numbering the rows of " + std::to_string(count) + " vectors");
    }
    for (const IvfPqList& list : s.lists) {
      for (const uint32_t row : list.rows) {
        if (s.liveBits.empty() || testBit(s.liveBits.data(), s.liveBits.size(), row)) rank[row] = 0;
      }
    }
    uint32_t next = 0;
    for (uint32_t& r : rank) {
      if (r != Impl::kNoSlot) r = next++;
    }
  }
  const uint32_t versionBytes = static_cast<uint32_t>(modelVersion.size());
  std::vector<uint8_t> meta(kMetaFixedBytes + modelVersion.size());
  std::memcpy(meta.data(), fixed, 32);
  std::memcpy(meta.data() + 32, &count, 8);
  std::memcpy(meta.data() + 40, &versionBytes, 4);
  std::memcpy(meta.data() + kMetaFixedBytes, modelVersion.data(), modelVersion.size());

  FileWriter writer(path, IndexType::IvfPq);
  writer.add(kMeta, meta.data(), meta.size());
  // The records of the saved rows, renumbered as the rows are. Under the shared lock no write
  // publishes, and a write appends its records before it publishes its rows.
  std::vector<uint8_t> attributeBytes;
  if (attributes != nullptr) {
    std::vector<uint32_t> savedRows;
    if (renumber) {
      try {
        savedRows.reserve(count);
      } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "Out of memory listing the rows of " + std::to_string(count) + " vectors");
      }
      for (uint32_t row = 0; row < s.count; ++row) {
        if (rank[row] != Impl::kNoSlot) savedRows.push_back(row);
      }
    }
    attributeBytes = encodeAttributes(*attributes, *attributes->snapshot(), renumber ? savedRows.data() : nullptr, count);
    writer.add(kAttributesSection, attributeBytes.data(), attributeBytes.size());
  }
  // The lists are concatenated into staging buffers (the file wants one section per part).
  std::vector<uint64_t> sizes, ids;
  std::vector<uint32_t> rows;
  std::vector<uint8_t> codes;
  if (s.trained) {
    writer.add(kCentroids, s.centroids.data(), s.centroids.size() * sizeof(float));
    writer.add(kCodebooks, s.pq.centroids().data(), s.pq.centroids().size() * sizeof(float));
    if (s.pq.rotated()) writer.add(kRotation, s.pq.rotation().data(), s.pq.rotation().size() * sizeof(float));
    std::vector<float> refineF32;
    std::vector<uint16_t> refineF16;
    try {
      sizes.reserve(p.nlist);
      ids.reserve(count);
      rows.reserve(count);
      const auto kept = [&](uint32_t row) { return !renumber || rank[row] != Impl::kNoSlot; };
      for (const IvfPqList& list : s.lists) {
        if (!renumber) {
          sizes.push_back(list.size());
          ids.insert(ids.end(), list.ids.begin(), list.ids.end());
          rows.insert(rows.end(), list.rows.begin(), list.rows.end());
          if (p.nbits == 8) {
            codes.insert(codes.end(), list.codes.begin(), list.codes.begin() + list.size() * s.codeBytes());
          } else {
            codes.insert(codes.end(), list.packed.begin(), list.packed.begin() + fastScanBytes(list.size(), p.m));
          }
          continue;
        }
        const IvfPqList live = compactList(list, kept, p.m, p.nbits, s.codeBytes());
        sizes.push_back(live.size());
        ids.insert(ids.end(), live.ids.begin(), live.ids.end());
        for (const uint32_t row : live.rows) rows.push_back(rank[row]);
        const std::vector<uint8_t>& bytes = p.nbits == 8 ? live.codes : live.packed;
        codes.insert(codes.end(), bytes.begin(), bytes.end());
      }
      if (renumber && p.refine != RefineStorage::None) {
        for (uint32_t row = 0; row < s.count; ++row) {
          if (rank[row] == Impl::kNoSlot) continue;
          const size_t slot = s.refineSlot(row);
          if (p.refine == RefineStorage::F32) {
            refineF32.insert(refineF32.end(), s.refineF32.begin() + slot * p.dim, s.refineF32.begin() + (slot + 1) * p.dim);
          } else {
            refineF16.insert(refineF16.end(), s.refineF16.begin() + slot * p.dim, s.refineF16.begin() + (slot + 1) * p.dim);
          }
        }
      }
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory staging the lists of " + std::to_string(count) + " vectors");
    }
    writer.add(kListSizes, sizes.data(), sizes.size() * sizeof(uint64_t));
    writer.add(kListIds, ids.data(), ids.size() * sizeof(uint64_t));
    writer.add(kListRows, rows.data(), rows.size() * sizeof(uint32_t));
    writer.add(kListCodes, codes.data(), codes.size());
    const float* f32 = renumber ? refineF32.data() : s.refineF32.data();
    const uint16_t* f16 = renumber ? refineF16.data() : s.refineF16.data();
    if (p.refine == RefineStorage::F32) writer.add(kRefine, f32, count * p.dim * sizeof(float));
    if (p.refine == RefineStorage::F16) writer.add(kRefine, f16, count * p.dim * sizeof(uint16_t));
    writer.commit();
    return;
  }
  writer.commit();
}

IvfPqIndex::Opened IvfPqIndex::open(const std::string& path, simd::Level level, unsigned threads) {
  const std::shared_ptr<IndexFile> file = IndexFile::open(path, false);
  auto corrupt = [&](const std::string& what) {
    return Error(ErrorCode::CorruptFile, "Corrupt index file " + path + ": " + what);
  };
  if (file->type() != IndexType::IvfPq) throw corrupt("not an IVF-PQ index (type " + str(size_t(file->type())) + ")");
  const std::vector<uint8_t> meta = file->readBetween(kMeta, kMetaFixedBytes, kMetaFixedBytes + kMaxModelVersionBytes, "meta");
  uint32_t fixed[8];
  uint64_t count;
  uint32_t versionBytes;
  std::memcpy(fixed, meta.data(), 32);
  std::memcpy(&count, meta.data() + 32, 8);
  std::memcpy(&versionBytes, meta.data() + 40, 4);
  if (kMetaFixedBytes + size_t{versionBytes} != meta.size()) throw corrupt("malformed meta section");
  IvfPqParams p;
  p.dim = fixed[0];
  if (fixed[1] > 2 || fixed[5] > 1 || fixed[6] > 2 || fixed[7] > 1) throw corrupt("unknown metric, opq, refine or state");
  p.metric = fixed[1] == 0 ? Metric::InnerProduct : fixed[1] == 1 ? Metric::Cosine : Metric::L2;
  p.nlist = fixed[2];
  p.m = fixed[3];
  p.nbits = fixed[4];
  p.opq = fixed[5] == 1;
  p.refine = fixed[6] == 0 ? RefineStorage::None : fixed[6] == 1 ? RefineStorage::F16 : RefineStorage::F32;
  const bool trained = fixed[7] == 1;
  // Bounds that keep every size below far from overflow, and that no real index exceeds.
  if (p.dim == 0 || p.dim > 65536 || p.nlist == 0 || p.nlist > (size_t(1) << 24) || p.m == 0 || p.dim % p.m != 0 ||
      (p.nbits != 4 && p.nbits != 8) || count > kMaxRows || (!trained && count > 0)) {
    throw corrupt("inconsistent parameters");
  }
  Opened out;
  out.modelVersion.assign(reinterpret_cast<const char*>(meta.data()) + kMetaFixedBytes, versionBytes);
  out.index = std::make_unique<IvfPqIndex>(p, level, threads);
  out.attributes = readAttributes(*file, count);
  if (!trained) return out;
  Impl& s = *out.index->impl_;
  const size_t ksub = size_t(1) << p.nbits, cb = s.codeBytes();

  // Every section is looked up (with its size) before anything is allocated for it: sizes
  // come from the file, so a hostile header cannot ask for more memory than the file holds.
  const SectionEntry& centroidSection = file->require(kCentroids, uint64_t{p.nlist} * p.dim * sizeof(float), "centroids");
  const SectionEntry& codebookSection = file->require(kCodebooks, uint64_t{ksub} * p.dim * sizeof(float), "codebooks");
  const SectionEntry* rotationSection =
      p.opq ? &file->require(kRotation, uint64_t{p.dim} * p.dim * sizeof(float), "rotation") : nullptr;
  const SectionEntry& sizeSection = file->require(kListSizes, uint64_t{p.nlist} * sizeof(uint64_t), "list sizes");
  const SectionEntry& idSection = file->require(kListIds, count * sizeof(uint64_t), "list ids");
  const SectionEntry& rowSection = file->require(kListRows, count * sizeof(uint32_t), "list rows");
  std::vector<float> centroids(p.nlist * p.dim), codebooks(ksub * p.dim), rotation;
  file->read(centroidSection, centroids.data());
  file->read(codebookSection, codebooks.data());
  if (rotationSection != nullptr) {
    rotation.resize(p.dim * p.dim);
    file->read(*rotationSection, rotation.data());
  }
  std::vector<uint64_t> sizes(p.nlist);
  file->read(sizeSection, sizes.data());
  uint64_t total = 0, packedTotal = 0;
  for (uint64_t size : sizes) {
    if (size > count) throw corrupt("a list larger than the index");
    total += size;
    packedTotal += fastScanBytes(size, p.m);
  }
  if (total != count) throw corrupt("list sizes add up to " + std::to_string(total) + ", not " + std::to_string(count));
  std::vector<uint64_t> ids(count);
  std::vector<uint32_t> rows(count);
  file->read(idSection, ids.data());
  file->read(rowSection, rows.data());
  const uint64_t codeBytes = p.nbits == 8 ? count * cb : packedTotal;
  const SectionEntry& codeSection = file->require(kListCodes, codeBytes, "list codes");
  std::vector<uint8_t> codes(codeBytes);
  file->read(codeSection, codes.data());
  // Rows are a permutation of 0 .. count-1 and ids are unique: both index other arrays.
  std::vector<uint8_t> seen(count, 0);
  for (uint32_t r : rows) {
    if (r >= count || seen[r]) throw corrupt("list rows are not a permutation of the rows");
    seen[r] = 1;
  }
  s.rowOfId.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] == kNoId || !s.rowOfId.emplace(ids[i], rows[i]).second) {
      throw corrupt("id " + std::to_string(ids[i]) + (ids[i] == kNoId ? " is reserved" : " appears twice"));
    }
  }
  for (float v : centroids) {
    if (!std::isfinite(v)) throw corrupt("a centroid is not finite");
  }
  if (p.refine == RefineStorage::F32) {
    const SectionEntry& refine = file->require(kRefine, count * p.dim * sizeof(float), "refine vectors");
    s.refineF32.resize(count * p.dim);
    file->read(refine, s.refineF32.data());
  } else if (p.refine == RefineStorage::F16) {
    const SectionEntry& refine = file->require(kRefine, count * p.dim * sizeof(uint16_t), "refine vectors");
    s.refineF16.resize(count * p.dim);
    file->read(refine, s.refineF16.data());
  }

  s.pq.load(std::move(codebooks), std::move(rotation));
  s.centroidBias.resize(p.nlist);
  s.centroidIds.resize(p.nlist);
  for (size_t c = 0; c < p.nlist; ++c) {
    double sq = 0.0;
    for (size_t d = 0; d < p.dim; ++d) sq += static_cast<double>(centroids[c * p.dim + d]) * centroids[c * p.dim + d];
    s.centroidBias[c] = static_cast<float>(-0.5 * sq);
    s.centroidIds[c] = c;
  }
  s.rotatedCentroids.resize(centroids.size());
  if (s.pq.rotated()) {
    s.pq.rotate(centroids.data(), p.nlist, s.rotatedCentroids.data());
  } else {
    s.rotatedCentroids = centroids;
  }
  s.centroids = std::move(centroids);
  s.buildCoarseSketch();
  s.lists.resize(p.nlist);
  size_t at = 0, codeAt = 0;
  for (size_t l = 0; l < p.nlist; ++l) {
    IvfPqList& list = s.lists[l];
    const size_t n = sizes[l];
    list.ids.assign(ids.begin() + at, ids.begin() + at + n);
    list.rows.assign(rows.begin() + at, rows.begin() + at + n);
    const size_t bytes = p.nbits == 8 ? n * cb : fastScanBytes(n, p.m);
    (p.nbits == 8 ? list.codes : list.packed).assign(codes.begin() + codeAt, codes.begin() + codeAt + bytes);
    at += n;
    codeAt += bytes;
  }
  // The l2 score terms are not saved: they follow from the codes and the quantizers.
  if (p.metric == Metric::L2) {
    s.shift = Impl::meanRow(s.rotatedCentroids, p.nlist, p.dim);
    s.computeAllTerms();
  }
  s.count = count;
  s.liveCount = count;
  s.trained = true;
  s.locateRows();
  s.updateIdMapBytes();
  return out;
}

}  // namespace ebrix
