// Stage II active selection end to end; see include/salad/select/active.h for the steps.
#include "salad/select/active.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>

#include "salad/audio/audio.h"
#include "salad/core/atomic_file.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/data/manifest.h"
#include "salad/eval/alignment.h"
#include "salad/models/qwen2.h"
#include "salad/models/speech_lm.h"
#include "salad/select/selection.h"
#include "salad/text/tokenizer.h"
#include "salad/tts/tts.h"

namespace salad::select {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

int64_t count_words(const std::string& s) {
  int64_t n = 0;
  bool in_word = false;
  for (const char c : s) {
    const bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

std::string cluster_name(int64_t c) {
  std::ostringstream os;
  os << "cluster-" << std::setw(4) << std::setfill('0') << c;
  return os.str();
}

/// The cluster index of a "cluster-0012" source tag, or -1.
int64_t cluster_of(const std::string& source) {
  if (source.rfind("cluster-", 0) != 0) return -1;
  try {
    return std::stoll(source.substr(8));
  } catch (const std::exception&) {
    return -1;
  }
}

/// The corpus embeddings: cached in out/embeddings.safetensors (keyed by the corpus, its size
/// and where the embeddings came from), else read from stage2.embeddings or computed with the
/// teacher.
at::Tensor corpus_embeddings(const SelectionInputs& in, const std::vector<CorpusText>& corpus) {
  const config::Stage2Config& s2 = in.cfg->stage2;
  const int64_t n = static_cast<int64_t>(corpus.size());
  if (!s2.embeddings.empty()) {
    spdlog::info("select: embeddings from {}", s2.embeddings.string());
    return read_embeddings(s2.embeddings, n);
  }
  const fs::path cache = in.out / "embeddings.safetensors";
  const std::map<std::string, std::string> key = {
      {"corpus", fs::absolute(s2.corpus).string()},
      {"texts", std::to_string(n)},
      {"source", "teacher mean-pooled final hidden states"},
      {"max_tokens", std::to_string(s2.embed_max_tokens)}};
  if (fs::exists(cache)) {
    try {
      const auto file = safetensors::File::open(cache);
      if (file->metadata() == key) {
        spdlog::info("select: embeddings reused from {}", cache.string());
        return file->get("embeddings").to(at::kFloat).clone();
      }
      spdlog::info("select: {} is for another corpus or setting; recomputing", cache.string());
    } catch (const std::exception& e) {
      spdlog::warn("select: ignoring unreadable {}: {}", cache.string(), e.what());
    }
  }
  if (in.lm->teacher().is_empty()) {
    throw ConfigError("stage 2: the selection needs a teacher (model.llm) for text embeddings");
  }
  std::vector<std::string> texts;
  texts.reserve(corpus.size());
  for (const auto& t : corpus) texts.push_back(t.text);
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor e = decoder_embeddings(*in.lm->teacher(), *in.tokenizer, texts, s2.embed_max_tokens);
  spdlog::info("select: embedded {} texts with the teacher in {:.1f} s", n,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  safetensors::save(cache, {{"embeddings", e}}, key);
  return e;
}

/// k-means of the embeddings, cached in out/clusters.json (with the settings that made it).
std::vector<int64_t> cluster_corpus(const SelectionInputs& in, const at::Tensor& emb, int64_t k) {
  const config::Stage2Config& s2 = in.cfg->stage2;
  const fs::path cache = in.out / "clusters.json";
  const json key = {{"texts", emb.size(0)},
                    {"k", k},
                    {"seed", in.cfg->run.seed},
                    {"balanced", s2.balanced},
                    {"iters", s2.kmeans_iters},
                    {"embeddings", s2.embeddings.empty() ? "teacher" : s2.embeddings.string()}};
  if (fs::exists(cache)) {
    try {
      std::ifstream f(cache);
      const json j = json::parse(f);
      if (j.at("key") == key) {
        spdlog::info("select: clusters reused from {}", cache.string());
        return j.at("assign").get<std::vector<int64_t>>();
      }
    } catch (const std::exception& e) {
      spdlog::warn("select: ignoring unreadable {}: {}", cache.string(), e.what());
    }
  }
  KMeansOptions ko;
  ko.k = k;
  ko.max_iters = s2.kmeans_iters;
  ko.seed = static_cast<uint64_t>(in.cfg->run.seed);
  ko.balanced = s2.balanced;
  const auto t0 = std::chrono::steady_clock::now();
  const KMeansResult r = kmeans(emb, ko);
  spdlog::info("select: k-means K={} over {} texts: {} iterations, inertia {:.4f}, {:.1f} s", k,
               emb.size(0), r.iters, r.inertia,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  write_file_atomic(cache, json{{"key", key}, {"assign", r.assign}}.dump());
  return r.assign;
}

/// Splits a synthesized manifest into one manifest per cluster (by its "source" tag) in the same
/// folder, so audio paths stay valid. Returns cluster -> (path, utterances, seconds, words).
struct ClusterManifest {
  fs::path path;
  int64_t items = 0;
  double seconds = 0;
  int64_t words = 0;
};
std::map<int64_t, ClusterManifest> split_by_cluster(const fs::path& manifest) {
  std::map<int64_t, std::string> lines;
  std::map<int64_t, ClusterManifest> out;
  std::ifstream f(manifest);
  std::string line;
  while (std::getline(f, line)) {
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error&) {
      continue;  // a torn last line of an interrupted run
    }
    if (!j.is_object() || !j.contains("source") || !j["source"].is_string()) continue;
    const int64_t c = cluster_of(j["source"].get<std::string>());
    if (c < 0) continue;
    lines[c] += line + "\n";
    ClusterManifest& m = out[c];
    ++m.items;
    if (j.contains("duration") && j["duration"].is_number())
      m.seconds += j["duration"].get<double>();
    if (j.contains("text") && j["text"].is_string()) m.words += count_words(j["text"]);
  }
  for (auto& [c, m] : out) {
    m.path = manifest.parent_path() / (cluster_name(c) + ".jsonl");
    write_file_atomic(m.path, lines[c]);
  }
  return out;
}

void add_skips(std::map<std::string, int64_t>& to, const std::map<std::string, int64_t>& from) {
  for (const auto& [k, v] : from) to[k] += v;
}

void write_report(const SelectionReport& r, const fs::path& out) {
  json clusters = json::array();
  for (size_t c = 0; c < r.clusters.size(); ++c) {
    const ClusterReport& k = r.clusters[c];
    clusters.push_back({{"cluster", c},
                        {"size", k.size},
                        {"p_web", k.p_web},
                        {"probe_items", k.probe_items},
                        {"m", k.m},
                        {"m_measured", k.m_measured},
                        {"weight", k.weight},
                        {"drawn", k.drawn},
                        {"drawn_seconds", k.drawn_seconds},
                        {"examples", k.examples}});
  }
  const json j = {{"corpus_texts", r.corpus_texts},     {"gamma", r.gamma},
                  {"budget_seconds", r.budget_seconds}, {"selected_seconds", r.selected_seconds},
                  {"selected_items", r.selected_items}, {"tts_skipped", r.tts_skipped},
                  {"manifest", r.manifest.string()},    {"clusters", clusters}};
  write_file_atomic(out / "report.json", j.dump(2) + "\n");

  std::ostringstream md;
  md << std::fixed;
  md << "# Stage II selection\n\n"
     << r.corpus_texts << " corpus texts in " << r.clusters.size() << " clusters, gamma "
     << std::setprecision(2) << r.gamma << "; budget " << std::setprecision(3)
     << r.budget_seconds / 3600 << " h, selected " << r.selected_seconds / 3600 << " h ("
     << r.selected_items << " utterances) in `" << r.manifest.string() << "`.\n\n"
     << "| cluster | texts | P_web | probe | M(c) | P_target | drawn | drawn s | examples |\n"
     << "|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (size_t c = 0; c < r.clusters.size(); ++c) {
    const ClusterReport& k = r.clusters[c];
    std::string ex;
    for (const auto& e : k.examples) {
      std::string s = e.size() > 80 ? e.substr(0, 77) + "..." : e;
      std::replace(s.begin(), s.end(), '|', '/');
      std::replace(s.begin(), s.end(), '\n', ' ');
      ex += (ex.empty() ? "" : " · ") + s;
    }
    md << "| " << c << " | " << k.size << " | " << std::setprecision(4) << k.p_web << " | "
       << k.probe_items << " | " << std::setprecision(4) << k.m << (k.m_measured ? "" : " (est.)")
       << " | " << k.weight << " | " << k.drawn << " | " << std::setprecision(1) << k.drawn_seconds
       << " | " << ex << " |\n";
  }
  if (!r.tts_skipped.empty()) {
    md << "\nTTS skips:";
    for (const auto& [k, v] : r.tts_skipped) md << " " << k << " " << v << ";";
    md << "\n";
  }
  write_file_atomic(out / "report.md", md.str());
}

}  // namespace

std::vector<CorpusText> read_corpus(const fs::path& path, int64_t max_texts) {
  std::ifstream f(path);
  if (!f) throw IoError("cannot read the text corpus " + path.string());
  std::vector<CorpusText> out;
  std::string line;
  int64_t number = 0, bad = 0;
  int jsonl = -1;  // decided by the first non-blank line
  while (std::getline(f, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (jsonl < 0) jsonl = line[line.find_first_not_of(" \t")] == '{' ? 1 : 0;
    CorpusText t{std::to_string(number), line};
    if (jsonl == 1) {
      try {
        const json j = json::parse(line);
        t.text = j.at("text").get<std::string>();
        if (j.contains("id") && j["id"].is_string()) t.id = j["id"].get<std::string>();
        if (j.contains("id") && j["id"].is_number_integer())
          t.id = std::to_string(j["id"].get<int64_t>());
      } catch (const std::exception& e) {
        if (++bad <= 5) {
          spdlog::warn("{}:{}: skipped: expected {{\"id\", \"text\": string}} ({})", path.string(),
                       number, e.what());
        }
        continue;
      }
    }
    if (count_words(t.text) == 0) continue;
    out.push_back(std::move(t));
    if (max_texts > 0 && static_cast<int64_t>(out.size()) >= max_texts) break;
  }
  if (bad > 0) spdlog::warn("{}: {} bad lines skipped", path.string(), bad);
  if (out.empty()) throw DataError("the text corpus " + path.string() + " has no usable text");
  return out;
}

at::Tensor decoder_embeddings(models::Qwen2Impl& decoder, const text::Tokenizer& tokenizer,
                              const std::vector<std::string>& texts, int64_t max_tokens) {
  if (max_tokens <= 0) throw ConfigError("decoder_embeddings: max_tokens must be > 0");
  torch::NoGradGuard no_grad;
  const bool was_training = decoder.is_training();
  decoder.train(false);
  const c10::Device dev = decoder.parameters().front().device();
  const int64_t d = decoder.options().hidden_size;
  // Every text's chunks, then batches of chunks of similar length (sorted by length), right-
  // padded with an attention mask: causal attention keeps padding out of the real positions.
  struct Chunk {
    int64_t text, begin, length;
  };
  std::vector<std::vector<int64_t>> ids(texts.size());
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < texts.size(); ++i) {
    ids[i] = tokenizer.encode(texts[i]);
    const int64_t n = static_cast<int64_t>(ids[i].size());
    for (int64_t s = 0; s < n; s += max_tokens) {
      chunks.push_back({static_cast<int64_t>(i), s, std::min(max_tokens, n - s)});
    }
  }
  std::stable_sort(chunks.begin(), chunks.end(),
                   [](const Chunk& a, const Chunk& b) { return a.length < b.length; });
  at::Tensor sums = at::zeros({static_cast<int64_t>(texts.size()), d}, at::kDouble);  // [N, D]
  const int64_t budget = 8192;  // positions per forward
  for (size_t first = 0; first < chunks.size();) {
    const int64_t longest_cap = chunks[first].length;
    size_t last = first;
    while (last < chunks.size() && static_cast<int64_t>(last - first + 1) * chunks[last].length <=
                                       std::max(budget, longest_cap)) {
      ++last;
    }
    const int64_t rows = static_cast<int64_t>(last - first), t = chunks[last - 1].length;
    std::vector<int64_t> flat(static_cast<size_t>(rows * t), 0), mask(flat.size(), 0);
    for (int64_t r = 0; r < rows; ++r) {
      const Chunk& c = chunks[first + r];
      const auto& src = ids[static_cast<size_t>(c.text)];
      std::copy(src.begin() + c.begin, src.begin() + c.begin + c.length, flat.begin() + r * t);
      std::fill(mask.begin() + r * t, mask.begin() + r * t + c.length, 1);
    }
    models::Qwen2Input q;
    q.input_ids = at::tensor(flat).view({rows, t}).to(dev);  // [rows, t]
    const at::Tensor m = at::tensor(mask).view({rows, t});   // [rows, t]
    q.attention_mask = m.to(dev);
    const at::Tensor h = decoder.forward_hidden(q).hidden.to(at::kDouble).cpu();  // [rows, t, D]
    const at::Tensor per_chunk = (h * m.unsqueeze(2).to(at::kDouble)).sum(1);     // [rows, D]
    std::vector<int64_t> owner(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) owner[r] = chunks[first + r].text;
    sums.index_add_(0, at::tensor(owner), per_chunk);
    first = last;
  }
  at::Tensor out = at::zeros({static_cast<int64_t>(texts.size()), d});  // [N, D]
  for (size_t i = 0; i < texts.size(); ++i) {
    const int64_t n = static_cast<int64_t>(ids[i].size());
    if (n > 0) out[static_cast<int64_t>(i)].copy_(sums[static_cast<int64_t>(i)] / double(n));
  }
  decoder.train(was_training);
  return out;
}

double speech_seconds(const std::vector<data::SourceSpec>& sources) {
  double total = 0;
  for (const auto& s : sources) {
    if (s.kind != "speech") continue;
    const data::Manifest m = data::read_manifest(s.path);
    for (const auto& u : m.utterances) {
      if (u.duration >= 0) {
        total += u.duration;
      } else {
        try {
          total += audio::probe(u.audio).duration - u.offset;
        } catch (const std::exception& e) {
          spdlog::warn("{}: no duration ({})", u.where, e.what());
        }
      }
    }
  }
  return total;
}

SelectionReport run_active_selection(const SelectionInputs& in) {
  if (!in.cfg || !in.lm || !in.tokenizer || !in.tts) {
    throw std::invalid_argument("run_active_selection: cfg, lm, tokenizer and tts are required");
  }
  const config::SaladConfig& cfg = *in.cfg;
  const config::Stage2Config& s2 = cfg.stage2;
  fs::create_directories(in.out);
  SelectionReport r;
  r.gamma = s2.gamma;
  r.budget_seconds = in.budget_seconds;

  // 1–2. Corpus, embeddings, clusters.
  const std::vector<CorpusText> corpus = read_corpus(s2.corpus, s2.max_texts);
  const int64_t n = static_cast<int64_t>(corpus.size());
  r.corpus_texts = n;
  int64_t k = s2.clusters;
  if (k > n) {
    spdlog::warn("select: stage2.clusters = {} but the corpus has {} texts; using K = {}", k, n, n);
    k = n;
  }
  spdlog::info("select: {} texts from {}", n, s2.corpus.string());
  const at::Tensor emb = corpus_embeddings(in, corpus);
  const std::vector<int64_t> assign = cluster_corpus(in, emb, k);
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) members[static_cast<size_t>(assign[i])].push_back(i);
  r.clusters.resize(static_cast<size_t>(k));
  std::vector<double> p_web(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) {
    ClusterReport& cr = r.clusters[static_cast<size_t>(c)];
    cr.size = static_cast<int64_t>(members[c].size());
    cr.p_web = p_web[c] = static_cast<double>(cr.size) / static_cast<double>(n);
    for (size_t e = 0; e < std::min<size_t>(3, members[c].size()); ++e) {
      cr.examples.push_back(corpus[static_cast<size_t>(members[c][e])].text);
    }
  }

  // 3. Probe: n texts per cluster (a seeded shuffle of its members), synthesized and measured.
  const tts::TtsOptions topts = tts::TtsOptions::from_config(cfg.tts);
  std::vector<tts::SynthItem> probe;
  std::mt19937_64 rng(static_cast<uint64_t>(cfg.run.seed) ^ 0x9e3779b97f4a7c15ULL);
  for (int64_t c = 0; c < k; ++c) {
    std::vector<int64_t> m = members[c];
    std::shuffle(m.begin(), m.end(), rng);
    const int64_t take = std::min<int64_t>(s2.probe_per_cluster, static_cast<int64_t>(m.size()));
    if (take < s2.probe_per_cluster) {
      spdlog::info("select: {} has {} texts, fewer than the probe size {}: probing all of them",
                   cluster_name(c), m.size(), s2.probe_per_cluster);
    }
    for (int64_t j = 0; j < take; ++j) {
      const CorpusText& t = corpus[static_cast<size_t>(m[j])];
      probe.push_back({"probe-" + std::to_string(m[j]), t.text, cluster_name(c)});
    }
  }
  tts::SynthOptions so;
  so.workers = cfg.tts.workers;
  so.out_dir = in.out / "probe";
  spdlog::info("select: synthesizing {} probe texts with {}", probe.size(), in.tts->name());
  const tts::SynthReport pr = tts::synthesize_manifest(*in.tts, probe, topts, so);
  add_skips(r.tts_skipped, pr.skipped);
  const std::map<int64_t, ClusterManifest> probes = split_by_cluster(pr.manifest);

  // M(c): mean L_DIST of the Stage I model over the cluster's probe.
  double probe_seconds = 0;
  int64_t probe_words = 0;
  std::vector<double> m(static_cast<size_t>(k), 0.0);
  double m_sum = 0;
  int64_t measured = 0;
  for (const auto& [c, cm] : probes) {
    data::LoaderOptions lo = in.probe_loader;
    lo.sources = {data::SourceSpec{cluster_name(c), "speech", cm.path, 1.0}};
    lo.repeat = false;
    lo.max_skip_fraction = 1.0;
    data::Loader loader(lo, data::LoaderCursor{});
    const eval::AlignmentMetrics am = eval::measure_alignment(
        *in.lm, [&loader] { return loader.next(); }, cfg.loss.chunk_size);
    ClusterReport& cr = r.clusters[static_cast<size_t>(c)];
    cr.probe_items = cm.items;
    if (am.aligned_positions > 0) {
      cr.m = m[c] = am.distillation;
      cr.m_measured = true;
      m_sum += am.distillation;
      ++measured;
    }
    probe_seconds += cm.seconds;
    probe_words += cm.words;
  }
  if (measured == 0) {
    throw DataError("stage 2: no probe utterance could be synthesized and measured (TTS skips: " +
                    json(r.tts_skipped).dump() + "); check the tts section");
  }
  for (int64_t c = 0; c < k; ++c) {
    ClusterReport& cr = r.clusters[static_cast<size_t>(c)];
    if (!cr.m_measured) cr.m = m[c] = m_sum / static_cast<double>(measured);
  }
  spdlog::info("select: M(c) measured on {} of {} clusters (mean {:.4f} nats)", measured, k,
               m_sum / static_cast<double>(measured));

  // 4. Weights, draws in order, synthesis until the budget is met.
  const std::vector<double> w = target_weights(p_web, m, s2.gamma);
  for (int64_t c = 0; c < k; ++c) r.clusters[static_cast<size_t>(c)].weight = w[c];
  const double sec_per_word =
      probe_words > 0 ? probe_seconds / static_cast<double>(probe_words) : 0.4;
  std::vector<double> est(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) est[i] = sec_per_word * count_words(corpus[i].text);
  double drawn_est = 0;
  size_t counted = 0;
  // Draw ~30% more than the estimate needs: synthesis stops at the real budget, and failures
  // (skipped items) must not leave it short.
  const std::vector<Draw> draws = draw_texts(w, members, static_cast<uint64_t>(cfg.run.seed) + 1,
                                             [&](const std::vector<Draw>& d) {
                                               for (; counted < d.size(); ++counted)
                                                 drawn_est += est[d[counted].text];
                                               return drawn_est >= 1.3 * in.budget_seconds;
                                             });
  std::vector<tts::SynthItem> items;
  items.reserve(draws.size());
  for (const Draw& d : draws) {
    items.push_back(
        {"sel-" + std::to_string(d.text), corpus[d.text].text, cluster_name(d.cluster)});
  }
  so.out_dir = in.out / "selected";
  spdlog::info(
      "select: {} texts drawn (estimated {:.2f} h at {:.2f} s/word) for a budget of {:.2f} h",
      items.size(), drawn_est / 3600, sec_per_word, in.budget_seconds / 3600);
  const double budget = in.budget_seconds;
  const tts::SynthReport sr = tts::synthesize_manifest(
      *in.tts, items, topts, so, [budget](double seconds) { return seconds >= budget; });
  add_skips(r.tts_skipped, sr.skipped);
  r.manifest = sr.manifest;
  for (const auto& [c, cm] : split_by_cluster(sr.manifest)) {
    ClusterReport& cr = r.clusters[static_cast<size_t>(c)];
    cr.drawn = cm.items;
    cr.drawn_seconds = cm.seconds;
    r.selected_items += cm.items;
    r.selected_seconds += cm.seconds;
  }
  if (r.selected_items == 0) {
    throw DataError("stage 2: no selected text could be synthesized (TTS skips: " +
                    json(r.tts_skipped).dump() + ")");
  }
  r.report_json = in.out / "report.json";
  write_report(r, in.out);
  spdlog::info("select: {} utterances, {:.3f} h selected (budget {:.3f} h); report {}",
               r.selected_items, r.selected_seconds / 3600, budget / 3600,
               (in.out / "report.md").string());
  return r;
}

}  // namespace salad::select
