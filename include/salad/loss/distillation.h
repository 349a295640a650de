// The α-interpolated SALAD loss (DESIGN §3):
//   L = [α · Σ_k τ² · KL(softmax(z_t,k / τ) ‖ softmax(z_s,k / τ)) + (1 − α) · Σ_k −log softmax(z_s,k)[y_k]] / normalizer
// over the N aligned loss positions k, where z_s = W_s h_s (student) and z_t = W_t h_t (teacher)
// are the logits through each model's LM head, y the target tokens, and normalizer the number of
// loss positions of the whole global batch (all micro-batches and ranks), so that summing the
// micro-batch losses gives the global mean. τ = 1 is plain KL; for τ ≠ 1 the KL is scaled by τ²
// (Hinton et al.) so gradient magnitudes do not depend on τ. The NLL always uses τ = 1.
//
// The loss never holds full [N, V] logits: positions are processed in chunks of chunk_size, and
// a custom autograd function recomputes each chunk's logits in backward, so peak memory is
// O(chunk_size · V) instead of O(N · V) per model.
//
// Shape legend: N loss positions, D hidden width (student and teacher may differ), V vocabulary.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace salad::config {
struct LossConfig;
}

namespace salad::loss {

struct DistillationOptions {
  double alpha = 1.0;          ///< weight of the KL term; 1 − alpha on the NLL
  double temperature = 1.0;    ///< τ of the KL term
  int64_t chunk_size = 1024;   ///< positions per chunk

  static DistillationOptions from_config(const config::LossConfig& cfg);
  void validate() const;  ///< throws ConfigError naming the bad field
};

struct LossParts {
  at::Tensor loss;     ///< scalar float32 (float64 for float64 inputs), differentiable
  at::Tensor kl_sum;   ///< detached scalar float64: Σ_k τ²·KL_k (0 when alpha == 0)
  at::Tensor nll_sum;  ///< detached scalar float64: Σ_k NLL_k (always computed)
  int64_t positions = 0;  ///< N
};

class DistillationLoss {
 public:
  explicit DistillationLoss(const DistillationOptions& o);

  /// student_hidden: [N, Ds] (requires grad); student_head: [V, Ds] (the LM head matrix; may
  /// require grad, e.g. a tied embedding); teacher_hidden: [N, Dt] and teacher_head: [V, Dt]
  /// (no grad; may be undefined when alpha == 0); targets: [N] int64 in [0, V);
  /// normalizer > 0. Logits are computed in the hidden states' dtype and reduced in float32
  /// (float64 when the hidden states are float64). The teacher never receives a gradient.
  /// Throws ConfigError/DataError naming the tensor on shape/dtype mismatch.
  LossParts operator()(const at::Tensor& student_hidden, const at::Tensor& student_head,
                       const at::Tensor& teacher_hidden, const at::Tensor& teacher_head,
                       const at::Tensor& targets, double normalizer) const;

  /// The same loss from full [N, V] logits, through plain autograd (for tests and the
  /// memory benchmark; not for training).
  LossParts reference(const at::Tensor& student_hidden, const at::Tensor& student_head,
                      const at::Tensor& teacher_hidden, const at::Tensor& teacher_head,
                      const at::Tensor& targets, double normalizer) const;

  const DistillationOptions& options() const { return o_; }

 private:
  DistillationOptions o_;
};

/// Per-position KL(softmax(W_p h_p) ‖ softmax(W_q h_q)) at temperature 1, in chunks, without
/// gradients: [N] float64. Used for the misalignment and forgetting metrics.
at::Tensor chunked_kl(const at::Tensor& p_hidden, const at::Tensor& p_head,
                      const at::Tensor& q_hidden, const at::Tensor& q_head, int64_t chunk_size);

}  // namespace salad::loss
