// SentencePieceTokenizer and train_sentencepiece: a small BPE model is trained once on a corpus
// generated here (deterministic, ~20 KB), then encode/decode, ids, special ids, errors and
// thread safety are checked against it. The sentencepiece work runs in libsalad_spm.so, loaded
// in isolation next to LibTorch in this very process (see sentencepiece_tokenizer.cpp).
#include "salad/text/sentencepiece_tokenizer.h"

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <thread>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::text {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::TempDir;

constexpr int64_t kVocab = 400;

// Sentences from a tiny grammar with a fixed LCG: the same text on every run and platform.
// Single spaces and no leading/trailing blanks, so NFKC + whitespace folding leaves them as is.
std::vector<std::string> corpus_lines() {
  static const char* const kSubjects[] = {"the old sailor",  "a young doctor",     "my neighbour",
                                          "the committee",   "every student",      "the café owner",
                                          "a naïve tourist", "the mayor of Zürich"};
  static const char* const kVerbs[] = {"watched", "described", "remembered", "painted",
                                       "ignored", "followed",  "discovered", "repaired"};
  static const char* const kObjects[] = {"the silent harbour",        "a broken lantern",
                                         "the northern mountains",    "an unusual letter",
                                         "the morning train",         "seven wooden boxes",
                                         "the river after the storm", "a forgotten garden"};
  static const char* const kEndings[] = {
      "before dawn.", "with great care.", "for many years.",   "without a word.",
      "in the rain.", "again and again.", "near the station.", "at 12:30 on Tuesday."};
  std::vector<std::string> lines;
  uint32_t state = 12345;
  const auto pick = [&](int n) {
    state = state * 1664525u + 1013904223u;
    return static_cast<int>((state >> 16) % static_cast<uint32_t>(n));
  };
  for (int i = 0; i < 400; ++i) {
    std::string s = kSubjects[pick(8)];
    s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    s += std::string(" ") + kVerbs[pick(8)] + " " + kObjects[pick(8)] + " " + kEndings[pick(8)];
    lines.push_back(s);
  }
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  return text;
}

SentencePieceTrainOptions small_options() {
  SentencePieceTrainOptions o;
  o.vocab_size = kVocab;
  return o;
}

// One folder with the corpus and the model trained on it, shared by the tests of this file.
struct Trained {
  TempDir dir;
  fs::path corpus = dir / "corpus.txt";
  fs::path prefix = dir / "spm";
  std::unique_ptr<SentencePieceTokenizer> tok;
  Trained() {
    test::write_text(corpus, join_lines(corpus_lines()));
    train_sentencepiece(corpus, prefix, small_options());
    tok = SentencePieceTokenizer::load(prefix.string() + ".model");
  }
};

const Trained& trained() {
  static const Trained t;
  return t;
}

const SentencePieceTokenizer& tok() { return *trained().tok; }

// ---- Training -----------------------------------------------------------------------------------

TEST(SentencePieceTrainTest, WritesModelAndVocab) {
  const Trained& t = trained();
  const std::string model = t.prefix.string() + ".model";
  const std::string vocab = t.prefix.string() + ".vocab";
  ASSERT_TRUE(fs::exists(model));
  ASSERT_TRUE(fs::exists(vocab));
  EXPECT_EQ(tok().vocab_size(), kVocab);
  EXPECT_EQ(tok().kind(), "sentencepiece");
  EXPECT_EQ(tok().name(), model);

  // .vocab: one "piece<TAB>score" line per id, in id order.
  std::istringstream in(test::read_text(vocab));
  std::string line;
  int64_t id = 0;
  while (std::getline(in, line)) {
    const auto tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos) << "line " << id << ": " << line;
    EXPECT_EQ(line.substr(0, tab), tok().id_to_token(id)) << "line " << id;
    ++id;
  }
  EXPECT_EQ(id, kVocab);
  // No temp files left behind by the atomic writes.
  int files = 0;
  for (const auto& e : fs::directory_iterator(t.dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 3);  // corpus, .model, .vocab
}

TEST(SentencePieceTrainTest, DeterministicForASeed) {
  const Trained& t = trained();
  TempDir d;
  // Same corpus under an awkward name (sentencepiece's own flags split on spaces and commas),
  // written elsewhere: the model bytes do not depend on any path.
  const fs::path corpus = d / "my corpus, v2 --vocab_size=9.txt";
  fs::copy_file(t.corpus, corpus);
  train_sentencepiece(corpus, d / "again, v2", small_options());
  EXPECT_EQ(test::read_text(d / "again, v2.model"), test::read_text(t.prefix.string() + ".model"));
  EXPECT_EQ(test::read_text(d / "again, v2.vocab"), test::read_text(t.prefix.string() + ".vocab"));
}

TEST(SentencePieceTrainTest, ThreadedTrainingIsDeterministic) {
  const Trained& t = trained();
  TempDir d;
  SentencePieceTrainOptions o = small_options();
  o.model_type = "unigram";
  o.vocab_size = 380;  // the unigram trainer cannot fill 400 on this corpus
  o.num_threads = 2;
  train_sentencepiece(t.corpus, d / "a", o);
  train_sentencepiece(t.corpus, d / "b", o);
  EXPECT_EQ(test::read_text(d / "a.model"), test::read_text(d / "b.model"));
  auto u = SentencePieceTokenizer::load(d / "a.model");
  EXPECT_EQ(u->vocab_size(), 380);
  const std::string line = corpus_lines()[7];
  EXPECT_EQ(u->decode(u->encode(line)), line);

  // bpe: the pieces do not depend on the thread count (the model stores num_threads itself).
  SentencePieceTrainOptions b = small_options();
  b.num_threads = 2;
  train_sentencepiece(t.corpus, d / "bpe2", b);
  EXPECT_EQ(test::read_text(d / "bpe2.vocab"), test::read_text(t.prefix.string() + ".vocab"));
}

TEST(SentencePieceTrainTest, UserDefinedSymbolsStayWhole) {
  const Trained& t = trained();
  TempDir d;
  SentencePieceTrainOptions o = small_options();
  o.user_defined_symbols = {"<speech>", "[laugh]"};
  train_sentencepiece(t.corpus, d / "u", o);
  auto u = SentencePieceTokenizer::load(d / "u.model");
  const auto speech = u->token_to_id("<speech>");
  ASSERT_TRUE(speech.has_value());
  const auto ids = u->encode("the<speech>river");
  EXPECT_NE(std::find(ids.begin(), ids.end(), *speech), ids.end());
  EXPECT_EQ(u->decode(ids), "the<speech>river");
}

TEST(SentencePieceTrainTest, MissingOrEmptyCorpusIsAnError) {
  TempDir d;
  const SentencePieceTrainOptions o = small_options();
  expect_error<IoError>([&] { train_sentencepiece(d / "nope.txt", d / "m", o); },
                        {(d / "nope.txt").string(), "No such file"});
  test::write_text(d / "empty.txt", "");
  expect_error<Error>([&] { train_sentencepiece(d / "empty.txt", d / "m", o); },
                      {(d / "empty.txt").string(), "no text"});
  test::write_text(d / "blank.txt", "\n  \n\t\r\n");
  expect_error<Error>([&] { train_sentencepiece(d / "blank.txt", d / "m", o); },
                      {(d / "blank.txt").string(), "no text"});
  expect_error<IoError>([&] { train_sentencepiece(d.path(), d / "m", o); },
                        {d.path().string(), "Is a directory"});
  EXPECT_FALSE(fs::exists(d / "m.model"));
}

TEST(SentencePieceTrainTest, MissingOutputFolderIsIoError) {
  expect_error<IoError>(
      [] { train_sentencepiece(trained().corpus, "/nonexistent/out/spm", small_options()); },
      {"/nonexistent/out/spm.model", "/nonexistent/out", "does not exist"});
  expect_error<ConfigError>(
      [] { train_sentencepiece(trained().corpus, trained().dir.path() / "", small_options()); },
      {"names no file"});
}

TEST(SentencePieceTrainTest, VocabTooLargeForCorpusQuotesSentencepiece) {
  TempDir d;
  test::write_text(d / "tiny.txt", "hello world\nhello there\n");
  SentencePieceTrainOptions o;
  o.vocab_size = 400;
  expect_error<Error>([&] { train_sentencepiece(d / "tiny.txt", d / "m", o); },
                      {(d / "tiny.txt").string(), "Vocabulary size too high (400)"});
  EXPECT_FALSE(fs::exists(d / "m.model"));
  EXPECT_FALSE(fs::exists(d / "m.vocab"));
}

TEST(SentencePieceTrainTest, InvalidUtf8InCorpusIsRepaired) {
  TempDir d;
  std::string text = join_lines(corpus_lines());
  text += "broken \xff\xfe bytes and a cut \xe2\x82\n";
  test::write_text(d / "c.txt", text);
  train_sentencepiece(d / "c.txt", d / "m", small_options());
  auto m = SentencePieceTokenizer::load(d / "m.model");
  EXPECT_EQ(m->vocab_size(), kVocab);
}

TEST(SentencePieceTrainTest, OptionsAreValidated) {
  const auto invalid = [](auto&& edit, std::initializer_list<std::string> fragments) {
    SentencePieceTrainOptions o = small_options();
    edit(o);
    expect_error<ConfigError>([&] { o.validate(); }, fragments);
  };
  EXPECT_NO_THROW(small_options().validate());
  invalid([](auto& o) { o.model_type = "wordpiece"; }, {"model_type", "wordpiece", "unigram"});
  invalid([](auto& o) { o.normalization_rule_name = "nfd"; }, {"normalization_rule_name", "nfd"});
  invalid([](auto& o) { o.vocab_size = 200; }, {"vocab_size", "200", "byte_fallback"});
  invalid([](auto& o) { o.character_coverage = 0.5; }, {"character_coverage", "0.98"});
  invalid([](auto& o) { o.input_sentence_size = 50; }, {"input_sentence_size", "50"});
  invalid([](auto& o) { o.seed = -1; }, {"seed", "-1"});
  invalid([](auto& o) { o.num_threads = 0; }, {"num_threads"});
  invalid([](auto& o) { o.pad_id = 0; }, {"pad_id", "unk_id"});
  invalid([](auto& o) { o.eos_id = kVocab; }, {"eos_id", "400"});
  invalid([](auto& o) { o.unk_id = -1; }, {"unk_id", "-1"});
  invalid([](auto& o) { o.user_defined_symbols = {"a,b"}; }, {"user_defined_symbols[0]", "','"});
  invalid([](auto& o) { o.user_defined_symbols = {""}; }, {"user_defined_symbols[0]"});
  invalid(
      [](auto& o) {
        o.model_type = "char";
        o.byte_fallback = true;
      },
      {"byte_fallback", "char"});
  // A bad option is reported before the corpus is touched.
  SentencePieceTrainOptions o = small_options();
  o.model_type = "wordpiece";
  EXPECT_THROW(train_sentencepiece("/nonexistent/corpus.txt", "/nonexistent/m", o), ConfigError);
}

// ---- Encode / decode ----------------------------------------------------------------------------

TEST(SentencePieceTokenizerTest, RoundTripsCorpusLines) {
  const auto lines = corpus_lines();
  for (size_t i = 0; i < lines.size(); i += 7) {
    const auto ids = tok().encode(lines[i]);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(tok().decode(ids), lines[i]) << "line " << i;
  }
  // Unseen characters go through byte pieces and come back intact.
  const std::string unseen = "Köln ☃ 東京 — 42%";
  EXPECT_EQ(tok().decode(tok().encode(unseen)), unseen);
  EXPECT_TRUE(tok().encode("").empty());
  EXPECT_EQ(tok().decode({}), "");
}

TEST(SentencePieceTokenizerTest, DecodeGivesTheNormalisedText) {
  // The default nmt_nfkc rule: NFKC, whitespace runs folded, ends trimmed.
  EXPECT_EQ(tok().decode(tok().encode("  the   old\tsailor  ")), "the old sailor");
  EXPECT_EQ(tok().decode(tok().encode("ﬁne ①")), "fine 1");
}

TEST(SentencePieceTokenizerTest, IdsAreInRange) {
  for (const auto& line : corpus_lines()) {
    for (const int64_t id : tok().encode(line)) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, tok().vocab_size());
    }
  }
  // A frequent word is one piece.
  EXPECT_EQ(tok().encode("the").size(), 1u);
}

