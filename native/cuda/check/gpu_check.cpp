// The device check: GPU results against a CPU reference on fresh random data, then timings
// of the GPU paths next to the card's measured ceilings (and of GPU IVF-PQ next to the CPU
// index, ivfpq_check.cpp). Run by bench/gpu/check.sh, which
// also times the peer (torch) in the same run and prints the ratios.
//
//   ebrix_gpu_check [--json FILE] [--no-bench] [--no-check] [--only-mutations] [--seed N] [--profile]
//
// Exit status: 0 when every correctness case passed, 1 when one failed, 2 without a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "flat.h"
#include "simd/dispatch.h"
#include "gpu_index.h"
#include "gpu_testing.h"
#include "ivfpq_check.h"
#include "topk.h"

using namespace ebrix;
using namespace ebrix::gpu;

namespace {

float roundTo(Storage storage, float v) {
  switch (storage) {
    case Storage::F16: return __half2float(__float2half_rn(v));
    case Storage::BF16: return __bfloat162float(__float2bfloat16_rn(v));
    default: return v;
  }
}

std::vector<float> normalised(const std::vector<float>& v, size_t count, size_t dim) {
  std::vector<float> out(v.size());
  for (size_t r = 0; r < count; ++r) {
    double sum = 0;
    for (size_t i = 0; i < dim; ++i) sum += double(v[r * dim + i]) * v[r * dim + i];
    const float scale = sum > 0 ? float(1.0 / std::sqrt(sum)) : 0.f;
    for (size_t i = 0; i < dim; ++i) out[r * dim + i] = v[r * dim + i] * scale;
  }
  return out;
}

struct Dataset {
  std::string name;
  Storage storage;
  Metric metric;
  size_t n, dim, nq;
  std::vector<float> rows, queries;
  std::vector<uint64_t> ids;
  std::vector<double> score;  // reference scores [nq][n], in the reported scale
  std::vector<double> slack;  // per (query, row) error allowance
  std::vector<uint32_t> order;  // per query: rows best first by reference score, then id
  std::unordered_map<uint64_t, size_t> rowOfId;
};

// Reference: both sides rounded to the storage type as the GPU stores them, summed in double.
void reference(Dataset& d) {
  std::vector<float> rows = d.metric == Metric::Cosine ? normalised(d.rows, d.n, d.dim) : d.rows;
  std::vector<float> queries = d.metric == Metric::Cosine ? normalised(d.queries, d.nq, d.dim) : d.queries;
  for (float& v : rows) v = roundTo(d.storage, v);
  for (float& v : queries) v = roundTo(d.storage, v);
  d.score.assign(d.nq * d.n, 0);
  d.slack.assign(d.nq * d.n, 0);
  for (size_t q = 0; q < d.nq; ++q) {
    const float* qv = &queries[q * d.dim];
    for (size_t r = 0; r < d.n; ++r) {
      const float* x = &rows[r * d.dim];
      double dot = 0, magnitude = 0, xx = 0, qq = 0;
      for (size_t i = 0; i < d.dim; ++i) {
        dot += double(qv[i]) * x[i];
        magnitude += std::fabs(double(qv[i]) * x[i]);
        xx += double(x[i]) * x[i];
        qq += double(qv[i]) * qv[i];
      }
      double s = dot;
      if (d.metric == Metric::L2) {
        s = 2 * dot - xx - qq;
        magnitude = 2 * magnitude + xx + qq;
      }
      d.score[q * d.n + r] = s;
      // float32 accumulation: about dim·2^-24 relative to the sum of magnitudes, doubled.
      d.slack[q * d.n + r] = 4.0 * (double(d.dim) + 8) * 6e-8 * magnitude + 1e-30;
    }
  }
}

Dataset makeDataset(const std::string& name, Storage storage, Metric metric, size_t n, size_t dim, size_t nq,
                    uint64_t seed, size_t duplicateGroups = 0) {
  Dataset d{name, storage, metric, n, dim, nq, {}, {}, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  d.rows.resize(n * dim);
  for (float& v : d.rows) v = uniform(rng);
  if (duplicateGroups > 0) {
    // Many exact copies: ties at the k-th place, broken by id.
    for (size_t r = duplicateGroups; r < n; ++r) {
      std::memcpy(&d.rows[r * dim], &d.rows[(r % duplicateGroups) * dim], dim * sizeof(float));
    }
  }
  d.queries.resize(nq * dim);
  for (float& v : d.queries) v = uniform(rng);
  // Ids not in row order, so a tie broken by row instead of id would show.
  d.ids.resize(n);
  std::iota(d.ids.begin(), d.ids.end(), uint64_t(1000));
  std::shuffle(d.ids.begin(), d.ids.end(), rng);
  reference(d);
  for (size_t r = 0; r < n; ++r) d.rowOfId[d.ids[r]] = r;
  d.order.resize(nq * n);
  for (size_t q = 0; q < nq; ++q) {
    uint32_t* o = &d.order[q * n];
    std::iota(o, o + n, 0u);
    const double* s = &d.score[q * n];
    std::sort(o, o + n, [&](uint32_t a, uint32_t b) { return s[a] > s[b] || (s[a] == s[b] && d.ids[a] < d.ids[b]); });
  }
  return d;
}

using check::Tally;

// Compares one query's GPU answer with the reference, up to ties within the error allowance.
bool checkQuery(const Dataset& d, size_t q, size_t k, const std::vector<uint8_t>& allowed, const uint64_t* ids,
                const float* scores, bool exactTies, std::string& why) {
  std::vector<size_t> order;
  for (size_t i = 0; i < d.n; ++i) {
    const size_t r = d.order[q * d.n + i];
    if (allowed.empty() || allowed[r]) order.push_back(r);
  }
  const double* s = &d.score[q * d.n];
  const size_t expected = std::min(k, order.size());
  const auto& row = d.rowOfId;
  size_t found = 0;
  double worst = INFINITY;
  std::vector<uint8_t> returned(d.n, 0);
  for (size_t j = 0; j < k; ++j) {
    if (ids[j] == kNoId) {
      if (!std::isinf(scores[j]) || scores[j] > 0) return why = "padding with a finite score", false;
      for (size_t t = j; t < k; ++t) {
        if (ids[t] != kNoId) return why = "a result after padding", false;
      }
      break;
    }
    auto it = row.find(ids[j]);
    if (it == row.end()) return why = "unknown id " + std::to_string(ids[j]), false;
    const size_t r = it->second;
    if (!allowed.empty() && !allowed[r]) return why = "row not allowed: " + std::to_string(r), false;
    if (returned[r]) return why = "id returned twice", false;
    returned[r] = 1;
    const double err = std::fabs(double(scores[j]) - s[r]);
    if (err > d.slack[q * d.n + r]) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "score of rank %zu is %.9g, reference %.9g", j, double(scores[j]), s[r]);
      return why = buf, false;
    }
    if (j > 0 && (scores[j] > scores[j - 1] || (scores[j] == scores[j - 1] && ids[j] < ids[j - 1]))) {
      return why = "results out of order at rank " + std::to_string(j), false;
    }
    worst = std::min(worst, s[r]);
    ++found;
  }
  if (found != expected) return why = "returned " + std::to_string(found) + " of " + std::to_string(expected), false;
  if (exactTies) {
    for (size_t j = 0; j < expected; ++j) {
      if (ids[j] != d.ids[order[j]]) return why = "rank " + std::to_string(j) + " differs under exact ties", false;
    }
    return true;
  }
  for (size_t j = 0; j < expected; ++j) {
    const size_t r = order[j];
    if (!returned[r] && s[r] > worst + 2 * d.slack[q * d.n + r]) {
      return why = "missed reference rank " + std::to_string(j), false;
    }
  }
  return true;
}

