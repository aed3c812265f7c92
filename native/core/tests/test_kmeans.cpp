#include <cmath>
#include <random>

#include "../error.h"
#include "../kmeans.h"
#include "../simd/dispatch.h"
#include "check.h"

using namespace ebrix;

namespace {

struct Blobs {
  std::vector<float> points;
  std::vector<float> centres;
};

// k well-separated Gaussian blobs (centres ~100 apart, spread 1).
Blobs blobs(size_t k, size_t perBlob, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Blobs b;
  b.centres.resize(k * dim);
  for (auto& x : b.centres) x = normal(rng) * 100.0f;
  for (size_t i = 0; i < k * perBlob; ++i) {
    const float* c = b.centres.data() + (i % k) * dim;
    for (size_t d = 0; d < dim; ++d) b.points.push_back(c[d] + normal(rng));
  }
  return b;
}

double nearestSquared(const float* p, const std::vector<float>& centroids, size_t k, size_t dim) {
  double best = 1e300;
  for (size_t c = 0; c < k; ++c) {
    double s = 0;
    for (size_t d = 0; d < dim; ++d) s += (double(p[d]) - centroids[c * dim + d]) * (double(p[d]) - centroids[c * dim + d]);
    best = std::min(best, s);
  }
  return best;
}

}  // namespace

TEST_CASE("kmeans.recovers_separated_blobs_on_every_isa") {
  const size_t k = 8, dim = 17, perBlob = 250;
  const Blobs b = blobs(k, perBlob, dim, 3);
  for (simd::Level level : simd::supportedLevels()) {
    KMeansParams params;
    params.k = k;
    params.seed = 5;
    params.threads = 2;
    const KMeansResult r = kmeans(b.points.data(), k * perBlob, dim, params, simd::kernelsFor(level), ThreadPool::shared());
    for (size_t c = 0; c < k; ++c) {
      CHECK_MSG(nearestSquared(b.centres.data() + c * dim, r.centroids, k, dim) < 1.0, simd::levelName(level) << " blob " << c);
    }
    // Within-blob variance is dim per point.
    CHECK_MSG(std::fabs(r.objective / (k * perBlob) - dim) < 0.15 * dim, "objective " << r.objective);
    CHECK(r.trainingPoints == k * perBlob);
    CHECK(r.iterations >= 1);
  }
}

TEST_CASE("kmeans.deterministic_across_thread_counts_and_monotone") {
  const size_t k = 40, dim = 9;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> points(20000 * dim);
  for (auto& x : points) x = normal(rng);
  const simd::Kernels& kernels = simd::kernelsFor(simd::bestLevel());
  KMeansParams params;
  params.k = k;
  params.seed = 11;
  params.threads = 1;
  const KMeansResult one = kmeans(points.data(), 20000, dim, params, kernels, ThreadPool::shared());
  params.threads = 3;
  const KMeansResult three = kmeans(points.data(), 20000, dim, params, kernels, ThreadPool::shared());
  CHECK(one.centroids == three.centroids);
  CHECK(one.objective == three.objective);
  params.maxIterations = 1;
  const KMeansResult early = kmeans(points.data(), 20000, dim, params, kernels, ThreadPool::shared());
  CHECK(one.objective <= early.objective);
  params.maxIterations = 25;
  params.seed = 12;
  const KMeansResult other = kmeans(points.data(), 20000, dim, params, kernels, ThreadPool::shared());
  CHECK(other.centroids != one.centroids);
}

TEST_CASE("kmeans.samples_large_inputs_and_repairs_empty_clusters") {
  const size_t dim = 4;
  // 10 distinct points, each repeated 100 times, and k = 10: every cluster must end up on one.
  std::vector<float> points;
  for (size_t i = 0; i < 1000; ++i)
    for (size_t d = 0; d < dim; ++d) points.push_back(static_cast<float>((i % 10) * 10 + d));
  KMeansParams params;
  params.k = 10;
  params.threads = 2;
  const simd::Kernels& kernels = simd::kernelsFor(simd::bestLevel());
  const KMeansResult r = kmeans(points.data(), 1000, dim, params, kernels, ThreadPool::shared());
  CHECK_MSG(r.objective < 1e-6, "objective " << r.objective);
  params.maxPointsPerCentroid = 20;
  const KMeansResult sampled = kmeans(points.data(), 1000, dim, params, kernels, ThreadPool::shared());
  CHECK(sampled.trainingPoints == 200);
}

