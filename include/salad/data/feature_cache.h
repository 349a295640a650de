// The encoder feature cache written by salad-encode and read by training.
//
// Layout of a cache folder (docs/feature-cache.md):
//   cache.json                 {"format": "salad-feature-cache", "version": 1, "encoder",
//                               "feature_dim", "dtype", "samples_per_frame", "sample_rate"}
//   shard-000000.safetensors   one tensor per utterance, named by its id, [frames, dim]
//                              (float32; codes: int64 [frames, n_q])
//   index.jsonl                one {"id", "shard", "frames"} line per utterance, appended after
//                              each shard is renamed into place
// Any safetensors reader can inspect a shard. A shard is written atomically; an interrupted run
// leaves finished shards, and a shard whose index lines were lost is re-indexed from its header.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "salad/core/safetensors.h"

namespace salad::data {

struct FeatureCacheMeta {
  std::string encoder;  ///< SpeechEncoder::describe() of the encoder that made it
  int64_t feature_dim = 0;
  std::string dtype = "F32";  ///< F32 or I64 (codes)
  int64_t samples_per_frame = 1920;
  int64_t sample_rate = 24000;
  bool operator==(const FeatureCacheMeta& o) const {
    return encoder == o.encoder && feature_dim == o.feature_dim && dtype == o.dtype &&
           samples_per_frame == o.samples_per_frame && sample_rate == o.sample_rate;
  }
};

struct CacheEntry {
  std::string shard;  ///< file name inside the cache folder
  int64_t frames = 0;
};

/// Reads a cache. Thread-safe; shards are memory-mapped on first use and tensors are zero-copy.
class FeatureCache {
 public:
  /// Throws IoError when the folder is not a cache (names what is missing).
  static FeatureCache open(const std::filesystem::path& dir);

  const FeatureCacheMeta& meta() const { return meta_; }
  const std::filesystem::path& dir() const { return dir_; }
  size_t size() const { return entries_.size(); }
  bool contains(const std::string& id) const { return entries_.count(id) > 0; }
  /// Frames of `id`; throws DataError when absent.
  int64_t frames(const std::string& id) const;
  /// Features of `id`, [frames, dim]; throws DataError when absent.
  at::Tensor get(const std::string& id) const;
  std::vector<std::string> ids() const;

 private:
  friend class FeatureCacheWriter;
  std::filesystem::path dir_;
  FeatureCacheMeta meta_;
  std::unordered_map<std::string, CacheEntry> entries_;
  // Shards opened so far, shared by copies of this cache.
  struct Shards {
    std::mutex mu;
    std::map<std::string, std::shared_ptr<const safetensors::File>> open;
  };
  std::shared_ptr<Shards> shards_ = std::make_shared<Shards>();
};

/// Writes a cache, resuming one that exists (its finished shards are kept).
class FeatureCacheWriter {
 public:
  /// Creates `dir` or resumes it; throws DataError when an existing cache was made with a
  /// different encoder or layout (both named).
  FeatureCacheWriter(const std::filesystem::path& dir, const FeatureCacheMeta& meta,
                     int64_t shard_bytes = int64_t{256} << 20);
  ~FeatureCacheWriter();
  FeatureCacheWriter(const FeatureCacheWriter&) = delete;
  FeatureCacheWriter& operator=(const FeatureCacheWriter&) = delete;

  /// In a finished shard or pending in the current one.
  bool contains(const std::string& id) const;
  /// Adds one utterance ([frames, dim], dtype per meta); writes a shard when it is full.
  void add(const std::string& id, const at::Tensor& features);
  /// Writes the pending shard (if any) and its index lines.
  void flush();
  /// Utterances in finished shards.
  int64_t finished() const { return static_cast<int64_t>(done_.size()); }
  int64_t shards_written() const { return shards_written_; }

 private:
  std::filesystem::path dir_;
  FeatureCacheMeta meta_;
  int64_t shard_bytes_;
  std::set<std::string> done_;
  safetensors::NamedTensors pending_;
  std::set<std::string> pending_ids_;
  int64_t pending_bytes_ = 0;
  int64_t next_shard_ = 0;
  int64_t shards_written_ = 0;
};

}  // namespace salad::data
