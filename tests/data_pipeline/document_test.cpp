// Interleaved training documents (DESIGN §3): segment sizes and modalities, speech frame ranges,
// bad items, splitting, and — with the real Qwen tokenizer — that per-segment tokenization
// reproduces the full transcript's tokens so every student loss position has its teacher twin.
#include "salad/data/document.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "data_pipeline/document_test_util.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/data/packing.h"
#include "salad/text/bpe_tokenizer.h"
#include "test_util.h"

namespace salad::data {
namespace {

namespace fs = std::filesystem;
using test_util::frame_features;
using test_util::frames_for;
using test_util::timed_utterance;
using test_util::WordTokenizer;

std::vector<std::string> split_words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::string join(const std::vector<std::string>& words) {
  std::string s;
  for (size_t i = 0; i < words.size(); ++i) s += (i ? " " : "") + words[i];
  return s;
}

std::vector<std::string> numbered_words(int64_t n) {
  std::vector<std::string> w;
  for (int64_t i = 0; i < n; ++i) w.push_back("w" + std::to_string(i));
  return w;
}

std::vector<int64_t> all_tokens(const Document& d) {
  std::vector<int64_t> t;
  for (const Segment& s : d.segments) t.insert(t.end(), s.tokens.begin(), s.tokens.end());
  return t;
}

InterleaveOptions small_options() {
  InterleaveOptions o;
  o.text_words_min = 3;
  o.text_words_max = 6;
  o.speech_words_min = 2;
  o.speech_words_max = 4;
  return o;
}

// ---- The real Qwen tokenizer ----------------------------------------------------------------

const text::Tokenizer* qwen() {
  static const std::unique_ptr<text::Tokenizer> tok = []() -> std::unique_ptr<text::Tokenizer> {
    if (!fs::exists(test::qwen_tokenizer_json())) return nullptr;
    return text::BpeTokenizer::load(test::qwen_tokenizer_json());
  }();
  return tok.get();
}

// Realistic transcripts: paragraphs of assets/texts/sotu.txt (when present) and a paragraph
// made of the word shapes most likely to trip a byte-level BPE at a segment boundary.
std::vector<std::string> paragraphs() {
  std::vector<std::string> out = {
      "In 1790 the debt was $75,463,476.52 -- roughly 3,000,000 florins (see p. 12); "
      "the U.S. Congress, e.g., voted 62-38 on Jan. 4th. \"We can't,\" he said, 'we won't.' "
      "It's the people's will... Isn't it? 50% of 1/2 = 25%! Café naïve résumé — über "
      "Ödön 東京 タワー 你好 世界 😀 emoji's #hashtag @user C++ x86_64 v2.0 "
      "<|endoftext|> ok 's 're 'll ' '' ''' & && 1 2 3 . , ; ..."};
  std::ifstream in(fs::path(SALAD_ASSETS_DIR) / "texts" / "sotu.txt");
  int64_t kept = 0;
  for (std::string line; kept < 8 && std::getline(in, line);) {
    if (split_words(line).size() < 60) continue;
    // A slice of ~250 words keeps the test fast.
    std::vector<std::string> w = split_words(line);
    if (w.size() > 250) w.resize(250);
    out.push_back(join(w));
    ++kept;
  }
  return out;
}

TEST(DocumentTest, QwenSegmentTokensConcatenateToTheFullTranscriptTokens) {
  const text::Tokenizer* tok = qwen();
  if (!tok) GTEST_SKIP() << test::missing_qwen_tokenizer_message();
  const std::vector<std::string> texts = paragraphs();
  for (size_t p = 0; p < texts.size(); ++p) {
    const std::vector<std::string> words = split_words(texts[p]);
    Utterance u = timed_utterance(words, 0.32, 0.25, "p" + std::to_string(p));
    const int64_t F = frames_for(u);
    const at::Tensor feats = frame_features(F, 4);
    const std::vector<int64_t> full = tok->encode(join(words));
    for (uint64_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE("paragraph " + std::to_string(p) + " seed " + std::to_string(seed));
      std::mt19937_64 rng(seed);
      InterleaveOptions o;  // the paper's U[10,30] text / U[5,15] speech words
      const Document d = interleave_utterance(u, feats, *tok, o, rng);
      EXPECT_EQ(all_tokens(d), full);

      // Speech segments hold their words' frames: the frame values name the frame index.
      size_t word = 0;
      for (const Segment& s : d.segments) {
        // Every segment decodes to its words (with the leading space after the first).
        const std::string text = tok->decode(s.tokens);
        const std::vector<std::string> seg_words = split_words(text);
        ASSERT_GE(words.size(), word + seg_words.size());
        EXPECT_EQ(seg_words, std::vector<std::string>(words.begin() + word,
                                                      words.begin() + word + seg_words.size()));
        EXPECT_EQ(text[0] == ' ', word > 0) << text;
        if (s.modality == Modality::kSpeech) {
          const int64_t b = static_cast<int64_t>(std::floor(u.words[word].start * 12.5 + 1e-6));
          const int64_t e = std::min<int64_t>(
              F, static_cast<int64_t>(
                     std::ceil(u.words[word + seg_words.size() - 1].end * 12.5 - 1e-6)));
          ASSERT_EQ(s.features.size(0), e - b);
          EXPECT_EQ(s.features[0][0].item<float>(), static_cast<float>(b));
        }
        word += seg_words.size();
      }
      EXPECT_EQ(word, words.size());

      // One-document batch: every aligned pair predicts the same token.
      PackOptions po;
      po.context = d.student_length();
      const Batch b = make_batch({{d}}, po);
      test_util::expect_aligned(b, {{d}});
      int64_t text_tokens = 0;
      for (const Segment& s : d.segments) {
        if (s.modality == Modality::kText) text_tokens += static_cast<int64_t>(s.tokens.size());
      }
      EXPECT_EQ(b.loss_positions(),
                text_tokens - (d.segments[0].modality == Modality::kText ? 1 : 0));
      EXPECT_GT(b.loss_positions(), 0);
      // The teacher row is the full transcript's tokens.
      EXPECT_TRUE(at::equal(b.teacher.input_ids[0], at::tensor(full, at::kLong)));
    }
  }
}

// A stronger form on the tricky paragraph: cutting between any two words and tokenizing the
// halves on their own (the second with its leading space) gives the full text's tokens.
TEST(DocumentTest, QwenEveryWordBoundaryIsATokenBoundary) {
  const text::Tokenizer* tok = qwen();
  if (!tok) GTEST_SKIP() << test::missing_qwen_tokenizer_message();
  const std::vector<std::string> words = split_words(paragraphs()[0]);
  const std::vector<int64_t> full = tok->encode(join(words));
  for (size_t cut = 1; cut < words.size(); ++cut) {
    std::vector<int64_t> ids =
        tok->encode(join(std::vector<std::string>(words.begin(), words.begin() + cut)));
    const std::vector<int64_t> tail =
        tok->encode(" " + join(std::vector<std::string>(words.begin() + cut, words.end())));
    ids.insert(ids.end(), tail.begin(), tail.end());
    EXPECT_EQ(ids, full) << "cut before word " << cut << " '" << words[cut] << "'";
  }
}

// Words that begin or end with non-ASCII whitespace (NBSP, U+3000, U+2028, ...) would break the
// property: the tokenizer's pre-tokenizer makes one pre-token of a whitespace run, so
// "a \u00A0 \u00A0" is not encode("a") + encode(" \u00A0") + encode(" \u00A0"). Documents
// therefore treat all of the tokenizer's whitespace as word separators.
TEST(DocumentTest, QwenUnicodeWhitespaceIsAWordSeparator) {
  const text::Tokenizer* tok = qwen();
  if (!tok) GTEST_SKIP() << test::missing_qwen_tokenizer_message();
  const std::string nbsp = "\u00A0", ideo = "\u3000", em = "\u2003", ls = "\u2028";
  auto concat = [&](const std::vector<std::string>& pieces) {
    std::vector<int64_t> ids;
    for (const std::string& p : pieces) {
      const std::vector<int64_t> t = tok->encode(p);
      ids.insert(ids.end(), t.begin(), t.end());
    }
    return ids;
  };
  // The hazard, on the raw tokenizer (if this starts passing, the tokenizer changed).
  EXPECT_NE(concat({"a", " " + nbsp, " " + nbsp}), tok->encode("a " + nbsp + " " + nbsp));

  const std::vector<std::string> words = {"a",        nbsp,          nbsp,
                                          "x" + nbsp, nbsp + "y",    ideo + "z",
                                          em,         ls + "q" + ls, "b" + nbsp + "c",
                                          "\u0085",   "end",         nbsp};
  const Utterance u = timed_utterance(words);
  InterleaveOptions o;
  o.text_words_min = o.text_words_max = o.speech_words_min = o.speech_words_max = 1;
  std::string line;
  for (const std::string& w : words) line += w + " ";
  const std::vector<int64_t> full = text_document("t", "", line, *tok).segments[0].tokens;
  EXPECT_EQ(tok->decode(full), "a x y z q b c end");
  for (uint64_t seed : {1u, 2u}) {
    std::mt19937_64 rng(seed);
    const Document d = interleave_utterance(u, frame_features(frames_for(u), 2), *tok, o, rng);
    EXPECT_EQ(d.segments.size(), 7u);  // blank words dropped
    EXPECT_EQ(all_tokens(d), full);
  }
}

// ---- Segment sizes, modalities, determinism -----------------------------------------------

TEST(DocumentTest, SegmentWordCountsAreInRangeAndModalitiesAlternate) {
  const WordTokenizer tok = WordTokenizer::numbered(300);
  const Utterance u = timed_utterance(numbered_words(300));
  const at::Tensor feats = frame_features(frames_for(u), 3);
  const InterleaveOptions o = small_options();
  std::set<Modality> firsts;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    const Document d = interleave_utterance(u, feats, tok, o, rng);
    EXPECT_EQ(d.name, "ls/u1");
    EXPECT_EQ(d.source, "ls");
    ASSERT_GE(d.segments.size(), 2u);
    firsts.insert(d.segments[0].modality);
    int64_t words = 0;
    for (size_t i = 0; i < d.segments.size(); ++i) {
      const Segment& s = d.segments[i];
      const auto n = static_cast<int64_t>(s.tokens.size());  // one token per word
      const bool text = s.modality == Modality::kText;
      const int64_t lo = text ? o.text_words_min : o.speech_words_min;
      const int64_t hi = text ? o.text_words_max : o.speech_words_max;
      if (i + 1 < d.segments.size()) {
        EXPECT_GE(n, lo) << "seed " << seed << " segment " << i;
      }
      EXPECT_LE(n, hi) << "seed " << seed << " segment " << i;
      EXPECT_GE(n, 1);
      if (i > 0) {
        EXPECT_NE(s.modality, d.segments[i - 1].modality) << "segment " << i;
      }
      EXPECT_EQ(s.features.defined(), !text);
      words += n;
    }
    EXPECT_EQ(words, 300);
    // The fake tokenizer marks words after a space: only the document's first token lacks it.
    const std::vector<int64_t> t = all_tokens(d);
    EXPECT_EQ(t, tok.encode(join(numbered_words(300))));
  }
  EXPECT_EQ(firsts.size(), 2u) << "random first modality never varied over 20 seeds";

