// The shipped recipes (configs/*.yaml): every one loads and validates, and the Stage I recipes
// carry the paper's hyper-parameters (paper-notes §3.3, §4.2-4.4).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "salad/core/config.h"
#include "salad/models/adapter.h"

namespace salad::config {
namespace {

namespace fs = std::filesystem;

fs::path configs_dir() { return fs::path(SALAD_SOURCE_DIR) / "configs"; }

TEST(RecipesTest, EveryRecipeLoadsAndValidates) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(configs_dir())) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    EXPECT_NO_THROW(load(e.path())) << e.path();
    ++n;
  }
  EXPECT_GE(n, 3);  // quickstart, stage1_3b, stage1_7b at least
}

// What both Stage I recipes share with the paper.
void expect_stage1(const SaladConfig& c) {
  EXPECT_EQ(c.run.stage, "1");
  EXPECT_EQ(c.encoder.type, "mimi");
  EXPECT_EQ(c.encoder.output, "latent");
  EXPECT_FALSE(c.encoder.checkpoint.empty());
  EXPECT_FALSE(c.model.llm.empty());
  // Adapter: 12 layers, 960 wide, 15 heads / 5 KV heads, MLP 2560 (§3.3).
  EXPECT_EQ(c.adapter.hidden_size, 960);
  EXPECT_EQ(c.adapter.num_layers, 12);
  EXPECT_EQ(c.adapter.num_heads, 15);
  EXPECT_EQ(c.adapter.num_kv_heads, 5);
  EXPECT_EQ(c.adapter.intermediate_size, 2560);
  // Context 2048, ~1 M tokens per step (480 x 2048), 24 B tokens in all (§4.3, §4.4).
  EXPECT_EQ(c.data.context, 2048);
  EXPECT_EQ(c.train.tokens_per_step, 983040);
  EXPECT_EQ(c.train.tokens_per_step % c.data.context, 0);
  EXPECT_EQ(c.train.steps, 24000);
  EXPECT_NEAR(static_cast<double>(c.train.steps) * c.train.tokens_per_step, 24e9, 0.5e9);
  // AdamW wd 0.1, WSD: 500 warmup steps, final 20 % decaying (§4.3); alpha = 1 (§4.4).
  EXPECT_DOUBLE_EQ(c.optim.weight_decay, 0.1);
  EXPECT_EQ(c.optim.warmup_steps, 500);
  EXPECT_DOUBLE_EQ(c.optim.decay_fraction, 0.2);
  EXPECT_DOUBLE_EQ(c.loss.alpha, 1.0);
  EXPECT_EQ(c.train.precision, "bf16");
  EXPECT_TRUE(c.train.activation_checkpointing);
  // The Stage II branch point (start of the decay) is a saved checkpoint (§4.5).
  const auto decay_start =
      static_cast<int64_t>(static_cast<double>(c.train.steps) * (1.0 - c.optim.decay_fraction));
  ASSERT_GT(c.train.save_every, 0);
  EXPECT_EQ(decay_start % c.train.save_every, 0) << "decay starts at step " << decay_start;
  EXPECT_GT(c.train.eval_every, 0);
  EXPECT_GE(c.train.keep_last, 1);
  // Data: natural speech 2/3 (LibriHeavy + Emilia-YODAS-EN), SmolLM text replay 1/3 (§4.2, §4.4).
  double speech = 0, text = 0;
  std::map<std::string, double> by_name;
  for (const auto& s : c.data.train) {
    (s.kind == "speech" ? speech : text) += s.weight;
    by_name[s.name] = s.weight;
  }
  const double total = speech + text;
  ASSERT_GT(total, 0);
  EXPECT_NEAR(speech / total, 2.0 / 3.0, 1e-3);
  EXPECT_NEAR(text / total, 1.0 / 3.0, 1e-3);
  EXPECT_EQ(by_name.count("libriheavy"), 1u);
  EXPECT_EQ(by_name.count("emilia_yodas_en"), 1u);
  EXPECT_EQ(by_name.count("smollm"), 1u);
  EXPECT_FALSE(c.data.valid.empty());
}