TEST(SentencePieceTokenizerTest, SpecialIdsAsDocumented) {
  EXPECT_EQ(tok().unk_id(), 0);
  EXPECT_EQ(tok().bos_id(), 1);
  EXPECT_EQ(tok().eos_id(), 2);
  EXPECT_EQ(tok().pad_id(), 3);
  EXPECT_EQ(tok().id_to_token(0), "<unk>");
  EXPECT_EQ(tok().id_to_token(1), "<s>");
  EXPECT_EQ(tok().id_to_token(2), "</s>");
  EXPECT_EQ(tok().id_to_token(3), "<pad>");
  // Control tokens decode to nothing; encode never adds them.
  const auto ids = tok().encode("the river");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1) + std::count(ids.begin(), ids.end(), 2), 0);
  std::vector<int64_t> framed = {1};
  framed.insert(framed.end(), ids.begin(), ids.end());
  framed.push_back(2);
  framed.push_back(3);
  EXPECT_EQ(tok().decode(framed), "the river");

  // Without bos/pad: -1.
  TempDir d;
  SentencePieceTrainOptions o = small_options();
  o.bos_id = -1;
  o.pad_id = -1;
  o.eos_id = 1;
  train_sentencepiece(trained().corpus, d / "m", o);
  auto m = SentencePieceTokenizer::load(d / "m.model");
  EXPECT_EQ(m->bos_id(), -1);
  EXPECT_EQ(m->pad_id(), -1);
  EXPECT_EQ(m->eos_id(), 1);
  EXPECT_EQ(m->unk_id(), 0);
}

