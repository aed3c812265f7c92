// The device check's mutation part: GpuFlatIndex and GpuIvfPqIndex take random sequences of
// adds, upserts, removes and compactions; after each step their searches (both flat paths,
// with and without allow bitsets over rows), get, contains and size are compared with CPU
// indexes: a FlatIndex of the same storage that took the same steps, a fresh FlatIndex built
// from the live vectors only, and for IVF-PQ the host twin (which took the same steps).
#include "ivfpq_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "error.h"
#include "flat.h"
#include "gpu_index.h"
#include "gpu_ivfpq.h"
#include "ivfpq.h"
#include "simd/dispatch.h"
#include "topk.h"

namespace ebrix::gpu::check {
namespace {


// `got` equals `want` up to float rounding: padding in the same places, scores within `tol`
// position by position, the same id wherever the score is not tied (within 2 tol) with a
// neighbour's. Returns an empty string or what differs first.
std::string compare(const SearchOutput& want, const SearchOutput& got, float relTol) {
  if (want.queries != got.queries || want.k != got.k) return "shape differs";
  for (size_t q = 0; q < want.queries; ++q) {
    const uint64_t* wi = want.ids.data() + q * want.k;
    const float* ws = want.scores.data() + q * want.k;
    const uint64_t* gi = got.ids.data() + q * got.k;
    const float* gs = got.scores.data() + q * got.k;
    float scale = 1.f;
    for (size_t i = 0; i < want.k; ++i) {
      if (wi[i] != kNoId) scale = std::max(scale, std::fabs(ws[i]));
    }
    const float tol = relTol * scale;
    for (size_t i = 0; i < want.k; ++i) {
      const std::string at = "query " + std::to_string(q) + " position " + std::to_string(i);
      if (wi[i] == kNoId) {
        if (gi[i] != kNoId) return at + ": id " + std::to_string(gi[i]) + " where padding was expected";
        continue;
      }
      if (gi[i] == kNoId) return at + ": padding where id " + std::to_string(wi[i]) + " was expected";
      if (std::fabs(gs[i] - ws[i]) > tol) {
        return at + ": score " + std::to_string(gs[i]) + " against " + std::to_string(ws[i]);
      }
      const bool tied = (i > 0 && std::fabs(ws[i - 1] - ws[i]) <= 2 * tol) ||
                        (i + 1 < want.k && wi[i + 1] != kNoId && std::fabs(ws[i + 1] - ws[i]) <= 2 * tol);
      if (!tied && gi[i] != wi[i]) return at + ": id " + std::to_string(gi[i]) + " against " + std::to_string(wi[i]);
    }
  }
  return "";
}

std::vector<float> uniform(size_t count, size_t dim, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> out(count * dim);
  for (float& v : out) v = u(rng);
  return out;
}

// What both indexes of a sequence are told, and the live vectors the fresh reference gets.
struct Model {
  size_t dim = 0;
  std::map<uint64_t, std::vector<float>> live;
  std::vector<uint64_t> removed;
  uint64_t nextId = 1;