  for (auto first : {InterleaveOptions::First::kText, InterleaveOptions::First::kSpeech}) {
    InterleaveOptions fixed = o;
    fixed.first = first;
    for (uint64_t seed = 0; seed < 5; ++seed) {
      std::mt19937_64 rng(seed);
      const Document d = interleave_utterance(u, feats, tok, fixed, rng);
      EXPECT_EQ(d.segments[0].modality,
                first == InterleaveOptions::First::kText ? Modality::kText : Modality::kSpeech);
    }
  }
}

TEST(DocumentTest, InterleavingIsAFunctionOfTheRngState) {
  const WordTokenizer tok = WordTokenizer::numbered(120);
  const Utterance u = timed_utterance(numbered_words(120));
  const at::Tensor feats = frame_features(frames_for(u), 3);
  auto layout = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    const Document d = interleave_utterance(u, feats, tok, small_options(), rng);
    std::vector<std::vector<int64_t>> out;
    for (const Segment& s : d.segments) {
      std::vector<int64_t> row = {static_cast<int64_t>(s.modality)};
      row.insert(row.end(), s.tokens.begin(), s.tokens.end());
      if (s.features.defined()) {
        row.push_back(s.features.size(0));
        row.push_back(static_cast<int64_t>(s.features[0][0].item<float>()));
      }
      out.push_back(row);
    }
    return out;
  };
  EXPECT_EQ(layout(7), layout(7));
  std::set<std::vector<std::vector<int64_t>>> distinct;
  for (uint64_t seed = 0; seed < 6; ++seed) distinct.insert(layout(seed));
  EXPECT_GE(distinct.size(), 5u);
}

