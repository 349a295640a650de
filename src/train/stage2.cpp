// Stage II: the Stage I checkpoint, the selection and the Stage II training config.
#include "salad/train/stage2.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/dist/comm.h"
#include "salad/models/speech_lm.h"
#include "salad/train/checkpoint.h"
#include "salad/train/trainer.h"
#include "salad/tts/tts.h"
#include "tts/subprocess.h"

namespace salad::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path stage1_checkpoint(const fs::path& from) {
  if (from.empty()) throw ConfigError("stage2.from is empty: give the Stage I run folder");
  if (fs::exists(from / "model.safetensors")) return from;
  if (!fs::is_directory(from / "checkpoints")) {
    throw ConfigError("stage2.from " + from.string() +
                      ": neither a checkpoint folder (model.safetensors) nor a run folder "
                      "(checkpoints/)");
  }
  const CheckpointStore store(from);
  const std::optional<int64_t> latest = store.latest_valid();
  if (!latest) throw ConfigError("stage2.from " + from.string() + ": no valid checkpoint");
  int64_t branch = -1;
  try {
    std::ifstream f(store.folder(*latest) / "trainer.json");
    const json j = json::parse(f);
    if (j.contains("branch_step")) branch = j["branch_step"].get<int64_t>();
  } catch (const std::exception& e) {
    spdlog::warn("stage 2: cannot read {}/trainer.json ({})", store.folder(*latest).string(),
                 e.what());
  }
  if (branch > 0) {
    try {
      store.validate(branch);
      spdlog::info("stage 2: starting from the Stage I branch point {}",
                   store.folder(branch).string());
      return store.folder(branch);
    } catch (const std::exception& e) {
      spdlog::warn("stage 2: the branch-point checkpoint step {} is not usable ({})", branch,
                   e.what());
    }
  }
  spdlog::warn("stage 2: no branch-point checkpoint in {}; starting from the newest, {}",
               from.string(), store.folder(*latest).string());
  return store.folder(*latest);
}

void load_stage1_weights(models::SpeechLM& lm, const fs::path& checkpoint) {
  torch::NoGradGuard no_grad;
  lm.load_state(safetensors::Checkpoint::open(checkpoint / "model.safetensors"));
  spdlog::info("stage 2: weights loaded from {}", (checkpoint / "model.safetensors").string());
}

fs::path selection_dir(const config::SaladConfig& cfg) {
  return cfg.stage2.out.empty() ? cfg.run.dir / "selection" : cfg.stage2.out;
}

double selection_budget_seconds(const config::SaladConfig& cfg, const fs::path& checkpoint) {
  if (cfg.stage2.budget_hours > 0) return cfg.stage2.budget_hours * 3600.0;
  std::vector<data::SourceSpec> sources;
  std::string from = "this recipe's";
  const fs::path stage1_cfg = checkpoint / "config.resolved.yaml";
  const config::SaladConfig* use = &cfg;
  config::SaladConfig s1;
  if (fs::exists(stage1_cfg)) {
    try {
      s1 = config::load(stage1_cfg);
      use = &s1;
      from = "the Stage I run's";
    } catch (const std::exception& e) {
      spdlog::warn("stage 2: cannot read {} ({}); budget from this recipe's sources",
                   stage1_cfg.string(), e.what());
    }
  }
  for (const auto& s : use->data.train) sources.push_back({s.name, s.kind, s.path, s.weight});
  const double seconds = select::speech_seconds(sources);
  if (!(seconds > 0)) {
    throw ConfigError("stage2.budget_hours is 0 and " + from +
                      " training sources have no speech to take a fraction of: set "
                      "stage2.budget_hours");
  }
  const double budget = cfg.stage2.budget_fraction * seconds;
  spdlog::info("stage 2: budget {:.3f} h = {} x {:.2f} h of {} speech", budget / 3600,
               cfg.stage2.budget_fraction, seconds / 3600, from);
  return budget;
}

select::SelectionReport run_selection(const config::SaladConfig& cfg, TrainParts& parts,
                                      const fs::path& checkpoint) {
  load_stage1_weights(*parts.lm, checkpoint);
  if (!parts.train_loader) throw std::logic_error("run_selection: parts without a loader");
  std::unique_ptr<tts::TtsBackend> backend = tts::make_tts(tts::TtsOptions::from_config(cfg.tts));
  select::SelectionInputs in;
  in.cfg = &cfg;
  in.lm = parts.lm.get();
  in.tokenizer = parts.tokenizer;
  in.probe_loader = *parts.train_loader;
  in.tts = backend.get();
  in.budget_seconds = selection_budget_seconds(cfg, checkpoint);
  in.out = selection_dir(cfg);
  select::SelectionReport r = select::run_active_selection(in);
  write_file_atomic(in.out / "done", r.manifest.string() + "\n");
  return r;
}

