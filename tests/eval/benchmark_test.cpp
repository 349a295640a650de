// Multiple-choice benchmark scoring (eval/benchmark.h) against log-likelihoods computed by hand
// with plain forwards of tiny random decoders.
#include "salad/eval/benchmark.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "data_pipeline/document_test_util.h"
#include "models/speech_lm_fixture.h"
#include "salad/core/error.h"
#include "salad/data/batch.h"
#include "salad/models/speech_lm.h"

namespace salad::eval {
namespace {

namespace fs = std::filesystem;
namespace fx = models::test_fixture;

constexpr int64_t kNewline = 2;  // "\n\n"; WordTokenizer leaves ids < 10 free

/// WordTokenizer plus one token for "\n\n" (the few-shot separator).
class NlTokenizer final : public text::Tokenizer {
 public:
  NlTokenizer()
      : words_({"the", "cat",   "dog", "sat",  "ran", "on", "mat", "a",   "red", "blue",
                "big", "small", "is",  "what", "yes", "no", "sky", "sun", "up",  "down"}) {}
  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int64_t> ids;
    size_t i = 0;
    while (true) {
      const size_t j = text.find("\n\n", i);
      const std::string_view part = text.substr(i, j == std::string_view::npos ? j : j - i);
      if (!part.empty()) {
        for (int64_t id : words_.encode(part)) ids.push_back(id);
      }
      if (j == std::string_view::npos) break;
      ids.push_back(kNewline);
      i = j + 2;
    }
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (int64_t id : ids) s += id_to_token(id);
    return s;
  }
  int64_t vocab_size() const override { return words_.vocab_size(); }
  std::optional<int64_t> token_to_id(std::string_view t) const override {
    return t == "\n\n" ? std::optional<int64_t>(kNewline) : words_.token_to_id(t);
  }
  std::string id_to_token(int64_t id) const override {
    return id == kNewline ? "\n\n" : words_.id_to_token(id);
  }
  std::string kind() const override { return "fake"; }

 private:
  data::test_util::WordTokenizer words_;
};

BenchItem item(const std::string& id, const std::string& context, std::vector<std::string> choices,
               int64_t answer) {
  BenchItem it;
  it.id = id;
  it.context = context;
  it.choices = std::move(choices);
  it.answer = answer;
  it.where = "test.jsonl:" + id;
  return it;
}

Benchmark three_items() {
  Benchmark b;
  b.name = "tiny";
  b.items = {item("q1", "the cat sat on the", {"mat", "red dog", "sky"}, 0),
             item("q2", "what is the sky", {"blue", "big small", "up"}, 0),
             item("q3", "a dog ran", {"up the mat", "down", "on a cat", "no"}, 1)};
  return b;
}

/// Student and teacher with different weights (so the two text modes differ).
std::unique_ptr<models::SpeechLM> two_model_lm() {
  models::Qwen2 student = fx::random_decoder(5);
  models::Qwen2 teacher = fx::random_decoder(9);
  torch::manual_seed(3);
  return std::make_unique<models::SpeechLM>(student, models::Adapter(fx::tiny_adapter()), teacher);
}

/// Student = a copy of the teacher.
std::unique_ptr<models::SpeechLM> copied_lm() {
  models::Qwen2 teacher = fx::random_decoder(5);
  models::Qwen2 student = fx::copy_of(teacher);
  torch::manual_seed(3);
  return std::make_unique<models::SpeechLM>(student, models::Adapter(fx::tiny_adapter()), teacher);
}

/// Sum of log P(ids[t] | ids[<t]) over the last `n` tokens, by one plain forward.
double plain_loglik(models::Qwen2& m, const std::vector<int64_t>& ids, int64_t n) {
  torch::NoGradGuard no_grad;
  models::Qwen2Input in;
  in.input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);                         // [1, L]
  const at::Tensor logp = torch::log_softmax(m->forward(in)[0].to(torch::kFloat), -1);  // [L, V]
  const auto L = static_cast<int64_t>(ids.size());
  double sum = 0;
  for (int64_t t = L - n; t < L; ++t) sum += logp[t - 1][ids[t]].item<double>();
  return sum;
}

