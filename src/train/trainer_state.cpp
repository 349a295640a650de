// Checkpoints of a training run: what each rank writes, and resuming from them.
#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "trainer_impl.h"

namespace salad::train {

namespace {

using json = nlohmann::json;

std::string rank_file(const char* stem, int64_t rank, const char* ext) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-rank-%05lld.%s", stem, static_cast<long long>(rank), ext);
  return buf;
}

/// rank-00001.json: the rank's data cursor and RNG state.
std::string rank_json(int64_t rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank-%05lld.json", static_cast<long long>(rank));
  return buf;
}

std::string to_hex(const at::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  const at::Tensor b = bytes.contiguous().to(at::kByte).cpu();
  const uint8_t* p = b.data_ptr<uint8_t>();
  std::string out;
  out.reserve(static_cast<size_t>(b.numel()) * 2);
  for (int64_t i = 0; i < b.numel(); ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

at::Tensor from_hex(const std::string& hex, const std::string& where) {
  if (hex.size() % 2 != 0) throw CheckpointError(where + ": odd-length hex string");
  at::Tensor out = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
  uint8_t* p = out.data_ptr<uint8_t>();
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw CheckpointError(where + ": bad hex digit");
  };
  for (size_t i = 0; i < hex.size() / 2; ++i) {
    p[i] = static_cast<uint8_t>(nibble(hex[2 * i]) * 16 + nibble(hex[2 * i + 1]));
  }
  return out;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw CheckpointError("cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const fs::path& p) {
  try {
    return json::parse(read_text(p));
  } catch (const json::exception& e) {
    throw CheckpointError(p.string() + ": not valid JSON (" + e.what() + ")");
  }
}

void flatten(const YAML::Node& n, const std::string& prefix,
             std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n) {
      flatten(
          kv.second,
          prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(),
          out);
    }
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i)
      flatten(n[i], prefix + "[" + std::to_string(i) + "]", out);
  } else {
    out[prefix] = n.IsNull() ? "" : n.as<std::string>();
  }
}

std::map<std::string, std::string> flat_config(const config::SaladConfig& cfg) {
  std::map<std::string, std::string> out;
  flatten(YAML::Load(config::to_yaml(cfg)), "", out);
  return out;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

/// Keys whose change cannot alter the numbers of the continued run.
bool harmless_key(const std::string& k) {
  static const char* keys[] = {"run.dir",           "run.log_level",
                               "run.log_all_ranks", "run.threads",
                               "run.device",        "train.log_every",
                               "train.eval_every",  "train.save_every",
                               "train.keep_last",   "train.max_bad_steps",
                               "train.peak_tflops", "data.prefetch",
                               "data.workers",      "dist.timeout_s",
                               "dist.bucket_mb",    "train.activation_checkpointing"};
  for (const char* h : keys) {
    if (k == h) return true;
  }
  return starts_with(k, "data.valid");
}

/// Keys that change the shapes or meaning of the weights: resuming across them is refused.
bool model_key(const std::string& k) {
  return starts_with(k, "model.") || starts_with(k, "adapter.") || starts_with(k, "encoder.") ||
         k == "run.stage";
}

}  // namespace

void Trainer::Impl::validate_against(const config::SaladConfig& saved,
                                     const std::string& where) const {
  const auto a = flat_config(saved), b = flat_config(cfg);
  std::vector<std::string> fatal, changed;
  std::map<std::string, std::string> keys;
  for (const auto& [k, v] : a) keys[k];
  for (const auto& [k, v] : b) keys[k];
  for (const auto& [k, unused] : keys) {
    const auto ia = a.find(k), ib = b.find(k);
    const std::string va = ia == a.end() ? "(absent)" : ia->second;
    const std::string vb = ib == b.end() ? "(absent)" : ib->second;
    if (va == vb || harmless_key(k)) continue;
    const std::string line = k + ": checkpoint " + va + ", now " + vb;
    (model_key(k) ? fatal : changed).push_back(line);
  }
  if (!fatal.empty()) {
    std::string msg = where + " was trained with another model configuration:";
    for (const auto& l : fatal) msg += "\n  " + l;
    msg += "\n(resume with the recipe the run was started with, or start a new run.dir)";
    throw CheckpointError(msg);
  }
  if (!changed.empty()) {
    std::string msg;
    for (const auto& l : changed) msg += "\n  " + l;
    spdlog::warn("resume: settings differ from {} (the continuation is not the same run):{}", where,
                 msg);
  }
}

