// Private pieces of BpeTokenizer: bpe_tokenizer.cpp loads a tokenizer.json into Impl,
// bpe_encode.cpp runs the encode pipeline (UTF-8 repair, added tokens, NFC, PCRE2 split) and
// bpe_merge.cpp the BPE merges and the word cache.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "salad/text/utf8.h"
#include <unordered_map>
#include <utility>
#include <vector>

#include "salad/text/bpe_tokenizer.h"

namespace salad::text::bpe {

using text::is_ascii;
using text::is_valid_utf8;
using text::utf8_lossy;

/// The Split pattern with \s / \S spelled out as Oniguruma's Unicode classes (what Hugging
/// Face's tokenizers compile), for PCRE2. Throws std::invalid_argument for \S inside [...].
std::string onig_whitespace(const std::string& pattern);

// ---- UTF-8 ----------------------------------------------------------------------------------

/// Byte length of the UTF-8 sequence starting with `lead` (1 for a stray byte).
inline std::size_t utf8_len(unsigned char lead) {
  return lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

/// NFC of valid UTF-8 `s`: `s` itself when nothing can change (ASCII), else a view into `buf`.
std::string_view nfc(std::string_view s, std::string& buf);

// ---- GPT-2 byte-level symbols ---------------------------------------------------------------

/// The code point GPT-2's bytes_to_unicode() gives byte `b`.
char32_t byte_to_symbol(unsigned char b);
/// UTF-8 of the symbols of `bytes` (the form vocabulary entries are stored in).
std::string to_byte_level(std::string_view bytes);
/// Hugging Face's ByteLevel decoder for one token: the bytes of its symbols when every
/// character of `token` is a byte-level symbol, else `token` unchanged.
std::string from_byte_level(std::string_view token);

// ---- Added tokens ---------------------------------------------------------------------------

/// Finds added tokens in text: leftmost match first, the longest one at that position (the
/// leftmost-longest rule of Hugging Face's added-vocabulary matcher).
class AddedTokenMatcher {
 public:
  void add(std::string content, int32_t id);
  bool empty() const { return count_ == 0; }

  /// Calls on_text(segment) for each non-empty stretch between tokens and on_token(id) for each
  /// token, in text order.
  template <class OnText, class OnToken>
  void split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
    if (count_ == 0) {
      if (!text.empty()) on_text(text);
      return;
    }
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const auto& bucket = by_first_[static_cast<unsigned char>(text[i])];
      if (bucket.empty()) continue;
      for (const Entry& e : bucket) {  // longest first
        if (e.content.size() <= text.size() - i &&
            std::memcmp(text.data() + i, e.content.data(), e.content.size()) == 0) {
          if (i > start) on_text(text.substr(start, i - start));
          on_token(e.id);
          start = i + e.content.size();
          i = start - 1;
          break;
        }
      }
    }
    if (start < text.size()) on_text(text.substr(start));
  }

 private:
  struct Entry {
    std::string content;
    int32_t id;
  };
  std::array<std::vector<Entry>, 256> by_first_;
  std::size_t count_ = 0;
};

// ---- Split regex (PCRE2) --------------------------------------------------------------------

/// A Split pre-tokenizer with behaviour Isolated: each match is a piece and so is each stretch
/// between matches. The pattern is compiled once (UTF + UCP, JIT when available); matching
/// uses per-thread match data, so one SplitRegex serves many threads.
class SplitRegex {
 public:
  /// Throws std::invalid_argument with PCRE2's message and offset when the pattern is invalid.
  SplitRegex(const std::string& pattern, bool literal);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  bool jit() const { return jit_; }

