// salad-eval as a library call: checkpoint -> model, benchmarks x modes, gap, M/F, report.
#include "salad/eval/evaluate.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/data/loader.h"
#include "salad/models/speech_encoder.h"
#include "salad/models/speech_lm.h"
#include "salad/train/checkpoint.h"
#include "salad/train/trainer.h"

namespace salad::eval {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string where(const fs::path& file, const YAML::Node& n) {
  return file.string() + ":" + std::to_string(n.Mark().line + 1);
}

void check_keys(const fs::path& file, const YAML::Node& n, const std::set<std::string>& known,
                const std::string& prefix) {
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    if (!known.count(k)) {
      std::string list;
      for (const auto& s : known) list += (list.empty() ? "" : ", ") + s;
      throw ConfigError(where(file, kv.first) + ": unknown key '" + prefix + k +
                        "' (known: " + list + ")");
    }
  }
}

template <class T>
T get(const fs::path& file, const YAML::Node& n, const std::string& key, T fallback) {
  if (!n[key]) return fallback;
  try {
    return n[key].as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(where(file, n[key]) + ": key '" + key + "' has the wrong type: '" +
                      YAML::Dump(n[key]) + "'");
  }
}

fs::path resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return {};
  const fs::path q(p);
  return q.is_absolute() ? q : base / q;
}

}  // namespace

EvalSpec read_eval_spec(const fs::path& file) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(file.string());
  } catch (const YAML::BadFile&) {
    throw IoError("cannot read the benchmark list " + file.string());
  } catch (const YAML::Exception& e) {
    throw ConfigError(file.string() + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap()) throw ConfigError(file.string() + ": expected a mapping at the top");
  check_keys(
      file, root,
      {"shots", "seed", "context", "batch_rows", "benchmarks", "heldout", "max_heldout_batches"},
      "");
  const fs::path base = file.parent_path();
  EvalSpec s;
  s.shots = get<int64_t>(file, root, "shots", s.shots);
  s.seed = get<uint64_t>(file, root, "seed", s.seed);
  s.context = get<int64_t>(file, root, "context", s.context);
  s.batch_rows = get<int64_t>(file, root, "batch_rows", s.batch_rows);
  s.max_heldout_batches = get<int64_t>(file, root, "max_heldout_batches", 0);
  std::set<std::string> names;
  for (const auto& b : root["benchmarks"]) {
    check_keys(file, b, {"name", "path", "fewshot", "shots"}, "benchmarks[].");
    BenchmarkSpec bs;
    bs.name = get<std::string>(file, b, "name", "");
    bs.path = resolve(base, get<std::string>(file, b, "path", ""));
    bs.fewshot = resolve(base, get<std::string>(file, b, "fewshot", ""));
    bs.shots = get<int64_t>(file, b, "shots", -1);
    if (bs.name.empty() || bs.path.empty()) {
      throw ConfigError(where(file, b) + ": a benchmark needs 'name' and 'path'");
    }
    if (!names.insert(bs.name).second) {
      throw ConfigError(where(file, b) + ": benchmark name '" + bs.name + "' is used twice");
    }
    s.benchmarks.push_back(bs);
  }
  for (const auto& h : root["heldout"]) {
    check_keys(file, h, {"name", "kind", "path", "weight"}, "heldout[].");
    config::SourceConfig src;
    src.name = get<std::string>(file, h, "name", "");
    src.kind = get<std::string>(file, h, "kind", "speech");
    src.path = resolve(base, get<std::string>(file, h, "path", ""));
    if (src.name.empty() || src.path.empty()) {
      throw ConfigError(where(file, h) + ": a heldout source needs 'name' and 'path'");
    }
    s.heldout.push_back(src);
  }
  if (s.benchmarks.empty() && s.heldout.empty()) {
    throw ConfigError(file.string() + ": no 'benchmarks' and no 'heldout': nothing to evaluate");
  }
  return s;
}

fs::path resolve_checkpoint(const fs::path& path) {
  if (fs::exists(path / "model.safetensors") && fs::exists(path / "config.resolved.yaml")) {
    return path;
  }
  if (fs::is_directory(path / "checkpoints")) {
    const train::CheckpointStore store(path);
    if (const auto step = store.latest_valid()) return store.folder(*step);
  }
  throw ConfigError("--checkpoint " + path.string() +
                    ": expected a checkpoint folder (model.safetensors, config.resolved.yaml) or "
                    "a run folder with a valid checkpoint");
}