/// The whole few-shot text of (item, choice), as one string.
std::string full_text(const Benchmark& b, const ItemResult& r, size_t choice) {
  const std::vector<BenchItem>& pool = b.fewshot.empty() ? b.items : b.fewshot;
  std::string s;
  for (int64_t k : r.shot_indices) {
    const BenchItem& shot = pool[k];
    s += shot.context + " " + shot.choices[shot.answer] + "\n\n";
  }
  const BenchItem& it = b.items[r.index];
  return s + it.context + " " + it.choices[choice];
}

/// Checks every loglik of `res` against plain forwards of `m`, and acc / acc_norm against them.
void expect_plain(models::Qwen2& m, const NlTokenizer& tok, const Benchmark& b,
                  const ModeResult& res, bool check_acc = true) {
  int64_t correct = 0, correct_norm = 0;
  for (const ItemResult& r : res.items) {
    const BenchItem& it = b.items[r.index];
    ASSERT_EQ(r.loglik.size(), it.choices.size());
    std::vector<double> ll, norm;
    for (size_t j = 0; j < it.choices.size(); ++j) {
      const std::string cont = " " + it.choices[j];
      const auto n = static_cast<int64_t>(tok.encode(cont).size());
      ll.push_back(plain_loglik(m, tok.encode(full_text(b, r, j)), n));
      norm.push_back(ll.back() / static_cast<double>(cont.size()));
      EXPECT_NEAR(r.loglik[j], ll.back(), 1e-5) << r.id << " choice " << j;
      EXPECT_EQ(r.bytes[j], static_cast<int64_t>(cont.size()));
    }
    const int64_t pred = std::max_element(ll.begin(), ll.end()) - ll.begin();
    const int64_t pred_norm = std::max_element(norm.begin(), norm.end()) - norm.begin();
    EXPECT_EQ(r.pred, pred) << r.id;
    EXPECT_EQ(r.pred_norm, pred_norm) << r.id;
    correct += pred == it.answer;
    correct_norm += pred_norm == it.answer;
  }
  if (!check_acc) return;
  const auto n = static_cast<double>(res.items.size());
  EXPECT_DOUBLE_EQ(res.acc, correct / n);
  EXPECT_DOUBLE_EQ(res.acc_norm, correct_norm / n);
}

const data::FeatureFn kNoFeatures;

TEST(Benchmark, TextLoglikMatchesPlainForward) {
  auto lm = two_model_lm();
  NlTokenizer tok;
  const Benchmark b = three_items();
  for (int64_t shots : {0, 2}) {
    ScoreOptions o;
    o.shots = shots;
    o.context = 64;
    for (Mode mode : {Mode::kModelText, Mode::kTeacherText}) {
      SCOPED_TRACE(mode_name(mode) + " shots " + std::to_string(shots));
      const ModeResult res = score_benchmark(*lm, tok, kNoFeatures, b, mode, o);
      ASSERT_EQ(res.scored, 3);
      ASSERT_EQ(res.items.size(), 3u);
      EXPECT_EQ(res.truncated, 0);
      for (const ItemResult& r : res.items) EXPECT_EQ(r.shots, shots);
      models::Qwen2 m = mode == Mode::kTeacherText ? lm->teacher() : lm->student();
      expect_plain(m, tok, b, res);
    }
  }
  // The two models differ, so the modes must too (the test would not see a swapped model).
  ScoreOptions o;
  o.shots = 0;
  const auto s = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, o);
  const auto t = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kTeacherText, o);
  EXPECT_GT(std::abs(s.items[0].loglik[0] - t.items[0].loglik[0]), 1e-3);
}