  /// Calls emit(piece) for the pieces of valid UTF-8 `text`, in order, skipping empty ones.
  template <class F>
  void split(std::string_view text, F&& emit) const {
    void* const thread = thread_state();  // once per call: thread_local access is not free
    std::size_t prev = 0, pos = 0;
    const std::size_t n = text.size();
    while (pos < n) {
      std::size_t b, e;
      if (!find(thread, text, pos, b, e)) break;
      if (b == e) {  // an empty match only marks a boundary
        if (b > prev) emit(text.substr(prev, b - prev));
        prev = b;
        pos = b + utf8_len(static_cast<unsigned char>(text[b]));
        continue;
      }
      if (b > prev) emit(text.substr(prev, b - prev));
      emit(text.substr(b, e - b));
      prev = pos = e;
    }
    if (prev < n) emit(text.substr(prev));
  }

  /// The calling thread's match data (for find).
  static void* thread_state();
  /// The first match in `text` starting at or after `start`, as [begin, end). False when none.
  /// `thread` is this thread's thread_state(). Throws DataError when PCRE2 gives up (resource
  /// limits), naming the error.
  bool find(void* thread, std::string_view text, std::size_t start, std::size_t& begin,
            std::size_t& end) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// ---- Merges ---------------------------------------------------------------------------------

/// (left id, right id) -> (rank, merged id), open addressing on the packed 64-bit pair.
class MergeMap {
 public:
  static constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();
  struct Value {
    int32_t rank;
    int32_t id;
  };

  /// Sizes the table for `n` pairs (call before insert).
  void reserve(std::size_t n);
  /// Sets the pair's value (a later duplicate replaces an earlier one, as in Hugging Face).
  void insert(int32_t left, int32_t right, int32_t rank, int32_t id);
  std::size_t size() const { return size_; }

  Value find(int32_t left, int32_t right) const {
    const uint64_t key = pack(left, right);
    for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return {s.rank, s.id};
      if (s.key == kEmpty) return {kNoRank, -1};
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    int32_t rank = kNoRank;
    int32_t id = -1;
  };
  static uint64_t pack(int32_t l, int32_t r) {
    return (uint64_t{static_cast<uint32_t>(l)} << 32) | static_cast<uint32_t>(r);
  }
  std::size_t slot_of(uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  int shift_ = 64;
  std::size_t size_ = 0;
};

/// Reusable buffers of one thread's BPE runs.
struct BpeScratch {
  std::vector<int32_t> syms, ranks, merged;
  struct Node {
    int32_t id, prev, next;
  };
  struct Candidate {
    int32_t rank, pos, right, left_id, right_id, merged_id;
  };
  std::vector<Node> nodes;
  std::vector<Candidate> heap;
};

/// Appends to `out` the ids of `word` (raw bytes): its bytes' symbols merged pair by pair, the
/// lowest merge rank first and, among equal ranks, the leftmost. Words of at least
/// `heap_min_bytes` bytes use a heap (O(n log n)), shorter ones a scan (faster when small).
void bpe_merge(const MergeMap& merges, const std::array<int32_t, 256>& byte_ids,
               std::string_view word, std::size_t heap_min_bytes, BpeScratch& scratch,
               std::vector<int32_t>& out);

// ---- Word cache -----------------------------------------------------------------------------

inline uint64_t load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ull;
  return x ^ (x >> 32);
}

/// A hash of a word's bytes for the word cache. Words are short (5 bytes on average in English),
/// so the loads overlap instead of looping over a tail byte by byte.
inline uint64_t hash_word(std::string_view w) {
  const char* p = w.data();
  const std::size_t n = w.size();
  uint64_t h = n * 0x9E3779B97F4A7C15ull;
  if (n >= 8) {
    for (std::size_t i = 0; i + 8 < n; i += 8) h = mix64(h ^ load64(p + i));
    return mix64(h ^ load64(p + n - 8));
  }
  if (n >= 4) return mix64(h ^ ((load32(p) << 32) | load32(p + n - 4)));
  if (n > 0) {
    const auto b = [&](std::size_t i) { return uint64_t{static_cast<unsigned char>(p[i])}; };
    return mix64(h ^ (b(0) << 16) ^ (b(n / 2) << 8) ^ b(n - 1));
  }
  return mix64(h);
}

/// a[0, n) == b[0, n), without a call for the short keys of the word cache.
inline bool same_bytes(const char* a, const char* b, std::size_t n) {
  if (n >= 8) {
    if (n > 16) return std::memcmp(a, b, n) == 0;
    return load64(a) == load64(b) && load64(a + n - 8) == load64(b + n - 8);
  }
  if (n >= 4) return load32(a) == load32(b) && load32(a + n - 4) == load32(b + n - 4);
  if (n == 0) return true;
  return a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1];
}

