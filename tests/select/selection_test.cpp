// Stage II selection math: k-means, importance weights, draws under a budget, embeddings files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/select/selection.h"
#include "test_util.h"

namespace salad::select {
namespace {

/// `sizes[b]` points around blob b's centre (16-D, centres far apart), in blob order.
at::Tensor blobs(const std::vector<int64_t>& sizes, uint64_t seed, std::vector<int64_t>* truth) {
  torch::manual_seed(seed);
  std::vector<at::Tensor> parts;
  for (size_t b = 0; b < sizes.size(); ++b) {
    const at::Tensor centre = at::randn({1, 16}) * 10;
    parts.push_back(centre + 0.3 * at::randn({sizes[b], 16}));
    for (int64_t i = 0; i < sizes[b]; ++i) truth->push_back(static_cast<int64_t>(b));
  }
  return at::cat(parts);
}

/// Every planted blob maps to one found cluster and vice versa: the contingency table has one
/// non-zero entry per row and per column.
void expect_recovers(const std::vector<int64_t>& truth, const std::vector<int64_t>& found,
                     int64_t k) {
  std::map<int64_t, std::set<int64_t>> by_truth, by_found;
  for (size_t i = 0; i < truth.size(); ++i) {
    by_truth[truth[i]].insert(found[i]);
    by_found[found[i]].insert(truth[i]);
  }
  EXPECT_EQ(static_cast<int64_t>(by_found.size()), k);
  for (const auto& [t, f] : by_truth) EXPECT_EQ(f.size(), 1u) << "blob " << t << " split";
  for (const auto& [f, t] : by_found) EXPECT_EQ(t.size(), 1u) << "cluster " << f << " mixes";
}

TEST(KMeans, RecoversPlantedClustersEuclideanAndCosine) {
  std::vector<int64_t> truth;
  const at::Tensor x = blobs({100, 100, 100, 100, 100, 100}, 1, &truth);
  for (const bool cosine : {false, true}) {
    KMeansOptions o;
    o.k = 6;
    o.seed = 7;
    o.cosine = cosine;
    const KMeansResult r = kmeans(x, o);
    SCOPED_TRACE(cosine ? "cosine" : "euclidean");
    expect_recovers(truth, r.assign, 6);
    for (size_t i = 1; i < r.inertia_history.size(); ++i) {
      EXPECT_LE(r.inertia_history[i], r.inertia_history[i - 1] * (1 + 1e-6)) << "iteration " << i;
    }
  }
}

TEST(KMeans, DeterministicForASeed) {
  std::vector<int64_t> truth;
  const at::Tensor x = at::randn({500, 8});  // no structure: the init decides
  KMeansOptions o;
  o.k = 10;
  o.seed = 3;
  const KMeansResult a = kmeans(x, o), b = kmeans(x, o);
  EXPECT_EQ(a.assign, b.assign);
  EXPECT_TRUE(at::equal(a.centroids, b.centroids));
  o.seed = 4;
  const KMeansResult c = kmeans(x, o);
  EXPECT_NE(a.assign, c.assign) << "another seed gave the same clustering";
}

TEST(KMeans, BalancedCapsClusterSizes) {
  std::vector<int64_t> truth;
  const at::Tensor x = blobs({50, 100, 450}, 2, &truth);
  KMeansOptions o;
  o.k = 3;
  o.seed = 1;
  const KMeansResult plain = kmeans(x, o);
  EXPECT_EQ(*std::max_element(plain.sizes.begin(), plain.sizes.end()), 450);
  o.balanced = true;
  const KMeansResult bal = kmeans(x, o);
  for (const int64_t s : bal.sizes) EXPECT_LE(s, 200);
  EXPECT_EQ(std::accumulate(bal.sizes.begin(), bal.sizes.end(), int64_t{0}), 600);
}

TEST(KMeans, BadInputsAreNamed) {
  KMeansOptions o;
  o.k = 0;
  EXPECT_THROW(kmeans(at::randn({5, 2}), o), ConfigError);
  o.k = 6;
  try {
    kmeans(at::randn({5, 2}), o);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("N = 5"), std::string::npos) << e.what();
  }
  o.k = 2;
  at::Tensor x = at::randn({5, 2});
  x[3][1] = std::nan("");
  try {
    kmeans(x, o);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("row 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kmeans(at::randn({5}), o), DataError);
}

TEST(TargetWeights, GammaZeroIsPWebAndGammaFiveByHand) {
  const std::vector<double> p = {0.5, 0.3, 0.2}, m = {1.0, 2.0, 0.5};
  EXPECT_EQ(target_weights(p, m, 0.0), p);
  const std::vector<double> w = target_weights(p, m, 5.0);
  const double z = 0.5 * 1 + 0.3 * 32 + 0.2 * std::pow(0.5, 5);
  EXPECT_NEAR(w[0], 0.5 / z, 1e-15);
  EXPECT_NEAR(w[1], 9.6 / z, 1e-15);
  EXPECT_NEAR(w[2], 0.2 * std::pow(0.5, 5) / z, 1e-15);
  EXPECT_THROW(target_weights(p, {1.0}, 5), DataError);
  EXPECT_THROW(target_weights(p, {1.0, -1.0, 1.0}, 5), DataError);
  EXPECT_THROW(target_weights({0.0, 0.0}, {1.0, 1.0}, 5), DataError);
}

/// Pearson's chi-square of `counts` against probabilities `p` (all cells expected >= 5).
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& p, int64_t n) {
  double x = 0;
  for (size_t c = 0; c < p.size(); ++c) {
    const double e = p[c] * static_cast<double>(n);
    x += (counts[c] - e) * (counts[c] - e) / e;
  }
  return x;
}
/// The chi-square critical value at p = 0.001 (Wilson-Hilferty): z = 3.0902.
double chi_critical(int64_t dof) {
  const double k = static_cast<double>(dof), z = 3.0902;
  return k * std::pow(1 - 2 / (9 * k) + z * std::sqrt(2 / (9 * k)), 3);
}

std::vector<std::vector<int64_t>> big_clusters(int64_t k, int64_t size) {
  std::vector<std::vector<int64_t>> m(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < size; ++i) m[c].push_back(c * size + i);
  return m;
}

TEST(DrawTexts, ClusterCountsMatchTheWeights) {
  const std::vector<double> p_web = {0.1, 0.2, 0.3, 0.15, 0.25};
  const std::vector<double> m = {1.0, 1.3, 0.7, 2.0, 1.1};
  const auto members = big_clusters(5, 100000);
  const int64_t n = 20000;
  for (const double gamma : {5.0, 0.0}) {
    const std::vector<double> w = target_weights(p_web, m, gamma);
    const auto draws =
        draw_texts(w, members, 11, [&](const std::vector<Draw>& d) { return d.size() >= n; });
    ASSERT_EQ(static_cast<int64_t>(draws.size()), n);
    std::vector<int64_t> counts(5, 0);
    for (const Draw& d : draws) ++counts[d.cluster];
    const double x = chi_square(counts, w, n);
    EXPECT_LT(x, chi_critical(4)) << "gamma " << gamma;
    if (gamma == 0) {
      EXPECT_LT(chi_square(counts, p_web, n), chi_critical(4)) << "gamma 0 must follow P_web";
    } else {
      EXPECT_GT(chi_square(counts, p_web, n), 100 * chi_critical(4))
          << "gamma 5 should differ from P_web";
    }
  }
}

TEST(DrawTexts, NoTextTwiceExhaustedClustersDropOutAndDeterministic) {
  std::vector<std::vector<int64_t>> members = {{0, 1, 2}, {3, 4, 5, 6, 7, 8, 9, 10}};
  const std::vector<double> w = {0.9, 0.1};
  const auto all = draw_texts(w, members, 5, [](const std::vector<Draw>&) { return false; });
  ASSERT_EQ(all.size(), 11u) << "every text is drawn once, then it stops";
  std::set<int64_t> seen;
  for (const Draw& d : all) {
    EXPECT_TRUE(seen.insert(d.text).second) << "text " << d.text << " drawn twice";
    const auto& m = members[d.cluster];
    EXPECT_NE(std::find(m.begin(), m.end(), d.text), m.end());
  }
  // The heavy small cluster is exhausted early; after it, only cluster 1.
  int64_t last0 = 0;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].cluster == 0) last0 = static_cast<int64_t>(i);
  EXPECT_LT(last0, 8);
  const auto again = draw_texts(w, members, 5, [](const std::vector<Draw>&) { return false; });
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(again[i].text, all[i].text);
}

