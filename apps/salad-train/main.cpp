// salad-train: trains a SALAD model from a YAML recipe.
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "common/app.h"
#include "salad/core/blas_info.h"
#include "salad/core/config.h"
#include "salad/core/logging.h"
#include "salad/dist/comm.h"
#include "salad/train/stage2.h"
#include "salad/train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"salad-train: train a SALAD speech-text model from a YAML recipe"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool dump_config = false, config_reference = false, resume = false;
  app.add_option("--config,-c", config_path, "YAML recipe (configs/*.yaml)");
  app.add_option("--set", overrides, "Override a key: --set train.steps=100 (repeatable)");
  app.add_flag("--dump-config", dump_config, "Print the resolved config as YAML and exit");
  app.add_flag("--config-reference", config_reference,
               "Print every config key with type, default and meaning (Markdown) and exit");
  app.add_flag("--resume", resume, "Continue from the run folder's latest checkpoint");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    if (config_reference) {
      std::cout << salad::config::reference_markdown();
      return salad::kExitOk;
    }
    if (config_path.empty()) {
      std::cerr << "salad-train: --config is required\n" << app.help();
      return salad::kExitUsage;
    }
    const auto cfg = salad::config::load(config_path, overrides);
    if (dump_config) {
      std::cout << salad::config::to_yaml(cfg);
      return salad::kExitOk;
    }
    salad::setup_logging({cfg.run.log_level, -1, cfg.run.log_all_ranks, ""});
    salad::configure_threads(static_cast<int>(cfg.run.threads));
    salad::log_blas_info();
    auto comm = std::make_shared<salad::dist::Comm>(salad::dist::CommOptions::from_env(cfg.dist));
    salad::train::install_stop_handlers();
    // Stage II: the selection (or a given one), then the Stage II mix from the Stage I weights.
    salad::config::SaladConfig train_cfg = cfg;
    std::filesystem::path stage1;
    if (cfg.run.stage == "2") {
      const auto manifest = salad::train::prepare_selection(cfg, *comm);
      const auto report = salad::train::selection_dir(cfg) / "report.json";
      if (comm->rank() == 0 && std::filesystem::exists(report)) {
        salad::train::plot_selection(report, salad::apps::scripts_dir());
      }
      train_cfg = salad::train::stage2_training_config(cfg, manifest);
      stage1 = salad::train::stage1_checkpoint(cfg.stage2.from);
    }
    salad::train::TrainParts parts = salad::train::build_parts(train_cfg);
    if (!stage1.empty()) salad::train::load_stage1_weights(*parts.lm, stage1);
    salad::train::Trainer trainer(train_cfg, parts, comm);
    const auto result = trainer.run(resume);
    if (result.interrupted) return 128 + result.signal;
    spdlog::info("train: done at step {} ({} skipped); run folder {}", result.step,
                 result.skipped_steps, cfg.run.dir.string());
    return salad::kExitOk;
  });
}
