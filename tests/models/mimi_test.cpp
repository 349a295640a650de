// Mimi encoder parity with the reference outputs of ../shared/fixtures/mimi (copied to
// tests/data/mimi; see tests/data/README.md): every stage, codes and dequantised latents, for the
// Kyutai and the Hugging Face checkpoint naming; then batching, the HF per-layer padding
// difference, weight norm, configs and bad input.
#include "salad/models/mimi.h"

#include <torch/torch.h>

#include <cstdio>

#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/models/weight_loader.h"
#include "test_util.h"

namespace salad::models {
namespace {

using test::all_close;
using test::expect_error;

// The fixture README asks for max |error| <= 1e-4 relative to the reference's scale in fp32
// (observed ~1e-6).
constexpr double kRelTol = 1e-4;
// A code may differ from the reference only where the reference's own choice was a near tie.
constexpr double kTieRelMargin = 1e-4;

std::filesystem::path mimi_dir() { return test::data_dir() / "mimi"; }

safetensors::Checkpoint cases() {
  return safetensors::Checkpoint::open(mimi_dir() / "cases.safetensors");
}

std::unique_ptr<MimiEncoder> load_fixture(const std::string& naming,
                                          MimiOutput output = MimiOutput::kLatent,
                                          int64_t n_q = 8) {
  MimiEncoderOptions o;
  o.output = output;
  o.n_q = n_q;
  o.config = mimi_dir() / ("config_" + naming + ".json");
  return load_mimi_encoder(mimi_dir() / ("weights_" + naming + ".safetensors"), o);
}

// The valid part of a [B, C, T] tensor: item b's first counts[b] steps, concatenated -> [C, sum].
at::Tensor valid_steps(const at::Tensor& t, const at::Tensor& counts) {
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < t.size(0); ++b)
    parts.push_back(t[b].narrow(-1, 0, counts[b].item<int64_t>()));
  return at::cat(parts, -1);
}

// all_close on the valid steps with the tolerance relative to the reference's scale; prints the
// error for the record.
::testing::AssertionResult close_on_valid(const at::Tensor& actual, const at::Tensor& expected,
                                          const at::Tensor& counts, const std::string& what) {
  const at::Tensor a = valid_steps(actual, counts), e = valid_steps(expected, counts);
  const double scale = e.abs().max().item<double>();
  const double err = a.sizes() == e.sizes() ? (a - e).abs().max().item<double>() : -1;
  std::printf("  %-32s max abs error %.3g (scale %.3g, relative %.3g)\n", what.c_str(), err, scale,
              err / scale);
  return all_close(a, e, kRelTol * scale, what);
}

struct CodeCheck {
  int64_t frames = 0;          // valid (item, frame) pairs checked
  int64_t tie_exceptions = 0;  // RVQ groups whose first mismatch was a reference near tie
  std::vector<std::string> bad;
};

// codes [B, K, F] against the reference: equal, except that within one RVQ (level 0 = semantic,
// levels 1.. = acoustic) everything from the first mismatching level on is excused when the
// reference's margin (d2 - d1) / d1 at that level is below kTieRelMargin (a flip there changes
// the residual of every later level of the same RVQ).
CodeCheck check_codes(const at::Tensor& codes, const safetensors::Checkpoint& c,
                      const std::string& prefix, const at::Tensor& n_frames) {
  const at::Tensor ref = c.get(prefix + ".codes"), margin = c.get(prefix + ".codes_margin"),
                   best = c.get(prefix + ".codes_best_dist");
  CodeCheck r;
  const int64_t K = ref.size(1);
  EXPECT_EQ(codes.sizes(), ref.sizes());
  if (codes.sizes() != ref.sizes()) return r;
  const auto a = codes.accessor<int64_t, 3>(), e = ref.accessor<int64_t, 3>();
  const auto m = margin.accessor<float, 3>(), d = best.accessor<float, 3>();
  for (int64_t b = 0; b < ref.size(0); ++b) {
    for (int64_t f = 0; f < n_frames[b].item<int64_t>(); ++f, ++r.frames) {
      for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 1}, {1, K}}) {
        for (int64_t l = lo; l < hi; ++l) {
          if (a[b][l][f] == e[b][l][f]) continue;
          const double rel = m[b][l][f] / std::max<double>(d[b][l][f], 1e-30);
          if (rel < kTieRelMargin) {
            ++r.tie_exceptions;
          } else {
            r.bad.push_back("item " + std::to_string(b) + " frame " + std::to_string(f) +
                            " level " + std::to_string(l) + ": " + std::to_string(a[b][l][f]) +
                            " vs " + std::to_string(e[b][l][f]) + " (margin " +
                            std::to_string(rel) + ")");
          }
          break;  // later levels of this RVQ follow from the flip
        }
      }
    }
  }
  return r;
}

