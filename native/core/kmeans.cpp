#include "kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "error.h"
#include "exact_search.h"
#include "flat.h"

namespace ebrix {
namespace {

// Points per task of the parallel passes. Fixed (not derived from the thread count) so that
// partial sums are reduced in the same order, and results are equal, for any thread count.
size_t chunkSize(size_t n) { return std::max<size_t>(4096, (n + 63) / 64); }

void normalizeRows(float* rows, size_t count, size_t dim) {
  for (size_t r = 0; r < count; ++r) {
    float* row = rows + r * dim;
    double sum = 0.0;
    for (size_t i = 0; i < dim; ++i) sum += static_cast<double>(row[i]) * row[i];
    if (sum <= 0.0) continue;
    const float scale = static_cast<float>(1.0 / std::sqrt(sum));
    for (size_t i = 0; i < dim; ++i) row[i] *= scale;
  }
}

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
    for (size_t i = 0; i < wanted; ++i) std::swap(order[i], order[std::uniform_int_distribution<size_t>(i, allCount - 1)(rng)]);
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
  size_t chosen = std::uniform_int_distribution<size_t>(0, n - 1)(rng);
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
      chosen = std::uniform_int_distribution<size_t>(0, n - 1)(rng);
      continue;
    }
    double target = std::uniform_real_distribution<double>(0.0, total)(rng);
    chosen = n - 1;
    for (size_t i = 0; i < n; ++i) {
      target -= nearest[i];
      if (target < 0.0) {
        chosen = i;
        break;
      }
    }
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
  params.threads = threads;
  SearchOutput out = exactSearch(rows, points, n, params, kernels, pool);
  Assignment a;
  a.cluster = std::move(out.ids);
  a.cost.resize(n);
  for (size_t i = 0; i < n; ++i) {
    a.cost[i] = spherical ? 1.0f - out.scores[i] : -out.scores[i];
    a.objective += a.cost[i];
  }
  return a;
}

// Means of the points of each cluster (partial sums per fixed chunk, reduced in order).
std::vector<size_t> update(const float* points, size_t n, size_t dim, const Assignment& a, size_t k,
                           std::vector<float>& centroids, ThreadPool& pool, unsigned threads) {
  const size_t chunk = chunkSize(n);
  const size_t tasks = (n + chunk - 1) / chunk;
  std::vector<std::vector<double>> sums(tasks);
  std::vector<std::vector<size_t>> counts(tasks);
  pool.parallelFor(tasks, threads, [&](size_t task, unsigned) {
    std::vector<double>& s = sums[task];
    std::vector<size_t>& c = counts[task];
    s.assign(k * dim, 0.0);
    c.assign(k, 0);
    const size_t end = std::min(n, (task + 1) * chunk);
    for (size_t i = task * chunk; i < end; ++i) {
      const size_t cluster = static_cast<size_t>(a.cluster[i]);
      const float* p = points + i * dim;
      double* target = s.data() + cluster * dim;
      for (size_t d = 0; d < dim; ++d) target[d] += p[d];
      ++c[cluster];
    }
  });
  std::vector<double> total(k * dim, 0.0);
  std::vector<size_t> members(k, 0);
  for (size_t t = 0; t < tasks; ++t) {
    for (size_t i = 0; i < k * dim; ++i) total[i] += sums[t][i];
    for (size_t c = 0; c < k; ++c) members[c] += counts[t][c];
  }
  for (size_t c = 0; c < k; ++c) {
    if (members[c] == 0) continue;  // left for the caller to re-seed
    for (size_t d = 0; d < dim; ++d) centroids[c * dim + d] = static_cast<float>(total[c * dim + d] / members[c]);
  }
  return members;
}

}  // namespace

std::vector<size_t> trainingSample(size_t count, size_t k, size_t maxPointsPerCentroid, uint64_t seed) {
  if (maxPointsPerCentroid == 0 || k > std::numeric_limits<size_t>::max() / maxPointsPerCentroid) return {};
  const size_t limit = k * maxPointsPerCentroid;
  if (count <= limit) return {};
  std::mt19937_64 rng(seed ^ 0x9E3779B97F4A7C15ull);  // a stream apart from the seeding's
  std::vector<size_t> order(count);
  std::iota(order.begin(), order.end(), size_t{0});
  for (size_t i = 0; i < limit; ++i) std::swap(order[i], order[std::uniform_int_distribution<size_t>(i, count - 1)(rng)]);
  order.resize(limit);
  std::sort(order.begin(), order.end());
  return order;
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
    normalizeRows(own.data(), n, dim);
  }
  if (!own.empty()) train = own.data();

  KMeansResult result;
  result.trainingPoints = n;
  result.centroids = seedPlusPlus(train, n, dim, k, rng, kernels, pool, threads);
  if (spherical) normalizeRows(result.centroids.data(), k, dim);
  Assignment current = assign(train, n, dim, result.centroids, k, spherical, kernels, pool, threads);

  for (size_t it = 1; it <= params.maxIterations; ++it) {
    const std::vector<size_t> members = update(train, n, dim, current, k, result.centroids, pool, threads);
    // Empty clusters take the worst-served points, one each, farthest first.
    std::vector<size_t> empty;
    for (size_t c = 0; c < k; ++c) if (members[c] == 0) empty.push_back(c);
    if (!empty.empty()) {
      std::vector<size_t> byCost(n);
      std::iota(byCost.begin(), byCost.end(), size_t{0});
      const size_t take = std::min(empty.size(), n);
      std::partial_sort(byCost.begin(), byCost.begin() + take, byCost.end(), [&](size_t a, size_t b) {
        return current.cost[a] > current.cost[b] || (current.cost[a] == current.cost[b] && a < b);
      });
      for (size_t e = 0; e < take; ++e) {
        const float* p = train + byCost[e] * dim;
        std::copy(p, p + dim, result.centroids.begin() + empty[e] * dim);
      }
      result.reseeded += empty.size();
    }
    if (spherical) normalizeRows(result.centroids.data(), k, dim);
    const double previous = current.objective;
    current = assign(train, n, dim, result.centroids, k, spherical, kernels, pool, threads);
    result.iterations = it;
    if (empty.empty() && previous - current.objective <= params.tolerance * std::fabs(previous)) break;
  }
  result.objective = current.objective;
  return result;
}

}  // namespace ebrix