  std::vector<uint64_t> pick(size_t count, std::mt19937_64& rng) const {
    std::vector<uint64_t> held;
    for (const auto& [id, v] : live) held.push_back(id);
    std::shuffle(held.begin(), held.end(), rng);
    held.resize(std::min(count, held.size()));
    return held;
  }
  void take(const std::vector<uint64_t>& ids, const std::vector<float>& vectors) {
    for (size_t i = 0; i < ids.size(); ++i) {
      live[ids[i]] = std::vector<float>(vectors.begin() + i * dim, vectors.begin() + (i + 1) * dim);
    }
  }
  void drop(const std::vector<uint64_t>& ids) {
    for (uint64_t id : ids) {
      if (live.erase(id) > 0) removed.push_back(id);
    }
  }
};

struct Step {
  enum Kind { Add, Upsert, Remove, Compact } kind;
  std::vector<uint64_t> ids;
  std::vector<float> vectors;
};

// The next step of a random sequence (the model is updated by the caller once both took it).
Step nextStep(Model& m, std::mt19937_64& rng, size_t stepIndex) {
  Step s;
  const unsigned roll = unsigned(rng() % 10);
  if (stepIndex < 2 || m.live.size() < 200 || roll < 3) {
    s.kind = Step::Add;
    const size_t n = 300 + rng() % 1700;
    for (size_t i = 0; i < n; ++i) s.ids.push_back(m.nextId++);
  } else if (roll < 6) {
    s.kind = Step::Upsert;
    s.ids = m.pick(50 + rng() % 400, rng);
    for (size_t i = 0; i < 20 && i < m.removed.size(); ++i) {
      const uint64_t id = m.removed[rng() % m.removed.size()];
      if (!m.live.count(id) && std::find(s.ids.begin(), s.ids.end(), id) == s.ids.end()) s.ids.push_back(id);
    }
    for (size_t i = 0; i < 50; ++i) s.ids.push_back(m.nextId++);
  } else if (roll < 9) {
    s.kind = Step::Remove;
    s.ids = m.pick(m.live.size() / 4 + 1, rng);
    s.ids.push_back(0xFFFFFFFFull + rng() % 1000);  // unknown ids are ignored
    s.ids.push_back(s.ids.front());                // and so are repeats
  } else {
    s.kind = Step::Compact;
  }
  if (s.kind == Step::Add || s.kind == Step::Upsert) s.vectors = uniform(s.ids.size(), m.dim, rng);
  return s;
}

bool record(Tally& tally, const std::string& label, const std::string& failure) {
  ++tally.cases;
  if (failure.empty()) return true;
  ++tally.failed;
  if (tally.failed <= 40) std::printf("FAIL %s: %s\n", label.c_str(), failure.c_str());
  return false;
}

std::vector<uint32_t> randomBits(size_t rows, std::mt19937_64& rng) {
  std::vector<uint32_t> bits((rows + 31) / 32 + 1);
  for (uint32_t& w : bits) w = uint32_t(rng());
  return bits;
}

void flatSequence(Tally& tally, Storage storage, Metric metric, uint64_t seed) {
  const size_t dim = 48;
  const std::string name = std::string("mutations flat ") + storageName(storage) + " " + metricName(metric);
  const simd::Element element =
      storage == Storage::F32 ? simd::Element::F32 : storage == Storage::F16 ? simd::Element::F16 : simd::Element::BF16;
  std::mt19937_64 rng(seed);
  Model model;
  model.dim = dim;
  GpuFlatIndex gpu(dim, metric, storage);
  FlatIndex twin(dim, metric, simd::defaultLevel(), 0, element);
  const std::vector<float> queriesFew = uniform(4, dim, rng), queriesMany = uniform(64, dim, rng);
  const size_t before = tally.failed;
  for (size_t step = 0; step < 14; ++step) {
    const Step s = nextStep(model, rng, step);
    std::string label = name + " step " + std::to_string(step);
    switch (s.kind) {
      case Step::Add:
        gpu.add(s.ids.data(), s.vectors.data(), s.ids.size());
        twin.add(s.ids.data(), s.vectors.data(), s.ids.size());
        model.take(s.ids, s.vectors);
        label += " (add)";
        break;
      case Step::Upsert:
        gpu.upsert(s.ids.data(), s.vectors.data(), s.ids.size());
        twin.upsert(s.ids.data(), s.vectors.data(), s.ids.size());
        model.take(s.ids, s.vectors);
        label += " (upsert)";
        break;
      case Step::Remove: {
        const size_t a = gpu.remove(s.ids.data(), s.ids.size());
        const size_t b = twin.remove(s.ids.data(), s.ids.size());
        record(tally, label + " remove count", a == b ? "" : std::to_string(a) + " against " + std::to_string(b));
        model.drop(s.ids);
        label += " (remove)";
        break;
      }
      case Step::Compact: {
        const size_t a = gpu.compact(), b = twin.compact();
        record(tally, label + " compact count", a == b ? "" : std::to_string(a) + " against " + std::to_string(b));
        record(tally, label + " compact again", gpu.compact() == 0 ? "" : "dropped more than once");
        label += " (compact)";
        break;
      }
    }
    record(tally, label + " size", gpu.size() == model.live.size() ? "" : std::to_string(gpu.size()) + " against " +
                                                                                std::to_string(model.live.size()));
    // The fresh reference: the live vectors only, in id order.
    FlatIndex fresh(dim, metric, simd::defaultLevel(), 0, element);
    std::vector<uint64_t> ids;
    std::vector<float> vectors;
    for (const auto& [id, v] : model.live) {
      ids.push_back(id);
      vectors.insert(vectors.end(), v.begin(), v.end());
    }
    if (!ids.empty()) fresh.add(ids.data(), vectors.data(), ids.size());
    const size_t rows = twin.size() + 4096;  // past every row number handed out
    for (const auto* queries : {&queriesFew, &queriesMany}) {
      const size_t nq = queries->size() / dim;
      for (size_t k : {size_t(10), size_t(100)}) {
        for (auto path : {GpuSearchOptions::Path::FusedScan, GpuSearchOptions::Path::Gemm}) {
          GpuSearchOptions options;
          options.path = path;
          const std::string where = label + " nq " + std::to_string(nq) + " k " + std::to_string(k) +
                                    (path == GpuSearchOptions::Path::Gemm ? " gemm" : " scan");
          record(tally, where + " vs fresh",
                 compare(fresh.search(queries->data(), nq, k), gpu.search(queries->data(), nq, k, options), 1e-4f));
          const std::vector<uint32_t> allow = randomBits(rows, rng);
          options.allowBits = allow.data();
          options.allowWords = allow.size();
          record(tally, where + " allow vs twin",
                 compare(twin.search(queries->data(), nq, k, 0, allow.data(), allow.size()),
                         gpu.search(queries->data(), nq, k, options), 1e-4f));
        }
      }
    }
    // get (the same rounding as the CPU's storage), contains, and removed ids.
    std::string failure;
    std::vector<float> a(dim), b(dim);
    size_t checked = 0;
    for (const auto& [id, v] : model.live) {
      if (checked++ == 25) break;
      gpu.get(id, a.data());
      twin.get(id, b.data());
      if (a != b) failure = "get(" + std::to_string(id) + ") differs from the CPU index's";
      if (!gpu.contains(id)) failure = "contains(" + std::to_string(id) + ") is false";
    }
    for (size_t i = 0; i < 25 && i < model.removed.size(); ++i) {
      const uint64_t id = model.removed[model.removed.size() - 1 - i];
      if (model.live.count(id)) continue;
      if (gpu.contains(id)) failure = "contains(" + std::to_string(id) + ") after its remove";
      try {
        gpu.get(id, a.data());
        failure = "get(" + std::to_string(id) + ") after its remove";
      } catch (const Error& e) {
        if (e.code() != ErrorCode::UnknownId) failure = std::string("get of a removed id: ") + e.codeName();
      }
    }
    record(tally, label + " get / contains", failure);
  }
  // A rejected upsert (a repeated id) changes nothing.
  if (!model.live.empty()) {
    const uint64_t id = model.live.begin()->first;
    const uint64_t ids[2] = {id, id};
    const std::vector<float> v = uniform(2, dim, rng);
    std::string failure = "no error";
    try {
      gpu.upsert(ids, v.data(), 2);
    } catch (const Error& e) {
      failure = e.code() == ErrorCode::DuplicateId ? "" : e.codeName();
    }
    if (gpu.size() != model.live.size()) failure = "the size changed";
    record(tally, name + " rejected upsert", failure);
  }
  std::printf("%-40s %s\n", name.c_str(), tally.failed == before ? "ok" : "FAILED");
  std::fflush(stdout);
}

// nbits 8: answers equal the CPU's up to float rounding. nbits 4: the GPU scores codes with
// float tables, the CPU with 8-bit ones, so only what must hold either way is compared:
// sizes, counts, and that every id returned is held (and allowed).
void ivfpqSequence(Tally& tally, Metric metric, RefineStorage refine, unsigned nbits, uint64_t seed) {
  const size_t dim = 32;
  const bool strict = nbits == 8;
  const char* refineLabel = refine == RefineStorage::F32 ? "f32" : refine == RefineStorage::F16 ? "f16" : "none";
  const std::string name = std::string("mutations ivfpq ") + metricName(metric) + " " + std::to_string(nbits) +
                           "-bit refine " + refineLabel;
  std::mt19937_64 rng(seed);
  Model model;
  model.dim = dim;
  IvfPqParams p;
  p.dim = dim;
  p.metric = metric;
  p.nlist = 32;
  p.m = 8;
  p.nbits = nbits;
  p.refine = refine;
  GpuIvfPqIndex gpu(p, 0);
  IvfPqTrainParams tp;
  tp.seed = seed;
  tp.maxIterations = 8;
  const std::vector<float> sample = uniform(4000, dim, rng);
  gpu.train(sample.data(), 4000, tp);
  const IvfPqIndex& twin = gpu.host();
  const std::vector<float> queries = uniform(32, dim, rng);
  const size_t before = tally.failed;
  size_t tombstones = 0;  // removed and replaced rows since the last compaction
  for (size_t step = 0; step < 12; ++step) {
    const Step s = nextStep(model, rng, step);
    std::string label = name + " step " + std::to_string(step);
    switch (s.kind) {
      case Step::Add:
        gpu.add(s.ids.data(), s.vectors.data(), s.ids.size());
        model.take(s.ids, s.vectors);
        label += " (add)";
        break;
      case Step::Upsert:
        tombstones += std::count_if(s.ids.begin(), s.ids.end(), [&](uint64_t id) { return model.live.count(id) > 0; });
        gpu.upsert(s.ids.data(), s.vectors.data(), s.ids.size());
        model.take(s.ids, s.vectors);
        label += " (upsert)";
        break;
      case Step::Remove: {
        const size_t held = std::count_if(s.ids.begin(), s.ids.end() - 1, [&](uint64_t id) { return model.live.count(id) > 0; });
        const size_t a = gpu.remove(s.ids.data(), s.ids.size());
        record(tally, label + " remove count", a == held ? "" : std::to_string(a) + " against " + std::to_string(held));
        tombstones += held;
        model.drop(s.ids);
        label += " (remove)";
        break;
      }
      case Step::Compact: {
        const size_t dropped = gpu.compact();
        record(tally, label + " compact count",
               dropped == tombstones && gpu.compact() == 0
                   ? ""
                   : std::to_string(dropped) + " dropped against " + std::to_string(tombstones) + " tombstones");
        tombstones = 0;
        label += " (compact)";
        break;
      }
    }
    record(tally, label + " size",
           gpu.size() == model.live.size() && twin.size() == model.live.size()
               ? ""
               : std::to_string(gpu.size()) + " / twin " + std::to_string(twin.size()) + " against " +
                     std::to_string(model.live.size()));
    // Every list against the twin (a CPU index with tombstones widens its probe as for a
    // filter, so only over every list do both score the same lists), with and without an
    // allow bitset; a partial probe against a fresh CPU index of the live vectors, trained
    // on the same sample with the same seed (the GPU probes the lists it is asked to).
    {
      IvfPqIndex fresh(p, simd::defaultLevel(), 0);
      fresh.train(sample.data(), 4000, tp);
      std::vector<uint64_t> ids;
      std::vector<float> vectors;
      for (const auto& [id, v] : model.live) {
        ids.push_back(id);
        vectors.insert(vectors.end(), v.begin(), v.end());
      }
      if (!ids.empty()) fresh.add(ids.data(), vectors.data(), ids.size());
      IvfPqSearchParams sp;
      sp.k = 20;
      sp.nprobe = 4;
      sp.refineFactor = 4;
      const SearchOutput g = gpu.search(queries.data(), 32, sp);
      std::string failure = strict ? compare(fresh.search(queries.data(), 32, sp), g, 2e-4f) : "";
      for (uint64_t id : g.ids) {
        if (id != kNoId && !model.live.count(id)) failure = "returned id " + std::to_string(id) + ", not held";
      }
      record(tally, label + " nprobe 4 vs fresh", failure);
    }
    const size_t rows = model.nextId + 4096;
    {
      for (bool filtered : {false, true}) {
        IvfPqSearchParams sp;
        sp.k = 20;
        sp.nprobe = p.nlist;
        sp.refineFactor = 4;
        sp.filterStrategy = IvfPqFilter::Probe;
        std::vector<uint32_t> allow;
        if (filtered) {
          allow = randomBits(rows, rng);
          sp.allowBits = allow.data();
          sp.allowWords = allow.size();
        }
        const SearchOutput g = gpu.search(queries.data(), 32, sp);
        std::string failure = strict ? compare(twin.search(queries.data(), 32, sp), g, 2e-4f) : "";
        std::vector<int64_t> rowsOfIds(g.ids.size());
        gpu.rowsOf(g.ids.data(), g.ids.size(), rowsOfIds.data());
        for (size_t i = 0; i < g.ids.size(); ++i) {
          const uint64_t id = g.ids[i];
          if (id == kNoId) continue;
          if (!model.live.count(id)) failure = "returned id " + std::to_string(id) + ", not held";
          const int64_t row = rowsOfIds[i];
          const bool allowed = row >= 0 && size_t(row) / 32 < allow.size() && ((allow[size_t(row) / 32] >> (row % 32)) & 1u);
          if (filtered && !allowed) {
            failure = "returned id " + std::to_string(id) + ", not allowed";
          }
        }
        record(tally, label + " nprobe " + std::to_string(sp.nprobe) + (filtered ? " allow" : "") + " vs twin", failure);
      }
    }
    std::string failure;
    for (const auto& [id, v] : model.live) {
      if (!gpu.contains(id)) failure = "contains(" + std::to_string(id) + ") is false";
      break;
    }
    record(tally, label + " contains", failure);
  }
  std::printf("%-40s %s\n", name.c_str(), tally.failed == before ? "ok" : "FAILED");
  std::fflush(stdout);
}

}  // namespace

void checkMutations(Tally& tally, uint64_t seed) {
  for (Storage storage : {Storage::F32, Storage::F16, Storage::BF16}) {
    for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) flatSequence(tally, storage, metric, ++seed);
  }
  for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
    for (RefineStorage refine : {RefineStorage::None, RefineStorage::F16, RefineStorage::F32}) {
      ivfpqSequence(tally, metric, refine, 8, ++seed);
    }
  }
  ivfpqSequence(tally, Metric::L2, RefineStorage::F16, 4, ++seed);
  ivfpqSequence(tally, Metric::InnerProduct, RefineStorage::None, 4, ++seed);
}

}  // namespace ebrix::gpu::check
