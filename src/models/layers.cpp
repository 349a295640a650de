#include "salad/models/layers.h"

#include <torch/torch.h>

#include <limits>

#include "salad/core/error.h"

namespace salad::models {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const auto in_dtype = x.scalar_type();
  at::Tensor x32 = x.to(at::kFloat);
  x32 = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * x32.to(in_dtype);
}

Rotary rotary_embedding(const at::Tensor& position_ids, int64_t head_dim, double theta,
                        c10::ScalarType dtype) {
  const auto opts = at::TensorOptions().device(position_ids.device());
  // float32 throughout, in the order Hugging Face computes it: a float64 angle changes logits
  // by ~1e-3 at position 20000 (fixture far_pos).
  const at::Tensor exponent = at::arange(0, head_dim, 2, opts.dtype(at::kLong)).to(at::kFloat) /
                              static_cast<double>(head_dim);
  const at::Tensor inv_freq = 1.0 / at::pow(theta, exponent);                     // [Dh/2]
  const at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, Dh/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                             // [B, T, Dh]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

namespace {
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

at::Tensor apply_rotary(const at::Tensor& x, const Rotary& rot) {
  const at::Tensor cos = rot.cos.unsqueeze(1);  // [B, 1, T, Dh]
  const at::Tensor sin = rot.sin.unsqueeze(1);
  return x * cos + rotate_half(x) * sin;
}

at::Tensor attention_allowed(int64_t batch, int64_t length, const at::Tensor& attention_mask,
                             const at::Tensor& document_ids, c10::Device device, bool causal) {
  const auto opts = at::TensorOptions().device(device);
  at::Tensor allowed = at::ones({length, length}, opts.dtype(at::kBool));  // [T, T]
  if (causal) allowed = allowed.tril();
  allowed = allowed.unsqueeze(0).expand({batch, length, length});  // [B, T, T]
  if (attention_mask.defined()) {
    allowed = allowed & attention_mask.to(device).to(at::kBool).unsqueeze(1);  // keys
  }
  if (document_ids.defined()) {
    const at::Tensor d = document_ids.to(device);
    allowed = allowed & (d.unsqueeze(2) == d.unsqueeze(1));
  }
  allowed = allowed | at::eye(length, opts.dtype(at::kBool)).unsqueeze(0);
  return allowed.unsqueeze(1);  // [B, 1, T, T]
}

void AttentionOptions::validate() const {
  if (hidden_size <= 0 || num_heads <= 0 || num_kv_heads <= 0) {
    throw ConfigError("attention: hidden_size, num_heads and num_kv_heads must be > 0");
  }
  if (head_dim == 0 && hidden_size % num_heads != 0) {
    throw ConfigError("attention: num_heads (" + std::to_string(num_heads) +
                      ") must divide hidden_size (" + std::to_string(hidden_size) + ")");
  }
  if (num_heads % num_kv_heads != 0) {
    throw ConfigError("attention: num_kv_heads (" + std::to_string(num_kv_heads) +
                      ") must divide num_heads (" + std::to_string(num_heads) + ")");
  }
  const int64_t dh = head_dim ? head_dim : hidden_size / num_heads;
  if (dh % 2 != 0)
    throw ConfigError("attention: head_dim must be even for RoPE, found " + std::to_string(dh));
}

AttentionImpl::AttentionImpl(const AttentionOptions& o) : o_(o) {
  o_.validate();
  if (o_.head_dim == 0) o_.head_dim = o_.hidden_size / o_.num_heads;
  const int64_t q_dim = o_.num_heads * o_.head_dim;
  const int64_t kv_dim = o_.num_kv_heads * o_.head_dim;
  using torch::nn::LinearOptions;
  q_proj = register_module(
      "q_proj", torch::nn::Linear(LinearOptions(o_.hidden_size, q_dim).bias(o_.qkv_bias)));
  k_proj = register_module(
      "k_proj", torch::nn::Linear(LinearOptions(o_.hidden_size, kv_dim).bias(o_.qkv_bias)));
  v_proj = register_module(
      "v_proj", torch::nn::Linear(LinearOptions(o_.hidden_size, kv_dim).bias(o_.qkv_bias)));
  o_proj = register_module("o_proj",
                           torch::nn::Linear(LinearOptions(q_dim, o_.hidden_size).bias(false)));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const Rotary& rot,
                                  const at::Tensor& allowed) {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t H = o_.num_heads, Hkv = o_.num_kv_heads, Dh = o_.head_dim;
  at::Tensor q = q_proj(x).view({B, T, H, Dh}).transpose(1, 2);    // [B, H, T, Dh]
  at::Tensor k = k_proj(x).view({B, T, Hkv, Dh}).transpose(1, 2);  // [B, Hkv, T, Dh]
  at::Tensor v = v_proj(x).view({B, T, Hkv, Dh}).transpose(1, 2);  // [B, Hkv, T, Dh]
  q = apply_rotary(q, rot);
  k = apply_rotary(k, rot);
  if (H != Hkv) {
    const int64_t rep = H / Hkv;
    k = k.unsqueeze(2).expand({B, Hkv, rep, T, Dh}).reshape({B, H, T, Dh});  // [B, H, T, Dh]
    v = v.unsqueeze(2).expand({B, Hkv, rep, T, Dh}).reshape({B, H, T, Dh});
  }
#if TORCH_VERSION_MAJOR >= 2
  at::Tensor out = at::scaled_dot_product_attention(q, k, v, allowed, 0.0, false);  // [B, H, T, Dh]
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;  // [B, H, T, T]
  // -inf is safe: attention_allowed never leaves a row empty (a query always sees itself).
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  at::Tensor out = at::matmul(probs, v);  // [B, H, T, Dh]
#endif
  out = out.transpose(1, 2).reshape({B, T, H * Dh});  // [B, T, H*Dh]
  return o_proj(out);
}

SwiGluImpl::SwiGluImpl(int64_t hidden_size, int64_t intermediate_size) {
  using torch::nn::LinearOptions;
  gate_proj = register_module(
      "gate_proj", torch::nn::Linear(LinearOptions(hidden_size, intermediate_size).bias(false)));
  up_proj = register_module(
      "up_proj", torch::nn::Linear(LinearOptions(hidden_size, intermediate_size).bias(false)));
  down_proj = register_module(
      "down_proj", torch::nn::Linear(LinearOptions(intermediate_size, hidden_size).bias(false)));
}

at::Tensor SwiGluImpl::forward(const at::Tensor& x) {
  return down_proj(at::silu(gate_proj(x)) * up_proj(x));
}

DecoderBlockImpl::DecoderBlockImpl(const BlockOptions& o) {
  input_layernorm =
      register_module("input_layernorm", RMSNorm(o.attention.hidden_size, o.rms_norm_eps));
  self_attn = register_module("self_attn", Attention(o.attention));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(o.attention.hidden_size, o.rms_norm_eps));
  mlp = register_module("mlp", SwiGlu(o.attention.hidden_size, o.intermediate_size));
}

at::Tensor DecoderBlockImpl::forward(const at::Tensor& x, const Rotary& rot,
                                     const at::Tensor& allowed) {
  at::Tensor h = x + self_attn(input_layernorm(x), rot, allowed);
  return h + mlp(post_attention_layernorm(h));
}

}  // namespace salad::models
