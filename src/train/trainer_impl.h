// Private state of train::Trainer, shared by trainer.cpp (the loop) and trainer_state.cpp
// (checkpoints and resume).
#pragma once

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "salad/dist/comm.h"
#include "salad/loss/distillation.h"
#include "salad/models/speech_lm.h"
#include "salad/train/checkpoint.h"
#include "salad/train/flat_adamw.h"
#include "salad/train/schedule.h"
#include "salad/train/trainer.h"

namespace salad::train {

/// Counters that a checkpoint carries (trainer.json).
struct Progress {
  int64_t step = 0;           ///< completed optimizer steps
  int64_t tokens = 0;         ///< non-padding student positions trained on, all ranks
  int64_t skipped_steps = 0;  ///< non-finite steps, whole run
  int64_t bad_in_row = 0;     ///< non-finite steps in a row at the end
  double elapsed_s = 0;       ///< training wall time before this process
};

struct Trainer::Impl {
  config::SaladConfig cfg;
  TrainParts parts;
  std::shared_ptr<dist::Comm> comm;
  c10::Device device{c10::kCPU};
  bool is_root = true;
  std::unique_ptr<FlatParams> flat;
  std::unique_ptr<FlatAdamW> opt;
  std::unique_ptr<dist::GradBuckets> buckets;
  WsdSchedule schedule;
  loss::DistillationLoss loss_fn{loss::DistillationOptions{}};
  CheckpointStore store{""};
  int64_t accum = 1;
  bool with_teacher = false;
  Progress progress;
  std::unique_ptr<BatchSource> source;
  std::vector<std::function<void(const StepStats&)>> callbacks;
  std::ofstream metrics;
  double flops_per_token_base = 0;  // see flops_of()
  std::chrono::steady_clock::time_point run_start = std::chrono::steady_clock::now();

  Impl(config::SaladConfig c, TrainParts p, std::shared_ptr<dist::Comm> cm);

  StepStats step(std::vector<data::Batch>& micro);
  double flops_of(const data::Batch& b) const;
  std::map<std::string, double> learning_rates(int64_t step) const;
  /// Validation metrics on the held-out data as a metrics.jsonl line (all ranks take part).
  std::string validate();

  // trainer_state.cpp
  /// Saves a checkpoint of the current state. Returns false (logged, nothing damaged) when the
  /// save failed on any rank.
  bool save(bool required);
  /// Loads the newest valid checkpoint; returns the loader cursor of this rank ("" if none).
  std::optional<std::string> resume();
  void validate_against(const config::SaladConfig& saved, const std::string& where) const;
};

}  // namespace salad::train
