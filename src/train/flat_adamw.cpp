#include "salad/train/flat_adamw.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "salad/core/error.h"
#include "salad/models/speech_lm.h"

namespace salad::train {

namespace {

constexpr int64_t kAlign = 64;         // elements; shard boundaries and padding
constexpr int64_t kChunk = 1LL << 24;  // elements per vectorised update (bounds temporaries)

std::string millions(int64_t n) {
  char buf[32];
  if (n >= 1000000000) {
    std::snprintf(buf, sizeof buf, "%.2f B", static_cast<double>(n) / 1e9);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f M", static_cast<double>(n) / 1e6);
  }
  return buf;
}

}  // namespace

FlatParams::FlatParams(const std::vector<models::ParamGroup>& groups, c10::Device device,
                       int64_t world_size) {
  // Tied tensors (listed under two names) are taken once, under their first name.
  std::unordered_set<const void*> seen;
  int64_t offset = 0;
  for (const auto& g : groups) {
    for (const bool decay : {true, false}) {
      for (const auto& [name, t] : g.params) {
        if (!t.requires_grad() || (t.dim() >= 2) != decay) continue;
        if (!seen.insert(t.unsafeGetTensorImpl()).second) continue;
        FlatEntry e;
        e.name = name;
        e.group = g.name;
        e.decay = decay;
        e.offset = offset;
        e.numel = t.numel();
        e.shape = t.sizes().vec();
        offset += e.numel;
        if (segments_.empty() || segments_.back().group != e.group ||
            segments_.back().decay != e.decay) {
          segments_.push_back({e.group, e.decay, e.offset, e.offset});
        }
        segments_.back().end = offset;
        entries_.push_back(std::move(e));
        params_.push_back(t);
      }
    }
  }
  numel_ = offset;
  const int64_t unit = kAlign * std::max<int64_t>(1, world_size);
  padded_ = std::max<int64_t>(unit, (numel_ + unit - 1) / unit * unit);
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  values_ = at::zeros({padded_}, opts);
  grads_ = at::zeros({padded_}, opts);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const FlatEntry& e = entries_[i];
    at::Tensor view = values_.narrow(0, e.offset, e.numel).view(e.shape);
    view.copy_(params_[i]);
    params_[i].set_data(view);
  }
  rebind_grads();
}

void FlatParams::rebind_grads() {
  for (size_t i = 0; i < params_.size(); ++i) {
    const FlatEntry& e = entries_[i];
    params_[i].mutable_grad() = grads_.narrow(0, e.offset, e.numel).view(e.shape);
  }
}

void FlatParams::zero_grad() { grads_.zero_(); }

double FlatParams::grad_norm() const {
  torch::NoGradGuard no_grad;
  // at::norm of a large float32 CPU tensor accumulates in float32 (LibTorch 1.13): 4e-3 relative
  // error at 43 M elements. The squares are summed in float64 instead, a block at a time so the
  // float64 copy stays small (8 MiB on CPU, 128 MiB on a GPU, where launches cost more).
  const int64_t block = grads_.is_cuda() ? (int64_t{1} << 24) : (int64_t{1} << 20);
  at::Tensor sum = at::zeros({}, grads_.options().dtype(at::kDouble));
  for (int64_t s = 0; s < padded_; s += block) {
    const at::Tensor d = grads_.narrow(0, s, std::min(block, padded_ - s)).to(at::kDouble);
    sum.add_(at::dot(d, d));
  }
  return std::sqrt(sum.item<double>());
}

int64_t FlatParams::group_numel(const std::string& group) const {
  int64_t n = 0;
  for (const auto& s : segments_) {
    if (s.group == group) n += s.end - s.begin;
  }
  return n;
}

safetensors::NamedTensors FlatParams::named_values() const {
  safetensors::NamedTensors out;
  for (size_t i = 0; i < entries_.size(); ++i) {
    out.emplace_back(entries_[i].name, params_[i].detach());
  }
  return out;
}

