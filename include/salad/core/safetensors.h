// safetensors: reading (mmap, zero-copy views, sharded checkpoints) and atomic writing.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data; offsets are relative to the end of the header.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace salad::safetensors {

namespace fs = std::filesystem;

/// One tensor's entry in a safetensors header.
struct TensorInfo {
  std::string name;
  std::string dtype;  ///< as written in the file: F32, BF16, I64, ...
  c10::ScalarType scalar_type;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte offsets relative to the start of the data section
  uint64_t end = 0;
  int64_t numel() const;
};

/// The LibTorch dtype of a safetensors dtype string; throws IoError for an unknown or
/// unsupported one.
c10::ScalarType scalar_type_of(const std::string& dtype);
/// The safetensors dtype string of a LibTorch dtype; throws Error when it has none.
std::string dtype_name(c10::ScalarType t);

/// One memory-mapped .safetensors file. The header is fully validated on open (every check
/// names the file); tensor data is not touched until get(). Thread-safe for concurrent get().
class File {
 public:
  /// Opens and validates `path`; throws IoError naming the file and the problem.
  static std::shared_ptr<const File> open(const fs::path& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const fs::path& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  /// Entries in data order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  /// nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// A CPU tensor viewing the mapped bytes (zero-copy; it keeps the mapping alive). The mapping
  /// is private copy-on-write, so writing to the tensor never changes the file. Misaligned data
  /// is copied. Throws IoError when `name` is absent.
  at::Tensor get(const std::string& name) const;

 private:
  File() = default;
  struct Mapping;
  fs::path path_;
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;
  std::shared_ptr<Mapping> mapping_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// A checkpoint: one .safetensors file, a sharded set described by `*.safetensors.index.json`,
/// or a folder holding either (`model.safetensors.index.json` preferred, then
/// `model.safetensors`, then a single `*.safetensors`).
class Checkpoint {
 public:
  /// Opens every shard and checks the index against them; throws IoError naming the file.
  static Checkpoint open(const fs::path& file_dir_or_index);

  /// Tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return where_.count(name) > 0; }
  /// Throws CheckpointError naming the checkpoint when absent.
  const TensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name) const;
  /// The shard holding `name`.
  const fs::path& file_of(const std::string& name) const;
  /// The files read, in order (one for an unsharded checkpoint).
  std::vector<fs::path> files() const;
  /// The index's "metadata" (sharded) or the file's "__metadata__".
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// What was opened (file, index or folder), for messages.
  const fs::path& source() const { return source_; }
  int64_t total_numel() const;

 private:
  fs::path source_;
  std::vector<std::shared_ptr<const File>> files_;
  std::map<std::string, size_t> where_;  // name -> index in files_
  std::map<std::string, std::string> metadata_;
};

/// A named tensor list, written in the given order.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/// Writes `tensors` (any device; copied to contiguous CPU) to `path` atomically: temp file,
/// fsync, rename. Throws Error on a duplicate name or an unsupported dtype, IoError on I/O
/// failure (the previous file, if any, is intact).
void save(const fs::path& path, const NamedTensors& tensors,
          const std::map<std::string, std::string>& metadata = {});

}  // namespace salad::safetensors
