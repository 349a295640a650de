// BpeTokenizer: id parity with the reference on the Qwen tokenizer (BpeTokenizerGolden, needs
// scripts/fetch_assets.sh), and unit tests on tiny tokenizer.json files written here.
#include "salad/text/bpe_tokenizer.h"

#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

// ---- The Qwen tokenizer (assets) ------------------------------------------------------------

using test::qwen_tokenizer_json;

using test::missing_qwen_tokenizer_message;

// Loaded once per process; nullptr when the asset is missing (tests then fail, not skip).
const BpeTokenizer* qwen() {
  static const std::unique_ptr<BpeTokenizer> tok = []() -> std::unique_ptr<BpeTokenizer> {
    if (!fs::exists(qwen_tokenizer_json())) return nullptr;
    return BpeTokenizer::load(qwen_tokenizer_json());
  }();
  return tok.get();
}

#define ASSERT_QWEN(name)            \
  const BpeTokenizer* name = qwen(); \
  ASSERT_NE(name, nullptr) << missing_qwen_tokenizer_message()

struct CorpusLine {
  std::string text;
  std::vector<int64_t> ids;
  bool rt = false;
};

// The fixture of ../shared/fixtures/tokenizer (copied to tests/data/tokenizer).
std::vector<CorpusLine> corpus() {
  const fs::path dir = test::data_dir() / "tokenizer";
  std::vector<CorpusLine> lines;
  std::istringstream text(test::read_text(dir / "corpus.txt"));
  for (std::string line; std::getline(text, line);) lines.push_back({line, {}, false});
  std::istringstream ids(test::read_text(dir / "corpus.ids.jsonl"));
  std::size_t n = 0;
  for (std::string line; std::getline(ids, line); ++n) {
    const json j = json::parse(line);
    const auto i = j.at("i").get<std::size_t>();
    if (i >= lines.size()) throw std::runtime_error("corpus.ids.jsonl: line index out of range");
    lines[i].ids = j.at("ids").get<std::vector<int64_t>>();
    lines[i].rt = j.at("rt").get<bool>();
  }
  if (n != lines.size()) throw std::runtime_error("corpus.txt and corpus.ids.jsonl differ");
  return lines;
}

// NFC of the corpus lines that are not NFC already (Python's unicodedata, Unicode 14): decode
// returns the normalised text.
const std::map<std::size_t, std::string>& corpus_nfc() {
  static const std::map<std::size_t, std::string> m = {
      {200, "caf\xC3\xA9 vs caf\xC3\xA9"},
      {201, "\xC3\x85ngstrom vs \xC3\x85ngstrom vs \xC3\x85ngstrom (Angstrom sign)"},
      {202, "K Kelvin sign, \xCE\xA9 Ohm sign, \xE1\xBA\x9B\xCC\xA3 long s with dots"},
      {203, "\xC3\xB1 \xC3\xB6 \xC3\xBC \xC3\xA8 \xC3\xA2 \xC3\xA7"},
      {205, "\xC3\xA9\xCC\x81\xCC\x81 repeated combining acute"},
      {206, "\xEA\xB0\x81 conjoining jamo (NFC composes to \xEA\xB0\x81)"},
      {209,
       "\xE0\xA4\x95\xE0\xA4\xBC \xE0\xA4\x96\xE0\xA4\xBC Devanagari nukta composition "
       "exclusions"},
      {210, "\xCC\x88\xCC\x81 \xCC\x80 \xCC\x81 singletons"},
      {211, "\xE1\xB8\x88 vs \xE1\xB8\x88"},
      {212, "q\xCC\xA3\xCC\x87 reordering of marks (canonical order)"},
      {214, "\xD8\xA2 Arabic madda"},
  };
  return m;
}

std::string ids_text(const std::vector<int64_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

// GPT-2's byte -> symbol map, written out independently of the library's.
std::string byte_symbol(int b) {
  static const std::vector<int> table = [] {
    std::vector<int> t(256);
    int next = 256;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174;
      t[i] = printable ? i : next++;
    }
    return t;
  }();
  const int c = table[b];
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

// Every corpus line encodes to the reference ids; returns the number of mismatching lines.
int check_corpus(const BpeTokenizer& tok, const std::vector<CorpusLine>& lines,
                 const std::string& label) {
  int bad = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto got = tok.encode(lines[i].text);
    if (got != lines[i].ids) {
      ++bad;
      ADD_FAILURE() << label << ": corpus line " << i << " '" << lines[i].text << "'\n  expected "
                    << ids_text(lines[i].ids) << "\n  got      " << ids_text(got);
    }
  }
  return bad;
}

