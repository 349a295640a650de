// salad-export: turns a training checkpoint into a Hugging Face-style folder (the decoder as a
// Qwen2 checkpoint, plus the adapter, its config and the speech encoder it expects).
#include <cstdio>

#include "common/app.h"
#include "salad/train/export.h"

int main(int argc, char** argv) {
  CLI::App app{
      "salad-export: export a salad checkpoint to a Hugging Face-style folder\n"
      "  salad-export --run RUN_DIR [--step N] --out DIR\n"
      "  salad-export --checkpoint RUN_DIR/checkpoints/step-000200 --out DIR"};
  salad::train::ExportOptions o;
  std::string run_dir, checkpoint, out;
  app.add_option("--run", run_dir, "Run folder; exports checkpoints/latest (or --step)");
  app.add_option("--step", o.step, "With --run: export checkpoints/step-%06d instead of latest");
  app.add_option("--checkpoint", checkpoint, "A checkpoint folder (…/checkpoints/step-000200)");
  app.add_option("--out,-o", out, "Output folder (absent or empty, unless --force)")->required();
  app.add_option("--dtype", o.dtype, "Weight dtype of the export: fp32 (default), bf16 or fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_flag("--force", o.force, "Replace a non-empty output folder");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    if (run_dir.empty() == checkpoint.empty()) {
      std::fprintf(stderr, "salad-export: give exactly one of --run or --checkpoint\n%s",
                   app.help().c_str());
      return salad::kExitUsage;
    }
    if (!checkpoint.empty() && o.step >= 0) {
      std::fprintf(stderr, "salad-export: --step only applies with --run\n");
      return salad::kExitUsage;
    }
    o.run_dir = run_dir;
    o.checkpoint = checkpoint;
    o.out = out;
    const auto r = salad::train::export_checkpoint(o);
    std::printf("exported %s (step %lld, stage %s) to %s:\n", r.checkpoint.c_str(),
                static_cast<long long>(r.step), r.stage.c_str(), r.out.c_str());
    for (const auto& f : r.files) std::printf("  %s\n", (r.out / f).c_str());
    return salad::kExitOk;
  });
}
