// Stage II active selection (DESIGN §3, paper §3.3): cluster the broad text corpus, weight each
// cluster by its share of the corpus and the Stage I model's misalignment on it, and draw texts.
//   P_web(c)    = |cluster c| / N
//   P_target(c) ∝ P_web(c) · M(c)^γ      (γ = 0: P_web itself; γ = 5: the paper's default)
// Clusters are drawn by P_target with replacement, texts uniformly within a drawn cluster
// without replacement (an exhausted cluster drops out and the rest are renormalised), until the
// audio budget is met.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace salad::select {

struct KMeansOptions {
  int64_t k = 128;
  int64_t max_iters = 50;
  double tol = 1e-6;  ///< stop when the relative inertia change is below this
  uint64_t seed = 0;
  bool balanced = false;  ///< cap each cluster at ceil(N / k) points (greedy by distance)
  bool cosine = true;     ///< L2-normalise rows first (spherical k-means on embeddings)
};

struct KMeansResult {
  at::Tensor centroids;                 ///< [K, D] float32
  std::vector<int64_t> assign;          ///< [N] cluster of each row
  std::vector<int64_t> sizes;           ///< [K]
  double inertia = 0;                   ///< Σ squared distance to the assigned centroid
  std::vector<double> inertia_history;  ///< inertia of each iteration's assignment
  int64_t iters = 0;
};

/// k-means with k-means++ initialisation; deterministic for a seed (and thread count).
/// x: [N, D] floating. Throws ConfigError when k < 1 or k > N, naming both.
KMeansResult kmeans(const at::Tensor& x, const KMeansOptions& o);

/// P_target(c) ∝ p_web(c) · m(c)^γ, normalised. Clusters with p_web = 0 get 0. Throws
/// DataError when sizes differ, a value is negative or non-finite, or every weight is 0.
std::vector<double> target_weights(const std::vector<double>& p_web, const std::vector<double>& m,
                                   double gamma);

/// One drawn text.
struct Draw {
  int64_t cluster = 0;
  int64_t text = 0;  ///< index into the corpus
};

/// Draws texts: a cluster by `weights`, then a text uniformly among its not yet drawn members
/// (`members[c]` = corpus indices), until `enough(drawn so far)` is true or every cluster with
/// weight > 0 is exhausted. Deterministic for a seed.
std::vector<Draw> draw_texts(const std::vector<double>& weights,
                             const std::vector<std::vector<int64_t>>& members, uint64_t seed,
                             const std::function<bool(const std::vector<Draw>&)>& enough);

/// Embeddings computed outside salad, one row per corpus text in corpus order: a .npy file
/// (float32/float16/float64, C order, 2-D) or a .safetensors file with a 2-D tensor named
/// "embeddings". Returns [N, D] float32. Throws IoError / DataError naming the file, and
/// DataError when the row count is not `expected_rows` (when >= 0).
at::Tensor read_embeddings(const std::filesystem::path& path, int64_t expected_rows = -1);

}  // namespace salad::select
