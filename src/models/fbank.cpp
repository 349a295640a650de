// Log-mel filterbank encoder (the recipe is at the top of fbank.h).
//
// Shape legend: B batch, L samples, F output frames (12.5 Hz), H = 8F hops (100 Hz), M n_mels,
// K = 513 FFT bins, D = 8M feature width.
#include "salad/models/fbank.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <vector>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/shape.h"

namespace salad::models {

namespace {

constexpr int64_t kBins = FbankEncoder::kFft / 2 + 1;

double hz_to_mel(double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); }
double mel_to_hz(double mel) { return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0); }

// n_mels + 2 band edges, equally spaced in mel from kFminHz to kFmaxHz: band m rises from edge m,
// peaks at edge m + 1 and falls to zero at edge m + 2.
std::vector<double> band_edges_hz(int64_t n_mels) {
  const double lo = hz_to_mel(FbankEncoder::kFminHz), hi = hz_to_mel(FbankEncoder::kFmaxHz);
  std::vector<double> edges(static_cast<size_t>(n_mels + 2));
  for (int64_t i = 0; i < n_mels + 2; ++i) {
    edges[i] = mel_to_hz(lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(n_mels + 1));
  }
  return edges;
}

double bin_hz(int64_t k) {
  return static_cast<double>(k) * FbankEncoder::kSampleRate / FbankEncoder::kFft;
}

// [K, M] triangular filters sampled at the FFT bin frequencies (double, then float32).
std::vector<double> filter_weights(int64_t n_mels) {
  const std::vector<double> e = band_edges_hz(n_mels);
  std::vector<double> w(static_cast<size_t>(kBins * n_mels), 0.0);
  for (int64_t k = 0; k < kBins; ++k) {
    const double f = bin_hz(k);
    for (int64_t m = 0; m < n_mels; ++m) {
      const double up = (f - e[m]) / (e[m + 1] - e[m]);
      const double down = (e[m + 2] - f) / (e[m + 2] - e[m + 1]);
      w[k * n_mels + m] = std::max(0.0, std::min(up, down));
    }
  }
  return w;
}


}  // namespace

// How kLogMelMean / kLogMelStd were chosen: flite 2.2 (Debian flite1-dev) read 40 sentences of
// assets/texts/sotu.txt with each of its 16 kHz voices cmu_us_kal16 and cmu_us_slt (7.9 and
// 7.6 min with pauses), scaled to -26 dBFS RMS and resampled to 24 kHz. The unnormalised 80-band
// log-mel over the 68 bands below 7.5 kHz had mean -13.7 / -15.2 and standard deviation 4.3 / 4.4
// (all 80 bands: -15.1 / -16.4 and 5.1 / 4.9, since a 16 kHz source leaves the bands above 8 kHz
// at the floor). Rounded to -14 and 4.5.

void FbankOptions::validate() const {
  if (n_mels < 1) {
    throw ConfigError("fbank: encoder.n_mels must be >= 1, found " + std::to_string(n_mels));
  }
  const std::vector<double> w = filter_weights(n_mels);
  const std::vector<double> e = band_edges_hz(n_mels);
  for (int64_t m = 0; m < n_mels; ++m) {
    double peak = 0.0;
    for (int64_t k = 0; k < kBins; ++k) peak = std::max(peak, w[k * n_mels + m]);
    if (peak == 0.0) {
      std::ostringstream os;
      os << "fbank: encoder.n_mels = " << n_mels << " is too many for a " << FbankEncoder::kFft
         << "-point FFT at " << FbankEncoder::kSampleRate << " Hz: band " << m << " (" << e[m]
         << " - " << e[m + 2] << " Hz) holds no FFT bin (bins are " << bin_hz(1) << " Hz apart)";
      throw ConfigError(os.str());
    }
  }
}

FbankOptions FbankOptions::from_config(const config::EncoderConfig& cfg) {
  FbankOptions o;
  o.n_mels = cfg.n_mels;
  return o;
}

FbankEncoder::FbankEncoder(const FbankOptions& options) : options_(options) {
  options_.validate();
  window_ = at::hann_window(kWindow, /*periodic=*/true, at::TensorOptions().dtype(at::kFloat));
  const double half_sum = window_.sum().item<double>() / 2.0;  // 150: a sine's peak |rfft| / A
  power_scale_ = 1.0 / (half_sum * half_sum);
  const std::vector<double> w = filter_weights(options_.n_mels);
  filters_ = at::tensor(w, at::TensorOptions().dtype(at::kDouble))
                 .view({kBins, options_.n_mels})
                 .to(at::kFloat);  // [K, M]
}

FbankEncoder::FbankEncoder(const config::EncoderConfig& cfg)
    : FbankEncoder(FbankOptions::from_config(cfg)) {}

