#include "salad/models/speech_encoder.h"

#include "salad/core/config.h"
#include "salad/core/error.h"
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

}  // namespace salad::models
