// Qwen2 / Qwen2.5 decoder-only LM (Hugging Face Qwen2ForCausalLM), built from a config.json and
// loaded from a Hugging Face checkpoint folder. Parameter names are the checkpoint's keys
// (model.embed_tokens.weight, model.layers.{i}.self_attn.q_proj.weight, ..., lm_head.weight).
//
// Shape legend: B batch, T positions, D hidden_size, V vocab_size.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "salad/models/layers.h"

namespace salad::config {
struct DecoderArchConfig;
}

namespace salad::models {

struct Qwen2Options {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  ///< 0: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 32768;
  double rope_theta = 1000000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";  ///< as stored in config.json
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  /// Throws ConfigError listing every inconsistency (non-positive sizes, heads not dividing).
  void validate() const;
  int64_t resolved_head_dim() const {
    return head_dim ? head_dim : hidden_size / num_attention_heads;
  }

  /// Reads a Hugging Face config.json. Throws ConfigError naming the file and the missing or
  /// mistyped keys (all at once), or an unsupported architecture / rope_scaling.
  static Qwen2Options from_hf_config(const std::filesystem::path& config_json);
  /// From a recipe's model.arch (vocab_size 0 must be resolved by the caller first).
  static Qwen2Options from_arch(const config::DecoderArchConfig& arch, int64_t vocab_size);
  /// The config.json text Hugging Face writes for these options.
  std::string to_hf_config_json() const;
};

/// Everything but the LM head: embeddings, layers, final norm.
class Qwen2ModelImpl : public torch::nn::Module {
 public:
  explicit Qwen2ModelImpl(const Qwen2Options& o);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Qwen2Model);

/// Inputs of one forward. Give exactly one of input_ids / inputs_embeds.
struct Qwen2Input {
  at::Tensor input_ids;       ///< [B, T] int64
  at::Tensor inputs_embeds;   ///< [B, T, D] (the speech path)
  at::Tensor position_ids;    ///< [B, T] int64; default 0..T-1 in every row
  at::Tensor attention_mask;  ///< [B, T], 1 = real token, 0 = padding (keys masked)
  at::Tensor document_ids;    ///< [B, T]; packed documents attend only within themselves
};

struct Qwen2Output {
  at::Tensor hidden;                      ///< after the final norm, [B, T, D]
  std::vector<at::Tensor> layer_outputs;  ///< each layer's output, if requested
};

class Qwen2Impl : public torch::nn::Module {
 public:
  explicit Qwen2Impl(const Qwen2Options& o);

  /// Final hidden states (the loss works from these and the LM head, in chunks).
  Qwen2Output forward_hidden(const Qwen2Input& in, bool keep_layer_outputs = false);
  /// Logits of hidden states: [..., D] -> [..., V].
  at::Tensor logits(const at::Tensor& hidden);
  /// Convenience: logits of the whole input, [B, T, V].
  at::Tensor forward(const Qwen2Input& in);
  /// Token embeddings: [B, T] int64 -> [B, T, D].
  at::Tensor embed(const at::Tensor& ids);
  /// The LM head matrix [V, D]: lm_head.weight, or the embedding when tied.
  at::Tensor lm_head_weight() const;

  const Qwen2Options& options() const { return o_; }

  /// Activation checkpointing per decoder layer (off by default). When on, and the module is in
  /// training mode and grad mode is enabled, forward_hidden keeps only each layer's input and
  /// recomputes the layer's internals (attention scores, MLP activations, ...) in backward:
  /// activation memory of one layer's internals plus the L layer inputs instead of all L layers'
  /// internals, for one more forward of every layer. Outputs and gradients are unchanged. See
  /// salad/models/checkpointing.h for the contract (no double backward; backward accumulates
  /// into every layer parameter it reaches).
  void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  Qwen2Model model{nullptr};
  torch::nn::Linear lm_head{nullptr};  ///< null when tie_word_embeddings

 private:
  Qwen2Options o_;
  bool activation_checkpointing_ = false;
};
TORCH_MODULE(Qwen2);

/// Builds a Qwen2 from `dir/config.json` and loads `dir`'s safetensors (single or sharded),
/// checking every tensor's name, shape and dtype (all problems reported at once, naming the
/// files). Weights are converted to `dtype` (float32, bfloat16 or float16).
Qwen2 load_qwen2(const std::filesystem::path& dir, c10::ScalarType dtype);

/// "fp32" | "bf16" | "fp16" -> the LibTorch dtype; throws ConfigError otherwise.
c10::ScalarType parse_dtype(const std::string& name);

}  // namespace salad::models
