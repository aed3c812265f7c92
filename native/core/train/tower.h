// One tower's forward and backward pass (model.h gives the semantics).
//
// Parallel work is split by rows (features, normalisations, element-wise stages) and by
// output tiles (products, gemm.h); sums over the batch (bias, gamma and beta gradients) run
// over rows in order. The embedding tables' gradients leave as sparse contributions
// (sparse_grad.h). Nothing depends on the thread count.
#pragma once

#include <cstddef>
#include <vector>

#include "compute.h"
#include "gemm.h"
#include "model.h"
#include "sparse_grad.h"

namespace ebrix::train {

// What the backward pass needs from the forward pass, reused from step to step.
struct TowerState {
  size_t rows = 0;
  std::vector<float> features;  // rows × featureWidth
  struct Layer {
    std::vector<float> xhat;  // LayerNorm: the normalised values, before gamma and beta
    std::vector<float> rstd;  // LayerNorm: 1 / sqrt(var + ε) per row
    std::vector<float> act;   // after LayerNorm and ReLU, before the residual
    std::vector<float> out;   // residual layers only: input + act
  };
  std::vector<Layer> layers;
  std::vector<std::vector<Layer>> experts;  // [expert][layer], with experts
  struct Head {
    bool computed = false;
    std::vector<float> gate;   // with experts: softmax weights, rows × experts
    std::vector<float> mixed;  // with experts: Σ_e gate·expert output, rows × trunk width
    std::vector<float> linear;  // x Wᵀ + b
    std::vector<float> norm;    // normalised heads: ‖linear row‖₂
    std::vector<float> out;     // normalised heads: the output
  };
  std::vector<Head> heads;
};

struct TowerView {
  const TowerSpec& spec;
  const TowerParams& params;
  const std::vector<TableSpec>& tables;
  const std::vector<std::vector<float>>& tableData;
};

// The output of layer l (l < layers), or the features for l = -1.
const float* layerOutput(const TowerView& tower, const TowerState& state, int layer);
// What head h reads: its mixture of the experts, or the last layer's output.
const float* headInput(const TowerView& tower, const TowerState& state, size_t head);
const float* headOutput(const TowerView& tower, const TowerState& state, size_t head);

// Forward pass over `rows` rows of validated inputs; computes the heads marked in `wantHeads`.
void forwardTower(const Compute& compute, const TowerView& tower, const TowerInputs& inputs, size_t rows,
                  const std::vector<char>& wantHeads, TowerState& state, Gemm& gemm);

struct BackwardScratch {
  std::vector<float> dx;
  std::vector<float> dMixed;
  std::vector<float> dGate;
  std::vector<std::vector<float>> dExpert;
  std::vector<float> dxNext;
  std::vector<float> dz;
  std::vector<float> dh;
  std::vector<double> sums;
};

// headGrads[h]: the objective's gradient w.r.t. head h's output (rows × outDim), or null for
// none. Writes every dense parameter gradient of the tower into `grads` (which has the
// tower's shape), and the gradient w.r.t. the features (rows × featureWidth) into dFeatures.
void backwardTower(const Compute& compute, const TowerView& tower, const TowerState& state,
                   const std::vector<const float*>& headGrads, TowerParams& grads, std::vector<float>& dFeatures,
                   BackwardScratch& scratch, Gemm& gemm);

// Offers the tables' gradient contributions of this tower's inputs to `sparse`, in input, row,
// bag position order. Zero mask entries contribute nothing (the row is not touched).
void collectSparse(const TowerView& tower, const TowerInputs& inputs, size_t rows, const float* dFeatures,
                   SparseGradients& sparse);

}  // namespace ebrix::train