bool Trainer::Impl::save(bool required) {
  const int64_t step = progress.step;
  const int64_t rank = comm->rank();
  const bool zero1 = cfg.dist.zero1 && comm->distributed();
  std::string error;
  if (is_root) {
    try {
      store.prepare(step);
    } catch (const Error& e) {
      error = e.what();
    }
  }
  bool ok = comm->max(error.empty() ? 0.0 : 1.0) == 0.0;  // also the barrier after prepare()
  const fs::path dir = store.staging(step);
  if (ok) {
    try {
      if (is_root) {
        safetensors::save(dir / "model.safetensors", flat->named_values(),
                          {{"format", "salad-trainable"}, {"step", std::to_string(step)}});
        config::write_yaml(cfg, dir / "config.resolved.yaml");
        const json state = {
            {"format", "salad-trainer-state"},
            {"version", 1},
            {"stage", cfg.run.stage},
            {"step", step},
            {"tokens", progress.tokens},
            {"skipped_steps", progress.skipped_steps},
            {"bad_in_row", progress.bad_in_row},
            {"elapsed_s", progress.elapsed_s + std::chrono::duration<double>(
                                                   std::chrono::steady_clock::now() - run_start)
                                                   .count()},
            {"world_size", comm->world_size()},
            {"zero1", zero1},
            {"trainable", flat->numel()},
            {"flat_padded", flat->padded()},
            {"branch_step", schedule.branch_step()},
            {"total_steps", schedule.total_steps}};
        write_file_atomic(dir / "trainer.json", state.dump(2) + "\n");
      }
      if (is_root || zero1) {
        safetensors::save(dir / rank_file("optimizer", rank, "safetensors"), opt->state(),
                          {{"shard_begin", std::to_string(opt->shard_begin())},
                           {"shard_end", std::to_string(opt->shard_end())}});
      }
      json rank_state = {{"rank", rank},
                         {"world_size", comm->world_size()},
                         {"cursor", source ? source->cursor() : std::string()}};
      {
        auto gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        rank_state["rng_cpu"] = to_hex(gen.get_state());
      }
      write_file_atomic(dir / rank_json(rank), rank_state.dump(2) + "\n");
    } catch (const Error& e) {
      error = e.what();
    }
    ok = comm->max(error.empty() ? 0.0 : 1.0) == 0.0;
  }
  if (ok && is_root) {
    try {
      store.commit(step, comm->world_size(), cfg.train.keep_last, schedule.branch_step());
    } catch (const Error& e) {
      error = e.what();
    }
  }
  ok = comm->max(error.empty() ? 0.0 : 1.0) == 0.0;
  if (!ok) {
    if (is_root) store.discard(step);
    const std::string msg = "checkpoint at step " + std::to_string(step) + " failed" +
                            (error.empty() ? " on another rank" : ": " + error) +
                            "; the previous checkpoints are intact";
    if (required) throw IoError(msg);
    spdlog::error("{}; training continues", msg);
    return false;
  }
  spdlog::info("checkpoint: {}{}", store.folder(step).string(),
               step == schedule.branch_step() ? " (Stage II branch point: kept)" : "");
  return true;
}

std::optional<std::string> Trainer::Impl::resume() {
  double found = -1;
  if (is_root) {
    if (const auto s = store.latest_valid()) found = static_cast<double>(*s);
  }
  found = comm->max(found);
  if (found < 0) {
    spdlog::warn("resume: no valid checkpoint in {}; starting from step 0", store.dir().string());
    return std::nullopt;
  }
  const auto step = static_cast<int64_t>(found);
  const fs::path dir = store.folder(step);
  const std::string where = dir.string();

  validate_against(config::load(dir / "config.resolved.yaml"), where);
  const json state = read_json(dir / "trainer.json");
  const auto world = state.value("world_size", int64_t{0});
  const bool zero1 = cfg.dist.zero1 && comm->distributed();
  if (world != comm->world_size() && (zero1 || state.value("zero1", false))) {
    throw CheckpointError(where + ": saved by " + std::to_string(world) +
                          " ranks with ZeRO-1 sharded optimizer state; this run has " +
                          std::to_string(comm->world_size()) +
                          " (resume with the same world size)");
  }
  if (world != comm->world_size()) {
    throw CheckpointError(where + ": saved by " + std::to_string(world) + " ranks, this run has " +
                          std::to_string(comm->world_size()) +
                          " (the data cursors are per rank: resume with the same world size)");
  }

  // Weights: every trainable tensor by name and shape; all problems at once.
  const auto ckpt = safetensors::Checkpoint::open(dir / "model.safetensors");
  std::vector<std::string> problems;
  std::map<std::string, bool> used;
  for (const auto& n : ckpt.names()) used[n] = false;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < flat->entries().size(); ++i) {
    const FlatEntry& e = flat->entries()[i];
    if (!ckpt.contains(e.name)) {
      problems.push_back("missing " + e.name);
      continue;
    }
    used[e.name] = true;
    const at::Tensor src = ckpt.get(e.name);
    if (src.sizes().vec() != e.shape) {
      problems.push_back(e.name + ": checkpoint " + c10::str(src.sizes()) + ", model " +
                         c10::str(at::IntArrayRef(e.shape)));
      continue;
    }
    flat->params()[i].detach().copy_(src);
  }
  for (const auto& [n, u] : used) {
    if (!u) problems.push_back("unexpected " + n);
  }
  if (!problems.empty()) {
    std::string msg = where + "/model.safetensors does not fit this model:";
    for (const auto& p : problems) msg += "\n  " + p;
    throw CheckpointError(msg);
  }

  // Optimizer state: this rank's shard (ZeRO-1) or rank 0's full state.
  const int64_t opt_rank = zero1 ? comm->rank() : 0;
  const fs::path opt_file = dir / rank_file("optimizer", opt_rank, "safetensors");
  opt->load_state(safetensors::Checkpoint::open(opt_file), opt_file.string());

  progress.step = step;
  progress.tokens = state.value("tokens", int64_t{0});
  progress.skipped_steps = state.value("skipped_steps", int64_t{0});
  progress.bad_in_row = state.value("bad_in_row", int64_t{0});
  progress.elapsed_s = state.value("elapsed_s", 0.0);

  const fs::path rank_path = dir / rank_json(comm->rank());
  const json rank_state = read_json(rank_path);
  if (rank_state.contains("rng_cpu")) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(from_hex(rank_state["rng_cpu"].get<std::string>(), rank_path.string()));
  }
  spdlog::info("resume: {} (step {}, {} tokens)", where, step, progress.tokens);
  return rank_state.value("cursor", std::string());
}

}  // namespace salad::train
