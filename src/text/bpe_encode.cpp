// The encode pipeline of BpeTokenizer: UTF-8 repair, added tokens, NFC, the PCRE2 Split, and
// the loop that feeds words to the cache and BPE (bpe_merge.cpp). Loading is in bpe_tokenizer.cpp.
#include <utf8proc.h>

#include <algorithm>

#include "salad/core/error.h"
#include "text/bpe_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace salad::text::bpe {

// ---- NFC ------------------------------------------------------------------------------------

namespace {

// Appends NFC(s) to out; s is valid UTF-8.
void append_nfc(std::string_view s, std::string& out) {
  thread_local std::vector<utf8proc_int32_t> cps;
  const auto options = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  const auto len = static_cast<utf8proc_ssize_t>(s.size());
  if (cps.size() < s.size() + 4) cps.resize(s.size() + 4);
  utf8proc_ssize_t n = utf8proc_decompose(p, len, cps.data(), cps.size(), options);
  if (n > static_cast<utf8proc_ssize_t>(cps.size())) {
    cps.resize(n);
    n = utf8proc_decompose(p, len, cps.data(), cps.size(), options);
  }
  if (n < 0) {  // cannot happen for valid UTF-8; keep the text rather than lose it
    out.append(s);
    return;
  }
  // utf8proc_reencode composes in place and writes UTF-8 over the same buffer.
  const utf8proc_ssize_t bytes = utf8proc_reencode(cps.data(), n, options);
  if (bytes < 0) {
    out.append(s);
    return;
  }
  out.append(reinterpret_cast<const char*>(cps.data()), static_cast<std::size_t>(bytes));
}

}  // namespace

std::string_view nfc(std::string_view s, std::string& buf) {
  if (is_ascii(s)) return s;
  // Every ASCII character is a normalization boundary (a starter that never composes with what
  // precedes it), so only each non-ASCII run, together with the ASCII starter before it, needs
  // utf8proc; the rest is copied.
  buf.clear();
  buf.reserve(s.size() + 16);
  const std::size_t n = s.size();
  std::size_t copied = 0, i = 0;
  while (i < n) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const std::size_t start = i > copied ? i - 1 : i;
    std::size_t end = i;
    while (end < n && static_cast<unsigned char>(s[end]) >= 0x80) ++end;
    buf.append(s.data() + copied, start - copied);
    append_nfc(s.substr(start, end - start), buf);
    copied = i = end;
  }
  buf.append(s.data() + copied, n - copied);
  return buf;
}

// ---- GPT-2 byte-level symbols ---------------------------------------------------------------

