// Building blocks shared by the Qwen2 decoder and the speech adapter: RMSNorm, rotary position
// embedding (rotate-half layout, angles in float32 as Hugging Face computes them), grouped-query
// attention with an optional per-document mask, and the SwiGLU MLP.
//
// Shape legend: B batch, T positions, D model width, H query heads, Hkv key/value heads,
// Dh head width, I MLP width.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace salad::models {

/// RMSNorm as Qwen2/Llama: statistics in float32, cast back, then the weight.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  /// x: [..., D] -> [..., D], same dtype as x.
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

/// cos and sin of the rotary angles for `position_ids` [B, T] (int64): each [B, T, Dh] in
/// `dtype`. Angles are inv_freq ⊗ position computed in float32, inv_freq = 1 / theta^(2i/Dh).
struct Rotary {
  at::Tensor cos;
  at::Tensor sin;
};
Rotary rotary_embedding(const at::Tensor& position_ids, int64_t head_dim, double theta,
                        c10::ScalarType dtype);

/// Applies the rotation to x: [B, H, T, Dh] with cos/sin [B, T, Dh] (rotate-half pairs (i,
/// i+Dh/2)).
at::Tensor apply_rotary(const at::Tensor& x, const Rotary& rot);

/// Which keys each query may see: [B, 1, T, T] bool (true = attend). Causal (unless `causal`
/// is false: every key of the row), minus padded keys (`attention_mask` [B, T], 1 = real
/// token), minus keys of other documents (`document_ids` [B, T]: packed sequences attend only
/// within their document). A query always sees itself, so no row is empty (rows of padded
/// queries are garbage but finite).
at::Tensor attention_allowed(int64_t batch, int64_t length, const at::Tensor& attention_mask,
                             const at::Tensor& document_ids, c10::Device device,
                             bool causal = true);

struct AttentionOptions {
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  ///< 0: hidden_size / num_heads
  bool qkv_bias = false;
  double rope_theta = 10000.0;
  void validate() const;
};

/// Grouped-query self-attention with rotary embeddings; query head h reads key/value head
/// h / (H / Hkv). Parameters: q_proj, k_proj, v_proj (optional bias), o_proj (no bias).
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& o);
  /// x: [B, T, D], rot: from rotary_embedding, allowed: from attention_allowed -> [B, T, D].
  at::Tensor forward(const at::Tensor& x, const Rotary& rot, const at::Tensor& allowed);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  const AttentionOptions& options() const { return o_; }

 private:
  AttentionOptions o_;
};
TORCH_MODULE(Attention);

/// SwiGLU: down(silu(gate(x)) * up(x)), no biases.
class SwiGluImpl : public torch::nn::Module {
 public:
  SwiGluImpl(int64_t hidden_size, int64_t intermediate_size);
  at::Tensor forward(const at::Tensor& x);  // [.., D] -> [.., D]
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(SwiGlu);

struct BlockOptions {
  AttentionOptions attention;
  int64_t intermediate_size = 0;
  double rms_norm_eps = 1e-6;
};

/// Pre-norm decoder block (Llama/Qwen2 naming): x + attn(norm(x)), then + mlp(norm(.)).
class DecoderBlockImpl : public torch::nn::Module {
 public:
  explicit DecoderBlockImpl(const BlockOptions& o);
  at::Tensor forward(const at::Tensor& x, const Rotary& rot, const at::Tensor& allowed);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  SwiGlu mlp{nullptr};
};
TORCH_MODULE(DecoderBlock);

}  // namespace salad::models
