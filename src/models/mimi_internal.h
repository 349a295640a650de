// Private helpers shared by the Mimi translation units.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <string>

namespace salad::models::mimi_detail {

/// Registers a plain module `name` in `parent` and returns it. Kyutai's wrapper modules carry no
/// weights of their own, only a segment of the key (StreamingConv1d.conv.conv, vq.layers, ...).
inline std::shared_ptr<torch::nn::Module> path_segment(torch::nn::Module& parent,
                                                       const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

}  // namespace salad::models::mimi_detail
