// The small model and data shared by the GradBuckets tests and salad_dist_worker, so that the
// worker processes and the single-process reference compute exactly the same micro-batches.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace salad::test {

/// Linear layers in flat order unused, extra2, extra, l1, l2, l3 (fp64). l1..l3 are used by every
/// micro-batch; `extra` only by global micro-batch 1 (rank 0's sync micro-batch), `extra2` only by
/// global micro-batch 2 (rank 1's first, non-sync micro-batch); `unused` never.
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    unused = register_module("unused", torch::nn::Linear(4, 4));
    extra2 = register_module("extra2", torch::nn::Linear(8, 4));
    extra = register_module("extra", torch::nn::Linear(8, 4));
    l1 = register_module("l1", torch::nn::Linear(8, 16));
    l2 = register_module("l2", torch::nn::Linear(16, 16));
    l3 = register_module("l3", torch::nn::Linear(16, 4));
  }
  at::Tensor forward(const at::Tensor& x, int64_t global_micro_batch) {
    at::Tensor y = l3(torch::tanh(l2(torch::tanh(l1(x)))));  // [B, 4]
    if (global_micro_batch == 1) y = y + extra(x);
    if (global_micro_batch == 2) y = y + extra2(x);
    return y;
  }
  torch::nn::Linear unused{nullptr}, extra2{nullptr}, extra{nullptr}, l1{nullptr}, l2{nullptr},
      l3{nullptr};
};
TORCH_MODULE(TinyNet);

inline constexpr int64_t kMicroBatchesPerRank = 2;

inline TinyNet make_tiny_net() {
  torch::manual_seed(7);
  TinyNet net;
  net->to(torch::kDouble);
  return net;
}

/// The loss of global micro-batch g (rank g / 2, local micro-batch g % 2).
inline at::Tensor tiny_loss(TinyNet& net, int64_t g) {
  torch::manual_seed(1000 + g);
  const at::Tensor x = torch::randn({6, 8}, torch::kDouble);
  const at::Tensor target = torch::randn({6, 4}, torch::kDouble);
  return torch::mse_loss(net->forward(x, g), target, at::Reduction::Sum);
}

/// Points every parameter's .grad at its slice of one zeroed flat buffer (as the trainer does),
/// `pad` extra elements at the end; returns the buffer and fills `params` in flat order.
inline at::Tensor attach_flat_grad(TinyNet& net, std::vector<at::Tensor>& params, int64_t pad = 3) {
  params = net->parameters();
  int64_t total = pad;
  for (const auto& p : params) total += p.numel();
  at::Tensor flat = torch::zeros({total}, torch::kDouble);
  int64_t off = 0;
  for (auto& p : params) {
    p.mutable_grad() = flat.narrow(0, off, p.numel()).view(p.sizes());
    off += p.numel();
  }
  return flat;
}

}  // namespace salad::test