// ---- Speech frames ------------------------------------------------------------------------

TEST(DocumentTest, SpeechSegmentsTakeTheFramesOfTheirWords) {
  const WordTokenizer tok({"a", "b", "c", "d"});
  Utterance u;
  u.id = "x";
  u.where = "m.jsonl:3";
  u.words = {{"a", 0.0, 0.3}, {"b", 0.35, 0.56}, {"c", 0.61, 0.9}, {"d", 1.0, 1.22}};
  InterleaveOptions o;
  o.first = InterleaveOptions::First::kSpeech;
  o.speech_words_min = o.speech_words_max = 2;
  o.text_words_min = o.text_words_max = 1;
  {
    // a b: [floor(0), ceil(0.56 * 12.5 = 7)) = [0, 7); c: text; d: [floor(12.5), ceil(15.25)).
    const at::Tensor feats = frame_features(20, 2);
    std::mt19937_64 rng(1);
    const Document d = interleave_utterance(u, feats, tok, o, rng);
    EXPECT_EQ(d.name, "x");  // no source
    ASSERT_EQ(d.segments.size(), 3u);
    EXPECT_TRUE(at::equal(d.segments[0].features, feats.slice(0, 0, 7)));
    EXPECT_EQ(d.segments[0].tokens, tok.encode("a b"));
    EXPECT_EQ(d.segments[1].modality, Modality::kText);
    EXPECT_EQ(d.segments[1].tokens, tok.encode(" c"));
    EXPECT_TRUE(at::equal(d.segments[2].features, feats.slice(0, 12, 16)));
    EXPECT_EQ(d.segments[2].tokens, tok.encode(" d"));
    EXPECT_EQ(d.segments[0].student_length(), 9);
    EXPECT_EQ(d.student_length(), 9 + 1 + 6);
    EXPECT_EQ(d.teacher_length(), 4);
    EXPECT_EQ(d.speech_frames(), 11);
    EXPECT_EQ(d.loss_positions(), 1);  // "c", predicted by the first speech_end
  }
  {
    // 14 frames (1.12 s): d ends within the tolerance; its range is clamped to [12, 14).
    const at::Tensor feats = frame_features(14, 2);
    std::mt19937_64 rng(1);
    const Document d = interleave_utterance(u, feats, tok, o, rng);
    EXPECT_TRUE(at::equal(d.segments[2].features, feats.slice(0, 12, 14)));
  }
  {
    // d at [1.2, 1.25] with 14 frames: [15, 16) clamps to empty; the nearest frame is 13.
    Utterance v = u;
    v.words[3] = {"d", 1.2, 1.25};
    const at::Tensor feats = frame_features(14, 2);
    std::mt19937_64 rng(1);
    const Document d = interleave_utterance(v, feats, tok, o, rng);
    EXPECT_TRUE(at::equal(d.segments[2].features, feats.slice(0, 13, 14)));
  }
  {
    // A zero-length word at 0.4 s (frame 5 exactly) still gets one frame: [5, 6).
    Utterance v;
    v.id = "z";
    v.words = {{"a", 0.4, 0.4}};
    std::mt19937_64 rng(1);
    const Document d = interleave_utterance(v, frame_features(10, 2), tok, o, rng);
    ASSERT_EQ(d.segments.size(), 1u);
    EXPECT_EQ(d.segments[0].features[0][0].item<float>(), 5.0f);
    EXPECT_EQ(d.segments[0].features.size(0), 1);
    EXPECT_EQ(d.loss_positions(), 0);
  }
}

