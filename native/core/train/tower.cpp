#include "tower.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace ebrix::train {
namespace {

// Rows per task of the row-parallel stages, and the size below which they stay on the
// calling thread.
constexpr size_t kRowBlock = 32;
constexpr size_t kSerialValues = 16384;

size_t serialRows(size_t width) { return kSerialValues / std::max<size_t>(width, 1); }

// out[c] = Σ_r m[r][c], rows in order.
void columnSums(const float* m, size_t rows, size_t cols, std::vector<double>& acc, float* out) {
  acc.assign(cols, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    const float* row = m + r * cols;
    for (size_t c = 0; c < cols; ++c) acc[c] += row[c];
  }
  for (size_t c = 0; c < cols; ++c) out[c] = static_cast<float>(acc[c]);
}

// out[c] = Σ_r a[r][c]·b[r][c], rows in order.
void columnDots(const float* a, const float* b, size_t rows, size_t cols, std::vector<double>& acc, float* out) {
  acc.assign(cols, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    const float* x = a + r * cols;
    const float* y = b + r * cols;
    for (size_t c = 0; c < cols; ++c) acc[c] += static_cast<double>(x[c]) * y[c];
  }
  for (size_t c = 0; c < cols; ++c) out[c] = static_cast<float>(acc[c]);
}

bool hasTableInputs(const TowerSpec& spec) {
  for (const InputSpec& input : spec.inputs) {
    if (input.kind != InputKind::Dense) return true;
  }
  return false;
}

void buildFeatures(const Compute& compute, const TowerView& tower, const TowerInputs& inputs, size_t rows, float* x) {
  const size_t width = featureWidth(tower.spec, tower.tables);
  compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) {
      float* row = x + r * width;
      size_t offset = 0;
      for (size_t i = 0; i < tower.spec.inputs.size(); ++i) {
        const InputSpec& input = tower.spec.inputs[i];
        if (input.kind == InputKind::Dense) {
          std::memcpy(row + offset, inputs[i].values + r * input.width, input.width * sizeof(float));
          offset += input.width;
          continue;
        }
        const size_t dim = tower.tables[input.table].dim;
        const float* table = tower.tableData[input.table].data();
        float* dst = row + offset;
        offset += dim;
        if (input.kind == InputKind::Ids) {
          std::memcpy(dst, table + static_cast<size_t>(inputs[i].ids[r]) * dim, dim * sizeof(float));
          continue;
        }
        const size_t length = input.length;
        const int32_t* ids = inputs[i].ids + r * length;
        const float* mask = inputs[i].values + r * length;
        std::fill(dst, dst + dim, 0.0f);
        double count = 0.0;
        for (size_t l = 0; l < length; ++l) {
          // Rows of a large table are cache misses: ask for a few ahead.
          if (l + 4 < length) __builtin_prefetch(table + static_cast<size_t>(ids[l + 4]) * dim);
          const float m = mask[l];
          count += m;
          if (m == 0.0f) continue;
          const float* src = table + static_cast<size_t>(ids[l]) * dim;
          for (size_t d = 0; d < dim; ++d) dst[d] += m * src[d];
        }
        if (input.pooling == Pooling::Mean) {
          const double divisor = std::max(count, 1.0);
          if (divisor != 1.0) {
            for (size_t d = 0; d < dim; ++d) dst[d] = static_cast<float>(dst[d] / divisor);
          }
        }
      }
    }
  }, serialRows(width));
}

}  // namespace

const float* layerOutput(const TowerView& tower, const TowerState& state, int layer) {
  if (layer < 0) return state.features.data();
  const TowerState::Layer& l = state.layers[static_cast<size_t>(layer)];
  return tower.spec.layers[static_cast<size_t>(layer)].residual ? l.out.data() : l.act.data();
}

