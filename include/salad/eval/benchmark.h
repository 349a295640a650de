// Multiple-choice benchmarks (DESIGN §3 "Evaluation", §4 "Benchmark"), scored the way
// lm-evaluation-harness scores them: every choice is a continuation of the context, its
// log-likelihood the sum of log P(token | everything before) over the continuation's tokens.
//
//   acc      = mean over items of [argmax_j loglik_j == answer]
//   acc_norm = mean over items of [argmax_j loglik_j / bytes_j == answer]
//
// bytes_j is the number of UTF-8 bytes of choice j's continuation string, its leading space
// included (lm-eval's acc_norm divides by the continuation's length in characters; bytes are the
// same for ASCII and do not depend on a Unicode library). Ties go to the first choice (argmax).
//
// One item's text, with k shots (few-shot examples):
//
//   "<shot 1 context> <shot 1 answer>\n\n ... <shot k context> <shot k answer>\n\n<context>
//   <choice>"
//
// A choice's continuation is " " + choice, unless the choice starts with whitespace; trailing
// whitespace of the context moves to the continuation (as lm-eval does), so "Answer: " + "B" is
// scored as "Answer:" + " B". The pieces (each shot's context, each " answer\n\n", the context,
// the continuation) are tokenized on their own, like a training document's segments, and chained
// into one data::Document per (item, choice):
//
//   [shot contexts and answers..., context, continuation]
//
// The continuation is always text. In Mode::kModelSpeech the item's context is a speech segment
// (its audio's encoder frames, through the adapter, between speech_start / speech_end) and so is
// every shot context that has audio; the other modes read every piece as text (the teacher on
// the text-only rows, the student on the same text). A choice's log-likelihood is read at the
// last len(continuation tokens) aligned loss positions of its document (data/batch.h), which are
// exactly the continuation's tokens (its first one predicted by the context's last token, or by
// speech_end after a spoken context).
//
// Shots: up to ScoreOptions::shots, drawn without replacement from the few-shot split, or, when
// the benchmark has none, from the other items (never the item itself), by an RNG seeded from
// (seed, item index): the same shots in every mode and every run. Shots are dropped, the first
// first, until the longest choice's document fits the context window on both the student's and
// the teacher's side (the packer needs both); when even the shot-less document does not fit, the
// context is cut from the left (its first tokens, or first frames and tokens when spoken) and the
// item counts as truncated.
//
// Bad data is counted, not fatal: a line that does not parse or is not a usable item (reasons
// "bad json", "missing field", "bad field", "empty context", "too few choices", "answer out of
// range"; few-shot lines under "fewshot: <reason>") is logged with file:line and skipped when
// reading; when scoring, an item whose audio is missing or unreadable (speech mode: "missing
// audio"), whose choice has no tokens ("empty choice") or whose longest choice alone does not fit
// the context ("choice longer than context") is skipped.
//
// Shape legend: F encoder frames, De encoder feature width, D width, V vocab.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "salad/data/loader.h"

namespace salad::models {
class SpeechLM;
}
namespace salad::text {
class Tokenizer;
}