TEST(DrawTexts, BudgetIsMetByTheLastDraw) {
  const auto members = big_clusters(4, 50);
  std::vector<double> seconds(200);
  for (size_t i = 0; i < seconds.size(); ++i) seconds[i] = 1.0 + static_cast<double>(i % 7);
  const double budget = 123.0;
  auto total = [&](const std::vector<Draw>& d) {
    double s = 0;
    for (const Draw& x : d) s += seconds[x.text];
    return s;
  };
  const auto d = draw_texts({0.4, 0.3, 0.2, 0.1}, members, 9,
                            [&](const std::vector<Draw>& d) { return total(d) >= budget; });
  EXPECT_GE(total(d), budget);
  EXPECT_LT(total(d) - seconds[d.back().text], budget);
}

void write_npy(const std::filesystem::path& p, const std::string& descr, int64_t n, int64_t dim,
               const void* data, size_t item) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" +
                       std::to_string(n) + ", " + std::to_string(dim) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(p, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  f.put(static_cast<char>(len & 0xff));
  f.put(static_cast<char>(len >> 8));
  f << header;
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n * dim * item));
}

TEST(ReadEmbeddings, NpyAndSafetensorsRoundTripAndErrors) {
  test::TempDir d;
  const at::Tensor e = at::randn({7, 5});
  write_npy(d.path() / "e4.npy", "<f4", 7, 5, e.data_ptr(), 4);
  EXPECT_TRUE(at::equal(read_embeddings(d.path() / "e4.npy", 7), e));
  const at::Tensor h = e.to(at::kHalf);
  write_npy(d.path() / "e2.npy", "<f2", 7, 5, h.data_ptr(), 2);
  EXPECT_TRUE(at::equal(read_embeddings(d.path() / "e2.npy"), h.to(at::kFloat)));
  safetensors::save(d.path() / "e.safetensors", {{"embeddings", e}});
  EXPECT_TRUE(at::equal(read_embeddings(d.path() / "e.safetensors", 7), e));
  try {
    read_embeddings(d.path() / "e4.npy", 8);
    FAIL();
  } catch (const DataError& ex) {
    EXPECT_NE(std::string(ex.what()).find("7 embedding rows but the corpus has 8"),
              std::string::npos)
        << ex.what();
  }
  const at::Tensor nine = at::randn({9, 5});
  write_npy(d.path() / "short.npy", "<f4", 9, 5, nine.data_ptr(), 4);
  const auto full = std::filesystem::file_size(d.path() / "short.npy");
  std::filesystem::resize_file(d.path() / "short.npy", full - 2 * 5 * 4);  // 7 of 9 rows there
  EXPECT_THROW(read_embeddings(d.path() / "short.npy"), DataError);
  EXPECT_THROW(read_embeddings(d.path() / "e.txt"), ConfigError);
}

}  // namespace
}  // namespace salad::select