TEST(BpeTokenizerGolden, QwenCorpusEncodesToReferenceIds) {
  ASSERT_QWEN(tok);
  const auto lines = corpus();
  ASSERT_EQ(lines.size(), 280u);
  EXPECT_EQ(check_corpus(*tok, lines, "default options"), 0);
}

TEST(BpeTokenizerGolden, QwenCorpusDecodesToNfcText) {
  ASSERT_QWEN(tok);
  const auto lines = corpus();
  int checked = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].rt) continue;
    const auto nfc = corpus_nfc().find(i);
    const std::string& expected = nfc != corpus_nfc().end() ? nfc->second : lines[i].text;
    EXPECT_EQ(tok->decode(lines[i].ids), expected) << "corpus line " << i;
    ++checked;
  }
  EXPECT_EQ(checked, 280);
}

// The cache flavour and the merge algorithm are tuning: ids never change.
TEST(BpeTokenizerGolden, QwenCorpusSameIdsForEveryCacheAndMergeStrategy) {
  ASSERT_TRUE(fs::exists(qwen_tokenizer_json())) << missing_qwen_tokenizer_message();
  const auto lines = corpus();
  using Cache = BpeTokenizerOptions::Cache;
  for (const auto& [cache, heap_min, name] :
       std::vector<std::tuple<Cache, std::size_t, std::string>>{
           {Cache::kNone, 2, "no cache, heap merge always"},
           {Cache::kSharded, 1u << 20, "sharded cache, scan merge always"},
           {Cache::kThreadLocal, 16, "thread-local cache, heap merge from 16 bytes"}}) {
    BpeTokenizerOptions o;
    o.cache = cache;
    o.heap_merge_min_bytes = heap_min;
    o.cache_capacity = 64;  // small: exercises the cache being emptied when full
    const auto tok = BpeTokenizer::load(qwen_tokenizer_json(), o);
    EXPECT_EQ(check_corpus(*tok, lines, name), 0) << name;
    // Twice: the second pass is served from the cache.
    EXPECT_EQ(check_corpus(*tok, lines, name + " (cached)"), 0) << name;
  }
}

TEST(BpeTokenizerGolden, QwenConcurrentEncodeMatchesReference) {
  ASSERT_TRUE(fs::exists(qwen_tokenizer_json())) << missing_qwen_tokenizer_message();
  const auto lines = corpus();
  for (auto cache :
       {BpeTokenizerOptions::Cache::kSharded, BpeTokenizerOptions::Cache::kThreadLocal}) {
    BpeTokenizerOptions o;
    o.cache = cache;
    o.cache_capacity = 512;
    const auto tok = BpeTokenizer::load(qwen_tokenizer_json(), o);
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int rep = 0; rep < 5; ++rep) {
          for (std::size_t i = 0; i < lines.size(); ++i) {
            const std::size_t k = (i * 7 + static_cast<std::size_t>(t) * 31 + rep) % lines.size();
            if (tok->encode(lines[k].text) != lines[k].ids) ++mismatches;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(mismatches.load(), 0);
  }
}

TEST(BpeTokenizerQwen, VocabularyAndSpecialIds) {
  ASSERT_QWEN(tok);
  EXPECT_EQ(tok->kind(), "bpe");
  EXPECT_EQ(tok->vocab_size(), 151669);
  EXPECT_EQ(tok->token_to_id("<|endoftext|>"), 151643);
  EXPECT_EQ(tok->token_to_id("<|im_end|>"), 151645);
  EXPECT_EQ(tok->token_to_id("</think>"), 151668);
  EXPECT_EQ(tok->token_to_id("\xC4\xA0the"), 279);  // "Ġthe"
  EXPECT_EQ(tok->token_to_id("no such token"), std::nullopt);
  EXPECT_EQ(tok->id_to_token(151644), "<|im_start|>");
  EXPECT_EQ(tok->id_to_token(279), "\xC4\xA0the");
  // From tokenizer_config.json beside tokenizer.json.
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), 151645);
  EXPECT_EQ(tok->pad_id(), 151643);
}

