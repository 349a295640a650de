// Training documents and the interleaving of DESIGN §3.
//
// A document is a chain of segments of alternating modality. A word-timed utterance is split into
// consecutive segments (text U[text_words_min, text_words_max] words, speech
// U[speech_words_min, speech_words_max] words, the first modality random unless configured); a
// speech segment is the encoder frames covering its words' time span. Utterances without word
// timings are chained, each one segment. Every segment is tokenized on its own, its words joined
// by spaces, with a leading space except at the document's start, so the teacher's input (all
// segments' tokens, concatenated) holds, for every text token the student predicts, exactly one
// position predicting the same token.
//
// Why per-segment tokens equal the full text's tokens (byte-level BPE, Qwen2.5): the Split regex
// never lets a pre-token run from a word's last character into the following " word", and NFC
// composes nothing across a space, so encode("a b") == encode("a") + encode(" b") for words with
// no whitespace at their edges. Checked on all of assets/texts/sotu.txt (1.8 M words), the
// tokenizer fixture corpus and synthetic digits/punctuation/contractions/CJK/emoji/added-token
// words: no mismatch. The one break found: words that begin or end with non-ASCII whitespace
// (U+00A0, U+3000, U+2028, ...): a whitespace run is one pre-token, so "a \u00A0 \u00A0" differs
// from its per-word pieces. Hence words and texts are normalised on the tokenizer's whitespace
// (HF's \s: U+0009-000D, U+0085, Zl, Zp, Zs), not only ASCII: every run becomes one space.
//
// Shape legend: F encoder frames, De encoder feature width.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "salad/core/error.h"
#include "salad/data/manifest.h"

namespace salad::config {
struct DataConfig;
}
namespace salad::text {
class Tokenizer;
}

namespace salad::data {

/// A data item that cannot be used; reason() is the tag SkipCounter counts it under
/// ("empty transcript", "words outside audio", "speech segment longer than context", ...).
class BadItem : public DataError {
 public:
  BadItem(std::string reason, const std::string& msg)
      : DataError(msg), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

enum class Modality : uint8_t { kText, kSpeech };

struct Segment {
  Modality modality = Modality::kText;
  /// The segment's words as tokens (for both modalities: the teacher reads them all).
  std::vector<int64_t> tokens;
  /// Speech only: [F, De] (F >= 1) the encoder frames covering the segment's words; a view into
  /// the utterance's features is fine (the packer copies).
  at::Tensor features;

  /// Student positions: tokens.size() for text, F + 2 (speech_start, frames, speech_end) for
  /// speech.
  int64_t student_length() const;
};

struct Document {
  std::string name;    ///< "source/id" ("source/id1+id2+..." when utterances are chained)
  std::string source;  ///< the data source's name
  std::vector<Segment> segments;

  int64_t student_length() const;
  int64_t teacher_length() const;  ///< sum of all segments' tokens
  /// Aligned loss positions: the tokens of text segments that some position predicts (all but
  /// the document's very first token when it starts with text).
  int64_t loss_positions() const;
  int64_t speech_frames() const;
};

struct InterleaveOptions {
  int64_t text_words_min = 10;
  int64_t text_words_max = 30;
  int64_t speech_words_min = 5;
  int64_t speech_words_max = 15;
  enum class First { kRandom, kText, kSpeech } first = First::kRandom;
  double frame_rate = 12.5;  ///< encoder frames per second
  /// Slack (s) allowed between the last word's end and the end of the features.
  double end_tolerance = 0.5;

  /// From the recipe's data section (frame rate from the encoder or the feature cache).
  static InterleaveOptions from_config(const config::DataConfig& cfg, double frame_rate);
  void validate() const;  ///< throws ConfigError naming the bad field
};

/// Splits one word-timed utterance into alternating segments. `features` is the utterance's
/// [F, De] frames (frame k covers [k, k+1) / frame_rate seconds from the utterance's start); a
/// speech segment of words i..j gets frames [floor(start_i * frame_rate),
/// ceil(end_j * frame_rate)), clamped to F and at least one frame. Segment lengths and the first
/// modality come from `rng` only, so a document is a pure function of (utterance, rng state).
/// Words are whitespace-normalised (runs of the tokenizer's whitespace, see above, -> one ASCII
/// space); blank words (an aligner's silences) are dropped. Frame bounds within 1e-6 frame of an
/// integer snap to it (so 0.56 s at 12.5 Hz ends at frame 7, despite 0.56 * 12.5 > 7 in doubles).
/// Throws BadItem: "empty transcript" (no non-blank words), "bad words" (validate_words fails),
/// "words outside audio" (a word ends more than end_tolerance after the features end), "bad
/// features" (`features` is not [F >= 1, De]). Messages name u.where and the utterance id.
Document interleave_utterance(const Utterance& u, const at::Tensor& features,
                              const text::Tokenizer& tokenizer, const InterleaveOptions& o,
                              std::mt19937_64& rng);

/// Utterance-level interleaving for utterances without word timings: each utterance (its
/// `text`, whitespace-normalised) is one segment, modalities alternate, the first from `o`/`rng`.
/// features[i] is utterance i's [F_i, De]. Throws BadItem("empty transcript") when an utterance
/// has no words.
Document chain_utterances(const std::vector<const Utterance*>& utterances,
                          const std::vector<at::Tensor>& features, const text::Tokenizer& tokenizer,
                          const InterleaveOptions& o, std::mt19937_64& rng);

/// A text-replay document: all of `text` (whitespace-normalised) as one text segment. Throws
/// BadItem("empty transcript") for blank text.
Document text_document(const std::string& name, const std::string& source, const std::string& text,
                       const text::Tokenizer& tokenizer);

/// Cuts a document that does not fit the context into parts that do, at segment boundaries (a
/// text segment longer than the room left is cut at a token boundary). A document fits when
/// student_length() <= context and teacher_length() <= context: a text segment takes its tokens
/// on both sides, a speech segment F + 2 student positions and its tokens on the teacher's side
/// only (a segment of many short words can need more teacher positions than frames). Each part is
/// a document of its own (positions restart), named "<name>#1", "<name>#2", ...; the
/// concatenation of the parts' segments holds every token and frame of `d` in order. Returns {d}
/// (name unchanged) when it fits. Throws BadItem("speech segment longer than context"), naming the
/// document, when one speech segment cannot fit at all (F + 2 or its tokens above the context).
std::vector<Document> split_to_context(Document d, int64_t context);

}  // namespace salad::data
