// data::Loader on tiny fixtures: a word-timed + untimed speech manifest with a feature cache
// (random features at 12.5 fps), JSONL and plain-line text corpora, and a whitespace tokenizer.
#include "salad/data/loader.h"

#include <torch/torch.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/text/tokenizer.h"
#include "test_util.h"

namespace salad::data {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int64_t kDim = 4;
constexpr double kFps = 12.5;
/// A seed with which, in SkipFractionIsCheckedFrom200ItemsAndAtTheEndOfAPass, the small source
/// finishes its first epoch within the first 8 items drawn (found by trying seeds 0-59 with a
/// check at every epoch end: 28 and 56 fail there).
constexpr uint64_t kEarlyEpochSeed = 28;

/// One token per whitespace-separated word (a stable hash), enough for packing tests.
class WordTokenizer : public text::Tokenizer {
 public:
  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int64_t> ids;
    std::istringstream in{std::string(text)};
    std::string w;
    while (in >> w) {
      uint64_t h = 1469598103934665603ull;
      for (unsigned char c : w) h = (h ^ c) * 1099511628211ull;
      ids.push_back(static_cast<int64_t>(1 + h % 997));
    }
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    return std::to_string(ids.size()) + " tokens";
  }
  int64_t vocab_size() const override { return 1000; }
  std::optional<int64_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::string id_to_token(int64_t id) const override { return std::to_string(id); }
  std::string kind() const override { return "bpe"; }
};

std::string words_text(int64_t n, int64_t salt) {
  std::string s;
  for (int64_t i = 0; i < n; ++i) s += (i ? " w" : "w") + std::to_string((i * 7 + salt) % 50);
  return s;
}

/// A manifest line of a word-timed utterance: word i spans [0.4 i, 0.4 i + 0.3] s.
std::string timed_line(const std::string& id, int64_t words, const std::string& extra = "") {
  std::string w;
  for (int64_t i = 0; i < words; ++i) {
    w += std::string(i ? ", " : "") + "{\"w\": \"w" + std::to_string((i * 3 + id.size()) % 50) +
         "\", \"start\": " + std::to_string(0.4 * i) +
         ", \"end\": " + std::to_string(0.4 * i + 0.3) + "}";
  }
  return "{\"id\": \"" + id + "\", \"audio\": \"a.wav\", \"text\": \"x\", \"words\": [" + w + "]" +
         extra + "}\n";
}

std::string untimed_line(const std::string& id, const std::string& speaker,
                         const std::string& text) {
  return "{\"id\": \"" + id + "\", \"audio\": \"a.wav\", \"text\": \"" + text +
         "\", \"speaker\": \"" + speaker + "\"}\n";
}

int64_t frames_for_words(int64_t words) {
  return static_cast<int64_t>(std::ceil(0.4 * static_cast<double>(words) * kFps));
}

/// The shared fixture: speech (30 timed utterances, one of 40 words that needs splitting, 7
/// untimed ones of 3 speakers) with its feature cache, and a JSONL corpus of 40 lines (every 7th
/// longer than the context).
struct Fixture {
  test::TempDir dir;
  fs::path manifest = dir / "speech.jsonl";
  fs::path corpus = dir / "text.jsonl";
  fs::path cache_dir = dir / "cache";
  std::vector<std::string> speech_items;  // expected document ids, file order
  std::vector<std::string> text_items;

  Fixture() {
    torch::manual_seed(7);
    FeatureCacheMeta meta;
    meta.encoder = "test";
    meta.feature_dim = kDim;
    FeatureCacheWriter w(cache_dir, meta, 1 << 14);
    std::string m;
    for (int i = 0; i < 30; ++i) {
      const std::string id = "u" + std::to_string(i);
      const int64_t words = i == 11 ? 40 : 6 + (i * 5) % 13;
      m += timed_line(id, words);
      w.add(id, torch::randn({frames_for_words(words), kDim}));
      speech_items.push_back(id);
    }
    const char* speakers[] = {"A", "A", "A", "A", "B", "B", "C"};
    for (int i = 0; i < 7; ++i) {
      const std::string id = "c" + std::to_string(i);
      m += untimed_line(id, speakers[i], words_text(4 + i, i));
      w.add(id, torch::randn({10 + i, kDim}));
    }
    // utterance_group 3: runs break at 3 utterances and where the speaker changes.
    for (const char* g : {"c0+c1+c2", "c3", "c4+c5", "c6"}) speech_items.push_back(g);
    w.flush();
    test::write_text(manifest, m);

    std::string t;
    for (int i = 0; i < 40; ++i) {
      const std::string id = "t" + std::to_string(i);
      t += "{\"id\": \"" + id + "\", \"text\": \"" + words_text(i % 7 == 3 ? 150 : 3 + i % 9, i) +
           "\"}\n";
      text_items.push_back(id);
    }
    test::write_text(corpus, t);
  }

  LoaderOptions options(int64_t workers = 2) const {
    LoaderOptions o;
    o.sources = {{"speech", "speech", manifest, 1.0}, {"text", "text", corpus, 1.0}};
    o.tokenizer = std::make_shared<WordTokenizer>();
    o.features = cache_features(FeatureCache::open(cache_dir));
    o.interleave.text_words_min = 2;
    o.interleave.text_words_max = 5;
    o.interleave.speech_words_min = 2;
    o.interleave.speech_words_max = 4;
    o.interleave.frame_rate = kFps;
    o.pack.context = 128;
    o.pack.feature_dim = kDim;
    o.rows = 2;
    o.utterance_group = 3;
    o.prefetch = 3;
    o.workers = workers;
    o.seed = 42;
    return o;
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

::testing::AssertionResult same_tensor(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() != b.defined()) return ::testing::AssertionFailure() << "defined differs";
  if (!a.defined()) return ::testing::AssertionSuccess();
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) {
    return ::testing::AssertionFailure() << a.sizes() << " vs " << b.sizes();
  }
  if (!a.equal(b)) return ::testing::AssertionFailure() << "values differ";
  return ::testing::AssertionSuccess();
}

