// The two-tower trainer: forward pass of both towers over a batch, the tasks' losses, the
// backward pass, global-norm clipping and one optimizer step (model.h has the model, loss.h
// the losses, optimizer.h the updates, checkpoint.h the saved state).
//
//   total = Σ_t weight_t·L_t over the tasks active in the batch, or with uncertaintyWeighting
//           Σ_t (exp(−s_t)·L_t + s_t), s_t a learned log-variance per task (starting at 0).
//
// Determinism: two runs with the same config, parameters and batches give bit-identical
// parameters for any thread count, by construction: every parallel loop writes disjoint
// outputs in blocks whose boundaries depend only on the problem size, and every sum is taken
// in a fixed order (products: over k inside one tile kernel call, gemm.h; bias and LayerNorm
// gradients: over batch rows in order; embedding rows: contributions in the order they were
// made, sparse_grad.h; norms: over arrays and rows in order). So there is no separate
// "deterministic" mode: it costs nothing. Results do depend on the SIMD level (EBRIX_SIMD),
// which may fuse multiply-adds; a checkpoint resumes bit-identically on the same level.
//
// A step whose gradient norm is not finite (an overflow, a NaN) changes nothing: the result
// reports the norm and the unchanged step count.
//
// Threads: not thread-safe. The const methods (embed, parameters, saveState, steps) may run
// concurrently with one another, never with a non-const one; the binding enforces that.
// Work runs on the process thread pool (ThreadPool::shared()), `threads` at a time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../simd/kernels.h"
#include "checkpoint.h"
#include "compute.h"
#include "gemm.h"
#include "loss.h"
#include "model.h"
#include "sparse_grad.h"
#include "tower.h"

namespace ebrix::train {

struct StepResult {
  double loss = 0.0;                 // the total objective
  std::vector<double> taskLoss;      // L_t per task; NaN where the task had no (weighted) examples
  std::vector<double> taskExamples;  // examples per task in the batch
  double gradNorm = 0.0;             // global gradient norm before clipping; NaN from evaluate
  uint64_t step = 0;                 // optimizer steps taken so far
};

class Trainer {
 public:
  // Throws Error(InvalidSpec) for an inconsistent config or parameters of the wrong shape or
  // with non-finite values. kernels: null for the default SIMD level (EBRIX_SIMD or the best).
  Trainer(TrainerConfig config, Parameters initial, const simd::Kernels* kernels = nullptr);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  const TrainerConfig& config() const { return config_; }
  unsigned threads() const { return compute_.threads; }

  // One optimizer step on a batch. Throws Error(InvalidArgument) for a batch that does not fit
  // (validateBatch), before anything changes.
  StepResult step(const Batch& batch);
  // The objective on a batch, without gradients or updates.
  StepResult evaluate(const Batch& batch);
  // The gradients of the objective (before clipping) as full-size arrays of the parameters'
  // shape, without an update; for finite-difference tests.
  StepResult gradients(const Batch& batch, Parameters& out);

  // Forward pass of one tower: `rows` rows of `head`'s output into out (rows × outDim).
  void embed(Role role, const TowerInputs& inputs, size_t rows, size_t head, float* out) const;

  const Parameters& parameters() const { return params_; }
  // Replaces every parameter (optimizer state is kept). Throws Error(DimMismatch) for a wrong
  // shape, Error(InvalidVector) for a non-finite value, before anything changes.
  void setParameters(const Parameters& params);
  uint64_t steps() const { return step_; }
  // Bytes held for parameters, gradients, optimizer state and row maps (scratch excluded).
  size_t memoryBytes() const;

  // Everything needed to resume bit-identically (checkpoint.h).
  std::vector<uint8_t> saveState() const;
  // Throws Error(CorruptFile) for a truncated, damaged or mismatched buffer, leaving the
  // trainer unchanged.
  void loadState(const uint8_t* bytes, size_t size);

 private:
  struct DenseSlot {
    std::string name;
    float* param;
    float* grad;
    float* m;
    float* v;
    size_t rows;
    size_t cols;
    bool decay;
  };

  StepResult run(const Batch& batch, bool wantGradients);
  TowerView view(Role role) const;
  std::vector<StateArray> stateArrays() const;

  TrainerConfig config_;
  Parameters params_;
  std::array<TowerParams, 2> grads_;
  std::vector<float> taskGrad_;
  std::array<TowerParams, 2> denseM_, denseV_;
  std::vector<float> taskM_, taskV_;
  // Adam: first and second moments per table; Adagrad: accumulators in sparseM_.
  std::vector<std::vector<float>> sparseM_, sparseV_;
  std::vector<DenseSlot> dense_;
  uint64_t step_ = 0;
  Compute compute_;

  // Scratch of a step, reused.
  std::array<TowerState, 2> states_;
  std::array<std::vector<float>, 2> dFeatures_;
  std::array<std::vector<std::vector<float>>, 2> headGrad_;
  BackwardScratch backward_;
  Gemm gemm_;
  SparseGradients sparse_;
  LossScratch lossScratch_;
  std::vector<TaskLoss> taskLoss_;
  std::vector<double> coefficient_;
};

}  // namespace ebrix::train
