#include "pq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "error.h"
#include "flat.h"  // requireFinite
#include "kmeans.h"
#include "simd/dispatch.h"
#include "simd/fastscan.h"

namespace ebrix {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The kernels for the quantizer's own loops (rotation, tables): the level an index would use,
// scalar when EBRIX_SIMD is unusable (the index constructor reports that one). Resolved once:
// tables are built for every query (and every probed list for l2), and defaultLevel() reads
// the environment each time it is asked.
const simd::Kernels& defaultKernels() {
  static const simd::Kernels& kernels = []() -> const simd::Kernels& {
    try {
      return simd::kernelsFor(simd::defaultLevel());
    } catch (const Error&) {
      return simd::scalarKernels();
    }
  }();
  return kernels;
}

void requireTrained(bool trained) {
  if (!trained) throw Error(ErrorCode::NotTrained, "The product quantizer is not trained: call train() first");
}

unsigned poolParallelism(ThreadPool& pool) { return pool.workerCount() + 1; }

// Sub-space tables of one vector: table[j*ksub + c] = -|x_j - c|^2 (l2) or x_j·c (ip).
void subspaceTable(const float* x, const float* centroids, size_t m, size_t ksub, size_t dsub, bool l2,
                   const simd::Kernels& kernels, float* table) {
  for (size_t j = 0; j < m; ++j) {
    const float* q = x + j * dsub;
    const float* cb = centroids + j * ksub * dsub;
    float* t = table + j * ksub;
    if (dsub >= 16) {
      for (size_t c = 0; c < ksub; ++c) {
        t[c] = l2 ? -kernels.l2sq(q, cb + c * dsub, dsub) : kernels.dot(q, cb + c * dsub, dsub);
      }
    } else if (l2) {
      for (size_t c = 0; c < ksub; ++c) {
        const float* cc = cb + c * dsub;
        float s = 0.f;
        for (size_t d = 0; d < dsub; ++d) {
          const float diff = q[d] - cc[d];
          s += diff * diff;
        }
        t[c] = -s;
      }
    } else {
      for (size_t c = 0; c < ksub; ++c) {
        const float* cc = cb + c * dsub;
        float s = 0.f;
        for (size_t d = 0; d < dsub; ++d) s += q[d] * cc[d];
        t[c] = s;
      }
    }
  }
}

// Writes code `c` of sub-quantizer j into a plain-layout code.
inline void putCode(uint8_t* code, size_t j, unsigned nbits, size_t c) {
  if (nbits == 8) {
    code[j] = static_cast<uint8_t>(c);
  } else if (j & 1) {
    code[j >> 1] = static_cast<uint8_t>((code[j >> 1] & 0x0F) | (c << 4));
  } else {
    code[j >> 1] = static_cast<uint8_t>((code[j >> 1] & 0xF0) | c);
  }
}

inline size_t getCode(const uint8_t* code, size_t j, unsigned nbits) {
  if (nbits == 8) return code[j];
  return (j & 1) ? (code[j >> 1] >> 4) : (code[j >> 1] & 0x0F);
}

double squaredError(const float* a, const float* b, size_t count) {
  double s = 0;
  for (size_t i = 0; i < count; ++i) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return s;
}

// --- OPQ helpers --------------------------------------------------------------------------

// One-sided Jacobi SVD of the n × n matrix given by its columns (cols[i*n + r] = A[r][i]):
// orthogonalises the columns in place (they become σ_i u_i) and accumulates V (stored by
// columns too: v[i*n + r] = V[r][i]), so that A·V = U·S.
void jacobiSvdColumns(std::vector<double>& cols, std::vector<double>& v, size_t n, ThreadPool& pool, unsigned threads) {
  v.assign(n * n, 0.0);
  for (size_t i = 0; i < n; ++i) v[i * n + i] = 1.0;
  if (n < 2) return;
  // Round-robin (tournament) ordering: every round pairs each column with another, the pairs
  // of one round are disjoint, so they rotate in parallel with a fixed, thread-independent
  // result.
  const size_t players = n + (n & 1);
  std::vector<size_t> ring(players);
  for (size_t i = 0; i < players; ++i) ring[i] = i;
  std::vector<std::pair<size_t, size_t>> pairs;
  const double eps = 1e-13;
  for (int sweep = 0; sweep < 40; ++sweep) {
    double offMax = 0.0;
    for (size_t round = 0; round + 1 < players; ++round) {
      pairs.clear();
      for (size_t k = 0; k < players / 2; ++k) {
        size_t p = ring[k], q = ring[players - 1 - k];
        if (p >= n || q >= n) continue;
        if (p > q) std::swap(p, q);
        pairs.emplace_back(p, q);
      }
      std::vector<double> offs(pairs.size(), 0.0);
      const size_t perTask = std::max<size_t>(1, 32768 / (n + 1));
      const size_t tasks = (pairs.size() + perTask - 1) / perTask;
      pool.parallelFor(tasks, threads, [&](size_t task, unsigned) {
        const size_t end = std::min(pairs.size(), (task + 1) * perTask);
        for (size_t t = task * perTask; t < end; ++t) {
          double* a = cols.data() + pairs[t].first * n;
          double* b = cols.data() + pairs[t].second * n;
          double alpha = 0, beta = 0, gamma = 0;
          for (size_t r = 0; r < n; ++r) {
            alpha += a[r] * a[r];
            beta += b[r] * b[r];
            gamma += a[r] * b[r];
          }
          if (gamma == 0.0 || std::fabs(gamma) <= eps * std::sqrt(alpha * beta)) continue;
          offs[t] = std::fabs(gamma) / std::sqrt(alpha * beta);
          const double zeta = (beta - alpha) / (2.0 * gamma);
          const double tan = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::sqrt(1.0 + zeta * zeta));
          const double cos = 1.0 / std::sqrt(1.0 + tan * tan);
          const double sin = cos * tan;
          for (size_t r = 0; r < n; ++r) {
            const double x = a[r], y = b[r];
            a[r] = cos * x - sin * y;
            b[r] = sin * x + cos * y;
          }
          double* va = v.data() + pairs[t].first * n;
          double* vb = v.data() + pairs[t].second * n;
          for (size_t r = 0; r < n; ++r) {
            const double x = va[r], y = vb[r];
            va[r] = cos * x - sin * y;
            vb[r] = sin * x + cos * y;
          }
        }
      });
      for (double o : offs) offMax = std::max(offMax, o);
      // Rotate the ring, keeping ring[0] fixed.
      std::rotate(ring.begin() + 1, ring.end() - 1, ring.end());
    }
    if (offMax <= 1e-10) break;
  }
}