void expect_same(const Batch& a, const Batch& b, const std::string& what) {
  EXPECT_EQ(a.document_names, b.document_names) << what;
  EXPECT_TRUE(same_tensor(a.student.input_ids, b.student.input_ids)) << what << " input_ids";
  EXPECT_TRUE(same_tensor(a.student.position_ids, b.student.position_ids)) << what;
  EXPECT_TRUE(same_tensor(a.student.document_ids, b.student.document_ids)) << what;
  EXPECT_TRUE(same_tensor(a.student.attention_mask, b.student.attention_mask)) << what;
  EXPECT_TRUE(same_tensor(a.kinds, b.kinds)) << what << " kinds";
  EXPECT_TRUE(same_tensor(a.speech.features, b.speech.features)) << what << " features";
  EXPECT_TRUE(same_tensor(a.speech.lengths, b.speech.lengths)) << what;
  EXPECT_TRUE(same_tensor(a.speech.slots, b.speech.slots)) << what;
  EXPECT_TRUE(same_tensor(a.teacher.input_ids, b.teacher.input_ids)) << what << " teacher";
  EXPECT_TRUE(same_tensor(a.loss_index, b.loss_index)) << what;
  EXPECT_TRUE(same_tensor(a.teacher_loss_index, b.teacher_loss_index)) << what;
  EXPECT_TRUE(same_tensor(a.targets, b.targets)) << what;
}

std::vector<Batch> take(Loader& l, int n, std::vector<LoaderCursor>* cursors = nullptr) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) {
    std::optional<Batch> b = l.next();
    if (!b) break;
    out.push_back(std::move(*b));
    if (cursors) cursors->push_back(l.cursor());
  }
  return out;
}

/// The cursor of a fresh loader after `n` batches (the loader is gone when it returns).
LoaderCursor cursor_after(const LoaderOptions& o, int n) {
  Loader l(o);
  take(l, n);
  return l.cursor();
}

std::vector<std::string> names(const std::vector<Batch>& batches) {
  std::vector<std::string> n;
  for (const Batch& b : batches)
    n.insert(n.end(), b.document_names.begin(), b.document_names.end());
  return n;
}

TEST(LoaderTest, SameBatchesForAnyWorkerCountAndRun) {
  const Fixture& f = fixture();
  Loader one(f.options(1));
  const std::vector<Batch> ref = take(one, 12);
  ASSERT_EQ(ref.size(), 12u);
  for (int workers : {3, 3, 2}) {
    Loader l(f.options(workers));
    const std::vector<Batch> got = take(l, 12);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      expect_same(ref[i], got[i],
                  "workers=" + std::to_string(workers) + " batch " + std::to_string(i));
    }
  }
  // Both sources, speech segments and split documents really occur (the test means something).
  const auto n = names(ref);
  int64_t speech = 0, text = 0, parts = 0;
  for (const auto& s : n) {
    speech += s.rfind("speech/", 0) == 0;
    text += s.rfind("text/", 0) == 0;
    parts += s.find('#') != std::string::npos;
  }
  EXPECT_GT(speech, 5);
  EXPECT_GT(text, 5);
  EXPECT_GT(parts, 0);
  int64_t segments = 0;
  for (const Batch& b : ref) segments += b.speech.segments();
  EXPECT_GT(segments, 10);
  // Another seed gives another order.
  LoaderOptions o = f.options(2);
  o.seed = 43;
  Loader other(o);
  EXPECT_NE(names(take(other, 12)), n);
}

TEST(LoaderTest, ResumesExactlyFromCursorJson) {
  const Fixture& f = fixture();
  std::vector<LoaderCursor> cursors;
  std::vector<Batch> ref;
  {
    Loader l(f.options(2));
    EXPECT_EQ(l.cursor().draws, 0);
    ref = take(l, 40, &cursors);
  }
  ASSERT_EQ(ref.size(), 40u);
  // Resume after batch 4 (as the trainer does), and after the first batch that ends inside a
  // split document (skip_parts > 0), and after one that crosses an epoch of the text source.
  std::vector<size_t> points = {4};
  for (size_t k = 1; k < 30; ++k) {
    if (cursors[k - 1].skip_parts > 0) {
      points.push_back(k);
      break;
    }
  }
  ASSERT_EQ(points.size(), 2u) << "no batch ended inside a split document";
  for (size_t k = 1; k < 30; ++k) {
    if (cursors[k - 1].sources[1].epoch > 0) {
      points.push_back(k);
      break;
    }
  }
  ASSERT_EQ(points.size(), 3u) << "the text source never finished an epoch";
  for (size_t k : points) {
    const LoaderCursor c = LoaderCursor::from_json(cursors[k - 1].to_json(), "trainer-state.json");
    EXPECT_EQ(c, cursors[k - 1]);
    Loader l(f.options(3), c);
    EXPECT_EQ(l.cursor(), c);
    const std::vector<Batch> rest = take(l, 6);
    ASSERT_EQ(rest.size(), 6u);
    for (size_t i = 0; i < rest.size(); ++i) {
      expect_same(ref[k + i], rest[i],
                  "resumed after batch " + std::to_string(k) + ", batch " + std::to_string(k + i));
    }
  }
}