TEST(BpeTokenizerQwen, AddedTokensAreMatchedInsideWords) {
  ASSERT_QWEN(tok);
  const auto hello = tok->encode("Hello");
  const auto world = tok->encode("world");
  std::vector<int64_t> expected = hello;
  expected.push_back(151645);  // <|im_end|>, special
  expected.insert(expected.end(), world.begin(), world.end());
  expected.push_back(151667);  // <think>, not special
  expected.insert(expected.end(), world.begin(), world.end());
  EXPECT_EQ(tok->encode("Hello<|im_end|>world<think>world"), expected);
  // Adjacent tokens, and a near miss that is ordinary text.
  EXPECT_EQ(tok->encode("<|im_start|><|im_end|>"), (std::vector<int64_t>{151644, 151645}));
  const auto near = tok->encode("<|im_end|");
  EXPECT_EQ(std::count(near.begin(), near.end(), 151645), 0);
  EXPECT_EQ(tok->decode(tok->encode("a<|im_end|>b")), "a<|im_end|>b");
}

TEST(BpeTokenizerQwen, InvalidUtf8IsReplacedLikeHuggingFace) {
  ASSERT_QWEN(tok);
  const std::string fffd = "\xEF\xBF\xBD";
  // Each case: invalid bytes, and the text with U+FFFD for each maximal invalid subpart.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xff\xfe abc", fffd + fffd + " abc"},
      {"a\xE2\x82 b", "a" + fffd + " b"},                  // truncated 3-byte sequence
      {"abc\xE2\x82", "abc" + fffd},                       // truncated at the end
      {"x\xED\xA0\x80y", "x" + fffd + fffd + fffd + "y"},  // an encoded surrogate
      {"\xC0\xAF!", fffd + fffd + "!"},                    // overlong
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd},     // > U+10FFFF
      {"\xF0\x9F\x98", fffd},                              // truncated 4-byte emoji
      {std::string("a\0b", 3), std::string("a\0b", 3)},    // NUL is valid
  };
  for (const auto& [bad, good] : cases) {
    EXPECT_EQ(tok->encode(bad), tok->encode(good)) << ids_text(tok->encode(good));
    EXPECT_EQ(tok->decode(tok->encode(bad)), good);
  }
}

TEST(BpeTokenizerQwen, DecodeReplacesInvalidUtf8AndRejectsBadIds) {
  ASSERT_QWEN(tok);
  const auto euro = tok->encode("\xE2\x82\xAC");  // €
  ASSERT_FALSE(euro.empty());
  // The single-byte tokens of the bytes of €: decoding part of them is lossy.
  const int64_t b0 = *tok->token_to_id(byte_symbol(0xE2));
  const int64_t b1 = *tok->token_to_id(byte_symbol(0x82));
  const int64_t b2 = *tok->token_to_id(byte_symbol(0xAC));
  EXPECT_EQ(tok->decode({b0, b1, b2}), "\xE2\x82\xAC");
  EXPECT_EQ(tok->decode({b0, b1}), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode({b1, b0, b1, b2}), "\xEF\xBF\xBD\xE2\x82\xAC");
  EXPECT_EQ(tok->decode({}), "");
  test::expect_error<DataError>([&] { tok->decode({1, 999999}); }, {"999999", "151669"});
  test::expect_error<DataError>([&] { tok->decode({-1}); }, {"-1", "151669"});
  test::expect_error<DataError>([&] { tok->id_to_token(151669); }, {"151669"});
}

TEST(BpeTokenizerQwen, LongAndOddInputsRoundTrip) {
  ASSERT_QWEN(tok);
  const std::vector<std::string> texts = {
      "",
      std::string(1 << 20, ' '),        // 1 MiB of spaces: one regex piece
      std::string(100000, 'a') + " b",  // a 100 kB word: the heap merge
      std::string(50000, '\n') + "x\r\n\t \t",
      [] {
        std::string s;
        for (int i = 0; i < 20000; ++i) s += "\xE6\xBC\xA2\xE5\xAD\x97";  // 漢字, one long word
        return s;
      }(),
      [] {
        std::string s;
        for (int i = 0; i < 256; ++i) s += static_cast<char>(i < 128 ? i : 'z');
        return s;
      }(),
  };
  for (const auto& t : texts) {
    const auto ids = tok->encode(t);
    EXPECT_EQ(tok->decode(ids), t) << "text of " << t.size() << " bytes";
    EXPECT_EQ(ids.empty(), t.empty());
  }
}