void runCases(const Dataset& d, Tally& tally, uint64_t seed) {
  GpuFlatIndex index(d.dim, d.metric, d.storage);
  // Two adds, so that growth and appends on the device are part of every case.
  const size_t half = d.n / 3;
  index.add(d.ids.data(), d.rows.data(), half);
  index.add(d.ids.data() + half, d.rows.data() + half * d.dim, d.n - half);
  std::mt19937_64 rng(seed);
  const bool exactTies = d.name.find("duplicates") != std::string::npos;
  for (int allowKind = 0; allowKind < 3; ++allowKind) {
    std::vector<uint8_t> allowed;
    std::vector<uint32_t> bits;
    if (allowKind > 0) {
      const double p = allowKind == 1 ? 0.4 : 0.003;
      allowed.resize(d.n);
      bits.assign((d.n + 31) / 32, 0);
      std::bernoulli_distribution keep(p);
      for (size_t r = 0; r < d.n; ++r) {
        allowed[r] = keep(rng);
        if (allowed[r]) bits[r / 32] |= 1u << (r % 32);
      }
    }
    for (size_t nq : {size_t(1), size_t(3), size_t(8), d.nq}) {
      for (size_t k : {size_t(1), size_t(10), size_t(100), size_t(257), size_t(2048)}) {
        for (int path = 0; path < 3; ++path) {
          GpuSearchOptions options;
          options.path = path == 0 ? GpuSearchOptions::Path::Auto
                                   : path == 1 ? GpuSearchOptions::Path::FusedScan : GpuSearchOptions::Path::Gemm;
          if (!bits.empty()) {
            options.allowBits = bits.data();
            options.allowWords = bits.size();
          }
          std::string why;
          bool ok = true;
          try {
            const SearchOutput out = index.search(d.queries.data(), nq, k, options);
            for (size_t q = 0; q < nq && ok; ++q) {
              ok = checkQuery(d, q, k, allowed, &out.ids[q * k], &out.scores[q * k], exactTies, why);
              if (!ok) why = "query " + std::to_string(q) + ": " + why;
            }
          } catch (const Error& e) {
            ok = false;
            why = std::string(e.codeName()) + ": " + e.what();
          }
          ++tally.cases;
          if (!ok) {
            ++tally.failed;
            if (tally.failed <= 40) {
              std::printf("FAIL %-28s allow=%d nq=%zu k=%zu path=%s: %s\n", d.name.c_str(), allowKind, nq, k,
                          path == 0 ? "auto" : path == 1 ? "scan" : "gemm", why.c_str());
            }
          }
        }
      }
    }
  }
}

