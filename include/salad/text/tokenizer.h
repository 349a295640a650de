// The tokenizer interface: Hugging Face tokenizer.json byte-level BPE (Qwen2.5) and
// SentencePiece .model files behind one API.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace salad::text {

/// Encodes UTF-8 text to token ids and back. Implementations are immutable after load and
/// safe to use from several threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Token ids of `text`, with no BOS/EOS added. Invalid UTF-8 is replaced by U+FFFD (as
  /// Hugging Face does), never an error.
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;

  /// The text of `ids`. Throws DataError naming the first id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;

  /// Number of ids (regular vocabulary plus added/special tokens); ids are < vocab_size().
  virtual int64_t vocab_size() const = 0;

  /// The id of a token's exact string form (vocabulary entry or added token), if any.
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;

  /// The string form of one id (as stored in the vocabulary). Throws DataError when out of range.
  virtual std::string id_to_token(int64_t id) const = 0;

  /// Special ids, -1 when the tokenizer has none.
  virtual int64_t bos_id() const { return -1; }
  virtual int64_t eos_id() const { return -1; }
  virtual int64_t pad_id() const { return -1; }

  /// "bpe" or "sentencepiece".
  virtual std::string kind() const = 0;
};

/// Loads by file type: `*.json` is a Hugging Face tokenizer.json, `*.model` a SentencePiece
/// model, a folder means its tokenizer.json (else tokenizer.model). Throws IoError / DataError
/// naming the file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

}  // namespace salad::text