at::Tensor batch_wave(const safetensors::Checkpoint& c) {
  return c.get("audio").squeeze(1);
}  // [B, L]

class MimiGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(MimiGolden, EveryStageOnTheBatch) {
  auto enc = load_fixture(GetParam());
  const auto c = cases();
  const at::Tensor n_frames = c.get("n_frames");
  const MimiStages s = enc->stages(batch_wave(c), c.get("lengths"));
  EXPECT_TRUE(s.frames.equal(n_frames));
  std::printf("%s naming, batch:\n", GetParam().c_str());
  EXPECT_TRUE(close_on_valid(s.seanet_out, c.get("batch.seanet_out"), n_frames * 2, "seanet_out"));
  EXPECT_TRUE(close_on_valid(s.transformer_out, c.get("batch.transformer_out"), n_frames * 2,
                             "transformer_out"));
  EXPECT_TRUE(close_on_valid(s.latent, c.get("batch.latent"), n_frames, "latent"));
}

TEST_P(MimiGolden, DequantisedLatentsOfTheReferenceCodes) {
  auto enc = load_fixture(GetParam());
  const auto c = cases();
  const at::Tensor codes = c.get("batch.codes");
  for (int64_t n : {1, 2, 4, 8}) {
    const std::string key = "batch.quantized_n" + std::to_string(n);
    EXPECT_TRUE(close_on_valid(enc->model()->quantized(codes.narrow(1, 0, n)), c.get(key),
                               c.get("n_frames"), key));
  }
}

TEST_P(MimiGolden, CodesOfTheReferenceLatent) {
  auto enc = load_fixture(GetParam());
  const auto c = cases();
  torch::NoGradGuard ng;
  const at::Tensor codes = enc->model()->codes(c.get("batch.latent"), 8);
  const CodeCheck r = check_codes(codes, c, "batch", c.get("n_frames"));
  std::printf(
      "%s naming, codes of the reference latent: %lld frames x 8 levels, %lld tie "
      "exceptions, %zu real mismatches\n",
      GetParam().c_str(), (long long)r.frames, (long long)r.tie_exceptions, r.bad.size());
  EXPECT_TRUE(r.bad.empty()) << r.bad.front();
  EXPECT_EQ(r.frames, c.get("n_frames").sum().item<int64_t>());
  // Fewer codebooks are a prefix of more.
  EXPECT_TRUE(enc->model()->codes(c.get("batch.latent"), 3).equal(codes.narrow(1, 0, 3)));
}

TEST_P(MimiGolden, EndToEndCodesAndQuantisedFromAudio) {
  const auto c = cases();
  const at::Tensor n_frames = c.get("n_frames");
  auto codes_enc = load_fixture(GetParam(), MimiOutput::kCodes, 8);
  const EncodedBatch out = codes_enc->encode(batch_wave(c), c.get("lengths"));
  const at::Tensor codes = out.features.transpose(1, 2).contiguous();  // [B, K, F]
  const CodeCheck r = check_codes(codes, c, "batch", n_frames);
  std::printf(
      "%s naming, end-to-end codes: %lld frames, %lld tie exceptions, %zu real mismatches\n",
      GetParam().c_str(), (long long)r.frames, (long long)r.tie_exceptions, r.bad.size());
  EXPECT_TRUE(r.bad.empty()) << r.bad.front();
  if (r.tie_exceptions > 0) return;  // the dequantised latents then differ where codes flipped
  for (int64_t n : {1, 2, 4, 8}) {
    auto enc = load_fixture(GetParam(), MimiOutput::kQuantized, n);
    const at::Tensor q = enc->encode(batch_wave(c), c.get("lengths")).features.transpose(1, 2);
    const std::string key = "batch.quantized_n" + std::to_string(n);
    EXPECT_TRUE(close_on_valid(q, c.get(key), n_frames, key + " (from audio)"));
  }
}

