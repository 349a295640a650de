// Stage II's importance weights, the draws of texts, and embeddings from external embedders.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/select/selection.h"

namespace salad::select {

namespace fs = std::filesystem;

namespace {

double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/// A Fenwick tree over cluster weights: O(log K) updates and weighted draws.
class WeightTree {
 public:
  explicit WeightTree(const std::vector<double>& w) : t_(w.size() + 1, 0.0), w_(w) {
    for (size_t i = 0; i < w.size(); ++i) add(i, w[i]);
  }
  double total() const {
    double s = 0;
    for (size_t i = t_.size() - 1; i > 0; i -= i & (~i + 1)) s += t_[i];
    return s;
  }
  void zero(size_t i) {
    add(i, -w_[i]);
    w_[i] = 0;
  }
  /// The index whose cumulative range holds r in [0, total).
  size_t find(double r) const {
    size_t pos = 0, step = 1;
    while (step * 2 < t_.size()) step *= 2;
    for (; step > 0; step /= 2) {
      if (pos + step < t_.size() && t_[pos + step] <= r) {
        pos += step;
        r -= t_[pos];
      }
    }
    // pos is the count of leading entries whose sum is <= r: the answer is pos, skipping any
    // zero-weight entries rounding may land on.
    size_t i = std::min(pos, w_.size() - 1);
    while (w_[i] <= 0 && i + 1 < w_.size()) ++i;
    while (w_[i] <= 0 && i > 0) --i;
    return i;
  }

 private:
  void add(size_t i, double v) {
    for (size_t j = i + 1; j < t_.size(); j += j & (~j + 1)) t_[j] += v;
  }
  std::vector<double> t_, w_;
};

/// The .npy format: magic, version, header length, a Python dict literal, C-order data.
at::Tensor read_npy(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError("cannot read embeddings file " + path.string());
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    throw DataError(path.string() + ": not a .npy file (bad magic)");
  }
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t hlen = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) throw DataError(path.string() + ": truncated");
    hlen = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) throw DataError(path.string() + ": truncated");
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw DataError(path.string() + ": unsupported .npy version " + std::to_string(major));
  }
  std::string header(hlen, '\0');
  if (!f.read(header.data(), hlen)) throw DataError(path.string() + ": truncated header");
  auto field = [&](const std::string& key) {
    const size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) throw DataError(path.string() + ": .npy header has no " + key);
    return header.substr(header.find(':', k) + 1);
  };
  const std::string descr = field("descr");
  at::ScalarType dtype;
  size_t item = 0;
  if (descr.find("'<f4'") != std::string::npos) {
    dtype = at::kFloat, item = 4;
  } else if (descr.find("'<f2'") != std::string::npos) {
    dtype = at::kHalf, item = 2;
  } else if (descr.find("'<f8'") != std::string::npos) {
    dtype = at::kDouble, item = 8;
  } else {
    throw DataError(path.string() + ": .npy dtype must be '<f4', '<f2' or '<f8'; found " +
                    descr.substr(0, descr.find(',')));
  }
  if (field("fortran_order").find("False") == std::string::npos) {
    throw DataError(path.string() + ": .npy must be C order (fortran_order False)");
  }
  const std::string shape = field("shape");
  const size_t open = shape.find('('), close = shape.find(')');
  std::vector<int64_t> dims;
  std::stringstream ss(shape.substr(open + 1, close - open - 1));
  for (std::string d; std::getline(ss, d, ',');) {
    if (d.find_first_not_of(" ") != std::string::npos) dims.push_back(std::stoll(d));
  }
  if (dims.size() != 2) {
    throw DataError(path.string() + ": embeddings must be 2-D [N, D]; found " +
                    std::to_string(dims.size()) + "-D");
  }
  at::Tensor t = at::empty(dims, at::TensorOptions().dtype(dtype));
  const size_t bytes = static_cast<size_t>(dims[0] * dims[1]) * item;
  if (!f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes))) {
    throw DataError(path.string() + ": truncated: expected " + std::to_string(bytes) +
                    " bytes of data for shape [" + std::to_string(dims[0]) + ", " +
                    std::to_string(dims[1]) + "]");
  }
  return t;
}

}  // namespace