// The orthogonal R minimising sum_i |R x_i - y_i|^2 given M = sum_i x_i y_i^T (n × n,
// row-major): with M = U S V^T, R = V U^T. Returned row-major as floats.
// `warmV` (by columns; empty the first time) is the V of the previous OPQ step: the SVD runs
// on M·V_prev, whose columns are already nearly orthogonal, so Jacobi needs few sweeps; it
// returns with this step's V.
std::vector<float> procrustes(const std::vector<double>& mRowMajor, size_t n, ThreadPool& pool, unsigned threads,
                              std::vector<double>& warmV) {
  std::vector<double> cols(n * n);
  if (warmV.size() != n * n) {
    // Columns of M: cols[i*n + r] = M[r][i].
    for (size_t r = 0; r < n; ++r)
      for (size_t i = 0; i < n; ++i) cols[i * n + r] = mRowMajor[r * n + i];
  } else {
    // Column i of M·V_prev: cols[i*n + r] = M[r][:] · V_prev[:, i].
    pool.parallelFor(n, threads, [&](size_t i, unsigned) {
      const double* vi = warmV.data() + i * n;
      for (size_t r = 0; r < n; ++r) {
        const double* mr = mRowMajor.data() + r * n;
        double s = 0;
        for (size_t k = 0; k < n; ++k) s += mr[k] * vi[k];
        cols[i * n + r] = s;
      }
    });
  }
  std::vector<double> v;
  jacobiSvdColumns(cols, v, n, pool, threads);
  if (warmV.size() == n * n) {
    // V = V_prev · W: column i = sum_k V_prev[:, k] W[k][i].
    std::vector<double> composed(n * n, 0.0);
    pool.parallelFor(n, threads, [&](size_t i, unsigned) {
      double* out = composed.data() + i * n;
      for (size_t k = 0; k < n; ++k) {
        const double w = v[i * n + k];
        const double* vk = warmV.data() + k * n;
        for (size_t r = 0; r < n; ++r) out[r] += w * vk[r];
      }
    });
    v = std::move(composed);
  }
  warmV = v;
  // U's columns: the normalised columns; tiny ones (rank-deficient M) are completed by
  // Gram-Schmidt so that U stays orthogonal. Largest first, so the completion is stable.
  std::vector<double> norms(n);
  double largest = 0;
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t r = 0; r < n; ++r) s += cols[i * n + r] * cols[i * n + r];
    norms[i] = std::sqrt(s);
    largest = std::max(largest, norms[i]);
  }
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return norms[a] > norms[b]; });
  std::vector<double> u(n * n);  // by columns
  std::vector<size_t> done;
  size_t nextBasis = 0;
  for (size_t i : order) {
    double* ui = u.data() + i * n;
    const bool usable = largest > 0 && norms[i] > 1e-9 * largest;
    for (int attempt = 0;; ++attempt) {
      if (usable && attempt == 0) {
        for (size_t r = 0; r < n; ++r) ui[r] = cols[i * n + r] / norms[i];
      } else {
        std::fill(ui, ui + n, 0.0);
        ui[nextBasis++ % n] = 1.0;
      }
      // Re-orthogonalise against the columns already set (twice, for accuracy).
      for (int pass = 0; pass < 2; ++pass) {
        for (size_t d : done) {
          const double* ud = u.data() + d * n;
          double dotp = 0;
          for (size_t r = 0; r < n; ++r) dotp += ui[r] * ud[r];
          for (size_t r = 0; r < n; ++r) ui[r] -= dotp * ud[r];
        }
      }
      double s = 0;
      for (size_t r = 0; r < n; ++r) s += ui[r] * ui[r];
      s = std::sqrt(s);
      if (s > 1e-6 || attempt > static_cast<int>(2 * n)) {
        for (size_t r = 0; r < n; ++r) ui[r] /= s;
        break;
      }
    }
    done.push_back(i);
  }
  // R[a][b] = sum_i V[a][i] U[b][i]: row a accumulates U's columns (contiguous).
  std::vector<float> rotation(n * n);
  pool.parallelFor(n, threads, [&](size_t a, unsigned) {
    std::vector<double> row(n, 0.0);
    for (size_t i = 0; i < n; ++i) {
      const double via = v[i * n + a];
      const double* ui = u.data() + i * n;
      for (size_t b = 0; b < n; ++b) row[b] += via * ui[b];
    }
    for (size_t b = 0; b < n; ++b) rotation[a * n + b] = static_cast<float>(row[b]);
  });
  return rotation;
}

}  // namespace