TEST(Benchmark, BatchedEqualsOneAtATime) {
  auto lm = two_model_lm();
  NlTokenizer tok;
  const Benchmark b = three_items();
  ScoreOptions one;
  one.shots = 2;
  one.context = 40;  // several documents per row, several rows
  one.batch_rows = 1;
  ScoreOptions many = one;
  many.batch_rows = 8;
  for (Mode mode : {Mode::kModelText, Mode::kTeacherText}) {
    const ModeResult a = score_benchmark(*lm, tok, kNoFeatures, b, mode, one);
    const ModeResult c = score_benchmark(*lm, tok, kNoFeatures, b, mode, many);
    ASSERT_EQ(a.items.size(), 3u);
    ASSERT_EQ(c.items.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(a.items[i].shot_indices, c.items[i].shot_indices);
      for (size_t j = 0; j < a.items[i].loglik.size(); ++j) {
        EXPECT_NEAR(a.items[i].loglik[j], c.items[i].loglik[j], 1e-5) << i << " " << j;
      }
    }
    models::Qwen2 m = mode == Mode::kTeacherText ? lm->teacher() : lm->student();
    expect_plain(m, tok, b, c);
  }
}

TEST(Benchmark, CopiedTeacherGivesSameTextResults) {
  auto lm = copied_lm();
  NlTokenizer tok;
  const Benchmark b = three_items();
  ScoreOptions o;
  o.shots = 2;
  const ModeResult t = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kTeacherText, o);
  const ModeResult s = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, o);
  ASSERT_EQ(t.items.size(), s.items.size());
  EXPECT_EQ(t.acc, s.acc);
  EXPECT_EQ(t.acc_norm, s.acc_norm);
  for (size_t i = 0; i < t.items.size(); ++i) {
    EXPECT_EQ(t.items[i].pred, s.items[i].pred);
    EXPECT_EQ(t.items[i].pred_norm, s.items[i].pred_norm);
    for (size_t j = 0; j < t.items[i].loglik.size(); ++j) {
      EXPECT_NEAR(t.items[i].loglik[j], s.items[i].loglik[j], 1e-6);
    }
  }
  EXPECT_DOUBLE_EQ(accuracy_gap(t, s), 0.0);
}

/// Fixed random [F, kFeat] features per utterance id; unknown ids throw (missing audio).
struct FixedFeatures {
  std::map<std::string, at::Tensor> by_id;
  std::vector<std::string> asked;
  data::FeatureFn fn() {
    return [this](const data::Utterance& u) {
      asked.push_back(u.id);
      const auto it = by_id.find(u.id);
      if (it == by_id.end()) throw IoError(u.audio.string() + ": no such file");
      return it->second;
    };
  }
};

/// Sum of log P over the last `n` aligned loss positions of a one-document batch, by hand.
double speech_loglik(models::SpeechLM& lm, const data::Document& d, int64_t n) {
  torch::NoGradGuard no_grad;
  lm.train(false);
  const data::Batch batch = fx::batch_of({{d}}, 64);
  const at::Tensor h = lm.student_hidden(batch);                          // [1, T, D]
  const at::Tensor flat = h.reshape({-1, h.size(2)});                     // [T, D]
  const at::Tensor head = lm.student()->lm_head_weight();                 // [V, D]
  const at::Tensor logp = torch::log_softmax(flat.matmul(head.t()), -1);  // [T, V]
  const int64_t N = batch.loss_positions();
  double sum = 0;
  for (int64_t k = N - n; k < N; ++k) {
    sum +=
        logp[batch.loss_index[k].item<int64_t>()][batch.targets[k].item<int64_t>()].item<double>();
  }
  return sum;
}

