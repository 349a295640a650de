// Qwen2 decoder forward throughput (fp32, CPU): tokens/s and achieved GFLOP/s at a given shape,
// to compare with the machine's fp32 GEMM peak (salad_bench_gemm).
//   salad_bench_decoder [--preset mid|0.5b] [--tokens T] [--threads N]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "salad/core/blas_info.h"
#include "salad/models/qwen2.h"

int main(int argc, char** argv) {
  std::string preset = "mid";
  int64_t T = 512;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--preset"))
      preset = argv[i + 1];
    else if (!std::strcmp(argv[i], "--tokens"))
      T = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::stoi(argv[i + 1]);
  }
  if (threads > 0) torch::set_num_threads(threads);
  salad::models::Qwen2Options o;
  if (preset == "0.5b") {  // Qwen2.5-0.5B's shape
    o.vocab_size = 151936, o.hidden_size = 896, o.intermediate_size = 4864;
    o.num_hidden_layers = 24, o.num_attention_heads = 14, o.num_key_value_heads = 2;
    o.tie_word_embeddings = true;
  } else {  // "mid": a 12-layer, 768-wide model with Qwen's vocabulary
    o.vocab_size = 151936, o.hidden_size = 768, o.intermediate_size = 2048;
    o.num_hidden_layers = 12, o.num_attention_heads = 12, o.num_key_value_heads = 4;
    o.tie_word_embeddings = true;
  }
  torch::manual_seed(0);
  salad::models::Qwen2 model(o);
  model->eval();
  torch::NoGradGuard ng;
  salad::models::Qwen2Input in;
  in.input_ids = torch::randint(0, o.vocab_size, {1, T}, torch::kLong);

  // Matmul FLOPs of one forward (the attention matrices computed in full, as the
  // LibTorch 1.13 path does: T x T scores and T x T x Dh values per head).
  const double H = o.hidden_size, I = o.intermediate_size, V = o.vocab_size;
  const double Dh = H / o.num_attention_heads, kv = o.num_key_value_heads * Dh;
  const double per_token_layer = 2 * (H * H + 2 * H * kv + H * H + 3 * H * I);
  const double attention = 2.0 * 2.0 * o.num_attention_heads * T * T * Dh;
  const double flops_body = o.num_hidden_layers * (per_token_layer * T + attention);
  const double flops_head = 2 * H * V * T;

  auto time_it = [&](const std::function<void()>& f, int reps) {
    f();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  };
  const double body = time_it([&] { (void)model->forward_hidden(in); }, 3);
  const double full = time_it([&] { (void)model->forward(in); }, 3);
  const salad::BlasInfo b = salad::detect_blas();
  std::printf("BLAS: %s; torch threads %d\n", b.description.c_str(), at::get_num_threads());
  std::printf("preset %s: %lld layers, width %lld, vocab %lld, T=%lld\n", preset.c_str(),
              (long long)o.num_hidden_layers, (long long)o.hidden_size, (long long)o.vocab_size,
              (long long)T);
  std::printf("hidden states only: %8.1f ms  %8.1f tokens/s  %6.1f GFLOP/s\n", body * 1e3, T / body,
              flops_body / body / 1e9);
  std::printf("with full logits:   %8.1f ms  %8.1f tokens/s  %6.1f GFLOP/s\n", full * 1e3, T / full,
              (flops_body + flops_head) / full / 1e9);
  return 0;
}
