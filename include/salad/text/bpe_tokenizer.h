// Hugging Face `tokenizer.json` byte-level BPE (the Qwen2.5 / Qwen3 tokenizer), meant to give
// exactly the ids of Hugging Face's `tokenizers` for the configurations it accepts (checked on
// the reference ids of tests/data/tokenizer/).
//
// Pipeline of encode(): invalid UTF-8 -> U+FFFD; added tokens (special or not) matched in the raw
// text, longest first at the leftmost position; NFC on the text between them; the Split regexes
// (PCRE2, JIT); ByteLevel (bytes -> GPT-2 symbols); BPE by merge rank, through a word cache.
// Every other configuration piece that would change ids is an IoError naming the file and piece.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "salad/text/tokenizer.h"

namespace salad::text {

/// Tuning of BpeTokenizer (never changes ids).
struct BpeTokenizerOptions {
  /// Where encode() keeps the ids of words it has already split.
  enum class Cache {
    kNone,         ///< no cache: every word runs BPE
    kSharded,      ///< one cache per tokenizer, 16 mutex-guarded shards
    kThreadLocal,  ///< one cache per (thread, tokenizer), no locks; a thread keeps the tables
                   ///< of the last 4 tokenizers it used (~1.5 MB each at the default capacity)
  };
  Cache cache = Cache::kThreadLocal;
  /// Words held per cache (a sharded cache splits it over its shards); a full cache (or shard)
  /// is emptied and refilled.
  std::size_t cache_capacity = 1 << 15;
  /// Longer words are not cached (they are rare and would evict many short ones).
  std::size_t max_cached_word_bytes = 48;
  /// Words of at least this many bytes are merged with a heap (O(n log n)); shorter ones with a
  /// linear scan per merge, which is faster for the short words that make up most text.
  std::size_t heap_merge_min_bytes = 48;

  /// Throws ConfigError naming the bad field.
  void validate() const;
};

/// A loaded tokenizer.json. Immutable after load; encode/decode are safe from many threads.
class BpeTokenizer final : public Tokenizer {
 public:
  /// Reads `tokenizer_json` (and, when present, `tokenizer_config.json` in the same folder for
  /// the bos/eos/pad token names). Throws IoError naming the file for a missing/unreadable file,
  /// invalid JSON, or an unsupported configuration piece (naming the piece and the value found).
  static std::unique_ptr<BpeTokenizer> load(const std::filesystem::path& tokenizer_json);
  static std::unique_ptr<BpeTokenizer> load(const std::filesystem::path& tokenizer_json,
                                            const BpeTokenizerOptions& options);
  ~BpeTokenizer() override;

  std::vector<int64_t> encode(std::string_view text) const override;
  /// ByteLevel decoding as Hugging Face does it (added tokens decode to their content); bytes
  /// that are not valid UTF-8 become U+FFFD.
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override;
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int64_t id) const override;
  int64_t bos_id() const override;
  int64_t eos_id() const override;
  int64_t pad_id() const override;
  std::string kind() const override { return "bpe"; }

  /// The file this tokenizer was loaded from.
  const std::filesystem::path& path() const;

  struct Impl;

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace salad::text