TEST(RecipesTest, Stage1For3BMatchesThePaper) {
  const SaladConfig c = load(configs_dir() / "stage1_3b.yaml");
  expect_stage1(c);
  EXPECT_EQ(c.model.llm.filename(), "Qwen2.5-3B");
  EXPECT_DOUBLE_EQ(c.optim.lr_adapter, 1e-3);
  EXPECT_DOUBLE_EQ(c.optim.lr_llm, 5e-5);
  // ~122 M adapter parameters at Qwen2.5-3B width from Mimi's 512-d latent (§3.3).
  const auto a = models::AdapterOptions::from_config(c.adapter, 512, false, 2048);
  EXPECT_NEAR(static_cast<double>(a.parameter_count()), 122e6, 2.5e6);
}

TEST(RecipesTest, Stage1For7BMatchesThePaper) {
  const SaladConfig c = load(configs_dir() / "stage1_7b.yaml");
  expect_stage1(c);
  EXPECT_EQ(c.model.llm.filename(), "Qwen2.5-7B");
  EXPECT_DOUBLE_EQ(c.optim.lr_adapter, 1e-4);
  EXPECT_DOUBLE_EQ(c.optim.lr_llm, 5e-6);
  EXPECT_TRUE(c.dist.zero1);
  EXPECT_NE(c.run.dir, load(configs_dir() / "stage1_3b.yaml").run.dir);
  const auto a = models::AdapterOptions::from_config(c.adapter, 512, false, 3584);
  EXPECT_NEAR(static_cast<double>(a.parameter_count()), 122e6, 2.5e6);
}

// Stage II (§4.5): K = 128, gamma 5, a budget of 1 % of the Stage I speech, equal thirds of
// natural, selected and replay data, 1.9 B tokens with the LR decaying linearly to 0, on top of
// the matching Stage I recipe.
TEST(RecipesTest, Stage2RecipesMatchThePaper) {
  for (const char* size : {"3b", "7b"}) {
    SCOPED_TRACE(size);
    const SaladConfig c = load(configs_dir() / (std::string("stage2_") + size + ".yaml"));
    const SaladConfig s1 = load(configs_dir() / (std::string("stage1_") + size + ".yaml"));
    EXPECT_EQ(c.run.stage, "2");
    EXPECT_EQ(c.stage2.from, s1.run.dir) << "stage 2 starts from its own Stage I run";
    EXPECT_NE(c.run.dir, s1.run.dir);
    EXPECT_EQ(c.model.llm, s1.model.llm);
    EXPECT_EQ(c.adapter.hidden_size, s1.adapter.hidden_size);
    EXPECT_EQ(c.stage2.clusters, 128);
    EXPECT_DOUBLE_EQ(c.stage2.gamma, 5.0);
    EXPECT_DOUBLE_EQ(c.stage2.budget_fraction, 0.01);
    EXPECT_DOUBLE_EQ(c.stage2.budget_hours, 0.0);
    EXPECT_DOUBLE_EQ(c.stage2.natural_weight, c.stage2.synthetic_weight);
    EXPECT_DOUBLE_EQ(c.stage2.text_weight, c.stage2.synthetic_weight);
    EXPECT_DOUBLE_EQ(c.loss.alpha, 1.0);
    EXPECT_EQ(c.optim.warmup_steps, 0);
    EXPECT_DOUBLE_EQ(c.optim.decay_fraction, 1.0);
    EXPECT_NEAR(static_cast<double>(c.train.steps * c.train.tokens_per_step), 1.9e9, 0.01e9);
    EXPECT_EQ(c.optim.lr_llm, s1.optim.lr_llm);
  }
}

}  // namespace
}  // namespace salad::config