TEST(BpeTokenizerQwen, NormalisesToNfcBeforeSplitting) {
  ASSERT_QWEN(tok);
  // "café" with a combining acute encodes like the precomposed form.
  EXPECT_EQ(tok->encode("cafe\xCC\x81 ok"), tok->encode("caf\xC3\xA9 ok"));
  // Kelvin sign and Angstrom sign are singletons: K and Å.
  EXPECT_EQ(tok->encode("\xE2\x84\xAA \xE2\x84\xAB"), tok->encode("K \xC3\x85"));
}

// ---- Tiny tokenizer.json files --------------------------------------------------------------

constexpr const char* kQwenPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// A byte-level BPE tokenizer.json: the 256 byte symbols (ids 0-255), then one id per merge
// result, in merge order. `merges` are pairs of symbol strings.
json tiny_json(const std::vector<std::pair<std::string, std::string>>& merges, bool pair_format) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = b;
  json m = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
    if (pair_format) {
      m.push_back(json::array({a, b}));
    } else {
      m.push_back(a + " " + b);
    }
  }
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = json::array();
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", json::array({{{"type", "Split"},
                                                        {"pattern", {{"Regex", kQwenPattern}}},
                                                        {"behavior", "Isolated"},
                                                        {"invert", false}},
                                                       {{"type", "ByteLevel"},
                                                        {"add_prefix_space", false},
                                                        {"trim_offsets", false},
                                                        {"use_regex", false}}})}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", false},
                  {"trim_offsets", false},
                  {"use_regex", false}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", m}};
  return j;
}

fs::path write_json(const TempDir& dir, const json& j, const std::string& name = "tokenizer.json") {
  const fs::path p = dir / name;
  test::write_text(p, j.dump(1));
  return p;
}

const std::vector<std::pair<std::string, std::string>> kHelloMerges = {
    {"l", "l"}, {"h", "e"},          {"he", "ll"},         {"hell", "o"},        {"\xC4\xA0", "w"},
    {"o", "r"}, {"\xC4\xA0w", "or"}, {"\xC4\xA0wor", "l"}, {"\xC4\xA0worl", "d"}};

TEST(BpeTokenizerTest, MergesAsStringsOrPairsGiveTheSameIds) {
  TempDir dir;
  const auto strings =
      BpeTokenizer::load(write_json(dir, tiny_json(kHelloMerges, false), "a.json"));
  const auto pairs = BpeTokenizer::load(write_json(dir, tiny_json(kHelloMerges, true), "b.json"));
  const auto hello = *strings->token_to_id("hello");
  const auto world = *strings->token_to_id("\xC4\xA0world");
  EXPECT_EQ(strings->encode("hello world"), (std::vector<int64_t>{hello, world}));
  EXPECT_EQ(pairs->encode("hello world"), (std::vector<int64_t>{hello, world}));
  EXPECT_EQ(strings->vocab_size(), 256 + 9);
  EXPECT_EQ(strings->decode({hello, world}), "hello world");
  EXPECT_EQ(strings->bos_id(), -1);  // no tokenizer_config.json
  // No merge applies: one id per byte.
  EXPECT_EQ(strings->encode("xyz!"), (std::vector<int64_t>{'x', 'y', 'z', '!'}));
}

TEST(BpeTokenizerTest, LowestRankMergesFirstAndLeftmostOnTies) {
  TempDir dir;
  // "abc": with b+c ranked first -> a|bc; with a+b first -> ab|c.
  const auto bc_first =
      BpeTokenizer::load(write_json(dir, tiny_json({{"b", "c"}, {"a", "b"}}, true), "1.json"));
  const auto ab_first =
      BpeTokenizer::load(write_json(dir, tiny_json({{"a", "b"}, {"b", "c"}}, true), "2.json"));
  EXPECT_EQ(bc_first->encode("abc"), (std::vector<int64_t>{'a', *bc_first->token_to_id("bc")}));
  EXPECT_EQ(ab_first->encode("abc"), (std::vector<int64_t>{*ab_first->token_to_id("ab"), 'c'}));
  // "aaa" with a+a: the leftmost pair merges first -> aa|a; "aaaa" -> aa|aa.
  for (std::size_t heap_min : {std::size_t{2}, std::size_t{1000}}) {
    BpeTokenizerOptions o;
    o.heap_merge_min_bytes = heap_min;
    const auto aa = BpeTokenizer::load(write_json(dir, tiny_json({{"a", "a"}}, true), "3.json"), o);
    const int64_t id = *aa->token_to_id("aa");
    EXPECT_EQ(aa->encode("aaa"), (std::vector<int64_t>{id, 'a'}));
    EXPECT_EQ(aa->encode("aaaa"), (std::vector<int64_t>{id, id}));
  }
}