TEST(LoaderTest, CursorOfAnotherRunIsRejected) {
  const Fixture& f = fixture();
  LoaderCursor c = cursor_after(f.options(1), 2);
  EXPECT_GT(c.draws, 0);
  LoaderOptions o = f.options(1);
  o.seed = 5;
  test::expect_error<CheckpointError>([&] { Loader l(o, c); }, {"seed 42", "seed 5"});
  o = f.options(1);
  o.world_size = 2;
  test::expect_error<CheckpointError>([&] { Loader l(o, c); }, {"world size 1", "world size 2"});
  o.rank = 1;
  LoaderCursor c2 = c;
  c2.world_size = 2;
  test::expect_error<CheckpointError>([&] { Loader l(o, c2); }, {"rank 0", "rank 1"});
  o = f.options(1);
  o.sources.pop_back();
  test::expect_error<CheckpointError>([&] { Loader l(o, c); },
                                      {"number of data sources 2", "number of data sources 1"});
  LoaderCursor far = c;
  far.sources[0].index = 1000;
  test::expect_error<CheckpointError>([&] { Loader l(f.options(1), far); },
                                      {"source 'speech'", "index 1000"});
}

TEST(LoaderTest, CursorJsonRoundTripAndErrors) {
  LoaderCursor c;
  c.sources = {{2, 17}, {0, 3}};
  c.draws = 123;
  c.skip_parts = 1;
  c.seed = 0xfedcba9876543210ull;  // above INT64_MAX
  c.rank = 1;
  c.world_size = 4;
  c.fingerprint = "0123456789abcdef";
  c.identity = {{"pack.context", "128"}, {"sources[0].name", "speech"}};
  const LoaderCursor back = LoaderCursor::from_json(c.to_json(), "x");
  EXPECT_EQ(back, c);
  EXPECT_EQ(back.seed, c.seed);
  EXPECT_EQ(back.fingerprint, c.fingerprint);
  EXPECT_EQ(back.identity, c.identity);
  LoaderCursor d = back;
  d.sources[1].index = 4;
  EXPECT_FALSE(d == c);
  d = back;
  d.fingerprint = "0123456789abcdee";
  EXPECT_FALSE(d == c);
  test::expect_error<CheckpointError>([] { LoaderCursor::from_json("{", "state.json"); },
                                      {"state.json", "not valid JSON"});
  test::expect_error<CheckpointError>(
      [] {
        LoaderCursor::from_json(
            R"({"format": "salad-loader-cursor", "version": 2, "seed": 1, "rank": 0,)"
            R"( "world_size": 1, "fingerprint": "", "identity": {},)"
            R"( "draws": 3, "skip_parts": 0, "sources": [{"epoch": 0, "index": "x"}]})",
            "state.json");
      },
      {"state.json", "sources[0].\"index\"", "expected an integer"});
  test::expect_error<CheckpointError>(
      [] { LoaderCursor::from_json(R"({"seed": 1})", "state.json"); }, {"state.json", "format"});
}

TEST(LoaderTest, RanksSeeDisjointItemsThatCoverAnEpoch) {
  test::TempDir d;
  std::string lines;
  for (int i = 0; i < 41; ++i) lines += words_text(3, i) + "\n" + (i % 10 == 0 ? "\n  \n" : "");
  test::write_text(d / "plain.txt", lines);
  auto options = [&](int64_t rank, int64_t world, bool repeat) {
    LoaderOptions o;
    o.sources = {{"plain", "text", d / "plain.txt", 1.0}};
    o.tokenizer = std::make_shared<WordTokenizer>();
    o.pack.context = 64;
    o.rows = 1;
    o.workers = 2;
    o.rank = rank;
    o.world_size = world;
    o.repeat = repeat;
    return o;
  };
  // repeat: one epoch is 21 items for rank 0 and 20 for rank 1; every epoch is a new
  // permutation, split between the ranks again.
  std::set<std::string> seen, seen_next;
  for (int64_t rank : {0, 1}) {
    Loader l(options(rank, 2, true));
    std::vector<std::string> n = names(take(l, 20));
    ASSERT_GE(n.size(), 42u);
    const auto share = static_cast<std::ptrdiff_t>(rank == 0 ? 21 : 20);
    const std::set<std::string> epoch0(n.begin(), n.begin() + share);
    const std::set<std::string> epoch1(n.begin() + share, n.begin() + 2 * share);
    EXPECT_EQ(epoch0.size(), static_cast<size_t>(share));
    EXPECT_NE(epoch0, epoch1) << "the second epoch is reshuffled";
    for (const auto& x : epoch0) EXPECT_TRUE(seen.insert(x).second) << x << " seen by both ranks";
    for (const auto& x : epoch1) EXPECT_TRUE(seen_next.insert(x).second) << x << " (epoch 1)";
  }
  EXPECT_EQ(seen.size(), 41u);
  EXPECT_EQ(seen_next, seen);
  EXPECT_EQ(seen.count("plain/1"), 1u);  // plain lines: id = line number (blank lines skipped)
  EXPECT_EQ(seen.count("plain/2"), 0u);
  // Single pass: ranks 0..2 of 3 together see every item once.
  std::multiset<std::string> all;
  for (int64_t rank : {0, 1, 2}) {
    Loader l(options(rank, 3, false));
    for (const auto& x : names(take(l, 1000))) all.insert(x);
  }
  EXPECT_EQ(all.size(), 41u);
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), 41u);
  // A rank with no items of a repeating source is a config error naming it.
  test::TempDir e;
  test::write_text(e / "two.txt", "a b\nc d\n");
  LoaderOptions o = options(2, 3, true);
  o.sources = {{"tiny", "text", e / "two.txt", 1.0}};
  test::expect_error<ConfigError>([&] { Loader l(o); }, {"'tiny'", "none for rank 2 of 3"});
}