TEST_P(MimiGolden, SingleItemAloneMatchesReferenceAndBatchRows) {
  auto enc = load_fixture(GetParam());
  const auto c = cases();
  const at::Tensor wave = c.get("single2.audio").squeeze(1);  // [1, 9601]
  const at::Tensor len = at::full({1}, wave.size(1), at::kLong);
  const MimiStages s = enc->stages(wave, len);
  const at::Tensor f = s.frames;
  ASSERT_EQ(f.item<int64_t>(), 6);
  std::printf("%s naming, single2:\n", GetParam().c_str());
  EXPECT_TRUE(
      close_on_valid(s.seanet_out, c.get("single2.seanet_out"), f * 2, "single2 seanet_out"));
  EXPECT_TRUE(close_on_valid(s.transformer_out, c.get("single2.transformer_out"), f * 2,
                             "single2 transformer_out"));
  EXPECT_TRUE(close_on_valid(s.latent, c.get("single2.latent"), f, "single2 latent"));
  for (int64_t n : {1, 2, 4, 8}) {
    const std::string key = "single2.quantized_n" + std::to_string(n);
    const at::Tensor q = enc->model()->quantized(c.get("single2.codes").narrow(1, 0, n));
    EXPECT_TRUE(close_on_valid(q, c.get(key), f, key));
  }
  EXPECT_TRUE(enc->model()->codes(c.get("single2.latent"), 8).equal(c.get("single2.codes")));
  // The reference's single item equals its rows in the reference batch; so must ours.
  const MimiStages batch = enc->stages(batch_wave(c), c.get("lengths"));
  EXPECT_TRUE(all_close(s.latent, batch.latent.narrow(0, 2, 1).narrow(2, 0, 6), 1e-5,
                        "single2 latent vs batch row"));
}

INSTANTIATE_TEST_SUITE_P(Namings, MimiGolden, ::testing::Values("kyutai", "hf"),
                         [](const auto& info) { return info.param; });

TEST(MimiGoldenHf, PerLayerPaddingDiffersOnlyOnTheLastPartialFrame) {
  // Hugging Face's MimiConv1d (and moshi before Feb 2025) pad each conv on the right instead of
  // zero-padding the waveform once (transformers issue 43377). We follow current moshi: for a
  // length that is not a multiple of 1920 (single2: 9601 = 5 * 1920 + 1) the last frame differs,
  // every other frame is the same.
  auto enc = load_fixture("kyutai");
  const auto c = cases();
  const at::Tensor wave = c.get("single2.audio").squeeze(1);
  const at::Tensor ours =
      enc->stages(wave, at::full({1}, wave.size(1), at::kLong)).latent;  // [1, D, 6]
  const at::Tensor hf = c.get("single2.hf_perlayer_padding.latent");
  const double scale = hf.abs().max().item<double>();
  EXPECT_TRUE(all_close(ours.narrow(2, 0, 5), hf.narrow(2, 0, 5), kRelTol * scale, "frames 0-4"));
  const double last = (ours.select(2, 5) - hf.select(2, 5)).abs().max().item<double>();
  std::printf("last partial frame vs HF per-layer padding: max |diff| %.3g (scale %.3g)\n", last,
              scale);
  EXPECT_GT(last, 0.05 * scale);
}

