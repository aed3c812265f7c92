// The device check's IVF-PQ part: the GPU index against its CPU twin (the same trained model
// and lists, so the same parameters probe the same lists) on fresh clustered data, then
// timings of GPU search next to the CPU twin's on the same index.
#include "ivfpq_check.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "exact_search.h"
#include "flat.h"
#include "gpu_index.h"
#include "gpu_ivfpq.h"
#include "ivfpq.h"
#include "simd/dispatch.h"
#include "topk.h"

namespace ebrix::gpu::check {
namespace {

// Gaussian clusters with a low-rank spread, as embeddings tend to be.
std::vector<float> clustered(size_t n, size_t dim, size_t clusters, uint64_t seed) {
  constexpr size_t kRank = 6;
  std::mt19937_64 shared(1234);  // centres and bases shared by every seed: queries match the data
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> centres(clusters * dim), bases(clusters * kRank * dim);
  for (auto& c : centres) c = 0.3f * normal(shared);
  for (auto& b : bases) b = 0.4f * normal(shared) / std::sqrt(float(kRank));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    float z[kRank];
    for (auto& v : z) v = normal(rng);
    for (size_t d = 0; d < dim; ++d) {
      float x = centres[c * dim + d] + 0.05f * normal(rng);
      for (size_t j = 0; j < kRank; ++j) x += z[j] * bases[(c * kRank + j) * dim + d];
      out[i * dim + d] = x;
    }
  }
  return out;
}

const char* metricLabel(Metric m) { return m == Metric::L2 ? "l2" : m == Metric::Cosine ? "cosine" : "ip"; }
const char* refineName(RefineStorage r) { return r == RefineStorage::F32 ? "f32" : r == RefineStorage::F16 ? "f16" : "none"; }

// Fraction of `truth`'s ids (padding excluded) that `got` has, per query row.
double recallOf(const SearchOutput& got, const SearchOutput& truth, size_t k) {
  size_t hits = 0, total = 0;
  for (size_t q = 0; q < truth.queries; ++q) {
    std::vector<uint64_t> g(got.ids.begin() + q * got.k, got.ids.begin() + q * got.k + std::min(k, got.k));
    std::sort(g.begin(), g.end());
    for (size_t i = 0; i < k && i < truth.k; ++i) {
      const uint64_t id = truth.ids[q * truth.k + i];
      if (id == kNoId) continue;
      ++total;
      hits += std::binary_search(g.begin(), g.end(), id);
    }
  }
  return total == 0 ? 1.0 : double(hits) / double(total);
}

// GPU against the CPU twin, up to near-ties: position by position the scores agree within
// `tol` (relative), and every CPU id clearly above the k-th score is in the GPU answer;
// padding in the same places. Returns the count of queries that differ.
size_t differingQueries(const SearchOutput& cpu, const SearchOutput& gpu, float tol) {
  size_t bad = 0;
  for (size_t q = 0; q < cpu.queries; ++q) {
    const uint64_t* ci = cpu.ids.data() + q * cpu.k;
    const float* cs = cpu.scores.data() + q * cpu.k;
    const uint64_t* gi = gpu.ids.data() + q * gpu.k;
    const float* gs = gpu.scores.data() + q * gpu.k;
    bool ok = true;
    float kth = -INFINITY;
    for (size_t i = 0; i < cpu.k; ++i) {
      if (ci[i] != kNoId) kth = cs[i];
    }
    for (size_t i = 0; i < cpu.k && ok; ++i) {
      if ((ci[i] == kNoId) != (gi[i] == kNoId)) ok = false;
      else if (ci[i] != kNoId && std::fabs(cs[i] - gs[i]) > tol * (1.f + std::fabs(cs[i]))) ok = false;
      if (i > 0 && gi[i] != kNoId && gs[i] > gs[i - 1]) ok = false;  // sorted best first
    }
    for (size_t i = 0; i < cpu.k && ok; ++i) {
      if (ci[i] == kNoId || cs[i] <= kth + tol * (1.f + std::fabs(kth))) continue;
      if (std::find(gi, gi + gpu.k, ci[i]) == gi + gpu.k) ok = false;
    }
    bad += !ok;
  }
  return bad;
}

SearchOutput exact(Metric metric, const std::vector<float>& data, const std::vector<uint64_t>& ids,
                   const std::vector<float>& queries, size_t dim, size_t k, const uint32_t* allow = nullptr,
                   size_t allowWords = 0) {
  FlatIndex flat(dim, metric, simd::defaultLevel(), 0);
  flat.add(ids.data(), data.data(), ids.size());
  return flat.search(queries.data(), queries.size() / dim, k, 0, allow, allowWords);
}

}  // namespace

