// salad-inspect: lists a safetensors checkpoint (file, sharded index or folder): every tensor's
// name, dtype and shape, the total parameter count and the metadata.
#include <cstdio>
#include <iostream>

#include "common/app.h"
#include "salad/core/safetensors.h"
#include "salad/core/shape.h"

namespace {

std::string human(int64_t n) {
  char buf[32];
  if (n >= 1000000000)
    std::snprintf(buf, sizeof(buf), "%.2f B", n / 1e9);
  else if (n >= 1000000)
    std::snprintf(buf, sizeof(buf), "%.2f M", n / 1e6);
  else if (n >= 1000)
    std::snprintf(buf, sizeof(buf), "%.2f K", n / 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(n));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"salad-inspect: list the tensors of a safetensors checkpoint"};
  std::string path;
  app.add_option("path", path, "A .safetensors file, a *.safetensors.index.json or a folder")
      ->required();
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    const auto ckpt = salad::safetensors::Checkpoint::open(path);
    size_t width = 4;
    for (const auto& n : ckpt.names()) width = std::max(width, n.size());
    std::printf("%-*s  %-5s  %s\n", static_cast<int>(width), "name", "dtype", "shape");
    for (const auto& n : ckpt.names()) {
      const auto& t = ckpt.info(n);
      std::printf("%-*s  %-5s  %s\n", static_cast<int>(width), n.c_str(), t.dtype.c_str(),
                  salad::shape_text(t.shape).c_str());
    }
    const int64_t total = ckpt.total_numel();
    std::printf("\n%zu tensors, %lld parameters (%s) in %zu file(s)\n", ckpt.names().size(),
                static_cast<long long>(total), human(total).c_str(), ckpt.files().size());
    if (!ckpt.metadata().empty()) {
      std::printf("metadata:\n");
      for (const auto& [k, v] : ckpt.metadata()) std::printf("  %s: %s\n", k.c_str(), v.c_str());
    }
    return salad::kExitOk;
  });
}
