#include "salad/models/weight_loader.h"

#include <torch/torch.h>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::models {
namespace {

struct Net : torch::nn::Module {
  Net() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    steps = register_buffer("steps", torch::zeros({1}, torch::kLong));
  }
  torch::nn::Linear fc{nullptr};
  at::Tensor steps;
};

TEST(WeightLoaderTest, LoadsByNameWithKeyMapPrefixAndDtypeConversion) {
  test::TempDir d;
  safetensors::save(d / "w.safetensors", {{"enc.fc.weight", torch::ones({2, 3}, torch::kBFloat16)},
                                          {"enc.fc.bias", torch::full({2}, 2.0, torch::kHalf)},
                                          {"enc.steps", torch::full({1}, 7, torch::kLong)},
                                          {"other.thing", torch::ones({1})}});
  Net net;
  LoadOptions o;
  o.key_map = [](const std::string& n) { return "enc." + n; };
  o.ignore_prefixes = {"other."};
  const auto r = load_weights(net, safetensors::Checkpoint::open(d / "w.safetensors"), o);
  EXPECT_EQ(r.tensors_loaded, 3);
  EXPECT_EQ(r.values_loaded, 9);
  EXPECT_TRUE(net.fc->weight.equal(torch::ones({2, 3})));
  EXPECT_EQ(net.fc->weight.scalar_type(), torch::kFloat);
  EXPECT_TRUE(net.fc->bias.equal(torch::full({2}, 2.0)));
  EXPECT_EQ(net.steps.item<int64_t>(), 7);
}

TEST(WeightLoaderTest, AllowedMissingAndUnexpected) {
  test::TempDir d;
  safetensors::save(d / "w.safetensors",
                    {{"fc.weight", torch::ones({2, 3})}, {"x.y", torch::ones({1})}});
  Net net;
  LoadOptions o;
  o.allow_missing = {"fc.bias", "steps"};
  o.allow_unexpected = {"x.*"};
  const auto r = load_weights(net, safetensors::Checkpoint::open(d / "w.safetensors"), o);
  EXPECT_EQ(r.missing_allowed.size(), 2u);
  EXPECT_EQ(r.unexpected_allowed, std::vector<std::string>{"x.y"});
}

TEST(WeightLoaderTest, CompositeTensorsAreCombinedAndChecked) {
  test::TempDir d;
  safetensors::save(d / "w.safetensors", {{"w.top", torch::ones({1, 3})},
                                          {"w.bottom", torch::full({1, 3}, 2.0)},
                                          {"fc.bias", torch::zeros({2})},
                                          {"steps", torch::zeros({1}, torch::kLong)}});
  LoadOptions o;
  o.composites.push_back(
      {"fc.weight", {"w.top", "w.bottom"}, {{1, 3}, {1, 3}}, [](const std::vector<at::Tensor>& t) {
         return at::cat({t[0], t[1]});
       }});
  Net net;
  const auto r = load_weights(net, safetensors::Checkpoint::open(d / "w.safetensors"), o);
  EXPECT_EQ(r.tensors_loaded, 3);
  EXPECT_TRUE(net.fc->weight.equal(at::cat({torch::ones({1, 3}), torch::full({1, 3}, 2.0)})));

  o.composites[0].keys[1] = "w.absent";
  o.composites[0].shapes[0] = {1, 4};
  o.hint = "config: x.json";
  test::expect_error<CheckpointError>(
      [&] { load_weights(net, safetensors::Checkpoint::open(d / "w.safetensors"), o); },
      {"3 problems", "shape mismatch: w.top: expected [1, 4], found [1, 3]",
       "missing: w.absent (expected [1, 3])", "unexpected: w.bottom [1, 3]", "(config: x.json)"});
}

TEST(WeightLoaderTest, NamedTensorsRoundTrip) {
  test::TempDir d;
  Net a;
  a.steps.fill_(3);
  safetensors::save(d / "a.safetensors", named_tensors(a));
  Net b;
  load_weights(b, safetensors::Checkpoint::open(d / "a.safetensors"));
  EXPECT_TRUE(b.fc->weight.equal(a.fc->weight));
  EXPECT_EQ(b.steps.item<int64_t>(), 3);
}

}  // namespace
}  // namespace salad::models
