// Module entry: registers each exported part of the addon.
#include <napi.h>

#include "attributes.h"
#include "flat_index.h"
#include "hnsw_index.h"
#include "ivfpq_index.h"
#include "kmeans.h"
#include "machine.h"
#include "trainer.h"

static Napi::Object initEbrix(Napi::Env env, Napi::Object exports) {
  ebrix::binding::initMachine(env, exports);
  ebrix::binding::initFlatIndex(env, exports);
  ebrix::binding::initIvfPqIndex(env, exports);
  ebrix::binding::initHnswIndex(env, exports);
  ebrix::binding::initKMeans(env, exports);
  ebrix::binding::initAttributeTable(env, exports);
  ebrix::binding::initTrainer(env, exports);
  return exports;
}

NODE_API_MODULE(ebrix, initEbrix)