TEST(BpeTokenizerTest, AddedTokensLongestMatchFirstInsideWords) {
  TempDir dir;
  json j = tiny_json(kHelloMerges, false);
  j["added_tokens"] = json::array({{{"id", 300},
                                    {"content", "<x>"},
                                    {"single_word", false},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", false},
                                    {"special", true}},
                                   {{"id", 301},
                                    {"content", "<x>y"},
                                    {"single_word", false},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", false},
                                    {"special", false}}});
  const auto tok = BpeTokenizer::load(write_json(dir, j));
  const int64_t hello = *tok->token_to_id("hello");
  EXPECT_EQ(tok->vocab_size(), 302);
  EXPECT_EQ(tok->encode("hello<x>hello"), (std::vector<int64_t>{hello, 300, hello}));
  EXPECT_EQ(tok->encode("hello<x>yhello"), (std::vector<int64_t>{hello, 301, hello}));
  EXPECT_EQ(tok->encode("<x><x>y"), (std::vector<int64_t>{300, 301}));
  EXPECT_EQ(tok->decode({hello, 301, 300}), "hello<x>y<x>");
  EXPECT_EQ(tok->token_to_id("<x>y"), 301);
  EXPECT_EQ(tok->id_to_token(300), "<x>");
  // Ids 265..299 are unassigned.
  test::expect_error<DataError>([&] { tok->decode({280}); }, {"280"});
}

TEST(BpeTokenizerTest, NormalizedAddedTokensMatchAfterNfc) {
  TempDir dir;
  json j = tiny_json({}, true);
  j["added_tokens"] = json::array({{{"id", 256},
                                    {"content", "caf\xC3\xA9"},
                                    {"single_word", false},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", true},
                                    {"special", false}}});
  const auto tok = BpeTokenizer::load(write_json(dir, j));
  EXPECT_EQ(tok->encode("a cafe\xCC\x81"),
            (std::vector<int64_t>{'a', *tok->token_to_id("\xC4\xA0"), 256}));
}

TEST(BpeTokenizerTest, ConfigErrorsNameTheFileAndThePiece) {
  TempDir dir;
  const auto load_with = [&](const std::function<void(json&)>& edit) {
    json j = tiny_json(kHelloMerges, true);
    edit(j);
    const fs::path p = write_json(dir, j, "bad.json");
    BpeTokenizer::load(p);
  };
  const std::string file = (dir / "bad.json").string();
  test::expect_error<IoError>([&] { load_with([](json& j) { j["model"]["type"] = "WordPiece"; }); },
                              {file, "unsupported model type", "WordPiece"});
  test::expect_error<IoError>(
      [&] {
        load_with([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["type"] = "Whitespace"; });
      },
      {file, "pre_tokenizer.pretokenizers[0]", "Whitespace"});
  test::expect_error<IoError>(
      [&] {
        load_with([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; });
      },
      {file, "behavior", "Removed"});
  test::expect_error<IoError>(
      [&] {
        load_with([](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; });
      },
      {file, "use_regex"});
  test::expect_error<IoError>(
      [&] {
        load_with(
            [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; });
      },
      {file, "PCRE2"});
  test::expect_error<IoError>(
      [&] { load_with([](json& j) {
              j["normalizer"] = {{"type", "Lowercase"}};
            }); },
      {file, "normalizer", "Lowercase"});
  test::expect_error<IoError>(
      [&] { load_with([](json& j) {
              j["decoder"] = {{"type", "WordPiece"}};
            }); },
      {file, "decoder", "WordPiece"});
  test::expect_error<IoError>([&] { load_with([](json& j) { j["model"]["dropout"] = 0.1; }); },
                              {file, "dropout"});
  test::expect_error<IoError>(
      [&] { load_with([](json& j) { j["model"]["merges"].push_back("q zz"); }); },
      {file, "model.merges[9]", "'zz' is not in model.vocab"});
  test::expect_error<IoError>(
      [&] { load_with([](json& j) { j["model"]["merges"].push_back("a b c"); }); },
      {file, "model.merges[9]"});
  test::expect_error<IoError>(
      [&] { load_with([](json& j) {
              j["truncation"] = {{"max_length", 8}};
            }); },
      {file, "truncation"});
  test::expect_error<IoError>([&] { load_with([](json& j) { j["surprise"] = 1; }); },
                              {file, "'surprise'"});
  test::expect_error<IoError>(
      [&] {
        load_with([](json& j) {
          j["added_tokens"] =
              json::array({{{"id", 300}, {"content", "<m>"}, {"lstrip", true}, {"special", true}}});
        });
      },
      {file, "<m>", "lstrip"});
  test::expect_error<IoError>(
      [&] { load_with([](json& j) { j["model"]["vocab"].erase("\xC4\xA0"); }); },
      {file, "byte-level symbol"});
}