ProductQuantizer::ProductQuantizer(size_t dim, size_t m, unsigned nbits) : dim_(dim), m_(m), nbits_(nbits) {
  if (dim == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for dim but received 0");
  if (m == 0 || dim % m != 0) {
    throw Error(ErrorCode::InvalidArgument, "Expected m to be a positive divisor of dim (" + std::to_string(dim) +
                                                ") but received " + std::to_string(m));
  }
  if (nbits != 4 && nbits != 8) {
    throw Error(ErrorCode::InvalidArgument, "Expected nbits to be 4 or 8 but received " + std::to_string(nbits));
  }
}

void ProductQuantizer::load(std::vector<float> centroids, std::vector<float> rotation) {
  if (centroids.size() != ksub() * dim_) {
    throw Error(ErrorCode::InvalidArgument, "Expected " + std::to_string(ksub() * dim_) +
                                                " codebook floats but received " + std::to_string(centroids.size()));
  }
  if (!rotation.empty() && rotation.size() != dim_ * dim_) {
    throw Error(ErrorCode::InvalidArgument, "Expected 0 or " + std::to_string(dim_ * dim_) +
                                                " rotation floats but received " + std::to_string(rotation.size()));
  }
  setCodebooks(std::move(centroids));
  rotation_ = std::move(rotation);
}

void ProductQuantizer::setCodebooks(std::vector<float> centroids) {
  centroids_ = std::move(centroids);
  const size_t ks = ksub(), ds = dsub();
  transposed_.resize(centroids_.size());
  for (size_t j = 0; j < m_; ++j) {
    const float* cb = centroids_.data() + j * ks * ds;
    float* t = transposed_.data() + j * ks * ds;
    for (size_t c = 0; c < ks; ++c)
      for (size_t d = 0; d < ds; ++d) t[d * ks + c] = cb[c * ds + d];
  }
}

namespace {

// Trains the m codebooks on n (rotated) points; `warm` (may be empty) are starting centroids.
// Sub-spaces train concurrently in waves of `threads` (one thread each) when there are enough
// of them, else one after another with every thread; k-means is deterministic whatever its
// thread count, so the result is the same either way. `doneSubspaces(count)` is called on
// the calling thread between waves.
std::vector<float> trainCodebooks(const float* x, size_t n, size_t dim, size_t m, size_t ksub,
                                  const PqTrainParams& params, size_t iterations, const std::vector<float>& warm,
                                  const simd::Kernels& kernels, ThreadPool& pool,
                                  const std::function<void(size_t)>& doneSubspaces) {
  const size_t dsub = dim / m;
  const unsigned threads = std::max(1u, params.threads);
  const bool concurrent = threads > 1 && m >= 2;
  const size_t wave = concurrent ? std::min<size_t>(threads, m) : 1;
  std::vector<float> centroids(ksub * dim);
  std::vector<std::vector<float>> subs(wave);
  auto trainOne = [&](size_t j, std::vector<float>& sub, unsigned kmeansThreads) {
    sub.resize(n * dsub);
    for (size_t i = 0; i < n; ++i) std::copy(x + i * dim + j * dsub, x + i * dim + (j + 1) * dsub, sub.begin() + i * dsub);
    KMeansParams kp;
    kp.k = ksub;
    kp.maxIterations = std::max<size_t>(1, iterations);
    kp.seed = splitmix64(params.seed ^ (0x5851F42D4C957F2Dull * (j + 1)));
    kp.maxPointsPerCentroid = 0;  // the caller sampled
    kp.metric = Metric::L2;
    kp.threads = kmeansThreads;
    if (!warm.empty()) kp.initialCentroids.assign(warm.begin() + j * ksub * dsub, warm.begin() + (j + 1) * ksub * dsub);
    const KMeansResult r = kmeans(sub.data(), n, dsub, kp, kernels, pool);
    std::copy(r.centroids.begin(), r.centroids.end(), centroids.begin() + j * ksub * dsub);
  };
  for (size_t first = 0; first < m; first += wave) {
    const size_t count = std::min(wave, m - first);
    if (count == 1) {
      trainOne(first, subs[0], threads);
    } else {
      pool.parallelFor(count, static_cast<unsigned>(count), [&](size_t t, unsigned) { trainOne(first + t, subs[t], 1); });
    }
    if (doneSubspaces) doneSubspaces(first + count);
  }
  return centroids;
}

// out = R·x for n vectors.
void applyRotation(const std::vector<float>& rotation, size_t dim, const float* x, size_t n, float* out,
                   const simd::Kernels& kernels) {
  for (size_t i = 0; i < n; ++i) {
    kernels.scanRows(x + i * dim, rotation.data(), dim, dim, nullptr, out + i * dim);
  }
}

}  // namespace

void ProductQuantizer::train(const float* vectors, size_t n, const PqTrainParams& params, const simd::Kernels& kernels,
                             ThreadPool& pool) {
  if (n < ksub()) {
    throw Error(ErrorCode::InvalidArgument, "Expected at least " + std::to_string(ksub()) +
                                                " training vectors (2^nbits) but received " + std::to_string(n));
  }
  requireFinite(vectors, n, dim_, "vectors");
  const size_t ks = ksub();
  const unsigned threads = std::max(1u, params.threads);

  // One seeded sample for every sub-space (and every OPQ step).
  std::vector<float> x;
  size_t nt = n;
  const std::vector<size_t> sample = trainingSample(n, ks, params.maxPointsPerCentroid, params.seed);
  if (!sample.empty()) {
    nt = sample.size();
    x.resize(nt * dim_);
    for (size_t i = 0; i < nt; ++i) std::copy(vectors + sample[i] * dim_, vectors + (sample[i] + 1) * dim_, x.begin() + i * dim_);
  } else {
    x.assign(vectors, vectors + n * dim_);
  }

  auto report = [&](double f) {
    if (params.progress) params.progress(std::min(1.0, std::max(0.0, f)));
  };

  if (!params.opq) {
    std::vector<float> centroids = trainCodebooks(x.data(), nt, dim_, m_, ks, params, params.maxIterations, {},
                                                  kernels, pool, [&](size_t done) { report(double(done) / m_); });
    setCodebooks(std::move(centroids));
    rotation_.clear();
    return;
  }

  // OPQ (non-parametric, Ge et al. 2013): start from the identity, so the first state is
  // plain PQ; alternate (codes fixed) an orthogonal Procrustes update of R with (R fixed) a
  // few warm-started k-means iterations of the codebooks. The state of least quantization
  // error on the training sample is kept, so OPQ never does worse than PQ there.
  const size_t steps = params.opqIterations + 2;
  size_t step = 0;
  auto stepProgress = [&](size_t done) { report((double(step) + double(done) / m_) / steps); };

  std::vector<float> rotation(dim_ * dim_, 0.f);
  for (size_t i = 0; i < dim_; ++i) rotation[i * dim_ + i] = 1.f;
  std::vector<float> xr = x;  // R·x
  std::vector<float> centroids =
      trainCodebooks(xr.data(), nt, dim_, m_, ks, params, params.maxIterations, {}, kernels, pool, stepProgress);

  std::vector<uint8_t> codes(nt * codeBytes());
  std::vector<float> y(nt * dim_);
  auto quantizationError = [&](const std::vector<float>& c) {
    ProductQuantizer probe(dim_, m_, nbits_);
    probe.load(c, {});
    probe.encode(xr.data(), nt, codes.data(), pool);
    probe.decode(codes.data(), nt, y.data());
    return squaredError(xr.data(), y.data(), nt * dim_);
  };
  double bestError = quantizationError(centroids);
  std::vector<float> bestRotation = rotation, bestCentroids = centroids;

  const size_t innerIterations = std::min<size_t>(4, std::max<size_t>(1, params.maxIterations));
  std::vector<double> mt(dim_ * dim_);
  std::vector<double> warmV;
  std::vector<float> xt, yt;
  const size_t chunk = 256;
  for (size_t it = 0; it <= params.opqIterations; ++it) {
    ++step;
    const bool last = it == params.opqIterations;
    if (!last) {
      // y = decode(encode(R·x)), left in `y` by quantizationError of the current state.
      // M = sum_i x_i y_i^T, accumulated in chunks of transposed rows with the dot kernel.
      std::fill(mt.begin(), mt.end(), 0.0);
      xt.resize(dim_ * chunk);
      yt.resize(dim_ * chunk);
      for (size_t start = 0; start < nt; start += chunk) {
        const size_t len = std::min(chunk, nt - start);
        for (size_t i = 0; i < len; ++i) {
          for (size_t d = 0; d < dim_; ++d) {
            xt[d * chunk + i] = x[(start + i) * dim_ + d];
            yt[d * chunk + i] = y[(start + i) * dim_ + d];
          }
        }
        pool.parallelFor(dim_, threads, [&](size_t a, unsigned) {
          for (size_t b = 0; b < dim_; ++b) mt[a * dim_ + b] += kernels.dot(xt.data() + a * chunk, yt.data() + b * chunk, len);
        });
      }
      rotation = procrustes(mt, dim_, pool, threads, warmV);
      applyRotation(rotation, dim_, x.data(), nt, xr.data(), kernels);
    }
    // Codebooks for the new rotation: a few warm iterations, the full count at the end.
    centroids = trainCodebooks(xr.data(), nt, dim_, m_, ks, params, last ? params.maxIterations : innerIterations,
                               centroids, kernels, pool, stepProgress);
    const double error = quantizationError(centroids);
    if (error < bestError) {
      bestError = error;
      bestRotation = rotation;
      bestCentroids = centroids;
    }
  }
  report(1.0);
  setCodebooks(std::move(bestCentroids));
  rotation_ = std::move(bestRotation);
}

void ProductQuantizer::rotate(const float* vectors, size_t n, float* out) const {
  if (rotation_.empty()) {
    std::copy(vectors, vectors + n * dim_, out);
    return;
  }
  applyRotation(rotation_, dim_, vectors, n, out, defaultKernels());
}

void ProductQuantizer::encode(const float* vectors, size_t n, uint8_t* codes, ThreadPool& pool) const {
  requireTrained(trained());
  const size_t ks = ksub(), ds = dsub(), bytes = codeBytes();
  if (n == 0) return;
  // Codebooks transposed per sub-space (dsub × ksub), so the distances to all ksub
  // centroids accumulate over contiguous, vectorisable rows.
  std::vector<float> transposed(ks * dim_);
  for (size_t j = 0; j < m_; ++j) {
    const float* cb = centroids_.data() + j * ks * ds;
    float* t = transposed.data() + j * ks * ds;
    for (size_t c = 0; c < ks; ++c)
      for (size_t d = 0; d < ds; ++d) t[d * ks + c] = cb[c * ds + d];
  }
  const unsigned slots = poolParallelism(pool);
  const size_t perTask = 64;
  pool.parallelFor((n + perTask - 1) / perTask, slots, [&](size_t task, unsigned) {
    float dist[256];
    const size_t end = std::min(n, (task + 1) * perTask);
    for (size_t i = task * perTask; i < end; ++i) {
      const float* x = vectors + i * dim_;
      uint8_t* code = codes + i * bytes;
      std::fill(code, code + bytes, uint8_t{0});
      for (size_t j = 0; j < m_; ++j) {
        const float* t = transposed.data() + j * ks * ds;
        const float* q = x + j * ds;
        for (size_t c = 0; c < ks; ++c) {
          const float diff = q[0] - t[c];
          dist[c] = diff * diff;
        }
        for (size_t d = 1; d < ds; ++d) {
          const float qd = q[d];
          const float* row = t + d * ks;
          for (size_t c = 0; c < ks; ++c) {
            const float diff = qd - row[c];
            dist[c] += diff * diff;
          }
        }
        size_t best = 0;
        for (size_t c = 1; c < ks; ++c) {
          if (dist[c] < dist[best]) best = c;
        }
        putCode(code, j, nbits_, best);
      }
    }
  });
}

void ProductQuantizer::decode(const uint8_t* codes, size_t n, float* out) const {
  requireTrained(trained());
  const size_t ks = ksub(), ds = dsub(), bytes = codeBytes();
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* code = codes + i * bytes;
    for (size_t j = 0; j < m_; ++j) {
      const float* c = centroids_.data() + (j * ks + getCode(code, j, nbits_)) * ds;
      std::copy(c, c + ds, out + i * dim_ + j * ds);
    }
  }
}