TEST(LoaderTest, MixingFollowsTheWeights) {
  test::TempDir d;
  std::string a, b;
  for (int i = 0; i < 30; ++i) a += words_text(2, i) + "\n";
  for (int i = 0; i < 7; ++i) b += "{\"id\": " + std::to_string(i) + ", \"text\": \"x y\"}\n";
  test::write_text(d / "a.txt", a);
  test::write_text(d / "b.jsonl", b);
  LoaderOptions o;
  o.sources = {{"a", "text", d / "a.txt", 3.0}, {"b", "text", d / "b.jsonl", 1.0}};
  o.tokenizer = std::make_shared<WordTokenizer>();
  o.pack.context = 64;
  o.rows = 4;
  Loader l(o);
  std::map<std::string, int64_t> by_source;
  int64_t total = 0;
  for (const Batch& batch : take(l, 40)) {
    for (const auto& [s, n] : batch.stats.documents_by_source) {
      by_source[s] += n;
      total += n;
    }
  }
  ASSERT_GT(total, 3000);
  EXPECT_NEAR(static_cast<double>(by_source["a"]) / static_cast<double>(total), 0.75, 0.03);
  EXPECT_EQ(l.stats().documents, l.stats().items_seen);
}

TEST(LoaderTest, SinglePassCoversEveryItemOnceThenEnds) {
  const Fixture& f = fixture();
  LoaderOptions o = f.options(3);
  o.repeat = false;
  o.pack.context = 512;  // nothing is split
  Loader l(o);
  std::vector<Batch> batches = take(l, 1000);
  EXPECT_FALSE(l.next().has_value());
  EXPECT_FALSE(l.next().has_value());
  std::vector<std::string> expected;
  for (const auto& id : f.speech_items) expected.push_back("speech/" + id);
  for (const auto& id : f.text_items) expected.push_back("text/" + id);
  EXPECT_EQ(names(batches), expected);  // file order, source after source
  ASSERT_FALSE(batches.empty());
  EXPECT_LE(batches.back().student.rows(), 2);
  const LoaderStats s = l.stats();
  EXPECT_EQ(s.items_seen, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(s.batches, static_cast<int64_t>(batches.size()));
  EXPECT_EQ(s.skipped.total(), 0);
  EXPECT_GT(s.produce_seconds, 0);
  // Resuming a finished pass yields nothing more.
  Loader again(o, l.cursor());
  EXPECT_FALSE(again.next().has_value());
}

TEST(LoaderTest, BadItemsAreCountedPerReasonAndSkipped) {
  test::TempDir d;
  FeatureCacheMeta meta;
  meta.encoder = "test";
  meta.feature_dim = kDim;
  FeatureCacheWriter w(d / "cache", meta);
  std::string m;
  m += timed_line("good1", 6);
  w.add("good1", torch::randn({frames_for_words(6), kDim}));
  m += timed_line("nofeat", 6);  // not in the cache
  m += timed_line("short", 20);  // features end 6 s before the words
  w.add("short", torch::randn({frames_for_words(20) - 75, kDim}));
  m += "{\"id\": \"blank\", \"audio\": \"a.wav\", \"text\": \"\", \"words\": [{\"w\": \" \", "
       "\"start\": 0.1, \"end\": 0.2}]}\n";
  w.add("blank", torch::randn({5, kDim}));
  m += "{\"id\": \"unsorted\", \"audio\": \"a.wav\", \"text\": \"a b\", \"words\": [{\"w\": \"a\", "
       "\"start\": 0.5, \"end\": 0.6}, {\"w\": \"b\", \"start\": 0.1, \"end\": 0.2}]}\n";
  m += untimed_line("c0", "A", "one two");
  m += untimed_line("c1", "A", "");  // alone: must not take c0 and c2 down with it
  m += untimed_line("c2", "A", "three four");
  for (const char* id : {"c0", "c1", "c2"}) w.add(id, torch::randn({8, kDim}));
  m += timed_line("good2", 7);
  w.add("good2", torch::randn({frames_for_words(7), kDim}));
  w.flush();
  test::write_text(d / "m.jsonl", m);
  test::write_text(d / "t.jsonl",
                   "{\"id\": \"ok\", \"text\": \"fine words\"}\n{not json\n"
                   "{\"id\": \"e\", \"text\": \"  \"}\n{\"id\": \"n\"}\n");

  LoaderOptions o = fixture().options(2);
  o.sources = {{"s", "speech", d / "m.jsonl", 1.0}, {"t", "text", d / "t.jsonl", 1.0}};
  o.features = cache_features(FeatureCache::open(d / "cache"));
  o.repeat = false;
  o.max_skip_fraction = 1.0;
  Loader l(o);
  const std::vector<std::string> got = names(take(l, 100));
  EXPECT_EQ(got, (std::vector<std::string>{"s/good1", "s/c0", "s/c2", "s/good2", "t/ok"}));
  const LoaderStats s = l.stats();
  EXPECT_EQ(s.skipped.count("missing features"), 1);
  EXPECT_EQ(s.skipped.count("words outside audio"), 1);
  EXPECT_EQ(s.skipped.count("empty transcript"), 3);  // blank words, blank text, blank JSONL
  EXPECT_EQ(s.skipped.count("bad json"), 2);
  EXPECT_EQ(s.skipped.count("bad words"), 1);  // a manifest line, skipped when read
  EXPECT_EQ(s.skipped.total(), 8);
  EXPECT_EQ(s.items_seen, 12);  // 8 speech items (unsorted dropped at read) + 4 corpus lines
}

TEST(LoaderTest, TooManySkipsRaiseDataErrorFromNext) {
  test::TempDir d;
  std::string t;
  for (int i = 0; i < 20; ++i) t += i % 2 ? "{broken\n" : "{\"id\": \"x\", \"text\": \"a b\"}\n";
  test::write_text(d / "t.jsonl", t);
  LoaderOptions o;
  o.sources = {{"halfbad", "text", d / "t.jsonl", 1.0}};
  o.tokenizer = std::make_shared<WordTokenizer>();
  o.pack.context = 8;
  o.max_skip_fraction = 0.05;
  Loader l(o);
  test::expect_error<DataError>(
      [&] {
        for (int i = 0; i < 100; ++i) l.next();
      },
      {"'halfbad'", "bad json: 10", "data.max_skip_fraction"});
  // The error stays: the loader does not pretend to continue.
  EXPECT_THROW(l.next(), DataError);
}

/// A tokenizer with a bug: building any document throws.
class BrokenTokenizer : public WordTokenizer {
 public:
  std::vector<int64_t> encode(std::string_view) const override {
    throw std::logic_error("tokenizer bug");
  }
};

TEST(LoaderTest, BugInAWorkerReachesNext) {
  // A bug in building documents is not bad data: it ends the run (a throwing FeatureFn is a
  // skip, see ExceptionsFromTheFeatureFnAreMissingFeatures).
  const Fixture& f = fixture();
  LoaderOptions o = f.options(3);
  o.tokenizer = std::make_shared<BrokenTokenizer>();
  o.sources.pop_back();
  Loader l(o);
  EXPECT_THROW(l.next(), std::logic_error);
  EXPECT_THROW(l.next(), std::logic_error);  // and it stays
}

TEST(LoaderTest, DestructorReturnsPromptlyWithAFullQueue) {
  const Fixture& f = fixture();
  for (bool consume : {true, false}) {
    LoaderOptions o = f.options(3);
    o.prefetch = 1;
    auto l = std::make_unique<Loader>(o);
    if (consume) ASSERT_TRUE(l->next().has_value());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the queue fills up
    const auto t0 = Clock::now();
    l.reset();
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 1.0);
  }
}

