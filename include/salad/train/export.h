// Export of a training checkpoint to a Hugging Face-style folder (DESIGN §4: "trained runs export
// to an HF-style folder"), the library side of `salad-export`.
//
// Input: a checkpoint folder written by the trainer, `<run>/checkpoints/step-000200/`, holding
// model.safetensors (models::SpeechLM::state(): the student decoder under Hugging Face Qwen2 names,
// the adapter under `adapter.`, absent for stage `text`), config.resolved.yaml and checkpoint.json
// (the manifest, written last; inside a run's checkpoints/ folder it is checked with
// CheckpointStore::validate: every listed file present with its size). Output folder:
//
//   config.json              Qwen2 config of the decoder (Qwen2Options::to_hf_config_json)
//   model.safetensors        the decoder only, HF names, in the export dtype
//   tokenizer.json | *.model the run's tokenizer, copied (plus tokenizer_config.json,
//                            special_tokens_map.json, generation_config.json of model.llm if any)
//   adapter.safetensors      the adapter.* tensors, names kept          (only with an adapter)
//   adapter_config.json      its AdapterOptions (read_adapter_config)   (only with an adapter)
//   speech_encoder.json      the frozen encoder the adapter expects     (only with an adapter)
//   config.resolved.yaml     the run's resolved config, copied
//   salad.json               provenance: source run and checkpoint, step, stage, salad version
//
// Everything is written into a temp folder beside `out`, which is renamed to `out` at the end; a
// failed export leaves `out` as it was.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "salad/models/adapter.h"

namespace salad::train {

namespace fs = std::filesystem;

struct ExportOptions {
  /// A run folder (checkpoints/ inside); the checkpoint is picked by `step`. Exactly one of
  /// run_dir / checkpoint is set.
  fs::path run_dir;
  /// -1: the checkpoint named by <run_dir>/checkpoints/latest; else checkpoints/step-%06d.
  int64_t step = -1;
  /// A checkpoint folder given directly (…/checkpoints/step-000200).
  fs::path checkpoint;
  /// The output folder: created; must be absent or empty unless `force`.
  fs::path out;
  /// fp32 | bf16 | fp16: dtype of the exported floating-point weights (decoder and adapter).
  std::string dtype = "fp32";
  /// Replace a non-empty `out` (never one that holds the checkpoint being exported).
  bool force = false;

  /// Throws ConfigError naming every problem (both or neither input given, empty out, bad dtype).
  void validate() const;
};

struct ExportResult {
  fs::path checkpoint;  ///< the checkpoint folder read
  fs::path out;         ///< the folder written
  int64_t step = -1;    ///< -1 when neither the folder name nor checkpoint.json gives it
  std::string stage;    ///< run.stage of the checkpoint's config
  bool has_adapter = false;
  int64_t decoder_parameters = 0;
  int64_t adapter_parameters = 0;
  std::vector<std::string> files;  ///< file names written into `out`, in writing order
};

/// The checkpoint folder of a run: `<run_dir>/checkpoints/<content of latest>` for step < 0,
/// else `<run_dir>/checkpoints/step-%06d`. Throws CheckpointError naming the path that is missing
/// (and the checkpoints present, as a hint).
fs::path resolve_checkpoint(const fs::path& run_dir, int64_t step = -1);

/// Exports one checkpoint (see the file comment). Every tensor is checked against the
/// checkpoint's config with the one weight loader, all problems reported at once. Throws
/// CheckpointError for a missing or incomplete checkpoint, missing or unexpected tensors and shapes
/// that disagree with the config (file, tensor, expected and found); ConfigError for an unreadable
/// config; IoError for an `out` that is not empty (without `force`) or a failed write.
ExportResult export_checkpoint(const ExportOptions& options);

/// adapter_config.json of an adapter: every AdapterOptions field under its name, plus
/// "format": "salad-adapter", "version": 1 and the parameter count.
std::string adapter_config_json(const models::AdapterOptions& options);

/// Reads adapter_config.json (as written by adapter_config_json) and validates the options.
/// Throws ConfigError naming the file and every missing or mistyped key.
models::AdapterOptions read_adapter_config(const fs::path& path);

/// The exported adapter: built from `dir`/adapter_config.json, weights loaded from
/// `dir`/adapter.safetensors (checked like any checkpoint) and converted to `dtype`.
models::Adapter load_exported_adapter(const fs::path& dir, c10::ScalarType dtype = c10::kFloat);

}  // namespace salad::train
