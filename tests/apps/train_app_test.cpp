// salad-train end to end through the binary: stage `text` from a recipe, Stage I on speech
// (fbank features on the fly) from the exported text model, --resume, and SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "salad/audio/audio.h"
#include "salad/data/manifest.h"
#include "salad/train/checkpoint.h"
#include "test_util.h"

namespace salad {
namespace {

namespace fs = std::filesystem;
const std::string kTrain = SALAD_TRAIN_EXE;
const std::string kExport = SALAD_EXPORT_EXE;
const std::string kSelect = SALAD_SELECT_EXE;
const std::string kSynth = SALAD_SYNTH_EXE;
const std::string kEval = SALAD_EVAL_EXE;

const char* kWords[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"};

std::string sentence(uint64_t seed, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += (i ? " " : "") + std::string(kWords[(seed * 7 + i * 3 + i * i) % 10]);
  }
  return s;
}

/// A text corpus, a word-timed speech manifest (tones per word) and the two recipes.
struct RunFiles {
  test::TempDir dir;
  fs::path text_cfg, speech_cfg, stage2_cfg;

  RunFiles() {
    const fs::path d = dir.path();
    std::string corpus;
    for (int i = 0; i < 60; ++i) corpus += sentence(i, 12 + i % 9) + ".\n";
    test::write_text(d / "corpus.txt", corpus);
    fs::create_directories(d / "wav");
    std::string manifest;
    for (int u = 0; u < 12; ++u) {
      const int n = 8 + u % 5;
      std::vector<at::Tensor> parts;
      std::string words, text;
      for (int k = 0; k < n; ++k) {
        const char* w = kWords[(u * 7 + k * 3 + k * k) % 10];
        parts.push_back(test::sine(200.0 + 40.0 * ((u * 7 + k * 3 + k * k) % 10), 16000, 6400));
        text += (k ? " " : "") + std::string(w);
        words += std::string(k ? "," : "") + "{\"w\":\"" + w +
                 "\",\"start\":" + std::to_string(0.4 * k) +
                 ",\"end\":" + std::to_string(0.4 * k + 0.38) + "}";
      }
      const std::string id = "u" + std::to_string(u);
      audio::write_wav(d / "wav" / (id + ".wav"), torch::cat(parts), 16000);
      manifest += "{\"id\":\"" + id + "\",\"audio\":\"wav/" + id +
                  ".wav\",\"duration\":" + std::to_string(0.4 * n) + ",\"text\":\"" + text +
                  "\",\"words\":[" + words + "]}\n";
    }
    test::write_text(d / "speech.jsonl", manifest);
    const std::string common =
        "model:\n  tokenizer: " + test::qwen_tokenizer_json().string() +
        "\n  arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256}\n"
        "adapter: {hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, "
        "intermediate_size: 64}\n"
        "encoder: {type: fbank, n_mels: 40}\n"
        "optim: {warmup_steps: 2, lr_llm: 3.0e-3, lr_adapter: 3.0e-3}\n"
        "dist: {timeout_s: 30}\n";
    text_cfg = d / "text.yaml";
    test::write_text(text_cfg,
                     common +
                         "run: {dir: run_text, stage: text, threads: 1}\n"
                         "data:\n  context: 128\n  workers: 1\n"
                         "  train: [{name: corpus, kind: text, path: corpus.txt}]\n"
                         "train: {steps: 6, tokens_per_step: 256, micro_batch_sequences: 2, "
                         "log_every: 2, save_every: 3, eval_every: 0}\n");
    speech_cfg = d / "speech.yaml";
    test::write_text(speech_cfg,
                     common +
                         "run: {dir: run_speech, stage: \"1\", threads: 1}\n"
                         "data:\n  context: 128\n  workers: 1\n"
                         "  text_words_min: 2\n  text_words_max: 4\n"
                         "  speech_words_min: 1\n  speech_words_max: 3\n"
                         "  train: [{name: speech, kind: speech, path: speech.jsonl, weight: 2},\n"
                         "          {name: replay, kind: text, path: corpus.txt, weight: 1}]\n"
                         "  valid: [{name: speech, kind: speech, path: speech.jsonl}]\n"
                         "train: {steps: 4, tokens_per_step: 256, micro_batch_sequences: 1, "
                         "log_every: 1, save_every: 2, eval_every: 4, peak_tflops: 0.1}\n");
    // Stage II from run_speech: 3 clusters of the 60 corpus sentences, probes of 16 (a cluster
    // may be smaller: it is probed whole), ~20 s of flite speech.
    stage2_cfg = d / "stage2.yaml";
    test::write_text(stage2_cfg,
                     common +
                         "run: {dir: run_stage2, stage: \"2\", threads: 1}\n"
                         "data:\n  context: 128\n  workers: 1\n"
                         "  text_words_min: 2\n  text_words_max: 4\n"
                         "  speech_words_min: 1\n  speech_words_max: 3\n"
                         "  train: [{name: speech, kind: speech, path: speech.jsonl, weight: 2},\n"
                         "          {name: replay, kind: text, path: corpus.txt, weight: 1}]\n"
                         "stage2: {from: run_speech, corpus: corpus.txt, clusters: 3, "
                         "probe_per_cluster: 16, budget_hours: 0.0055, kmeans_iters: 20}\n"
                         "tts: {backend: flite}\n"
                         "train: {steps: 2, tokens_per_step: 256, micro_batch_sequences: 1, "
                         "log_every: 1, save_every: 2, eval_every: 0}\n");
  }
};

int count_steps(const fs::path& metrics) {
  std::ifstream in(metrics);
  int n = 0;
  for (std::string l; std::getline(in, l);) n += l.find("\"split\"") == std::string::npos;
  return n;
}

TEST(TrainAppIntegration, TextThenStageOneThenResume) {
  if (!fs::exists(test::qwen_tokenizer_json())) GTEST_SKIP() << "assets missing (setup.sh)";
  RunFiles f;
  const fs::path d = f.dir.path();
  // Stage text: a tiny teacher trained from scratch on the corpus.
  auto r = test::run(kTrain + " --config " + f.text_cfg.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step 6/6"), std::string::npos) << r.output;
  EXPECT_EQ(count_steps(d / "run_text/metrics.jsonl"), 6);
  // 5 is the Stage II branch point: 6 - round(0.2 * 6).
  EXPECT_EQ(train::CheckpointStore(d / "run_text").steps(), (std::vector<int64_t>{6, 5, 3}));

  // Export it and distil it into speech (Stage I) with the fbank encoder on the fly.
  r = test::run(kExport + " --run " + (d / "run_text").string() + " --out " +
                (d / "teacher").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run(kTrain + " --config " + f.speech_cfg.string() +
                " --set model.llm=" + (d / "teacher").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("MFU"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("misalignment"), std::string::npos) << r.output;
  EXPECT_EQ(count_steps(d / "run_speech/metrics.jsonl"), 4);

  // More steps with --resume: continues at step 5.
  r = test::run(kTrain + " --config " + f.speech_cfg.string() +
                " --set model.llm=" + (d / "teacher").string() + " --set train.steps=6 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resume: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 6/6"), std::string::npos) << r.output;
  EXPECT_EQ(count_steps(d / "run_speech/metrics.jsonl"), 6);

  // Stage II: salad-select alone (report + selected manifest within the budget), then
  // salad-train stage 2 reuses it and trains from the Stage I branch point (step 5 of 6).
  const std::string teacher = " --set model.llm=" + (d / "teacher").string();
  r = test::run(kSelect + " --config " + f.stage2_cfg.string() + teacher);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path sel = d / "run_stage2/selection";
  EXPECT_TRUE(fs::exists(sel / "report.md")) << r.output;
  EXPECT_TRUE(fs::exists(sel / "report.png")) << "scripts/plot_selection.py: " << r.output;
  const nlohmann::json report = nlohmann::json::parse(test::read_text(sel / "report.json"));
  ASSERT_EQ(report["clusters"].size(), 3u) << report.dump();
  double p_web = 0, p_target = 0;
  for (const auto& c : report["clusters"]) {
    p_web += c["p_web"].get<double>();
    p_target += c["weight"].get<double>();
    EXPECT_GT(c["m"].get<double>(), 0.0) << c.dump();
    EXPECT_EQ(c["probe_items"].get<int64_t>(), std::min<int64_t>(16, c["size"].get<int64_t>()))
        << c.dump();
  }
  EXPECT_NEAR(p_web, 1.0, 1e-9);
  EXPECT_NEAR(p_target, 1.0, 1e-9);
  const data::Manifest m = data::read_manifest(sel / "selected/manifest.jsonl");
  ASSERT_GE(m.utterances.size(), 2u);
  double seconds = 0;
  for (const auto& u : m.utterances) {
    seconds += u.duration;
    EXPECT_FALSE(u.words.empty()) << u.id << ": flite gives word timings";
    EXPECT_EQ(u.source.rfind("cluster-", 0), 0u) << u.source;
  }
  const double budget = 0.0055 * 3600;
  EXPECT_GE(seconds, budget);                                 // met ...
  EXPECT_LT(seconds - m.utterances.back().duration, budget);  // ... by the last one
  // The same seed selects the same texts (a second selection into another folder).
  r = test::run(kSelect + " --config " + f.stage2_cfg.string() + teacher +
                " --set stage2.out=" + (d / "sel2").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const data::Manifest m2 = data::read_manifest(d / "sel2/selected/manifest.jsonl");
  ASSERT_EQ(m2.utterances.size(), m.utterances.size());
  for (size_t i = 0; i < m.utterances.size(); ++i) {
    EXPECT_EQ(m2.utterances[i].id, m.utterances[i].id) << i;
    EXPECT_EQ(m2.utterances[i].text, m.utterances[i].text) << i;
  }
  EXPECT_EQ(nlohmann::json::parse(test::read_text(d / "sel2/report.json"))["clusters"],
            report["clusters"]);

  r = test::run(kTrain + " --config " + f.stage2_cfg.string() + teacher);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("selection already complete"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step-000005"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 2/2"), std::string::npos) << r.output;
  EXPECT_EQ(count_steps(d / "run_stage2/metrics.jsonl"), 2);
  const std::string resolved = test::read_text(d / "run_stage2/config.resolved.yaml");
  EXPECT_NE(resolved.find("selected"), std::string::npos);

  // salad-eval on the Stage II run: a 6-item benchmark (true next words vs 3 others), contexts
  // spoken with salad-synth, plus M and F on the speech manifest.
  std::string texts, bench;
  for (int i = 0; i < 6; ++i) {
    texts +=
        "{\"id\": \"c" + std::to_string(i) + "\", \"text\": \"" + sentence(100 + i, 8) + "\"}\n";
    bench += "{\"id\": \"c" + std::to_string(i) + "\", \"context\": \"" + sentence(100 + i, 8) +
             "\", \"choices\": [";
    for (int j = 0; j < 4; ++j) {
      bench += std::string(j ? ", " : "") + "\"" + sentence(200 + 4 * i + j, 3) + "\"";
    }
    bench += "], \"answer\": " + std::to_string(i % 4) + ", \"context_audio\": \"spoken/audio/c" +
             std::to_string(i) + ".wav\"}\n";
  }
  test::write_text(d / "bench_texts.jsonl", texts);
  test::write_text(d / "bench.jsonl", bench);
  r = test::run(kSynth + " --input " + (d / "bench_texts.jsonl").string() + " --out " +
                (d / "spoken").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  test::write_text(d / "eval.yaml",
                   "shots: 1\nbenchmarks:\n  - {name: nextwords, path: bench.jsonl}\n"
                   "heldout:\n  - {name: speech, kind: speech, path: speech.jsonl}\n"
                   "  - {name: spoken, kind: speech, path: spoken/manifest.jsonl}\n"
                   "  - {name: again, kind: speech, path: speech.jsonl}\n");
  r = test::run(kEval + " --checkpoint " + (d / "run_stage2").string() + " --benchmarks " +
                (d / "eval.yaml").string() + " --out " + (d / "evalout").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json res = nlohmann::json::parse(test::read_text(d / "evalout/results.json"));
  ASSERT_EQ(res["benchmarks"].size(), 1u) << res.dump();
  const auto& modes = res["benchmarks"][0]["modes"];
  for (const char* m : {"teacher_text", "model_text", "model_speech"}) {
    ASSERT_TRUE(modes.contains(m)) << m;
    EXPECT_EQ(modes[m]["scored"].get<int>(), 6) << m << " " << modes[m].dump();
    EXPECT_GE(modes[m]["acc"].get<double>(), 0.0);
    EXPECT_LE(modes[m]["acc"].get<double>(), 1.0);
  }
  EXPECT_NEAR(
      res["benchmarks"][0]["gap"].get<double>(),
      modes["teacher_text"]["acc"].get<double>() - modes["model_speech"]["acc"].get<double>(),
      1e-12);
  EXPECT_GT(res["heldout"]["aligned_positions"].get<int64_t>(), 0);
  // M and F per held-out set, each measured on its own: the same manifest twice gives the same
  // numbers; the overall numbers are the position-weighted means of the sets'.
  const auto& sets = res["heldout_sets"];
  ASSERT_EQ(sets.size(), 3u) << res.dump();
  EXPECT_EQ(sets[0]["name"], "speech");
  EXPECT_EQ(sets[1]["name"], "spoken");
  EXPECT_EQ(sets[0]["misalignment"].get<double>(), sets[2]["misalignment"].get<double>());
  EXPECT_EQ(sets[0]["forgetting"].get<double>(), sets[2]["forgetting"].get<double>());
  EXPECT_GT(sets[1]["aligned_positions"].get<int64_t>(), 0);
  int64_t aligned = 0;
  double m_sum = 0;
  for (const auto& e : sets) {
    aligned += e["aligned_positions"].get<int64_t>();
    m_sum += e["misalignment"].get<double>() * e["aligned_positions"].get<double>();
  }
  EXPECT_EQ(res["heldout"]["aligned_positions"].get<int64_t>(), aligned);
  EXPECT_NEAR(res["heldout"]["misalignment"].get<double>(), m_sum / aligned, 1e-9);
  EXPECT_NE(sets[0]["misalignment"].get<double>(), sets[1]["misalignment"].get<double>());
  EXPECT_TRUE(fs::exists(d / "evalout/results.md"));
  EXPECT_TRUE(fs::exists(d / "evalout/results.png")) << "scripts/plot_eval.py: " << r.output;
  EXPECT_NE(r.output.find("model_speech"), std::string::npos) << r.output;

  // Resuming with another model shape is refused with the differences listed.
  r = test::run(kTrain + " --config " + f.speech_cfg.string() + " --set model.llm=" +
                (d / "teacher").string() + " --set adapter.hidden_size=48 --resume");
  EXPECT_EQ(r.exit_code, 5) << r.output;  // kExitCheckpoint
  EXPECT_NE(r.output.find("adapter.hidden_size: checkpoint 32, now 48"), std::string::npos)
      << r.output;
}

TEST(TrainAppIntegration, SigtermSavesAndResumes) {
  if (!fs::exists(test::qwen_tokenizer_json())) GTEST_SKIP() << "assets missing (setup.sh)";
  RunFiles f;
  const fs::path d = f.dir.path();
  const std::string cmd = kTrain + " --config " + f.text_cfg.string() +
                          " --set train.steps=100000 --set train.save_every=0 > " +
                          (d / "log.txt").string() + " 2>&1 & echo $!";
  const auto started = test::run(cmd);
  const pid_t pid = std::stoi(started.output);
  const fs::path metrics = d / "run_text/metrics.jsonl";
  for (int i = 0; i < 600 && count_steps(metrics) < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(count_steps(metrics), 3) << test::read_text(d / "log.txt");
  ::kill(pid, SIGTERM);
  int waited = 0;
  while (::kill(pid, 0) == 0 && waited++ < 600) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string log = test::read_text(d / "log.txt");
  EXPECT_NE(log.find("stopped by signal 15"), std::string::npos) << log;
  const train::CheckpointStore store(d / "run_text");
  const auto saved = store.latest_valid();
  ASSERT_TRUE(saved.has_value()) << log;
  EXPECT_EQ(*saved, count_steps(metrics));
  const auto r = test::run(kTrain + " --config " + f.text_cfg.string() +
                           " --set train.steps=" + std::to_string(*saved + 2) + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(count_steps(metrics), *saved + 2);
}

}  // namespace
}  // namespace salad
