// k-means with k-means++ initialisation for Stage II's text clusters. Shape legend: N rows, D
// features, K clusters.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "salad/core/error.h"
#include "salad/select/selection.h"

namespace salad::select {

namespace {

/// A uniform double in [0, 1) from the engine's top 53 bits (the same on every standard library).
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

/// Squared distances of every row of x to every centroid, in blocks of rows: [N, K] float32.
at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& x2, const at::Tensor& c) {
  const at::Tensor c2 = c.pow(2).sum(1);  // [K]
  const int64_t n = x.size(0), block = 65536;
  at::Tensor out = at::empty({n, c.size(0)}, x.options());
  for (int64_t s = 0; s < n; s += block) {
    const int64_t b = std::min(block, n - s);
    at::Tensor d = out.narrow(0, s, b);
    at::mm_out(d, x.narrow(0, s, b), c.t());                                 // [b, K]
    d.mul_(-2).add_(x2.narrow(0, s, b).unsqueeze(1)).add_(c2.unsqueeze(0));  // |x|² − 2x·c + |c|²
    d.clamp_min_(0);
  }
  return out;
}

/// k-means++: the first centre uniformly, each next one with probability ∝ D(x)².
at::Tensor plus_plus_init(const at::Tensor& x, const at::Tensor& x2, int64_t k,
                          std::mt19937_64& rng) {
  const int64_t n = x.size(0);
  at::Tensor centres = at::empty({k, x.size(1)}, x.options());
  int64_t first = static_cast<int64_t>(uniform01(rng) * static_cast<double>(n));
  centres[0].copy_(x[std::min(first, n - 1)]);
  at::Tensor best = squared_distances(x, x2, centres.narrow(0, 0, 1)).squeeze(1);  // [N]
  for (int64_t j = 1; j < k; ++j) {
    const at::Tensor w = best.to(at::kDouble);
    const double total = w.sum().item<double>();
    int64_t pick = 0;
    if (total > 0) {
      const at::Tensor cum = w.cumsum(0);
      const double r = uniform01(rng) * total;
      pick = at::searchsorted(cum, at::Scalar(r), false, true)
                 .item<int64_t>();  // first index with cum > r
      pick = std::min(pick, n - 1);
    } else {
      pick = static_cast<int64_t>(uniform01(rng) * static_cast<double>(n));  // all rows equal
    }
    centres[j].copy_(x[pick]);
    best = at::minimum(best, squared_distances(x, x2, centres.narrow(0, j, 1)).squeeze(1));
  }
  return centres;
}

/// Capacity-constrained assignment: points in order of how much they lose by not getting their
/// nearest cluster (second-best minus best distance, largest first; ties by index) take their
/// nearest cluster with room left. Deterministic; every cluster holds at most `cap` points.
std::vector<int64_t> balanced_assign(const at::Tensor& d, int64_t cap) {
  const int64_t n = d.size(0), k = d.size(1);
  const at::Tensor dc = d.to(at::kDouble).contiguous();
  const double* p = dc.data_ptr<double>();
  std::vector<double> margin(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double b1 = std::numeric_limits<double>::infinity(), b2 = b1;
    for (int64_t j = 0; j < k; ++j) {
      const double v = p[i * k + j];
      if (v < b1) {
        b2 = b1;
        b1 = v;
      } else if (v < b2) {
        b2 = v;
      }
    }
    margin[i] = k > 1 ? b2 - b1 : 0.0;
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return margin[a] > margin[b]; });
  std::vector<int64_t> assign(static_cast<size_t>(n), -1), load(static_cast<size_t>(k), 0);
  std::vector<int64_t> ranked(static_cast<size_t>(k));
  for (const int64_t i : order) {
    std::iota(ranked.begin(), ranked.end(), 0);
    std::stable_sort(ranked.begin(), ranked.end(),
                     [&](int64_t a, int64_t b) { return p[i * k + a] < p[i * k + b]; });
    for (const int64_t j : ranked) {
      if (load[j] < cap) {
        assign[i] = j;
        ++load[j];
        break;
      }
    }
  }
  return assign;
}

}  // namespace

KMeansResult kmeans(const at::Tensor& input, const KMeansOptions& o) {
  if (!input.defined() || input.dim() != 2 || !input.is_floating_point()) {
    throw DataError("kmeans: expected a 2-D floating tensor [N, D], found " +
                    (input.defined() ? std::to_string(input.dim()) + "-D " +
                                           std::string(c10::toString(input.scalar_type()))
                                     : std::string("an undefined tensor")));
  }
  const int64_t n = input.size(0);
  if (o.k < 1 || o.k > n) {
    throw ConfigError("kmeans: k must be in [1, N]; found k = " + std::to_string(o.k) +
                      " for N = " + std::to_string(n) + " rows");
  }
  if (o.max_iters < 1) throw ConfigError("kmeans: max_iters must be >= 1");
  torch::NoGradGuard no_grad;
  at::Tensor x = input.to(at::kFloat).contiguous();  // [N, D]
  const at::Tensor finite = at::isfinite(x).all(1);
  if (!finite.all().item<bool>()) {
    const int64_t row = (~finite).nonzero()[0][0].item<int64_t>();
    throw DataError("kmeans: row " + std::to_string(row) + " has a NaN or infinite value");
  }
  if (o.cosine) x = x / x.norm(2, {1}, true).clamp_min(1e-12);  // zero rows stay zero
  const at::Tensor x2 = x.pow(2).sum(1);                        // [N]
  std::mt19937_64 rng(o.seed);
  KMeansResult r;
  r.centroids = plus_plus_init(x, x2, o.k, rng);
  const int64_t cap = (n + o.k - 1) / o.k;
  std::vector<int64_t> assign;
  double prev = std::numeric_limits<double>::infinity();
  for (int64_t it = 0; it < o.max_iters; ++it) {
    const at::Tensor d = squared_distances(x, x2, r.centroids);  // [N, K]
    at::Tensor a;
    if (o.balanced) {
      assign = balanced_assign(d, cap);
      a = at::tensor(assign);
    } else {
      a = d.argmin(1);
      assign.assign(a.data_ptr<int64_t>(), a.data_ptr<int64_t>() + n);
    }
    const double inertia = d.gather(1, a.unsqueeze(1)).to(at::kDouble).sum().item<double>();
    r.inertia_history.push_back(inertia);
    r.inertia = inertia;
    r.iters = it + 1;
    // Update: the mean of each cluster's rows; an empty cluster takes the row farthest from
    // its centroid (deterministic), which then leaves its old cluster at the next assignment.
    at::Tensor sums = at::zeros_like(r.centroids);
    sums.index_add_(0, a, x);
    const at::Tensor counts = at::bincount(a, {}, o.k).to(at::kFloat);  // [K]
    at::Tensor next = sums / counts.clamp_min(1).unsqueeze(1);
    const at::Tensor own = d.gather(1, a.unsqueeze(1)).squeeze(1).clone();  // [N]
    for (int64_t j = 0; j < o.k; ++j) {
      if (counts[j].item<float>() > 0) continue;
      const int64_t far = own.argmax().item<int64_t>();
      next[j].copy_(x[far]);
      own[far] = -1;
    }
    r.centroids = next;
    if (std::isfinite(prev) && std::abs(prev - inertia) <= o.tol * std::max(prev, 1e-30)) break;
    prev = inertia;
  }
  r.assign = assign;
  r.sizes.assign(static_cast<size_t>(o.k), 0);
  for (const int64_t c : assign) ++r.sizes[c];
  return r;
}

}  // namespace salad::select
