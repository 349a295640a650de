// The one weight loader: copies a checkpoint into a module's parameters and buffers by name,
// checking every expected tensor's name, shape and dtype, and reporting all missing,
// unexpected and mismatched tensors at once, naming the checkpoint files.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "salad/core/safetensors.h"

namespace salad::models {

/// A module tensor made from several checkpoint tensors (a fused q/k/v projection, weight-norm
/// g and v). Each source key is checked like any other tensor and counted as used.
struct CompositeTensor {
  std::string target;                        ///< module tensor name (as registered)
  std::vector<std::string> keys;             ///< checkpoint keys it is made from
  std::vector<std::vector<int64_t>> shapes;  ///< their expected shapes
  /// The target's value from the source tensors (in `keys` order).
  std::function<at::Tensor(const std::vector<at::Tensor>&)> combine;
};

struct LoadOptions {
  /// Module name -> checkpoint key (identity when empty). Per-architecture key maps live here.
  std::function<std::string(const std::string&)> key_map;
  /// Only module tensors whose name starts with this are loaded (e.g. "adapter."); the prefix is
  /// stripped before key_map. Empty: all.
  std::string module_prefix;
  /// Checkpoint keys that may be present without a module tensor (exact names, or "prefix*").
  std::vector<std::string> allow_unexpected;
  /// Module tensors that may be absent from the checkpoint (keep their current values).
  std::vector<std::string> allow_missing;
  /// Checkpoint keys that are not this module's at all (another component's weights): ignored.
  std::vector<std::string> ignore_prefixes;
  /// Module tensors built from several checkpoint tensors; their targets are not looked up by
  /// name.
  std::vector<CompositeTensor> composites;
  /// What is loaded, for messages ("Qwen2 decoder").
  std::string what = "model";
  /// Appended to the error in parentheses (e.g. which model config was used).
  std::string hint;
};

struct LoadReport {
  int64_t tensors_loaded = 0;
  int64_t values_loaded = 0;
  std::vector<std::string> missing_allowed;     ///< module tensors left as they were
  std::vector<std::string> unexpected_allowed;  ///< checkpoint keys skipped
};

/// Loads `ckpt` into `module` (values converted to each parameter's dtype and device, under
/// no-grad). Throws CheckpointError listing every problem: a missing tensor (with its expected
/// shape), an unexpected key, a shape mismatch (expected vs found, with the file), a dtype of
/// the wrong kind (integer data for a floating parameter or the reverse).
LoadReport load_weights(torch::nn::Module& module, const safetensors::Checkpoint& ckpt,
                        const LoadOptions& options = {});

/// The module's parameters and persistent buffers as named tensors (names as registered), for
/// safetensors::save.
safetensors::NamedTensors named_tensors(const torch::nn::Module& module,
                                        const std::string& prefix = "");

}  // namespace salad::models
