// Trainable parameters in one flat fp32 buffer, and AdamW over it.
//
// FlatParams copies every trainable parameter into one contiguous 1-D fp32 tensor and turns the
// parameters into views of it (set_data), and their .grad into views of a second flat buffer.
// Autograd then accumulates straight into the flat gradient (a defined grad is added to in
// place), so the gradient all-reduce works on a few large buckets, the global norm is one
// reduction and the optimizer step is a handful of vectorised ops per segment instead of a loop
// over hundreds of tensors. The flat values are the fp32 master weights; bf16 compute comes from
// autocast, never from bf16 parameters.
//
// Layout: parameters in group order ("adapter", "llm"), decayed ones first within a group, so a
// group is at most two segments {group, decay}. The buffer is padded to a multiple of
// world_size * 64 elements so ZeRO-1 shards are equal and aligned.
//
// Weight decay (optim.weight_decay) applies to matrices (dim >= 2, embeddings included); norms,
// biases and the speech marker vectors (dim 1) are not decayed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "salad/core/safetensors.h"

namespace salad::models {
struct ParamGroup;
}

namespace salad::train {

struct FlatEntry {
  std::string name;   ///< checkpoint name
  std::string group;  ///< optimizer group ("adapter", "llm")
  bool decay = true;
  int64_t offset = 0;  ///< into the flat buffers
  int64_t numel = 0;
  std::vector<int64_t> shape;
};

/// A contiguous run of the flat buffer with one group and one decay setting.
struct FlatSegment {
  std::string group;
  bool decay = true;
  int64_t begin = 0, end = 0;
};

class FlatParams {
 public:
  /// Takes over `groups` (their tensors become views; values are kept, converted to fp32 on
  /// `device`). A tensor listed twice (tied weights) is taken once. `world_size` sets the padding.
  FlatParams(const std::vector<models::ParamGroup>& groups, c10::Device device,
             int64_t world_size = 1);

  at::Tensor& values() { return values_; }  ///< [P] fp32 master weights (padded)
  at::Tensor& grads() { return grads_; }    ///< [P] fp32 gradients (padded)
  const std::vector<FlatEntry>& entries() const { return entries_; }
  const std::vector<FlatSegment>& segments() const { return segments_; }
  /// The parameters in flat order (views of values(), grads are views of grads()).
  const std::vector<at::Tensor>& params() const { return params_; }
  int64_t numel() const { return numel_; }    ///< real elements (no padding)
  int64_t padded() const { return padded_; }  ///< buffer length
  int64_t group_numel(const std::string& group) const;

  void zero_grad();
  /// The L2 norm of grads(), summed in float64 (one host sync).
  double grad_norm() const;
  /// Re-points every parameter's .grad at its view of grads() (after something replaced it).
  void rebind_grads();
  /// The trainable tensors under their names, copied out of the flat buffer (for checkpoints).
  safetensors::NamedTensors named_values() const;
  /// "adapter 120.45 M (decay 120.44 M), llm 3.09 B (...)".
  std::string describe() const;

 private:
  std::vector<FlatEntry> entries_;
  std::vector<FlatSegment> segments_;
  std::vector<at::Tensor> params_;
  at::Tensor values_, grads_;
  int64_t numel_ = 0, padded_ = 0;
};

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

/// AdamW (decoupled weight decay, bias-corrected; the update of torch.optim.AdamW) on the
/// flat buffer. Holds state for the shard [shard_begin, shard_end) only: the whole buffer
/// without ZeRO-1, rank r's 1/W of it with ZeRO-1 (the caller all-gathers the values after).
class FlatAdamW {
 public:
  FlatAdamW(FlatParams& params, AdamWOptions o, int64_t shard_begin, int64_t shard_end);

  /// One update of the shard with the learning rate of each group (`lr.at(group)`); gradients
  /// are read from params.grads() as they are (scale them for clipping before).
  void step(const std::map<std::string, double>& lr);

  int64_t steps() const { return step_; }
  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }
  /// exp_avg / exp_avg_sq of the shard and the step count, for the checkpoint.
  safetensors::NamedTensors state() const;
  /// Restores what state() wrote; throws CheckpointError naming `where` on a missing tensor or
  /// a shard of another size.
  void load_state(const safetensors::Checkpoint& ckpt, const std::string& where);

 private:
  FlatParams& p_;
  AdamWOptions o_;
  int64_t begin_, end_;
  at::Tensor exp_avg_, exp_avg_sq_;  // [end - begin]
  int64_t step_ = 0;
};

}  // namespace salad::train