TEST(SentencePieceTokenizerTest, TokenAndIdAgree) {
  for (int64_t id = 0; id < tok().vocab_size(); ++id) {
    const std::string piece = tok().id_to_token(id);
    ASSERT_EQ(tok().token_to_id(piece), id) << "piece '" << piece << "'";
  }
  EXPECT_EQ(tok().token_to_id("<0x41>"), tok().token_to_id("<0x00>").value() + 0x41);
  EXPECT_EQ(tok().token_to_id("\xe2\x96\x81the"), tok().encode("the").at(0));
  EXPECT_EQ(tok().token_to_id("no such piece"), std::nullopt);
  EXPECT_EQ(tok().token_to_id(""), std::nullopt);
  EXPECT_EQ(tok().token_to_id("<unk>"), 0);
}

TEST(SentencePieceTokenizerTest, OutOfRangeIdsAreDataErrors) {
  expect_error<DataError>(
      [] {
        tok().decode({5, kVocab, 6});
      },
      {"token id 400", "position 1", "[0, 400)", tok().name()});
  expect_error<DataError>([] { tok().decode({-1}); }, {"token id -1", "[0, 400)"});
  expect_error<DataError>([] { tok().decode({int64_t{1} << 40}); }, {"1099511627776"});
  expect_error<DataError>([] { tok().id_to_token(kVocab); }, {"token id 400", "[0, 400)"});
  expect_error<DataError>([] { tok().id_to_token(-3); }, {"token id -3"});
}

