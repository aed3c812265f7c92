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

// The output of layer l of a stack, or its input for l = -1.
const float* stackOutput(const std::vector<LayerSpec>& specs, const std::vector<TowerState::Layer>& states, int l,
                         const float* input) {
  if (l < 0) return input;
  const size_t i = static_cast<size_t>(l);
  return specs[i].residual ? states[i].out.data() : states[i].act.data();
}

void forwardLayers(const Compute& compute, const std::vector<LayerSpec>& specs, const std::vector<LayerParams>& params,
                   const float* input, size_t rows, std::vector<TowerState::Layer>& states, Gemm& gemm) {
  states.resize(specs.size());
  for (size_t l = 0; l < specs.size(); ++l) {
    const LayerSpec& ls = specs[l];
    const LayerParams& lp = params[l];
    TowerState::Layer& st = states[l];
    const float* x = stackOutput(specs, states, static_cast<int>(l) - 1, input);
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
}

void zeroLayerGrads(std::vector<LayerParams>& grads) {
  for (LayerParams& g : grads) {
    for (auto* v : {&g.weight, &g.bias, &g.gamma, &g.beta}) std::fill(v->begin(), v->end(), 0.0f);
  }
}

// d: the gradient w.r.t. the stack's output (rows × the last outDim). Writes the layers'
// parameter gradients; when wantInput, d holds the gradient w.r.t. the stack's input on return
// (otherwise its contents are unspecified).
void backwardLayers(const Compute& compute, const std::vector<LayerSpec>& specs, const std::vector<LayerParams>& params,
                    const std::vector<TowerState::Layer>& states, const float* input, size_t rows, std::vector<float>& d,
                    bool wantInput, std::vector<LayerParams>& grads, BackwardScratch& s, Gemm& gemm) {
  for (size_t li = specs.size(); li-- > 0;) {
    const LayerSpec& ls = specs[li];
    const LayerParams& lp = params[li];
    const TowerState::Layer& st = states[li];
    LayerParams& g = grads[li];
    const size_t in = ls.inDim, out = ls.outDim;
    const float* x = stackOutput(specs, states, static_cast<int>(li) - 1, input);
    const float* dOut = d.data();  // rows × out

    // Through the residual (its input side is added below), ReLU and LayerNorm's affine part.
    s.dz.resize(rows * out);
    compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        const float* dr = dOut + r * out;
        const float* a = st.act.data() + r * out;
        float* dz = s.dz.data() + r * out;
        if (ls.relu) {
          for (size_t k = 0; k < out; ++k) dz[k] = a[k] > 0.0f ? dr[k] : 0.0f;
        } else {
          std::memcpy(dz, dr, out * sizeof(float));
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
    if (li == 0 && !wantInput) break;
    s.dxNext.resize(rows * in);
    if (ls.residual) std::memcpy(s.dxNext.data(), dOut, rows * in * sizeof(float));
    gemm.run(compute, rows, in, out, rowMajor(s.dz.data(), out), transposeOf(lp.weight.data(), in), nullptr,
             s.dxNext.data(), in, ls.residual);
    std::swap(d, s.dxNext);
  }
}

}  // namespace

const float* layerOutput(const TowerView& tower, const TowerState& state, int layer) {
  return stackOutput(tower.spec.layers, state.layers, layer, state.features.data());
}

const float* headInput(const TowerView& tower, const TowerState& state, size_t head) {
  if (tower.spec.experts > 0) return state.heads[head].mixed.data();
  return layerOutput(tower, state, static_cast<int>(tower.spec.layers.size()) - 1);
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
  forwardLayers(compute, spec.layers, tower.params.layers, state.features.data(), rows, state.layers, gemm);

  const float* bottom = layerOutput(tower, state, static_cast<int>(spec.layers.size()) - 1);
  const size_t bottomW = bottomWidth(spec, tower.tables);
  const size_t width = trunkWidth(spec, tower.tables);
  const size_t experts = spec.experts;
  bool anyHead = false;
  for (size_t h = 0; h < spec.heads.size(); ++h) anyHead = anyHead || (h < wantHeads.size() && wantHeads[h]);
  if (experts > 0 && anyHead) {
    state.experts.resize(experts);
    for (size_t e = 0; e < experts; ++e) {
      forwardLayers(compute, spec.expertLayers, tower.params.experts[e], bottom, rows, state.experts[e], gemm);
    }
  }

  state.heads.resize(spec.heads.size());
  for (size_t h = 0; h < spec.heads.size(); ++h) {
    TowerState::Head& st = state.heads[h];
    st.computed = h < wantHeads.size() && wantHeads[h];
    if (!st.computed) continue;
    const HeadSpec& hs = spec.heads[h];
    const HeadParams& hp = tower.params.heads[h];
    const size_t out = hs.outDim;
    if (experts > 0) {
      // The gate: softmax over the experts of a linear map of the bottom, then the mixture.
      const HeadParams& gp = tower.params.gates[h];
      st.gate.resize(rows * experts);
      gemm.run(compute, rows, experts, bottomW, rowMajor(bottom, bottomW), rowMajor(gp.weight.data(), bottomW),
               gp.bias.data(), st.gate.data(), experts, false);
      st.mixed.resize(rows * width);
      compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
        for (size_t r = begin; r < end; ++r) {
          float* g = st.gate.data() + r * experts;
          double top = g[0];
          for (size_t e = 1; e < experts; ++e) top = std::max(top, static_cast<double>(g[e]));
          double sum = 0.0;
          for (size_t e = 0; e < experts; ++e) sum += std::exp(g[e] - top);
          for (size_t e = 0; e < experts; ++e) g[e] = static_cast<float>(std::exp(g[e] - top) / sum);
          float* m = st.mixed.data() + r * width;
          std::fill(m, m + width, 0.0f);
          for (size_t e = 0; e < experts; ++e) {
            const float* y = stackOutput(spec.expertLayers, state.experts[e], static_cast<int>(spec.expertLayers.size()) - 1,
                                         bottom) + r * width;
            const float ge = g[e];
            for (size_t d = 0; d < width; ++d) m[d] += ge * y[d];
          }
        }
      }, serialRows(width * experts));
    }
    const float* trunk = headInput(tower, state, h);
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
  const size_t bottomW = bottomWidth(spec, tower.tables);
  const float* bottom = layerOutput(tower, state, static_cast<int>(spec.layers.size()) - 1);
  const bool needFeatures = hasTableInputs(spec);
  const size_t experts = spec.experts;
  // Whether anything below the experts and gates has a gradient to receive.
  const bool needBottom = !spec.layers.empty() || needFeatures;

  // Heads: dW = dHᵀ X, db = Σ_r dH, dX = Σ_heads dH W (heads in order). With experts, X is the
  // head's mixture: its gradient goes to the gate (into the bottom) and to every expert.
  bool any = false;        // s.dx (rows × bottomW) holds a gradient
  bool anyExpert = false;  // s.dExpert holds gradients
  s.dx.resize(rows * bottomW);
  if (experts > 0) s.dExpert.resize(experts);
  for (size_t h = 0; h < spec.heads.size(); ++h) {
    const HeadSpec& hs = spec.heads[h];
    HeadParams& g = grads.heads[h];
    const float* dOut = h < headGrads.size() ? headGrads[h] : nullptr;
    if (dOut == nullptr) {
      std::fill(g.weight.begin(), g.weight.end(), 0.0f);
      std::fill(g.bias.begin(), g.bias.end(), 0.0f);
      if (experts > 0) {
        std::fill(grads.gates[h].weight.begin(), grads.gates[h].weight.end(), 0.0f);
        std::fill(grads.gates[h].bias.begin(), grads.gates[h].bias.end(), 0.0f);
      }
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
    const float* trunk = headInput(tower, state, h);
    gemm.run(compute, out, width, rows, transposeOf(dh, out), transposeOf(trunk, width), nullptr, g.weight.data(), width,
             false);
    columnSums(dh, rows, out, s.sums, g.bias.data());
    if (experts == 0) {
      gemm.run(compute, rows, width, out, rowMajor(dh, out), transposeOf(tower.params.heads[h].weight.data(), width),
               nullptr, s.dx.data(), width, any);
      any = true;
      continue;
    }

    s.dMixed.resize(rows * width);
    gemm.run(compute, rows, width, out, rowMajor(dh, out), transposeOf(tower.params.heads[h].weight.data(), width),
             nullptr, s.dMixed.data(), width, false);
    // m = Σ_e g_e y_e: ∂/∂g_e = dM·y_e; through the softmax ∂/∂z_e = g_e (∂/∂g_e − Σ_k g_k ∂/∂g_k).
    // Each expert's output receives g_e·dM, summed over the heads in order.
    const TowerState::Head& st = state.heads[h];
    s.dGate.resize(rows * experts);
    for (size_t e = 0; e < experts; ++e) s.dExpert[e].resize(rows * width);
    const bool first = !anyExpert;
    compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        const float* dm = s.dMixed.data() + r * width;
        const float* gr = st.gate.data() + r * experts;
        float* dz = s.dGate.data() + r * experts;
        double mean = 0.0;
        for (size_t e = 0; e < experts; ++e) {
          const float* y = stackOutput(spec.expertLayers, state.experts[e], static_cast<int>(spec.expertLayers.size()) - 1,
                                       bottom) + r * width;
          double dot = 0.0;
          for (size_t d = 0; d < width; ++d) dot += static_cast<double>(dm[d]) * y[d];
          dz[e] = static_cast<float>(dot);
          mean += static_cast<double>(gr[e]) * dot;
          float* de = s.dExpert[e].data() + r * width;
          const float ge = gr[e];
          if (first) {
            for (size_t d = 0; d < width; ++d) de[d] = ge * dm[d];
          } else {
            for (size_t d = 0; d < width; ++d) de[d] += ge * dm[d];
          }
        }
        for (size_t e = 0; e < experts; ++e) dz[e] = static_cast<float>(gr[e] * (dz[e] - mean));
      }
    }, serialRows(width * experts));
    anyExpert = true;
    HeadParams& gg = grads.gates[h];
    gemm.run(compute, experts, bottomW, rows, transposeOf(s.dGate.data(), experts), transposeOf(bottom, bottomW), nullptr,
             gg.weight.data(), bottomW, false);
    columnSums(s.dGate.data(), rows, experts, s.sums, gg.bias.data());
    if (needBottom) {
      gemm.run(compute, rows, bottomW, experts, rowMajor(s.dGate.data(), experts),
               transposeOf(tower.params.gates[h].weight.data(), bottomW), nullptr, s.dx.data(), bottomW, any);
      any = true;
    }
  }

  if (experts > 0) {
    for (size_t e = 0; e < experts; ++e) {
      if (!anyExpert) {
        zeroLayerGrads(grads.experts[e]);
        continue;
      }
      backwardLayers(compute, spec.expertLayers, tower.params.experts[e], state.experts[e], bottom, rows, s.dExpert[e],
                     needBottom, grads.experts[e], s, gemm);
      if (!needBottom) continue;
      // Experts in order: the sum into the bottom does not depend on the thread count.
      const float* de = s.dExpert[e].data();
      float* dx = s.dx.data();
      const bool assign = !any;
      compute.blocks(rows, kRowBlock, [&](size_t begin, size_t end) {
        for (size_t i = begin * bottomW; i < end * bottomW; ++i) dx[i] = assign ? de[i] : dx[i] + de[i];
      }, serialRows(bottomW));
      any = true;
    }
  }

  if (!any) {
    zeroLayerGrads(grads.layers);
    dFeatures.assign(rows * featureWidth(spec, tower.tables), 0.0f);
    return;
  }

  backwardLayers(compute, spec.layers, tower.params.layers, state.layers, state.features.data(), rows, s.dx, needFeatures,
                 grads.layers, s, gemm);
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