const float* headOutput(const TowerView& tower, const TowerState& state, size_t head) {
  const TowerState::Head& h = state.heads[head];
  return tower.spec.heads[head].normalize ? h.out.data() : h.linear.data();
}

void forwardTower(const Compute& compute, const TowerView& tower, const TowerInputs& inputs, size_t rows,
                  const std::vector<char>& wantHeads, TowerState& state, Gemm& gemm) {
  const TowerSpec& spec = tower.spec;
  state.rows = rows;
  state.features.resize(rows * featureWidth(spec, tower.tables));
  buildFeatures(compute, tower, inputs, rows, state.features.data());

  state.layers.resize(spec.layers.size());
  for (size_t l = 0; l < spec.layers.size(); ++l) {
    const LayerSpec& ls = spec.layers[l];
    const LayerParams& lp = tower.params.layers[l];
    TowerState::Layer& st = state.layers[l];
    const float* x = layerOutput(tower, state, static_cast<int>(l) - 1);
    const size_t in = ls.inDim, out = ls.outDim;
    st.act.resize(rows * out);
    gemm.run(compute, rows, out, in, rowMajor(x, in), rowMajor(lp.weight.data(), in), lp.bias.data(), st.act.data(), out,
             false);
    if (ls.layerNorm) {
      st.xhat.resize(rows * out);
      st.rstd.resize(rows);
    }
    if (ls.residual) st.out.resize(rows * out);
    if (!ls.layerNorm && !ls.relu && !ls.residual) continue;
    const double epsilon = static_cast<double>(ls.epsilon);
    compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        float* a = st.act.data() + r * out;
        if (ls.layerNorm) {
          double mean = 0.0;
          for (size_t d = 0; d < out; ++d) mean += a[d];
          mean /= static_cast<double>(out);
          double variance = 0.0;
          for (size_t d = 0; d < out; ++d) variance += (a[d] - mean) * (a[d] - mean);
          variance /= static_cast<double>(out);
          const double rstd = 1.0 / std::sqrt(variance + epsilon);
          st.rstd[r] = static_cast<float>(rstd);
          float* xhat = st.xhat.data() + r * out;
          for (size_t d = 0; d < out; ++d) {
            xhat[d] = static_cast<float>((a[d] - mean) * rstd);
            a[d] = xhat[d] * lp.gamma[d] + lp.beta[d];
          }
        }
        if (ls.relu) {
          for (size_t d = 0; d < out; ++d) a[d] = std::max(a[d], 0.0f);
        }
        if (ls.residual) {
          const float* xr = x + r * in;
          float* o = st.out.data() + r * out;
          for (size_t d = 0; d < out; ++d) o[d] = xr[d] + a[d];
        }
      }
    }, serialRows(out));
  }

  const float* trunk = layerOutput(tower, state, static_cast<int>(spec.layers.size()) - 1);
  const size_t width = trunkWidth(spec, tower.tables);
  state.heads.resize(spec.heads.size());
  for (size_t h = 0; h < spec.heads.size(); ++h) {
    TowerState::Head& st = state.heads[h];
    st.computed = h < wantHeads.size() && wantHeads[h];
    if (!st.computed) continue;
    const HeadSpec& hs = spec.heads[h];
    const HeadParams& hp = tower.params.heads[h];
    const size_t out = hs.outDim;
    st.linear.resize(rows * out);
    gemm.run(compute, rows, out, width, rowMajor(trunk, width), rowMajor(hp.weight.data(), width), hp.bias.data(),
             st.linear.data(), out, false);
    if (!hs.normalize) continue;
    st.norm.resize(rows);
    st.out.resize(rows * out);
    compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        const float* v = st.linear.data() + r * out;
        double squares = 0.0;
        for (size_t d = 0; d < out; ++d) squares += static_cast<double>(v[d]) * v[d];
        const double norm = std::sqrt(squares);
        st.norm[r] = static_cast<float>(norm);
        const double divisor = std::max(norm, static_cast<double>(kNormalizeFloor));
        float* o = st.out.data() + r * out;
        for (size_t d = 0; d < out; ++d) o[d] = static_cast<float>(v[d] / divisor);
      }
    }, serialRows(out));
  }
}

