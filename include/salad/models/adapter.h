// The trainable speech adapter (DESIGN §2): encoder frames -> LLM embedding space.
//   in_proj (De -> Da)  [or, for discrete codes, the sum of one embedding table per codebook]
//   -> num_layers Llama-style blocks (RMSNorm, RoPE, GQA, SwiGLU; no q/k/v bias)
//   -> final RMSNorm -> out_proj (Da -> D)
// plus the learned `speech_start` / `speech_end` vectors (in LLM space, [D]) that wrap every
// speech segment. Each speech segment is run on its own: positions 0..F-1, attention only inside
// the segment (causal by default, as the paper's "decoder layers"; bidirectional optional).
// Parameter names (under `adapter.` in checkpoints): in_proj.{weight,bias} |
// code_embeddings.{q}.weight, layers.{i}.* (as Qwen2 blocks), norm.weight, out_proj.{weight,bias},
// speech_start, speech_end.
//
// Shape legend: S segments, F frames (longest segment), De encoder width (codes: n_q),
// Da adapter width, D LLM width.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "salad/models/layers.h"

namespace salad::config {
struct AdapterConfig;
}

namespace salad::models {

struct AdapterOptions {
  int64_t input_dim = 512;  ///< De: encoder feature width (codes: number of codebooks n_q)
  bool codes = false;       ///< inputs are int64 codes [S, F, n_q] instead of features
  int64_t codebook_size = 2048;
  int64_t hidden_size = 960;
  int64_t num_layers = 12;
  int64_t num_heads = 15;
  int64_t num_kv_heads = 5;
  int64_t intermediate_size = 2560;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool causal = true;
  double init_std = 0.02;
  int64_t output_dim = 2048;  ///< D: the LLM's hidden size

  static AdapterOptions from_config(const config::AdapterConfig& cfg, int64_t input_dim, bool codes,
                                    int64_t llm_hidden_size);
  /// Throws ConfigError naming the adapter.* key that is wrong.
  void validate() const;
  /// Parameters the adapter will have (computed from the sizes, equal to the module's count).
  int64_t parameter_count() const;
  /// "adapter: features 512 -> 960, 12 causal layers (...) -> 2048 = 120453504 parameters
  /// (120.45 M)".
  std::string describe() const;
};

class AdapterImpl : public torch::nn::Module {
 public:
  /// Weights are initialised N(0, init_std), biases 0, norms 1 (deterministic given the global
  /// torch seed).
  explicit AdapterImpl(const AdapterOptions& o);

  /// features: [S, F, De] float (codes: [S, F, n_q] int64), lengths: [S] int64 valid frames
  /// (1..F) -> [S, F, D] in the adapter's dtype. Frames past a segment's length are padding:
  /// they never influence valid frames; their outputs are finite garbage.
  at::Tensor forward(const at::Tensor& features, const at::Tensor& lengths);

  const AdapterOptions& options() const { return o_; }

  /// Activation checkpointing per adapter layer (off by default). When on, and the module is in
  /// training mode and grad mode is enabled, forward keeps only each layer's input and recomputes
  /// the layer's internals (attention scores, MLP activations, ...) in backward: activation
  /// memory of one layer's internals plus the layer inputs instead of all layers' internals, for
  /// one more forward of every layer. Outputs and gradients are unchanged. See
  /// salad/models/checkpointing.h for the contract (no double backward; backward accumulates
  /// into every layer parameter it reaches).
  void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  torch::nn::Linear in_proj{nullptr};              ///< null for codes
  torch::nn::ModuleList code_embeddings{nullptr};  ///< codes only: n_q Embedding tables
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  torch::nn::Linear out_proj{nullptr};
  at::Tensor speech_start;  ///< [D]
  at::Tensor speech_end;    ///< [D]

 private:
  AdapterOptions o_;
  bool activation_checkpointing_ = false;
};
TORCH_MODULE(Adapter);

/// Number of elements of a module's parameters.
int64_t count_parameters(const torch::nn::Module& m);

}  // namespace salad::models