TEST(DocumentTest, BlankWordsAreDroppedAndWordsNormalised) {
  const WordTokenizer tok({"a", "b", "c"});
  Utterance u;
  u.id = "x";
  u.words = {{"", 0.0, 0.2}, {" a ", 0.2, 0.4}, {"\t", 0.4, 0.5}, {"b", 0.5, 0.6}, {"c", 0.7, 0.8}};
  InterleaveOptions o = small_options();
  o.first = InterleaveOptions::First::kText;
  std::mt19937_64 rng(3);
  const Document d = interleave_utterance(u, frame_features(10, 2), tok, o, rng);
  ASSERT_EQ(d.segments.size(), 1u);
  EXPECT_EQ(d.segments[0].tokens, tok.encode("a b c"));
  EXPECT_EQ(d.loss_positions(), 2);
}

// ---- Bad items ----------------------------------------------------------------------------

template <class F>
void expect_bad_item(F&& f, const std::string& reason, std::initializer_list<std::string> frags) {
  try {
    f();
    ADD_FAILURE() << "expected BadItem(" << reason << ")";
  } catch (const BadItem& e) {
    EXPECT_EQ(e.reason(), reason) << e.what();
    const std::string msg = e.what();
    for (const auto& frag : frags) {
      EXPECT_NE(msg.find(frag), std::string::npos) << "message lacks '" << frag << "':\n" << msg;
    }
  }
}

