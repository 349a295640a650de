// Stage II glue: the training mix and schedule, the corpus reader, the teacher's mean-pooled
// embeddings and the Stage I checkpoint lookup.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data_pipeline/document_test_util.h"
#include "models/speech_lm_fixture.h"
#include "salad/core/error.h"
#include "salad/select/active.h"
#include "salad/train/stage2.h"
#include "test_util.h"

namespace salad::train {
namespace {

namespace fs = std::filesystem;

config::SourceConfig source(const std::string& name, const std::string& kind, double w) {
  config::SourceConfig s;
  s.name = name;
  s.kind = kind;
  s.path = "/data/" + name;
  s.weight = w;
  return s;
}

TEST(Stage2Config, MixWeightsAndLinearDecay) {
  config::SaladConfig c;
  c.data.train = {source("libri", "speech", 2), source("emilia", "speech", 6),
                  source("smollm", "text", 3)};
  c.optim.warmup_steps = 500;
  c.optim.decay_fraction = 0.2;
  c.stage2.natural_weight = 1, c.stage2.synthetic_weight = 1, c.stage2.text_weight = 1;
  const config::SaladConfig out = stage2_training_config(c, "/sel/manifest.jsonl");
  ASSERT_EQ(out.data.train.size(), 4u);
  // Each group gets its stage2 weight, split within the group by the sources' own weights.
  EXPECT_DOUBLE_EQ(out.data.train[0].weight, 0.25);
  EXPECT_DOUBLE_EQ(out.data.train[1].weight, 0.75);
  EXPECT_DOUBLE_EQ(out.data.train[2].weight, 1.0);
  EXPECT_EQ(out.data.train[3].name, "selected");
  EXPECT_EQ(out.data.train[3].kind, "speech");
  EXPECT_EQ(out.data.train[3].path, fs::path("/sel/manifest.jsonl"));
  EXPECT_DOUBLE_EQ(out.data.train[3].weight, 1.0);
  EXPECT_EQ(out.optim.warmup_steps, 0);
  EXPECT_EQ(out.optim.decay_fraction, 1.0);

  // A zero group weight drops that group; a source called "selected" is refused.
  c.stage2.text_weight = 0;
  c.stage2.synthetic_weight = 2;
  const config::SaladConfig no_text = stage2_training_config(c, "/m.jsonl");
  ASSERT_EQ(no_text.data.train.size(), 3u);
  EXPECT_EQ(no_text.data.train[2].name, "selected");
  EXPECT_DOUBLE_EQ(no_text.data.train[2].weight, 2.0);
  c.data.train.push_back(source("selected", "speech", 1));
  EXPECT_THROW(stage2_training_config(c, "/m.jsonl"), ConfigError);
}

TEST(Stage2Config, RecipeNeedsFromAndCorpus) {
  config::SaladConfig c;
  c.run.dir = "/tmp/x";
  c.run.stage = "2";
  try {
    c.validate();
    FAIL() << "stage 2 without stage2.from validated";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("stage2.from"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stage2.corpus"), std::string::npos) << e.what();
  }
  c.stage2.from = "/runs/s1";
  c.stage2.selection = "/sel.jsonl";
  EXPECT_NO_THROW(c.validate());
}

TEST(Stage2Checkpoint, FolderOrRunFolderElseClearError) {
  test::TempDir d;
  test::write_text(d.path() / "ck" / "model.safetensors", "x");
  EXPECT_EQ(stage1_checkpoint(d.path() / "ck"), d.path() / "ck");
  try {
    stage1_checkpoint(d.path() / "nothing");
    FAIL() << "a folder without checkpoints was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("nothing"), std::string::npos) << e.what();
  }
}

TEST(SelectCorpus, JsonlAndPlainLines) {
  test::TempDir d;
  test::write_text(d.path() / "c.jsonl",
                   "{\"id\": \"a\", \"text\": \"one two\"}\n\n{not json}\n"
                   "{\"id\": 7, \"text\": \"three\"}\n{\"id\": \"e\", \"text\": \"   \"}\n");
  const auto j = select::read_corpus(d.path() / "c.jsonl");
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0].id, "a");
  EXPECT_EQ(j[0].text, "one two");
  EXPECT_EQ(j[1].id, "7");
  test::write_text(d.path() / "c.txt", "first line\n\nsecond line\r\nthird\n");
  const auto p = select::read_corpus(d.path() / "c.txt", 2);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[1].id, "3");
  EXPECT_EQ(p[1].text, "second line");
  test::write_text(d.path() / "empty.txt", "\n  \n");
  EXPECT_THROW(select::read_corpus(d.path() / "empty.txt"), DataError);
  EXPECT_THROW(select::read_corpus(d.path() / "missing.txt"), IoError);
}

TEST(SelectEmbeddings, MeanOfFinalHiddenStatesTokenWeightedOverChunks) {
  models::Qwen2 dec = models::test_fixture::random_decoder(3);
  const data::test_util::WordTokenizer tok = data::test_util::WordTokenizer::numbered(15);
  const std::vector<std::string> texts = {"w1 w2 w3 w4 w5 w6 w7", "w9", "w3 w3"};
  torch::NoGradGuard no_grad;
  auto direct = [&](const std::vector<int64_t>& ids) {  // [D]: mean over one forward
    models::Qwen2Input in;
    in.input_ids = at::tensor(ids).view({1, -1});
    return dec->forward_hidden(in).hidden[0].mean(0);
  };
  // One chunk per text: the plain mean.
  const at::Tensor e = select::decoder_embeddings(*dec, tok, texts, 64);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{3, 32}));
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_TRUE(test::all_close(e[static_cast<int64_t>(i)], direct(tok.encode(texts[i])), 1e-5))
        << texts[i];
  }
  // Chunks of 3 tokens: 7 = 3 + 3 + 1, each encoded alone, weighted by their token counts.
  const std::vector<int64_t> ids = tok.encode(texts[0]);
  const at::Tensor want =
      (direct({ids.begin(), ids.begin() + 3}) * 3 + direct({ids.begin() + 3, ids.begin() + 6}) * 3 +
       direct({ids.begin() + 6, ids.end()})) /
      7;
  const at::Tensor chunked = select::decoder_embeddings(*dec, tok, texts, 3);
  EXPECT_TRUE(test::all_close(chunked[0], want, 1e-5));
  EXPECT_FALSE(test::all_close(chunked[0], e[0], 1e-3)) << "chunking changed nothing";
}

}  // namespace
}  // namespace salad::train