void ProductQuantizer::computeTable(const float* query, Metric metric, float* table) const {
  requireTrained(trained());
  const size_t ks = ksub(), ds = dsub();
  if (ds >= 16) {
    subspaceTable(query, centroids_.data(), m_, ks, ds, metric == Metric::L2, defaultKernels(), table);
    return;
  }
  // Small sub-spaces: one pass per dimension over all ksub centroids (contiguous in the
  // transposed codebooks), summing the dimensions in the same order as subspaceTable, so the
  // entries are the same floats.
  const bool l2 = metric == Metric::L2;
  for (size_t j = 0; j < m_; ++j) {
    const float* q = query + j * ds;
    const float* tc = transposed_.data() + j * ks * ds;
    float* t = table + j * ks;
    if (l2) {
      for (size_t c = 0; c < ks; ++c) {
        const float diff = q[0] - tc[c];
        t[c] = diff * diff;
      }
      for (size_t d = 1; d < ds; ++d) {
        const float qd = q[d];
        const float* row = tc + d * ks;
        for (size_t c = 0; c < ks; ++c) {
          const float diff = qd - row[c];
          t[c] += diff * diff;
        }
      }
      for (size_t c = 0; c < ks; ++c) t[c] = -t[c];
    } else {
      for (size_t c = 0; c < ks; ++c) t[c] = q[0] * tc[c];
      for (size_t d = 1; d < ds; ++d) {
        const float qd = q[d];
        const float* row = tc + d * ks;
        for (size_t c = 0; c < ks; ++c) t[c] += qd * row[c];
      }
    }
  }
}