fs::path prepare_selection(const config::SaladConfig& cfg, dist::Comm& comm) {
  if (!cfg.stage2.selection.empty()) {
    if (!fs::exists(cfg.stage2.selection)) {
      throw ConfigError("stage2.selection " + cfg.stage2.selection.string() + " does not exist");
    }
    return cfg.stage2.selection;
  }
  const fs::path dir = selection_dir(cfg);
  const fs::path done = dir / "done";
  const fs::path manifest = dir / "selected" / "manifest.jsonl";
  if (fs::exists(done)) {
    spdlog::info("stage 2: selection already complete in {}", dir.string());
    return manifest;
  }
  if (comm.rank() == 0) {
    const fs::path ckpt = stage1_checkpoint(cfg.stage2.from);
    config::SaladConfig sel = cfg;
    TrainParts parts = build_parts(sel);
    run_selection(sel, parts, ckpt);
  } else {
    spdlog::info("stage 2: rank {} waits for rank 0's selection ({})", comm.rank(), done.string());
    while (!fs::exists(done)) std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  return manifest;
}

config::SaladConfig stage2_training_config(const config::SaladConfig& cfg,
                                           const fs::path& selected_manifest) {
  config::SaladConfig out = cfg;
  const config::Stage2Config& s2 = cfg.stage2;
  double speech_sum = 0, text_sum = 0;
  for (const auto& s : cfg.data.train) (s.kind == "speech" ? speech_sum : text_sum) += s.weight;
  out.data.train.clear();
  for (auto s : cfg.data.train) {
    const double group = s.kind == "speech" ? s2.natural_weight : s2.text_weight;
    const double sum = s.kind == "speech" ? speech_sum : text_sum;
    if (group <= 0 || sum <= 0) continue;
    s.weight = group * s.weight / sum;
    out.data.train.push_back(s);
  }
  if (s2.synthetic_weight > 0) {
    config::SourceConfig sel;
    sel.name = "selected";
    sel.kind = "speech";
    sel.path = selected_manifest;
    sel.weight = s2.synthetic_weight;
    for (const auto& s : out.data.train) {
      if (s.name == sel.name) {
        throw ConfigError(
            "data.train: the source name 'selected' is reserved for Stage II's "
            "synthetic speech; rename that source");
      }
    }
    out.data.train.push_back(sel);
  }
  if (out.data.train.empty()) {
    throw ConfigError(
        "stage 2: every mix weight is 0 (stage2.natural_weight, synthetic_weight, "
        "text_weight)");
  }
  if (out.optim.warmup_steps != 0 || out.optim.decay_fraction != 1.0) {
    spdlog::info(
        "stage 2: learning rate decays linearly from its peak to 0 over {} steps "
        "(optim.warmup_steps {} -> 0, optim.decay_fraction {} -> 1)",
        out.train.steps, out.optim.warmup_steps, out.optim.decay_fraction);
  }
  out.optim.warmup_steps = 0;
  out.optim.decay_fraction = 1.0;
  return out;
}

bool run_plot_script(const fs::path& script, const fs::path& input) {
  if (!fs::exists(script)) {
    spdlog::warn("{} not found; no chart", script.string());
    return false;
  }
  // Debian's interpreter first: python3-matplotlib installs there, and a python3 earlier on
  // PATH (pyenv, a venv) may not have it.
  const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const std::string cmd = python + " " + tts::detail::shell_quote(script.string()) + " " +
                          tts::detail::shell_quote(input.string()) + " > /dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    spdlog::warn("{} failed (python3 with matplotlib draws the chart; Debian: python3-matplotlib)",
                 script.string());
    return false;
  }
  return true;
}

void plot_selection(const fs::path& report_json, const fs::path& scripts_dir) {
  if (run_plot_script(scripts_dir / "plot_selection.py", report_json)) {
    spdlog::info("select: chart {}", (report_json.parent_path() / "report.png").string());
  }
}

}  // namespace salad::train
