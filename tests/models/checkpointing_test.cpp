// Activation checkpointing (salad/models/checkpointing.h): same loss and gradients as without it
// (decoder, adapter, under autocast), finite-difference checks in double precision, in-place
// accumulation into gradient views of a flat buffer, grad-accumulator post hooks, and the memory
// it saves.
#include "salad/models/checkpointing.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cpu_memory_counter.h"
#include "models/speech_lm_fixture.h"
#include "salad/core/error.h"
#include "salad/models/adapter.h"
#include "salad/models/qwen2.h"
#include "test_util.h"

namespace salad::models {
namespace {

using test::all_close;
using Grads = std::map<std::string, at::Tensor>;

Grads grads_of(torch::nn::Module& m) {
  Grads g;
  for (const auto& p : m.named_parameters()) {
    if (p.value().grad().defined()) g[p.key()] = p.value().grad().detach().clone();
  }
  return g;
}

void clear_grads(torch::nn::Module& m) {
  for (auto& p : m.parameters()) p.mutable_grad().reset();
}

// Compares two gradient sets parameter by parameter, each within `rel` of the reference's scale
// (max |g|); returns the worst relative difference seen.
double expect_same_grads(const Grads& expected, const Grads& actual, double rel,
                         const std::string& what) {
  EXPECT_EQ(expected.size(), actual.size()) << what << ": gradients of different parameters";
  double worst = 0.0;
  for (const auto& [name, e] : expected) {
    const auto it = actual.find(name);
    if (it == actual.end()) {
      ADD_FAILURE() << what << ": no gradient for " << name;
      continue;
    }
    const double scale = std::max(e.abs().max().item<double>(), 1e-30);
    EXPECT_TRUE(all_close(it->second, e, rel * scale, what + " " + name));
    worst = std::max(worst, (it->second - e).abs().max().item<double>() / scale);
  }
  return worst;
}

// Whether the autograd graph behind y has a node whose name contains `name`.
bool graph_has(const at::Tensor& y, const std::string& name) {
  std::vector<torch::autograd::Node*> todo{y.grad_fn().get()};
  std::vector<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    torch::autograd::Node* n = todo.back();
    todo.pop_back();
    if (!n || std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
    seen.push_back(n);
    if (n->name().find(name) != std::string::npos) return true;
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return false;
}

constexpr const char* kNode = "CheckpointFunction";

// Two packed rows, the second right-padded: every kind of mask the decoder builds.
struct DecoderBatch {
  Qwen2Input in;
  at::Tensor targets;  // [B, T]
};

DecoderBatch decoder_batch(int64_t vocab) {
  torch::manual_seed(21);
  DecoderBatch b;
  b.in.input_ids = torch::randint(vocab, {2, 12}, torch::kLong);
  b.in.document_ids =
      torch::tensor({0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                    torch::kLong)
          .view({2, 12});
  b.in.attention_mask = torch::ones({2, 12}, torch::kLong);
  b.in.attention_mask[1].narrow(0, 9, 3).zero_();
  b.targets = torch::randint(vocab, {2, 12}, torch::kLong);
  return b;
}

at::Tensor decoder_loss(Qwen2& m, const DecoderBatch& b) {
  const Qwen2Output out = m->forward_hidden(b.in, /*keep_layer_outputs=*/true);
  // Every layer output went through a checkpoint iff checkpointing is on.
  for (const auto& h : out.layer_outputs) {
    EXPECT_EQ(graph_has(h, kNode), m->activation_checkpointing() && m->is_training());
  }
  const at::Tensor logits = m->logits(out.hidden);  // [B, T, V]
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              b.targets.reshape({-1}));
}

TEST(ActivationCheckpointTest, DecoderLossAndGradientsAreUnchanged) {
  Qwen2 m = test_fixture::random_decoder(3);
  m->train();
  const DecoderBatch b = decoder_batch(m->options().vocab_size);
  EXPECT_FALSE(m->activation_checkpointing());  // off by default

  const at::Tensor loss_plain = decoder_loss(m, b);
  loss_plain.backward();
  const Grads plain = grads_of(*m);
  clear_grads(*m);

  m->set_activation_checkpointing(true);
  const at::Tensor loss_ckpt = decoder_loss(m, b);
  loss_ckpt.backward();
  const Grads ckpt = grads_of(*m);

  EXPECT_EQ(plain.size(), m->parameters().size());
  EXPECT_NEAR(loss_ckpt.item<double>(), loss_plain.item<double>(),
              1e-6 * std::abs(loss_plain.item<double>()));
  const double worst = expect_same_grads(plain, ckpt, 1e-6, "decoder");
  std::printf("decoder: loss %.9g vs %.9g, max gradient difference %.3g (relative to scale)\n",
              loss_plain.item<double>(), loss_ckpt.item<double>(), worst);
}

TEST(ActivationCheckpointTest, AdapterLossAndGradientsAreUnchanged) {
  torch::manual_seed(4);
  Adapter a(test_fixture::tiny_adapter());
  {
    torch::NoGradGuard no_grad;  // larger than the N(0, 0.02) init: gradients well above noise
    for (auto& p : a->parameters()) p.normal_(0.0, 0.3);
  }
  a->train();
  const at::Tensor features = torch::randn({3, 10, test_fixture::kFeat});
  const at::Tensor lengths = torch::tensor({10, 7, 4}, torch::kLong);
  const at::Tensor w = torch::randn({3, 10, a->options().output_dim});
  auto loss_of = [&] {
    const at::Tensor out = a->forward(features, lengths);  // [S, F, D]
    EXPECT_EQ(graph_has(out, kNode), a->activation_checkpointing());
    return (out * w).sum();
  };

  const at::Tensor loss_plain = loss_of();
  loss_plain.backward();
  const Grads plain = grads_of(*a);
  clear_grads(*a);

  a->set_activation_checkpointing(true);
  EXPECT_TRUE(a->activation_checkpointing());
  const at::Tensor loss_ckpt = loss_of();
  loss_ckpt.backward();
  const Grads ckpt = grads_of(*a);

  EXPECT_EQ(plain.size(), a->parameters().size() - 2);  // speech_start/end: not in forward
  EXPECT_NEAR(loss_ckpt.item<double>(), loss_plain.item<double>(),
              1e-6 * std::abs(loss_plain.item<double>()));
  const double worst = expect_same_grads(plain, ckpt, 1e-6, "adapter");
  std::printf("adapter: loss %.9g vs %.9g, max gradient difference %.3g (relative to scale)\n",
              loss_plain.item<double>(), loss_ckpt.item<double>(), worst);
}

TEST(ActivationCheckpointTest, OnlyInTrainingModeWithGrad) {
  Qwen2 m = test_fixture::random_decoder(3);
  m->set_activation_checkpointing(true);
  const DecoderBatch b = decoder_batch(m->options().vocab_size);
  m->train();
  EXPECT_TRUE(graph_has(m->forward(b.in), kNode));
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(m->forward(b.in).requires_grad());
  }
  m->eval();
  const at::Tensor y = m->forward(b.in);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(graph_has(y, kNode));
}

// Frozen inputs or frozen blocks: the checkpoint must still deliver whatever needs a gradient.
TEST(ActivationCheckpointTest, FrozenInputOrFrozenBlock) {
  Qwen2 m = test_fixture::random_decoder(6);
  m->train();
  const DecoderBatch b = decoder_batch(m->options().vocab_size);
  auto run = [&](bool checkpoint) {
    clear_grads(*m);
    m->set_activation_checkpointing(checkpoint);
    decoder_loss(m, b).backward();
    return grads_of(*m);
  };
  // The input of the first layer needs no grad, its parameters do (an "anchor" carries the node).
  m->model->embed_tokens->weight.requires_grad_(false);
  const Grads frozen_input = run(false);
  EXPECT_EQ(frozen_input.count("model.embed_tokens.weight"), 0u);
  expect_same_grads(frozen_input, run(true), 1e-6, "frozen embedding");
  m->model->embed_tokens->weight.requires_grad_(true);
  // The layers are frozen, the input needs grad: only dL/dx flows through the checkpoints.
  for (auto& p : m->model->layers->parameters()) p.requires_grad_(false);
  const Grads frozen_layers = run(false);
  EXPECT_EQ(frozen_layers.size(), 2u);  // embedding (tied with the head) and the final norm
  expect_same_grads(frozen_layers, run(true), 1e-6, "frozen layers");
}

TEST(ActivationCheckpointTest, AutocastIsReenteredForTheRecompute) {
  Qwen2 m = test_fixture::random_decoder(7);
  m->train();
  const DecoderBatch b = decoder_batch(m->options().vocab_size);
  AutocastState bf16;
  bf16.cpu_enabled = true;
  bf16.cpu_dtype = at::kBFloat16;
  auto run = [&](bool checkpoint, bool autocast) {
    clear_grads(*m);
    m->set_activation_checkpointing(checkpoint);
    at::Tensor loss;
    {
      AutocastState s = AutocastState::current();
      if (autocast) s = bf16;
      const AutocastStateGuard guard(s);
      loss = decoder_loss(m, b);
    }
    loss.backward();  // outside autocast, as a training step does
    return grads_of(*m);
  };
  const AutocastState before = AutocastState::current();
  const Grads fp32 = run(false, false);
  const Grads plain = run(false, true);
  const Grads ckpt = run(true, true);
  const AutocastState after = AutocastState::current();
  EXPECT_EQ(after.cpu_enabled, before.cpu_enabled);
  EXPECT_EQ(after.cache_enabled, before.cache_enabled);
  EXPECT_EQ(after.cpu_dtype, before.cpu_dtype);

  const double worst = expect_same_grads(plain, ckpt, 1e-6, "autocast bf16");
  // Meaningful only if bf16 changes the gradients: a recompute in fp32 would then be caught.
  double bf16_effect = 0.0;
  for (const auto& [name, g] : fp32) {
    const double scale = g.abs().max().item<double>();
    bf16_effect = std::max(bf16_effect, (plain.at(name) - g).abs().max().item<double>() / scale);
  }
  EXPECT_GT(bf16_effect, 1e-3);
  std::printf("autocast bf16: checkpointed vs plain %.3g, bf16 vs fp32 %.3g (relative)\n", worst,
              bf16_effect);
}

// ---------------------------------------------------------------------------------------------
// Finite differences in double precision.

// Errors of analytic against numeric gradient entries: relative to the gradient tensor's scale
// (max |analytic| over the whole tensor, as test::all_close measures), and element-wise relative
// (|a - n| / max(|a|, |n|)) over the entries at least 1e-3 of that scale.
struct FdReport {
  double worst_scaled = 0.0;
  double worst_elementwise = 0.0;
  int64_t checked = 0;
};

// Central differences of `loss` (evaluated with grad off) with respect to the entries `index`
// of `t` (flattened), which is modified in place and restored.
void fd_check(const std::function<double()>& loss, const at::Tensor& t, const at::Tensor& analytic,
              const std::vector<int64_t>& index, double eps, FdReport& r) {
  ASSERT_TRUE(analytic.defined());
  torch::NoGradGuard no_grad;
  at::Tensor flat = t.view({-1});
  const at::Tensor a = analytic.reshape({-1});
  const double scale = a.abs().max().item<double>();
  ASSERT_GT(scale, 0.0);
  for (const int64_t i : index) {
    const double v = flat[i].item<double>();
    flat[i].fill_(v + eps);
    const double up = loss();
    flat[i].fill_(v - eps);
    const double down = loss();
    flat[i].fill_(v);
    const double numeric = (up - down) / (2 * eps);
    const double an = a[i].item<double>();
    const double err = std::abs(an - numeric);
    r.worst_scaled = std::max(r.worst_scaled, err / scale);
    const double mag = std::max(std::abs(an), std::abs(numeric));
    if (mag >= 1e-3 * scale) r.worst_elementwise = std::max(r.worst_elementwise, err / mag);
    ++r.checked;
  }
}

std::vector<int64_t> all_of(const at::Tensor& t) {
  std::vector<int64_t> v(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = i;
  return v;
}

std::vector<int64_t> some_of(const at::Tensor& t, int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  const at::Tensor idx = torch::randint(t.numel(), {n}, torch::kLong);
  return std::vector<int64_t>(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + n);
}

// A function built from the project's layers that is double precision end to end (the decoder
// block is not: RMSNorm and the attention softmax compute in float32 by design).
TEST(ActivationCheckpointTest, FiniteDifferencesOfAFullyDoubleFunction) {
  torch::manual_seed(8);
  const int64_t B = 2, T = 5, D = 8;
  torch::nn::Linear proj(D, D);
  SwiGlu mlp(D, 12);
  proj->to(at::kDouble);
  mlp->to(at::kDouble);
  const at::Tensor pos = torch::arange(T, torch::kLong).unsqueeze(0).expand({B, T});
  const Rotary rot = rotary_embedding(pos, D, 10000.0, at::kDouble);
  const auto fn = [proj = proj.ptr(), mlp = mlp.ptr(), rot](const at::Tensor& x) {
    const at::Tensor h = apply_rotary(proj->forward(x).view({B, 1, T, D}), rot).view({B, T, D});
    return x + mlp->forward(at::tanh(h));
  };
  std::vector<at::Tensor> params = proj->parameters();
  for (const auto& p : mlp->parameters()) params.push_back(p);
  const at::Tensor x = torch::randn({B, T, D}, torch::kDouble).requires_grad_();
  const at::Tensor w = torch::randn({B, T, D}, torch::kDouble);

  const at::Tensor y = checkpointed(fn, x, params);
  ASSERT_TRUE(graph_has(y, kNode));
  (y * w).sum().backward();
  auto loss = [&] { return (fn(x) * w).sum().item<double>(); };
  FdReport r;
  // eps ~ cbrt(double epsilon): rounding (~1e-16 / eps) and truncation (~eps^2) errors balance.
  fd_check(loss, x, x.grad(), all_of(x), 1e-5, r);
  for (size_t k = 0; k < params.size(); ++k) {
    fd_check(loss, params[k], params[k].grad(), some_of(params[k], 6, 100 + k), 1e-5, r);
  }
  EXPECT_LT(r.worst_scaled, 1e-6);
  EXPECT_LT(r.worst_elementwise, 1e-6);
  std::printf(
      "double function: %lld entries, worst FD error %.3g relative to scale, %.3g element-wise\n",
      static_cast<long long>(r.checked), r.worst_scaled, r.worst_elementwise);
}

// The real block in double: its gradients equal plain autograd's to the last bit, and they agree
// with finite differences as far as the block's float32 internals allow.
TEST(ActivationCheckpointTest, FiniteDifferencesOfADecoderBlock) {
  torch::manual_seed(9);
  BlockOptions o;
  o.attention.hidden_size = 16;
  o.attention.num_heads = 4;
  o.attention.num_kv_heads = 2;
  o.attention.qkv_bias = true;
  o.intermediate_size = 24;
  DecoderBlock block(o);
  block->to(at::kDouble);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : block->parameters()) p.normal_(0.0, 0.3);
  }
  const int64_t B = 2, T = 6, D = 16;
  const at::Tensor pos = torch::arange(T, torch::kLong).unsqueeze(0).expand({B, T});
  const Rotary rot = rotary_embedding(pos, 4, 10000.0, at::kDouble);
  const at::Tensor mask = torch::tensor({{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}}, torch::kLong);
  const at::Tensor allowed = attention_allowed(B, T, mask, {}, pos.device());
  const at::Tensor x0 = torch::randn({B, T, D}, torch::kDouble);
  const at::Tensor w = torch::randn({B, T, D}, torch::kDouble);

