// Mimi's split residual vector quantizer (moshi quantization/vq.py, core_vq.py), inference only.
//
// Shape legend: B batch, F frames, D latent width, Dc codebook width, N bins, M = B * F vectors.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/mimi_internal.h"
#include "salad/core/error.h"
#include "salad/models/mimi.h"

namespace salad::models {

using mimi_detail::path_segment;

namespace {

// Rows per distance matrix: bounds the [M, N] temporary for long batches.
constexpr int64_t kRowsPerBlock = 8192;

}  // namespace

EuclideanCodebookImpl::EuclideanCodebookImpl(int64_t bins, int64_t dim) {
  embedding_sum = register_buffer("embedding_sum", torch::randn({bins, dim}));
  cluster_usage = register_buffer("cluster_usage", torch::ones({bins}));
  initialized = register_buffer("_initialized", torch::ones({1}));
  refresh();
}

void EuclideanCodebookImpl::refresh() {
  torch::NoGradGuard no_grad;
  // The epsilon matters: entries with a tiny usage (dead codes) would otherwise blow up.
  embedding_ = embedding_sum / cluster_usage.clamp_min(1e-5).unsqueeze(1);  // [N, Dc]
}

at::Tensor EuclideanCodebookImpl::encode(const at::Tensor& x) const {
  // torch.cdist + argmin as moshi and HF do (the same matmul-based distance, so near-ties break
  // the same way as often as possible); argmin returns the first minimum: ties -> lowest index.
  const at::Tensor e = embedding_.unsqueeze(0);  // [1, N, Dc]
  std::vector<at::Tensor> codes;
  for (int64_t s = 0; s < x.size(0); s += kRowsPerBlock) {
    const at::Tensor xb = x.narrow(0, s, std::min(kRowsPerBlock, x.size(0) - s)).unsqueeze(0);
    codes.push_back(at::cdist(xb, e).squeeze(0).argmin(-1));  // [Mb]
  }
  return codes.size() == 1 ? codes[0] : at::cat(codes);  // [M]
}

at::Tensor EuclideanCodebookImpl::decode(const at::Tensor& codes) const {
  std::vector<int64_t> shape(codes.sizes().begin(), codes.sizes().end());
  shape.push_back(embedding_.size(1));
  return embedding_.index_select(0, codes.flatten()).view(shape);  // [..., Dc]
}

ResidualVQImpl::ResidualVQImpl(int64_t dim, int64_t codebook_dim, int64_t bins, int64_t levels) {
  using torch::nn::Conv1dOptions;
  input_proj = register_module("input_proj",
                               torch::nn::Conv1d(Conv1dOptions(dim, codebook_dim, 1).bias(false)));
  output_proj = register_module("output_proj",
                                torch::nn::Conv1d(Conv1dOptions(codebook_dim, dim, 1).bias(false)));
  auto layers = path_segment(*this, "vq")->register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < levels; ++l) {
    auto level = std::make_shared<torch::nn::Module>();
    codebooks.push_back(level->register_module("_codebook", EuclideanCodebook(bins, codebook_dim)));
    layers->push_back(level);
  }
}

at::Tensor ResidualVQImpl::encode(const at::Tensor& latent, int64_t n) const {
  const int64_t B = latent.size(0), F = latent.size(2);
  const at::Tensor x = at::conv1d(latent, input_proj->weight);   // [B, Dc, F]
  at::Tensor residual = x.transpose(1, 2).reshape({B * F, -1});  // [M, Dc]
  std::vector<at::Tensor> codes;
  for (int64_t l = 0; l < n; ++l) {
    const at::Tensor c = codebooks[l]->encode(residual);  // [M]
    residual = residual - codebooks[l]->decode(c);        // [M, Dc]
    codes.push_back(c.view({B, F}));
  }
  return at::stack(codes, 1);  // [B, n, F]
}

at::Tensor ResidualVQImpl::decode(const at::Tensor& codes) const {
  at::Tensor sum;  // [B, F, Dc]
  for (int64_t l = 0; l < codes.size(1); ++l) {
    const at::Tensor e = codebooks[l]->decode(codes.select(1, l));
    sum = sum.defined() ? sum + e : e;  // level order, as moshi sums
  }
  return at::conv1d(sum.transpose(1, 2), output_proj->weight);  // [B, D, F]
}

SplitResidualVQImpl::SplitResidualVQImpl(const MimiOptions& o)
    : n_q_(o.n_q), n_semantic_(o.n_q_semantic) {
  rvq_first =
      register_module("rvq_first", ResidualVQ(o.dimension, o.codebook_dim, o.bins, n_semantic_));
  if (n_q_ > n_semantic_) {
    rvq_rest = register_module("rvq_rest",
                               ResidualVQ(o.dimension, o.codebook_dim, o.bins, n_q_ - n_semantic_));
  }
}

void SplitResidualVQImpl::refresh() {
  for (auto& c : rvq_first->codebooks) c->refresh();
  if (rvq_rest) {
    for (auto& c : rvq_rest->codebooks) c->refresh();
  }
}

at::Tensor SplitResidualVQImpl::encode(const at::Tensor& latent, int64_t n) const {
  if (n < 1 || n > n_q_) {
    throw Error("Mimi quantizer: n_q must be in [1, " + std::to_string(n_q_) + "], found " +
                std::to_string(n));
  }
  // Both RVQs quantise the same latent (the acoustic one does not see the semantic residual).
  const at::Tensor first = rvq_first->encode(latent, std::min(n, n_semantic_));  // [B, n1, F]
  if (n <= n_semantic_) return first;
  return at::cat({first, rvq_rest->encode(latent, n - n_semantic_)}, 1);  // [B, n, F]
}

at::Tensor SplitResidualVQImpl::decode(const at::Tensor& codes) const {
  const int64_t n = codes.dim() == 3 ? codes.size(1) : 0;
  if (n < 1 || n > n_q_ || codes.scalar_type() != at::kLong) {
    throw Error("Mimi quantizer: codes must be [B, n, F] int64 with 1 <= n <= " +
                std::to_string(n_q_) + ", found " + std::to_string(codes.dim()) + "-d " +
                std::string(c10::toString(codes.scalar_type())));
  }
  at::Tensor q = rvq_first->decode(codes.narrow(1, 0, std::min(n, n_semantic_)));  // [B, D, F]
  if (n > n_semantic_) q = q + rvq_rest->decode(codes.narrow(1, n_semantic_, n - n_semantic_));
  return q;
}

}  // namespace salad::models