TEST(Benchmark, SpeechLoglikMatchesHandBuiltBatch) {
  auto lm = two_model_lm();
  NlTokenizer tok;
  Benchmark b = three_items();
  b.fewshot = {item("f1", "the sun is", {"up", "down"}, 0),
               item("f2", "a red cat", {"sat", "ran"}, 1)};
  FixedFeatures feats;
  torch::manual_seed(77);
  int64_t frames = 3;
  for (const char* id : {"q1", "q2", "q3", "f1"})
    feats.by_id[id] = torch::randn({frames++, fx::kFeat});
  for (BenchItem& it : b.items) it.context_audio = "/bench/" + it.id + ".wav";
  b.fewshot[0].context_audio = "/bench/f1.wav";  // f2 has no audio: read as text

  for (int64_t shots : {0, 2}) {
    SCOPED_TRACE("shots " + std::to_string(shots));
    ScoreOptions o;
    o.shots = shots;
    o.context = 64;
    const ModeResult res = score_benchmark(*lm, tok, feats.fn(), b, Mode::kModelSpeech, o);
    ASSERT_EQ(res.scored, 3);
    for (const ItemResult& r : res.items) {
      const BenchItem& it = b.items[r.index];
      ASSERT_EQ(r.shots, shots);
      std::vector<fx::Segment> prefix;
      for (int64_t k : r.shot_indices) {
        const BenchItem& s = b.fewshot[k];
        fx::Segment ctx = fx::text(tok.encode(s.context));
        if (!s.context_audio.empty()) {
          ctx.modality = data::Modality::kSpeech;
          ctx.features = feats.by_id.at(s.id);
        }
        prefix.push_back(ctx);
        prefix.push_back(fx::text(tok.encode(" " + s.choices[s.answer] + "\n\n")));
      }
      fx::Segment ctx;
      ctx.modality = data::Modality::kSpeech;
      ctx.tokens = tok.encode(it.context);
      ctx.features = feats.by_id.at(it.id);
      prefix.push_back(ctx);
      for (size_t j = 0; j < it.choices.size(); ++j) {
        std::vector<fx::Segment> segs = prefix;
        const std::vector<int64_t> cont = tok.encode(" " + it.choices[j]);
        segs.push_back(fx::text(cont));
        const double want =
            speech_loglik(*lm, fx::doc(it.id, segs), static_cast<int64_t>(cont.size()));
        EXPECT_NEAR(r.loglik[j], want, 1e-5) << it.id << " choice " << j;
      }
    }
    // The spoken version differs from the text one (the context really is read as speech).
    const ModeResult text = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, o);
    EXPECT_GT(std::abs(text.items[0].loglik[0] - res.items[0].loglik[0]), 1e-3);
  }
}

Benchmark many_items(int64_t n) {
  Benchmark b;
  b.name = "many";
  for (int64_t i = 0; i < n; ++i) {
    b.items.push_back(item("i" + std::to_string(i), "the dog sat", {"up", "down"}, i % 2));
  }
  return b;
}

TEST(Benchmark, FewShotDeterministicAndNeverSelf) {
  auto lm = copied_lm();
  NlTokenizer tok;
  const Benchmark b = many_items(10);
  ScoreOptions o;
  o.shots = 5;
  o.context = 64;
  const ModeResult r1 = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, o);
  const ModeResult r2 = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, o);
  o.seed = 99;
  const ModeResult r3 = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, o);
  ASSERT_EQ(r1.items.size(), 10u);
  int64_t differs = 0;
  for (size_t i = 0; i < 10; ++i) {
    const std::vector<int64_t>& s = r1.items[i].shot_indices;
    EXPECT_EQ(s, r2.items[i].shot_indices);
    differs += s != r3.items[i].shot_indices;
    ASSERT_EQ(s.size(), 5u);
    EXPECT_EQ(r1.items[i].shots, 5);
    EXPECT_EQ(std::set<int64_t>(s.begin(), s.end()).size(), 5u) << "repeated shot";
    for (int64_t k : s) {
      EXPECT_NE(k, static_cast<int64_t>(i)) << "item " << i << " is its own shot";
      EXPECT_GE(k, 0);
      EXPECT_LT(k, 10);
    }
  }
  EXPECT_GT(differs, 0) << "the seed does not change the shots";
  expect_plain(lm->student(), tok, b, r1);

  // With a few-shot split, shots come from it (all of it when k exceeds it).
  Benchmark with_split = b;
  with_split.fewshot = {item("f1", "the sun is", {"up", "down"}, 0),
                        item("f2", "a red cat", {"sat", "ran"}, 1)};
  o.shots = 5;
  const ModeResult r4 = score_benchmark(*lm, tok, kNoFeatures, with_split, Mode::kModelText, o);
  for (const ItemResult& r : r4.items) {
    EXPECT_EQ(std::set<int64_t>(r.shot_indices.begin(), r.shot_indices.end()),
              (std::set<int64_t>{0, 1}));
  }
  expect_plain(lm->student(), tok, with_split, r4);
}

