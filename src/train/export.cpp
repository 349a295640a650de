#include "salad/train/export.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <stdlib.h>  // mkdtemp

#include <cerrno>
#include <chrono>
#include <ctime>
#include <fstream>
#include <regex>
#include <sstream>

#include "salad/core/atomic_file.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/core/shape.h"
#include "salad/data/feature_cache.h"
#include "salad/models/fbank.h"
#include "salad/models/mimi.h"
#include "salad/models/qwen2.h"
#include "salad/models/weight_loader.h"
#include "salad/train/checkpoint.h"
#include "train/export_internal.h"

#ifndef SALAD_VERSION
#define SALAD_VERSION "unknown"
#endif

namespace salad::train {

namespace {

using json = nlohmann::ordered_json;

constexpr const char* kWeights = "model.safetensors";
constexpr const char* kConfig = "config.resolved.yaml";
constexpr const char* kManifest = "checkpoint.json";
constexpr const char* kAdapterPrefix = "adapter.";
constexpr const char* kEmbed = "model.embed_tokens.weight";

// Absolute and without a trailing separator, so filename() is the folder's name.
fs::path clean(const fs::path& p) {
  fs::path a = fs::absolute(p).lexically_normal();
  if (a.filename().empty() && a.has_parent_path()) a = a.parent_path();
  return a;
}

std::string list_steps(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) {
      names.push_back(e.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  if (names.empty()) return "none";
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// The step of a checkpoint: its folder name (step-000200), else checkpoint.json's "step".
int64_t step_of(const fs::path& ckpt) {
  static const std::regex kName("step-([0-9]+)");
  std::smatch m;
  const std::string name = ckpt.filename().string();
  if (std::regex_match(name, m, kName)) return std::stoll(m[1].str());
  try {
    const json j = json::parse(detail::read_bytes(ckpt / kManifest));
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer()) {
      return j["step"].get<int64_t>();
    }
  } catch (const std::exception&) {
    // Provenance only: an unreadable manifest just leaves the step unknown.
  }
  return -1;
}

std::string dtype_json_name(c10::ScalarType t) {
  if (t == at::kBFloat16) return "bfloat16";
  if (t == at::kHalf) return "float16";
  return "float32";
}

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The decoder's options: <model.llm>/config.json when the run started from a Hugging Face
// checkpoint, else model.arch with the vocabulary the checkpoint's embedding has.
models::Qwen2Options decoder_options(const config::SaladConfig& cfg,
                                     const safetensors::Checkpoint& ckpt, const fs::path& cfg_path,
                                     std::string& source) {
  if (!ckpt.contains(kEmbed)) {
    throw CheckpointError(ckpt.source().string() + ": missing tensor '" + kEmbed +
                          "' (the student decoder's token embedding, [vocab, hidden_size]); is "
                          "this a salad checkpoint?");
  }
  const int64_t rows = ckpt.info(kEmbed).shape.at(0);
  models::Qwen2Options o;
  if (!cfg.model.llm.empty()) {
    const fs::path hf = cfg.model.llm / "config.json";
    source = hf.string() + " (model.llm of " + cfg_path.string() + ")";
    if (!fs::is_regular_file(hf)) {
      throw ConfigError(hf.string() +
                        ": missing; the decoder's architecture comes from model.llm's " +
                        "config.json (model.llm = " + cfg.model.llm.string() + " in " +
                        cfg_path.string() + "): make that folder available or fix the path");
    }
    o = models::Qwen2Options::from_hf_config(hf);
  } else {
    source = "model.arch of " + cfg_path.string();
    if (cfg.model.arch.vocab_size > 0 && cfg.model.arch.vocab_size != rows) {
      throw CheckpointError(ckpt.source().string() + ": tensor '" + kEmbed + "' has " +
                            std::to_string(rows) + " rows but model.arch.vocab_size is " +
                            std::to_string(cfg.model.arch.vocab_size) + " in " + cfg_path.string() +
                            " (expected " +
                            shape_text({cfg.model.arch.vocab_size, cfg.model.arch.hidden_size}) +
                            ", found " + shape_text(ckpt.info(kEmbed).shape) + ")");
    }
    o = models::Qwen2Options::from_arch(cfg.model.arch, rows);
  }
  if (o.vocab_size != rows) {
    throw CheckpointError(ckpt.source().string() + ": tensor '" + kEmbed + "' has " +
                          std::to_string(rows) + " rows but the decoder config " + source +
                          " has vocab_size " + std::to_string(o.vocab_size) + " (expected " +
                          shape_text({o.vocab_size, o.hidden_size}) + ", found " +
                          shape_text(ckpt.info(kEmbed).shape) + ")");
  }
  return o;
}

// What the adapter's input is: feature width (or number of codebooks) from the tensors, checked
// against the recipe's encoder.
struct AdapterInput {
  int64_t dim = 0;
  bool codes = false;
};

AdapterInput adapter_input(const config::SaladConfig& cfg, const safetensors::Checkpoint& ckpt,
                           const fs::path& cfg_path) {
  AdapterInput in;
  const std::string in_proj = std::string(kAdapterPrefix) + "in_proj.weight";
  const std::string code0 = std::string(kAdapterPrefix) + "code_embeddings.0.weight";
  if (ckpt.contains(in_proj)) {
    const auto& shape = ckpt.info(in_proj).shape;
    if (shape.size() != 2) {
      throw CheckpointError(ckpt.source().string() + ": tensor '" + in_proj +
                            "' must be [adapter.hidden_size, feature_dim], found " +
                            shape_text(shape));
    }
    in.dim = shape[1];
  } else if (ckpt.contains(code0)) {
    in.codes = true;
    while (ckpt.contains(std::string(kAdapterPrefix) + "code_embeddings." + std::to_string(in.dim) +
                         ".weight")) {
      ++in.dim;
    }
  } else {
    throw CheckpointError(ckpt.source().string() +
                          ": the checkpoint has adapter tensors but "
                          "neither '" +
                          in_proj + "' (feature input) nor '" + code0 + "' (code input)");
  }
  const bool cfg_codes = cfg.encoder.type == "mimi" && cfg.encoder.output == "codes";
  if (in.codes != cfg_codes) {
    throw CheckpointError(ckpt.source().string() + ": the adapter reads " +
                          (in.codes ? "codes" : "features") + " but the encoder of " +
                          cfg_path.string() + " (type " + cfg.encoder.type + ", output " +
                          cfg.encoder.output + ") gives " + (cfg_codes ? "codes" : "features"));
  }
  return in;
}

// The Mimi model config load_mimi_model would use (same lookup), without loading weights.
fs::path mimi_config_file(const fs::path& checkpoint) {
  if (checkpoint.empty()) return {};
  const std::vector<fs::path> candidates =
      fs::is_directory(checkpoint)
          ? std::vector<fs::path>{checkpoint / "config.json"}
          : std::vector<fs::path>{fs::path(checkpoint).replace_extension(".json"),
                                  checkpoint.parent_path() / "config.json"};
  for (const auto& c : candidates) {
    if (fs::is_regular_file(c)) return c;
  }
  return {};
}

// speech_encoder.json: the frozen encoder the adapter expects. Derived from the feature cache
// (when the run used one and it is readable here) or from the encoder's config, never by running
// or loading the encoder.
json encoder_info(const config::SaladConfig& cfg) {
  const config::EncoderConfig& e = cfg.encoder;
  const bool codes = e.type == "mimi" && e.output == "codes";
  json j;
  j["format"] = "salad-speech-encoder";
  j["version"] = 1;
  j["type"] = e.type;
  j["checkpoint"] = e.checkpoint.empty() ? json(nullptr) : json(e.checkpoint.string());
  j["output"] = e.output;
  j["n_q"] = e.n_q;
  j["n_mels"] = e.n_mels;
  j["codes"] = codes;
  j["feature_cache"] = cfg.data.cache.empty() ? json(nullptr) : json(cfg.data.cache.string());
  int64_t rate = 0, spf = 0, dim = 0;
  std::string description, source;
  if (!cfg.data.cache.empty()) {
    try {
      const data::FeatureCacheMeta m = data::FeatureCache::open(cfg.data.cache).meta();
      rate = m.sample_rate;
      spf = m.samples_per_frame;
      dim = m.feature_dim;
      description = m.encoder;
      source = "feature cache " + cfg.data.cache.string();
    } catch (const Error& ex) {
      spdlog::warn(
          "export: feature cache {} not readable here ({}); describing the encoder from "
          "the config",
          cfg.data.cache.string(), ex.what());
    }
  }
  if (source.empty() && e.type == "fbank") {
    const models::FbankEncoder fbank(e);
    rate = fbank.sample_rate();
    spf = fbank.samples_per_frame();
    dim = fbank.feature_dim();
    description = fbank.describe();
    source = "encoder section (fbank)";
  } else if (source.empty()) {
    const fs::path mc = mimi_config_file(e.checkpoint);
    const models::MimiOptions mo =
        mc.empty() ? models::MimiOptions{} : models::MimiOptions::from_json_file(mc);
    rate = mo.sample_rate;
    spf = mo.samples_per_frame();
    dim = codes ? e.n_q : mo.dimension;
    description =
        "mimi " + e.output + (e.output == "latent" ? "" : " n_q=" + std::to_string(e.n_q));
    source = mc.empty() ? "defaults of the released Mimi (no config beside encoder.checkpoint)"
                        : mc.string();
  }
  j["sample_rate"] = rate;
  j["samples_per_frame"] = spf;
  j["frame_rate"] = spf > 0 ? static_cast<double>(rate) / static_cast<double>(spf) : 0.0;
  j["feature_dim"] = dim;
  j["description"] = description;
  j["derived_from"] = source;
  return j;
}

// The tokenizer files to copy: (source, name in the export).
std::vector<std::pair<fs::path, std::string>> tokenizer_files(const config::SaladConfig& cfg,
                                                              const fs::path& cfg_path) {
  std::vector<std::pair<fs::path, std::string>> files;
  fs::path tok = cfg.model.tokenizer;
  const char* key = "model.tokenizer";
  if (tok.empty() && !cfg.model.llm.empty()) {
    tok = cfg.model.llm / "tokenizer.json";
    key = "model.llm";
  }
  if (tok.empty()) {
    spdlog::warn("export: {} sets neither model.tokenizer nor model.llm: no tokenizer exported",
                 cfg_path.string());
    return files;
  }
  if (!fs::is_regular_file(tok)) {
    throw IoError(tok.string() + ": tokenizer not found (from " + key + " in " + cfg_path.string() +
                  "); the export copies the run's tokenizer: make it " + "available at that path");
  }
  files.emplace_back(tok, tok.extension() == ".model" ? tok.filename().string() : "tokenizer.json");
  if (!cfg.model.llm.empty()) {
    // What Hugging Face loaders read beside the weights, when the source model has them.
    for (const char* name : {"tokenizer_config.json", "special_tokens_map.json",
                             "generation_config.json", "vocab.json", "merges.txt"}) {
      const fs::path p = cfg.model.llm / name;
      const bool taken =
          std::any_of(files.begin(), files.end(), [&](const auto& f) { return f.second == name; });
      if (!taken && fs::is_regular_file(p)) files.emplace_back(p, name);
    }
  }
  return files;
}

// The output folder: refuses a non-empty one without `force`, and never replaces a folder that
// holds the checkpoint.
void check_out(const fs::path& out, const fs::path& ckpt, bool force) {
  if (!fs::exists(out)) return;
  if (!fs::is_directory(out)) {
    throw IoError(out.string() +
                  ": exists and is not a folder (expected an absent or empty "
                  "output folder)");
  }
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(out)) entries.push_back(e.path().filename().string());
  if (entries.empty()) return;
  std::sort(entries.begin(), entries.end());
  if (!force) {
    std::string some;
    for (size_t i = 0; i < entries.size() && i < 3; ++i) some += (i ? ", " : "") + entries[i];
    throw IoError(out.string() + ": output folder is not empty (" + std::to_string(entries.size()) +
                  " entries: " + some + (entries.size() > 3 ? ", ..." : "") +
                  "); choose another --out or pass --force to replace it");
  }
  const fs::path c = fs::weakly_canonical(ckpt), o = fs::weakly_canonical(out);
  const auto mismatch = std::mismatch(o.begin(), o.end(), c.begin(), c.end());
  if (mismatch.first == o.end()) {
    throw IoError(out.string() + ": refusing to replace a folder that contains the checkpoint " +
                  ckpt.string() + " being exported");
  }
}

// A fresh folder beside `out` (same filesystem, so the final rename is atomic).
fs::path make_temp_beside(const fs::path& out) {
  fs::create_directories(out.parent_path());
  std::string tmpl = (out.parent_path() / ("." + out.filename().string() + ".tmp-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) {
    throw IoError(tmpl + ": cannot create the temp folder: " + errno_text(errno));
  }
  return tmpl;
}

// Moves the finished temp folder to `out`, replacing an existing (empty, or forced) one.
void publish(const fs::path& tmp, const fs::path& out) {
  fs::path old;
  if (fs::exists(out)) {
    old = fs::path(tmp.string() + ".old");
    fs::rename(out, old);
  }
  try {
    fs::rename(tmp, out);
  } catch (...) {
    if (!old.empty()) fs::rename(old, out);
    throw;
  }
  fsync_dir(out.parent_path());
  if (!old.empty()) fs::remove_all(old);
}

}  // namespace

namespace detail {

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw IoError(p.string() + ": cannot open: " + errno_text(errno));
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw IoError(p.string() + ": read failed");
  return os.str();
}

models::LoadOptions adapter_load_options() {
  models::LoadOptions la;
  la.what = "the adapter";
  la.key_map = [](const std::string& name) { return kAdapterPrefix + name; };
  la.ignore_prefixes = {"model.", "lm_head."};
  return la;
}

}  // namespace detail

void ExportOptions::validate() const {
  std::vector<std::string> e;
  if (run_dir.empty() == checkpoint.empty()) {
    e.push_back("give exactly one of a run folder (--run) or a checkpoint folder (--checkpoint)");
  }
  if (!checkpoint.empty() && step >= 0) {
    e.push_back("a step (--step) only applies with a run folder (--run)");
  }
  if (out.empty()) e.push_back("an output folder (--out) is required");
  if (dtype != "fp32" && dtype != "bf16" && dtype != "fp16") {
    e.push_back("dtype must be fp32, bf16 or fp16, found '" + dtype + "'");
  }
  if (!e.empty()) {
    std::string msg = "invalid export options:";
    for (const auto& s : e) msg += "\n  " + s;
    throw ConfigError(msg);
  }
}

fs::path resolve_checkpoint(const fs::path& run_dir, int64_t step) {
  if (!fs::is_directory(run_dir)) {
    throw CheckpointError(run_dir.string() + ": no such run folder");
  }
  const fs::path dir = run_dir / "checkpoints";
  if (!fs::is_directory(dir)) {
    throw CheckpointError(dir.string() + ": missing; the run has no checkpoints yet");
  }
  if (step >= 0) {
    char name[32];
    std::snprintf(name, sizeof name, "step-%06lld", static_cast<long long>(step));
    const fs::path p = dir / name;
    if (!fs::is_directory(p)) {
      throw CheckpointError(p.string() + ": no checkpoint for step " + std::to_string(step) +
                            " (checkpoints present: " + list_steps(dir) + ")");
    }
    return p;
  }
  const fs::path latest = dir / "latest";
  if (!fs::is_regular_file(latest)) {
    throw CheckpointError(latest.string() +
                          ": missing (it names the newest complete checkpoint; checkpoints "
                          "present: " +
                          list_steps(dir) + "; pick one with --step)");
  }
  std::string name = detail::read_bytes(latest);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.front()))) name.erase(0, 1);
  if (name.empty() || name.find('/') != std::string::npos) {
    throw CheckpointError(latest.string() +
                          ": expected the name of a checkpoint folder such as "
                          "step-000200, found '" +
                          name + "'");
  }
  const fs::path p = dir / name;
  if (!fs::is_directory(p)) {
    throw CheckpointError(latest.string() + " names '" + name + "' but " + p.string() +
                          " does not exist (checkpoints present: " + list_steps(dir) + ")");
  }
  return p;
}