TEST(LoaderTest, WaitSecondsAreMeasured) {
  const Fixture& f = fixture();
  LoaderOptions o = f.options(1);
  o.sources.pop_back();  // speech only: every item reads features
  o.prefetch = 1;
  const FeatureFn cached = o.features;
  o.features = [cached](const Utterance& u) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return cached(u);
  };
  Loader l(o);
  take(l, 2);
  const LoaderStats s = l.stats();
  EXPECT_EQ(s.batches, 2);
  EXPECT_GT(s.wait_seconds, 0.02);  // the first batch alone needs several 10 ms items
  EXPECT_GT(s.produce_seconds, 0.02);
}

TEST(LoaderOptionsTest, ValidateNamesTheBadField) {
  const Fixture& f = fixture();
  LoaderOptions o = f.options();
  EXPECT_NO_THROW(o.validate());
  o.sources[1].weight = 0;
  test::expect_error<ConfigError>([&] { o.validate(); }, {"sources[1].weight must be > 0"});
  o = f.options();
  o.features = nullptr;
  test::expect_error<ConfigError>([&] { o.validate(); }, {"sources[0]", "features"});
  o = f.options();
  o.workers = 0;
  test::expect_error<ConfigError>([&] { o.validate(); }, {"workers must be >= 1"});
  o = f.options();
  o.sources.clear();
  test::expect_error<ConfigError>([&] { o.validate(); }, {"no data sources"});
  o = f.options();
  o.pack.feature_dim = 0;  // a speech source needs the width to check every utterance against
  test::expect_error<ConfigError>([&] { o.validate(); }, {"pack.feature_dim must be >= 1"});
  o.sources.erase(o.sources.begin());  // text only: no width needed
  EXPECT_NO_THROW(o.validate());

  config::SaladConfig cfg;
  cfg.data.train = {{"ls", "speech", f.manifest, 2.0}, {"web", "text", f.corpus, -1.0}};
  cfg.data.valid = {{"dev", "text", f.corpus, 1.0}};
  auto tok = std::make_shared<WordTokenizer>();
  auto features = cache_features(FeatureCache::open(f.cache_dir));
  test::expect_error<ConfigError>(
      [&] { LoaderOptions::from_config(cfg, true, tok, features, kFps, kDim); },
      {"data.train[1].weight must be > 0"});
  cfg.data.train[1].weight = 1.0;
  cfg.data.context = 256;
  cfg.data.workers = 3;
  cfg.data.utterance_group = 5;
  cfg.train.micro_batch_sequences = 2;
  cfg.run.seed = 9;
  cfg.data.first_modality = "speech";
  const LoaderOptions t = LoaderOptions::from_config(cfg, true, tok, features, kFps, kDim);
  EXPECT_TRUE(t.repeat);
  ASSERT_EQ(t.sources.size(), 2u);
  EXPECT_EQ(t.sources[0].name, "ls");
  EXPECT_EQ(t.sources[0].weight, 2.0);
  EXPECT_EQ(t.pack.context, 256);
  EXPECT_EQ(t.pack.feature_dim, kDim);
  EXPECT_EQ(t.rows, 2);
  EXPECT_EQ(t.workers, 3);
  EXPECT_EQ(t.utterance_group, 5);
  EXPECT_EQ(t.seed, 9u);
  EXPECT_EQ(t.interleave.first, InterleaveOptions::First::kSpeech);
  const LoaderOptions v = LoaderOptions::from_config(cfg, false, tok, nullptr, kFps, kDim);
  EXPECT_FALSE(v.repeat);
  ASSERT_EQ(v.sources.size(), 1u);
  EXPECT_EQ(v.sources[0].name, "dev");
}

