// The training/validation data loader: reads speech manifests (+ encoder features) and text
// corpora, builds interleaved documents (data/document.h), mixes sources by weight, packs
// documents into batches (data/packing.h) in background threads with a bounded prefetch queue.
//
// Determinism: the batches are a pure function of (options, seed, rank, world size, cursor),
// whatever the number of worker threads. Each source's items are visited in a per-epoch
// permutation seeded by (seed, source, epoch); rank r of W takes every W-th item. The source of
// the k-th drawn document is a weighted choice seeded by (seed, rank, k); the interleaving of an
// item is seeded by (seed, source, epoch, item). Exact resume: cursor() after a batch, given to
// a new Loader, continues with exactly the batches that would have followed.
//
// Bad items (missing or malformed features, bad word timings, empty transcripts, documents
// longer than the context that cannot be split) are counted per reason, logged (file:line or id)
// and skipped; more than max_skip_fraction of the items seen is a DataError, raised by next().
// The fraction is checked once 200 items are seen (fewer say little: one bad line among the
// first 14 items is 7 %), and at the end of a non-repeating pass. A source that goes through a
// whole epoch (or its pass) without one usable item is a DataError naming it: mixed with clean
// sources it would never reach the threshold and silently drop out of the mix.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "salad/data/batch.h"
#include "salad/data/document.h"
#include "salad/data/feature_cache.h"
#include "salad/data/packing.h"
#include "salad/data/skips.h"

namespace salad::config {
struct SaladConfig;
}
namespace salad::text {
class Tokenizer;
}

namespace salad::data {

struct SourceSpec {
  std::string name;
  std::string kind = "speech";  ///< speech (manifest JSONL) | text (JSONL {"id","text"} or lines)
  std::filesystem::path path;
  double weight = 1.0;
};

/// The [F, De] encoder features of an utterance (F >= 1, De == PackOptions::feature_dim; floating
/// point, or integer codes when PackOptions::codes). Throws when they are unavailable: anything
/// derived from std::exception (salad::Error, c10::Error, ...) counts that item under "missing
/// features" and skips it; a tensor of another shape or dtype is skipped as "bad features".
/// Called from worker threads concurrently.
using FeatureFn = std::function<at::Tensor(const Utterance&)>;

/// Features from a cache written by salad-encode (keyed by utterance id).
FeatureFn cache_features(const FeatureCache& cache);

struct LoaderOptions {
  std::vector<SourceSpec> sources;
  std::shared_ptr<const text::Tokenizer> tokenizer;
  FeatureFn features;  ///< required when a speech source is present
  InterleaveOptions interleave;
  PackOptions pack;  ///< context, padding, feature width (> 0 with speech sources)
  int64_t rows = 1;  ///< packed rows per batch
  int64_t utterance_group = 8;
  int64_t prefetch = 4;  ///< batches ready ahead of the consumer
  int64_t workers = 2;   ///< threads building documents
  uint64_t seed = 1234;
  int64_t rank = 0;
  int64_t world_size = 1;
  /// true: endless reshuffled epochs, sources mixed by weight (training). false: one pass over
  /// every source in file order, source after source, then next() returns nullopt (validation).
  bool repeat = true;
  double max_skip_fraction = 0.05;

  /// From a recipe: data.train (train=true) or data.valid sources, data.* interleaving/packing,
  /// train.micro_batch_sequences rows, run.seed. `frame_rate` and `feature_dim` describe the
  /// encoder features.
  static LoaderOptions from_config(const config::SaladConfig& cfg, bool train,
                                   std::shared_ptr<const text::Tokenizer> tokenizer,
                                   FeatureFn features, double frame_rate, int64_t feature_dim);
  void validate() const;  ///< throws ConfigError naming the bad field
};

struct SourceCursor {
  int64_t epoch = 0;
  int64_t index = 0;  ///< next position in the epoch's permutation (this rank's share)
};

/// Where a loader is in its stream; saved with checkpoints.
struct LoaderCursor {
  std::vector<SourceCursor> sources;  ///< one per LoaderOptions::sources, in order (empty: start)
  int64_t draws = 0;                  ///< documents drawn so far
  int64_t skip_parts = 0;  ///< parts of the next item (split_to_context) already consumed
  uint64_t seed = 0;       ///< of the loader that made it (checked on restore)
  int64_t rank = 0;
  int64_t world_size = 1;
  /// 16 hex digits: a hash of `identity` (checked on restore).
  std::string fingerprint;
  /// What else decides the draws and the documents, as "key" -> "value": every source's name,
  /// kind, weight and item count ("sources[0].items" -> "412"); pack.context, rows,
  /// pack.pad_to_context, the interleave.* options, utterance_group, repeat. Kept beside the
  /// fingerprint so that a mismatch names what changed.
  std::map<std::string, std::string> identity;

  /// JSON {"format": "salad-loader-cursor", "version": 2, ...}.
  std::string to_json() const;
  /// Throws CheckpointError naming `where` on malformed text, on a missing or mistyped field and
  /// on a version other than 2 (version 1 had no fingerprint).
  static LoaderCursor from_json(const std::string& json, const std::string& where);
  bool operator==(const LoaderCursor& o) const;
};

struct LoaderStats {
  int64_t batches = 0;     ///< returned by next()
  int64_t items_seen = 0;  ///< items drawn (used or skipped)
  int64_t documents = 0;   ///< documents packed
  int64_t documents_split = 0;
  double wait_seconds = 0;     ///< time next() spent blocked on an empty queue
  double produce_seconds = 0;  ///< worker + packer busy time
  SkipCounter skipped;
};

class Loader {
 public:
  /// Opens the sources (reading manifests / corpora) and starts the threads. Throws
  /// ConfigError/IoError for bad options or unreadable sources, CheckpointError when `start` was
  /// made with another seed, rank, world size, source list or fingerprint (sources' names, kinds,
  /// weights, item counts; packing and interleaving options), naming what differs.
  explicit Loader(LoaderOptions o, const LoaderCursor& start = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// The next batch (blocks until ready); nullopt at the end of a non-repeating pass.
  std::optional<Batch> next();
  /// The cursor after the last batch next() returned (the start cursor before the first).
  LoaderCursor cursor() const;
  LoaderStats stats() const;
  const LoaderOptions& options() const { return o_; }

 private:
  struct State;
  LoaderOptions o_;
  std::unique_ptr<State> s_;
};

}  // namespace salad::data