  const at::Tensor x_plain = x0.clone().requires_grad_();
  (block->forward(x_plain, rot, allowed) * w).sum().backward();
  const Grads plain = grads_of(*block);
  clear_grads(*block);
  const at::Tensor x = x0.clone().requires_grad_();
  const at::Tensor y = checkpointed_block(block, x, rot, allowed);
  ASSERT_TRUE(graph_has(y, kNode));
  (y * w).sum().backward();
  const double worst_exact = expect_same_grads(plain, grads_of(*block), 1e-12, "double block");
  EXPECT_TRUE(all_close(x.grad(), x_plain.grad(), 1e-12, "double block dL/dx"));

  // RMSNorm and softmax round to float32 (~6e-8 relative), so a difference quotient with step
  // eps carries ~1e-7 / eps of noise: eps = 1e-3 balances it with the O(eps^2) truncation error.
  auto loss = [&] { return (block->forward(x, rot, allowed) * w).sum().item<double>(); };
  FdReport r;
  fd_check(loss, x, x.grad(), all_of(x), 1e-3, r);
  for (const auto& p : block->named_parameters()) {
    fd_check(loss, p.value(), p.value().grad(), some_of(p.value(), 3, 7), 1e-3, r);
  }
  EXPECT_LT(r.worst_scaled, 1e-3);
  std::printf(
      "double decoder block: checkpointed vs plain %.3g; %lld entries, worst FD error %.3g "
      "relative to scale, %.3g element-wise\n",
      worst_exact, static_cast<long long>(r.checked), r.worst_scaled, r.worst_elementwise);
}

// ---------------------------------------------------------------------------------------------
// What the trainer relies on.

TEST(ActivationCheckpointTest, GradientsAccumulateIntoFlatBufferViews) {
  Qwen2 m = test_fixture::random_decoder(10);
  m->train();
  const DecoderBatch b = decoder_batch(m->options().vocab_size);
  decoder_loss(m, b).backward();
  const Grads ref = grads_of(*m);  // without checkpointing

  std::vector<at::Tensor> params = m->parameters();
  int64_t total = 0;
  for (const auto& p : params) total += p.numel();
  const at::Tensor flat = torch::zeros({total});
  std::vector<at::Tensor> views;
  int64_t offset = 0;
  for (auto& p : params) {
    views.push_back(flat.narrow(0, offset, p.numel()).view(p.sizes()));
    p.mutable_grad() = views.back();
    offset += p.numel();
  }
  m->set_activation_checkpointing(true);
  for (int step = 1; step <= 2; ++step) {
    decoder_loss(m, b).backward();
    const std::vector<std::string> names = m->named_parameters().keys();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = names[i];
      EXPECT_TRUE(params[i].grad().is_same(views[i]) ||
                  params[i].grad().data_ptr() == views[i].data_ptr())
          << name << ": .grad no longer points into the flat buffer";
      EXPECT_TRUE(all_close(views[i], step * ref.at(name),
                            1e-6 * step * ref.at(name).abs().max().item<double>(),
                            "flat buffer, step " + std::to_string(step) + " " + name));
    }
  }
}