// ---- Skips and bad data -------------------------------------------------------------------

/// A JSONL corpus of `lines` lines "w.. w.." whose lines in `bad` do not parse.
void write_corpus(const fs::path& path, int64_t lines, const std::set<int64_t>& bad = {}) {
  std::string t;
  for (int64_t i = 0; i < lines; ++i) {
    t += bad.count(i) ? "{broken\n"
                      : "{\"id\": \"" + std::to_string(i) + "\", \"text\": \"" +
                            words_text(2 + i % 3, i) + "\"}\n";
  }
  test::write_text(path, t);
}

LoaderOptions text_options(std::vector<SourceSpec> sources) {
  LoaderOptions o;
  o.sources = std::move(sources);
  o.tokenizer = std::make_shared<WordTokenizer>();
  o.pack.context = 32;
  o.rows = 2;
  o.max_skip_fraction = 0.05;
  return o;
}

TEST(LoaderTest, SkipFractionIsCheckedFrom200ItemsAndAtTheEndOfAPass) {
  test::TempDir d;
  write_corpus(d / "small.jsonl", 4, {1});  // 1 bad line of 4
  write_corpus(d / "big.jsonl", 5000);
  // A single pass: the small source ends after 4 items (1 skip of 4 seen), but the whole pass
  // is 1 skip in 5004 items: well under 5 %.
  LoaderOptions o = text_options(
      {{"small", "text", d / "small.jsonl", 1.0}, {"big", "text", d / "big.jsonl", 1.0}});
  o.repeat = false;
  {
    Loader l(o);
    const std::vector<Batch> all = take(l, 100000);
    EXPECT_FALSE(l.next().has_value());
    EXPECT_EQ(l.stats().items_seen, 5004);
    EXPECT_EQ(l.stats().skipped.count("bad json"), 1);
    EXPECT_EQ(names(all).size(), 5003u);
  }
  // Repeating: the small source weighs 1 in 12, so over time 1 item in 4 of 1/12 of the draws
  // is ~2 % skipped; with this seed its first epoch ends within the first 8 items (1 skip in 8).
  o.repeat = true;
  o.sources[0].weight = 1.0;
  o.sources[1].weight = 11.0;
  o.seed = kEarlyEpochSeed;
  {
    Loader l(o);
    const std::vector<Batch> got = take(l, 400);
    ASSERT_EQ(got.size(), 400u);
    const LoaderStats s = l.stats();
    EXPECT_GE(s.items_seen, 1000);
    EXPECT_GT(s.skipped.count("bad json"), 0);
  }
  // The end of a pass is still checked when fewer than 200 items were seen.
  write_corpus(d / "bad.jsonl", 40, {3, 17, 29});  // 3 of 40 = 7.5 %
  o = text_options({{"bad", "text", d / "bad.jsonl", 1.0}});
  o.repeat = false;
  Loader l(o);
  test::expect_error<DataError>([&] { take(l, 1000); },
                                {"'bad'", "bad json: 3", "of 40 items", "data.max_skip_fraction"});
}

TEST(LoaderTest, SourceWithoutAUsableItemInAnEpochIsADataError) {
  // Every utterance's features are missing: with a clean source 20 times as heavy the skip
  // fraction stays low, but the speech source would silently drop out of the mix.
  const Fixture& f = fixture();
  for (bool repeat : {true, false}) {
    LoaderOptions o = f.options(2);
    o.features = [](const Utterance& u) -> at::Tensor {
      throw IoError("cache.bin: no features for '" + u.id + "'");
    };
    o.sources[0].weight = 0.05;
    o.repeat = repeat;
    o.max_skip_fraction = 1.0;
    Loader l(o);
    test::expect_error<DataError>(
        [&] { take(l, 2000); },  // ~60 batches of text come before the error
        {"data source 'speech'", f.manifest.string(), "none of the 34 items",
         repeat ? "epoch 0" : "pass", "missing features: 34"});
  }
}

