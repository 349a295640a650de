// The frozen speech encoder interface: Mimi (models/mimi.h) and the built-in log-mel fbank
// encoder (models/fbank.h) both turn 24 kHz-style mono waveforms into 12.5 Hz frames, one frame
// per LLM position.
//
// Shape legend: B batch, L samples, F frames, D feature width.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace salad::config {
struct EncoderConfig;
struct SaladConfig;
}  // namespace salad::config
namespace salad::data {
struct Utterance;
}

namespace salad::models {

struct EncodedBatch {
  at::Tensor
      features;  ///< [B, F, D] float32 (codes: [B, F, n_q] int64); frames >= frames[b] are padding
  at::Tensor frames;  ///< [B] int64: valid frames of each item, ceil(length / samples_per_frame)
};

/// A frozen encoder: inference only, no gradients, deterministic. A clip encoded alone and
/// inside a right-padded batch gives the same valid frames (padding never leaks into them).
class SpeechEncoder {
 public:
  virtual ~SpeechEncoder() = default;
  /// Sample rate the waveform must have (audio is resampled to it when loaded).
  virtual int64_t sample_rate() const = 0;
  /// Samples per output frame (1920 at 24 kHz = 12.5 Hz).
  virtual int64_t samples_per_frame() const = 0;
  /// Width D of one output frame (n_q for codes).
  virtual int64_t feature_dim() const = 0;
  /// "mimi" or "fbank", plus what it outputs, for logs and cache metadata.
  virtual std::string describe() const = 0;
  /// wave: [B, L] float32, right-padded; lengths: [B] int64 valid samples (each >= 1).
  virtual EncodedBatch encode(const at::Tensor& wave, const at::Tensor& lengths) = 0;

  /// Valid frames of a clip of `samples` samples: ceil(samples / samples_per_frame()).
  int64_t frames_for(int64_t samples) const {
    return (samples + samples_per_frame() - 1) / samples_per_frame();
  }
};

/// Builds the encoder a recipe's `encoder:` section names (mimi needs encoder.checkpoint).
std::unique_ptr<SpeechEncoder> make_speech_encoder(const config::EncoderConfig& cfg);

/// Features computed on demand, for a data loader without a feature cache (data::FeatureFn):
/// loads the utterance's audio (its offset and duration, resampled to the encoder's rate),
/// encodes it without gradients and returns its [F, D] frames. Safe to call from several
/// threads: audio decoding runs in parallel, encodes one at a time. Throws IoError/DataError
/// naming the file when the audio cannot be used (any failure of the encoder included).
/// Slow on CPU: loader workers run LibTorch ops on one core each, so Mimi encodes on one core;
/// for real runs write a feature cache with salad-encode first.
std::function<at::Tensor(const data::Utterance&)> on_the_fly_features(
    std::shared_ptr<SpeechEncoder> encoder);

/// Where a run's speech features come from, and what they look like.
struct FeatureSource {
  std::function<at::Tensor(const data::Utterance&)> features;  ///< a data::FeatureFn
  double frame_rate = 12.5;                                    ///< frames per second
  int64_t feature_dim = 0;                                     ///< De (codes: n_q)
  bool codes = false;       ///< int64 codes instead of float features
  std::string description;  ///< for the log: "feature cache DIR (mimi latent ...)" / "on the fly"
};

/// The recipe's feature source: the feature cache `data.cache` when set (checked against
/// `encoder.type` / `encoder.output`: a cache made by another encoder is a ConfigError naming
/// both), else the `encoder:` section's encoder run on the fly (on_the_fly_features).
FeatureSource feature_source(const config::SaladConfig& cfg);

}  // namespace salad::models
