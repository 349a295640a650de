// FbankEncoder: shapes and frame counts, batch/alone equality, window placement, the mel scale,
// the silence floor and bad input.
#include "salad/models/fbank.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "salad/audio/audio.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/data/feature_cache.h"
#include "salad/data/manifest.h"
#include "test_util.h"

namespace salad::models {
namespace {

using test::all_close;
using test::expect_error;

at::Tensor tone(double hz, int64_t n, double amplitude) {
  return test::sine(hz, 24000, n, amplitude);
}

at::Tensor lengths_of(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }

TEST(FbankTest, ShapesAndFrameCountsAroundMultiplesOf1920) {
  FbankEncoder enc;
  EXPECT_EQ(enc.sample_rate(), 24000);
  EXPECT_EQ(enc.samples_per_frame(), 1920);
  EXPECT_EQ(enc.feature_dim(), 640);
  EXPECT_NE(enc.describe().find("fbank"), std::string::npos);
  const std::vector<int64_t> lens = {1, 1919, 1920, 1921, 3839, 3840, 3841, 5760};
  at::manual_seed(0);
  const at::Tensor wave = at::randn({static_cast<int64_t>(lens.size()), 6000}) * 0.1;
  const EncodedBatch out = enc.encode(wave, lengths_of(lens));
  EXPECT_EQ(out.features.sizes(), (std::vector<int64_t>{8, 3, 640}));
  EXPECT_EQ(out.features.scalar_type(), at::kFloat);
  EXPECT_EQ(out.frames.scalar_type(), at::kLong);
  EXPECT_TRUE(out.frames.equal(lengths_of({1, 1, 1, 2, 2, 2, 3, 3})));
  for (size_t b = 0; b < lens.size(); ++b) {
    EXPECT_EQ(out.frames[b].item<int64_t>(), enc.frames_for(lens[b]));
    // Frames past the valid count are zero.
    const int64_t f = out.frames[b].item<int64_t>();
    EXPECT_EQ(out.features[b].slice(0, f).abs().sum().item<double>(), 0.0) << "item " << b;
  }
  // An exact multiple has no extra frame.
  EXPECT_EQ(enc.encode(wave.slice(1, 0, 3840), lengths_of(std::vector<int64_t>(8, 3840)))
                .features.size(1),
            2);
}

TEST(FbankTest, ConfigSetsTheBandCount) {
  config::EncoderConfig cfg;
  cfg.n_mels = 40;
  FbankEncoder enc(cfg);
  EXPECT_EQ(enc.feature_dim(), 320);
  EXPECT_EQ(enc.filters().sizes(), (std::vector<int64_t>{513, 40}));
  const EncodedBatch out = enc.encode(at::zeros({1, 2000}), lengths_of({2000}));
  EXPECT_EQ(out.features.sizes(), (std::vector<int64_t>{1, 2, 320}));
}

TEST(FbankTest, StackingLayoutIsHopMajor) {
  FbankEncoder enc;
  at::manual_seed(1);
  const at::Tensor wave = at::randn({2, 5000}) * 0.2;
  const at::Tensor lens = lengths_of({5000, 4000});
  const at::Tensor hops = enc.log_mel(wave, lens);  // [2, 24, 80]
  ASSERT_EQ(hops.sizes(), (std::vector<int64_t>{2, 24, 80}));
  const at::Tensor feats = enc.encode(wave, lens).features;  // [2, 3, 640]
  for (int64_t j = 0; j < 3; ++j) {
    for (int64_t s = 0; s < 8; ++s) {
      EXPECT_TRUE(feats[0][j].slice(0, s * 80, (s + 1) * 80).equal(hops[0][8 * j + s]));
    }
  }
}

// The padding of a batch never leaks in: each item's valid frames equal those of the item
// encoded alone, whatever garbage fills the padding.
TEST(FbankTest, BatchEqualsAlone) {
  FbankEncoder enc;
  at::manual_seed(2);
  const std::vector<int64_t> lens = {24000, 1000, 13441, 3840, 19201};
  const int64_t L = 24500;
  const at::Tensor wave = at::randn({5, L}) * 0.3;  // garbage beyond each length, on purpose
  const EncodedBatch batch = enc.encode(wave, lengths_of(lens));
  double worst = 0.0;
  for (size_t b = 0; b < lens.size(); ++b) {
    const at::Tensor clip = wave[b].slice(0, 0, lens[b]).unsqueeze(0);  // [1, len]
    const EncodedBatch alone = enc.encode(clip, lengths_of({lens[b]}));
    const int64_t f = alone.features.size(1);
    ASSERT_EQ(batch.frames[b].item<int64_t>(), f);
    const at::Tensor got = batch.features[b].slice(0, 0, f);
    EXPECT_TRUE(all_close(got, alone.features[0], 1e-6, "item " + std::to_string(b)));
    worst = std::max(worst, (got - alone.features[0]).abs().max().item<double>());
    // A clip padded with zeros instead of garbage, in a longer tensor, gives the same too.
    const at::Tensor zero_padded = at::constant_pad_nd(clip, {0, 777}, 0.0);
    EXPECT_TRUE(all_close(enc.encode(zero_padded, lengths_of({lens[b]})).features[0],
                          alone.features[0], 1e-6, "zero-padded item " + std::to_string(b)));
  }
  std::printf("fbank batch vs alone: max abs difference %.3g\n", worst);
}

TEST(FbankTest, SilenceGivesTheFloorValue) {
  FbankEncoder enc;
  const EncodedBatch out = enc.encode(at::zeros({2, 4000}), lengths_of({4000, 2500}));
  const double floor = FbankEncoder::floor_value();
  EXPECT_NEAR(floor, (std::log(1e-10) + 14.0) / 4.5, 1e-12);
  EXPECT_TRUE(all_close(out.features[0], at::full({3, 640}, floor), 1e-6, "silence"));
  EXPECT_TRUE(
      all_close(out.features[1].slice(0, 0, 2), at::full({2, 640}, floor), 1e-6, "silence"));
}

// Hop k's window covers samples [240k - 180, 240k + 420): an impulse at sample 1000 reaches hops
// 3 ([540, 1140)) and 4 ([780, 1380)) only.
TEST(FbankTest, WindowsAreCentredOnTheirHop) {
  FbankEncoder enc;
  at::Tensor wave = at::zeros({1, 3000});
  wave[0][1000] = 0.5f;
  const at::Tensor hops = enc.log_mel(wave, lengths_of({3000}));                   // [1, 16, 80]
  const at::Tensor above = (hops[0] > FbankEncoder::floor_value() + 1e-3).any(1);  // [16]
  std::vector<int64_t> lit;
  for (int64_t k = 0; k < above.size(0); ++k) {
    if (above[k].item<bool>()) lit.push_back(k);
  }
  EXPECT_EQ(lit, (std::vector<int64_t>{3, 4}));
}

// A pure tone puts its energy in the band whose triangle peaks at the tone's frequency, at the
// level the power scaling promises: a full-scale sine at an FFT bin centre has power 1 in that
// bin, so a band peaking exactly there gets at least 1.
TEST(FbankTest, PureToneLandsInItsBand) {
  FbankEncoder enc;
  for (int64_t band : {5, 30, 50, 79}) {
    const double hz = enc.band_center_hz(band);
    const at::Tensor hops =
        enc.log_mel(tone(hz, 24000, 0.5).unsqueeze(0), lengths_of({24000}));  // [1, 100, 80]
    const at::Tensor mean = hops[0].slice(0, 10, 90).mean(0);                 // [80], steady part
    EXPECT_EQ(mean.argmax().item<int64_t>(), band) << "tone at " << hz << " Hz";
    // Where bands are wider than the Hann main lobe (+-2 bins = +-47 Hz; band 30 is ~90 Hz
    // wide), bands two or more away get much less.
    if (band >= 30) {
      EXPECT_LT(mean[band - 2].item<double>(), mean[band].item<double>() - 1.0);
      if (band + 2 < 80) EXPECT_LT(mean[band + 2].item<double>(), mean[band].item<double>() - 1.0);
    }
  }
  // Level: 1.5 kHz is bin 64 exactly. Amplitude 1 -> bin power 1, neighbours 1/4 each (Hann
  // main lobe); the best band's value is a weighted sum of those.
  const double hz = 64 * 24000.0 / 1024;
  const at::Tensor hops = enc.log_mel(tone(hz, 24000, 1.0).unsqueeze(0), lengths_of({24000}));
  const at::Tensor mean = hops[0].slice(0, 10, 90).mean(0);
  const double mel_max =
      std::exp(mean.max().item<double>() * FbankEncoder::kLogMelStd + FbankEncoder::kLogMelMean);
  EXPECT_GT(mel_max, 0.5);
  EXPECT_LT(mel_max, 1.5 + 1e-3);
}

TEST(FbankTest, BadInputThrows) {
  FbankEncoder enc;
  const at::Tensor wave = at::zeros({2, 100});
  expect_error<Error>([&] { enc.encode(at::zeros({100}), lengths_of({100})); },
                      {"wave must be a floating-point [B, L]", "[100]"});
  const at::Tensor int_wave = at::zeros({2, 100}, at::kInt);
  const at::Tensor ones = lengths_of({1, 1}), one_len = lengths_of({100});
  const at::Tensor zero_len = lengths_of({100, 0}), too_long = lengths_of({101, 5});
  expect_error<Error>([&] { enc.encode(int_wave, ones); }, {"wave must be", "Int"});
  expect_error<Error>([&] { enc.encode(wave, one_len); },
                      {"lengths must be an integer [B] tensor with B = 2", "[1]"});
  expect_error<Error>([&] { enc.encode(wave, at::tensor({1.0f, 2.0f})); }, {"lengths must be"});
  expect_error<Error>([&] { enc.encode(wave, zero_len); },
                      {"lengths[1] = 0 is outside [1, L = 100]"});
  expect_error<Error>([&] { enc.encode(wave, too_long); },
                      {"lengths[0] = 101 is outside [1, L = 100]"});
  FbankOptions o;
  o.n_mels = 0;
  expect_error<ConfigError>([&] { FbankEncoder{o}; }, {"n_mels must be >= 1, found 0"});
  o.n_mels = 400;
  expect_error<ConfigError>([&] { FbankEncoder{o}; },
                            {"n_mels = 400 is too many", "holds no FFT bin", "23.4375 Hz apart"});
}

TEST(FbankTest, EmptyBatchAndNoGrad) {
  FbankEncoder enc;
  const EncodedBatch empty = enc.encode(at::zeros({0, 10}), at::zeros({0}, at::kLong));
  EXPECT_EQ(empty.features.sizes(), (std::vector<int64_t>{0, 0, 640}));
  EXPECT_EQ(empty.frames.size(0), 0);
  const at::Tensor w = (at::randn({1, 2000}) * 0.1).set_requires_grad(true);
  EXPECT_FALSE(enc.encode(w, lengths_of({2000})).features.requires_grad());
}

}  // namespace
}  // namespace salad::models