namespace {

ExportResult export_impl(const ExportOptions& options) {
  ExportResult r;
  r.checkpoint =
      clean(options.checkpoint.empty() ? resolve_checkpoint(options.run_dir, options.step)
                                       : options.checkpoint);
  r.out = clean(options.out);
  const fs::path& ckpt_dir = r.checkpoint;
  if (!fs::is_directory(ckpt_dir)) {
    throw CheckpointError(ckpt_dir.string() + ": no such checkpoint folder");
  }
  // Inside a run's checkpoints/ folder, the trainer's own check: the manifest and every file it
  // lists, with its size (a truncated or half-copied checkpoint is refused).
  r.step = step_of(ckpt_dir);
  if (ckpt_dir.parent_path().filename() == "checkpoints" && r.step >= 0 &&
      ckpt_dir.filename() == CheckpointStore::folder_name(r.step)) {
    CheckpointStore(ckpt_dir.parent_path().parent_path()).validate(r.step);
  }
  for (const char* f : {kWeights, kConfig, kManifest}) {
    if (!fs::is_regular_file(ckpt_dir / f)) {
      throw CheckpointError(
          (ckpt_dir / f).string() + ": missing" +
          (std::string(f) == kManifest
               ? " (the manifest the trainer writes last: the checkpoint is incomplete)"
               : std::string(" (every checkpoint has ") + f + ")"));
    }
  }
  check_out(r.out, ckpt_dir, options.force);

  const fs::path cfg_path = ckpt_dir / kConfig;
  const config::SaladConfig cfg = config::load(cfg_path);
  r.stage = cfg.run.stage;
  const c10::ScalarType dtype = models::parse_dtype(options.dtype);
  const auto ckpt = safetensors::Checkpoint::open(ckpt_dir / kWeights);
  spdlog::info("export: {} (step {}, stage {}) -> {} ({})", ckpt_dir.string(), r.step, r.stage,
               r.out.string(), options.dtype);

  // Every tensor goes through the one weight loader into a module of the export dtype: names,
  // shapes and kinds are checked against the config (all problems at once) and the module's
  // named tensors are exactly what Hugging Face loaders expect.
  torch::NoGradGuard no_grad;
  std::string decoder_source;
  models::Qwen2Options qo = decoder_options(cfg, ckpt, cfg_path, decoder_source);
  qo.torch_dtype = dtype_json_name(dtype);
  models::Qwen2 decoder(qo);
  decoder->to(dtype);
  {
    models::LoadOptions lo;
    lo.what = "the student decoder";
    lo.ignore_prefixes = {kAdapterPrefix};
    if (qo.tie_word_embeddings) lo.allow_unexpected.push_back("lm_head.weight");
    lo.hint = "decoder config from " + decoder_source;
    models::load_weights(*decoder, ckpt, lo);
  }
  r.decoder_parameters = models::count_parameters(*decoder);

  const auto names = ckpt.names();
  r.has_adapter = std::any_of(names.begin(), names.end(),
                              [](const std::string& n) { return n.rfind(kAdapterPrefix, 0) == 0; });
  models::Adapter adapter{nullptr};
  json encoder;
  if (r.has_adapter) {
    const AdapterInput in = adapter_input(cfg, ckpt, cfg_path);
    encoder = encoder_info(cfg);
    const int64_t expected = encoder["feature_dim"].get<int64_t>();
    if (expected > 0 && expected != in.dim) {
      throw CheckpointError(
          ckpt.source().string() + ": the adapter reads " + std::to_string(in.dim) +
          (in.codes ? " codebooks" : "-d features") + " but the encoder of " + cfg_path.string() +
          " (" + encoder["description"].get<std::string>() + ", from " +
          encoder["derived_from"].get<std::string>() + ") gives " + std::to_string(expected));
    }
    adapter = models::Adapter(
        models::AdapterOptions::from_config(cfg.adapter, in.dim, in.codes, qo.hidden_size));
    adapter->to(dtype);
    auto la = detail::adapter_load_options();
    la.hint = "adapter section of " + cfg_path.string();
    models::load_weights(*adapter, ckpt, la);
    r.adapter_parameters = models::count_parameters(*adapter);
  } else if (cfg.run.stage != "text") {
    spdlog::warn("export: stage {} checkpoint without adapter tensors: exporting the decoder only",
                 cfg.run.stage);
  }
  const auto tokenizer = tokenizer_files(cfg, cfg_path);

  const fs::path tmp = make_temp_beside(r.out);
  try {
    const std::map<std::string, std::string> meta = {{"format", "pt"}};
    auto put = [&](const std::string& name, const std::string& bytes) {
      write_file_atomic(tmp / name, bytes);
      r.files.push_back(name);
    };
    safetensors::save(tmp / "model.safetensors", models::named_tensors(*decoder), meta);
    r.files.push_back("model.safetensors");
    put("config.json", qo.to_hf_config_json());
    for (const auto& [src, name] : tokenizer) put(name, detail::read_bytes(src));
    if (r.has_adapter) {
      safetensors::save(tmp / "adapter.safetensors",
                        models::named_tensors(*adapter, kAdapterPrefix), meta);
      r.files.push_back("adapter.safetensors");
      put("adapter_config.json", adapter_config_json(adapter->options()));
      put("speech_encoder.json", encoder.dump(2) + "\n");
    }
    put(kConfig, detail::read_bytes(cfg_path));
    fs::path run_dir = options.run_dir;
    if (run_dir.empty()) {
      run_dir = ckpt_dir.parent_path().filename() == "checkpoints"
                    ? ckpt_dir.parent_path().parent_path()
                    : cfg.run.dir;
    }
    json prov;
    prov["format"] = "salad-export";
    prov["version"] = 1;
    prov["salad_version"] = SALAD_VERSION;
    prov["run_dir"] = clean(run_dir).string();
    prov["checkpoint"] = ckpt_dir.string();
    prov["step"] = r.step >= 0 ? json(r.step) : json(nullptr);
    prov["stage"] = r.stage;
    prov["dtype"] = options.dtype;
    prov["decoder_config_from"] = decoder_source;
    prov["decoder_parameters"] = r.decoder_parameters;
    prov["adapter_parameters"] = r.adapter_parameters;
    prov["exported_at"] = utc_now();
    prov["files"] = r.files;
    put("salad.json", prov.dump(2) + "\n");
    fsync_dir(tmp);
    publish(tmp, r.out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  spdlog::info("export: wrote {} ({} decoder parameters{})", r.out.string(), r.decoder_parameters,
               r.has_adapter ? ", " + std::to_string(r.adapter_parameters) + " adapter parameters"
                             : std::string());
  return r;
}

}  // namespace

ExportResult export_checkpoint(const ExportOptions& options) {
  options.validate();
  try {
    return export_impl(options);
  } catch (const fs::filesystem_error& e) {
    // A failed mkdir/rename/listing is an I/O problem of the user's folders, not a salad bug.
    throw IoError(std::string("export: ") + e.what());
  }
}

}  // namespace salad::train