TEST(MimiTest, EachItemAloneEqualsItsRowsInThePaddedBatch) {
  auto enc = load_fixture("kyutai", MimiOutput::kLatent);
  const auto c = cases();
  const at::Tensor wave = batch_wave(c), lengths = c.get("lengths");
  // Garbage (not zeros) past each length: it must not leak into valid frames either.
  at::manual_seed(1);
  at::Tensor noisy = wave.clone();
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = lengths[b].item<int64_t>();
    noisy[b].narrow(0, n, wave.size(1) - n).copy_(at::randn({wave.size(1) - n}));
  }
  const EncodedBatch batch = enc->encode(noisy, lengths);
  ASSERT_EQ(batch.features.sizes(), (std::vector<int64_t>{3, 37, 64}));
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = lengths[b].item<int64_t>(), f = batch.frames[b].item<int64_t>();
    const EncodedBatch alone =
        enc->encode(wave.narrow(0, b, 1).narrow(1, 0, n), at::full({1}, n, at::kLong));
    ASSERT_EQ(alone.features.size(1), f);
    EXPECT_TRUE(all_close(batch.features[b].narrow(0, 0, f), alone.features[0], 1e-5,
                          "item " + std::to_string(b)));
    EXPECT_EQ(batch.features[b].narrow(0, f, 37 - f).abs().sum().item<double>(), 0.0);
  }
}

