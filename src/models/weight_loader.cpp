#include "salad/models/weight_loader.h"

#include <torch/torch.h>

#include <map>
#include <set>
#include <sstream>

#include "salad/core/error.h"
#include "salad/core/shape.h"

namespace salad::models {

namespace {

bool matches(const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (!p.empty() && p.back() == '*') {
      if (name.compare(0, p.size() - 1, p, 0, p.size() - 1) == 0) return true;
    } else if (name == p) {
      return true;
    }
  }
  return false;
}

// Every tensor to fill: parameters and buffers by registered name.
std::map<std::string, at::Tensor> module_tensors(const torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : m.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : m.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

}  // namespace

LoadReport load_weights(torch::nn::Module& module, const safetensors::Checkpoint& ckpt,
                        const LoadOptions& o) {
  LoadReport report;
  std::vector<std::string> problems;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  std::string files;
  for (const auto& f : ckpt.files()) files += (files.empty() ? "" : ", ") + f.string();

  // One checkpoint tensor against what is expected of it; false (with a problem) when unusable.
  auto check = [&](const std::string& key, c10::IntArrayRef shape, bool want_float) {
    used.insert(key);
    const auto& info = ckpt.info(key);
    if (c10::IntArrayRef(info.shape) != shape) {
      problems.push_back("shape mismatch: " + key + ": expected " + shape_text(shape) + ", found " +
                         shape_text(info.shape) + " in " + ckpt.file_of(key).string());
      return false;
    }
    if (at::isFloatingType(info.scalar_type) != want_float) {
      problems.push_back("dtype mismatch: " + key + ": expected a " +
                         (want_float ? "floating-point" : "integer") + " tensor, found " +
                         info.dtype + " in " + ckpt.file_of(key).string());
      return false;
    }
    return true;
  };

  auto tensors = module_tensors(module);
  std::set<std::string> composite_targets;
  for (const auto& c : o.composites) {
    if (!tensors.count(c.target)) {
      throw Error("load_weights: composite target '" + c.target + "' is not a tensor of " + o.what);
    }
    composite_targets.insert(c.target);
  }
  for (auto& [name, dst] : tensors) {
    if (!o.module_prefix.empty() && name.rfind(o.module_prefix, 0) != 0) continue;
    if (composite_targets.count(name)) continue;
    const std::string local = name.substr(o.module_prefix.size());
    const std::string key = o.key_map ? o.key_map(local) : local;
    if (!ckpt.contains(key)) {
      if (matches(name, o.allow_missing)) {
        report.missing_allowed.push_back(name);
      } else {
        problems.push_back("missing: " + key + " (expected " + shape_text(dst.sizes()) + ")");
      }
      continue;
    }
    if (!check(key, dst.sizes(), at::isFloatingType(dst.scalar_type()))) continue;
    dst.copy_(ckpt.get(key));
    ++report.tensors_loaded;
    report.values_loaded += dst.numel();
  }
  for (const auto& c : o.composites) {
    at::Tensor& dst = tensors.at(c.target);
    bool ok = true;
    std::vector<at::Tensor> parts;
    for (size_t i = 0; i < c.keys.size(); ++i) {
      if (!ckpt.contains(c.keys[i])) {
        problems.push_back("missing: " + c.keys[i] + " (expected " + shape_text(c.shapes[i]) + ")");
        ok = false;
      } else if (check(c.keys[i], c.shapes[i], at::isFloatingType(dst.scalar_type()))) {
        parts.push_back(ckpt.get(c.keys[i]));
      } else {
        ok = false;
      }
    }
    if (!ok) continue;
    dst.copy_(c.combine(parts));
    ++report.tensors_loaded;
    report.values_loaded += dst.numel();
  }
  for (const auto& key : ckpt.names()) {
    if (used.count(key)) continue;
    bool foreign = false;
    for (const auto& p : o.ignore_prefixes) foreign |= key.rfind(p, 0) == 0;
    if (foreign) continue;
    if (matches(key, o.allow_unexpected)) {
      report.unexpected_allowed.push_back(key);
    } else {
      problems.push_back("unexpected: " + key + " " + shape_text(ckpt.info(key).shape));
    }
  }
  if (!problems.empty()) {
    std::ostringstream os;
    os << "cannot load " << o.what << " from " << files << " (" << problems.size()
       << (problems.size() == 1 ? " problem" : " problems") << "):";
    for (const auto& p : problems) os << "\n  " << p;
    if (!o.hint.empty()) os << "\n(" << o.hint << ")";
    throw CheckpointError(os.str());
  }
  return report;
}

safetensors::NamedTensors named_tensors(const torch::nn::Module& module,
                                        const std::string& prefix) {
  safetensors::NamedTensors out;
  for (const auto& [name, t] : module_tensors(module)) out.emplace_back(prefix + name, t);
  return out;
}

}  // namespace salad::models