TEST(LoaderTest, MalformedFeaturesAreSkippedNotFatal) {
  const Fixture& f = fixture();
  LoaderOptions o = f.options(2);
  o.sources.pop_back();  // speech only
  o.repeat = false;
  o.max_skip_fraction = 1.0;
  o.pack.codes = true;  // integer codes: a float tensor would be truncated by make_batch
  const FeatureFn cached = o.features;
  o.features = [cached](const Utterance& u) -> at::Tensor {
    const at::Tensor codes = cached(u).to(at::kLong);                             // [F, kDim]
    if (u.id == "u3") return torch::zeros({codes.size(0), kDim + 1}, at::kLong);  // wrong width
    if (u.id == "u5") return codes.unsqueeze(0);                                  // 3-D
    if (u.id == "u7" || u.id == "c1") return cached(u);                           // float
    if (u.id == "u9") return torch::zeros({codes.size(0), 0}, at::kLong);         // no columns
    if (u.id == "u13") return torch::zeros({codes.size(0), kDim}, at::kBool);     // not codes
    return codes;
  };
  Loader l(o);
  const std::vector<Batch> batches = take(l, 1000);
  EXPECT_FALSE(l.next().has_value());
  const LoaderStats s = l.stats();
  EXPECT_EQ(s.items_seen, 34);
  // u3, u5, u7, u9, u13 and the item c0+c1+c2.
  EXPECT_EQ(s.skipped.count("bad features"), 6);
  EXPECT_EQ(s.skipped.total(), 6);
  std::set<std::string> seen;
  for (const auto& n : names(batches)) seen.insert(n.substr(0, n.find('#')));
  EXPECT_EQ(seen.size(), 28u);
  EXPECT_EQ(seen.count("speech/u3") + seen.count("speech/c0+c1+c2"), 0u);
  for (const Batch& b : batches) {
    EXPECT_EQ(b.speech.features.scalar_type(), at::kLong);
    EXPECT_EQ(b.speech.features.size(2), kDim);
  }
  // Float features of a float encoder are fine; codes there are "bad features".
  o.pack.codes = false;
  o.features = [cached](const Utterance& u) -> at::Tensor {
    return u.id == "u4" ? cached(u).to(at::kLong) : cached(u);
  };
  Loader floats(o);
  take(floats, 1000);
  EXPECT_EQ(floats.stats().skipped.count("bad features"), 1);
  EXPECT_EQ(floats.stats().skipped.total(), 1);
}

TEST(LoaderTest, ExceptionsFromTheFeatureFnAreMissingFeatures) {
  const Fixture& f = fixture();
  LoaderOptions o = f.options(2);
  o.sources.pop_back();
  o.repeat = false;
  o.max_skip_fraction = 1.0;
  const FeatureFn cached = o.features;
  o.features = [cached](const Utterance& u) -> at::Tensor {
    if (u.id == "u4") return torch::zeros({2, 3}).reshape({5});  // c10::Error
    if (u.id == "u6") throw std::runtime_error("decoder crashed");
    if (u.id == "u8") throw IoError("features.bin: truncated");
    return cached(u);
  };
  Loader l(o);
  const std::vector<std::string> got = names(take(l, 1000));
  EXPECT_FALSE(l.next().has_value());
  EXPECT_EQ(l.stats().skipped.count("missing features"), 3);
  EXPECT_EQ(l.stats().skipped.total(), 3);
  EXPECT_EQ(l.stats().items_seen, 34);
  for (const auto& n : got) {
    EXPECT_NE(n.rfind("speech/u4", 0), 0u) << n;
    EXPECT_NE(n.rfind("speech/u6", 0), 0u) << n;
  }
}

/// A manifest of word-timed utterances whose words come 50 per second: a speech segment of 8-12
/// words spans 2-4 frames, so it needs more teacher positions (its tokens) than student ones.
TEST(LoaderTest, TeacherRowsFitTheContext) {
  test::TempDir d;
  FeatureCacheMeta meta;
  meta.encoder = "test";
  meta.feature_dim = kDim;
  FeatureCacheWriter w(d / "cache", meta);
  std::string m;
  for (int i = 0; i < 12; ++i) {
    const std::string id = "d" + std::to_string(i);
    const int64_t n = 50 + 5 * i;
    std::string words;
    for (int64_t k = 0; k < n; ++k) {
      words += std::string(k ? ", " : "") + "{\"w\": \"w" + std::to_string(k % 40) +
               "\", \"start\": " + std::to_string(0.02 * k) +
               ", \"end\": " + std::to_string(0.02 * k + 0.015) + "}";
    }
    m += "{\"id\": \"" + id + "\", \"audio\": \"a.wav\", \"text\": \"x\", \"words\": [" + words +
         "]}\n";
    w.add(id, torch::randn({static_cast<int64_t>(std::ceil(0.02 * n * kFps)), kDim}));
  }
  w.flush();
  test::write_text(d / "dense.jsonl", m);
  LoaderOptions o = fixture().options(2);
  o.sources = {{"dense", "speech", d / "dense.jsonl", 1.0}};
  o.features = cache_features(FeatureCache::open(d / "cache"));
  o.interleave.speech_words_min = 8;
  o.interleave.speech_words_max = 12;
  o.pack.context = 40;
  o.repeat = false;
  for (bool pad : {false, true}) {
    o.pack.pad_to_context = pad;
    Loader l(o);
    const std::vector<Batch> batches = take(l, 1000);
    ASSERT_FALSE(batches.empty());
    int64_t longest_teacher = 0;
    for (const Batch& b : batches) {
      EXPECT_LE(b.student.length(), 40);
      EXPECT_LE(b.teacher.length(), 40);
      if (pad) EXPECT_EQ(b.teacher.length(), 40);
      const at::Tensor per_row = b.teacher.attention_mask.sum(1);  // [B]
      longest_teacher = std::max(longest_teacher, per_row.max().item<int64_t>());
    }
    EXPECT_GT(longest_teacher, 30);  // the teacher side is what limits these rows
    EXPECT_EQ(l.stats().skipped.total(), 0);
    EXPECT_EQ(l.stats().items_seen, 12);
    EXPECT_EQ(l.stats().documents_split, 12);
  }
}

// ---- Cursor identity and JSON -------------------------------------------------------------