TEST(SentencePieceTokenizerTest, InvalidUtf8IsReplacedNotFatal) {
  // Each maximal ill-formed subsequence becomes one U+FFFD (the Hugging Face / WHATWG rule).
  const std::string r = "\xEF\xBF\xBD";
  const std::pair<std::string, std::string> cases[] = {
      {"abc\xff def", "abc" + r + " def"},
      {"cut \xe2\x82", "cut " + r},                   // truncated 3-byte sequence: one
      {"cut \xf0\x9f\x98 end", "cut " + r + " end"},  // truncated 4-byte sequence: one
      {"\xc0\xaf over", r + r + " over"},             // overlong lead: one per byte
      {"\xed\xa0\x80 sur", r + r + r + " sur"},       // surrogate: one per byte
      {"\xf4\x90\x80\x80", r + r + r + r},            // above U+10FFFF
      {"\x80\x80 lone", r + r + " lone"},             // lone continuation bytes
      {"ok \xe2\x82\xac and \xe2\x82", "ok \xe2\x82\xac and " + r},  // the valid euro sign stays
  };
  // The default nmt_nfkc normaliser drops U+FFFD, so an identity-normalised model (where it
  // survives as byte pieces) is what shows how many were inserted.
  TempDir d;
  SentencePieceTrainOptions o = small_options();
  o.normalization_rule_name = "identity";
  train_sentencepiece(trained().corpus, d / "id", o);
  const auto identity = SentencePieceTokenizer::load(d / "id.model");
  for (const SentencePieceTokenizer* t :
       std::vector<const SentencePieceTokenizer*>{&tok(), identity.get()}) {
    for (const auto& [bad, fixed] : cases) {
      std::vector<int64_t> ids;
      ASSERT_NO_THROW(ids = t->encode(bad));
      EXPECT_EQ(ids, t->encode(fixed)) << "input: " << ::testing::PrintToString(bad);
      if (t == identity.get()) {
        EXPECT_EQ(t->decode(ids), fixed);
      }
    }
  }
  EXPECT_EQ(tok().decode(tok().encode("abc\xff def")), "abc def");
}