std::string FlatParams::describe() const {
  std::string s;
  std::vector<std::string> names;
  for (const auto& seg : segments_) {
    if (std::find(names.begin(), names.end(), seg.group) == names.end()) names.push_back(seg.group);
  }
  for (const auto& g : names) {
    int64_t decay = 0;
    for (const auto& seg : segments_) {
      if (seg.group == g && seg.decay) decay += seg.end - seg.begin;
    }
    if (!s.empty()) s += ", ";
    s += g + " " + millions(group_numel(g)) + " (" + millions(decay) + " decayed)";
  }
  return s.empty() ? "no trainable parameters" : s;
}

FlatAdamW::FlatAdamW(FlatParams& params, AdamWOptions o, int64_t shard_begin, int64_t shard_end)
    : p_(params), o_(o), begin_(shard_begin), end_(shard_end) {
  if (begin_ < 0 || end_ < begin_ || end_ > p_.padded()) {
    throw Error("FlatAdamW: shard [" + std::to_string(begin_) + ", " + std::to_string(end_) +
                ") outside the flat buffer of " + std::to_string(p_.padded()));
  }
  exp_avg_ = at::zeros({end_ - begin_}, p_.values().options());
  exp_avg_sq_ = at::zeros({end_ - begin_}, p_.values().options());
}

void FlatAdamW::step(const std::map<std::string, double>& lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bc1 = 1.0 - std::pow(o_.beta1, static_cast<double>(step_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o_.beta2, static_cast<double>(step_)));
  for (const auto& seg : p_.segments()) {
    const int64_t lo = std::max(seg.begin, begin_), hi = std::min(seg.end, end_);
    if (lo >= hi) continue;
    const auto it = lr.find(seg.group);
    if (it == lr.end()) throw Error("FlatAdamW: no learning rate for group '" + seg.group + "'");
    const double rate = it->second;
    for (int64_t c = lo; c < hi; c += kChunk) {
      const int64_t n = std::min(kChunk, hi - c);
      at::Tensor p = p_.values().narrow(0, c, n);
      const at::Tensor g = p_.grads().narrow(0, c, n);
      at::Tensor m = exp_avg_.narrow(0, c - begin_, n);
      at::Tensor v = exp_avg_sq_.narrow(0, c - begin_, n);
      if (seg.decay && o_.weight_decay != 0.0) p.mul_(1.0 - rate * o_.weight_decay);
      m.mul_(o_.beta1).add_(g, 1.0 - o_.beta1);
      v.mul_(o_.beta2).addcmul_(g, g, 1.0 - o_.beta2);
      const at::Tensor denom = (v.sqrt() / bc2_sqrt).add_(o_.eps);
      p.addcdiv_(m, denom, -rate / bc1);
    }
  }
}

safetensors::NamedTensors FlatAdamW::state() const {
  return {{"adamw.exp_avg", exp_avg_},
          {"adamw.exp_avg_sq", exp_avg_sq_},
          {"adamw.step", at::full({1}, step_, at::TensorOptions().dtype(at::kLong))}};
}

void FlatAdamW::load_state(const safetensors::Checkpoint& ckpt, const std::string& where) {
  for (const char* name : {"adamw.exp_avg", "adamw.exp_avg_sq", "adamw.step"}) {
    if (!ckpt.contains(name)) {
      throw CheckpointError(where + ": optimizer state has no tensor '" + name + "'");
    }
  }
  const at::Tensor m = ckpt.get("adamw.exp_avg"), v = ckpt.get("adamw.exp_avg_sq");
  for (const auto* t : {&m, &v}) {
    if (t->dim() != 1 || t->size(0) != end_ - begin_) {
      throw CheckpointError(where + ": optimizer shard has " + std::to_string(t->numel()) +
                            " elements, this run expects " + std::to_string(end_ - begin_) +
                            " (another model shape, world size or dist.zero1?)");
    }
  }
  torch::NoGradGuard no_grad;
  exp_avg_.copy_(m);
  exp_avg_sq_.copy_(v);
  step_ = ckpt.get("adamw.step").item<int64_t>();
}

}  // namespace salad::train
