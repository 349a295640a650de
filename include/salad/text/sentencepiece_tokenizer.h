// SentencePiece tokenizers (`.model` files): encode, decode, and training a model from a corpus.
//
// libsalad does not link libsentencepiece: Debian's copy exports its bundled protobuf-lite, which
// crashes a process that also loads LibTorch's libprotobuf. The work is done by the module
// libsalad_spm.so, which libsalad dlopen()s in isolation (RTLD_LOCAL | RTLD_DEEPBIND) on first
// use. It is looked for in the folder that holds libsalad itself (where the build and `install`
// put it); the environment variable SALAD_SPM_MODULE overrides that with a path to the module.
// RTLD_DEEPBIND is incompatible with AddressSanitizer's runtime: ASan builds cannot use this class.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "salad/text/tokenizer.h"

namespace salad::text {

/// A loaded SentencePiece model. Immutable after load; every method may be called from several
/// threads at once (sentencepiece's Encode/Decode are const and keep no per-call state in the
/// processor; this class adds none).
class SentencePieceTokenizer final : public Tokenizer {
 public:
  /// Loads a `.model` file (a serialized sentencepiece ModelProto). Throws IoError naming the
  /// file when it cannot be read or is not a SentencePiece model, or when the module
  /// libsalad_spm.so cannot be loaded (the message lists what was tried).
  static std::unique_ptr<SentencePieceTokenizer> load(const std::filesystem::path& model);

  /// Same, from the model's bytes (e.g. stored in a checkpoint); `name` is used in messages.
  static std::unique_ptr<SentencePieceTokenizer> from_bytes(std::string_view serialized,
                                                            std::string name);

  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  /// Ids of the model's normalisation of `text` (for the default nmt_nfkc rule: NFKC, whitespace
  /// folded), no BOS/EOS. Invalid UTF-8 is first replaced by U+FFFD, one per maximal invalid
  /// subsequence (as Hugging Face / Rust's from_utf8_lossy do); nmt_nfkc then drops U+FFFD.
  std::vector<int64_t> encode(std::string_view text) const override;
  /// Text of `ids` (control tokens such as BOS/EOS/PAD decode to nothing). Throws DataError
  /// naming the first id outside [0, vocab_size()).
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override;
  /// The id of an exact piece ("▁the", "<0x41>", "<unk>"), nullopt when absent.
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int64_t id) const override;
  int64_t bos_id() const override;
  int64_t eos_id() const override;
  int64_t pad_id() const override;
  /// The unknown-piece id (every SentencePiece model has one).
  int64_t unk_id() const;
  std::string kind() const override { return "sentencepiece"; }

  /// The file or name the model was loaded from (for messages).
  const std::string& name() const { return name_; }

 private:
  struct Model;
  SentencePieceTokenizer(std::unique_ptr<Model> model, std::string name);

  std::unique_ptr<Model> model_;
  std::string name_;
  int64_t vocab_size_;
};

/// Options of train_sentencepiece(): a subset of sentencepiece's TrainerSpec, with the same
/// names. The special ids default to unk 0, bos 1, eos 2, pad 3 (sentencepiece's own default has
/// no pad); -1 leaves bos/eos/pad out of the vocabulary.
struct SentencePieceTrainOptions {
  int64_t vocab_size = 8000;        ///< total, with special, user and byte pieces (char: at most)
  std::string model_type = "bpe";   ///< unigram | bpe | char | word
  double character_coverage = 1.0;  ///< in [0.98, 1]; rarer characters become <unk>/bytes
  int64_t input_sentence_size = 0;  ///< sample at most this many lines (0: all; else > 100)
  bool shuffle_input_sentence = true;  ///< sample randomly rather than take the first lines
  /// sentencepiece's random seed (in [0, 2^32 - 2]). sentencepiece 0.1.97 itself draws no
  /// random numbers in training with these options (its line sampler has a fixed seed), so
  /// training is deterministic whatever the seed; it is passed on for versions that do.
  int64_t seed = 1234;
  /// Trainer threads, in [1, 128]. The result is deterministic for a given value; bpe's does
  /// not depend on it, unigram's does in the last digits of scores (sums are split per thread),
  /// which can reorder near-tied pieces.
  int64_t num_threads = 1;
  /// Characters outside the vocabulary become <0xNN> byte pieces instead of <unk> (bpe and
  /// unigram only; reserves 256 ids).
  bool byte_fallback = true;
  /// Pieces always kept whole (no commas: sentencepiece separates the list with commas).
  std::vector<std::string> user_defined_symbols;
  int64_t unk_id = 0;
  int64_t bos_id = 1;
  int64_t eos_id = 2;
  int64_t pad_id = 3;
  int64_t max_sentence_length = 4192;  ///< bytes; longer lines are skipped
  /// The normaliser stored in the model and applied by encode(): nmt_nfkc (NFKC, some control
  /// characters and U+FFFD removed), nfkc, nmt_nfkc_cf / nfkc_cf (plus case folding) or
  /// identity (no Unicode normalisation). Whitespace runs are folded and ends trimmed with all.
  std::string normalization_rule_name = "nmt_nfkc";
  bool verbose = false;  ///< let sentencepiece log its progress to stderr (else errors only)

  /// Throws ConfigError naming the first invalid field, its value and the allowed range.
  void validate() const;
};

/// Trains a model on a UTF-8 text file (one sentence a line; empty lines are ignored, invalid
/// UTF-8 is replaced by U+FFFD) and writes `<model_prefix>.model` and `<model_prefix>.vocab`,
/// each atomically. The output is a function of the corpus and options only (byte-identical on
/// a rerun). Throws ConfigError for invalid options, IoError when the corpus cannot be read or
/// the outputs cannot be written, Error (naming the corpus and quoting sentencepiece) when the
/// corpus has no text or cannot fill `vocab_size` pieces.
void train_sentencepiece(const std::filesystem::path& corpus,
                         const std::filesystem::path& model_prefix,
                         const SentencePieceTrainOptions& options);

}  // namespace salad::text
