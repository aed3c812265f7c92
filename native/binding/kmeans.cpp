// kmeans(points, dim, k, options) -> Promise<{ centroids, objective, iterations, trainingPoints, reseeded }>
// lib/kmeans.ts validates the options; this layer re-checks what memory safety depends on.
#include "kmeans.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../core/kmeans.h"
#include "../core/simd/dispatch.h"
#include "args.h"
#include "errors.h"

namespace ebrix::binding {
namespace {

class KMeansWorker : public PromiseWorker {
 public:
  KMeansWorker(Napi::Env env, std::vector<float> points, size_t count, size_t dim, KMeansParams params,
               const simd::Kernels& kernels)
      : PromiseWorker(env), points_(std::move(points)), count_(count), dim_(dim), params_(params), kernels_(kernels) {}

 protected:
  void Run() override { result_ = kmeans(points_.data(), count_, dim_, params_, kernels_, ThreadPool::shared()); }

  Napi::Value Resolve(Napi::Env env) override {
    auto centroids = Napi::Float32Array::New(env, result_.centroids.size());
    std::memcpy(centroids.Data(), result_.centroids.data(), result_.centroids.size() * sizeof(float));
    Napi::Object out = Napi::Object::New(env);
    out.Set("centroids", centroids);
    out.Set("objective", Napi::Number::New(env, result_.objective));
    out.Set("iterations", Napi::Number::New(env, static_cast<double>(result_.iterations)));
    out.Set("trainingPoints", Napi::Number::New(env, static_cast<double>(result_.trainingPoints)));
    out.Set("reseeded", Napi::Number::New(env, static_cast<double>(result_.reseeded)));
    return out;
  }

 private:
  std::vector<float> points_;
  size_t count_, dim_;
  KMeansParams params_;
  const simd::Kernels& kernels_;
  KMeansResult result_;
};

Napi::Value kmeansAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, {
    auto points = requireFloat32(info[0], "points");
    if (!info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsObject()) throwInvalid(env, "Expected (points, dim, k, options)");
    const double dimValue = info[1].As<Napi::Number>().DoubleValue();
    if (!(dimValue >= 1 && dimValue <= (1 << 20)) || dimValue != std::floor(dimValue)) throwInvalid(env, "Expected a positive integer for dim");
    const size_t dim = static_cast<size_t>(dimValue);
    if (points.ElementLength() % dim != 0) {
      throw makeError(env, {"EBRIX_DIM_MISMATCH", "Expected a multiple of dim " + std::to_string(dim) +
                                                      " floats for points but received " + std::to_string(points.ElementLength())});
    }
    const size_t count = points.ElementLength() / dim;
    Napi::Object options = info[3].As<Napi::Object>();
    KMeansParams params;
    const double k = info[2].As<Napi::Number>().DoubleValue();
    if (!(k >= 1 && k <= static_cast<double>(count)) || k != std::floor(k)) {
      throwInvalid(env, "Expected k from 1 to the number of points (" + std::to_string(count) + ")");
    }
    params.k = static_cast<size_t>(k);
    params.maxIterations = countOption(options, "maxIterations", 25);
    params.tolerance = numberOption(options, "tolerance", 1e-4);
    params.seed = static_cast<uint64_t>(countOption(options, "seed", 1));
    params.maxPointsPerCentroid = countOption(options, "maxPointsPerCentroid", 256);
    params.threads = static_cast<unsigned>(std::max<size_t>(1, countOption(options, "threads", ThreadPool::shared().threadCount())));
    const Napi::Value metric = options.Get("metric");
    if (!metric.IsUndefined()) {
      if (!metric.IsString() || !parseMetric(metric.As<Napi::String>().Utf8Value(), &params.metric)) {
        throwInvalid(env, "Expected 'ip', 'cosine' or 'l2' for metric");
      }
    }
    const Napi::Value simdName = options.Get("simd");
    simd::Level level;
    if (simdName.IsString()) {
      if (!simd::parseLevel(simdName.As<Napi::String>().Utf8Value(), &level)) throwInvalid(env, "Expected a SIMD level for simd");
    } else {
      level = simd::defaultLevel();
    }
    const simd::Kernels& kernels = simd::kernelsFor(level);
    const Napi::Value initial = options.Get("initialCentroids");
    if (!initial.IsUndefined()) {
      auto centroids = requireFloat32(initial, "initialCentroids");
      params.initialCentroids.assign(centroids.Data(), centroids.Data() + centroids.ElementLength());
    }
    // Copy only the rows k-means will read, here on the main thread: the caller's buffer may be
    // detached or changed while the worker runs.
    const std::vector<size_t> sample = trainingSample(count, params.k, params.maxPointsPerCentroid, params.seed);
    std::vector<float> rows;
    size_t rowCount = count;
    if (sample.empty()) {
      rows.assign(points.Data(), points.Data() + count * dim);
    } else {
      rowCount = sample.size();
      rows.resize(rowCount * dim);
      for (size_t i = 0; i < rowCount; ++i) std::memcpy(rows.data() + i * dim, points.Data() + sample[i] * dim, dim * sizeof(float));
    }
    params.maxPointsPerCentroid = 0;  // the sample is taken
    return (new KMeansWorker(env, std::move(rows), rowCount, dim, params, kernels))->Start();
  })
}

}  // namespace

void initKMeans(Napi::Env env, Napi::Object exports) {
  exports.Set("kmeans", Napi::Function::New(env, kmeansAsync, "kmeans"));
}

}  // namespace ebrix::binding
