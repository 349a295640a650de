// Peak tensor memory and time of the chunked distillation loss against the naive full-logits
// version (DistillationLoss::reference), forward + backward, fp32 on CPU.
//
// Every CPU tensor allocation is counted exactly (tests/cpu_memory_counter.h). A run's figure is
// the peak of live tensor bytes above the bytes alive before it (the inputs: hidden states and
// both heads), so it includes the gradients the run creates ([N, Ds] and the [V, Ds] head
// gradient). The naive version needs several [N, V] buffers, too much at N = 8192 for this
// machine, so it runs at smaller N; its peak is fitted as a + b·N and extrapolated.
//
//   salad_bench_loss [--vocab V] [--hidden D] [--positions N] [--naive-positions N1,N2,...]
//                    [--chunk C] [--alpha A] [--temperature T] [--threads K] [--skip-full 1]
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "../tests/cpu_memory_counter.h"
#include "salad/core/blas_info.h"
#include "salad/loss/distillation.h"

namespace {

using salad::loss::DistillationLoss;
using salad::loss::LossParts;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(std::stoll(item));
  }
  return out;
}

struct Run {
  int64_t positions = 0;
  int64_t peak = 0;  // bytes above the inputs
  double seconds = 0;
  double loss = 0, kl = 0, nll = 0;
  at::Tensor grad_hidden, grad_head;
};

