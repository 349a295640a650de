// Sample-rate conversion with libsoxr (see audio.h for the length rule).
#include <soxr.h>
#include <torch/torch.h>

#include <sstream>
#include <string>

#include "salad/audio/audio.h"
#include "salad/core/error.h"

namespace salad::audio {

at::Tensor resample(const at::Tensor& samples, int64_t from_rate, int64_t to_rate) {
  if (samples.dim() != 1) {
    std::ostringstream os;
    os << "resample: samples must be mono [L], found shape " << samples.sizes();
    throw Error(os.str());
  }
  if (from_rate <= 0 || to_rate <= 0) {
    throw Error("resample: rates must be > 0 Hz, found " + std::to_string(from_rate) + " -> " +
                std::to_string(to_rate));
  }
  at::Tensor x = samples.detach().to(at::kCPU, at::kFloat).contiguous();
  if (from_rate == to_rate) return x;
  const int64_t in_len = x.size(0);
  // soxr_oneshot's own rule, kept in exact integer arithmetic: floor(L * to / from + 1/2).
  const int64_t out_len = (2 * in_len * to_rate + from_rate) / (2 * from_rate);
  at::Tensor y = at::empty({out_len}, at::kFloat);
  if (out_len == 0) return y;

  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  // One thread: the data loader already runs one decode per worker thread.
  const soxr_runtime_spec_t runtime = soxr_runtime_spec(1);
  size_t in_done = 0, out_done = 0;
  const soxr_error_t err =
      soxr_oneshot(static_cast<double>(from_rate), static_cast<double>(to_rate), 1,
                   x.data_ptr<float>(), static_cast<size_t>(in_len), &in_done, y.data_ptr<float>(),
                   static_cast<size_t>(out_len), &out_done, &io, &quality, &runtime);
  if (err) {
    throw Error("resample " + std::to_string(from_rate) + " -> " + std::to_string(to_rate) +
                " Hz: libsoxr failed: " + err);
  }
  if (static_cast<int64_t>(out_done) != out_len) {
    // Lengths feed frame counts and caches, so a libsoxr with another rounding rule must not
    // slip through as a silent off-by-one.
    throw Error("resample " + std::to_string(from_rate) + " -> " + std::to_string(to_rate) +
                " Hz: libsoxr returned " + std::to_string(out_done) + " samples for " +
                std::to_string(in_len) + ", expected " + std::to_string(out_len));
  }
  return y;
}

}  // namespace salad::audio