TEST(Benchmark, DropsShotsFromTheFirstToFit) {
  auto lm = copied_lm();
  NlTokenizer tok;
  const Benchmark b = many_items(8);  // shot: 3 + 1 + 1 tokens; item: 3 + 1
  ScoreOptions wide;
  wide.shots = 5;
  wide.context = 64;
  const ModeResult all = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, wide);
  ScoreOptions narrow = wide;
  narrow.context = 4 + 2 * 5 + 4;  // room for two shots, not three
  const ModeResult two = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, narrow);
  ASSERT_EQ(two.items.size(), 8u);
  EXPECT_EQ(two.truncated, 0);
  for (size_t i = 0; i < 8; ++i) {
    const std::vector<int64_t>& full = all.items[i].shot_indices;
    ASSERT_EQ(full.size(), 5u);
    EXPECT_EQ(two.items[i].shots, 2);
    EXPECT_EQ(two.items[i].shot_indices, std::vector<int64_t>(full.end() - 2, full.end()));
  }
  expect_plain(lm->student(), tok, b, two);
}

TEST(Benchmark, TruncatesTheContextFromTheLeft) {
  auto lm = two_model_lm();
  NlTokenizer tok;
  Benchmark b;
  b.name = "long";
  b.items = {item("x", "the cat sat on a mat", {"up", "red dog"}, 1),
             item("y", "a dog", {"up", "down"}, 0)};
  ScoreOptions o;
  o.shots = 3;
  o.context = 5;  // x: 6 + 2 tokens do not fit; y: 2 + 1 does, without shots (5 + 3 > 5)
  for (Mode mode : {Mode::kModelText, Mode::kTeacherText}) {
    const ModeResult r = score_benchmark(*lm, tok, kNoFeatures, b, mode, o);
    ASSERT_EQ(r.items.size(), 2u);
    EXPECT_EQ(r.truncated, 1);
    EXPECT_TRUE(r.items[0].truncated);
    EXPECT_FALSE(r.items[1].truncated);
    EXPECT_EQ(r.items[0].shots, 0);
    EXPECT_EQ(r.items[1].shots, 0);
    models::Qwen2 m = mode == Mode::kTeacherText ? lm->teacher() : lm->student();
    // x keeps its context's last 5 - 2 = 3 tokens (" on a mat"), whatever the choice.
    const std::vector<int64_t> full = tok.encode(b.items[0].context);
    const std::vector<int64_t> ctx(full.end() - 3, full.end());
    for (size_t j = 0; j < 2; ++j) {
      std::vector<int64_t> ids = ctx;
      const std::vector<int64_t> cont = tok.encode(" " + b.items[0].choices[j]);
      ids.insert(ids.end(), cont.begin(), cont.end());
      EXPECT_NEAR(r.items[0].loglik[j], plain_loglik(m, ids, static_cast<int64_t>(cont.size())),
                  1e-5);
    }
    ModeResult only_y;
    only_y.items = {r.items[1]};
    expect_plain(m, tok, b, only_y, /*check_acc=*/false);
  }

  // Spoken: frames are cut from the left too (context 8: 8 - 2 - 2 = 4 frames kept of 7).
  FixedFeatures feats;
  torch::manual_seed(5);
  feats.by_id["x"] = torch::randn({7, fx::kFeat});
  feats.by_id["y"] = torch::randn({2, fx::kFeat});
  b.items[0].context_audio = "/x.wav";
  b.items[1].context_audio = "/y.wav";
  o.context = 8;
  const ModeResult r = score_benchmark(*lm, tok, feats.fn(), b, Mode::kModelSpeech, o);
  ASSERT_EQ(r.items.size(), 2u);
  EXPECT_EQ(r.truncated, 1);
  EXPECT_TRUE(r.items[0].truncated);
  for (size_t j = 0; j < 2; ++j) {
    fx::Segment ctx;
    ctx.modality = data::Modality::kSpeech;
    ctx.tokens = tok.encode("the cat sat on a mat");  // 8 - 2 = 6 >= 6 tokens: all kept
    ctx.features = feats.by_id["x"].narrow(0, 3, 4);
    const std::vector<int64_t> cont = tok.encode(" " + b.items[0].choices[j]);
    const double want =
        speech_loglik(*lm, fx::doc("x", {ctx, fx::text(cont)}), static_cast<int64_t>(cont.size()));
    EXPECT_NEAR(r.items[0].loglik[j], want, 1e-5) << "choice " << j;
  }
}

