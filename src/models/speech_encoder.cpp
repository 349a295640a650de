#include "salad/models/speech_encoder.h"

#include <torch/torch.h>

#include <mutex>

#include "salad/audio/audio.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/data/feature_cache.h"
#include "salad/data/loader.h"
#include "salad/data/manifest.h"
#include "salad/models/fbank.h"
#include "salad/models/mimi.h"

namespace salad::models {

std::unique_ptr<SpeechEncoder> make_speech_encoder(const config::EncoderConfig& cfg) {
  if (cfg.type == "fbank") return std::make_unique<FbankEncoder>(cfg);
  if (cfg.type == "mimi") {
    if (cfg.checkpoint.empty()) {
      throw ConfigError(
          "encoder.type is mimi but encoder.checkpoint is empty: give Kyutai's "
          "Mimi .safetensors or an HF kyutai/mimi folder");
    }
    MimiEncoderOptions o;
    o.output = parse_mimi_output(cfg.output);
    o.n_q = cfg.n_q;
    return load_mimi_encoder(cfg.checkpoint, o);
  }
  throw ConfigError("encoder.type: expected mimi or fbank, found '" + cfg.type + "'");
}

std::function<at::Tensor(const data::Utterance&)> on_the_fly_features(
    std::shared_ptr<SpeechEncoder> encoder) {
  if (!encoder) throw ConfigError("on_the_fly_features: no encoder");
  auto mu = std::make_shared<std::mutex>();
  return [encoder, mu](const data::Utterance& u) -> at::Tensor {
    audio::LoadOptions o;
    o.sample_rate = encoder->sample_rate();
    o.offset = u.offset;
    o.duration = u.duration;
    const audio::Audio a = audio::load_audio(u.audio, o);
    const int64_t n = a.samples.size(0);
    if (n == 0) throw DataError(u.audio.string() + " (" + u.where + "): no audio samples");
    std::lock_guard<std::mutex> lock(*mu);
    torch::NoGradGuard no_grad;
    try {
      const EncodedBatch out =
          encoder->encode(a.samples.unsqueeze(0), torch::full({1}, n, torch::kLong));
      return out.features[0].narrow(0, 0, out.frames[0].item<int64_t>()).clone();  // [F, D]
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      // An odd clip must cost one skipped item, not the run (the loader skips salad errors).
      throw DataError(u.audio.string() + " (" + u.where + "): encoding failed: " + e.what());
    }
  };
}

FeatureSource feature_source(const config::SaladConfig& cfg) {
  FeatureSource src;
  const config::EncoderConfig& enc = cfg.encoder;
  if (!cfg.data.cache.empty()) {
    const data::FeatureCache cache = data::FeatureCache::open(cfg.data.cache);
    const data::FeatureCacheMeta& m = cache.meta();
    const bool type_ok = m.encoder.rfind(enc.type, 0) == 0;
    const bool output_ok = enc.type != "mimi" || m.encoder.rfind("mimi " + enc.output, 0) == 0;
    if (!type_ok || !output_ok) {
      throw ConfigError("data.cache " + cfg.data.cache.string() + " was made by '" + m.encoder +
                        "' but the recipe's encoder is type=" + enc.type +
                        (enc.type == "mimi" ? ", output=" + enc.output : std::string()) +
                        " (re-encode with salad-encode or fix the encoder section)");
    }
    if (m.samples_per_frame <= 0 || m.sample_rate <= 0) {
      throw ConfigError("data.cache " + cfg.data.cache.string() +
                        ": cache.json has no valid sample_rate / samples_per_frame");
    }
    src.features = data::cache_features(cache);
    src.frame_rate = static_cast<double>(m.sample_rate) / static_cast<double>(m.samples_per_frame);
    src.feature_dim = m.feature_dim;
    src.codes = m.dtype == "I64";
    src.description = "feature cache " + cfg.data.cache.string() + " (" + m.encoder + ", " +
                      std::to_string(cache.size()) + " utterances)";
    return src;
  }
  std::shared_ptr<SpeechEncoder> encoder = make_speech_encoder(enc);
  src.frame_rate = static_cast<double>(encoder->sample_rate()) /
                   static_cast<double>(encoder->samples_per_frame());
  src.feature_dim = encoder->feature_dim();
  src.codes = enc.type == "mimi" && enc.output == "codes";
  src.description = "encoded on the fly by " + encoder->describe();
  src.features = on_the_fly_features(std::move(encoder));
  return src;
}

}  // namespace salad::models
