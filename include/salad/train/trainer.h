// The training loop of salad-train (stages `text` and `1`; Stage II builds on it).
//
// One optimizer step:
//   1. draw the step's micro-batches (tokens_per_step / (rows × context × world) of them);
//   2. all-reduce the number of loss positions, so the loss is the mean over the global batch
//      (every micro-batch and rank; DESIGN §3);
//   3. forward (autocast bf16 on CUDA when train.precision = bf16), chunked loss, backward for
//      each micro-batch, the gradient buckets all-reduced during the last backward;
//   4. global gradient norm; a non-finite norm skips the update (counted; train.max_bad_steps in
//      a row abort); clip; AdamW on this rank's shard (ZeRO-1: then all-gather the weights);
//   5. metrics line, progress line, validation, checkpoint — whichever is due.
//
// Resume is exact on CPU: weights, optimizer state, step and token counters, data cursors and RNG
// states are in the checkpoint, so the steps after a resume compute the same losses as an
// uninterrupted run.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "salad/core/config.h"
#include "salad/data/loader.h"
#include "salad/models/speech_encoder.h"

namespace salad::data {
struct Batch;
}
namespace salad::models {
class SpeechLM;
}
namespace salad::dist {
class Comm;
}

namespace salad::train {

/// A stream of packed batches (the data loader, or fixed batches in tests and benchmarks).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// The next micro-batch; nullopt when the stream ends.
  virtual std::optional<data::Batch> next() = 0;
  /// Text (JSON) that recreates the stream after the batches next() returned so far.
  virtual std::string cursor() const = 0;
  /// Seconds next() spent blocked waiting for data, since construction.
  virtual double wait_seconds() const { return 0.0; }
  /// Bad items skipped so far (logged and in metrics).
  virtual int64_t skipped() const { return 0; }
};

/// Creates the training stream; an empty cursor starts from the beginning.
using TrainSourceFactory = std::function<std::unique_ptr<BatchSource>(const std::string& cursor)>;
/// Creates a fresh pass over the held-out data.
using ValidSourceFactory = std::function<std::unique_ptr<BatchSource>()>;

/// What a Trainer trains and on what.
struct TrainParts {
  std::shared_ptr<models::SpeechLM> lm;
  TrainSourceFactory train;
  ValidSourceFactory valid;   ///< empty: no validation
  bool train_adapter = true;  ///< false for stage `text` (the adapter is neither trained nor saved)
  /// Student positions per micro-batch (rows × context): sets the gradient accumulation.
  int64_t micro_positions = 0;
  /// The recipe's tokenizer and the training loader's options (features, interleaving,
  /// packing), for tools that build other loaders from the same setup (Stage II probes).
  std::shared_ptr<const text::Tokenizer> tokenizer;
  std::optional<data::LoaderOptions> train_loader;
};

/// The model a recipe describes, without its data: the tokenizer, the speech features (cache or
/// on the fly), the decoder (model.llm or a fresh model.arch initialised from run.seed), the
/// student as its fp32 copy (not for stage `text`) and the adapter, on run.device.
struct ModelParts {
  std::shared_ptr<models::SpeechLM> lm;
  std::shared_ptr<const text::Tokenizer> tokenizer;
  models::FeatureSource features;
};
ModelParts build_model(const config::SaladConfig& cfg);

/// Builds the parts from a recipe: tokenizer, speech features (cache or on the fly), the
/// decoder (model.llm or a fresh model.arch initialised from run.seed), the student as its fp32
/// copy, the adapter, and the loaders of data.train / data.valid for this process's rank.
TrainParts build_parts(const config::SaladConfig& cfg);

/// The device of run.device ("auto": cuda:LOCAL_RANK when CUDA is available, else cpu).
c10::Device resolve_device(const std::string& device);

/// What happened in one optimizer step (global values: summed over micro-batches and ranks).
struct StepStats {
  int64_t step = 0;                  ///< completed steps after this one
  double loss = 0, kl = 0, nll = 0;  ///< per loss position
  double grad_norm = 0;              ///< before clipping
  double lr_adapter = 0, lr_llm = 0;
  int64_t positions = 0;  ///< loss positions
  int64_t tokens = 0;     ///< non-padding student positions
  double flops = 0;       ///< model FLOPs of the step (forward + backward, all ranks)
  double seconds = 0;     ///< wall time of the step
  double data_wait = 0;   ///< seconds of it spent waiting for batches
  bool skipped = false;   ///< non-finite gradients: no update
};

struct TrainResult {
  int64_t step = 0;           ///< completed steps
  int64_t skipped_steps = 0;  ///< non-finite steps over the whole run
  bool interrupted = false;   ///< stopped by SIGINT/SIGTERM (a checkpoint was saved)
  int signal = 0;             ///< the signal that stopped it
  double last_loss = 0;
};

class Trainer {
 public:
  Trainer(config::SaladConfig cfg, TrainParts parts, std::shared_ptr<dist::Comm> comm);
  ~Trainer();

  /// Trains to train.steps. resume: continue from the newest valid checkpoint of run.dir (none:
  /// a warning and a fresh start). Throws CheckpointError when the checkpoint belongs to another
  /// model shape or config (listing every difference), Error after train.max_bad_steps
  /// non-finite steps in a row, and whatever a collective throws when a rank dies.
  TrainResult run(bool resume);

  /// Called after every step on every rank (tests, benchmarks).
  void on_step(std::function<void(const StepStats&)> fn);

  /// One optimizer step on the given micro-batches (benchmarks); does not log, save or validate.
  StepStats step(const std::vector<data::Batch>& micro);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// SIGINT/SIGTERM set a flag the trainer checks after every step: it saves a checkpoint and
/// returns (TrainResult::interrupted). A second signal ends the process at once.
void install_stop_handlers();
/// Sets the same flag (tests).
void request_stop(int signal);
/// Clears it.
void clear_stop();

}  // namespace salad::train