TEST(SentencePieceTokenizerTest, ConcurrentEncodeIsConsistent) {
  const auto lines = corpus_lines();
  std::vector<std::vector<int64_t>> expected;
  for (const auto& l : lines) expected.push_back(tok().encode(l));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) {
        for (size_t i = 0; i < lines.size(); ++i) {
          const size_t k = (i * 31 + static_cast<size_t>(t) * 97) % lines.size();
          if (tok().encode(lines[k]) != expected[k]) ++mismatches[t];
          if (tok().decode(expected[k]) != lines[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// ---- Loading ------------------------------------------------------------------------------------

TEST(SentencePieceTokenizerTest, MissingOrCorruptModelIsIoError) {
  TempDir d;
  expect_error<IoError>([&] { SentencePieceTokenizer::load(d / "none.model"); },
                        {(d / "none.model").string(), "No such file"});
  test::write_text(d / "text.model", "this is not a sentencepiece model at all\n");
  expect_error<IoError>([&] { SentencePieceTokenizer::load(d / "text.model"); },
                        {(d / "text.model").string(), "not a SentencePiece model"});
  test::write_text(d / "empty.model", "");
  expect_error<IoError>([&] { SentencePieceTokenizer::load(d / "empty.model"); },
                        {(d / "empty.model").string(), "empty"});
  const std::string good = test::read_text(trained().prefix.string() + ".model");
  test::write_text(d / "cut.model", good.substr(0, good.size() / 2));
  expect_error<IoError>([&] { SentencePieceTokenizer::load(d / "cut.model"); },
                        {(d / "cut.model").string()});
  EXPECT_THROW(SentencePieceTokenizer::load(d.path()), IoError);  // a folder
}

TEST(SentencePieceTokenizerTest, FromBytesMatchesLoad) {
  const std::string bytes = test::read_text(trained().prefix.string() + ".model");
  auto m = SentencePieceTokenizer::from_bytes(bytes, "checkpoint:tokenizer");
  EXPECT_EQ(m->name(), "checkpoint:tokenizer");
  const std::string line = corpus_lines()[3];
  EXPECT_EQ(m->encode(line), tok().encode(line));
  expect_error<IoError>([] { SentencePieceTokenizer::from_bytes("xyz", "blob"); }, {"blob"});
}

TEST(SentencePieceTokenizerTest, SentencepieceStaysOutOfTheGlobalScope) {
  (void)tok();  // the module is loaded by now
  // Neither the module's entry points nor sentencepiece's (or its bundled protobuf's) symbols
  // are visible to the rest of the process, where LibTorch's libprotobuf lives.
  EXPECT_EQ(::dlsym(RTLD_DEFAULT, "salad_spm_load"), nullptr);
  EXPECT_EQ(::dlsym(RTLD_DEFAULT, "_ZN13sentencepiece22SentencePieceProcessorC1Ev"), nullptr);
}

// In a fresh process (threadsafe death tests re-execute this binary): a module that cannot be
// found is an IoError naming the path and the variable that overrides it.
TEST(SentencePieceTokenizerTest, UnloadableModuleIsIoError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Nothing here may load the module before the statement runs (the child re-runs this body).
  TempDir d;
  test::write_text(d / "m.model", "bytes");
  EXPECT_EXIT(
      {
        ::setenv("SALAD_SPM_MODULE", "/nonexistent/libsalad_spm.so", 1);
        try {
          SentencePieceTokenizer::load(d / "m.model");
        } catch (const IoError& e) {
          std::cerr << e.what() << std::endl;
          std::_Exit(42);
        }
        std::_Exit(1);
      },
      ::testing::ExitedWithCode(42),
      "cannot load the SentencePiece module: tried /nonexistent/libsalad_spm.so "
      "\\(from \\$SALAD_SPM_MODULE\\)");
}

}  // namespace
}  // namespace salad::text
