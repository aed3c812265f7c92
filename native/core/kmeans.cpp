#include "kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <unordered_set>

#include "error.h"
#include "exact_search.h"
#include "flat.h"

namespace ebrix {
namespace {

// Bounded draws computed from the raw 64-bit output, not std::uniform_*_distribution (whose
// algorithms differ between standard libraries), so a seed gives the same result everywhere.
size_t drawIndex(std::mt19937_64& rng, size_t bound) { return static_cast<size_t>(rng() % bound); }
double drawUnit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Points per task of the parallel passes. Fixed (not derived from the thread count) so that
// partial sums are reduced in the same order, and results are equal, for any thread count.
size_t chunkSize(size_t n) { return std::max<size_t>(4096, (n + 63) / 64); }

// k-means++ seeding: each next centre is drawn with probability proportional to the squared
// distance to the nearest centre chosen so far. It is k passes over the points, so it runs on
// a subsample of kSeedPointsPerCentroid × k of them (1024 passes over 262k points of 128-d
// took 10 s; over 16k, under a second) — Lloyd iterations then use every training point.
constexpr size_t kSeedPointsPerCentroid = 16;

std::vector<float> seedPlusPlus(const float* allPoints, size_t allCount, size_t dim, size_t k, std::mt19937_64& rng,
                                const simd::Kernels& kernels, ThreadPool& pool, unsigned threads) {
  std::vector<float> subsample;
  const float* points = allPoints;
  size_t n = allCount;
  const size_t wanted = std::max<size_t>(kSeedPointsPerCentroid * k, 1024);
  if (allCount > wanted) {
    std::vector<size_t> order(allCount);
    std::iota(order.begin(), order.end(), size_t{0});
    for (size_t i = 0; i < wanted; ++i) std::swap(order[i], order[i + drawIndex(rng, allCount - i)]);
    subsample.resize(wanted * dim);
    for (size_t i = 0; i < wanted; ++i) {
      std::copy(allPoints + order[i] * dim, allPoints + (order[i] + 1) * dim, subsample.begin() + i * dim);
    }
    points = subsample.data();
    n = wanted;
  }
  std::vector<float> centroids(k * dim);
  std::vector<double> nearest(n, std::numeric_limits<double>::infinity());
  const size_t chunk = chunkSize(n);
  const size_t tasks = (n + chunk - 1) / chunk;
  std::vector<double> partial(tasks);
  size_t chosen = drawIndex(rng, n);
  for (size_t c = 0; c < k; ++c) {
    const float* centre = points + chosen * dim;
    std::copy(centre, centre + dim, centroids.begin() + c * dim);
    if (c + 1 == k) break;
    pool.parallelFor(tasks, threads, [&](size_t task, unsigned) {
      double sum = 0.0;
      const size_t end = std::min(n, (task + 1) * chunk);
      for (size_t i = task * chunk; i < end; ++i) {
        const double d = kernels.l2sq(points + i * dim, centre, dim);
        if (d < nearest[i]) nearest[i] = d;
        sum += nearest[i];
      }
      partial[task] = sum;
    });
    double total = 0.0;
    for (double p : partial) total += p;
    if (!(total > 0.0)) {
      // Every point sits on a centre already: any point will do.
      chosen = drawIndex(rng, n);
      continue;
    }
    double target = drawUnit(rng) * total;
    chosen = n;
    size_t lastPositive = 0;
    for (size_t i = 0; i < n; ++i) {
      if (nearest[i] > 0.0) lastPositive = i;
      target -= nearest[i];
      if (target < 0.0 && nearest[i] > 0.0) {
        chosen = i;
        break;
      }
    }
    if (chosen == n) chosen = lastPositive;  // rounding ran past the end
  }
  return centroids;
}

struct Assignment {
  std::vector<uint64_t> cluster;  // per point
  std::vector<float> cost;        // per point: squared distance, or 1 - inner product
  double objective = 0.0;
};

Assignment assign(const float* points, size_t n, size_t dim, const std::vector<float>& centroids, size_t k,
                  bool spherical, const simd::Kernels& kernels, ThreadPool& pool, unsigned threads) {
  std::vector<uint64_t> ids(k);
  std::iota(ids.begin(), ids.end(), uint64_t{0});
  std::vector<float> bias(k);
  for (size_t c = 0; c < k; ++c) {
    const float* centre = centroids.data() + c * dim;
    double sum = 0.0;
    for (size_t i = 0; i < dim; ++i) sum += static_cast<double>(centre[i]) * centre[i];
    bias[c] = static_cast<float>(-0.5 * sum);
  }
  RowSet rows;
  rows.vectors = centroids.data();
  rows.ids = ids.data();
  rows.l2Bias = bias.data();
  rows.count = k;
  rows.dim = dim;
  SearchParams params;
  params.k = 1;
  params.metric = spherical ? Metric::InnerProduct : Metric::L2;
  params.threads = 1;
  // exactSearch splits its work by rows, here the k centroids, which would leave threads idle
  // for small k: split the points into fixed blocks instead (a point's nearest centroid does
  // not depend on its block, so results are the same for any thread count).
  SearchOutput out;
  out.ids.resize(n);
  out.scores.resize(n);
  const size_t block = 4096;
  pool.parallelFor((n + block - 1) / block, threads, [&](size_t task, unsigned) {
    const size_t first = task * block;
    const size_t count = std::min(block, n - first);
    const SearchOutput part = exactSearch(rows, points + first * dim, count, params, kernels, pool);
    std::copy(part.ids.begin(), part.ids.end(), out.ids.begin() + first);
    std::copy(part.scores.begin(), part.scores.end(), out.scores.begin() + first);
  });
  Assignment a;
  a.cluster = std::move(out.ids);
  a.cost.resize(n);
  for (size_t i = 0; i < n; ++i) {
    a.cost[i] = spherical ? 1.0f - out.scores[i] : -out.scores[i];
    a.objective += a.cost[i];
  }
  return a;
}

// Means of the points of each cluster. Points are bucketed by cluster (a counting sort) and
// each cluster summed in point order, so the result does not depend on the thread count and
// the scratch is O(n + k·dim).
std::vector<size_t> update(const float* points, size_t n, size_t dim, const Assignment& a, size_t k,
                           std::vector<float>& centroids, ThreadPool& pool, unsigned threads) {
  std::vector<size_t> members(k, 0);
  for (size_t i = 0; i < n; ++i) ++members[static_cast<size_t>(a.cluster[i])];
  std::vector<size_t> start(k + 1, 0);
  for (size_t c = 0; c < k; ++c) start[c + 1] = start[c] + members[c];
  std::vector<size_t> byCluster(n);
  std::vector<size_t> next(start.begin(), start.end() - 1);
  for (size_t i = 0; i < n; ++i) byCluster[next[static_cast<size_t>(a.cluster[i])]++] = i;
  const size_t clustersPerTask = std::max<size_t>(1, (k + 63) / 64);
  pool.parallelFor((k + clustersPerTask - 1) / clustersPerTask, threads, [&](size_t task, unsigned) {
    std::vector<double> sum(dim);
    const size_t end = std::min(k, (task + 1) * clustersPerTask);
    for (size_t c = task * clustersPerTask; c < end; ++c) {
      if (members[c] == 0) continue;  // left for the caller to re-seed
      std::fill(sum.begin(), sum.end(), 0.0);
      for (size_t j = start[c]; j < start[c + 1]; ++j) {
        const float* p = points + byCluster[j] * dim;
        for (size_t d = 0; d < dim; ++d) sum[d] += p[d];
      }
      for (size_t d = 0; d < dim; ++d) centroids[c * dim + d] = static_cast<float>(sum[d] / members[c]);
    }
  });
  return members;
}

}  // namespace

std::vector<size_t> trainingSample(size_t count, size_t k, size_t maxPointsPerCentroid, uint64_t seed) {
  if (maxPointsPerCentroid == 0 || k > std::numeric_limits<size_t>::max() / maxPointsPerCentroid) return {};
  const size_t limit = k * maxPointsPerCentroid;
  if (count <= limit) return {};
  // Floyd's sampling: `limit` distinct rows in O(limit) draws, never touching all `count`.
  std::mt19937_64 rng(seed ^ 0x9E3779B97F4A7C15ull);  // a stream apart from the seeding's
  std::unordered_set<size_t> picked;
  picked.reserve(limit * 2);
  for (size_t j = count - limit; j < count; ++j) {
    const size_t t = drawIndex(rng, j + 1);
    if (!picked.insert(t).second) picked.insert(j);
  }
  std::vector<size_t> rows(picked.begin(), picked.end());
  std::sort(rows.begin(), rows.end());
  return rows;
}

KMeansResult kmeans(const float* points, size_t count, size_t dim, const KMeansParams& params,
                    const simd::Kernels& kernels, ThreadPool& pool) {
  const size_t k = params.k;
  if (dim == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for dim but received 0");
  if (k == 0 || k > count) {
    throw Error(ErrorCode::InvalidArgument, "Expected k from 1 to the number of points (" + std::to_string(count) +
                                                ") but received " + std::to_string(k));
  }
  requireFinite(points, count, dim, "points");
  const bool spherical = params.metric != Metric::L2;
  const unsigned threads = std::max(1u, params.threads);
  std::mt19937_64 rng(params.seed);

  // Training set: a seeded sample when the input is large (sorted, for locality).
  std::vector<float> own;
  const float* train = points;
  size_t n = count;
  const std::vector<size_t> sample = trainingSample(count, k, params.maxPointsPerCentroid, params.seed);
  if (!sample.empty()) {
    n = sample.size();
    own.resize(n * dim);
    for (size_t i = 0; i < n; ++i) std::copy(points + sample[i] * dim, points + (sample[i] + 1) * dim, own.begin() + i * dim);
  }
  if (params.metric == Metric::Cosine) {
    if (own.empty()) own.assign(points, points + count * dim);
    normalizeRows(own.data(), own.data(), n, dim);
  }
  if (!own.empty()) train = own.data();

  KMeansResult result;
  result.trainingPoints = n;
  if (!params.initialCentroids.empty()) {
    if (params.initialCentroids.size() != k * dim) {
      throw Error(ErrorCode::DimMismatch, "Expected " + std::to_string(k * dim) + " floats for initialCentroids but received " +
                                              std::to_string(params.initialCentroids.size()));
    }
    requireFinite(params.initialCentroids.data(), k, dim, "initialCentroids");
    result.centroids = params.initialCentroids;
  } else {
    result.centroids = seedPlusPlus(train, n, dim, k, rng, kernels, pool, threads);
  }
  if (spherical) normalizeRows(result.centroids.data(), result.centroids.data(), k, dim);
  Assignment current = assign(train, n, dim, result.centroids, k, spherical, kernels, pool, threads);

  for (size_t it = 1; it <= params.maxIterations; ++it) {
    const std::vector<size_t> members = update(train, n, dim, current, k, result.centroids, pool, threads);
    // Empty clusters take the worst-served points, one each, farthest first: only points with
    // a positive cost, from clusters that keep at least one member (with fewer distinct
    // points than k, a cluster may stay empty; that does not hold up convergence).
    std::vector<size_t> empty;
    for (size_t c = 0; c < k; ++c) if (members[c] == 0) empty.push_back(c);
    size_t repaired = 0;
    if (!empty.empty()) {
      std::vector<size_t> byCost;
      for (size_t i = 0; i < n; ++i) if (current.cost[i] > 0.0f) byCost.push_back(i);
      std::sort(byCost.begin(), byCost.end(), [&](size_t a, size_t b) {
        return current.cost[a] > current.cost[b] || (current.cost[a] == current.cost[b] && a < b);
      });
      std::vector<size_t> remaining = members;
      for (size_t i : byCost) {
        if (repaired == empty.size()) break;
        const size_t from = static_cast<size_t>(current.cluster[i]);
        if (remaining[from] < 2) continue;
        --remaining[from];
        const float* p = train + i * dim;
        std::copy(p, p + dim, result.centroids.begin() + empty[repaired] * dim);
        ++repaired;
      }
      result.reseeded += repaired;
    }
    if (spherical) normalizeRows(result.centroids.data(), result.centroids.data(), k, dim);
    const double previous = current.objective;
    current = assign(train, n, dim, result.centroids, k, spherical, kernels, pool, threads);
    result.iterations = it;
    if (repaired == 0 && previous - current.objective <= params.tolerance * std::fabs(previous)) break;
  }
  result.objective = current.objective;
  return result;
}

}  // namespace ebrix