// The CPU index on the same f32 data: identical ids up to near-ties.
void compareWithCpuIndex(Tally& tally) {
  const Dataset d = makeDataset("f32-ip-vs-FlatIndex", Storage::F32, Metric::InnerProduct, 30011, 96, 64, 99);
  FlatIndex cpu(d.dim, Metric::InnerProduct, simd::defaultLevel(), 0);
  cpu.add(d.ids.data(), d.rows.data(), d.n);
  GpuFlatIndex gpu(d.dim, Metric::InnerProduct, Storage::F32);
  gpu.add(d.ids.data(), d.rows.data(), d.n);
  for (size_t nq : {size_t(1), size_t(8), size_t(64)}) {
    const size_t k = 50;
    const SearchOutput a = cpu.search(d.queries.data(), nq, k);
    const SearchOutput b = gpu.search(d.queries.data(), nq, k);
    size_t differing = 0;
    for (size_t q = 0; q < nq; ++q) {
      for (size_t j = 0; j < k; ++j) {
        const size_t i = q * k + j;
        if (a.ids[i] != b.ids[i] && std::fabs(a.scores[i] - b.scores[i]) > 1e-5f * (1 + std::fabs(a.scores[i]))) {
          ++differing;
        }
      }
    }
    ++tally.cases;
    if (differing > 0) {
      ++tally.failed;
      std::printf("FAIL FlatIndex vs GPU nq=%zu: %zu ranks differ beyond ties\n", nq, differing);
    }
  }
}