std::string FbankEncoder::describe() const {
  return "fbank: " + std::to_string(options_.n_mels) + " log-mel bands (HTK, 20 Hz - 12 kHz) x " +
         std::to_string(kStack) + " stacked 10 ms hops = " + std::to_string(feature_dim()) +
         "-d frames at 12.5 Hz";
}

double FbankEncoder::band_center_hz(int64_t m) const {
  if (m < 0 || m >= options_.n_mels) {
    throw Error("fbank: band " + std::to_string(m) + " out of range [0, " +
                std::to_string(options_.n_mels) + ")");
  }
  return band_edges_hz(options_.n_mels)[m + 1];
}

double FbankEncoder::floor_value() { return (std::log(kFloor) - kLogMelMean) / kLogMelStd; }

at::Tensor FbankEncoder::log_mel(const at::Tensor& wave, const at::Tensor& lengths) const {
  if (wave.dim() != 2 || !wave.is_floating_point()) {
    throw Error("fbank: wave must be a floating-point [B, L] tensor, found " +
                std::string(c10::toString(wave.scalar_type())) + " of shape " + shape_text(wave.sizes()));
  }
  const int64_t B = wave.size(0), L = wave.size(1);
  if (lengths.dim() != 1 || lengths.size(0) != B || lengths.is_floating_point() ||
      lengths.scalar_type() == at::kBool) {
    throw Error("fbank: lengths must be an integer [B] tensor with B = " + std::to_string(B) +
                ", found " + std::string(c10::toString(lengths.scalar_type())) + " of shape " +
                shape_text(lengths.sizes()));
  }
  const at::Tensor len = lengths.to(at::kCPU, at::kLong).contiguous();
  const int64_t* lp = len.data_ptr<int64_t>();
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; ++b) {
    if (lp[b] < 1 || lp[b] > L) {
      throw Error("fbank: lengths[" + std::to_string(b) + "] = " + std::to_string(lp[b]) +
                  " is outside [1, L = " + std::to_string(L) + "] (wave " + shape_text(wave.sizes()) + ")");
    }
    max_len = std::max(max_len, lp[b]);
  }
  const int64_t spf = kHop * kStack;
  const int64_t F = (max_len + spf - 1) / spf;
  const int64_t padded = F * spf;
  const auto fopts = at::TensorOptions().dtype(at::kFloat).device(wave.device());
  if (B == 0) return at::empty({0, 0, options_.n_mels}, fopts);

  torch::NoGradGuard no_grad;
  at::Tensor x = wave.detach().to(at::kFloat).slice(1, 0, std::min(L, padded));  // [B, <=F*1920]
  const at::Tensor valid =
      at::arange(x.size(1), at::TensorOptions().dtype(at::kLong).device(wave.device()))
          .unsqueeze(0) < len.to(wave.device()).unsqueeze(1);  // [B, L']
  x = x.masked_fill(valid.logical_not(), 0.0f);
  // Window context of (kWindow - kHop) / 2 samples on each side of the F*1920 samples.
  const int64_t side = (kWindow - kHop) / 2;
  x = at::constant_pad_nd(x, {side, padded - x.size(1) + side}, 0.0);  // [B, F*1920 + 600 - 240]
  const at::Tensor frames = x.unfold(1, kWindow, kHop);                // [B, H, kWindow]
  const at::Tensor spec = at::fft_rfft(frames * window_.to(wave.device()), kFft, -1);  // [B, H, K]
  const at::Tensor power = at::view_as_real(spec).pow(2).sum(-1) * power_scale_;       // [B, H, K]
  const at::Tensor mel = at::matmul(power, filters_.to(wave.device()));                // [B, H, M]
  return (mel.clamp_min(kFloor).log() - kLogMelMean) / kLogMelStd;                     // [B, H, M]
}

EncodedBatch FbankEncoder::encode(const at::Tensor& wave, const at::Tensor& lengths) {
  torch::NoGradGuard no_grad;
  const at::Tensor hops = log_mel(wave, lengths);  // [B, H, M]
  const int64_t B = hops.size(0), H = hops.size(1), M = options_.n_mels;
  const int64_t F = H / kStack;
  EncodedBatch out;
  out.frames = (lengths.to(at::kCPU, at::kLong) + (samples_per_frame() - 1))
                   .div(samples_per_frame(), "floor");     // [B]
  at::Tensor features = hops.reshape({B, F, kStack * M});  // [B, F, D]
  const at::Tensor keep =
      at::arange(F, at::TensorOptions().dtype(at::kLong).device(features.device())).unsqueeze(0) <
      out.frames.to(features.device()).unsqueeze(1);                            // [B, F]
  out.features = features.masked_fill(keep.logical_not().unsqueeze(-1), 0.0f);  // [B, F, D]
  return out;
}

}  // namespace salad::models