TEST(MimiTest, SpeechEncoderInterface) {
  const auto c = cases();
  auto latent = load_fixture("hf");
  EXPECT_EQ(latent->sample_rate(), 24000);
  EXPECT_EQ(latent->samples_per_frame(), 1920);
  EXPECT_EQ(latent->feature_dim(), 64);
  EXPECT_EQ(latent->frames_for(1921), 2);
  EXPECT_NE(latent->describe().find("mimi latent"), std::string::npos);
  auto codes = load_fixture("hf", MimiOutput::kCodes, 4);
  EXPECT_EQ(codes->feature_dim(), 4);
  EXPECT_NE(codes->describe().find("n_q=4"), std::string::npos);
  const at::Tensor wave = at::randn({2, 4000}) * 0.1;
  const EncodedBatch out = codes->encode(wave, at::tensor({4000, 1}, at::kLong));
  EXPECT_EQ(out.features.sizes(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(out.features.scalar_type(), at::kLong);
  EXPECT_TRUE(out.frames.equal(at::tensor({3, 1}, at::kLong)));
  EXPECT_LT(out.features.max().item<int64_t>(), 64);
  const EncodedBatch lat = latent->encode(wave, at::tensor({4000, 1}, at::kLong));
  EXPECT_EQ(lat.features.sizes(), (std::vector<int64_t>{2, 3, 64}));
  EXPECT_EQ(lat.features.scalar_type(), at::kFloat);
  EXPECT_FALSE(lat.features.requires_grad());
  for (const auto& p : latent->model()->parameters()) EXPECT_FALSE(p.requires_grad());
  EXPECT_FALSE(latent->model()->is_training());
  // A batch longer than every item is trimmed to the longest one.
  EXPECT_EQ(latent->encode(at::zeros({1, 9000}), at::tensor({1920}, at::kLong)).features.size(1),
            1);
}

TEST(MimiTest, ChunkedSeanetEqualsWholeInput) {
  auto enc = load_fixture("kyutai");
  const auto c = cases();
  const at::Tensor wave = batch_wave(c), lengths = c.get("lengths");
  enc->model()->set_seanet_chunk_samples(0);
  const MimiStages whole = enc->stages(wave, lengths);
  // Rounded down to 1920 = 2 hops; the late layers then run on 48000-sample chunks, also shorter
  // than the 71040-sample batch.
  enc->model()->set_seanet_chunk_samples(2000);
  EXPECT_EQ(enc->model()->seanet_chunk_samples(), 1920);
  const MimiStages chunked = enc->stages(wave, lengths);
  EXPECT_TRUE(all_close(chunked.seanet_out, whole.seanet_out, 1e-5, "chunked seanet"));
  EXPECT_TRUE(all_close(chunked.latent, whole.latent, 1e-5, "chunked latent"));
}

TEST(MimiTest, BothNamingsGiveTheSameModule) {
  // The HF file's q/k rows are permuted for rotate-half RoPE; after loading they are Kyutai's.
  auto a = load_fixture("kyutai"), b = load_fixture("hf");
  const auto pa = a->model()->named_parameters(), pb = b->model()->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) EXPECT_TRUE(p.value().equal(pb[p.key()])) << p.key();
  const auto ba = a->model()->named_buffers(), bb = b->model()->named_buffers();
  for (const auto& p : ba) EXPECT_TRUE(p.value().equal(bb[p.key()])) << p.key();
}

TEST(MimiTest, ModuleNamesAreTheKyutaiEncoderKeys) {
  auto enc = load_fixture("kyutai");
  std::vector<std::string> names;
  for (const auto& [name, t] : named_tensors(*enc->model())) names.push_back(name);
  std::sort(names.begin(), names.end());
  std::vector<std::string> keys;
  for (const auto& k :
       safetensors::Checkpoint::open(mimi_dir() / "weights_kyutai.safetensors").names()) {
    if (k.rfind("decoder", 0) != 0 && k.rfind("upsample.", 0) != 0) keys.push_back(k);
  }
  EXPECT_EQ(names, keys);
}

TEST(MimiTest, FoldsWeightNorm) {
  // Training-style files hold weight_g / weight_v (Kyutai) or parametrizations (HF) instead of
  // the folded weight.
  test::TempDir d;
  const auto c = cases();
  const at::Tensor wave = batch_wave(c), lengths = c.get("lengths");
  const at::Tensor expected = load_fixture("kyutai")->stages(wave, lengths).latent;
  at::manual_seed(2);
  for (const std::string naming : {"kyutai", "hf"}) {
    const auto ckpt =
        safetensors::Checkpoint::open(mimi_dir() / ("weights_" + naming + ".safetensors"));
    safetensors::NamedTensors ts;
    int folded = 0;
    for (const auto& k : ckpt.names()) {
      const at::Tensor w = ckpt.get(k);
      const bool conv = k.rfind("encoder.", 0) == 0 && w.dim() == 3;
      if (!conv) {
        ts.emplace_back(k, w);
        continue;
      }
      const std::string stem = k.substr(0, k.size() - 6);
      const at::Tensor s = at::rand({w.size(0), 1, 1}) + 0.5;  // v = s * w, g = ||w||
      const at::Tensor g = w.norm(2, {1, 2}, true);
      ts.emplace_back(stem + (naming == "hf" ? "parametrizations.weight.original0" : "weight_g"),
                      g);
      ts.emplace_back(stem + (naming == "hf" ? "parametrizations.weight.original1" : "weight_v"),
                      w * s);
      ++folded;
    }
    EXPECT_EQ(folded, 14);
    safetensors::save(d / (naming + ".safetensors"), ts);
    MimiEncoderOptions o;
    o.config = mimi_dir() / ("config_" + naming + ".json");
    auto enc = load_mimi_encoder(d / (naming + ".safetensors"), o);
    EXPECT_TRUE(
        all_close(enc->stages(wave, lengths).latent, expected, 1e-5, naming + " weight norm"));
  }
}

TEST(MimiTest, FindsTheConfigBesideTheCheckpoint) {
  test::TempDir d;
  // Kyutai file with <stem>.json.
  std::filesystem::copy_file(mimi_dir() / "weights_kyutai.safetensors", d / "tiny.safetensors");
  std::filesystem::copy_file(mimi_dir() / "config_kyutai.json", d / "tiny.json");
  EXPECT_EQ(load_mimi_model(d / "tiny.safetensors")->options().dimension, 64);
  // HF folder: config.json + model.safetensors.
  std::filesystem::create_directories(d / "hf");
  std::filesystem::copy_file(mimi_dir() / "weights_hf.safetensors", d / "hf/model.safetensors");
  std::filesystem::copy_file(mimi_dir() / "config_hf.json", d / "hf/config.json");
  auto hf = load_mimi_encoder(d / "hf", {MimiOutput::kCodes, 8, {}});
  EXPECT_EQ(hf->feature_dim(), 8);
  EXPECT_EQ(hf->model()->options().context, 12);
  // No config: the released Mimi's shapes, so the tiny file does not fit; the message says so.
  std::filesystem::copy_file(mimi_dir() / "weights_kyutai.safetensors", d / "alone.safetensors");
  expect_error<CheckpointError>(
      [&] { load_mimi_model(d / "alone.safetensors"); },
      {"shape mismatch: encoder.model.0.conv.conv.weight: expected [64, 1, 7], found [4, 1, 7]",
       "model config: defaults of the released Mimi"});
  expect_error<IoError>([&] { load_mimi_model(d / "absent.safetensors"); }, {"absent.safetensors"});
}

TEST(MimiTest, ConfigLayoutsAgreeAndDefaultsAreTheReleasedMimi) {
  const MimiOptions k = MimiOptions::from_kyutai_json(mimi_dir() / "config_kyutai.json");
  const MimiOptions h = MimiOptions::from_hf_config(mimi_dir() / "config_hf.json");
  for (const MimiOptions* o : {&k, &h}) {
    EXPECT_EQ(o->dimension, 64);
    EXPECT_EQ(o->n_filters, 4);
    EXPECT_EQ(o->num_layers, 2);
    EXPECT_EQ(o->num_heads, 4);
    EXPECT_EQ(o->dim_feedforward, 128);
    EXPECT_EQ(o->context, 12);
    EXPECT_EQ(o->n_q, 8);
    EXPECT_EQ(o->bins, 64);
    EXPECT_EQ(o->codebook_dim, 16);
    EXPECT_EQ(o->ratios, (std::vector<int64_t>{8, 6, 5, 4}));
    EXPECT_EQ(o->samples_per_frame(), 1920);
  }
  const MimiOptions full;
  EXPECT_EQ(full.hop_length(), 960);
  EXPECT_EQ(full.downsample_stride(), 2);
  EXPECT_EQ(full.dimension, 512);
  EXPECT_EQ(full.context, 250);
  EXPECT_EQ(full.n_q, 32);
  MimiModel m(full);
  int64_t values = 0;
  for (const auto& [name, t] : named_tensors(*m)) values += t.numel();
  // Notes §1.8: the encoder side of the release (codebook buffers included) has 56,234,304 values.
  EXPECT_EQ(values, 56234304);
}

TEST(MimiTest, BadConfigValues) {
  test::TempDir d;
  test::write_text(d / "k.json", R"({"sample_rate": 24000, "frame_rate": 12.5,
    "seanet": {"dimension": 64, "n_filters": "4", "pad_mode": "reflect", "causal": false, "ratios": [8, 6, 5, 4]},
    "transformer": {"d_model": 64, "num_heads": 5, "context": 12, "gating": "silu", "typo": 1},
    "quantizer": {"dimension": 16, "n_q": 8, "bins": 64, "input_dimension": 32}})");
  expect_error<ConfigError>(
      [&] { MimiOptions::from_json_file(d / "k.json"); },
      {(d / "k.json").string(), "key 'seanet.n_filters': expected an integer, found \"4\"",
       "key 'seanet.pad_mode': only \"constant\" is supported",
       "key 'seanet.causal': only true is supported",
       "key 'transformer.gating': only \"none\" is supported", "key 'transformer.typo': unknown",
       "key 'quantizer.input_dimension' (32) must equal seanet.dimension (64)"});
  test::write_text(d / "k2.json", R"({"seanet": {"dimension": 64, "ratios": [8, 6, 5, 3]},
    "transformer": {"d_model": 64, "num_heads": 5}, "quantizer": {"n_q": 2, "n_q_semantic": 3}})");
  expect_error<ConfigError>(
      [&] { MimiOptions::from_json_file(d / "k2.json"); },
      {"num_heads (5) must divide dimension (64)", "n_q_semantic must be in [1, n_q = 2], found 3",
       "must be an integer >= 2 (the downsample stride)"});
  test::write_text(d / "config.json",
                   R"({"model_type": "mimi", "hidden_size": 64, "num_attention_heads": 4,
    "hidden_act": "gelu_new", "num_key_value_heads": 2, "use_causal_conv": false, "codebook_dim": 16,
    "vector_quantization_hidden_dimension": 32})");
  expect_error<ConfigError>(
      [&] { MimiOptions::from_json_file(d / "config.json"); },
      {"key 'hidden_act': only \"gelu\" is supported",
       "key 'num_key_value_heads' (2) must equal num_attention_heads (4)",
       "key 'use_causal_conv': only true is supported",
       "vector_quantization_hidden_dimension' (32) must equal codebook_dim (16)"});
  test::write_text(d / "other.json", R"({"vocab_size": 10})");
  expect_error<ConfigError>([&] { MimiOptions::from_json_file(d / "other.json"); },
                            {"not a Mimi config"});
  expect_error<ConfigError>([] { parse_mimi_output("logits"); }, {"unknown Mimi output 'logits'"});
  expect_error<ConfigError>([] { load_fixture("kyutai", MimiOutput::kCodes, 9); },
                            {"n_q must be in [1, 8]", "found 9"});
}

