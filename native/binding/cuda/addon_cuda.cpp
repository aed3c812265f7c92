// Entry of the CUDA addon, build-cuda/Release/ebrix_cuda.node (`npm run build:cuda`, only
// where nvcc is found). lib/gpu.ts loads it when the file exists; a CPU-only install never
// builds or loads it, so nothing in ../addon.cpp depends on it.
#include <napi.h>

#include <string>

#include "../../cuda/gpu_index.h"
#include "../errors.h"
#include "gpu_flat_index.h"
#include "gpu_ivfpq_index.h"

namespace ebrix::binding {
namespace {

// probeDevice(device = 0) -> { available, device, name, computeCapability ("9.0"), ... }.
// The probe never throws; `reason` says why a device is not available.
Napi::Value probeDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, {
    const int device = info[0].IsUndefined() ? 0 : requireDevice(info[0]);
    const gpu::DeviceInfo probe = gpu::probeDevice(device);
    Napi::Object out = Napi::Object::New(env);
    out.Set("available", Napi::Boolean::New(env, probe.available));
    out.Set("device", Napi::Number::New(env, probe.device));
    out.Set("name", Napi::String::New(env, probe.name));
    // Major 0 means the probe never reached the device.
    out.Set("computeCapability",
            Napi::String::New(env, probe.computeMajor == 0 ? std::string()
                                                           : std::to_string(probe.computeMajor) + "." +
                                                                 std::to_string(probe.computeMinor)));
    out.Set("multiprocessors", Napi::Number::New(env, probe.multiprocessors));
    out.Set("totalMemory", Napi::Number::New(env, static_cast<double>(probe.totalMemory)));
    out.Set("freeMemory", Napi::Number::New(env, static_cast<double>(probe.freeMemory)));
    out.Set("driverVersion", Napi::Number::New(env, probe.driverVersion));
    out.Set("runtimeVersion", Napi::Number::New(env, probe.runtimeVersion));
    out.Set("reason", Napi::String::New(env, probe.reason));
    return out;
  })
}

}  // namespace
}  // namespace ebrix::binding

static Napi::Object initEbrixCuda(Napi::Env env, Napi::Object exports) {
  exports.Set("probeDevice", Napi::Function::New(env, ebrix::binding::probeDevice, "probeDevice"));
  ebrix::binding::initGpuFlatIndex(env, exports);
  ebrix::binding::initGpuIvfPqIndex(env, exports);
  return exports;
}

NODE_API_MODULE(ebrix_cuda, initEbrixCuda)