void ProductQuantizer::scan(const float* table, const uint8_t* codes, size_t n, float bias, float* scores) const {
  const size_t ks = ksub(), bytes = codeBytes();
  if (nbits_ == 8) {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* code = codes + i * bytes;
      float s = bias;
      for (size_t j = 0; j < m_; ++j) s += table[j * ks + code[j]];
      scores[i] = s;
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* code = codes + i * bytes;
      float s = bias;
      for (size_t j = 0; j < m_; ++j) s += table[j * ks + getCode(code, j, 4)];
      scores[i] = s;
    }
  }
}

// --- fast-scan ------------------------------------------------------------------------------

size_t fastScanBytes(size_t n, size_t m) {
  const size_t blocks = (n + kFastScanBlock - 1) / kFastScanBlock;
  return blocks * ((m + 1) / 2) * kFastScanBlock;
}

void packFastScan(const uint8_t* codes, size_t n, size_t m, uint8_t* packed) {
  const size_t pairs = (m + 1) / 2;  // == plain code bytes
  const size_t blocks = (n + kFastScanBlock - 1) / kFastScanBlock;
  const uint8_t lastMask = (m & 1) ? 0x0F : 0xFF;  // odd m: the high nibble of the last byte is unused
  for (size_t b = 0; b < blocks; ++b) {
    uint8_t* block = packed + b * pairs * kFastScanBlock;
    for (size_t p = 0; p < pairs; ++p) {
      uint8_t* group = block + p * kFastScanBlock;
      const uint8_t mask = p + 1 == pairs ? lastMask : 0xFF;
      for (size_t i = 0; i < 16; ++i) {
        const size_t v0 = b * kFastScanBlock + i, v1 = v0 + 16;
        group[2 * i] = v0 < n ? static_cast<uint8_t>(codes[v0 * pairs + p] & mask) : 0;
        group[2 * i + 1] = v1 < n ? static_cast<uint8_t>(codes[v1 * pairs + p] & mask) : 0;
      }
    }
  }
}