TEST(MimiTest, CheckpointProblemsAreAllListed) {
  test::TempDir d;
  for (const std::string naming : {"kyutai", "hf"}) {
    const bool hf = naming == "hf";
    const auto ckpt =
        safetensors::Checkpoint::open(mimi_dir() / ("weights_" + naming + ".safetensors"));
    const std::string missing =
        hf ? "encoder_transformer.layers.1.self_attn.k_proj.weight"
           : "encoder_transformer.transformer.layers.1.self_attn.in_proj_weight";
    const std::string misshaped =
        hf ? "encoder.layers.3.conv.weight" : "encoder.model.3.conv.conv.weight";
    const std::string codebook =
        hf ? "quantizer.acoustic_residual_vector_quantizer.layers.2.codebook.embed_sum"
           : "quantizer.rvq_rest.vq.layers.2._codebook.embedding_sum";
    safetensors::NamedTensors ts;
    for (const auto& k : ckpt.names()) {
      if (k == missing || k == codebook) continue;
      at::Tensor t = ckpt.get(k);
      if (k == misshaped) t = t.narrow(2, 0, 5);
      ts.emplace_back(k, t);
    }
    ts.emplace_back("encoder.extra.weight", at::ones({2}));
    safetensors::save(d / "w.safetensors", ts);
    MimiEncoderOptions o;
    o.config = mimi_dir() / ("config_" + naming + ".json");
    const std::string shape = hf ? "[64, 64]" : "[192, 64]";
    expect_error<CheckpointError>(
        [&] { load_mimi_encoder(d / "w.safetensors", o); },
        {"cannot load the Mimi encoder (" + std::string(hf ? "Hugging Face" : "Kyutai") +
             " naming) from " + (d / "w.safetensors").string(),
         "4 problems", "missing: " + missing + " (expected " + shape + ")",
         "missing: " + codebook + " (expected [64, 16])",
         "shape mismatch: " + misshaped + ": expected [8, 4, 8], found [8, 4, 5]",
         "unexpected: encoder.extra.weight [2]", "model config: " + o.config.string()});
  }
  safetensors::save(d / "none.safetensors", {{"a.weight", at::ones({1})}});
  expect_error<CheckpointError>(
      [&] { load_mimi_model(d / "none.safetensors", mimi_dir() / "config_hf.json"); },
      {"neither Kyutai nor Hugging Face"});
}