namespace salad::models {
namespace {

// The loader's on-the-fly path gives what encoding the cut clip directly gives.
TEST(OnTheFlyFeaturesTest, EqualEncodingTheUtteranceSpan) {
  test::TempDir dir;
  const at::Tensor wave = test::sine(330.0, 24000, 24000, 0.3);  // 1 s
  audio::write_wav(dir.path() / "a.wav", wave, 24000, /*float32=*/true);
  auto enc = std::make_shared<FbankEncoder>();
  const auto features = on_the_fly_features(enc);
  data::Utterance u;
  u.id = "a";
  u.audio = dir.path() / "a.wav";
  u.offset = 0.25;
  u.duration = 0.5;
  u.where = "m.jsonl:1";
  const at::Tensor got = features(u);  // [F, 640]
  const at::Tensor clip = wave.narrow(0, 6000, 12000).unsqueeze(0);
  const EncodedBatch direct = enc->encode(clip, at::tensor({int64_t{12000}}));
  EXPECT_EQ(got.size(0), 7);  // ceil(12000 / 1920)
  EXPECT_TRUE(all_close(got, direct.features[0].narrow(0, 0, 7), 1e-4, "on the fly"));
  u.audio = dir.path() / "missing.wav";
  expect_error<IoError>([&] { features(u); }, {"missing.wav"});
}

}  // namespace
}  // namespace salad::models