TEST(DocumentTest, BadUtterancesThrowBadItemNamingTheItem) {
  const WordTokenizer tok({"a", "b", "c"});
  const at::Tensor feats = frame_features(10, 2);  // 0.8 s
  const InterleaveOptions o = small_options();
  std::mt19937_64 rng(1);
  Utterance u;
  u.id = "utt9";
  u.where = "train.jsonl:42";

  expect_bad_item([&] { interleave_utterance(u, feats, tok, o, rng); }, "empty transcript",
                  {"train.jsonl:42", "utt9"});
  u.words = {{" ", 0.0, 0.1}};
  expect_bad_item([&] { interleave_utterance(u, feats, tok, o, rng); }, "empty transcript",
                  {"train.jsonl:42"});

  u.words = {{"a", 0.3, 0.4}, {"b", 0.1, 0.2}};  // unsorted
  expect_bad_item([&] { interleave_utterance(u, feats, tok, o, rng); }, "bad words",
                  {"train.jsonl:42", "utt9", "'b'"});
  u.words = {{"a", 0.1, 0.4}, {"b", 0.3, 0.5}};  // overlapping
  expect_bad_item([&] { interleave_utterance(u, feats, tok, o, rng); }, "bad words",
                  {"train.jsonl:42", "'b'", "overlapping"});
  u.words = {{"a", 0.1, 0.4}, {"b", 0.5, 0.45}};  // end < start
  expect_bad_item([&] { interleave_utterance(u, feats, tok, o, rng); }, "bad words",
                  {"train.jsonl:42", "'b'"});

  u.words = {{"a", 0.1, 0.4}, {"b", 0.5, 1.31}};  // 0.8 s of audio + 0.5 s tolerance
  expect_bad_item([&] { interleave_utterance(u, feats, tok, o, rng); }, "words outside audio",
                  {"train.jsonl:42", "utt9", "'b'", "1.31 s", "0.8 s"});
  u.words = {{"a", 0.1, 0.4}, {"b", 0.5, 1.29}};  // inside the tolerance
  EXPECT_NO_THROW(interleave_utterance(u, feats, tok, o, rng));

  expect_bad_item(
      [&] {
        interleave_utterance(u, at::zeros({0, 2}), tok, o, rng);
      },
      "bad features", {"train.jsonl:42"});

  // Without a `where`, messages name the id.
  Utterance v;
  v.id = "lonely";
  expect_bad_item([&] { interleave_utterance(v, feats, tok, o, rng); }, "empty transcript",
                  {"lonely"});

  // Untimed utterances and text documents.
  Utterance a, b;
  a.id = "a1";
  a.text = "a b";
  b.id = "b1";
  b.where = "m.jsonl:2";
  b.text = " \n ";
  expect_bad_item(
      [&] {
        chain_utterances({&a, &b}, {feats, feats}, tok, o, rng);
      },
      "empty transcript", {"m.jsonl:2", "b1"});
  expect_bad_item([&] { text_document("books/17", "books", " \t", tok); }, "empty transcript",
                  {"books/17"});
}