// The cases the main matrix never reaches: several GEMM row tiles (the running top-k carried
// between tiles), more than one query tile, rows too wide for the scan's shared memory.
void checkShapes(Tally& tally, uint64_t seed) {
  auto run = [&](const Dataset& d, size_t nq, size_t k, const char* what) {
    GpuFlatIndex index(d.dim, d.metric, d.storage);
    index.add(d.ids.data(), d.rows.data(), d.n);
    std::string why;
    bool ok = true;
    const SearchOutput out = index.search(d.queries.data(), nq, k);
    for (size_t q = 0; q < nq && ok; ++q) {
      ok = checkQuery(d, q, k, {}, &out.ids[q * k], &out.scores[q * k], false, why);
      if (!ok) why = "query " + std::to_string(q) + ": " + why;
    }
    ++tally.cases;
    if (!ok) ++tally.failed;
    std::printf("%-24s %s%s\n", what, ok ? "ok" : "FAILED ", ok ? "" : why.c_str());
  };
  setenv("EBRIX_GPU_SCORE_TILE_MB", "1", 1);  // 40 queries: tiles of 6,400 rows
  run(makeDataset("tiles", Storage::F32, Metric::L2, 30011, 64, 40, seed + 1), 40, 100, "many GEMM row tiles");
  run(makeDataset("tiles16", Storage::BF16, Metric::InnerProduct, 30011, 64, 40, seed + 2), 40, 300,
      "many row tiles, k > 256");
  unsetenv("EBRIX_GPU_SCORE_TILE_MB");
  run(makeDataset("queries", Storage::F16, Metric::InnerProduct, 3001, 32, 5000, seed + 3), 5000, 10,
      "5,000 queries (2 tiles)");
  run(makeDataset("wide", Storage::F16, Metric::InnerProduct, 1500, 16384, 2, seed + 4), 2, 10,
      "f16 dim 16384, 2 queries");
}