void unpackFastScan(const uint8_t* packed, size_t first, size_t n, size_t m, uint8_t* codes) {
  const size_t pairs = (m + 1) / 2;
  for (size_t k = 0; k < n; ++k) {
    const size_t v = first + k, b = v / kFastScanBlock, i = v % kFastScanBlock;
    const uint8_t* block = packed + b * pairs * kFastScanBlock;
    const size_t at = i < 16 ? 2 * i : 2 * (i - 16) + 1;
    for (size_t p = 0; p < pairs; ++p) codes[k * pairs + p] = block[p * kFastScanBlock + at];
  }
}

QuantizedTable quantizeTable(const float* table, size_t m) {
  QuantizedTable q;
  const size_t padded = m + (m & 1);
  q.entries.assign(padded * 16, 0);
  std::vector<float> mins(m);
  float range = 0.f;
  double offset = 0.0;
  for (size_t j = 0; j < m; ++j) {
    const float* t = table + j * 16;
    float lo = t[0], hi = t[0];
    for (size_t c = 1; c < 16; ++c) {
      lo = std::min(lo, t[c]);
      hi = std::max(hi, t[c]);
    }
    mins[j] = lo;
    range = std::max(range, hi - lo);
    offset += lo;
  }
  q.scale = range > 0.f ? range / 255.f : 1.f;
  q.offset = static_cast<float>(offset);
  // Built per query (and per list for l2), so kept to a multiply and a truncation: the
  // shifted values are >= 0, and +0.5 rounds them to nearest (halves up).
  const float inverse = 1.f / q.scale;
  for (size_t j = 0; j < m; ++j) {
    const float* t = table + j * 16;
    uint8_t* e = q.entries.data() + j * 16;
    for (size_t c = 0; c < 16; ++c) e[c] = static_cast<uint8_t>(std::min(255.f, (t[c] - mins[j]) * inverse + 0.5f));
  }
  return q;
}

void fastScan(const QuantizedTable& table, size_t m, const uint8_t* packed, size_t nBlocks, uint16_t* out,
              simd::Level level) {
  const size_t pairs = (m + 1) / 2;
  if (table.entries.size() < pairs * 2 * 16) {
    throw Error(ErrorCode::InvalidArgument, "Expected a quantized table of " + std::to_string(pairs * 2 * 16) +
                                                " entries but received " + std::to_string(table.entries.size()));
  }
  simd::kernelsFor(level);  // throws UnsupportedSimd when this CPU cannot run the level
  const uint8_t* entries = table.entries.data();
  switch (level) {
#if defined(__x86_64__) || defined(_M_X64)
    case simd::Level::Avx2: simd::fastScanAvx2(entries, pairs, packed, nBlocks, out); return;
    case simd::Level::Avx512: simd::fastScanAvx512(entries, pairs, packed, nBlocks, out); return;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    case simd::Level::Neon: simd::fastScanNeon(entries, pairs, packed, nBlocks, out); return;
#endif
    default: simd::fastScanScalar(entries, pairs, packed, nBlocks, out); return;
  }
}

}  // namespace ebrix