namespace {

struct ByteLevelTables {
  std::array<char32_t, 256> symbol{};
  std::array<int16_t, 324> byte_of{};  // symbol code point -> byte, -1 when not a symbol
  ByteLevelTables() {
    byte_of.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      symbol[b] = printable ? static_cast<char32_t>(b) : next++;
      byte_of[symbol[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& byte_level() {
  static const ByteLevelTables tables;
  return tables;
}

void append_utf8(char32_t c, std::string& out) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
}

}  // namespace

char32_t byte_to_symbol(unsigned char b) { return byte_level().symbol[b]; }

std::string to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(byte_to_symbol(static_cast<unsigned char>(c)), out);
  return out;
}

std::string from_byte_level(std::string_view token) {
  const auto& t = byte_level();
  std::string out;
  out.reserve(token.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(token.data());
  auto left = static_cast<utf8proc_ssize_t>(token.size());
  while (left > 0) {
    utf8proc_int32_t cp = -1;
    const utf8proc_ssize_t len = utf8proc_iterate(p, left, &cp);
    if (len <= 0 || cp < 0 || cp >= static_cast<utf8proc_int32_t>(t.byte_of.size()) ||
        t.byte_of[cp] < 0) {
      return std::string(token);
    }
    out.push_back(static_cast<char>(t.byte_of[cp]));
    p += len;
    left -= len;
  }
  return out;
}

// ---- Added tokens ---------------------------------------------------------------------------

void AddedTokenMatcher::add(std::string content, int32_t id) {
  auto& bucket = by_first_[static_cast<unsigned char>(content.at(0))];
  const auto pos = std::find_if(bucket.begin(), bucket.end(),
                                [&](const Entry& e) { return e.content.size() < content.size(); });
  bucket.insert(pos, Entry{std::move(content), id});
  ++count_;
}

// ---- Split regex ----------------------------------------------------------------------------

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

// Match data and (once a match needs it) a larger JIT stack, per thread: pcre2 match data must
// not be shared between threads, and one per thread serves every pattern.
struct Pcre2Thread {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  Pcre2Thread() {
    data = pcre2_match_data_create(4, nullptr);
    if (!data) throw std::bad_alloc();
  }
  ~Pcre2Thread() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
  void grow_jit_stack() {
    if (stack) throw DataError("tokenizer split regex: PCRE2 JIT stack limit (16 MiB) exceeded");
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (!context || !stack) throw std::bad_alloc();
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
};

thread_local Pcre2Thread tls_pcre2;

}  // namespace

std::string onig_whitespace(const std::string& pattern) {
  // Hugging Face compiles the Split regex with Oniguruma, whose Unicode \s is U+0009-000D,
  // U+0085 and the Zl/Zp/Zs categories. PCRE2's \s (UCP) also matches U+180E (Mongolian vowel
  // separator, now Cf), which would split " \u180E" differently; spell the class out.
  static const std::string kSpace = "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Zl}\\p{Zp}\\p{Zs}";
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char n = pattern[++i];
      if (n == 's') {
        out += in_class ? kSpace : "[" + kSpace + "]";
      } else if (n == 'S') {
        if (in_class) throw std::invalid_argument("\\S inside a character class is not supported");
        out += "[^" + kSpace + "]";
      } else {
        out += c;
        out += n;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

SplitRegex::SplitRegex(const std::string& source, bool literal) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  uint32_t flags = PCRE2_UTF | PCRE2_UCP;
  if (literal) flags |= PCRE2_LITERAL;
  const std::string pattern = literal ? source : onig_whitespace(source);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   flags, &err, &offset, nullptr);
  if (!code) {
    throw std::invalid_argument(pcre2_message(err) + " at offset " + std::to_string(offset));
  }
  code_ = code;
  // Without JIT (a platform PCRE2 cannot JIT for) matching is slower but gives the same pieces.
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

SplitRegex::~SplitRegex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void* SplitRegex::thread_state() { return &tls_pcre2; }

bool SplitRegex::find(void* thread, std::string_view text, std::size_t start, std::size_t& begin,
                      std::size_t& end) const {
  Pcre2Thread& t = *static_cast<Pcre2Thread*>(thread);
  const auto* code = static_cast<const pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc;
  for (;;) {
    // The text is valid UTF-8 (encode repairs it first), so PCRE2 need not check it.
    rc = jit_ ? pcre2_jit_match(code, subject, text.size(), start, 0, t.data, t.context)
              : pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, t.data,
                            t.context);
    if (rc != PCRE2_ERROR_JIT_STACKLIMIT) break;
    t.grow_jit_stack();
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw DataError("tokenizer split regex: PCRE2 match failed: " + pcre2_message(rc));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(t.data);
  begin = ov[0];
  end = ov[1];
  return true;
}

}  // namespace salad::text::bpe

// ---- The pipeline ---------------------------------------------------------------------------

namespace salad::text {

namespace {

struct EncodeScratch {
  std::string nfc;
  std::vector<int32_t> word;
  bpe::BpeScratch bpe;
};

thread_local EncodeScratch tls_scratch;

// One encode() call: the stages after the added-token split, appending ids to `out`.
struct Encoder {
  const BpeTokenizer::Impl& t;
  EncodeScratch& s;
  bpe::WordCache::Session cache;
  std::size_t max_cached;  // 0: no cache
  std::vector<int64_t>& out;

  void segment(std::string_view raw) {
    const std::string_view text = t.nfc ? bpe::nfc(raw, s.nfc) : raw;
    if (t.normalized_added.empty()) {
      pieces(text, 0);
    } else {
      t.normalized_added.split(
          text, [&](std::string_view part) { pieces(part, 0); },
          [&](int32_t id) { out.push_back(id); });
    }
  }

  void pieces(std::string_view text, std::size_t level) {
    if (level == t.splits.size()) return word(text);
    t.splits[level]->split(text, [&](std::string_view piece) { pieces(piece, level + 1); });
  }

  void word(std::string_view w) {
    if (w.size() == 1) {
      out.push_back(t.byte_ids[static_cast<unsigned char>(w[0])]);
      return;
    }
    if (t.ignore_merges) {
      const auto it = t.raw_vocab.find(std::string(w));
      if (it != t.raw_vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = w.size() <= max_cached;
    uint64_t hash = 0;
    if (cacheable) {
      hash = bpe::hash_word(w);
      if (cache.lookup(w, hash, out)) return;
    }
    s.word.clear();
    bpe::bpe_merge(t.merges, t.byte_ids, w, t.options.heap_merge_min_bytes, s.bpe, s.word);
    out.insert(out.end(), s.word.begin(), s.word.end());
    if (cacheable) cache.insert(w, hash, s.word);
  }
};

}  // namespace

std::vector<int64_t> BpeTokenizer::Impl::encode(std::string_view text) const {
  std::string repaired;
  if (!bpe::is_valid_utf8(text)) {
    repaired = bpe::utf8_lossy(text);
    text = repaired;
  }
  std::vector<int64_t> out;
  out.reserve(text.size() / 4 + 16);
  Encoder e{*this, tls_scratch, cache->session(),
            cache->enabled() ? options.max_cached_word_bytes : 0, out};
  raw_added.split(
      text, [&](std::string_view segment) { e.segment(segment); },
      [&](int32_t id) { out.push_back(id); });
  return out;
}

}  // namespace salad::text