struct CountingHook : torch::autograd::FunctionPostHook {
  CountingHook(int* calls, at::Tensor param, double* grad_sum)
      : calls_(calls), param_(std::move(param)), grad_sum_(grad_sum) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& inputs) override {
    (void)inputs;
    ++*calls_;
    // Post hooks run after the accumulation: .grad must already hold this backward's gradient.
    if (param_.grad().defined()) *grad_sum_ = param_.grad().abs().sum().item<double>();
    return outputs;
  }
  int* calls_;
  at::Tensor param_;
  double* grad_sum_;
};

TEST(ActivationCheckpointTest, GradAccumulatorPostHooksFire) {
  Qwen2 m = test_fixture::random_decoder(11);
  m->train();
  m->set_activation_checkpointing(true);
  const DecoderBatch b = decoder_batch(m->options().vocab_size);
  const at::Tensor inside = m->model->layers->ptr<DecoderBlockImpl>(0)->self_attn->q_proj->weight;
  const at::Tensor outside = m->model->norm->weight;
  int calls_inside = 0, calls_outside = 0;
  double sum_inside = 0.0, sum_outside = 0.0;
  // The accumulators must be kept alive: a parameter only holds its accumulator weakly.
  const auto acc_inside = torch::autograd::impl::grad_accumulator(inside);
  const auto acc_outside = torch::autograd::impl::grad_accumulator(outside);
  acc_inside->add_post_hook(std::make_unique<CountingHook>(&calls_inside, inside, &sum_inside));
  acc_outside->add_post_hook(std::make_unique<CountingHook>(&calls_outside, outside, &sum_outside));
  decoder_loss(m, b).backward();
  EXPECT_EQ(calls_inside, 1);
  EXPECT_EQ(calls_outside, 1);
  EXPECT_GT(sum_inside, 0.0);
  EXPECT_GT(sum_outside, 0.0);
  EXPECT_EQ(sum_inside, inside.grad().abs().sum().item<double>());
}

