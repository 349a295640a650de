// fp32 GEMM throughput and a small training step on the BLAS LibTorch loaded: the machine's
// measured peak (the reference for MFU figures) and the check that setup.sh picked the right BLAS.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "salad/core/blas_info.h"

namespace {

double seconds_of(const std::function<void()>& f, int reps) {
  f();  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

}  // namespace

int main() {
  torch::NoGradGuard no_grad;
  const salad::BlasInfo b = salad::detect_blas();
  std::printf("BLAS: %s (%s), torch threads %d\n", b.description.c_str(), b.library.c_str(),
              at::get_num_threads());
  for (int64_t n : {256, 1024, 2048}) {
    auto a = torch::randn({n, n});
    auto c = torch::randn({n, n});
    const int reps = n <= 256 ? 200 : (n <= 1024 ? 10 : 3);
    const double s = seconds_of([&] { (void)torch::mm(a, c); }, reps);
    std::printf("sgemm %4lld^3: %8.2f ms  %7.1f GFLOP/s\n", static_cast<long long>(n), s * 1e3,
                2.0 * n * n * n / s / 1e9);
  }
  // A small training step: 4-layer MLP (1024 wide, batch 256), forward, backward, AdamW.
  torch::GradMode::set_enabled(true);
  torch::manual_seed(0);
  torch::nn::Sequential mlp(torch::nn::Linear(1024, 1024), torch::nn::GELU(),
                            torch::nn::Linear(1024, 1024), torch::nn::GELU(),
                            torch::nn::Linear(1024, 1024), torch::nn::GELU(),
                            torch::nn::Linear(1024, 1024));
  torch::optim::AdamW opt(mlp->parameters(), torch::optim::AdamWOptions(1e-4));
  auto x = torch::randn({256, 1024});
  const double step = seconds_of(
      [&] {
        opt.zero_grad();
        mlp->forward(x).pow(2).mean().backward();
        opt.step();
      },
      10);
  std::printf("MLP training step (4x1024, batch 256): %.1f ms\n", step * 1e3);
  return 0;
}
