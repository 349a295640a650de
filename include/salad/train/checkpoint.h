// Checkpoint folders of a run (DESIGN §4):
//
//   <run>/checkpoints/step-000200/   model.safetensors (trainable weights), trainer.json,
//                                    optimizer-rank-00000.safetensors (one per rank with ZeRO-1,
//                                    rank 0's otherwise), rank-00000.json (each rank's data
//                                    cursor and RNG state), config.resolved.yaml, and
//                                    checkpoint.json (the manifest: every file and its size)
//   <run>/checkpoints/latest         "step-000200": the newest complete checkpoint
//
// Saving is atomic: every rank writes into checkpoints/.staging-step-000200/, rank 0 writes the
// manifest last, renames the folder to step-000200 and then rewrites `latest` (write_file_atomic).
// A crash or a full disk at any point leaves the previous checkpoints and `latest` intact.
// Loading validates the manifest (every file present with its recorded size, safetensors
// headers consistent); a damaged checkpoint is skipped with a warning for the previous one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace salad::train {

namespace fs = std::filesystem;

class CheckpointStore {
 public:
  explicit CheckpointStore(fs::path run_dir);

  const fs::path& dir() const { return dir_; }   ///< <run>/checkpoints
  static std::string folder_name(int64_t step);  ///< "step-000200"
  fs::path folder(int64_t step) const { return dir_ / folder_name(step); }
  /// Where the ranks write step's files before commit (created by prepare()).
  fs::path staging(int64_t step) const;

  /// Rank 0: removes a leftover staging folder of `step` and creates it empty.
  void prepare(int64_t step) const;
  /// Rank 0, after every rank has written into staging(step): writes checkpoint.json (listing
  /// every file with its size), fsyncs, renames to folder(step), points `latest` at it, then
  /// deletes complete checkpoints beyond the newest `keep_last` (never `keep_step`, the Stage II
  /// branch point; keep_last <= 0 keeps everything). Throws IoError on failure (nothing renamed).
  void commit(int64_t step, int64_t world_size, int64_t keep_last, int64_t keep_step = -1) const;
  /// Rank 0: deletes a failed staging folder and any leftovers (best effort).
  void discard(int64_t step) const;
  void discard_all_staging() const;

  /// Steps of the folders that look like checkpoints (step-N), newest first (not validated).
  std::vector<int64_t> steps() const;
  /// Throws CheckpointError saying what is wrong with folder(step) (missing manifest, missing or
  /// truncated file, unreadable safetensors header).
  void validate(int64_t step) const;
  /// The checkpoint to resume from: the newest folder that validates.
  /// Every damaged one passed over is logged as a warning (with the reason). nullopt: none.
  std::optional<int64_t> latest_valid() const;

 private:
  fs::path dir_;
};

}  // namespace salad::train
