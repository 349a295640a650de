// The built-in speech encoder: log-mel filterbank frames stacked to Mimi's 12.5 Hz frame rate.
// No weights; the default when no Mimi checkpoint is given (quickstart, tests).
//
// Per item of a batch (24 kHz mono, `len` valid samples):
//   1. samples at or after `len` are zeroed (so right padding of a batch never leaks in), and the
//      clip is extended with zeros to Fr * 1920 samples, Fr = ceil(len / 1920);
//   2. 10 ms hop k (k = 0 .. 8*Fr-1) covers samples [240k, 240k + 240); its window is the 600
//      samples (25 ms) centred on that hop, [240k - 180, 240k + 420), zeros outside [0, len);
//   3. periodic Hann window, zero-padded to 1024 points, power spectrum |rfft|^2 scaled by
//      (2 / sum(window))^2 so that a full-scale sine at a bin centre has power 1 in that bin;
//   4. n_mels triangular HTK-mel filters (mel = 2595 log10(1 + f/700)), band edges equally spaced
//      in mel from 20 Hz to 12 kHz, unnormalised (peak weight 1), as in torchaudio/HTK;
//   5. log(max(mel, 1e-10)), then the fixed affine map (x - kLogMelMean) / kLogMelStd (no
//      per-utterance statistics: a clip gives the same frames alone and inside a padded batch);
//   6. output frame j stacks the 10 ms frames 8j .. 8j+7: feature index s * n_mels + m holds band
//      m of hop 8j + s. So feature_dim = 8 * n_mels and frames = ceil(len / 1920), like Mimi; the
//      last frame's missing samples are the zeros of step 1.
// Output frames at or beyond an item's valid count are set to 0.
//
// Shape legend: B batch, L samples, F output frames (12.5 Hz), H = 8F hops (100 Hz), M n_mels,
// K = 513 FFT bins, D = 8M feature width.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "salad/models/speech_encoder.h"

namespace salad::config {
struct EncoderConfig;
}

namespace salad::models {

struct FbankOptions {
  int64_t n_mels = 80;  ///< mel bands per 10 ms hop

  /// Throws ConfigError when n_mels is < 1 or so large that a band holds no FFT bin.
  void validate() const;
  /// From a recipe's `encoder:` section (encoder.n_mels).
  static FbankOptions from_config(const config::EncoderConfig& cfg);
};

/// Log-mel filterbank encoder. Stateless after construction: encode() may be called from several
/// threads at once. Works on any device (the filters follow the input).
class FbankEncoder : public SpeechEncoder {
 public:
  static constexpr int64_t kSampleRate = 24000;
  static constexpr int64_t kHop = 240;     ///< 10 ms
  static constexpr int64_t kWindow = 600;  ///< 25 ms
  static constexpr int64_t kFft = 1024;
  static constexpr int64_t kStack = 8;  ///< hops per output frame: 80 ms, 12.5 Hz
  static constexpr double kFminHz = 20.0;
  static constexpr double kFmaxHz = 12000.0;
  static constexpr double kFloor = 1e-10;  ///< mel energies are clamped to this before the log
  /// Fixed normalisation: the log-mel of speech at a typical level (-26 dBFS RMS) comes out
  /// roughly zero-mean with unit variance (fbank.cpp says how they were measured); silence maps
  /// to floor_value() = -2.01. Part of the feature definition: changing them invalidates caches.
  static constexpr double kLogMelMean = -14.0;
  static constexpr double kLogMelStd = 4.5;

  explicit FbankEncoder(const FbankOptions& options = {});
  explicit FbankEncoder(const config::EncoderConfig& cfg);

  int64_t sample_rate() const override { return kSampleRate; }
  int64_t samples_per_frame() const override { return kHop * kStack; }
  int64_t feature_dim() const override { return kStack * options_.n_mels; }
  std::string describe() const override;

  /// wave: [B, L] float (any floating dtype; computed in float32), right-padded; lengths: [B]
  /// integer, each in [1, L]. Returns features [B, F, 8M] float32 on wave's device with F = max
  /// frames, and frames [B] int64 (CPU) = ceil(lengths / 1920). Throws salad::Error for a wrong
  /// rank, dtype or length.
  EncodedBatch encode(const at::Tensor& wave, const at::Tensor& lengths) override;

  /// The normalised 10 ms frames before stacking: [B, 8F, M] (same preconditions as encode();
  /// hops of padding frames are not zeroed here).
  at::Tensor log_mel(const at::Tensor& wave, const at::Tensor& lengths) const;

  /// Mel filter matrix [K = 513, M] float32 (power spectrum bins -> bands).
  const at::Tensor& filters() const { return filters_; }
  /// Centre frequency (Hz) of band m, where its triangle peaks.
  double band_center_hz(int64_t m) const;
  /// The feature value of a band with no energy (silence): (log(kFloor) - mean) / std.
  static double floor_value();
  const FbankOptions& options() const { return options_; }

 private:
  FbankOptions options_;
  at::Tensor window_;         ///< [kWindow] periodic Hann
  at::Tensor filters_;        ///< [K, M]
  double power_scale_ = 0.0;  ///< (2 / sum(window))^2
};

}  // namespace salad::models