/// One forward + backward of `naive ? reference : chunked` on fresh gradients.
Run measure(salad::test::CpuMemoryCounter& counter, const DistillationLoss& loss, bool naive,
            const at::Tensor& hs, const at::Tensor& ws, const at::Tensor& ht, const at::Tensor& wt,
            const at::Tensor& y, bool keep_grads) {
  hs.mutable_grad().reset();
  ws.mutable_grad().reset();
  const int64_t base = counter.live_bytes();
  counter.reset_peak();
  const auto t0 = std::chrono::steady_clock::now();
  Run r;
  {
    const double normalizer = static_cast<double>(hs.size(0));
    const LossParts parts =
        naive ? loss.reference(hs, ws, ht, wt, y, normalizer) : loss(hs, ws, ht, wt, y, normalizer);
    parts.loss.backward();
    r.loss = parts.loss.item<double>();
    r.kl = parts.kl_sum.item<double>();
    r.nll = parts.nll_sum.item<double>();
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.peak = counter.peak_bytes() - base;
  r.positions = hs.size(0);
  if (keep_grads) r.grad_hidden = hs.grad(), r.grad_head = ws.grad();
  hs.mutable_grad().reset();
  ws.mutable_grad().reset();
  return r;
}

void print_run(const char* kind, const Run& r, const char* note = "") {
  std::printf(
      "%-8s N=%5lld  peak above inputs %7.3f GiB (%8.1f KiB/position)  fwd+bwd %7.1f s  "
      "loss %.8f%s\n",
      kind, (long long)r.positions, r.peak / kGiB, r.peak / 1024.0 / r.positions, r.seconds, r.loss,
      note);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t vocab = 151936, hidden = 2048, positions = 8192, chunk = 1024;
  std::vector<int64_t> naive_positions = {512, 1024, 2048};
  double alpha = 0.5, temperature = 1.0;
  int threads = 0;
  bool skip_full = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--vocab")
      vocab = std::stoll(value);
    else if (flag == "--hidden")
      hidden = std::stoll(value);
    else if (flag == "--positions")
      positions = std::stoll(value);
    else if (flag == "--naive-positions")
      naive_positions = parse_list(value);
    else if (flag == "--chunk")
      chunk = std::stoll(value);
    else if (flag == "--alpha")
      alpha = std::stod(value);
    else if (flag == "--temperature")
      temperature = std::stod(value);
    else if (flag == "--threads")
      threads = std::stoi(value);
    else if (flag == "--skip-full")
      skip_full = value != "0";
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const int used_threads = salad::configure_threads(threads);
  salad::test::CpuMemoryCounter counter;  // before any tensor, so every storage is counted

  salad::loss::DistillationOptions o;
  o.alpha = alpha;
  o.temperature = temperature;
  o.chunk_size = chunk;
  const DistillationLoss loss(o);

  const salad::BlasInfo b = salad::detect_blas();
  std::printf("BLAS: %s; torch threads %d\n", b.description.c_str(), used_threads);
  std::printf("V=%lld, D=%lld (student and teacher), fp32, alpha %g, temperature %g, chunk %lld\n",
              (long long)vocab, (long long)hidden, alpha, temperature, (long long)chunk);

  torch::manual_seed(0);
  const double head_std = 1.5 / std::sqrt(static_cast<double>(hidden));  // logits of std ~1.5
  const at::Tensor ws = (at::randn({vocab, hidden}) * head_std).requires_grad_();
  const at::Tensor wt = at::randn({vocab, hidden}) * head_std;
  auto inputs = [&](int64_t n) {
    return std::vector<at::Tensor>{at::randn({n, hidden}).requires_grad_(), at::randn({n, hidden}),
                                   at::randint(0, vocab, {n}, at::TensorOptions(at::kLong))};
  };
  std::printf("inputs: heads %.3f GiB each\n\n", vocab * hidden * 4 / kGiB);

  // Naive and chunked at the same small N; values compared at the largest.
  std::vector<Run> naive_runs;
  for (size_t i = 0; i < naive_positions.size(); ++i) {
    const int64_t n = naive_positions[i];
    const bool last = i + 1 == naive_positions.size();
    const std::vector<at::Tensor> in = inputs(n);
    naive_runs.push_back(measure(counter, loss, true, in[0], ws, in[1], wt, in[2], last));
    print_run("naive", naive_runs.back());
    const Run c = measure(counter, loss, false, in[0], ws, in[1], wt, in[2], last);
    print_run("chunked", c);
    if (last) {
      const Run& r = naive_runs.back();
      std::printf(
          "\nchunked vs naive at N=%lld: loss rel diff %.3g, kl_sum rel diff %.3g, nll_sum "
          "rel diff %.3g\n  max |grad diff|: student_hidden %.3g (max |grad| %.3g), "
          "student_head %.3g (max |grad| %.3g)\n",
          (long long)n, std::abs(c.loss - r.loss) / std::abs(r.loss),
          std::abs(c.kl - r.kl) / std::abs(r.kl), std::abs(c.nll - r.nll) / std::abs(r.nll),
          (c.grad_hidden - r.grad_hidden).abs().max().item<double>(),
          r.grad_hidden.abs().max().item<double>(),
          (c.grad_head - r.grad_head).abs().max().item<double>(),
          r.grad_head.abs().max().item<double>());
    }
  }

  // Least-squares line through the naive peaks.
  double a = 0, slope = 0;
  if (naive_runs.size() >= 2) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    const double m = static_cast<double>(naive_runs.size());
    for (const Run& r : naive_runs) {
      sx += r.positions, sy += r.peak, sxx += double(r.positions) * r.positions;
      sxy += double(r.positions) * r.peak;
    }
    slope = (m * sxy - sx * sy) / (m * sxx - sx * sx);
    a = (sy - slope * sx) / m;
    double worst = 0;
    for (const Run& r : naive_runs) {
      worst = std::max(worst, std::abs(a + slope * r.positions - r.peak) / r.peak);
    }
    std::printf(
        "\nnaive peak fit: %.3f GiB + %.1f KiB/position (%.2f x 4V bytes/position), "
        "worst fit error %.2g%%\n",
        a / kGiB, slope / 1024, slope / (4.0 * vocab), 100 * worst);
    std::printf("naive at N=%lld: %.2f GiB (EXTRAPOLATED from the fit, not measured)\n",
                (long long)positions, (a + slope * positions) / kGiB);
  }

  if (!skip_full) {
    const std::vector<at::Tensor> in = inputs(positions);
    const Run c = measure(counter, loss, false, in[0], ws, in[1], wt, in[2], false);
    std::printf("\n");
    print_run("chunked", c, "  (measured)");
    if (naive_runs.size() >= 2) {
      const double naive = a + slope * positions;
      std::printf("chunked / naive (extrapolated) at N=%lld: %.1f%%\n", (long long)positions,
                  100.0 * c.peak / naive);
    }
  }
  return 0;
}
