// Stage II of salad-train (and salad-select): find the Stage I branch-point checkpoint, run the
// active selection (include/salad/select/active.h) or take a given one, and turn the recipe into
// the Stage II training config: data.train plus the selected synthetic speech, mixed by
// stage2.{natural,synthetic,text}_weight, with the learning rate decaying linearly from its peak
// to 0 over train.steps (no warm-up), starting from the Stage I weights.
#pragma once

#include <filesystem>
#include <memory>

#include "salad/core/config.h"
#include "salad/select/active.h"

namespace salad::dist {
class Comm;
}
namespace salad::models {
class SpeechLM;
}

namespace salad::train {

struct TrainParts;

/// The checkpoint folder `from` names: itself when it holds model.safetensors, else the Stage I
/// run folder's branch-point checkpoint (trainer.json's branch_step; the newest valid
/// checkpoint when the branch point is missing, with a warning). Throws ConfigError naming
/// `from` when there is none.
std::filesystem::path stage1_checkpoint(const std::filesystem::path& from);

/// Loads a checkpoint folder's model.safetensors (student and adapter) into `lm`.
void load_stage1_weights(models::SpeechLM& lm, const std::filesystem::path& checkpoint);

/// The selection folder (stage2.out, else run.dir/selection).
std::filesystem::path selection_dir(const config::SaladConfig& cfg);

/// The audio budget in seconds: stage2.budget_hours, else stage2.budget_fraction of the speech
/// hours of the Stage I run's training sources (its config.resolved.yaml), else of this
/// recipe's speech sources.
double selection_budget_seconds(const config::SaladConfig& cfg,
                                const std::filesystem::path& checkpoint);

/// Runs the active selection with the Stage I model of `parts` (loaded from `checkpoint`) and
/// the recipe's TTS; writes selection_dir(cfg)/done when complete. Rank 0's job.
select::SelectionReport run_selection(const config::SaladConfig& cfg, TrainParts& parts,
                                      const std::filesystem::path& checkpoint);

/// The selected manifest for training: stage2.selection when given; else the selection's, run
/// on rank 0 (other ranks wait for its `done` marker, polling: the selection can take longer
/// than a collective's timeout).
std::filesystem::path prepare_selection(const config::SaladConfig& cfg, dist::Comm& comm);

/// The Stage II training config: data.train with the selected manifest added as the speech
/// source "selected", source weights scaled so the three groups get the stage2 mix weights,
/// optim.warmup_steps = 0 and optim.decay_fraction = 1 (linear decay to 0).
config::SaladConfig stage2_training_config(const config::SaladConfig& cfg,
                                           const std::filesystem::path& selected_manifest);

/// Runs `script INPUT` with Debian's python3 (else python3 on PATH); false (with a warning) when
/// it is missing or fails.
bool run_plot_script(const std::filesystem::path& script, const std::filesystem::path& input);

/// Draws report.png from report.json with scripts/plot_selection.py when python3 and matplotlib
/// are there (a warning otherwise). `scripts_dir` holds plot_selection.py.
void plot_selection(const std::filesystem::path& report_json,
                    const std::filesystem::path& scripts_dir);

}  // namespace salad::train
