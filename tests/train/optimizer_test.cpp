// The WSD schedule and the flat AdamW: exact factors, agreement with LibTorch's AdamW with
// parameter groups, decay only on matrices, views that stay tied to the model, ZeRO-1 shards.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/models/speech_lm.h"
#include "salad/train/flat_adamw.h"
#include "salad/train/schedule.h"
#include "test_util.h"

namespace salad::train {
namespace {

TEST(WsdSchedule, WarmupConstantDecay) {
  config::OptimConfig o;
  o.warmup_steps = 4;
  o.decay_fraction = 0.2;
  const WsdSchedule s = WsdSchedule::from_config(o, 20);
  EXPECT_EQ(s.decay_start, 16);
  EXPECT_EQ(s.branch_step(), 16);
  EXPECT_DOUBLE_EQ(s.factor(0), 0.25);
  EXPECT_DOUBLE_EQ(s.factor(3), 1.0);
  EXPECT_DOUBLE_EQ(s.factor(10), 1.0);
  EXPECT_DOUBLE_EQ(s.factor(15), 1.0);
  EXPECT_DOUBLE_EQ(s.factor(16), 1.0);  // first decay update: 4/4
  EXPECT_DOUBLE_EQ(s.factor(17), 0.75);
  EXPECT_DOUBLE_EQ(s.factor(19), 0.25);
  EXPECT_DOUBLE_EQ(s.factor(20), 0.0);
  o.decay_fraction = 0.0;
  EXPECT_EQ(WsdSchedule::from_config(o, 20).branch_step(), -1);
  o.decay_fraction = 1.5;
  test::expect_error<ConfigError>([&] { WsdSchedule::from_config(o, 20); },
                                  {"optim.decay_fraction", "1.5"});
}

models::ParamGroup group(const std::string& name, std::vector<at::Tensor> ts) {
  models::ParamGroup g{name, {}};
  for (size_t i = 0; i < ts.size(); ++i) {
    g.params.emplace_back(name + ".p" + std::to_string(i), ts[i].set_requires_grad(true));
  }
  return g;
}

TEST(FlatAdamW, MatchesLibTorchAdamWWithGroups) {
  torch::manual_seed(0);
  // Group a: a matrix (decayed) and a bias (not); group b: a matrix and a norm vector.
  std::vector<at::Tensor> init = {torch::randn({5, 3}), torch::randn({5}), torch::randn({4, 4}),
                                  torch::randn({4})};
  std::vector<at::Tensor> ours, ref;
  for (const auto& t : init) {
    ours.push_back(t.clone());
    ref.push_back(t.clone().set_requires_grad(true));
  }
  FlatParams flat({group("a", {ours[0], ours[1]}), group("b", {ours[2], ours[3]})},
                  c10::Device(c10::kCPU));
  EXPECT_EQ(flat.numel(), 15 + 5 + 16 + 4);
  EXPECT_EQ(flat.padded() % 64, 0);
  ASSERT_EQ(flat.segments().size(), 4u);
  EXPECT_TRUE(flat.segments()[0].decay);
  EXPECT_FALSE(flat.segments()[1].decay);
  AdamWOptions ao;
  ao.beta2 = 0.95;
  ao.weight_decay = 0.1;
  FlatAdamW opt(flat, ao, 0, flat.padded());

  // LibTorch's AdamW: decayed and undecayed params of each group as separate groups.
  auto opts = [&](double lr, double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{ref[0]}, opts(1e-2, 0.1));
  groups.emplace_back(std::vector<at::Tensor>{ref[1]}, opts(1e-2, 0.0));
  groups.emplace_back(std::vector<at::Tensor>{ref[2]}, opts(3e-3, 0.1));
  groups.emplace_back(std::vector<at::Tensor>{ref[3]}, opts(3e-3, 0.0));
  torch::optim::AdamW reference(groups, torch::optim::AdamWOptions(1.0));

  for (int step = 0; step < 5; ++step) {
    auto loss = [&](const std::vector<at::Tensor>& p) {
      return (p[0].sum(1) * p[1]).pow(2).sum() + (p[2].matmul(p[3])).sin().sum();
    };
    flat.zero_grad();
    loss(ours).backward();
    reference.zero_grad();
    loss(ref).backward();
    EXPECT_TRUE(ours[0].grad().data_ptr() == flat.grads().data_ptr()) << "grad is a flat view";
    opt.step({{"a", 1e-2}, {"b", 3e-3}});
    reference.step();
  }
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_TRUE(test::all_close(ours[i], ref[i], 1e-6, "tensor")) << "tensor " << i;
  }
  EXPECT_EQ(opt.steps(), 5);
}

TEST(FlatAdamW, ParamsAreViewsAndTiedTensorsCountOnce) {
  at::Tensor w = torch::randn({3, 2}).set_requires_grad(true);
  models::ParamGroup g{"llm", {{"embed", w}, {"lm_head", w}, {"norm", torch::ones({2})}}};
  g.params[2].second.set_requires_grad(true);
  FlatParams flat({g}, c10::Device(c10::kCPU));
  EXPECT_EQ(flat.entries().size(), 2u);
  EXPECT_EQ(flat.numel(), 8);
  flat.values().narrow(0, 0, 1).fill_(42.0);
  EXPECT_EQ(w.flatten()[0].item<float>(), 42.0f) << "the model sees the flat buffer";
  EXPECT_EQ(flat.named_values()[0].first, "embed");
}

TEST(FlatAdamW, GradNormIsSummedInDouble) {
  // 12 M entries: a float32 at::norm of this buffer is off by ~1e-3 relative (LibTorch 1.13).
  torch::manual_seed(3);
  std::vector<at::Tensor> p = {torch::zeros({3000, 4000}), torch::zeros({7})};
  FlatParams flat({group("g", p)}, c10::Device(c10::kCPU));
  flat.grads().normal_(0.0, 3e-4);
  flat.grads().narrow(0, 0, 1000).mul_(100.0);
  const double want = flat.grads().to(at::kDouble).norm().item<double>();
  EXPECT_NEAR(flat.grad_norm(), want, 1e-12 * want);
  flat.zero_grad();
  EXPECT_EQ(flat.grad_norm(), 0.0);
}

TEST(FlatAdamW, ShardedStepsEqualTheWhole) {
  torch::manual_seed(1);
  const at::Tensor a0 = torch::randn({70, 3}), b0 = torch::randn({50});
  auto make = [&] { return std::vector<at::Tensor>{a0.clone(), b0.clone()}; };
  auto whole_p = make();
  auto shard_p = make();
  FlatParams whole({group("g", whole_p)}, c10::Device(c10::kCPU), 2);
  FlatParams sharded({group("g", shard_p)}, c10::Device(c10::kCPU), 2);
  ASSERT_EQ(whole.padded() % 128, 0);
  const int64_t half = sharded.padded() / 2;
  FlatAdamW w(whole, {}, 0, whole.padded());
  FlatAdamW s0(sharded, {}, 0, half), s1(sharded, {}, half, sharded.padded());
  for (int step = 0; step < 3; ++step) {
    const at::Tensor g = torch::randn({whole.padded()});
    whole.grads().copy_(g);
    sharded.grads().copy_(g);
    w.step({{"g", 1e-2}});
    s0.step({{"g", 1e-2}});
    s1.step({{"g", 1e-2}});
  }
  EXPECT_TRUE(torch::equal(whole.values(), sharded.values()));
  EXPECT_EQ(s1.state()[0].second.numel(), half);
}

}  // namespace
}  // namespace salad::train