namespace salad::eval {

struct BenchItem {
  std::string id;
  std::string context;
  std::vector<std::string> choices;  ///< >= 2
  int64_t answer = 0;                ///< index into choices
  /// The spoken context: absolute (resolved against the JSONL's folder); empty when none.
  std::filesystem::path context_audio;
  std::string where;  ///< "file.jsonl:LINE", for messages
};

struct Benchmark {
  std::string name;
  std::vector<BenchItem> items;
  std::vector<BenchItem> fewshot;  ///< the few-shot split; empty: shots come from `items`
  /// Lines skipped while reading, by reason (few-shot split: "fewshot: <reason>").
  std::map<std::string, int64_t> skipped;
};

/// Parses one benchmark line: {"id" (string or integer), "context", "choices" (list of strings),
/// "answer" (integer), "context_audio" (optional path, relative to `base_dir`)}; unknown keys are
/// ignored. Throws data::BadItem with one of the reasons above.
BenchItem parse_benchmark_line(const std::string& line, const std::filesystem::path& base_dir);

/// Reads a benchmark JSONL and, when `fewshot` is not empty, its few-shot split. Bad lines are
/// logged (file:line) and counted in Benchmark::skipped; blank lines are ignored. Throws IoError
/// naming the file when one cannot be read.
Benchmark read_benchmark(const std::string& name, const std::filesystem::path& jsonl,
                         const std::filesystem::path& fewshot = {});

enum class Mode {
  kTeacherText,  ///< the original text LLM on the text version (the baseline)
  kModelText,    ///< the student decoder on the text version
  kModelSpeech,  ///< the student with the contexts spoken
};

/// "teacher_text" | "model_text" | "model_speech".
std::string mode_name(Mode mode);

struct ScoreOptions {
  int64_t shots = 5;       ///< at most this many few-shot examples (0: zero-shot)
  uint64_t seed = 1234;    ///< shot selection
  int64_t context = 2048;  ///< context window (positions) of one (item, choice) document
  int64_t batch_rows = 8;  ///< packed rows per forward (several documents per row)
  int64_t chunk = 512;     ///< positions per logits chunk ([chunk, V] float32 at a time)
  bool progress = false;   ///< log progress at info
  std::string fewshot_separator = "\n\n";  ///< ends every shot's answer

  void validate() const;  ///< throws ConfigError naming the bad field
};

struct ItemResult {
  int64_t index = 0;  ///< into Benchmark::items
  std::string id;
  std::vector<double> loglik;  ///< per choice: sum of log P over the continuation's tokens
  std::vector<int64_t> bytes;  ///< per choice: UTF-8 bytes of the continuation (leading space)
  int64_t pred = -1;           ///< argmax loglik
  int64_t pred_norm = -1;      ///< argmax loglik / bytes
  int64_t answer = 0;
  int64_t shots = 0;                  ///< shots used (after dropping to fit)
  std::vector<int64_t> shot_indices;  ///< the shots used, in order: indices into the few-shot
                                      ///< split, or into Benchmark::items when it has none
  bool truncated = false;             ///< the context was cut from the left to fit
};

struct ModeResult {
  Mode mode = Mode::kTeacherText;
  double acc = 0;       ///< over scored items (0 when none)
  double acc_norm = 0;  ///< over scored items (0 when none)
  int64_t scored = 0;
  int64_t truncated = 0;
  /// Items not scored, by reason: the reading skips of the Benchmark plus this mode's own.
  std::map<std::string, int64_t> skipped;
  std::vector<ItemResult> items;  ///< scored items, in benchmark order
};

/// The continuation scored for `choice` after `context`: {context without trailing whitespace,
/// that whitespace + (" " unless the choice starts with whitespace) + choice}. Whitespace here is
/// ASCII space, tab, CR and LF.
std::pair<std::string, std::string> split_continuation(const std::string& context,
                                                       const std::string& choice);

/// Scores every item of `b` in `mode`. `features` gives the [F, De] encoder features of an
/// utterance {id = item id, audio = context_audio, text = context, where} (speech mode only; may
/// be empty otherwise); it may throw (IoError / DataError: the item is counted as "missing
/// audio"). Runs without gradients, the model in eval mode (its training mode is restored after).
/// Throws ConfigError for bad options, a teacher mode without a teacher, or speech mode without
/// `features`.
ModeResult score_benchmark(models::SpeechLM& lm, const text::Tokenizer& tokenizer,
                           const data::FeatureFn& features, const Benchmark& b, Mode mode,
                           const ScoreOptions& o);

/// reference.acc - other.acc (acc_norm when `norm`) over the items scored in both (matched by
/// index): the gap of DESIGN §3 is accuracy_gap(teacher_text, model_speech). 0 when none is
/// shared.
double accuracy_gap(const ModeResult& reference, const ModeResult& other, bool norm = false);

}  // namespace salad::eval