/// Word -> ids, open addressing; keys and ids live in one arena. Not thread-safe. When it holds
/// `capacity` words it is emptied (cheap, and keeps memory bounded).
class WordTable {
 public:
  explicit WordTable(std::size_t capacity);
  /// Appends the ids of `word` to `out`; false when absent.
  bool lookup(std::string_view word, uint64_t hash, std::vector<int64_t>& out) const;
  void insert(std::string_view word, uint64_t hash, const std::vector<int32_t>& ids);

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0;
    uint16_t key_len = 0;
    uint16_t n_ids = 0;  // 0: empty slot
  };
  void clear();
  std::vector<Slot> slots_;
  std::string arena_;
  std::size_t mask_ = 0;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
};

/// The word cache of one tokenizer, in the flavour BpeTokenizerOptions::cache chose.
class WordCache {
 public:
  explicit WordCache(const BpeTokenizerOptions& options);
  ~WordCache();
  bool enabled() const { return kind_ != BpeTokenizerOptions::Cache::kNone; }

  /// Access for one encode() call on the calling thread.
  class Session {
   public:
    bool lookup(std::string_view word, uint64_t hash, std::vector<int64_t>& out) const;
    void insert(std::string_view word, uint64_t hash, const std::vector<int32_t>& ids) const;

   private:
    friend class WordCache;
    const WordCache* cache_ = nullptr;
    WordTable* local_ = nullptr;  // kThreadLocal: this thread's table
  };
  Session session() const;

 private:
  static constexpr int kShards = 16;
  struct alignas(64) Shard {
    std::mutex mutex;
    std::unique_ptr<WordTable> table;
  };
  BpeTokenizerOptions::Cache kind_;
  std::size_t capacity_;
  uint64_t instance_;  // never reused: keys the thread-local tables
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace salad::text::bpe

namespace salad::text {

/// Everything a loaded tokenizer.json holds, in the form encode/decode use.
struct BpeTokenizer::Impl {
  std::filesystem::path path;
  BpeTokenizerOptions options;

  // Encoding, in pipeline order.
  bpe::AddedTokenMatcher raw_added;         // added tokens with normalized = false
  bool nfc = false;                         // normalizer NFC
  bpe::AddedTokenMatcher normalized_added;  // added tokens with normalized = true (NFC content)
  std::vector<std::unique_ptr<bpe::SplitRegex>> splits;
  std::array<int32_t, 256> byte_ids{};  // byte -> id of its symbol
  bpe::MergeMap merges;
  bool ignore_merges = false;                          // a word in the vocabulary is one token
  std::unordered_map<std::string, int32_t> raw_vocab;  // ignore_merges: raw bytes -> id
  std::unique_ptr<bpe::WordCache> cache;

  // Lookups and decoding, by id (vocab_size entries).
  std::unordered_map<std::string, int32_t> token_ids;  // string form -> id (added tokens win)
  std::vector<std::string> tokens;                     // id -> string form
  std::vector<uint8_t> assigned;                       // id -> has a token
  std::string decoded;                                 // bytes of every id, back to back
  std::vector<uint32_t> decoded_offsets;               // id -> [off[id], off[id + 1])
  int64_t bos = -1, eos = -1, pad = -1;

  std::vector<int64_t> encode(std::string_view text) const;
};

}  // namespace salad::text
