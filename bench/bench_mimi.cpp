// Mimi encoder throughput (fp32, CPU) at the full size of the released model (random weights:
// 512-d, 8 layers, context 250, 32 codebooks of 2048 x 256), in seconds of audio per second, with
// the time split over the stages.
//   salad_bench_mimi [--seconds S] [--threads N] [--output latent|quantized|codes] [--n-q K]
//                    [--reps R] [--batch B] [--chunk SAMPLES]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "salad/core/blas_info.h"
#include "salad/models/mimi.h"

namespace {

double seconds_of(const std::function<void()>& f, int reps) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace salad::models;
  double seconds = 10;
  int threads = 0, reps = 3;
  int64_t n_q = 32, batch = 1, chunk = -1;
  std::string output = "latent";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seconds"))
      seconds = std::stod(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--output"))
      output = argv[i + 1];
    else if (!std::strcmp(argv[i], "--n-q"))
      n_q = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps"))
      reps = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch"))
      batch = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--chunk"))
      chunk = std::stoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (threads > 0) torch::set_num_threads(threads);
  torch::manual_seed(0);
  const MimiOptions full;  // the released Mimi's shape
  MimiModel model(full);
  if (chunk >= 0) model->set_seanet_chunk_samples(chunk);
  MimiEncoderOptions eo;
  eo.output = parse_mimi_output(output);
  eo.n_q = n_q;
  MimiEncoder enc(model, eo);

  const int64_t L = static_cast<int64_t>(seconds * full.sample_rate);
  const at::Tensor wave = torch::randn({batch, L}) * 0.1;
  const at::Tensor lengths = torch::full({batch}, L, torch::kLong);
  enc.encode(wave, lengths);  // warm-up (allocator, oneDNN primitives)
  const double total = seconds_of([&] { enc.encode(wave, lengths); }, reps);

  // Per stage, on the same input (one more pass each).
  torch::NoGradGuard ng;
  const int64_t spf = full.samples_per_frame(), F = (L + spf - 1) / spf;
  const at::Tensor x = at::constant_pad_nd(wave, {0, F * spf - L}).unsqueeze(1);  // [B, 1, L']
  at::Tensor s, t, lat;
  const double t_seanet = seconds_of([&] { s = model->seanet(x); }, 1);
  const double t_transformer = seconds_of([&] { t = model->transformer(s); }, 1);
  const double t_down = seconds_of([&] { lat = model->downsample_steps(t); }, 1);
  const double t_codes = seconds_of([&] { (void)model->codes(lat, n_q); }, 1);

  const salad::BlasInfo b = salad::detect_blas();
  std::printf("BLAS: %s; torch threads %d; SEANet chunk %lld samples\n", b.description.c_str(),
              at::get_num_threads(), (long long)model->seanet_chunk_samples());
  const double audio = seconds * batch;
  std::printf(
      "mimi full size, %d x %.0f s, output %s%s, %d thread(s): %.1f s audio/s "
      "(%.3f s per pass, best of %d)\n",
      (int)batch, seconds, output.c_str(),
      output == "latent" ? "" : (" n_q=" + std::to_string(n_q)).c_str(), at::get_num_threads(),
      audio / total, total, reps);
  std::printf(
      "  stages: seanet %.3f s, transformer %.3f s, downsample %.3f s, codes(n_q=%lld) %.3f s\n",
      t_seanet, t_transformer, t_down, (long long)n_q, t_codes);
  return 0;
}