EvalReport evaluate(const fs::path& checkpoint_in, const EvalSpec& spec, const EvalOptions& o) {
  EvalReport r;
  r.checkpoint = resolve_checkpoint(checkpoint_in);
  config::SaladConfig cfg =
      config::apply_overrides(config::load(r.checkpoint / "config.resolved.yaml"), o.overrides);
  if (!o.device.empty()) cfg.run.device = o.device;
  if (cfg.run.stage == "text") {
    throw ConfigError(r.checkpoint.string() +
                      " is a stage-text checkpoint (a text LM without adapter or teacher); "
                      "evaluate a Stage I/II checkpoint");
  }
  // The data sources of the recipe are not needed here (their paths may not exist where the
  // evaluation runs): the model is rebuilt without them.
  cfg.data.train.clear();
  cfg.data.valid.clear();
  for (const auto& h : spec.heldout) cfg.data.valid.push_back(h);
  cfg.data.cache.clear();  // benchmark audio is not in a training cache: encode on the fly
  train::ModelParts mp = train::build_model(cfg);
  {
    torch::NoGradGuard no_grad;
    mp.lm->load_state(safetensors::Checkpoint::open(r.checkpoint / "model.safetensors"));
  }
  spdlog::info("eval: model from {}", r.checkpoint.string());
  const bool speech =
      std::find(o.modes.begin(), o.modes.end(), Mode::kModelSpeech) != o.modes.end();
  data::FeatureFn features;
  if (speech) {
    features = models::on_the_fly_features(models::make_speech_encoder(cfg.encoder));
  }

  std::map<Mode, double> acc_sum, norm_sum;
  for (const BenchmarkSpec& bs : spec.benchmarks) {
    Benchmark b = read_benchmark(bs.name, bs.path, bs.fewshot);
    if (o.limit > 0 && static_cast<int64_t>(b.items.size()) > o.limit) b.items.resize(o.limit);
    BenchmarkReport br;
    br.name = bs.name;
    br.read_skipped = b.skipped;
    ScoreOptions so;
    so.shots = bs.shots >= 0 ? bs.shots : spec.shots;
    so.seed = spec.seed;
    so.context = spec.context > 0 ? spec.context : cfg.data.context;
    so.batch_rows = spec.batch_rows;
    so.progress = true;
    for (const Mode m : o.modes) {
      const auto t0 = std::chrono::steady_clock::now();
      br.modes[m] = score_benchmark(*mp.lm, *mp.tokenizer, features, b, m, so);
      const ModeResult& mr = br.modes[m];
      spdlog::info(
          "eval: {} {}: acc {:.4f}, acc_norm {:.4f} over {} items ({} truncated) in {:.1f} s",
          bs.name, mode_name(m), mr.acc, mr.acc_norm, mr.scored, mr.truncated,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      acc_sum[m] += mr.acc;
      norm_sum[m] += mr.acc_norm;
    }
    const auto has = [&](Mode m) { return br.modes.count(m) > 0; };
    if (has(Mode::kTeacherText) && has(Mode::kModelSpeech)) {
      br.gap = accuracy_gap(br.modes[Mode::kTeacherText], br.modes[Mode::kModelSpeech]);
      br.gap_norm = accuracy_gap(br.modes[Mode::kTeacherText], br.modes[Mode::kModelSpeech], true);
    }
    if (has(Mode::kTeacherText) && has(Mode::kModelText)) {
      br.forgetting_gap = accuracy_gap(br.modes[Mode::kTeacherText], br.modes[Mode::kModelText]);
    }
    r.mean_gap += br.gap;
    r.mean_gap_norm += br.gap_norm;
    r.benchmarks.push_back(std::move(br));
  }
  const double nb = static_cast<double>(std::max<size_t>(1, r.benchmarks.size()));
  for (const Mode m : o.modes) {
    r.mean_acc[m] = acc_sum[m] / nb;
    r.mean_acc_norm[m] = norm_sum[m] / nb;
  }
  r.mean_gap /= nb;
  r.mean_gap_norm /= nb;

  if (!spec.heldout.empty()) {
    // Each held-out set is measured on its own (M and F per domain, speaker group, ...); the
    // overall numbers are their means weighted by positions, as if one loader had read them all.
    const data::FeatureFn held_features =
        features ? features : models::on_the_fly_features(models::make_speech_encoder(cfg.encoder));
    AlignmentSums all;
    for (const auto& h : spec.heldout) {
      config::SaladConfig one = cfg;
      one.data.valid = {h};
      data::LoaderOptions lo = data::LoaderOptions::from_config(
          one, false, mp.tokenizer, held_features, mp.features.frame_rate, mp.features.feature_dim);
      lo.max_skip_fraction = 1.0;
      data::Loader loader(lo, data::LoaderCursor{});
      const AlignmentMetrics m = measure_alignment(
          *mp.lm, [&loader] { return loader.next(); }, cfg.loss.chunk_size,
          spec.max_heldout_batches);
      spdlog::info(
          "eval: held-out {}: M {:.4f}, F {:.4f}, L_DIST {:.4f} nats ({} aligned, {} text "
          "positions)",
          h.name, m.misalignment, m.forgetting, m.distillation, m.aligned_positions,
          m.text_positions);
      // The set's sums again (its means times its counts), to pool as finish() expects.
      const auto na = static_cast<double>(m.aligned_positions);
      AlignmentSums sums;
      sums.misalignment = m.misalignment * na;
      sums.distillation = m.distillation * na;
      sums.nll = m.nll * na;
      sums.aligned_positions = m.aligned_positions;
      sums.forgetting = m.forgetting * static_cast<double>(m.text_positions);
      sums.text_positions = m.text_positions;
      all.add(sums);
      r.heldout_sets.emplace_back(h.name, m);
    }
    r.heldout = finish(all);
    spdlog::info("eval: held-out M {:.4f}, F {:.4f}, L_DIST {:.4f} nats", r.heldout->misalignment,
                 r.heldout->forgetting, r.heldout->distillation);
  }
  return r;
}

namespace {

/// The paper's Table 3 layout: per benchmark "acc / gap", then the means; then the item counts.
void write_accuracy_tables(std::ostringstream& md, const EvalReport& r) {
  md << std::fixed << std::setprecision(1);
  md << "Accuracy in % (`acc`; `acc_norm` below) and gap = teacher on text − model (points), per "
        "benchmark and mean.\n\n| model |";
  for (const auto& b : r.benchmarks) md << " " << b.name << " |";
  md << " mean acc | mean gap |\n|---|";
  for (size_t i = 0; i < r.benchmarks.size() + 2; ++i) md << "---:|";
  md << "\n";
  for (const bool norm : {false, true}) {
    if (norm) {
      md << "\n`acc_norm`:\n\n| model |";
      for (const auto& b : r.benchmarks) md << " " << b.name << " |";
      md << " mean | mean gap |\n|---|";
      for (size_t i = 0; i < r.benchmarks.size() + 2; ++i) md << "---:|";
      md << "\n";
    }
    for (const Mode m : {Mode::kTeacherText, Mode::kModelText, Mode::kModelSpeech}) {
      if (!r.mean_acc.count(m)) continue;
      md << "| " << mode_name(m) << " |";
      double gap_sum = 0;
      for (const auto& b : r.benchmarks) {
        const auto it = b.modes.find(m);
        if (it == b.modes.end()) {
          md << " – |";
          continue;
        }
        const double a = norm ? it->second.acc_norm : it->second.acc;
        md << " " << 100 * a;
        const auto t = b.modes.find(Mode::kTeacherText);
        if (m != Mode::kTeacherText && t != b.modes.end()) {
          const double g = accuracy_gap(t->second, it->second, norm);
          gap_sum += g;
          md << " / " << 100 * g;
        }
        md << " |";
      }
      const double mean = norm ? r.mean_acc_norm.at(m) : r.mean_acc.at(m);
      md << " " << 100 * mean << " | ";
      if (m == Mode::kTeacherText) {
        md << "– |\n";
      } else {
        md << 100 * gap_sum / static_cast<double>(std::max<size_t>(1, r.benchmarks.size()))
           << " |\n";
      }
    }
  }
  md << "\nItems scored / truncated / skipped per benchmark and mode:\n\n";
  for (const auto& b : r.benchmarks) {
    for (const auto& [m, mr] : b.modes) {
      int64_t skipped = 0;
      for (const auto& [k, v] : mr.skipped) skipped += v;
      md << "- " << b.name << ", " << mode_name(m) << ": " << mr.scored << " / " << mr.truncated
         << " / " << skipped;
      if (skipped > 0) {
        md << " (";
        bool first = true;
        for (const auto& [k, v] : mr.skipped) {
          md << (first ? "" : ", ") << k << " " << v;
          first = false;
        }
        md << ")";
      }
      md << "\n";
    }
  }
}

}  // namespace

void write_eval_report(const EvalReport& r, const fs::path& out) {
  fs::create_directories(out);
  json benches = json::array();
  for (const auto& b : r.benchmarks) {
    json modes = json::object();
    for (const auto& [m, mr] : b.modes) {
      json items = json::array();
      for (const auto& it : mr.items) {
        items.push_back({{"id", it.id},
                         {"loglik", it.loglik},
                         {"bytes", it.bytes},
                         {"pred", it.pred},
                         {"pred_norm", it.pred_norm},
                         {"answer", it.answer},
                         {"shots", it.shots},
                         {"truncated", it.truncated}});
      }
      modes[mode_name(m)] = {{"acc", mr.acc},         {"acc_norm", mr.acc_norm},
                             {"scored", mr.scored},   {"truncated", mr.truncated},
                             {"skipped", mr.skipped}, {"items", items}};
    }
    benches.push_back({{"name", b.name},
                       {"gap", b.gap},
                       {"gap_norm", b.gap_norm},
                       {"forgetting_gap", b.forgetting_gap},
                       {"read_skipped", b.read_skipped},
                       {"modes", modes}});
  }
  json j = {{"checkpoint", r.checkpoint.string()},
            {"benchmarks", benches},
            {"mean_gap", r.mean_gap},
            {"mean_gap_norm", r.mean_gap_norm}};
  for (const auto& [m, v] : r.mean_acc) j["mean_acc"][mode_name(m)] = v;
  for (const auto& [m, v] : r.mean_acc_norm) j["mean_acc_norm"][mode_name(m)] = v;
  const auto metrics_json = [](const AlignmentMetrics& m) {
    return json{{"misalignment", m.misalignment},           {"forgetting", m.forgetting},
                {"distillation", m.distillation},           {"nll", m.nll},
                {"aligned_positions", m.aligned_positions}, {"text_positions", m.text_positions}};
  };
  if (r.heldout) j["heldout"] = metrics_json(*r.heldout);
  if (!r.heldout_sets.empty()) {
    j["heldout_sets"] = json::array();
    for (const auto& [name, m] : r.heldout_sets) {
      json e = metrics_json(m);
      e["name"] = name;
      j["heldout_sets"].push_back(e);
    }
  }
  write_file_atomic(out / "results.json", j.dump(2) + "\n");

  std::ostringstream md;
  md << "# Evaluation of `" << r.checkpoint.string() << "`\n\n";
  if (!r.benchmarks.empty()) write_accuracy_tables(md, r);
  if (r.heldout) {
    md << std::fixed << std::setprecision(4) << "\nHeld-out: misalignment M "
       << r.heldout->misalignment << ", forgetting F " << r.heldout->forgetting << ", L_DIST "
       << r.heldout->distillation << ", NLL " << r.heldout->nll << " nats per position ("
       << r.heldout->aligned_positions << " aligned, " << r.heldout->text_positions
       << " text positions).\n";
    if (r.heldout_sets.size() > 1) {
      md << "\n| held-out set | M | F | L_DIST | NLL | aligned | text positions |\n"
         << "|---|---:|---:|---:|---:|---:|---:|\n";
      for (const auto& [name, m] : r.heldout_sets) {
        md << "| " << name << " | " << m.misalignment << " | " << m.forgetting << " | "
           << m.distillation << " | " << m.nll << " | " << m.aligned_positions << " | "
           << m.text_positions << " |\n";
      }
    }
  }
  write_file_atomic(out / "results.md", md.str());
}

}  // namespace salad::eval