void checkIvfPq(Tally& tally, uint64_t seed) {
  const size_t n = 20000, dim = 64, nq = 100, nlist = 64;
  const std::vector<float> data = clustered(n, dim, 40, seed);
  const std::vector<float> queries = clustered(nq, dim, 40, seed + 1);
  std::vector<uint64_t> ids(n);
  std::mt19937_64 rng(seed + 2);
  for (auto& id : ids) id = rng() >> 2;  // unordered, so that id order is not row order
  std::vector<uint32_t> allow((n + 31) / 32, 0);
  for (size_t r = 0; r < n; r += 3) allow[r / 32] |= 1u << (r % 32);

  struct Spec {
    Metric metric;
    unsigned nbits;
    RefineStorage refine;
    bool opq;
    size_t m;
  };
  const Spec specs[] = {
      {Metric::InnerProduct, 8, RefineStorage::None, false, 16}, {Metric::L2, 8, RefineStorage::None, false, 16},
      {Metric::Cosine, 8, RefineStorage::None, true, 16},        {Metric::InnerProduct, 8, RefineStorage::F16, false, 8},
      {Metric::L2, 8, RefineStorage::F32, true, 32},             {Metric::InnerProduct, 4, RefineStorage::None, false, 16},
      {Metric::L2, 4, RefineStorage::F16, false, 32},            {Metric::Cosine, 4, RefineStorage::F32, true, 16},
      {Metric::L2, 8, RefineStorage::None, false, 8},
  };
  for (const Spec& spec : specs) {
    IvfPqParams p;
    p.dim = dim;
    p.metric = spec.metric;
    p.nlist = nlist;
    p.m = spec.m;
    p.nbits = spec.nbits;
    p.opq = spec.opq;
    p.refine = spec.refine;
    GpuIvfPqIndex index(p, 0);
    IvfPqTrainParams tp;
    tp.seed = seed;
    tp.maxIterations = 10;
    index.train(data.data(), n, tp);
    // Three adds of uneven size: lists grow on the device, rows continue across adds.
    index.add(ids.data(), data.data(), 3001);
    index.add(ids.data() + 3001, data.data() + 3001 * dim, 17);
    index.add(ids.data() + 3018, data.data() + 3018 * dim, n - 3018);
    const IvfPqIndex& cpu = index.host();
    char label[128];
    std::snprintf(label, sizeof label, "ivfpq-%s-%ubit-m%zu-refine-%s%s", metricLabel(spec.metric), spec.nbits, spec.m,
                  refineName(spec.refine), spec.opq ? "-opq" : "");
    size_t failedBefore = tally.failed;
    const SearchOutput truth = exact(spec.metric, data, ids, queries, dim, 10);
    const SearchOutput truthAllowed = exact(spec.metric, data, ids, queries, dim, 10, allow.data(), allow.size());
    for (size_t nprobe : {size_t(1), size_t(8), nlist}) {
      for (size_t k : {size_t(1), size_t(10), size_t(100), size_t(1000)}) {
        for (bool filtered : {false, true}) {
          IvfPqSearchParams sp;
          sp.k = k;
          sp.nprobe = nprobe;
          sp.refineFactor = k >= 1000 ? 2 : 4;
          if (filtered) {
            sp.allowBits = allow.data();
            sp.allowWords = allow.size();
          }
          const SearchOutput c = cpu.search(queries.data(), nq, sp);
          const SearchOutput g = index.search(queries.data(), nq, sp);
          ++tally.cases;
          bool ok = true;
          std::string why;
          for (size_t i = 0; i < g.ids.size(); ++i) {
            if (filtered && g.ids[i] != kNoId) {
              const size_t row = std::find(ids.begin(), ids.end(), g.ids[i]) - ids.begin();
              if (row >= n || !(allow[row / 32] >> (row % 32) & 1u)) ok = false, why = "a row the filter forbids";
            }
          }
          if (spec.nbits == 8) {
            // The same lists, the same float ADC: the same answer up to rounding and ties.
            const size_t bad = differingQueries(c, g, 2e-4f);
            if (bad > nq / 100) ok = false, why = std::to_string(bad) + " queries differ from the CPU twin";
          } else if (k >= 10) {
            // 4-bit: the GPU scores every code exactly, the CPU shortlists on 8-bit tables
            // first: at least the CPU's recall.
            const SearchOutput& t = filtered ? truthAllowed : truth;
            const double rg = recallOf(g, t, 10), rc = recallOf(c, t, 10);
            if (rg + 0.01 < rc) ok = false, why = "recall " + std::to_string(rg) + " below the CPU twin's " + std::to_string(rc);
          }
          if (!ok) {
            ++tally.failed;
            std::printf("  %s nprobe=%zu k=%zu%s: %s\n", label, nprobe, k, filtered ? " filtered" : "", why.c_str());
          }
        }
      }
    }
    // Every list probed with exact re-ranking is close to exact search.
    if (spec.refine == RefineStorage::F32) {
      IvfPqSearchParams sp;
      sp.k = 10;
      sp.nprobe = nlist;
      sp.refineFactor = 16;
      ++tally.cases;
      const double r = recallOf(index.search(queries.data(), nq, sp), truth, 10);
      if (r < 0.99) {
        ++tally.failed;
        std::printf("  %s: recall %.4f with every list and refine f32\n", label, r);
      }
    }
    std::printf("%-40s %s\n", label, tally.failed == failedBefore ? "ok" : "FAILED");
    std::fflush(stdout);
  }
}