TEST(Benchmark, SplitContinuation) {
  EXPECT_EQ(split_continuation("the cat", "sat"),
            (std::pair<std::string, std::string>{"the cat", " sat"}));
  EXPECT_EQ(split_continuation("Answer: ", "B"),
            (std::pair<std::string, std::string>{"Answer:", " B"}));
  EXPECT_EQ(split_continuation("Answer:\n", "B"),
            (std::pair<std::string, std::string>{"Answer:", "\nB"}));
  EXPECT_EQ(split_continuation("Q", " already"),
            (std::pair<std::string, std::string>{"Q", " already"}));
  EXPECT_EQ(split_continuation("Q", "café").second.size(), 6u);  // bytes, not characters
}

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("salad_bench_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Benchmark, BadInputIsSkippedAndCounted) {
  const fs::path dir = temp_dir("bad");
  {
    std::ofstream f(dir / "bench.jsonl");
    f << R"({"id":"ok1","context":"the cat","choices":["sat","ran"],"answer":0,"context_audio":"audio/ok1.wav"})"
      << "\n"
      << R"({"id":"far","context":"the cat","choices":["sat","ran"],"answer":2})"
      << "\n"
      << R"({"id":"one","context":"the cat","choices":["sat"],"answer":0})"
      << "\n"
      << "{not json\n"
      << "\n"
      << R"({"id":"empty","context":"  ","choices":["sat","ran"],"answer":0})"
      << "\n"
      << R"({"id":7,"context":"a dog","choices":["up","down"],"answer":1,"context_audio":"audio/7.wav"})"
      << "\n"
      << R"({"id":"noaudio","context":"a dog","choices":["up","down"],"answer":1})"
      << "\n"
      << R"({"id":"lost","context":"a dog","choices":["up","down"],"answer":1,"context_audio":"audio/lost.wav"})"
      << "\n"
      << R"({"id":"neg","context":"a dog","choices":["up","down"],"answer":-1})"
      << "\n"
      << R"({"context":"a dog","choices":["up","down"],"answer":1})"
      << "\n";
    std::ofstream s(dir / "fewshot.jsonl");
    s << R"({"id":"f1","context":"the sun is","choices":["up","down"],"answer":0})"
      << "\n"
      << "[1, 2]\n";
  }
  const Benchmark b = read_benchmark("bad", dir / "bench.jsonl", dir / "fewshot.jsonl");
  ASSERT_EQ(b.items.size(), 4u);
  EXPECT_EQ(b.items[0].id, "ok1");
  EXPECT_EQ(b.items[1].id, "7");
  EXPECT_EQ(b.items[0].context_audio, (dir / "audio" / "ok1.wav").lexically_normal());
  EXPECT_TRUE(b.items[2].context_audio.empty());
  EXPECT_EQ(b.items[1].where, (dir / "bench.jsonl").string() + ":7");
  ASSERT_EQ(b.fewshot.size(), 1u);
  const std::map<std::string, int64_t> read_skips = {
      {"answer out of range", 2}, {"too few choices", 1}, {"bad json", 1},
      {"empty context", 1},       {"missing field", 1},   {"fewshot: bad json", 1}};
  EXPECT_EQ(b.skipped, read_skips);

  auto lm = copied_lm();
  NlTokenizer tok;
  ScoreOptions o;
  o.shots = 1;
  o.context = 64;
  const ModeResult text = score_benchmark(*lm, tok, kNoFeatures, b, Mode::kModelText, o);
  EXPECT_EQ(text.scored, 4);
  EXPECT_EQ(text.skipped, read_skips);

  FixedFeatures feats;
  torch::manual_seed(1);
  feats.by_id["ok1"] = torch::randn({4, fx::kFeat});
  feats.by_id["7"] = torch::randn({3, fx::kFeat});
  const ModeResult speech = score_benchmark(*lm, tok, feats.fn(), b, Mode::kModelSpeech, o);
  EXPECT_EQ(speech.scored, 2);
  ASSERT_EQ(speech.items.size(), 2u);
  EXPECT_EQ(speech.items[0].id, "ok1");
  EXPECT_EQ(speech.items[1].id, "7");
  std::map<std::string, int64_t> speech_skips = read_skips;
  speech_skips["missing audio"] = 2;  // "noaudio" has none, "lost" cannot be read
  EXPECT_EQ(speech.skipped, speech_skips);
  // The gap is over the items both modes scored.
  const double gap = accuracy_gap(text, speech);
  double expected = 0;
  for (const ItemResult& s : speech.items) {
    const ItemResult& t = text.items[s.index];
    expected += ((t.pred == t.answer) - (s.pred == s.answer)) / 2.0;
  }
  EXPECT_DOUBLE_EQ(gap, expected);

  // A choice longer than the context (3 tokens + 1 of context > 3), and a missing file.
  Benchmark tight;
  tight.name = "tight";
  tight.items = {item("long", "a dog", {"up", "red dog big"}, 0),
                 item("short", "a", {"up", "down"}, 1)};
  o.context = 3;
  const ModeResult t = score_benchmark(*lm, tok, kNoFeatures, tight, Mode::kModelText, o);
  EXPECT_EQ(t.scored, 1);
  EXPECT_EQ(t.skipped, (std::map<std::string, int64_t>{{"choice longer than context", 1}}));
  EXPECT_THROW(read_benchmark("x", dir / "absent.jsonl"), IoError);
  fs::remove_all(dir);
}

TEST(Benchmark, RejectsBadOptionsAndMissingTeacher) {
  NlTokenizer tok;
  auto lm = copied_lm();
  ScoreOptions o;
  o.batch_rows = 0;
  EXPECT_THROW(score_benchmark(*lm, tok, kNoFeatures, three_items(), Mode::kModelText, o),
               ConfigError);
  models::SpeechLM no_teacher(fx::random_decoder(1), models::Adapter(fx::tiny_adapter()));
  EXPECT_THROW(score_benchmark(no_teacher, tok, kNoFeatures, three_items(), Mode::kTeacherText, {}),
               ConfigError);
  EXPECT_THROW(score_benchmark(*lm, tok, kNoFeatures, three_items(), Mode::kModelSpeech, {}),
               ConfigError);
}

}  // namespace
}  // namespace salad::eval