TEST(LoaderTest, CursorOfChangedDataOrOptionsIsRejectedNamingTheChange) {
  const Fixture& f = fixture();
  LoaderCursor c = cursor_after(f.options(1), 2);
  EXPECT_EQ(c.fingerprint.size(), 16u);
  EXPECT_EQ(c.identity.at("sources[1].items"), "40");
  EXPECT_EQ(c.identity.at("sources[0].kind"), "speech");
  // Threads and prefetch do not change the stream.
  {
    LoaderOptions o = f.options(3);
    o.prefetch = 1;
    Loader l(o, c);
    EXPECT_EQ(l.cursor(), c);
  }
  auto rejected = [&](const LoaderOptions& o, std::initializer_list<std::string> fragments) {
    test::expect_error<CheckpointError>([&] { Loader l(o, c); }, fragments);
    test::expect_error<CheckpointError>(
        [&] { Loader l(o, c); }, {"changed since the cursor was saved", c.fingerprint + " then"});
  };
  LoaderOptions o = f.options(1);
  o.sources[1].weight = 2.5;
  rejected(o, {"sources[1].weight: '1' then, '2.5' now"});
  o = f.options(1);
  o.pack.context = 256;
  rejected(o, {"pack.context: '128' then, '256' now"});
  o = f.options(1);
  o.rows = 3;
  o.utterance_group = 4;
  rejected(o, {"rows: '2' then, '3' now", "utterance_group: '3' then, '4' now"});
  o = f.options(1);
  o.interleave.text_words_max = 6;
  rejected(o, {"interleave.text_words_max: '5' then, '6' now"});
  o = f.options(1);
  o.pack.pad_to_context = true;
  rejected(o, {"pack.pad_to_context: 'false' then, 'true' now"});
  o = f.options(1);
  std::swap(o.sources[0].name, o.sources[1].name);
  rejected(o, {"sources[0].name: 'speech' then, 'text' now"});
  // The corpus grew by a line (same path, same name).
  test::TempDir d;
  test::write_text(d / "text.jsonl",
                   test::read_text(f.corpus) + "{\"id\": \"new\", \"text\": \"w1 w2\"}\n");
  o = f.options(1);
  o.sources[1].path = d / "text.jsonl";
  rejected(o, {"sources[1].items: '40' then, '41' now"});
  // A moved corpus with the same content resumes.
  test::write_text(d / "moved.jsonl", test::read_text(f.corpus));
  o.sources[1].path = d / "moved.jsonl";
  EXPECT_NO_THROW(Loader(o, c));
  // A cursor whose fingerprint does not match its own values is rejected too.
  LoaderCursor forged = c;
  forged.fingerprint = "0000000000000000";
  test::expect_error<CheckpointError>([&] { Loader l(f.options(1), forged); },
                                      {"changed since the cursor was saved", "0000000000000000"});
}

TEST(LoaderTest, MalformedCursorJsonIsACheckpointErrorNamingTheFile) {
  const std::string valid =
      R"({"format": "salad-loader-cursor", "version": 2, "seed": 1, "rank": 0,)"
      R"( "world_size": 1, "draws": 3, "skip_parts": 0, "sources": [{"epoch": 0, "index": 1}],)"
      R"( "fingerprint": "0123456789abcdef", "identity": {"rows": "2"}})";
  EXPECT_EQ(LoaderCursor::from_json(valid, "state.json").identity.at("rows"), "2");
  auto with = [&](const std::string& key, const std::string& value) {
    auto j = nlohmann::json::parse(valid);
    if (value.empty()) {
      j.erase(key);
    } else {
      j[key] = nlohmann::json::parse(value);
    }
    return j.dump();
  };
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"[1, 2]", {"expected a JSON object"}},
      {"\"text\"", {"expected a JSON object"}},
      {with("format", "7"), {"\"format\": \"salad-loader-cursor\"", "found 7"}},
      {with("format", "\"other\""), {"\"format\"", "\"other\""}},
      {with("version", ""), {"\"version\": expected an integer, found nothing"}},
      {with("version", "\"2\""), {"\"version\": expected an integer"}},
      {with("version", "1"), {"version 1 is not supported", "reads version 2"}},
      {with("version", "3"), {"version 3 is not supported"}},
      {with("seed", "-1"), {"\"seed\": expected an unsigned integer", "-1"}},
      {with("seed", "\"1\""), {"\"seed\""}},
      {with("seed", "1.5"), {"\"seed\""}},
      {with("rank", "null"), {"\"rank\": expected an integer, found null"}},
      {with("draws", "-4"), {"\"draws\": expected >= 0"}},
      {with("draws", "18446744073709551615"), {"\"draws\": out of range"}},
      {with("skip_parts", "[]"), {"\"skip_parts\""}},
      {with("sources", "{}"), {"\"sources\": expected a list"}},
      {with("sources", "[3]"), {"sources[0]: expected {epoch, index}"}},
      {with("sources", R"([{"epoch": 0}])"), {"sources[0].\"index\"", "found nothing"}},
      {with("fingerprint", ""), {"\"fingerprint\": expected a string, found nothing"}},
      {with("fingerprint", "12"), {"\"fingerprint\": expected a string, found 12"}},
      {with("identity", "[]"), {"\"identity\": expected an object"}},
      {with("identity", R"({"rows": 2})"), {"\"identity\".\"rows\": expected a string"}},
  };
  for (const auto& [text, fragments] : cases) {
    SCOPED_TRACE(text);
    try {
      LoaderCursor::from_json(text, "run/trainer-state.json");
      ADD_FAILURE() << "accepted";
    } catch (const CheckpointError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("run/trainer-state.json"), std::string::npos) << msg;
      for (const auto& frag : fragments) {
        EXPECT_NE(msg.find(frag), std::string::npos) << "lacks '" << frag << "': " << msg;
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a CheckpointError: " << e.what();
    }
  }
}

}  // namespace
}  // namespace salad::data