void benchIvfPq(std::FILE* json) {
  const size_t n = 1'000'000, dim = 128, nlist = 1024, m = 32, trainN = 100'000;
  std::printf("\nIVF-PQ, 1M x 128 clustered, nlist %zu, m %zu (8-bit):\n", nlist, m);
  const std::vector<float> data = clustered(n, dim, 1000, 21);
  const std::vector<float> queries = clustered(4096, dim, 1000, 22);
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = i;
  IvfPqParams p;
  p.dim = dim;
  p.nlist = nlist;
  p.m = m;
  p.refine = RefineStorage::F16;
  GpuIvfPqIndex index(p, 0);
  auto t0 = std::chrono::steady_clock::now();
  IvfPqTrainParams tp;
  tp.maxIterations = 10;
  index.train(data.data(), trainN, tp);
  const double trainS = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t0 = std::chrono::steady_clock::now();
  index.add(ids.data(), data.data(), n);
  const double addS = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  train %.1f s (CPU, %zu vectors), add %.1f s (CPU encode + upload); device %.0f MB\n", trainS, trainN,
              addS, index.deviceBytes() / 1e6);

  GpuFlatIndex flat(dim, Metric::InnerProduct, Storage::F32);
  flat.add(ids.data(), data.data(), n);
  const SearchOutput truth = flat.search(queries.data(), 4096, 10);

  for (size_t nq : {size_t(1), size_t(16), size_t(4096)}) {
    for (size_t nprobe : {size_t(8), size_t(32), size_t(128)}) {
      IvfPqSearchParams sp;
      sp.k = 10;
      sp.nprobe = nprobe;
      auto timeIt = [&](auto&& search) {
        std::vector<double> ms;
        SearchOutput last;
        for (int rep = 0; rep < (nq >= 4096 ? 3 : 12); ++rep) {
          const auto s0 = std::chrono::steady_clock::now();
          last = search();
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count());
        }
        std::sort(ms.begin() + 1, ms.end());
        return std::make_pair(ms[1 + (ms.size() - 1) / 2], std::move(last));
      };
      auto [gpuMs, g] = timeIt([&] { return index.search(queries.data(), nq, sp); });
      auto [cpuMs, c] = timeIt([&] { return index.host().search(queries.data(), nq, sp); });
      SearchOutput t = truth;
      t.queries = nq;
      const double rg = recallOf(g, t, 10), rc = recallOf(c, t, 10);
      std::printf("  nq=%-5zu nprobe=%-4zu GPU %8.3f ms (%9.0f QPS, recall %.3f)  CPU twin %8.3f ms (%8.0f QPS, recall %.3f)  %.1fx\n",
                  nq, nprobe, gpuMs, nq / (gpuMs * 1e-3), rg, cpuMs, nq / (cpuMs * 1e-3), rc, cpuMs / gpuMs);
      std::fprintf(json,
                   "{\"kind\":\"ivfpq\",\"n\":%zu,\"dim\":%zu,\"nlist\":%zu,\"m\":%zu,\"nq\":%zu,\"nprobe\":%zu,\"k\":10,"
                   "\"gpuMs\":%.4f,\"cpuMs\":%.4f,\"gpuRecall\":%.4f,\"cpuRecall\":%.4f}\n",
                   n, dim, nlist, m, nq, nprobe, gpuMs, cpuMs, rg, rc);
      std::fflush(stdout);
    }
  }
}

}  // namespace ebrix::gpu::check