TEST(MimiTest, BadWaveAndLengths) {
  auto enc = load_fixture("kyutai");
  const at::Tensor wave = at::zeros({2, 3000});
  expect_error<Error>(
      [&] {
        enc->encode(at::zeros({2, 1, 3000}), at::tensor({3000, 3000}, at::kLong));
      },
      {"wave must be [B, L]", "[2, 1, 3000]"});
  expect_error<Error>([&] { enc->encode(at::zeros({3000}), at::tensor({3000}, at::kLong)); },
                      {"wave must be [B, L]"});
  expect_error<Error>(
      [&] {
        enc->encode(wave.to(at::kInt), at::tensor({3000, 3000}, at::kLong));
      },
      {"floating point"});
  expect_error<Error>(
      [&] {
        enc->encode(wave, at::tensor({3000, 0}, at::kLong));
      },
      {"lengths must be in [1, 3000]", "[1]=0"});
  expect_error<Error>([&] { enc->encode(wave, at::tensor({3001, 5}, at::kLong)); }, {"[0]=3001"});
  expect_error<Error>([&] { enc->encode(wave, at::tensor({3000}, at::kLong)); },
                      {"lengths must be [2]"});
  expect_error<Error>([&] { enc->model()->latent(at::zeros({1, 1, 1000})); }, {"multiple of 1920"});
  expect_error<Error>(
      [&] {
        enc->model()->codes(at::zeros({1, 64, 2}), 9);
      },
      {"n_q must be in [1, 8]"});
}

}  // namespace
}  // namespace salad::models
