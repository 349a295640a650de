// Training documents and the interleaving of DESIGN §3 (see data/document.h).
#include "salad/data/document.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/data/manifest.h"
#include "salad/text/tokenizer.h"

namespace salad::data {
namespace {

// Frame boundaries computed from times in seconds are snapped when they are within this many
// frames of an integer: 0.56 s * 12.5 Hz is 7.000000000000001 in doubles and must end at frame
// 7, not 8.
constexpr double kFrameSlack = 1e-6;

// Byte length of the whitespace character at s[i], 0 when there is none. Whitespace is the
// tokenizer's: Hugging Face's Split regex \s (Oniguruma), U+0009-000D, U+0085 and the Zl, Zp and
// Zs categories. Words must not begin or end with any of it: a run of whitespace is one
// pre-token, so "x\u00A0" + " \u00A0y" would tokenize differently on its own than in the full
// text (found on Qwen2.5; see the DocumentTest.Qwen* tests).
size_t whitespace_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
  const unsigned c = b(i);
  if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return 1;
  if (c == 0xC2) return b(i + 1) == 0x85 || b(i + 1) == 0xA0 ? 2 : 0;  // U+0085, U+00A0
  if (c == 0xE1) return b(i + 1) == 0x9A && b(i + 2) == 0x80 ? 3 : 0;  // U+1680
  if (c == 0xE3) return b(i + 1) == 0x80 && b(i + 2) == 0x80 ? 3 : 0;  // U+3000
  if (c == 0xE2) {
    const unsigned c1 = b(i + 1), c2 = b(i + 2);
    if (c1 == 0x80 && ((c2 >= 0x80 && c2 <= 0x8A) || c2 == 0xA8 || c2 == 0xA9 || c2 == 0xAF)) {
      return 3;  // U+2000-200A, U+2028, U+2029, U+202F
    }
    if (c1 == 0x81 && c2 == 0x9F) return 3;  // U+205F
  }
  return 0;
}

// Runs of whitespace become one ASCII space; leading and trailing whitespace is dropped.
std::string normalize_whitespace(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool pending_space = false;
  for (size_t i = 0; i < s.size();) {
    if (const size_t n = whitespace_length(s, i)) {
      pending_space = !out.empty();
      i += n;
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(s[i++]);
  }
  return out;
}

// "manifest.jsonl:12 (utterance 'abc')", or just the id when the line is unknown.
std::string describe(const Utterance& u) {
  if (u.where.empty()) return "utterance '" + u.id + "'";
  return u.where + " (utterance '" + u.id + "')";
}

std::string document_name(const std::string& source, const std::string& id) {
  return source.empty() ? id : source + "/" + id;
}

std::string number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void check_features(const Utterance& u, const at::Tensor& features) {
  if (!features.defined() || features.dim() != 2 || features.size(0) < 1) {
    std::ostringstream os;
    os << describe(u) << ": expected encoder features [F >= 1, De], got ";
    if (features.defined()) {
      os << features.sizes();
    } else {
      os << "none";
    }
    throw BadItem("bad features", os.str());
  }
}

Modality first_modality(const InterleaveOptions& o, std::mt19937_64& rng) {
  switch (o.first) {
    case InterleaveOptions::First::kText:
      return Modality::kText;
    case InterleaveOptions::First::kSpeech:
      return Modality::kSpeech;
    case InterleaveOptions::First::kRandom:
      break;
  }
  return std::uniform_int_distribution<int>(0, 1)(rng) == 0 ? Modality::kText : Modality::kSpeech;
}

Modality other(Modality m) { return m == Modality::kText ? Modality::kSpeech : Modality::kText; }

// Frames [floor(start * rate), ceil(end * rate)) clamped to [0, F], at least the nearest frame.
std::pair<int64_t, int64_t> frame_range(double start, double end, double rate, int64_t frames) {
  auto b = static_cast<int64_t>(std::floor(start * rate + kFrameSlack));
  auto e = static_cast<int64_t>(std::ceil(end * rate - kFrameSlack));
  b = std::clamp<int64_t>(b, 0, frames);
  e = std::clamp<int64_t>(e, 0, frames);
  if (e <= b) {
    b = std::min<int64_t>(b, frames - 1);
    e = b + 1;
  }
  return {b, e};
}

}  // namespace

// ---- Segment / Document -------------------------------------------------------------------

int64_t Segment::student_length() const {
  if (modality == Modality::kText) return static_cast<int64_t>(tokens.size());
  return (features.defined() ? features.size(0) : 0) + 2;
}

int64_t Document::student_length() const {
  int64_t n = 0;
  for (const Segment& s : segments) n += s.student_length();
  return n;
}

int64_t Document::teacher_length() const {
  int64_t n = 0;
  for (const Segment& s : segments) n += static_cast<int64_t>(s.tokens.size());
  return n;
}

int64_t Document::loss_positions() const {
  // A text token is predicted when both sequences hold something before it: on the student's
  // side any earlier segment (a speech segment is at least its two markers), on the teacher's
  // side an earlier token. Only the document's first text token can lack either, and it has
  // both exactly when a speech segment with tokens precedes it.
  int64_t n = 0;
  bool seen_text = false;
  bool speech_tokens_before = false;
  for (const Segment& s : segments) {
    if (s.tokens.empty()) continue;
    if (s.modality == Modality::kSpeech) {
      speech_tokens_before = true;
      continue;
    }
    n += static_cast<int64_t>(s.tokens.size());
    if (!seen_text && !speech_tokens_before) --n;
    seen_text = true;
  }
  return n;
}

int64_t Document::speech_frames() const {
  int64_t n = 0;
  for (const Segment& s : segments) {
    if (s.modality == Modality::kSpeech && s.features.defined()) n += s.features.size(0);
  }
  return n;
}

// ---- InterleaveOptions ----------------------------------------------------------------------

InterleaveOptions InterleaveOptions::from_config(const config::DataConfig& cfg, double frame_rate) {
  InterleaveOptions o;
  o.text_words_min = cfg.text_words_min;
  o.text_words_max = cfg.text_words_max;
  o.speech_words_min = cfg.speech_words_min;
  o.speech_words_max = cfg.speech_words_max;
  if (cfg.first_modality == "random") {
    o.first = First::kRandom;
  } else if (cfg.first_modality == "text") {
    o.first = First::kText;
  } else if (cfg.first_modality == "speech") {
    o.first = First::kSpeech;
  } else {
    throw ConfigError("data.first_modality: expected random, text or speech, got '" +
                      cfg.first_modality + "'");
  }
  o.frame_rate = frame_rate;
  o.validate();
  return o;
}

void InterleaveOptions::validate() const {
  auto range = [](const char* lo_name, int64_t lo, const char* hi_name, int64_t hi) {
    if (lo < 1) {
      throw ConfigError(std::string("data.") + lo_name + ": must be >= 1, got " +
                        std::to_string(lo));
    }
    if (hi < lo) {
      throw ConfigError(std::string("data.") + hi_name + ": must be >= data." + lo_name + " (" +
                        std::to_string(lo) + "), got " + std::to_string(hi));
    }
  };
  range("text_words_min", text_words_min, "text_words_max", text_words_max);
  range("speech_words_min", speech_words_min, "speech_words_max", speech_words_max);
  if (!(frame_rate > 0) || !std::isfinite(frame_rate)) {
    throw ConfigError("interleave frame_rate: must be > 0 (encoder frames per second), got " +
                      number(frame_rate));
  }
  if (!(end_tolerance >= 0)) {
    throw ConfigError("interleave end_tolerance: must be >= 0 s, got " + number(end_tolerance));
  }
}

// ---- interleaving ---------------------------------------------------------------------------

Document interleave_utterance(const Utterance& u, const at::Tensor& features,
                              const text::Tokenizer& tokenizer, const InterleaveOptions& o,
                              std::mt19937_64& rng) {
  // Blank words (some aligners emit "" for silences) carry no text: they are dropped.
  std::vector<std::string> words;
  std::vector<size_t> index;  // into u.words
  words.reserve(u.words.size());
  index.reserve(u.words.size());
  for (size_t i = 0; i < u.words.size(); ++i) {
    std::string w = normalize_whitespace(u.words[i].w);
    if (w.empty()) continue;
    words.push_back(std::move(w));
    index.push_back(i);
  }
  if (words.empty()) {
    throw BadItem("empty transcript", describe(u) + ": no words (the word timings hold " +
                                          std::to_string(u.words.size()) + " blank words)");
  }
  try {
    validate_words(u);
  } catch (const ManifestLineError& e) {
    throw BadItem("bad words", describe(u) + ": " + e.what());
  }
  check_features(u, features);
  const int64_t frames = features.size(0);
  const double audio_seconds = static_cast<double>(frames) / o.frame_rate;
  for (size_t i = 0; i < u.words.size(); ++i) {
    const Word& w = u.words[i];
    if (w.end > audio_seconds + o.end_tolerance) {
      throw BadItem("words outside audio",
                    describe(u) + ": word " + std::to_string(i) + " '" + w.w + "' ends at " +
                        number(w.end) + " s, after the end of the audio (" + number(audio_seconds) +
                        " s: " + std::to_string(frames) + " frames at " + number(o.frame_rate) +
                        " Hz; tolerance " + number(o.end_tolerance) + " s)");
    }
  }

  Document d;
  d.name = document_name(u.source, u.id);
  d.source = u.source;
  Modality m = first_modality(o, rng);
  const size_t n = words.size();
  for (size_t i = 0; i < n; m = other(m)) {
    const bool text = m == Modality::kText;
    std::uniform_int_distribution<int64_t> count(text ? o.text_words_min : o.speech_words_min,
                                                 text ? o.text_words_max : o.speech_words_max);
    const size_t take = std::min(static_cast<size_t>(count(rng)), n - i);
    std::string s = d.segments.empty() ? "" : " ";
    for (size_t k = i; k < i + take; ++k) {
      if (k > i) s.push_back(' ');
      s += words[k];
    }
    Segment seg;
    seg.modality = m;
    seg.tokens = tokenizer.encode(s);
    if (!text) {
      const Word& first = u.words[index[i]];
      const Word& last = u.words[index[i + take - 1]];
      const auto [b, e] = frame_range(first.start, last.end, o.frame_rate, frames);
      seg.features = features.slice(0, b, e);  // [F_seg, De]
    }
    d.segments.push_back(std::move(seg));
    i += take;
  }
  return d;
}

Document chain_utterances(const std::vector<const Utterance*>& utterances,
                          const std::vector<at::Tensor>& features, const text::Tokenizer& tokenizer,
                          const InterleaveOptions& o, std::mt19937_64& rng) {
  if (utterances.empty()) throw DataError("chain_utterances: no utterances given");
  if (features.size() != utterances.size()) {
    throw DataError("chain_utterances: " + std::to_string(utterances.size()) + " utterances but " +
                    std::to_string(features.size()) + " feature tensors");
  }
  std::vector<std::string> texts;
  texts.reserve(utterances.size());
  for (size_t i = 0; i < utterances.size(); ++i) {
    const Utterance& u = *utterances[i];
    texts.push_back(normalize_whitespace(u.text));
    if (texts.back().empty()) throw BadItem("empty transcript", describe(u) + ": blank text");
    check_features(u, features[i]);
  }

  Document d;
  d.source = utterances[0]->source;
  std::string ids;
  for (size_t i = 0; i < utterances.size(); ++i) {
    if (i > 0) ids.push_back('+');
    ids += utterances[i]->id;
  }
  d.name = document_name(d.source, ids);
  Modality m = first_modality(o, rng);
  for (size_t i = 0; i < utterances.size(); ++i, m = other(m)) {
    Segment seg;
    seg.modality = m;
    seg.tokens = tokenizer.encode(i == 0 ? texts[i] : " " + texts[i]);
    if (m == Modality::kSpeech) seg.features = features[i];  // [F_i, De]
    d.segments.push_back(std::move(seg));
  }
  return d;
}

Document text_document(const std::string& name, const std::string& source, const std::string& text,
                       const text::Tokenizer& tokenizer) {
  const std::string t = normalize_whitespace(text);
  if (t.empty()) throw BadItem("empty transcript", name + ": blank text");
  Document d;
  d.name = name;
  d.source = source;
  Segment seg;
  seg.modality = Modality::kText;
  seg.tokens = tokenizer.encode(t);
  d.segments.push_back(std::move(seg));
  return d;
}

// ---- splitting ------------------------------------------------------------------------------

std::vector<Document> split_to_context(Document d, int64_t context) {
  if (context < 1) throw ConfigError("data.context: must be >= 1, got " + std::to_string(context));
  for (size_t i = 0; i < d.segments.size(); ++i) {
    const Segment& s = d.segments[i];
    if (s.modality != Modality::kSpeech) continue;
    const auto tokens = static_cast<int64_t>(s.tokens.size());
    if (s.student_length() > context) {
      throw BadItem("speech segment longer than context",
                    d.name + ": speech segment " + std::to_string(i) + " needs " +
                        std::to_string(s.student_length()) + " positions (" +
                        std::to_string(s.student_length() - 2) +
                        " frames + 2 markers), more than the context (" + std::to_string(context) +
                        ")");
    }
    if (tokens > context) {
      throw BadItem(
          "speech segment longer than context",
          d.name + ": speech segment " + std::to_string(i) + " has " + std::to_string(tokens) +
              " tokens, more teacher positions than the context (" + std::to_string(context) + ")");
    }
  }
  if (d.student_length() <= context && d.teacher_length() <= context) {
    std::vector<Document> one;
    one.push_back(std::move(d));
    return one;
  }

  // Both sides are bounded: a text segment takes the same positions in the student's and the
  // teacher's row, a speech segment F + 2 student positions and its tokens in the teacher's.
  std::vector<Document> parts;
  int64_t used = 0, used_teacher = 0;
  auto open_part = [&] {
    Document p;
    p.source = d.source;
    parts.push_back(std::move(p));
    used = 0;
    used_teacher = 0;
  };
  open_part();
  for (Segment& s : d.segments) {
    if (s.modality == Modality::kSpeech) {
      const int64_t n = s.student_length();
      const auto nt = static_cast<int64_t>(s.tokens.size());
      if (used + n > context || used_teacher + nt > context) open_part();
      used += n;
      used_teacher += nt;
      parts.back().segments.push_back(std::move(s));
      continue;
    }
    if (s.tokens.empty()) {  // takes no room; kept so that no segment is lost
      parts.back().segments.push_back(std::move(s));
      continue;
    }
    // A text segment fills the room left and continues in the next parts.
    size_t from = 0;
    do {
      if (std::min(context - used, context - used_teacher) <= 0) open_part();
      const int64_t room = std::min(context - used, context - used_teacher);
      const size_t take = std::min(s.tokens.size() - from, static_cast<size_t>(room));
      Segment piece;
      piece.modality = Modality::kText;
      piece.tokens.assign(s.tokens.begin() + static_cast<std::ptrdiff_t>(from),
                          s.tokens.begin() + static_cast<std::ptrdiff_t>(from + take));
      parts.back().segments.push_back(std::move(piece));
      used += static_cast<int64_t>(take);
      used_teacher += static_cast<int64_t>(take);
      from += take;
    } while (from < s.tokens.size());
  }
  for (size_t k = 0; k < parts.size(); ++k) parts[k].name = d.name + "#" + std::to_string(k + 1);
  return parts;
}

}  // namespace salad::data
