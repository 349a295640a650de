// The pieces of issue #5 together: manifest + feature cache -> Loader (interleaving, packing) ->
// SpeechLM (adapter + student, frozen teacher) -> DistillationLoss -> AdamW. Distillation at
// alpha = 1 must lower the misalignment M measured on held-out data by measure_alignment().
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "data_pipeline/document_test_util.h"
#include "salad/data/feature_cache.h"
#include "salad/data/loader.h"
#include "salad/eval/alignment.h"
#include "salad/loss/distillation.h"
#include "salad/models/speech_lm.h"
#include "test_util.h"

namespace salad {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kWords = 24;  // vocabulary w0..w23
constexpr int64_t kDim = 16;    // encoder feature width

// A manifest of word-timed utterances (0.4 s a word: 5 frames) and their features: every frame
// of word w is that word's fixed random vector plus a little noise, so speech carries the words.
void write_speech(const fs::path& dir, const std::string& name, int64_t utterances, uint64_t seed) {
  torch::manual_seed(1234);  // the same word vectors for every split
  const at::Tensor word_vectors = torch::randn({kWords, kDim});
  torch::manual_seed(seed);
  std::mt19937_64 rng(seed);
  data::FeatureCacheMeta meta;
  meta.encoder = "test: word vectors";
  meta.feature_dim = kDim;
  data::FeatureCacheWriter cache(dir / (name + "_cache"), meta);
  std::string manifest;
  for (int64_t u = 0; u < utterances; ++u) {
    const int64_t n = 14 + static_cast<int64_t>(rng() % 10);
    int64_t w = static_cast<int64_t>(rng() % kWords);
    std::string text, words;
    at::Tensor feats = torch::zeros({n * 5, kDim});
    for (int64_t k = 0; k < n; ++k) {
      // A predictable text (w -> 5w + 3 mod 24, sometimes a random word) so the teacher's
      // context matters.
      w = (rng() % 4 == 0) ? static_cast<int64_t>(rng() % kWords) : (5 * w + 3) % kWords;
      const std::string word = "w" + std::to_string(w);
      text += (k ? " " : "") + word;
      words += std::string(k ? "," : "") + "{\"w\":\"" + word +
               "\",\"start\":" + std::to_string(0.4 * k) +
               ",\"end\":" + std::to_string(0.4 * k + 0.35) + "}";
      feats.narrow(0, 5 * k, 5)
          .copy_(word_vectors[w].expand({5, kDim}) + 0.1 * torch::randn({5, kDim}));
    }
    const std::string id = name + std::to_string(u);
    manifest += "{\"id\":\"" + id +
                "\",\"audio\":\"x.wav\",\"duration\":" + std::to_string(0.4 * n) + ",\"text\":\"" +
                text + "\",\"words\":[" + words + "]}\n";
    cache.add(id, feats);
  }
  cache.flush();
  test::write_text(dir / (name + ".jsonl"), manifest);
}

TEST(AlignmentIntegration, DistillationLowersMisalignment) {
  test::TempDir dir;
  write_speech(dir.path(), "train", 48, 1);
  write_speech(dir.path(), "valid", 16, 2);
  auto tok = std::make_shared<data::test_util::WordTokenizer>(
      data::test_util::WordTokenizer::numbered(kWords));

  auto options = [&](const std::string& name, bool repeat) {
    data::LoaderOptions o;
    o.sources = {{name, "speech", dir.path() / (name + ".jsonl"), 1.0}};
    o.tokenizer = tok;
    o.features = data::cache_features(data::FeatureCache::open(dir.path() / (name + "_cache")));
    o.interleave.text_words_min = 3;
    o.interleave.text_words_max = 6;
    o.interleave.speech_words_min = 2;
    o.interleave.speech_words_max = 4;
    o.pack.context = 160;
    o.pack.feature_dim = kDim;
    o.rows = 2;
    o.repeat = repeat;
    o.seed = 5;
    return o;
  };

  // Teacher: a random decoder with peaked distributions; the student starts as its copy.
  torch::manual_seed(3);
  models::Qwen2Options d;
  d.vocab_size = tok->vocab_size();
  d.hidden_size = 32, d.intermediate_size = 64, d.num_hidden_layers = 2;
  d.num_attention_heads = 4, d.num_key_value_heads = 2, d.tie_word_embeddings = true;
  models::Qwen2 teacher(d), student(d);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : teacher->parameters()) p.normal_(0.0, 0.3);
    auto src = teacher->named_parameters();
    for (auto& p : student->named_parameters()) p.value().copy_(src[p.key()]);
  }
  models::AdapterOptions a;
  a.input_dim = kDim, a.hidden_size = 32, a.num_layers = 2, a.num_heads = 4, a.num_kv_heads = 2;
  a.intermediate_size = 64, a.output_dim = 32;
  models::SpeechLM lm(student, models::Adapter(a), teacher);

  auto measure = [&] {
    data::Loader valid(options("valid", false));
    return eval::measure_alignment(
        lm, [&] { return valid.next(); }, 64);
  };
  const eval::AlignmentMetrics before = measure();
  ASSERT_GT(before.aligned_positions, 100);
  EXPECT_NEAR(before.forgetting, 0.0, 1e-6);  // the student is the teacher's copy
  EXPECT_GT(before.misalignment, 0.05);

  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (const auto& g : lm.trainable_groups()) {
    std::vector<at::Tensor> params;
    for (const auto& p : g.params) params.push_back(p.second);
    groups.emplace_back(
        params, std::make_unique<torch::optim::AdamWOptions>(g.name == "adapter" ? 3e-3 : 3e-4));
  }
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(1e-3).weight_decay(0.0));
  const loss::DistillationLoss loss_fn(loss::DistillationOptions{});
  data::Loader train(options("train", true));
  lm.train(true);
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    const auto batch = train.next();
    ASSERT_TRUE(batch);
    opt.zero_grad();
    const models::AlignedHidden h = lm.forward(*batch);
    const loss::LossParts parts = loss_fn(h.student, lm.student()->lm_head_weight(), h.teacher,
                                          lm.teacher()->lm_head_weight(), batch->targets,
                                          static_cast<double>(batch->loss_positions()));
    parts.loss.backward();
    opt.step();
    if (step < 10) first += parts.loss.item<double>() / 10;
    if (step >= 50) last += parts.loss.item<double>() / 10;
  }
  EXPECT_LT(last, first) << "training loss did not go down";
  const eval::AlignmentMetrics after = measure();
  EXPECT_EQ(after.aligned_positions, before.aligned_positions);  // same held-out batches
  EXPECT_LT(after.misalignment, 0.7 * before.misalignment)
      << "M before " << before.misalignment << ", after " << after.misalignment;
  EXPECT_LT(after.distillation, before.distillation);
  EXPECT_TRUE(lm.student()->is_training()) << "measure_alignment restores the training mode";
  RecordProperty("M_before", std::to_string(before.misalignment));
  RecordProperty("M_after", std::to_string(after.misalignment));
  std::printf("M %.4f -> %.4f, F %.4f -> %.4f, L_DIST %.4f -> %.4f, loss %.4f -> %.4f\n",
              before.misalignment, after.misalignment, before.forgetting, after.forgetting,
              before.distillation, after.distillation, first, last);
}

}  // namespace
}  // namespace salad