TEST(DocumentTest, OptionsValidateAndComeFromTheConfig) {
  config::DataConfig cfg;
  cfg.text_words_min = 4;
  cfg.text_words_max = 8;
  cfg.speech_words_min = 2;
  cfg.speech_words_max = 3;
  cfg.first_modality = "speech";
  const InterleaveOptions o = InterleaveOptions::from_config(cfg, 50.0);
  EXPECT_EQ(o.text_words_min, 4);
  EXPECT_EQ(o.text_words_max, 8);
  EXPECT_EQ(o.speech_words_min, 2);
  EXPECT_EQ(o.speech_words_max, 3);
  EXPECT_EQ(o.first, InterleaveOptions::First::kSpeech);
  EXPECT_EQ(o.frame_rate, 50.0);
  cfg.first_modality = "random";
  EXPECT_EQ(InterleaveOptions::from_config(cfg, 12.5).first, InterleaveOptions::First::kRandom);

  cfg.speech_words_max = 1;
  test::expect_error<ConfigError>([&] { InterleaveOptions::from_config(cfg, 12.5); },
                                  {"data.speech_words_max", "1"});
  InterleaveOptions bad;
  bad.text_words_min = 0;
  test::expect_error<ConfigError>([&] { bad.validate(); }, {"data.text_words_min"});
  bad = InterleaveOptions();
  bad.frame_rate = 0;
  test::expect_error<ConfigError>([&] { bad.validate(); }, {"frame_rate"});
}

// ---- Untimed utterances and text documents -------------------------------------------------

