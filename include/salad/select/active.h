// Stage II active selection end to end (DESIGN §3, paper §3.3), in the selection folder `out`:
//   1. the broad text corpus (stage2.corpus), its embeddings (the teacher's mean-pooled final
//      hidden states, or stage2.embeddings from an external embedder)  -> embeddings.safetensors
//   2. k-means (K = stage2.clusters, k-means++, seeded by run.seed)    -> clusters.jsonl
//   3. probe: stage2.probe_per_cluster texts per cluster synthesized   -> probe/manifest.jsonl
//      with the run's TTS; M(c) = mean L_DIST (KL(teacher on text ‖ Stage I student on the
//      speech-interleaved text)) of the Stage I model over the cluster's probe
//   4. P_target(c) ∝ P_web(c) · M(c)^γ; clusters drawn by P_target, texts uniformly within them,
//      synthesized in draw order until the audio budget is met          -> selected/manifest.jsonl
//   5. report.json and report.md (per cluster: size, P_web, M, weight, texts and seconds drawn,
//      three example texts); scripts/plot_selection.py draws report.png from report.json.
// Every step is resumable: embeddings, clusters and both syntheses are reused when present (the
// syntheses skip finished items), so an interrupted selection continues where it stopped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "salad/data/loader.h"

namespace salad::config {
struct SaladConfig;
}
namespace salad::models {
class SpeechLM;
class Qwen2Impl;
}  // namespace salad::models
namespace salad::text {
class Tokenizer;
}
namespace salad::tts {
class TtsBackend;
}

namespace salad::select {

struct CorpusText {
  std::string id;
  std::string text;
};

/// A text corpus: JSONL {"id", "text"} (decided by the first non-blank line starting with '{')
/// or plain UTF-8 lines (id = line number). Blank lines are ignored; bad JSONL lines are logged
/// and skipped. `max_texts` > 0 keeps the first N. Throws IoError when unreadable, DataError
/// when no text is left.
std::vector<CorpusText> read_corpus(const std::filesystem::path& path, int64_t max_texts = 0);

/// Mean over tokens of `decoder`'s final hidden states (after the final norm) for each text: [N,
/// D] float32 on CPU. A text longer than `max_tokens` tokens is cut into chunks of at most
/// `max_tokens`, each encoded alone; the text's embedding is the token-weighted mean of its
/// chunk means. An empty text (no tokens) gets a zero row. No gradients; eval mode restored.
at::Tensor decoder_embeddings(models::Qwen2Impl& decoder, const text::Tokenizer& tokenizer,
                              const std::vector<std::string>& texts, int64_t max_tokens);

struct ClusterReport {
  int64_t size = 0;         ///< corpus texts in the cluster
  double p_web = 0;         ///< size / N
  int64_t probe_items = 0;  ///< probe utterances synthesized and measured
  double m = 0;             ///< M(c): mean L_DIST over the probe (nats per aligned position)
  bool m_measured = false;  ///< false: no usable probe; m is the mean of the measured clusters
  double weight = 0;        ///< P_target(c)
  int64_t drawn = 0;        ///< selected utterances synthesized from this cluster
  double drawn_seconds = 0;
  std::vector<std::string> examples;  ///< up to three texts of the cluster
};

struct SelectionReport {
  std::vector<ClusterReport> clusters;
  int64_t corpus_texts = 0;
  double gamma = 0;
  double budget_seconds = 0;
  double selected_seconds = 0;
  int64_t selected_items = 0;
  std::map<std::string, int64_t> tts_skipped;  ///< reason -> count (probe and selection)
  std::filesystem::path manifest;              ///< selected/manifest.jsonl
  std::filesystem::path report_json;
};

struct SelectionInputs {
  const config::SaladConfig* cfg = nullptr;  ///< stage2.*, tts.*, run.seed, loss.chunk_size
  models::SpeechLM* lm = nullptr;            ///< the Stage I model (student, adapter, teacher)
  std::shared_ptr<const text::Tokenizer> tokenizer;
  /// Template of the probe loaders (features, interleaving, packing); its sources are replaced
  /// by one cluster's probe manifest at a time, read once in order.
  data::LoaderOptions probe_loader;
  tts::TtsBackend* tts = nullptr;
  double budget_seconds = 0;  ///< audio to select
  std::filesystem::path out;  ///< the selection folder
};

/// Runs steps 1–5 and returns the report (also written to out/report.json and report.md).
/// Throws ConfigError for bad settings (K larger than the corpus, an embeddings file with another
/// row count), DataError when nothing could be synthesized.
SelectionReport run_active_selection(const SelectionInputs& in);

/// Sum of the durations of the speech manifests of `sources` (speech kind only), seconds. A line
/// without a duration is probed from its audio file's header.
double speech_seconds(const std::vector<data::SourceSpec>& sources);

}  // namespace salad::select
