// Mimi's causal convolutions and the SEANet encoder (moshi modules/conv.py, seanet.py semantics
// with the waveform padded to a whole number of frames: no per-layer right padding).
//
// Shape legend: B batch, C channels, T steps at the layer's rate, P left padding of a conv.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/mimi_internal.h"
#include "salad/core/error.h"
#include "salad/models/mimi.h"

namespace salad::models {

using mimi_detail::path_segment;

namespace {
// Late chunk = this many early chunks (see SeanetEncoderImpl::forward).
constexpr int64_t kLateChunkFactor = 25;
}  // namespace

CausalConv1dImpl::CausalConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                                   int64_t stride, int64_t dilation, bool bias, bool replicate_pad)
    : pad_((kernel_size - 1) * dilation + 1 - stride), replicate_(replicate_pad) {
  if (pad_ < 0) {
    throw ConfigError("causal conv: kernel " + std::to_string(kernel_size) +
                      " is shorter than its stride " + std::to_string(stride));
  }
  conv = path_segment(*this, "conv")
             ->register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(
                                                             in_channels, out_channels, kernel_size)
                                                             .stride(stride)
                                                             .dilation(dilation)
                                                             .bias(bias)));
}

at::Tensor CausalConv1dImpl::forward(const at::Tensor& x) {
  at::Tensor history;
  return forward_chunk(x, history);
}

at::Tensor CausalConv1dImpl::forward_chunk(const at::Tensor& x, at::Tensor& history) {
  if (pad_ == 0) return conv(x);
  if (!history.defined()) {
    // Start of the sequence: moshi pads with zeros (SEANet) or, for the downsample, with copies
    // of the first step (its streaming state starts as x[..., :1]).
    history = replicate_ ? x.narrow(2, 0, 1).expand({x.size(0), x.size(1), pad_})
                         : at::zeros({x.size(0), x.size(1), pad_}, x.options());
  }
  const at::Tensor in = at::cat({history, x}, 2);                // [B, C, P + T]
  history = in.narrow(2, in.size(2) - pad_, pad_).contiguous();  // [B, C, P]
  return conv(in);                                               // [B, Cout, T / stride]
}

SeanetResBlockImpl::SeanetResBlockImpl(int64_t channels, int64_t hidden, int64_t kernel_size,
                                       int64_t dilation, double elu_alpha)
    : alpha_(elu_alpha) {
  block = register_module("block", torch::nn::ModuleList());
  conv1 = CausalConv1d(channels, hidden, kernel_size, /*stride=*/1, dilation, /*bias=*/true);
  conv2 = CausalConv1d(hidden, channels, /*kernel_size=*/1, /*stride=*/1, /*dilation=*/1, true);
  // Kyutai's block is nn.Sequential(ELU, conv, ELU, conv): the convs are block.1 and block.3.
  block->push_back(torch::nn::ELU(torch::nn::ELUOptions().alpha(elu_alpha)));
  block->push_back(conv1);
  block->push_back(torch::nn::ELU(torch::nn::ELUOptions().alpha(elu_alpha)));
  block->push_back(conv2);
}

at::Tensor SeanetResBlockImpl::forward_chunk(const at::Tensor& x, at::Tensor& history1,
                                             at::Tensor& history2) {
  at::Tensor h = conv1->forward_chunk(at::elu(x, alpha_), history1);  // [B, C/compress, T]
  h = conv2->forward_chunk(at::elu(h, alpha_), history2);             // [B, C, T]
  return x + h;
}

SeanetEncoderImpl::SeanetEncoderImpl(const MimiOptions& o)
    : hop_(o.hop_length()), alpha_(o.elu_alpha) {
  model = register_module("model", torch::nn::ModuleList());
  auto add_conv = [&](int64_t in, int64_t out, int64_t k, int64_t stride) {
    Layer l;
    l.conv = CausalConv1d(in, out, k, stride, /*dilation=*/1, /*bias=*/true);
    model->push_back(l.conv);
    layers_.push_back(l);
  };
  auto add_elu = [&] {
    Layer l;
    l.elu = true;
    model->push_back(torch::nn::ELU(torch::nn::ELUOptions().alpha(o.elu_alpha)));
    layers_.push_back(l);
  };
  std::vector<size_t> strided;  // indices of the downsampling convs
  int64_t channels = o.n_filters;
  add_conv(1, channels, o.kernel_size, 1);
  for (auto r = o.ratios.rbegin(); r != o.ratios.rend(); ++r) {
    int64_t dilation = 1;
    for (int64_t j = 0; j < o.n_residual_layers; ++j) {
      Layer l;
      l.res = SeanetResBlock(channels, channels / o.compress, o.residual_kernel_size, dilation,
                             o.elu_alpha);
      model->push_back(l.res);
      layers_.push_back(l);
      dilation *= o.dilation_base;
    }
    add_elu();
    strided.push_back(layers_.size());
    add_conv(channels, channels * 2, *r * 2, *r);
    channels *= 2;
  }
  add_elu();
  add_conv(channels, o.dimension, o.last_kernel_size, 1);
  // The last two downsampling stages form the "late" part (Mimi: from the stride-6 conv on).
  split_ = strided.size() >= 2 ? strided[strided.size() - 2] : 0;
}

at::Tensor SeanetEncoderImpl::run(const at::Tensor& x, size_t begin, size_t end,
                                  std::vector<at::Tensor>& history) {
  at::Tensor h = x;
  for (size_t i = begin; i < end; ++i) {
    Layer& l = layers_[i];
    if (l.elu) {
      h = at::elu(h, alpha_);
    } else if (l.conv) {
      h = l.conv->forward_chunk(h, history[2 * i]);
    } else {
      h = l.res->forward_chunk(h, history[2 * i], history[2 * i + 1]);
    }
  }
  return h;
}

at::Tensor SeanetEncoderImpl::forward(const at::Tensor& x, int64_t chunk_samples) {
  const int64_t L = x.size(2);
  if (L % hop_ != 0) {
    throw Error("SEANet encoder: input length " + std::to_string(L) +
                " is not a multiple of the hop length " + std::to_string(hop_));
  }
  // Two chunk sizes: the high-rate layers (few channels, long sequences) run fastest on short
  // chunks that stay in cache; the last stages (many channels, few steps) want long inputs to
  // keep their GEMMs efficient. Every chunk is a multiple of the hop, so strides stay aligned.
  const int64_t early = chunk_samples > 0 ? std::max(hop_, chunk_samples / hop_ * hop_) : L;
  const int64_t late = chunk_samples > 0 ? early * kLateChunkFactor : L;
  std::vector<at::Tensor> history(layers_.size() * 2);  // two slots per layer (see run)
  std::vector<at::Tensor> outs;
  for (int64_t s = 0; s < L; s += late) {
    const at::Tensor xl = x.narrow(2, s, std::min(late, L - s));  // [B, 1, Tl]
    std::vector<at::Tensor> parts;
    for (int64_t e = 0; e < xl.size(2); e += early) {
      parts.push_back(run(xl.narrow(2, e, std::min(early, xl.size(2) - e)), 0, split_, history));
    }
    const at::Tensor h = parts.size() == 1 ? parts[0] : at::cat(parts, 2);  // [B, C, Tl / stride]
    outs.push_back(run(h, split_, layers_.size(), history));                // [B, D, Tl / hop]
  }
  return outs.size() == 1 ? outs[0] : at::cat(outs, 2);  // [B, D, L / hop]
}

}  // namespace salad::models