TEST(DocumentTest, ChainedUtterancesAlternateWholeUtterances) {
  const WordTokenizer tok({"a", "b", "c", "d", "e"});
  Utterance u1, u2, u3;
  u1.id = "u1";
  u1.source = "vox";
  u1.text = " a  b ";
  u2.id = "u2";
  u2.text = "c";
  u3.id = "u3";
  u3.text = "d\te";
  const std::vector<at::Tensor> feats = {frame_features(4, 2), frame_features(6, 2),
                                         frame_features(3, 2)};
  InterleaveOptions o;
  o.first = InterleaveOptions::First::kSpeech;
  std::mt19937_64 rng(1);
  const Document d = chain_utterances({&u1, &u2, &u3}, feats, tok, o, rng);
  EXPECT_EQ(d.name, "vox/u1+u2+u3");
  EXPECT_EQ(d.source, "vox");
  ASSERT_EQ(d.segments.size(), 3u);
  EXPECT_EQ(d.segments[0].modality, Modality::kSpeech);
  EXPECT_EQ(d.segments[1].modality, Modality::kText);
  EXPECT_EQ(d.segments[2].modality, Modality::kSpeech);
  EXPECT_EQ(d.segments[0].tokens, tok.encode("a b"));
  EXPECT_EQ(d.segments[1].tokens, tok.encode(" c"));
  EXPECT_EQ(d.segments[2].tokens, tok.encode(" d e"));
  EXPECT_TRUE(at::equal(d.segments[0].features, feats[0]));
  EXPECT_FALSE(d.segments[1].features.defined());
  EXPECT_TRUE(at::equal(d.segments[2].features, feats[2]));
  EXPECT_EQ(d.student_length(), 6 + 1 + 5);
  EXPECT_EQ(d.loss_positions(), 1);

  o.first = InterleaveOptions::First::kText;
  const Document t = chain_utterances({&u1, &u2}, {feats[0], feats[1]}, tok, o, rng);
  EXPECT_EQ(t.segments[0].modality, Modality::kText);
  EXPECT_EQ(t.segments[1].modality, Modality::kSpeech);
  EXPECT_TRUE(at::equal(t.segments[1].features, feats[1]));
  EXPECT_EQ(t.loss_positions(), 1);  // "b"; "a" starts the document
}

TEST(DocumentTest, TextDocumentIsOneNormalisedSegment) {
  const WordTokenizer tok({"a", "b", "c"});
  const Document d = text_document("books/1", "books", "\n a\t b  c \n", tok);
  EXPECT_EQ(d.name, "books/1");
  EXPECT_EQ(d.source, "books");
  ASSERT_EQ(d.segments.size(), 1u);
  EXPECT_EQ(d.segments[0].modality, Modality::kText);
  EXPECT_EQ(d.segments[0].tokens, tok.encode("a b c"));
  EXPECT_EQ(d.student_length(), 3);
  EXPECT_EQ(d.teacher_length(), 3);
  EXPECT_EQ(d.loss_positions(), 2);
  EXPECT_EQ(d.speech_frames(), 0);
}

// ---- Splitting ----------------------------------------------------------------------------

TEST(DocumentTest, SplitToContextCutsAtSegmentAndTokenBoundaries) {
  using test_util::speech_segment;
  using test_util::text_segment;
  // Student lengths 10, 7 (5 frames), 8, 5 (3 frames): 30 positions.
  const Document d = test_util::document(
      "ls/long", "ls",
      {text_segment({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}), speech_segment({11, 12}, 5, 2, 100),
       text_segment({13, 14, 15, 16, 17, 18, 19, 20}), speech_segment({21}, 3, 2, 200)});
  ASSERT_EQ(d.student_length(), 30);

  const std::vector<Document> parts = split_to_context(d, 12);
  ASSERT_EQ(parts.size(), 3u);
  // [text 10] [speech 7, text 5] [text 3, speech 5]
  EXPECT_EQ(parts[0].student_length(), 10);
  EXPECT_EQ(parts[1].student_length(), 12);
  EXPECT_EQ(parts[2].student_length(), 8);
  ASSERT_EQ(parts[1].segments.size(), 2u);
  EXPECT_EQ(parts[1].segments[1].tokens, (std::vector<int64_t>{13, 14, 15, 16, 17}));
  ASSERT_EQ(parts[2].segments.size(), 2u);
  EXPECT_EQ(parts[2].segments[0].tokens, (std::vector<int64_t>{18, 19, 20}));
  std::vector<int64_t> tokens;
  std::vector<at::Tensor> frames;
  for (size_t k = 0; k < parts.size(); ++k) {
    EXPECT_EQ(parts[k].name, "ls/long#" + std::to_string(k + 1));
    EXPECT_EQ(parts[k].source, "ls");
    EXPECT_LE(parts[k].student_length(), 12);
    for (const Segment& s : parts[k].segments) {
      tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
      if (s.modality == Modality::kSpeech) frames.push_back(s.features);
    }
  }
  EXPECT_EQ(tokens, all_tokens(d));
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_TRUE(at::equal(frames[0], d.segments[1].features));
  EXPECT_TRUE(at::equal(frames[1], d.segments[3].features));

  // Fits: returned as is.
  const std::vector<Document> whole = split_to_context(d, 30);
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0].name, "ls/long");
  EXPECT_EQ(whole[0].segments.size(), 4u);

  // Context 7: the 5-frame speech segment just fits; a text segment spans several parts.
  const std::vector<Document> small = split_to_context(d, 7);
  std::vector<int64_t> small_tokens;
  for (const Document& p : small) {
    EXPECT_LE(p.student_length(), 7);
    EXPECT_GT(p.student_length(), 0);
    for (const Segment& s : p.segments) {
      small_tokens.insert(small_tokens.end(), s.tokens.begin(), s.tokens.end());
    }
  }
  EXPECT_EQ(small_tokens, all_tokens(d));
  EXPECT_EQ(small.size(), 5u);  // [7] [3] [7] [7] [1, 5]

  // A speech segment of 7 positions cannot fit in 6.
  expect_bad_item([&] { split_to_context(d, 6); }, "speech segment longer than context",
                  {"ls/long", "7 positions", "(6)"});
}