void backwardTower(const Compute& compute, const TowerView& tower, const TowerState& state,
                   const std::vector<const float*>& headGrads, TowerParams& grads, std::vector<float>& dFeatures,
                   BackwardScratch& s, Gemm& gemm) {
  const TowerSpec& spec = tower.spec;
  const size_t rows = state.rows;
  const size_t width = trunkWidth(spec, tower.tables);
  const float* trunk = layerOutput(tower, state, static_cast<int>(spec.layers.size()) - 1);
  const bool needFeatures = hasTableInputs(spec);

  // Heads: dW = dHᵀ X, db = Σ_r dH, dX = Σ_heads dH W (heads in order).
  bool any = false;
  s.dx.resize(rows * width);
  for (size_t h = 0; h < spec.heads.size(); ++h) {
    const HeadSpec& hs = spec.heads[h];
    HeadParams& g = grads.heads[h];
    const float* dOut = h < headGrads.size() ? headGrads[h] : nullptr;
    if (dOut == nullptr) {
      std::fill(g.weight.begin(), g.weight.end(), 0.0f);
      std::fill(g.bias.begin(), g.bias.end(), 0.0f);
      continue;
    }
    const size_t out = hs.outDim;
    const float* dh = dOut;
    if (hs.normalize) {
      const TowerState::Head& st = state.heads[h];
      s.dh.resize(rows * out);
      compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
        for (size_t r = begin; r < end; ++r) {
          const float* e = st.out.data() + r * out;
          const float* gr = dOut + r * out;
          float* d = s.dh.data() + r * out;
          const float norm = st.norm[r];
          if (norm > kNormalizeFloor) {
            // e = h / ‖h‖: ∂e/∂h = (I − e eᵀ) / ‖h‖.
            double eg = 0.0;
            for (size_t k = 0; k < out; ++k) eg += static_cast<double>(e[k]) * gr[k];
            const float dot = static_cast<float>(eg);
            for (size_t k = 0; k < out; ++k) d[k] = (gr[k] - e[k] * dot) / norm;
          } else {
            // Below the floor the divisor is the constant 1e-12.
            for (size_t k = 0; k < out; ++k) d[k] = gr[k] / kNormalizeFloor;
          }
        }
      }, serialRows(out));
      dh = s.dh.data();
    }
    gemm.run(compute, out, width, rows, transposeOf(dh, out), transposeOf(trunk, width), nullptr, g.weight.data(), width,
             false);
    columnSums(dh, rows, out, s.sums, g.bias.data());
    gemm.run(compute, rows, width, out, rowMajor(dh, out), transposeOf(tower.params.heads[h].weight.data(), width), nullptr,
             s.dx.data(), width, any);
    any = true;
  }

  if (!any) {
    for (LayerParams& g : grads.layers) {
      for (auto* v : {&g.weight, &g.bias, &g.gamma, &g.beta}) std::fill(v->begin(), v->end(), 0.0f);
    }
    dFeatures.assign(rows * featureWidth(spec, tower.tables), 0.0f);
    return;
  }

  for (size_t li = spec.layers.size(); li-- > 0;) {
    const LayerSpec& ls = spec.layers[li];
    const LayerParams& lp = tower.params.layers[li];
    const TowerState::Layer& st = state.layers[li];
    LayerParams& g = grads.layers[li];
    const size_t in = ls.inDim, out = ls.outDim;
    const float* x = layerOutput(tower, state, static_cast<int>(li) - 1);
    const float* dOut = s.dx.data();  // rows × out

    // Through the residual (its input side is added below), ReLU and LayerNorm's affine part.
    s.dz.resize(rows * out);
    compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        const float* d = dOut + r * out;
        const float* a = st.act.data() + r * out;
        float* dz = s.dz.data() + r * out;
        if (ls.relu) {
          for (size_t k = 0; k < out; ++k) dz[k] = a[k] > 0.0f ? d[k] : 0.0f;
        } else {
          std::memcpy(dz, d, out * sizeof(float));
        }
      }
    }, serialRows(out));
    if (ls.layerNorm) {
      columnDots(s.dz.data(), st.xhat.data(), rows, out, s.sums, g.gamma.data());
      columnSums(s.dz.data(), rows, out, s.sums, g.beta.data());
      compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
        for (size_t r = begin; r < end; ++r) {
          float* dz = s.dz.data() + r * out;  // becomes ∂/∂x̂, then ∂/∂z, in place
          const float* xhat = st.xhat.data() + r * out;
          double sum = 0.0, sumX = 0.0;
          for (size_t k = 0; k < out; ++k) {
            dz[k] *= lp.gamma[k];
            sum += dz[k];
            sumX += static_cast<double>(dz[k]) * xhat[k];
          }
          const float meanD = static_cast<float>(sum / static_cast<double>(out));
          const float meanDX = static_cast<float>(sumX / static_cast<double>(out));
          const float rstd = st.rstd[r];
          for (size_t k = 0; k < out; ++k) dz[k] = rstd * (dz[k] - meanD - xhat[k] * meanDX);
        }
      }, serialRows(out));
    }

    // Linear: dW = dZᵀ X, db = Σ_r dZ, dX = dZ W (+ dOut through the residual).
    gemm.run(compute, out, in, rows, transposeOf(s.dz.data(), out), transposeOf(x, in), nullptr, g.weight.data(), in, false);
    columnSums(s.dz.data(), rows, out, s.sums, g.bias.data());
    if (li == 0 && !needFeatures) break;
    s.dxNext.resize(rows * in);
    if (ls.residual) std::memcpy(s.dxNext.data(), dOut, rows * in * sizeof(float));
    gemm.run(compute, rows, in, out, rowMajor(s.dz.data(), out), transposeOf(lp.weight.data(), in), nullptr,
             s.dxNext.data(), in, ls.residual);
    std::swap(s.dx, s.dxNext);
  }

  if (!needFeatures) {
    dFeatures.clear();
    return;
  }
  std::swap(dFeatures, s.dx);
}