std::vector<double> target_weights(const std::vector<double>& p_web, const std::vector<double>& m,
                                   double gamma) {
  if (p_web.size() != m.size()) {
    throw DataError("target_weights: " + std::to_string(p_web.size()) + " P_web values but " +
                    std::to_string(m.size()) + " M values");
  }
  if (!(gamma >= 0) || !std::isfinite(gamma)) {
    throw DataError("target_weights: gamma must be a finite number >= 0; found " + num(gamma));
  }
  std::vector<double> w(p_web.size());
  double total = 0;
  for (size_t c = 0; c < w.size(); ++c) {
    if (!(p_web[c] >= 0) || !std::isfinite(p_web[c]) || !(m[c] >= 0) || !std::isfinite(m[c])) {
      throw DataError("target_weights: cluster " + std::to_string(c) + " has P_web " +
                      num(p_web[c]) + ", M " + num(m[c]) + " (expected finite values >= 0)");
    }
    w[c] = p_web[c] * (gamma == 0 ? 1.0 : std::pow(m[c], gamma));
    total += w[c];
  }
  if (!(total > 0)) throw DataError("target_weights: every cluster has weight 0");
  for (double& v : w) v /= total;
  return w;
}

std::vector<Draw> draw_texts(const std::vector<double>& weights,
                             const std::vector<std::vector<int64_t>>& members, uint64_t seed,
                             const std::function<bool(const std::vector<Draw>&)>& enough) {
  if (weights.size() != members.size()) {
    throw DataError("draw_texts: " + std::to_string(weights.size()) + " weights but " +
                    std::to_string(members.size()) + " clusters");
  }
  std::vector<double> w(weights.size());
  for (size_t c = 0; c < w.size(); ++c) w[c] = members[c].empty() ? 0.0 : std::max(0.0, weights[c]);
  WeightTree tree(w);
  int64_t active = std::count_if(w.begin(), w.end(), [](double v) { return v > 0; });
  std::vector<std::vector<int64_t>> left = members;  // undrawn members; drawn ones swapped out
  std::mt19937_64 rng(seed);
  std::vector<Draw> out;
  while (active > 0 && !enough(out)) {
    const size_t c = tree.find(uniform01(rng) * tree.total());
    std::vector<int64_t>& l = left[c];
    const size_t j = static_cast<size_t>(uniform01(rng) * static_cast<double>(l.size()));
    const size_t pick = std::min(j, l.size() - 1);
    out.push_back({static_cast<int64_t>(c), l[pick]});
    l[pick] = l.back();
    l.pop_back();
    if (l.empty()) {
      tree.zero(c);
      --active;
    }
  }
  return out;
}

at::Tensor read_embeddings(const fs::path& path, int64_t expected_rows) {
  at::Tensor e;
  if (path.extension() == ".npy") {
    e = read_npy(path);
  } else if (path.extension() == ".safetensors") {
    const auto file = safetensors::File::open(path);
    try {
      e = file->get("embeddings");
    } catch (const std::exception& ex) {
      throw DataError(path.string() + ": no tensor named 'embeddings' (" + ex.what() + ")");
    }
    if (e.dim() != 2) {
      throw DataError(path.string() + ": 'embeddings' must be 2-D [N, D]; found " +
                      std::to_string(e.dim()) + "-D");
    }
  } else {
    throw ConfigError("embeddings file " + path.string() +
                      ": expected a .npy or .safetensors file");
  }
  if (expected_rows >= 0 && e.size(0) != expected_rows) {
    throw DataError(path.string() + ": " + std::to_string(e.size(0)) +
                    " embedding rows but the corpus has " + std::to_string(expected_rows) +
                    " texts (one row per text, in corpus order)");
  }
  return e.to(at::kFloat).contiguous().clone();
}

}  // namespace salad::select