TEST(DocumentTest, SplitToContextBoundsTheTeacherToo) {
  using test_util::speech_segment;
  using test_util::text_segment;
  // Speech segments of 6 tokens over 1 frame: 3 student positions, 6 teacher positions. Student
  // 3 + 3 + 3 = 9, teacher 6 + 6 + 3 = 15.
  const Document d = test_util::document(
      "ls/dense", "ls",
      {speech_segment({1, 2, 3, 4, 5, 6}, 1, 2, 100),
       speech_segment({7, 8, 9, 10, 11, 12}, 1, 2, 200), text_segment({13, 14, 15})});
  ASSERT_EQ(d.student_length(), 9);
  ASSERT_EQ(d.teacher_length(), 15);
  auto check = [&](const std::vector<Document>& parts, int64_t context) {
    std::vector<int64_t> tokens;
    for (size_t k = 0; k < parts.size(); ++k) {
      EXPECT_EQ(parts[k].name, "ls/dense#" + std::to_string(k + 1));
      EXPECT_LE(parts[k].student_length(), context) << k;
      EXPECT_LE(parts[k].teacher_length(), context) << k;
      EXPECT_GT(parts[k].teacher_length(), 0) << k;
      const std::vector<int64_t> t = all_tokens(parts[k]);
      tokens.insert(tokens.end(), t.begin(), t.end());
    }
    EXPECT_EQ(tokens, all_tokens(d));
  };
  // Context 10: the student side fits, the teacher's does not: [speech] [speech, text 3].
  const std::vector<Document> parts = split_to_context(d, 10);
  ASSERT_EQ(parts.size(), 2u);
  check(parts, 10);
  EXPECT_EQ(parts[0].segments.size(), 1u);
  ASSERT_EQ(parts[1].segments.size(), 2u);
  EXPECT_EQ(parts[1].teacher_length(), 9);
  // Context 8: the text segment is cut where the teacher's room ends: [speech] [speech, text 2]
  // [text 1].
  const std::vector<Document> small = split_to_context(d, 8);
  ASSERT_EQ(small.size(), 3u);
  check(small, 8);
  EXPECT_EQ(small[1].segments[1].tokens, (std::vector<int64_t>{13, 14}));
  EXPECT_EQ(small[2].segments[0].tokens, (std::vector<int64_t>{15}));
  // Fits on both sides: returned as is.
  EXPECT_EQ(split_to_context(d, 15).size(), 1u);
  // A speech segment with more tokens than the context cannot fit, whatever its frames.
  expect_bad_item([&] { split_to_context(d, 5); }, "speech segment longer than context",
                  {"ls/dense", "speech segment 0", "6 tokens", "(5)"});
}

}  // namespace
}  // namespace salad::data
