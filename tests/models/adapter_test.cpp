#include "salad/models/adapter.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "test_util.h"

namespace salad::models {
namespace {

AdapterOptions tiny(bool causal = true) {
  AdapterOptions o;
  o.input_dim = 8;
  o.hidden_size = 16;
  o.num_layers = 2;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.intermediate_size = 24;
  o.output_dim = 12;
  o.causal = causal;
  return o;
}

TEST(AdapterTest, ParameterCountFormulaMatchesTheModule) {
  for (bool codes : {false, true}) {
    AdapterOptions o = tiny();
    o.codes = codes;
    o.codebook_size = 5;
    Adapter a(o);
    EXPECT_EQ(count_parameters(*a), o.parameter_count()) << "codes=" << codes;
  }
}

// The paper's adapter at Qwen2.5-3B width: 12 layers of width 960 (15 heads / 5 KV heads, MLP
// 2560) between a 512 -> 960 input and a 960 -> 2048 output projection. Per layer
// 2*960 (norms) + 2*960^2 (q, o) + 2*960*320 (k, v) + 3*960*2560 (MLP) = 9,832,320.
TEST(AdapterTest, PaperSizeAtQwen3BWidth) {
  const AdapterOptions o = AdapterOptions::from_config(config::AdapterConfig{}, 512, false, 2048);
  const int64_t per_layer = 2 * 960 + 2 * 960 * 960 + 2 * 960 * 320 + 3 * 960 * 2560;
  const int64_t expected =
      12 * per_layer + (512 * 960 + 960) + 960 + (960 * 2048 + 2048) + 2 * 2048;
  EXPECT_EQ(o.parameter_count(), expected);
  EXPECT_EQ(expected, 120453504);  // 120.45 M; the paper quotes "about 122 M"
  Adapter a(o);
  EXPECT_EQ(count_parameters(*a), expected);
  EXPECT_NE(o.describe().find("120.45 M"), std::string::npos) << o.describe();
  const AdapterOptions o7 = AdapterOptions::from_config(config::AdapterConfig{}, 512, false, 3584);
  EXPECT_NEAR(static_cast<double>(o7.parameter_count()) / 1e6, 121.93, 0.01);
}

TEST(AdapterTest, PaddingNeverReachesValidFrames) {
  torch::manual_seed(1);
  for (bool causal : {true, false}) {
    Adapter a(tiny(causal));
    const at::Tensor x = torch::randn({2, 7, 8});
    const at::Tensor lengths = torch::tensor({4, 7}, torch::kLong);
    const at::Tensor batched = a->forward(x, lengths);  // [2, 7, 12]
    ASSERT_EQ(batched.sizes(), (std::vector<int64_t>{2, 7, 12}));
    const at::Tensor alone = a->forward(x.narrow(0, 0, 1).narrow(1, 0, 4), torch::tensor({4}));
    EXPECT_TRUE(test::all_close(batched[0].narrow(0, 0, 4), alone[0], 1e-5, "segment 0"));
    // Garbage in the padding changes nothing valid.
    at::Tensor x2 = x.clone();
    x2[0].narrow(0, 4, 3).fill_(1e3);
    const at::Tensor again = a->forward(x2, lengths);
    EXPECT_TRUE(test::all_close(again[0].narrow(0, 0, 4), batched[0].narrow(0, 0, 4), 1e-5,
                                "padding leak"));
    EXPECT_TRUE(torch::isfinite(again).all().item<bool>());
  }
}

TEST(AdapterTest, CausalityIsConfigurable) {
  torch::manual_seed(2);
  const at::Tensor x = torch::randn({1, 6, 8});
  at::Tensor later = x.clone();
  later[0][5].add_(1.0);
  const at::Tensor len = torch::tensor({6});
  Adapter causal(tiny(true));
  EXPECT_TRUE(test::all_close(causal->forward(later, len)[0].narrow(0, 0, 5),
                              causal->forward(x, len)[0].narrow(0, 0, 5), 1e-6, "causal"));
  Adapter bidi(tiny(false));
  const double change =
      (bidi->forward(later, len)[0][0] - bidi->forward(x, len)[0][0]).abs().max().item<double>();
  EXPECT_GT(change, 1e-6) << "a bidirectional adapter's first frame must see the last";
}

TEST(AdapterTest, CodesAreEmbeddedPerCodebookAndSummed) {
  torch::manual_seed(3);
  AdapterOptions o = tiny();
  o.codes = true;
  o.input_dim = 3;  // n_q
  o.codebook_size = 10;
  Adapter a(o);
  const at::Tensor codes = torch::randint(0, 10, {2, 5, 3}, torch::kLong);
  const at::Tensor y = a->forward(codes, torch::tensor({5, 2}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 12}));
  // A different code in codebook 2 changes the output of that frame.
  at::Tensor c2 = codes.clone();
  c2[0][0][2] = (codes[0][0][2].item<int64_t>() + 1) % 10;
  EXPECT_GT((a->forward(c2, torch::tensor({5, 2}))[0][0] - y[0][0]).abs().max().item<double>(), 0);
  test::expect_error<DataError>(
      [&] {
        a->forward(codes.to(torch::kFloat), torch::tensor({5, 2}));
      },
      {"int64"});
  test::expect_error<DataError>(
      [&] {
        a->forward(codes + 10, torch::tensor({5, 2}));
      },
      {"adapter.codebook_size = 10", "another codebook size"});
}

TEST(AdapterTest, BadInputsAreNamed) {
  Adapter a(tiny());
  test::expect_error<DataError>(
      [&] {
        a->forward(torch::randn({2, 5, 9}), torch::tensor({5, 5}));
      },
      {"[S, F, 8]", "9"});
  test::expect_error<DataError>(
      [&] {
        a->forward(torch::randn({2, 5, 8}), torch::tensor({5}));
      },
      {"lengths"});
  test::expect_error<DataError>(
      [&] {
        a->forward(torch::randn({2, 5, 8}), torch::tensor({5, 6}));
      },
      {"[1, 5]", "[5, 6]"});
  test::expect_error<DataError>(
      [&] {
        a->forward(torch::randn({2, 5, 8}), torch::tensor({0, 5}));
      },
      {"[1, 5]"});
  AdapterOptions bad = tiny();
  bad.num_heads = 3;
  test::expect_error<ConfigError>([&] { bad.validate(); }, {"adapter.num_heads", "hidden_size"});
}

TEST(AdapterTest, EmptyBatchGivesEmptyOutput) {
  Adapter a(tiny());
  const at::Tensor y = a->forward(torch::zeros({0, 0, 8}), torch::zeros({0}, torch::kLong));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{0, 0, 12}));
}

}  // namespace
}  // namespace salad::models