TEST(ActivationCheckpointTest, DoubleBackwardIsRefused) {
  Qwen2 m = test_fixture::random_decoder(12);
  m->train();
  m->set_activation_checkpointing(true);
  const DecoderBatch b = decoder_batch(m->options().vocab_size);
  const at::Tensor loss = decoder_loss(m, b);
  // The embedding (tied with the head) is reached through every checkpointed layer.
  test::expect_error<Error>(
      [&] {
        torch::autograd::grad({loss}, {m->model->embed_tokens->weight}, {},
                              /*retain_graph=*/true, /*create_graph=*/true);
      },
      {"double backward", "create_graph"});
}

// ---------------------------------------------------------------------------------------------
// Memory.

TEST(ActivationCheckpointTest, PeakMemoryIsOneLayerNotAll) {
  Qwen2Options o;
  o.vocab_size = 64;
  o.hidden_size = 256;
  o.intermediate_size = 512;
  o.num_hidden_layers = 8;
  o.num_attention_heads = 4;
  o.num_key_value_heads = 2;
  o.tie_word_embeddings = true;
  torch::manual_seed(13);
  Qwen2 m(o);
  m->train();
  const int64_t B = 2, T = 512;
  Qwen2Input in;
  in.input_ids = torch::randint(o.vocab_size, {B, T}, torch::kLong);
  auto measure = [&](bool checkpoint, double* loss_value) {
    clear_grads(*m);
    m->set_activation_checkpointing(checkpoint);
    test::CpuMemoryCounter counter;
    const auto t0 = std::chrono::steady_clock::now();
    {
      const at::Tensor loss = m->forward_hidden(in).hidden.square().mean();
      loss.backward();
      *loss_value = loss.item<double>();
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-8s peak %7.1f MiB, %.2f s forward+backward\n",
                checkpoint ? "ckpt:" : "plain:", counter.peak_bytes() / 1048576.0, secs);
    return counter.peak_bytes();
  };
  double loss_plain = 0.0, loss_ckpt = 0.0;
  const int64_t plain = measure(false, &loss_plain);
  const Grads g_plain = grads_of(*m);
  const int64_t ckpt = measure(true, &loss_ckpt);
  EXPECT_EQ(loss_plain, loss_ckpt);
  expect_same_grads(g_plain, grads_of(*m), 1e-6, "mid-size decoder");
  // One layer's attention probabilities alone are B*H*T*T*4 = 8 MiB; without checkpointing all
  // 8 layers keep theirs (and everything else inside the layers).
  EXPECT_LT(ckpt * 3, plain) << "checkpointed peak " << ckpt << " bytes vs plain " << plain;
}

}  // namespace
}  // namespace salad::models
