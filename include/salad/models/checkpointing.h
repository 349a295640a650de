// Activation checkpointing (LibTorch C++ has no torch.utils.checkpoint): a function runs without
// recording a graph and keeps only its input; backward runs it again with grad enabled and
// back-propagates through that fresh graph. Memory: one function's internals at a time instead of
// all of them. Cost: one more forward of each checkpointed function.
//
// The recompute is *reentrant*: backward calls torch::autograd::backward on the recomputed graph,
// so the parameters inside the function get their gradients from their own AccumulateGrad nodes,
// exactly as without checkpointing: added in place into an existing .grad (a view into a flat
// buffer stays that view) and with the accumulators' post hooks firing once per backward. The
// price of reentrancy:
//   - a backward that asks only for some gradients (torch::autograd::grad, or backward with
//     `inputs`) still accumulates into every parameter of a checkpointed function it reaches;
//   - double backward (create_graph = true) is not supported (throws salad::Error);
//   - a parameter used both inside and outside a checkpointed function gets two accumulations
//     (and its hooks fire twice) in one backward.
//
// Shape legend: B batch, T positions, D model width.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <functional>
#include <vector>

#include "salad/models/layers.h"

namespace salad::models {

/// The calling thread's autocast settings for CPU and CUDA (other backends are not tracked).
struct AutocastState {
  bool cpu_enabled = false;
  c10::ScalarType cpu_dtype = c10::ScalarType::BFloat16;
  bool cuda_enabled = false;
  c10::ScalarType cuda_dtype = c10::ScalarType::Half;
  bool cache_enabled = true;  ///< whether autocast caches the casts of leaf weights

  /// Reads the calling thread's state.
  static AutocastState current();
};

/// Sets an autocast state on the calling thread for its lifetime and restores the previous one.
/// Not copyable; use on one thread.
class AutocastStateGuard {
 public:
  explicit AutocastStateGuard(const AutocastState& state);
  ~AutocastStateGuard();
  AutocastStateGuard(const AutocastStateGuard&) = delete;
  AutocastStateGuard& operator=(const AutocastStateGuard&) = delete;

 private:
  AutocastState previous_;
};

/// y = fn(x) without keeping fn's intermediate tensors; fn runs again in backward.
///
/// fn must be deterministic given its input and the state it captures (no RNG, no mutation of
/// that state between forward and backward) and return a new tensor (not x or a view of x). fn is
/// copied and kept, with what it captures, until the backward graph is freed. x is kept (saved
/// for backward: modifying it in place before backward is an error). The autocast state at this
/// call is re-entered for the recompute; the autocast weight cache is off in both runs (a cast
/// cached while grad is off would have no graph). `params`: the tensors fn reads that may require
/// grad; they only decide whether checkpointing is needed.
///
/// When grad mode is off, or neither x nor any of `params` requires grad, this is just fn(x).
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params);

/// block->forward(x, rot, allowed) with activation checkpointing (see `checkpointed`): only x
/// [B, T, D] is kept; the block is recomputed in backward. The block, rot and allowed are kept by
/// reference (shared, not copied) until backward; they are not differentiated. When grad mode is
/// off, or neither x nor any block parameter requires grad, this is block->forward.
at::Tensor checkpointed_block(const DecoderBlock& block, const at::Tensor& x, const Rotary& rot,
                              const at::Tensor& allowed);

}  // namespace salad::models