namespace salad::models {
namespace {

TEST(FeatureSourceTest, CacheWhenSetElseOnTheFly) {
  test::TempDir dir;
  config::SaladConfig cfg;
  cfg.encoder.type = "fbank";
  const FeatureSource live = feature_source(cfg);
  EXPECT_EQ(live.feature_dim, 640);
  EXPECT_DOUBLE_EQ(live.frame_rate, 12.5);
  EXPECT_FALSE(live.codes);
  EXPECT_NE(live.description.find("on the fly"), std::string::npos);

  // A cache written by the fbank encoder is accepted, one made by "mimi" is refused.
  FbankEncoder enc;
  data::FeatureCacheMeta meta;
  meta.encoder = enc.describe();
  meta.feature_dim = 640;
  {
    data::FeatureCacheWriter w(dir.path() / "fb", meta);
    w.add("a", at::ones({3, 640}));
    w.flush();
  }
  cfg.data.cache = dir.path() / "fb";
  const FeatureSource cached = feature_source(cfg);
  EXPECT_EQ(cached.feature_dim, 640);
  EXPECT_DOUBLE_EQ(cached.frame_rate, 12.5);
  data::Utterance u;
  u.id = "a";
  EXPECT_TRUE(all_close(cached.features(u), at::ones({3, 640}), 0, "cached"));
  cfg.encoder.type = "mimi";
  expect_error<ConfigError>([&] { feature_source(cfg); }, {"data.cache", "fbank", "type=mimi"});
}

}  // namespace
}  // namespace salad::models
