// salad-eval's whole job as a library call: rebuild a model from a checkpoint alone, score a
// list of multiple-choice benchmarks in the three modes (eval/benchmark.h), the gap per benchmark
// and on average (paper Table 3), M and F on held-out data (eval/alignment.h), and write
// results.json and results.md (the paper's layout) into an output folder.
//
// The benchmark list is a YAML file:
//
//   shots: 5              # default for every benchmark
//   seed: 1234
//   context: 0            # positions per scored document (0: the checkpoint's data.context)
//   batch_rows: 8
//   benchmarks:
//     - {name: storycloze, path: sc.jsonl, fewshot: sc_train.jsonl, shots: 0}
//   heldout:              # optional: M and F per set and overall (data sources, as in a
//                         # recipe's data.valid; each measured on its own)
//     - {name: dev, kind: speech, path: dev.jsonl}
//   max_heldout_batches: 0  # 0: all
//
// Relative paths are resolved against the YAML file's folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "salad/core/config.h"
#include "salad/eval/alignment.h"
#include "salad/eval/benchmark.h"

namespace salad::eval {

struct BenchmarkSpec {
  std::string name;
  std::filesystem::path path, fewshot;
  int64_t shots = -1;  ///< -1: EvalSpec::shots
};

struct EvalSpec {
  std::vector<BenchmarkSpec> benchmarks;
  std::vector<config::SourceConfig> heldout;
  int64_t shots = 5;
  uint64_t seed = 1234;
  int64_t context = 0;
  int64_t batch_rows = 8;
  int64_t max_heldout_batches = 0;
};

/// Parses the benchmark list. Throws ConfigError naming the file and key (unknown keys, a
/// benchmark without name or path, two benchmarks of one name).
EvalSpec read_eval_spec(const std::filesystem::path& yaml);

/// A checkpoint folder (model.safetensors + config.resolved.yaml) or a run folder (its newest
/// valid checkpoint). Throws ConfigError naming the path when it is neither.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& path);

struct BenchmarkReport {
  std::string name;
  std::map<Mode, ModeResult> modes;
  double gap = 0;             ///< teacher_text acc − model_speech acc over shared items
  double gap_norm = 0;        ///< the same with acc_norm
  double forgetting_gap = 0;  ///< teacher_text acc − model_text acc
  std::map<std::string, int64_t> read_skipped;
};

struct EvalReport {
  std::filesystem::path checkpoint;
  std::vector<BenchmarkReport> benchmarks;
  std::optional<AlignmentMetrics> heldout;  ///< M, F, L_DIST, NLL over all held-out sets
  /// Each held-out set measured on its own, in the spec's order (`heldout` is their mean
  /// weighted by aligned positions for M, L_DIST, NLL and by text positions for F).
  std::vector<std::pair<std::string, AlignmentMetrics>> heldout_sets;
  std::map<Mode, double> mean_acc, mean_acc_norm;
  double mean_gap = 0, mean_gap_norm = 0;
};

struct EvalOptions {
  std::vector<Mode> modes = {Mode::kTeacherText, Mode::kModelText, Mode::kModelSpeech};
  int64_t limit = 0;                   ///< score only the first N items of each benchmark (0: all)
  std::string device = "";             ///< overrides the checkpoint's run.device when set
  std::vector<std::string> overrides;  ///< --set on the checkpoint's config (paths, device)
};

/// Rebuilds the model of `checkpoint`, scores everything and returns the report.
EvalReport evaluate(const std::filesystem::path& checkpoint, const EvalSpec& spec,
                    const EvalOptions& o);

/// Writes out/results.json and out/results.md.
void write_eval_report(const EvalReport& r, const std::filesystem::path& out);

}  // namespace salad::eval
