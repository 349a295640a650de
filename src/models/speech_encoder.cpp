#include "salad/models/speech_encoder.h"

#include <torch/torch.h>

#include <mutex>

#include "salad/audio/audio.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/models/fbank.h"
#include "salad/data/manifest.h"
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
    const EncodedBatch out =
        encoder->encode(a.samples.unsqueeze(0), torch::full({1}, n, torch::kLong));
    return out.features[0].narrow(0, 0, out.frames[0].item<int64_t>()).clone();  // [F, D]
  };
}

}  // namespace salad::models
