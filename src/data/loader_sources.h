// Private pieces of data::Loader: deterministic hashing and permutations (identical across
// standard libraries), and the data sources (speech manifests, text corpora) with the building
// of one item's documents. loader.cpp holds the draw order, the threads and the cursor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "salad/data/document.h"
#include "salad/data/loader.h"
#include "salad/data/manifest.h"

namespace salad::data::loader_detail {

// ---- Deterministic randomness -----------------------------------------------------------------
// std::shuffle and std::uniform_int_distribution are implementation-defined; the data order must
// not depend on the standard library, so draws are built from splitmix64 and mt19937_64 (whose
// output the standard fixes) only.

/// The splitmix64 finalizer: a bijective 64-bit mix.
uint64_t mix64(uint64_t x);
/// A hash of a sequence of values (the first is a domain tag so streams never collide).
uint64_t hash_values(std::initializer_list<uint64_t> values);
/// A double in [0, 1) from the top 53 bits of `h`.
double unit_double(uint64_t h);
/// Unbiased integer in [0, n) (n >= 1) by rejection.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);
/// A permutation of 0..n-1 (Fisher–Yates) seeded by `seed`.
std::vector<int64_t> permutation(int64_t n, uint64_t seed);

enum HashTag : uint64_t {
  kPermutationTag = 0x7065726d75746531ull,  // per (source, epoch) item order
  kMixTag = 0x6d69787475726531ull,          // the source of draw k
  kItemTag = 0x6974656d726e6731ull,         // the interleaving rng of an item
};

// ---- Sources -----------------------------------------------------------------------------------

/// What the workers need to build documents (read-only, shared by all threads).
struct BuildContext {
  const text::Tokenizer* tokenizer = nullptr;
  const FeatureFn* features = nullptr;
  const InterleaveOptions* interleave = nullptr;
  int64_t context = 0;
  int64_t feature_dim = 0;  ///< De of every utterance's features (> 0 when a speech source exists)
  bool codes = false;       ///< features are integer codes (else floating point)
};

/// The documents of one item, or why it was skipped.
struct BuiltItem {
  std::vector<Document> parts;  ///< split_to_context's parts, in order (empty when skipped)
  bool split = false;           ///< the document was longer than the context
  std::string skip_reason;      ///< empty: usable
  std::string where;            ///< "file:line" of the item (for skip messages)
  std::string message;
};

class TextFile;

/// One opened source: its items, in file order. Immutable after open(); build() is called from
/// several threads at once.
class Source {
 public:
  /// Reads a manifest (speech) or indexes a corpus (text). Throws IoError / DataError naming the
  /// file.
  static std::unique_ptr<Source> open(const SourceSpec& spec, int64_t utterance_group,
                                      double max_skip_fraction);
  ~Source();

  const SourceSpec& spec() const { return spec_; }
  int64_t items() const;
  /// "412 items (3300 utterances, 12 bad lines skipped)" for the construction log.
  std::string describe() const;
  /// Lines skipped while reading (manifest lines that do not parse); empty for text corpora,
  /// whose bad lines are item skips.
  const SkipCounter& read_skips() const { return manifest_.skipped; }
  /// The item's documents (built with `rng`) split to the context. Bad data becomes a skip:
  /// anything the FeatureFn throws ("missing features"), a features tensor that is not
  /// [F >= 1, feature_dim] of the expected dtype ("bad features"), BadItem / DataError from the
  /// document builders. Anything else that throws (a bug) propagates.
  BuiltItem build(int64_t item, std::mt19937_64& rng, const BuildContext& c) const;

 private:
  Source() = default;
  BuiltItem build_speech(int64_t item, std::mt19937_64& rng, const BuildContext& c) const;
  BuiltItem build_text(int64_t item, const BuildContext& c) const;

  SourceSpec spec_;
  // speech
  Manifest manifest_;
  std::vector<std::pair<int64_t, int64_t>> groups_;  ///< [begin, end) utterances of each item
  // text
  struct Line {
    int64_t offset = 0;
    int64_t length = 0;
    int64_t number = 0;  ///< 1-based line number
  };
  std::unique_ptr<TextFile> file_;
  std::vector<Line> lines_;
  bool jsonl_ = false;
};

// ---- Data identity (loader_cursor.cpp) ----

/// LoaderCursor::identity of a loader whose sources have `counts` items: every option and source
/// property that changes the stream of batches ("sources[0].items" -> "40", "pack.context", ...).
std::map<std::string, std::string> data_identity(const LoaderOptions& o,
                                                 const std::vector<int64_t>& counts);
/// 16 hex digits hashing the identity.
std::string fingerprint_of(const std::map<std::string, std::string>& identity);
/// "sources[1].items: '40' then, '41' now; ..." for every key that differs.
std::string identity_changes(const std::map<std::string, std::string>& saved,
                             const std::map<std::string, std::string>& now);

}  // namespace salad::data::loader_detail
