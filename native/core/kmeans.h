// k-means for coarse quantizers and product-quantizer codebooks.
//
// Lloyd iterations whose assignment step is the exact top-1 search of exact_search.cpp (the
// points are the queries, the centroids the rows), so it runs on the same tiled SIMD
// kernels. k-means++ seeding on a subsample (16 points per centroid), training on a seeded
// sample when the input is large, empty clusters re-seeded from the worst-served points, and
// an objective-based stop. Deterministic for a given seed whatever the thread count: partial
// sums are reduced in a fixed order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "metric.h"
#include "simd/kernels.h"
#include "thread_pool.h"

namespace ebrix {

struct KMeansParams {
  size_t k = 0;
  size_t maxIterations = 25;
  // Stop when the objective improves by less than this fraction in one iteration.
  double tolerance = 1e-4;
  uint64_t seed = 1;
  // Train on at most k × this many points (a seeded sample), 0 for all of them.
  size_t maxPointsPerCentroid = 256;
  // L2: squared distances. InnerProduct / Cosine: spherical k-means (unit-norm centroids,
  // assignment by largest inner product).
  Metric metric = Metric::L2;
  unsigned threads = 1;
  // k × dim starting centroids (a warm start) instead of k-means++; empty for k-means++.
  std::vector<float> initialCentroids;
};

struct KMeansResult {
  std::vector<float> centroids;  // k × dim
  // Sum over the training points of the squared distance to their centroid (L2), or of
  // 1 - inner product (spherical).
  double objective = 0.0;
  size_t iterations = 0;
  size_t trainingPoints = 0;
  // Empty clusters re-seeded over all iterations.
  size_t reseeded = 0;
};

// The sorted rows k-means trains on when the input has more than k × maxPointsPerCentroid of
// them; empty when it uses all. Its own random stream, so a caller may copy just these rows
// and pass them with maxPointsPerCentroid = 0 to get the same result.
std::vector<size_t> trainingSample(size_t count, size_t k, size_t maxPointsPerCentroid, uint64_t seed);

// Throws ebrix::Error(InvalidArgument) when k is 0 or larger than the number of points, and
// InvalidVector for non-finite input.
KMeansResult kmeans(const float* points, size_t count, size_t dim, const KMeansParams& params,
                    const simd::Kernels& kernels, ThreadPool& pool);

}  // namespace ebrix
