// Uses the installed public headers only: writes a checkpoint, reads it back.
#include <ATen/ATen.h>

#include <iostream>

#include "salad/core/error.h"
#include "salad/core/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    salad::safetensors::save(argv[1], {{"a", at::ones({2, 2})}, {"b", at::zeros({2}, at::kLong)}});
    const auto ckpt = salad::safetensors::Checkpoint::open(argv[1]);
    if (!ckpt.get("a").equal(at::ones({2, 2}))) return 1;
    std::cout << "consumer ok: " << ckpt.names().size() << " tensors, " << ckpt.total_numel()
              << " parameters\n";
  } catch (const salad::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