void collectSparse(const TowerView& tower, const TowerInputs& inputs, size_t rows, const float* dFeatures,
                   SparseGradients& sparse) {
  const size_t width = featureWidth(tower.spec, tower.tables);
  size_t offset = 0;
  for (size_t i = 0; i < tower.spec.inputs.size(); ++i) {
    const InputSpec& input = tower.spec.inputs[i];
    if (input.kind == InputKind::Dense) {
      offset += input.width;
      continue;
    }
    const size_t dim = tower.tables[input.table].dim;
    for (size_t r = 0; r < rows; ++r) {
      const float* src = dFeatures + r * width + offset;
      if (input.kind == InputKind::Ids) {
        sparse.add(input.table, static_cast<uint32_t>(inputs[i].ids[r]), src, 1.0f);
        continue;
      }
      const size_t length = input.length;
      const int32_t* ids = inputs[i].ids + r * length;
      const float* mask = inputs[i].values + r * length;
      double divisor = 1.0;
      if (input.pooling == Pooling::Mean) {
        double count = 0.0;
        for (size_t l = 0; l < length; ++l) count += mask[l];
        divisor = std::max(count, 1.0);
      }
      for (size_t l = 0; l < length; ++l) {
        if (mask[l] == 0.0f) continue;
        sparse.add(input.table, static_cast<uint32_t>(ids[l]), src, static_cast<float>(mask[l] / divisor));
      }
    }
    offset += dim;
  }
}

}  // namespace ebrix::train