// Searches from several threads at once, each with its own k and index, equal the same
// searches run alone (launch attributes and streams are shared process state).
void checkConcurrency(Tally& tally, uint64_t seed) {
  const Dataset a = makeDataset("concurrent-a", Storage::F16, Metric::InnerProduct, 20011, 128, 40, seed + 5);
  const Dataset b = makeDataset("concurrent-b", Storage::F32, Metric::L2, 8009, 300, 40, seed + 6);
  GpuFlatIndex ia(a.dim, a.metric, a.storage), ib(b.dim, b.metric, b.storage);
  ia.add(a.ids.data(), a.rows.data(), a.n);
  ib.add(b.ids.data(), b.rows.data(), b.n);
  struct Job {
    const GpuFlatIndex* index;
    const Dataset* data;
    size_t nq, k;
  };
  const Job jobs[] = {{&ia, &a, 1, 10}, {&ia, &a, 8, 2048}, {&ib, &b, 40, 300}, {&ib, &b, 3, 1}};
  std::vector<SearchOutput> expected;
  for (const Job& j : jobs) expected.push_back(j.index->search(j.data->queries.data(), j.nq, j.k));
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 60; ++rep) {
        const Job& j = jobs[(t + size_t(rep)) % 4];
        try {
          const SearchOutput out = j.index->search(j.data->queries.data(), j.nq, j.k);
          if (out.ids != expected[(t + size_t(rep)) % 4].ids) ++mismatches;
        } catch (const Error&) {
          ++errors;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const bool ok = mismatches == 0 && errors == 0;
  ++tally.cases;
  if (!ok) ++tally.failed;
  std::printf("%-24s %s (%d errors, %d results differing from a lone search)\n", "4 threads, mixed k and dim",
              ok ? "ok" : "FAILED", errors.load(), mismatches.load());
}

// Device memory exhaustion is a typed error that leaves the index as it was.
void checkOutOfMemory(Tally& tally) {
  GpuFlatIndex index(4096, Metric::InnerProduct, Storage::F32);
  index.addRandomForTesting(100, 3, 0);
  bool ok = false;
  std::string why = "no error";
  try {
    index.addRandomForTesting(size_t(8) << 20, 4, 1000);  // 128 GiB of rows
  } catch (const Error& e) {
    ok = e.code() == ErrorCode::OutOfMemory && index.size() == 100;
    why = std::string(e.codeName()) + ": " + e.what();
  }
  if (ok) {
    const auto q = std::vector<float>(4096, 0.5f);
    const SearchOutput out = index.search(q.data(), 1, 10);
    ok = out.ids[0] != kNoId && out.ids[9] != kNoId;
    if (!ok) why = "search after the failed add returned padding";
  }
  ++tally.cases;
  if (!ok) ++tally.failed;
  std::printf("out of device memory: %s (%s)\n", ok ? "typed error, index intact" : "FAILED", why.c_str());
}

// --- timings ----------------------------------------------------------------------------------

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timing {
  double deviceMs;
  double wallMs;
};

Timing timeSearch(const GpuFlatIndex& index, const std::vector<float>& queries, size_t nq, size_t k,
                  GpuSearchOptions options, int reps) {
  std::vector<double> device, wall;
  float ms = 0;
  options.deviceMilliseconds = &ms;
  for (int rep = 0; rep < reps + 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    index.search(queries.data(), nq, k, options);
    const double w = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (rep >= 3) {
      device.push_back(ms);
      wall.push_back(w);
    }
  }
  return {median(device), median(wall)};
}

std::vector<float> randomQueries(size_t nq, size_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::vector<float> q(nq * dim);
  for (float& v : q) v = uniform(rng);
  return q;
}

// How many top-k ids two answers share (the paths agree up to ties at scale).
double agreement(const SearchOutput& a, const SearchOutput& b) {
  size_t same = 0;
  for (size_t q = 0; q < a.queries; ++q) {
    std::vector<uint64_t> x(a.ids.begin() + q * a.k, a.ids.begin() + (q + 1) * a.k);
    std::vector<uint64_t> y(b.ids.begin() + q * b.k, b.ids.begin() + (q + 1) * b.k);
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    std::vector<uint64_t> common;
    std::set_intersection(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(common));
    same += common.size();
  }
  return double(same) / double(a.ids.size());
}

void bench(std::FILE* json, const DeviceInfo& info) {
  const double bandwidth = measureReadBandwidth(0, size_t(4) << 30);
  const double bf16Rate = measureGemmTflops(0, Storage::BF16, 8192);
  const double f16Rate = measureGemmTflops(0, Storage::F16, 8192);
  std::printf("\nceilings: read bandwidth %.0f GB/s, cuBLAS bf16 %.0f TFLOP/s, f16 %.0f TFLOP/s\n", bandwidth,
              bf16Rate, f16Rate);
  std::fprintf(json,
               "{\"kind\":\"ceilings\",\"device\":\"%s\",\"readGBs\":%.1f,\"bf16Tflops\":%.1f,\"f16Tflops\":%.1f}\n",
               info.name.c_str(), bandwidth, bf16Rate, f16Rate);

  {  // Few queries over 10M x 128 f16: the fused scan against bandwidth.
    const size_t n = 10'000'000, dim = 128;
    GpuFlatIndex index(dim, Metric::InnerProduct, Storage::F16);
    index.addRandomForTesting(n, 7, 0);
    const double bytes = double(n) * dim * 2;
    std::printf("\n10M x 128 f16 (%.2f GB), fused scan:\n", bytes / 1e9);
    for (size_t nq : {size_t(1), size_t(8)}) {
      for (size_t k : {size_t(10), size_t(100), size_t(1000)}) {
        const auto q = randomQueries(nq, dim, 100 + nq);
        const Timing t = timeSearch(index, q, nq, k, {}, 20);
        const double gbs = bytes / (t.deviceMs * 1e-3) / 1e9;
        std::printf("  nq=%zu k=%-5zu device %.3f ms (%.0f GB/s, %.0f%% of read bandwidth), end to end %.3f ms\n", nq,
                    k, t.deviceMs, gbs, 100 * gbs / bandwidth, t.wallMs);
        std::fprintf(json,
                     "{\"kind\":\"scan\",\"n\":%zu,\"dim\":%zu,\"storage\":\"f16\",\"nq\":%zu,\"k\":%zu,"
                     "\"deviceMs\":%.4f,\"wallMs\":%.4f,\"GBs\":%.1f,\"bandwidthFraction\":%.3f}\n",
                     n, dim, nq, k, t.deviceMs, t.wallMs, gbs, gbs / bandwidth);
      }
    }
    // The two paths agree at scale.
    const auto q = randomQueries(8, dim, 5);
    GpuSearchOptions gemm;
    gemm.path = GpuSearchOptions::Path::Gemm;
    const double same = agreement(index.search(q.data(), 8, 100), index.search(q.data(), 8, 100, gemm));
    std::printf("  scan vs GEMM path, 8 queries k=100: %.4f of ids shared\n", same);
    std::fprintf(json, "{\"kind\":\"agreement\",\"what\":\"scan-vs-gemm-10M\",\"shared\":%.5f}\n", same);
  }
  {  // Many queries over 1M x 768 bf16: GEMM tiles reduced to top-k.
    const size_t n = 1'000'000, dim = 768, nq = 4096, k = 100;
    GpuFlatIndex index(dim, Metric::InnerProduct, Storage::BF16);
    index.addRandomForTesting(n, 11, 0);
    const auto q = randomQueries(nq, dim, 12);
    const double flops = 2.0 * double(nq) * double(n) * double(dim);
    std::printf("\n4096 queries x 1M x 768 bf16, k=100, GEMM tiles:\n");
    for (int tileMb : {32, 128, 256, 512}) {
      setenv("EBRIX_GPU_SCORE_TILE_MB", std::to_string(tileMb).c_str(), 1);
      const Timing t = timeSearch(index, q, nq, k, {}, 5);
      const double rate = flops / (t.deviceMs * 1e-3) / 1e12;
      std::printf("  score tile %4d MB: device %.2f ms (%.0f TFLOP/s, %.0f%% of cuBLAS bf16), end to end %.2f ms\n",
                  tileMb, t.deviceMs, rate, 100 * rate / bf16Rate, t.wallMs);
      std::fprintf(json,
                   "{\"kind\":\"gemm\",\"n\":%zu,\"dim\":%zu,\"storage\":\"bf16\",\"nq\":%zu,\"k\":%zu,\"tileMB\":%d,"
                   "\"deviceMs\":%.4f,\"wallMs\":%.4f,\"tflops\":%.1f,\"tensorFraction\":%.3f}\n",
                   n, dim, nq, k, tileMb, t.deviceMs, t.wallMs, rate, rate / bf16Rate);
    }
    unsetenv("EBRIX_GPU_SCORE_TILE_MB");
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string jsonPath;
  bool doBench = true, doCheck = true, profile = false, onlyMutations = false;
  uint64_t seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) jsonPath = argv[++i];
    else if (a == "--no-bench") doBench = false;
    else if (a == "--no-check") doCheck = false;
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--profile") profile = true;
    else if (a == "--only-mutations") onlyMutations = true, doBench = false;
    else {
      std::fprintf(stderr,
                   "usage: ebrix_gpu_check [--json FILE] [--no-bench] [--no-check] [--only-mutations] [--seed N] "
                   "[--profile]\n");
      return 2;
    }
  }
  const DeviceInfo info = probeDevice(0);
  if (!info.available) {
    std::printf("no GPU: %s\n", info.reason.c_str());
    return 2;
  }
  std::printf("device: %s, compute %d.%d, %d SMs, %.1f GiB (%.1f free), driver %d, runtime %d\n", info.name.c_str(),
              info.computeMajor, info.computeMinor, info.multiprocessors, info.totalMemory / 1073741824.0,
              info.freeMemory / 1073741824.0, info.driverVersion, info.runtimeVersion);
  if (profile) {
    // A few searches of the bench's shapes, for a profiler (ncu -k regex:fusedScan ...).
    GpuFlatIndex index(128, Metric::InnerProduct, Storage::F16);
    index.addRandomForTesting(10'000'000, 7, 0);
    for (size_t nq : {size_t(1), size_t(8)}) {
      const auto q = randomQueries(nq, 128, 100 + nq);
      index.search(q.data(), nq, 10);
    }
    return 0;
  }
  std::FILE* json = jsonPath.empty() ? std::fopen("/dev/null", "w") : std::fopen(jsonPath.c_str(), "w");
  Tally tally;
  try {
    if (doCheck) {
      std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
      const auto t0 = std::chrono::steady_clock::now();
      struct Spec {
        const char* name;
        Storage storage;
        Metric metric;
        size_t n, dim;
        size_t duplicates;
      };
      const Spec specs[] = {
          {"f32-ip-128", Storage::F32, Metric::InnerProduct, 20011, 128, 0},
          {"f32-l2-128", Storage::F32, Metric::L2, 20011, 128, 0},
          {"f32-cosine-100", Storage::F32, Metric::Cosine, 20011, 100, 0},
          {"f16-ip-128", Storage::F16, Metric::InnerProduct, 20011, 128, 0},
          {"f16-l2-100", Storage::F16, Metric::L2, 20011, 100, 0},
          {"f16-cosine-128", Storage::F16, Metric::Cosine, 20011, 128, 0},
          {"bf16-ip-768", Storage::BF16, Metric::InnerProduct, 12007, 768, 0},
          {"bf16-l2-128", Storage::BF16, Metric::L2, 20011, 128, 0},
          {"bf16-cosine-64", Storage::BF16, Metric::Cosine, 20011, 64, 0},
          {"f16-ip-8", Storage::F16, Metric::InnerProduct, 20011, 8, 0},
          {"f32-ip-3", Storage::F32, Metric::InnerProduct, 3001, 3, 0},
          {"f16-ip-64-duplicates", Storage::F16, Metric::InnerProduct, 20011, 64, 97},
          {"f32-ip-32-small", Storage::F32, Metric::InnerProduct, 700, 32, 0},
      };
      uint64_t s = seed;
      for (const Spec& spec : onlyMutations ? std::vector<Spec>{} : std::vector<Spec>(std::begin(specs), std::end(specs))) {
        const Dataset d = makeDataset(spec.name, spec.storage, spec.metric, spec.n, spec.dim, 40, ++s, spec.duplicates);
        const size_t before = tally.failed;
        runCases(d, tally, ++s);
        std::printf("%-24s %s\n", spec.name, tally.failed == before ? "ok" : "FAILED");
        std::fflush(stdout);
      }
      if (!onlyMutations) {
        compareWithCpuIndex(tally);
        checkShapes(tally, s);
        checkConcurrency(tally, s);
        checkOutOfMemory(tally);
        check::checkIvfPq(tally, ++s);
      }
      check::checkMutations(tally, ++s);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("correctness: %zu cases, %zu failed (%.1f s)\n", tally.cases, tally.failed, seconds);
      std::fprintf(json, "{\"kind\":\"correctness\",\"cases\":%zu,\"failed\":%zu,\"seed\":%llu}\n", tally.cases,
                   tally.failed, static_cast<unsigned long long>(seed));
      std::fflush(json);
    }
    if (doBench) {
      bench(json, info);
      check::benchIvfPq(json);
    }
  } catch (const Error& e) {
    std::printf("error: %s: %s\n", e.codeName(), e.what());
    std::fclose(json);
    return 1;
  }
  std::fclose(json);
  return tally.failed == 0 ? 0 : 1;
}
