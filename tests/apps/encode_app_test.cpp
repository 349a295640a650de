// salad-encode end to end: a manifest with good and bad items -> a feature cache.
#include <torch/torch.h>

#include <cmath>

#include "salad/audio/audio.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/data/feature_cache.h"
#include "salad/models/fbank.h"
#include "salad/models/mimi.h"
#include "test_util.h"

namespace salad {
namespace {

namespace fs = std::filesystem;
const std::string kEncode = SALAD_ENCODE_EXE;

at::Tensor tone(double seconds, int64_t rate, double hz) {
  return test::sine(hz, rate, static_cast<int64_t>(seconds * rate), 0.3);
}

// Three good utterances and one of each bad kind.
void make_corpus(const test::TempDir& d) {
  fs::create_directories(d / "wav");
  audio::write_wav(d / "wav/a.wav", tone(1.0, 24000, 440), 24000);
  audio::write_wav(d / "wav/b.wav", tone(0.5, 16000, 300), 16000);
  audio::write_wav(d / "wav/c.wav", torch::stack({tone(2.0, 44100, 500), tone(2.0, 44100, 700)}),
                   44100);
  test::write_text(d / "wav/corrupt.wav", "RIFF this is not audio");
  test::write_text(
      d / "m.jsonl",
      R"({"id": "a", "audio": "wav/a.wav", "text": "tone a"})"
      "\n"
      R"({"id": "b", "audio": "wav/b.wav", "text": "tone b", "duration": 0.5})"
      "\n"
      R"({"id": "c", "audio": "wav/c.wav", "text": "tone c", "offset": 0.5, "duration": 1.0})"
      "\n"
      R"({"id": "missing", "audio": "wav/none.wav", "text": "x"})"
      "\n"
      R"({"id": "corrupt", "audio": "wav/corrupt.wav", "text": "x"})"
      "\n"
      R"({"id": "late", "audio": "wav/a.wav", "text": "x", "offset": 5.0, "duration": 1.0})"
      "\n"
      "{not json\n");
}

TEST(EncodeAppIntegration, FbankCacheWithSkippedItemsAndResume) {
  test::TempDir d;
  make_corpus(d);
  const std::string cmd = kEncode + " --manifest " + (d / "m.jsonl").string() + " --out " +
                          (d / "cache").string() + " --encoder fbank";
  // Four of seven lines are bad: above the default 5% threshold, the run fails after writing.
  auto r = test::run(cmd);
  EXPECT_EQ(r.exit_code, kExitData) << r.output;
  EXPECT_NE(
      r.output.find("4 skipped (bad audio: 1, bad json: 1, missing audio: 1, unreadable audio: 1)"),
      std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("m.jsonl:4"), std::string::npos) << "skips name file and line\n"
                                                           << r.output;

  const auto cache = data::FeatureCache::open(d / "cache");
  ASSERT_EQ(cache.size(), 3u);
  models::FbankEncoder fbank{config::EncoderConfig{}};
  EXPECT_EQ(cache.meta().encoder, fbank.describe());
  EXPECT_EQ(cache.meta().feature_dim, fbank.feature_dim());
  // 1 s at 24 kHz: 24000 samples, 13 frames; 0.5 s at 16 kHz -> 12000 samples, 7 frames;
  // 1 s cut from 44.1 kHz stereo -> 24000 samples, 13 frames.
  EXPECT_EQ(cache.frames("a"), 13);
  EXPECT_EQ(cache.frames("b"), 7);
  EXPECT_EQ(cache.frames("c"), 13);
  // The cached frames are what the encoder gives the clip alone.
  audio::LoadOptions lo;
  lo.offset = 0.5;
  lo.duration = 1.0;
  const at::Tensor c = audio::load_audio(d / "wav/c.wav", lo).samples;
  const auto alone = fbank.encode(c.unsqueeze(0), torch::tensor({c.size(0)}, torch::kLong));
  EXPECT_TRUE(test::all_close(cache.get("c"), alone.features[0], 1e-5, "cached vs alone"));

  // Resume: nothing left to encode, nothing rewritten.
  r = test::run(cmd + " --max-skip-fraction 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // The bad items are tried again (they may have been fixed); the good ones are not redone.
  EXPECT_NE(r.output.find("3 already cached, 3 to encode"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("encoded 0 utterances"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(d / "cache/shard-000001.safetensors"));

  // Another encoder (a recipe's 40-band fbank) into the same folder is refused.
  test::write_text(d / "r.yaml", "run: {dir: run}\nencoder: {type: fbank, n_mels: 40}\n");
  r = test::run(kEncode + " --manifest " + (d / "m.jsonl").string() + " --out " +
                (d / "cache").string() + " --config " + (d / "r.yaml").string());
  EXPECT_EQ(r.exit_code, kExitData) << r.output;
  EXPECT_NE(r.output.find("this cache was made with encoder 'fbank: 80"), std::string::npos)
      << r.output;
}

TEST(EncodeAppIntegration, MimiCodesFromAnHfFolder) {
  test::TempDir d;
  make_corpus(d);
  fs::create_directories(d / "mimi");
  fs::copy_file(test::data_dir() / "mimi/config_hf.json", d / "mimi/config.json");
  fs::copy_file(test::data_dir() / "mimi/weights_hf.safetensors", d / "mimi/model.safetensors");
  auto r =
      test::run(kEncode + " --manifest " + (d / "m.jsonl").string() + " --out " +
                (d / "codes").string() + " --encoder mimi --checkpoint " + (d / "mimi").string() +
                " --output codes --n-q 4 --max-skip-fraction 1 --workers 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto cache = data::FeatureCache::open(d / "codes");
  ASSERT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.meta().dtype, "I64");
  EXPECT_EQ(cache.meta().feature_dim, 4);
  const at::Tensor codes = cache.get("b");
  EXPECT_EQ(codes.sizes(), (std::vector<int64_t>{7, 4}));
  EXPECT_EQ(codes.scalar_type(), torch::kLong);
  // Same codes as the library gives the clip alone.
  models::MimiEncoderOptions o;
  o.output = models::MimiOutput::kCodes;
  o.n_q = 4;
  auto enc = models::load_mimi_encoder(d / "mimi", o);
  const at::Tensor b = audio::load_audio(d / "wav/b.wav").samples;
  const auto alone = enc->encode(b.unsqueeze(0), torch::tensor({b.size(0)}, torch::kLong));
  EXPECT_TRUE(codes.equal(alone.features[0].narrow(0, 0, 7)));
}

TEST(EncodeAppTest, MimiWithoutCheckpointIsAConfigError) {
  test::TempDir d;
  test::write_text(d / "m.jsonl", "");
  const auto r = test::run(kEncode + " --manifest " + (d / "m.jsonl").string() + " --out " +
                           (d / "c").string() + " --encoder mimi");
  EXPECT_EQ(r.exit_code, kExitConfig) << r.output;
  EXPECT_NE(r.output.find("encoder.checkpoint is empty"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace salad
