// JavaScript class GpuIvfPqIndex over ebrix::gpu::GpuIvfPqIndex (CUDA addon only): the
// IvfPqIndex class of ../ivfpq_wrap.h, with a device ordinal for argument 7 and memory()
// split into host and device bytes.
#include "gpu_ivfpq_index.h"

#include "../../cuda/gpu_ivfpq.h"
#include "../ivfpq_wrap.h"
#include "gpu_flat_index.h"  // requireDevice

namespace ebrix::binding {
namespace {

struct GpuIvfPq {
  using Index = gpu::GpuIvfPqIndex;
  static constexpr const char* kName = "GpuIvfPqIndex";
  // Filters come compiled from lib/ as allow bitsets, and lib/ keeps the attribute records.
  static constexpr bool kNativeAttributes = false;
  static std::shared_ptr<Index> create(Napi::Env, const IvfPqParams& params, const Napi::Value& device,
                                       unsigned threads) {
    return std::make_shared<Index>(params, threads, requireDevice(device));
  }
  static std::shared_ptr<Index> adopt(Napi::Env env, const Napi::Value&) {
    throwInvalid(env, "A GPU IVF-PQ index cannot be made from an opened file yet");
  }
  static size_t hostBytes(const Index& index) { return index.hostMemory().total(); }
  // The host twin's parts (codes, ids, centroids, refine, idMap) as the CPU index reports
  // them, plus { hostBytes: their total, deviceBytes, bytes: both }.
  static Napi::Value memory(Napi::Env env, const Index& index) {
    Napi::Object out = Napi::Object::New(env);
    const IvfPqMemory host = index.hostMemory();
    setIvfPqMemory(env, host, out);
    const size_t device = index.deviceBytes();
    out.Set("hostBytes", Napi::Number::New(env, static_cast<double>(host.total())));
    out.Set("deviceBytes", Napi::Number::New(env, static_cast<double>(device)));
    out.Set("bytes", Napi::Number::New(env, static_cast<double>(host.total() + device)));
    return out;
  }
};

}  // namespace

void initGpuIvfPqIndex(Napi::Env env, Napi::Object exports) {
  exports.Set(GpuIvfPq::kName, IvfPqWrap<GpuIvfPq>::define(env));
}

}  // namespace ebrix::binding
