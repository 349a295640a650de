// salad-select: runs Stage II's active selection alone (clusters, probe, M(c), weights,
// synthesis of the selected texts) from a stage-2 recipe, and writes the selected manifest and
// the report (report.json, report.md, report.png) into the selection folder.
#include <cstdlib>
#include <iostream>

#include "common/app.h"
#include "salad/core/blas_info.h"
#include "salad/core/config.h"
#include "salad/core/logging.h"
#include "salad/train/stage2.h"
#include "salad/train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"salad-select: Stage II active selection (cluster, probe, weight, synthesize)"};
  std::string config_path;
  std::vector<std::string> overrides;
  app.add_option("--config,-c", config_path, "Stage II YAML recipe (configs/stage2_*.yaml)")
      ->required();
  app.add_option("--set", overrides, "Override a key: --set stage2.gamma=0 (repeatable)");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    auto cfg = salad::config::load(config_path, overrides);
    salad::setup_logging({cfg.run.log_level, -1, cfg.run.log_all_ranks, ""});
    salad::configure_threads(static_cast<int>(cfg.run.threads));
    salad::log_blas_info();
    if (cfg.stage2.from.empty()) {
      throw salad::ConfigError("stage2.from: required (the Stage I run folder)");
    }
    if (cfg.stage2.corpus.empty()) {
      throw salad::ConfigError("stage2.corpus: required (the text corpus to select from)");
    }
    cfg.run.stage = "2";
    const auto ckpt = salad::train::stage1_checkpoint(cfg.stage2.from);
    salad::train::TrainParts parts = salad::train::build_parts(cfg);
    const auto report = salad::train::run_selection(cfg, parts, ckpt);
    salad::train::plot_selection(report.report_json, salad::apps::scripts_dir());
    std::cout << "selected " << report.selected_items << " utterances, "
              << report.selected_seconds / 3600.0 << " h (budget " << report.budget_seconds / 3600.0
              << " h) from " << report.clusters.size() << " clusters\nmanifest "
              << report.manifest.string() << "\nreport "
              << report.report_json.parent_path().string() << "/report.{json,md,png}\n";
    return salad::kExitOk;
  });
}
