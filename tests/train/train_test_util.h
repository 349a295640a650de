// A tiny speech LM and a deterministic stream of packed batches for the trainer tests and the
// multi-process training worker.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "models/speech_lm_fixture.h"
#include "salad/core/config.h"
#include "salad/data/batch.h"
#include "salad/train/trainer.h"

namespace salad::train::test_util {

namespace fx = models::test_fixture;

inline constexpr int64_t kContext = 64;

/// Batch k of the stream: two rows of random documents, each mixing text and speech segments
/// (speech features carry their words so there is something to learn); a pure function of k.
inline data::Batch stream_batch(int64_t k) {
  std::mt19937_64 rng(1000 + static_cast<uint64_t>(k));
  std::vector<std::vector<data::Document>> rows(2);
  for (int r = 0; r < 2; ++r) {
    std::vector<fx::Segment> segs;
    int64_t w = static_cast<int64_t>(rng() % 40) + 5;
    for (int s = 0; s < 5; ++s) {
      std::vector<int64_t> toks;
      const int64_t n = 2 + static_cast<int64_t>(rng() % 4);
      for (int64_t i = 0; i < n; ++i) {
        w = 5 + (w * 7 + 3) % 40;
        toks.push_back(w);
      }
      if (s % 2 == 1) {
        segs.push_back(fx::speech(toks, 3 * n, 7000 + 10 * static_cast<uint64_t>(k) + s + 5 * r));
      } else {
        segs.push_back(fx::text(toks));
      }
    }
    rows[r].push_back(fx::doc("k" + std::to_string(k) + "r" + std::to_string(r), segs));
  }
  return fx::batch_of(rows, kContext);
}

/// Batches first, first + stride, ... (rank r of W takes r, r + W, ...); cursor {"index": i}.
/// `nan_at`: batch indices whose speech features are NaN (a corrupt item).
class FixedSource final : public BatchSource {
 public:
  FixedSource(int64_t first, int64_t stride, int64_t count, std::vector<int64_t> nan_at = {})
      : next_(first), stride_(stride), end_(first + stride * count), nan_at_(std::move(nan_at)) {}
  std::optional<data::Batch> next() override {
    if (next_ >= end_) return std::nullopt;
    data::Batch b = stream_batch(next_);
    for (const int64_t k : nan_at_) {
      if (k == next_) b.speech.features.fill_(std::numeric_limits<float>::quiet_NaN());
    }
    next_ += stride_;
    return b;
  }
  std::string cursor() const override { return nlohmann::json{{"index", next_}}.dump(); }

 private:
  int64_t next_, stride_, end_;
  std::vector<int64_t> nan_at_;
};

/// A fresh tiny model (student = copy of a random teacher, adapter seeded).
inline std::shared_ptr<models::SpeechLM> tiny_lm(uint64_t seed = 5, int64_t adapter_width = 16) {
  models::Qwen2 teacher = fx::random_decoder(seed);
  models::Qwen2 student = fx::copy_of(teacher);
  torch::manual_seed(seed + 1);
  models::AdapterOptions a = fx::tiny_adapter();
  a.hidden_size = adapter_width;
  return std::make_shared<models::SpeechLM>(student, models::Adapter(a), teacher);
}

/// Parts over the fixed stream for rank `rank` of `world` (count batches per rank).
inline TrainParts tiny_parts(int64_t rank = 0, int64_t world = 1, int64_t count = 1000,
                             std::vector<int64_t> nan_at = {}, int64_t adapter_width = 16) {
  TrainParts p;
  p.lm = tiny_lm(5, adapter_width);
  p.micro_positions = 2 * kContext;
  p.train = [=](const std::string& cursor) -> std::unique_ptr<BatchSource> {
    int64_t first = rank;
    if (!cursor.empty()) first = nlohmann::json::parse(cursor).at("index").get<int64_t>();
    const int64_t done = (first - rank) / world;
    return std::make_unique<FixedSource>(first, world, count - done, nan_at);
  };
  p.valid = [=]() -> std::unique_ptr<BatchSource> {
    return std::make_unique<FixedSource>(100000 + rank, world, 2);
  };
  return p;
}

/// A recipe for the tiny model: `accum` micro-batches per step in a single process.
inline config::SaladConfig tiny_config(const std::filesystem::path& dir, int64_t steps,
                                       int64_t accum = 1) {
  config::SaladConfig c;
  c.run.dir = dir;
  c.run.stage = "1";
  c.train.steps = steps;
  c.train.tokens_per_step = accum * 2 * kContext;
  c.train.micro_batch_sequences = 2;
  c.data.context = kContext;
  c.train.log_every = 1000;
  c.train.eval_every = 0;
  c.train.save_every = 0;
  c.train.keep_last = 100;
  c.optim.warmup_steps = 2;
  c.optim.decay_fraction = 0.25;
  c.optim.lr_adapter = 3e-3;
  c.optim.lr_llm = 1e-3;
  c.loss.alpha = 0.5;
  c.loss.chunk_size = 16;
  return c;
}

}  // namespace salad::train::test_util
