// Mimi's encoder transformer (moshi modules/transformer.py, rope.py): pre-norm LayerNorm layers,
// packed q/k/v projection, interleaved RoPE, causal sliding-window attention, LayerScale, GELU FFN.
//
// Shape legend: B batch, T steps (25 Hz), D width, H heads, Dh head width, Tq/Tk query/key block.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "salad/models/mimi.h"

namespace salad::models {

namespace {

// Interleaved RoPE (moshi apply_rope, interleave=True): the pair (x[2i], x[2i+1]) is rotated by
// t * freq_i. Same float32 operations in the same order as moshi, so results match bit for bit.
at::Tensor rotate_interleaved(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t Dh = x.size(-1);
  const at::Tensor pairs =
      x.view({x.size(0), x.size(1), x.size(2), Dh / 2, 2});           // [B, H, T, Dh/2, 2]
  const at::Tensor r = pairs.select(-1, 0), i = pairs.select(-1, 1);  // [B, H, T, Dh/2]
  const at::Tensor out_r = r * cos - i * sin;
  const at::Tensor out_i = r * sin + i * cos;
  return at::stack({out_r, out_i}, -1).view(x.sizes());  // [B, H, T, Dh]
}

// Softmax attention of queries [s, e) over the keys they may see: 0 <= q - k < window.
at::Tensor attend_block(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t s,
                        int64_t e, int64_t window) {
  const int64_t ks = std::max<int64_t>(0, s - window + 1);
  const at::Tensor qb = q.narrow(2, s, e - s);    // [B, H, Tq, Dh]
  const at::Tensor kb = k.narrow(2, ks, e - ks);  // [B, H, Tk, Dh]
  const at::Tensor vb = v.narrow(2, ks, e - ks);
  const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
  const at::Tensor delta =
      at::arange(s, e, opts).unsqueeze(1) - at::arange(ks, e, opts);  // [Tq, Tk]
  const at::Tensor allowed = (delta >= 0) & (delta < window);
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(qb, kb, vb, allowed, 0.0, false);  // [B, H, Tq, Dh]
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(qb, kb.transpose(-2, -1)) * scale;  // [B, H, Tq, Tk]
  // -inf is safe: every query sees itself, so no row is empty.
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(scores, -1), vb);  // [B, H, Tq, Dh]
#endif
}

}  // namespace

MimiAttentionImpl::MimiAttentionImpl(int64_t dim, int64_t num_heads, int64_t context)
    : heads_(num_heads), context_(context) {
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * dim, dim}));
  torch::nn::init::xavier_uniform_(in_proj_weight);
  out_proj = register_module("out_proj",
                             torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(false)));
}

at::Tensor MimiAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                      const at::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), H = heads_, Dh = D / H;
  // Rows of in_proj_weight are (q|k|v, head, dim): "b t (p h d) -> p b h t d".
  const at::Tensor qkv =
      at::linear(x, in_proj_weight).view({B, T, 3, H, Dh}).permute({2, 0, 3, 1, 4});
  const at::Tensor q = rotate_interleaved(qkv[0], cos, sin);  // [B, H, T, Dh]
  const at::Tensor k = rotate_interleaved(qkv[1], cos, sin);  // [B, H, T, Dh]
  const at::Tensor v = qkv[2];                                // [B, H, T, Dh]
  // Queries in blocks of at least the window: each block reads at most 2 windows of keys, so the
  // cost grows linearly with T (10 s = 250 steps is one block at full size).
  const int64_t window = context_ > 0 ? context_ : T;
  const int64_t block = std::max<int64_t>(window, 64);
  std::vector<at::Tensor> outs;
  for (int64_t s = 0; s < T; s += block) {
    outs.push_back(attend_block(q, k, v, s, std::min(T, s + block), window));
  }
  const at::Tensor out = outs.size() == 1 ? outs[0] : at::cat(outs, 2);  // [B, H, T, Dh]
  return out_proj(out.transpose(1, 2).reshape({B, T, D}));               // [B, T, D]
}

LayerScaleImpl::LayerScaleImpl(int64_t dim, double init) {
  scale = register_parameter("scale", torch::full({dim}, init));
}

MimiTransformerLayerImpl::MimiTransformerLayerImpl(const MimiOptions& o) {
  using torch::nn::LayerNormOptions;
  using torch::nn::LinearOptions;
  const int64_t D = o.dimension;
  // Registration order = Kyutai's module order (self_attn, norm1, norm2, linear1, linear2, ...).
  self_attn = register_module("self_attn", MimiAttention(D, o.num_heads, o.context));
  norm1 = register_module("norm1", torch::nn::LayerNorm(LayerNormOptions({D}).eps(o.norm_eps)));
  norm2 = register_module("norm2", torch::nn::LayerNorm(LayerNormOptions({D}).eps(o.norm_eps)));
  linear1 = register_module("linear1",
                            torch::nn::Linear(LinearOptions(D, o.dim_feedforward).bias(false)));
  linear2 = register_module("linear2",
                            torch::nn::Linear(LinearOptions(o.dim_feedforward, D).bias(false)));
  if (o.layer_scale) {
    layer_scale_1 = register_module("layer_scale_1", LayerScale(D, 0.01));
    layer_scale_2 = register_module("layer_scale_2", LayerScale(D, 0.01));
  }
}

at::Tensor MimiTransformerLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                             const at::Tensor& sin) {
  at::Tensor a = self_attn(norm1(x), cos, sin);  // [B, T, D]
  if (layer_scale_1) a = layer_scale_1(a);
  const at::Tensor h = x + a;
  at::Tensor f = linear2(at::gelu(linear1(norm2(h))));  // exact (erf) GELU; [B, T, D]
  if (layer_scale_2) f = layer_scale_2(f);
  return h + f;
}

MimiTransformerImpl::MimiTransformerImpl(const MimiOptions& o)
    : head_dim_(o.dimension / o.num_heads), max_period_(o.max_period) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) layers->push_back(MimiTransformerLayer(o));
}

at::Tensor MimiTransformerImpl::forward(const at::Tensor& x) {
  const int64_t T = x.size(1);
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(x.device());
  // moshi: freqs = exp(arange(Dh/2) * (-ln(max_period) * 2 / Dh)), angle = freqs * t, float32.
  const at::Tensor freqs = at::exp(at::arange(head_dim_ / 2, opts) *
                                   (-std::log(max_period_) * 2.0 / head_dim_));  // [Dh/2]
  const at::Tensor angles = freqs * at::arange(T, opts).unsqueeze(1);            // [T, Dh/2]
  const at::Tensor cos = angles.cos().to(x.scalar_type()), sin = angles.sin().to(x.scalar_type());
  at::Tensor h = x;
  for (const auto& layer : *layers) h = layer->as<MimiTransformerLayer>()->forward(h, cos, sin);
  return h;  // [B, T, D]
}

}  // namespace salad::models
