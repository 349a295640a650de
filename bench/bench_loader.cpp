// Data loader throughput and the data-wait share of a training step.
//   salad_bench_loader [--tokenizer assets/qwen-tokenizer/tokenizer.json]
//                      [--text assets/texts/sotu.txt] [--utterances 1500] [--context 2048]
//                      [--workers 2] [--batches 40] [--train-steps 0] [--dir /tmp/...]
// Builds a synthetic speech source (word-timed utterances from the text, 0.4 s per word, random
// 512-d features at 12.5 Hz in a feature cache) and a text-replay source (150-word items of the
// same text), mixed 2:1. Phase 1 pulls batches as fast as possible: packed positions per
// second. Phase 2 (--train-steps > 0) runs that many forward/backward/AdamW steps of a small speech
// LM (the quickstart's sizes with the Qwen vocabulary) and reports the share of time spent waiting
// for data.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "salad/core/blas_info.h"
#include "salad/data/feature_cache.h"
#include "salad/data/loader.h"
#include "salad/loss/distillation.h"
#include "salad/models/speech_lm.h"
#include "salad/text/tokenizer.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  fs::path tokenizer_path = "assets/qwen-tokenizer/tokenizer.json";
  fs::path text_path = "assets/texts/sotu.txt";
  fs::path dir = fs::temp_directory_path() / "salad_bench_loader";
  int64_t utterances = 1500, context = 2048, workers = 2, batches = 40, train_steps = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--tokenizer")
      tokenizer_path = v;
    else if (k == "--text")
      text_path = v;
    else if (k == "--dir")
      dir = v;
    else if (k == "--utterances")
      utterances = std::stoll(v);
    else if (k == "--context")
      context = std::stoll(v);
    else if (k == "--workers")
      workers = std::stoll(v);
    else if (k == "--batches")
      batches = std::stoll(v);
    else if (k == "--train-steps")
      train_steps = std::stoll(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  salad::configure_threads(0);
  std::shared_ptr<const salad::text::Tokenizer> tok = salad::text::load_tokenizer(tokenizer_path);

  // The words of the text.
  std::ifstream in(text_path);
  if (!in) {
    std::fprintf(stderr, "cannot read %s (run scripts/fetch_assets.sh)\n", text_path.c_str());
    return 1;
  }
  std::vector<std::string> words;
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::istringstream ws(line);
    for (std::string w; ws >> w;) words.push_back(w);
  }

  // The synthetic speech source and its feature cache (made once, reused by later runs).
  fs::create_directories(dir);
  const fs::path manifest = dir / "speech.jsonl", corpus = dir / "text.jsonl";
  const fs::path cache_dir = dir / "cache";
  if (!fs::exists(cache_dir / "index.jsonl") || !fs::exists(manifest)) {
    fs::remove_all(cache_dir);
    std::mt19937_64 rng(1);
    std::ofstream m(manifest), c(corpus);
    salad::data::FeatureCacheMeta meta;
    meta.encoder = "bench: random 512-d";
    meta.feature_dim = 512;
    salad::data::FeatureCacheWriter writer(cache_dir, meta);
    size_t at = 0;
    for (int64_t u = 0; u < utterances; ++u) {
      const int64_t n = 20 + static_cast<int64_t>(rng() % 41);  // 20..60 words
      std::string text, ws = "[";
      for (int64_t k = 0; k < n; ++k, at = (at + 1) % words.size()) {
        const double start = 0.4 * k, end = start + 0.35;
        text += (k ? " " : "") + words[at];
        char buf[64];
        std::snprintf(buf, sizeof buf, ",\"start\":%.2f,\"end\":%.2f}", start, end);
        ws += std::string(k ? "," : "") + "{\"w\":" + json_string(words[at]) + buf;
      }
      ws += "]";
      const double duration = 0.4 * n;
      const std::string id = "u" + std::to_string(u);
      m << "{\"id\":\"" << id << "\",\"audio\":\"none.wav\",\"duration\":" << duration
        << ",\"text\":" << json_string(text) << ",\"words\":" << ws << "}\n";
      writer.add(id, torch::randn({static_cast<int64_t>(std::ceil(duration * 12.5)), 512}));
    }
    writer.flush();
    // Text replay items of 150 words (the corpus's lines are whole speeches).
    for (size_t i = 0, n = 0; i < words.size(); i += 150, ++n) {
      std::string t;
      for (size_t k = i; k < std::min(words.size(), i + 150); ++k)
        t += (k > i ? " " : "") + words[k];
      c << "{\"id\":\"t" << n << "\",\"text\":" << json_string(t) << "}\n";
    }
  }
  const auto cache = salad::data::FeatureCache::open(cache_dir);

  salad::data::LoaderOptions o;
  o.sources = {{"speech", "speech", manifest, 2.0}, {"text", "text", corpus, 1.0}};
  o.tokenizer = tok;
  o.features = salad::data::cache_features(cache);
  o.pack.context = context;
  o.pack.feature_dim = 512;
  o.workers = workers;
  o.prefetch = 4;
  o.seed = 7;

  {  // Phase 1: the loader alone.
    salad::data::Loader loader(o);
    (void)loader.next();  // sources are open and workers started
    const auto t0 = Clock::now();
    int64_t positions = 0, frames = 0;
    for (int64_t b = 0; b < batches; ++b) {
      auto batch = loader.next();
      positions += batch->stats.text_tokens + batch->stats.speech_frames + batch->stats.markers;
      frames += batch->stats.speech_frames;
    }
    const double dt = seconds_since(t0);
    std::printf(
        "loader: %lld workers, context %lld: %lld batches in %.2f s = %.0f positions/s "
        "(%.0f%% speech frames); skipped: %s\n",
        (long long)workers, (long long)context, (long long)batches, dt, positions / dt,
        100.0 * frames / std::max<int64_t>(positions, 1), loader.stats().skipped.summary().c_str());
  }

  if (train_steps > 0) {  // Phase 2: a training step consuming the batches.
    torch::manual_seed(0);
    salad::models::Qwen2Options d;
    d.vocab_size = tok->vocab_size();
    d.hidden_size = 256, d.intermediate_size = 704, d.num_hidden_layers = 4;
    d.num_attention_heads = 4, d.num_key_value_heads = 2, d.tie_word_embeddings = true;
    salad::models::Qwen2 student(d), teacher(d);
    salad::models::AdapterOptions a;
    a.input_dim = 512, a.hidden_size = 192, a.num_layers = 2, a.num_heads = 3, a.num_kv_heads = 1;
    a.intermediate_size = 512, a.output_dim = 256;
    salad::models::SpeechLM lm(student, salad::models::Adapter(a), teacher);
    std::vector<at::Tensor> params;
    for (const auto& g : lm.trainable_groups()) {
      for (const auto& p : g.params) params.push_back(p.second);
    }
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
    salad::loss::DistillationLoss loss_fn(salad::loss::DistillationOptions{});
    salad::data::Loader loader(o);
    double wait = 0;
    int64_t positions = 0;
    const auto t0 = Clock::now();
    for (int64_t s = 0; s < train_steps; ++s) {
      const auto tw = Clock::now();
      auto batch = loader.next();
      wait += seconds_since(tw);
      positions += batch->stats.text_tokens + batch->stats.speech_frames + batch->stats.markers;
      opt.zero_grad();
      const auto h = lm.forward(*batch);
      const auto parts = loss_fn(
          h.student, lm.student()->lm_head_weight(), h.teacher, lm.teacher()->lm_head_weight(),
          batch->targets, static_cast<double>(std::max<int64_t>(batch->loss_positions(), 1)));
      parts.loss.backward();
      opt.step();
    }
    const double dt = seconds_since(t0);
    std::printf(
        "train step (student 4x256, adapter 2x192, vocab %lld, context %lld): %lld steps "
        "in %.1f s = %.0f positions/s; data wait %.2f s = %.1f%% of the time\n",
        (long long)d.vocab_size, (long long)context, (long long)train_steps, dt, positions / dt,
        wait, 100.0 * wait / dt);
  }
  return 0;
}