TEST(BpeTokenizerTest, MissingOrCorruptFileIsAnIoErrorNamingIt) {
  TempDir dir;
  const fs::path missing = dir / "nope" / "tokenizer.json";
  test::expect_error<IoError>([&] { BpeTokenizer::load(missing); },
                              {missing.string(), "No such file"});
  const fs::path corrupt = dir / "tokenizer.json";
  test::write_text(corrupt, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
  test::expect_error<IoError>([&] { BpeTokenizer::load(corrupt); },
                              {corrupt.string(), "not valid JSON"});
  test::write_text(corrupt, "[1, 2]");
  test::expect_error<IoError>([&] { BpeTokenizer::load(corrupt); }, {corrupt.string()});
  test::expect_error<IoError>([&] { BpeTokenizer::load(dir.path()); }, {dir.path().string()});
}

TEST(BpeTokenizerTest, SpecialIdsFromTokenizerConfig) {
  TempDir dir;
  json j = tiny_json(kHelloMerges, true);
  j["added_tokens"] =
      json::array({{{"id", 300}, {"content", "<eos>"}, {"normalized", false}, {"special", true}}});
  const fs::path p = write_json(dir, j);
  test::write_text(
      dir / "tokenizer_config.json",
      R"({"bos_token": null, "eos_token": {"content": "<eos>"}, "pad_token": "hello"})");
  const auto tok = BpeTokenizer::load(p);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), 300);
  EXPECT_EQ(tok->pad_id(), *tok->token_to_id("hello"));
  test::write_text(dir / "tokenizer_config.json", R"({"eos_token": "<nope>"})");
  test::expect_error<IoError>([&] { BpeTokenizer::load(p); },
                              {(dir / "tokenizer_config.json").string(), "<nope>"});
}

TEST(BpeTokenizerTest, OptionsAreValidated) {
  BpeTokenizerOptions o;
  o.cache_capacity = 0;
  test::expect_error<ConfigError>([&] { o.validate(); }, {"cache_capacity"});
  o.cache = BpeTokenizerOptions::Cache::kNone;
  EXPECT_NO_THROW(o.validate());
}

}  // namespace
}  // namespace salad::text

namespace salad::text {
namespace {

TEST(BpeTokenizerQwen, WhitespaceIsOniguruma) {
  // Hugging Face splits with Oniguruma, whose \s excludes U+180E (Cf) and includes U+0085:
  // " \u180E" is one ` ?[^\s\p{L}\p{N}]+` piece there, while PCRE2's own \s would cut it in two.
  ASSERT_QWEN(tok);
  auto cat = [&](std::initializer_list<const char*> parts) {
    std::vector<int64_t> out;
    for (const char* p : parts) {
      const auto ids = tok->encode(p);
      out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  };
  EXPECT_EQ(tok->encode("a \xE1\xA0\x8E"
                        "b"),
            cat({"a", " \xE1\xA0\x8E", "b"}));
  // U+0085 is whitespace for both: "x\u0085\u0085 y" splits as "x", "\u0085\u0085", " y".
  EXPECT_EQ(tok->encode("x\xC2\x85\xC2\x85 y"), cat({"x", "\xC2\x85\xC2\x85", " y"}));
}

}  // namespace
}  // namespace salad::text