TEST_CASE("kmeans.reseeds_an_empty_cluster_and_stops_when_points_run_out") {
  const size_t k = 4, dim = 6, perBlob = 200;
  const Blobs b = blobs(k, perBlob, dim, 21);
  KMeansParams params;
  params.k = k;
  params.threads = 2;
  // Start from the true centres but put the last centroid far from every point: its cluster
  // is empty after the first pass, and blob 3 is served by other centroids, badly.
  params.initialCentroids.assign(b.centres.begin(), b.centres.end());
  for (size_t d = 0; d < dim; ++d) params.initialCentroids[3 * dim + d] = 1e4f;
  const simd::Kernels& kernels = simd::kernelsFor(simd::bestLevel());
  const KMeansResult r = kmeans(b.points.data(), k * perBlob, dim, params, kernels, ThreadPool::shared());
  CHECK_MSG(r.reseeded >= 1, "reseeded " << r.reseeded);
  // After the repair every blob has its own centroid again.
  for (size_t c = 0; c < k; ++c) CHECK_MSG(nearestSquared(b.centres.data() + c * dim, r.centroids, k, dim) < 1.0, "blob " << c);
  // Fewer distinct points (3) than k (4): one cluster stays empty, and that must not keep the
  // iterations going to the limit.
  std::vector<float> few;
  for (size_t i = 0; i < 300; ++i) few.insert(few.end(), {float(i % 3), 0, 0, 0, 0, 0});
  KMeansParams p2;
  p2.k = 4;
  const KMeansResult r2 = kmeans(few.data(), 300, dim, p2, kernels, ThreadPool::shared());
  CHECK(r2.objective == 0.0);
  CHECK_MSG(r2.iterations < p2.maxIterations, "iterations " << r2.iterations);
  p2.initialCentroids.assign(3, 0.0f);
  CHECK_THROWS_CODE(kmeans(few.data(), 300, dim, p2, kernels, ThreadPool::shared()), ErrorCode::DimMismatch);
}

TEST_CASE("kmeans.sampling_in_the_caller_equals_sampling_inside") {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  const size_t dim = 8, count = 20000;
  std::vector<float> points(count * dim);
  for (auto& x : points) x = normal(rng);
  KMeansParams params;
  params.k = 16;
  params.maxPointsPerCentroid = 100;
  params.seed = 77;
  params.threads = 2;
  const simd::Kernels& kernels = simd::kernelsFor(simd::bestLevel());
  const KMeansResult inside = kmeans(points.data(), count, dim, params, kernels, ThreadPool::shared());
  const std::vector<size_t> rows = trainingSample(count, params.k, params.maxPointsPerCentroid, params.seed);
  CHECK(rows.size() == 1600);
  std::vector<float> copied;
  for (size_t r : rows) copied.insert(copied.end(), points.begin() + r * dim, points.begin() + (r + 1) * dim);
  params.maxPointsPerCentroid = 0;
  const KMeansResult outside = kmeans(copied.data(), rows.size(), dim, params, kernels, ThreadPool::shared());
  CHECK(inside.centroids == outside.centroids);
}

TEST_CASE("kmeans.spherical_centroids_are_unit_norm") {
  const size_t k = 4, dim = 8;
  const Blobs b = blobs(k, 100, dim, 9);
  KMeansParams params;
  params.k = k;
  params.metric = Metric::Cosine;
  params.threads = 2;
  const KMeansResult r = kmeans(b.points.data(), k * 100, dim, params, simd::kernelsFor(simd::bestLevel()), ThreadPool::shared());
  for (size_t c = 0; c < k; ++c) {
    double norm = 0;
    for (size_t d = 0; d < dim; ++d) norm += double(r.centroids[c * dim + d]) * r.centroids[c * dim + d];
    CHECK_MSG(std::fabs(norm - 1.0) < 1e-5, "centroid " << c << " norm " << norm);
  }
  CHECK(r.objective >= 0 && r.objective < 0.05 * k * 100);
}

TEST_CASE("kmeans.bad_input") {
  std::vector<float> points(40, 1.0f);
  KMeansParams params;
  const simd::Kernels& kernels = simd::scalarKernels();
  params.k = 0;
  CHECK_THROWS_CODE(kmeans(points.data(), 10, 4, params, kernels, ThreadPool::shared()), ErrorCode::InvalidArgument);
  params.k = 11;
  CHECK_THROWS_CODE(kmeans(points.data(), 10, 4, params, kernels, ThreadPool::shared()), ErrorCode::InvalidArgument);
  params.k = 2;
  points[5] = std::nanf("");
  CHECK_THROWS_CODE(kmeans(points.data(), 10, 4, params, kernels, ThreadPool::shared()), ErrorCode::InvalidVector);
}
