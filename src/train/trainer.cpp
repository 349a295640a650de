#include "salad/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "salad/data/batch.h"
#include "salad/eval/alignment.h"
#include "trainer_impl.h"

namespace salad::train {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.load() != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_signal.store(sig);
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// bf16 autocast for the forward passes (train.precision = bf16); the loss runs outside it in
/// fp32 on the fp32 master weights of the LM head.
class AutocastScope {
 public:
  AutocastScope(bool on, c10::Device device) : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    const auto type = cuda_ ? at::kCUDA : at::kCPU;
    prev_ = at::autocast::is_autocast_enabled(type);
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
#else
    if (cuda_) {
      prev_ = at::autocast::is_enabled();
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      prev_ = at::autocast::is_cpu_enabled();
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
#endif
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(cuda_ ? at::kCUDA : at::kCPU, prev_);
#else
    if (cuda_) {
      at::autocast::set_enabled(prev_);
    } else {
      at::autocast::set_cpu_enabled(prev_);
    }
#endif
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_, cuda_;
  bool prev_ = false;
};

int64_t count_params(const torch::nn::Module& m, bool skip_embeddings) {
  int64_t n = 0;
  for (const auto& p : m.named_parameters()) {
    if (skip_embeddings &&
        (p.key().find("embed_tokens") != std::string::npos || p.key().rfind("lm_head", 0) == 0)) {
      continue;
    }
    n += p.value().numel();
  }
  return n;
}

std::string human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<int64_t>(s);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  }
  return buf;
}

std::string human_count(double v) {
  char buf[32];
  if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  } else if (v >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  }
  return buf;
}

/// After a resume at `step`: lines of later steps (written by the process that died after the
/// checkpoint) move to metrics.discarded.jsonl, so metrics.jsonl has one history.
void trim_metrics(const fs::path& run_dir, int64_t step) {
  const fs::path path = run_dir / "metrics.jsonl";
  std::ifstream in(path);
  if (!in) return;
  std::string keep, drop;
  for (std::string line; std::getline(in, line);) {
    int64_t s = -1;
    try {
      s = json::parse(line).value("step", int64_t{-1});
    } catch (const json::exception&) {
      // a torn last line of a killed process
    }
    ((s >= 0 && s <= step) ? keep : drop) += line + "\n";
  }
  if (drop.empty()) return;
  std::ofstream(run_dir / "metrics.discarded.jsonl", std::ios::app) << drop;
  write_file_atomic(path, keep);
  spdlog::info("resume: {} metrics lines after step {} moved to metrics.discarded.jsonl",
               std::count(drop.begin(), drop.end(), '\n'), step);
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}
void request_stop(int signal) { g_stop_signal.store(signal); }
void clear_stop() { g_stop_signal.store(0); }

Trainer::Impl::Impl(config::SaladConfig c, TrainParts p, std::shared_ptr<dist::Comm> cm)
    : cfg(std::move(c)), parts(std::move(p)), comm(std::move(cm)), store(cfg.run.dir) {
  if (!parts.lm) throw Error("Trainer: no model");
  if (!comm) throw Error("Trainer: no communicator (use a world-size-1 dist::Comm)");
  is_root = comm->rank() == 0;
  device = parts.lm->device();
  const bool text_stage = cfg.run.stage == "text";
  if (cfg.run.stage != "text" && cfg.run.stage != "1" && cfg.run.stage != "2") {
    throw ConfigError("run.stage: expected text, 1 or 2, found '" + cfg.run.stage + "'");
  }
  if (cfg.train.precision != "fp32" && cfg.train.precision != "bf16") {
    throw ConfigError("train.precision: expected fp32 or bf16, found '" + cfg.train.precision +
                      "'");
  }
  loss::DistillationOptions lo = loss::DistillationOptions::from_config(cfg.loss);
  if (text_stage) lo.alpha = 0.0;  // plain LM training: NLL only, no teacher
  loss_fn = loss::DistillationLoss(lo);
  with_teacher = lo.alpha > 0.0;
  if (with_teacher && !parts.lm->has_teacher()) {
    throw ConfigError("loss.alpha = " + std::to_string(lo.alpha) +
                      " needs a teacher, but the model has none");
  }
  schedule = WsdSchedule::from_config(cfg.optim, cfg.train.steps);
  if (cfg.train.micro_batch_sequences < 1) {
    throw ConfigError("train.micro_batch_sequences must be >= 1");
  }
  if (parts.micro_positions < 1) throw ConfigError("Trainer: micro_positions must be > 0");
  const int64_t per_micro = parts.micro_positions * comm->world_size();
  accum = std::max<int64_t>(1, (cfg.train.tokens_per_step + per_micro - 1) / per_micro);

  // The trainable parameters, flattened (the model's tensors become views).
  std::vector<models::ParamGroup> groups;
  for (auto& g : parts.lm->trainable_groups()) {
    if (g.name == "adapter" && !parts.train_adapter) {
      for (auto& [name, t] : g.params) t.set_requires_grad(false);
      continue;
    }
    groups.push_back(std::move(g));
  }
  flat = std::make_unique<FlatParams>(groups, device, comm->world_size());
  int64_t lo_shard = 0, hi_shard = flat->padded();
  if (cfg.dist.zero1 && comm->world_size() > 1) {
    const int64_t shard = flat->padded() / comm->world_size();
    lo_shard = comm->rank() * shard;
    hi_shard = lo_shard + shard;
  }
  AdamWOptions ao;
  ao.beta1 = cfg.optim.beta1;
  ao.beta2 = cfg.optim.beta2;
  ao.eps = cfg.optim.eps;
  ao.weight_decay = cfg.optim.weight_decay;
  opt = std::make_unique<FlatAdamW>(*flat, ao, lo_shard, hi_shard);
  if (comm->distributed()) {
    // Every rank must run rank 0's recipe (and so its seed); a rank started with other --set
    // values would silently train something else.
    const std::string mine = config::to_yaml(cfg);
    const std::string root = comm->broadcast_string(mine, 0);
    const bool differs = comm->max(root != mine ? 1.0 : 0.0) > 0;
    if (differs) {
      throw ConfigError(root != mine ? "rank " + std::to_string(comm->rank()) +
                                           "'s resolved config differs from rank 0's (launch "
                                           "every rank with the same recipe and --set values)"
                                     : "another rank's resolved config differs from rank 0's");
    }
    // The same initial weights everywhere (rank 0's), whatever each process initialised.
    comm->broadcast(flat->values(), 0);
    buckets = std::make_unique<dist::GradBuckets>(
        comm, flat->params(), flat->grads(),
        static_cast<int64_t>(cfg.dist.bucket_mb * 1024.0 * 1024.0));
  }
  if (cfg.train.activation_checkpointing) {
    parts.lm->student()->set_activation_checkpointing(true);
    parts.lm->adapter()->set_activation_checkpointing(true);
  }
  // Model FLOPs per token: 6 × trainable non-embedding parameters (forward + backward).
  flops_per_token_base = 6.0 * static_cast<double>(count_params(*parts.lm->student(), true));
}

std::map<std::string, double> Trainer::Impl::learning_rates(int64_t step) const {
  const double f = schedule.factor(step);
  return {{"adapter", cfg.optim.lr_adapter * f}, {"llm", cfg.optim.lr_llm * f}};
}

double Trainer::Impl::flops_of(const data::Batch& b) const {
  // The 6N rule per part (attention scores are left out): student decoder over its positions,
  // adapter over speech frames, LM head over loss positions, teacher forward (2N) over its
  // positions and the loss positions of its head. Documented in docs/training.md.
  const auto& st = b.stats;
  const double student_tokens = static_cast<double>(st.text_tokens + st.speech_frames + st.markers);
  const double V = static_cast<double>(parts.lm->student()->options().vocab_size);
  const double D = static_cast<double>(parts.lm->student()->options().hidden_size);
  const double N = static_cast<double>(b.loss_positions());
  double f = flops_per_token_base * student_tokens + 6.0 * V * D * N;
  if (parts.train_adapter && st.speech_frames > 0) {
    f += 6.0 * static_cast<double>(count_params(*parts.lm->adapter(), false)) *
         static_cast<double>(st.speech_frames);
  }
  if (with_teacher) {
    const double Dt = static_cast<double>(parts.lm->teacher()->options().hidden_size);
    const double teacher_tokens = static_cast<double>(b.teacher.input_ids.numel());
    f += 2.0 * static_cast<double>(count_params(*parts.lm->teacher(), true)) * teacher_tokens +
         2.0 * V * Dt * N;
  }
  return f;
}

StepStats Trainer::Impl::step(std::vector<data::Batch>& micro) {
  const auto t0 = Clock::now();
  StepStats s;
  int64_t positions = 0, tokens = 0;
  double flops = 0;
  for (const auto& b : micro) {
    positions += b.loss_positions();
    tokens += b.stats.text_tokens + b.stats.speech_frames + b.stats.markers;
    flops += flops_of(b);
  }
  // Global loss positions: every micro-batch of every rank shares one normalizer.
  const double global_positions = comm->sum(static_cast<double>(positions));
  auto& lm = *parts.lm;
  lm.train(true);
  const bool bf16 = cfg.train.precision == "bf16";
  at::Tensor kl_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  at::Tensor nll_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  for (size_t i = 0; i < micro.size(); ++i) {
    if (buckets) buckets->begin(i + 1 == micro.size());
    if (global_positions <= 0) break;
    if (micro[i].loss_positions() == 0) continue;
    models::AlignedHidden h;
    {
      AutocastScope autocast(bf16, device);
      h = lm.forward(micro[i], with_teacher);
    }
    const at::Tensor student_hidden = h.student.to(at::kFloat);
    const at::Tensor teacher_hidden =
        with_teacher ? h.teacher.to(lm.teacher()->lm_head_weight().scalar_type()) : at::Tensor();
    const loss::LossParts lp =
        loss_fn(student_hidden, lm.student()->lm_head_weight(), teacher_hidden,
                with_teacher ? lm.teacher()->lm_head_weight() : at::Tensor(),
                micro[i].targets.to(device), global_positions);
    lp.loss.backward();
    kl_sum += lp.kl_sum.to(device);
    nll_sum += lp.nll_sum.to(device);
  }
  if (buckets) buckets->finish();

  // One host sync per step: the norm decides skip and clip, the sums are logged.
  at::Tensor sums = at::stack({kl_sum, nll_sum});
  comm->all_reduce_sum(sums);
  const double norm = flat->grad_norm();
  const auto host = sums.cpu();
  s.kl = global_positions > 0 ? host[0].item<double>() / global_positions : 0.0;
  s.nll = global_positions > 0 ? host[1].item<double>() / global_positions : 0.0;
  const double alpha = loss_fn.options().alpha;
  s.loss = alpha * s.kl + (1.0 - alpha) * s.nll;
  s.grad_norm = norm;
  s.positions = static_cast<int64_t>(global_positions);
  s.tokens = static_cast<int64_t>(comm->sum(static_cast<double>(tokens)));
  s.flops = flops * static_cast<double>(comm->world_size());
  const auto lr = learning_rates(progress.step);
  s.lr_adapter = parts.train_adapter ? lr.at("adapter") : 0.0;
  s.lr_llm = lr.at("llm");
  if (!std::isfinite(norm) || !std::isfinite(s.loss) || global_positions <= 0) {
    s.skipped = true;
  } else {
    torch::NoGradGuard no_grad;
    const double clip = cfg.optim.grad_clip;
    if (clip > 0.0 && norm > clip) flat->grads().mul_(clip / (norm + 1e-6));
    opt->step(lr);
    if (cfg.dist.zero1 && comm->distributed()) {
      const int64_t shard = opt->shard_end() - opt->shard_begin();
      comm->all_gather(flat->values(), flat->values().narrow(0, opt->shard_begin(), shard));
    }
  }
  flat->zero_grad();
  s.seconds = seconds_since(t0);
  return s;
}

Trainer::Trainer(config::SaladConfig cfg, TrainParts parts, std::shared_ptr<dist::Comm> comm)
    : impl_(std::make_unique<Impl>(std::move(cfg), std::move(parts), std::move(comm))) {}

Trainer::~Trainer() = default;

void Trainer::on_step(std::function<void(const StepStats&)> fn) {
  impl_->callbacks.push_back(std::move(fn));
}

StepStats Trainer::step(const std::vector<data::Batch>& micro) {
  std::vector<data::Batch> copy = micro;
  StepStats s = impl_->step(copy);
  s.step = ++impl_->progress.step;
  return s;
}

/// Validation on this rank's share of the held-out data, summed over ranks: for the speech
/// stages L_DIST, NLL, misalignment M and forgetting F (eval/alignment.h); for stage `text` the
/// NLL. Returns the metrics JSON line.
std::string Trainer::Impl::validate() {
  Impl& t = *this;
  auto src = t.parts.valid();
  auto& lm = *t.parts.lm;
  const bool was_training = lm.student()->is_training();
  lm.train(false);
  torch::NoGradGuard no_grad;
  // misalignment, distillation, nll, aligned, forgetting, text positions
  std::vector<double> v(6, 0.0);
  while (auto b = src->next()) {
    if (b->loss_positions() == 0) continue;
    if (lm.has_teacher()) {
      const eval::AlignmentSums s = eval::alignment_sums(lm, *b, t.cfg.loss.chunk_size);
      v[0] += s.misalignment, v[1] += s.distillation, v[2] += s.nll;
      v[3] += static_cast<double>(s.aligned_positions);
      v[4] += s.forgetting, v[5] += static_cast<double>(s.text_positions);
    } else {
      const models::AlignedHidden h = lm.forward(*b, false);
      const loss::LossParts p = t.loss_fn(h.student.to(at::kFloat), lm.student()->lm_head_weight(),
                                          at::Tensor(), at::Tensor(), b->targets.to(t.device), 1.0);
      v[2] += p.nll_sum.item<double>();
      v[3] += static_cast<double>(p.positions);
    }
  }
  lm.train(was_training);
  at::Tensor all = at::tensor(v, at::TensorOptions().dtype(at::kDouble)).to(t.device);
  t.comm->all_reduce_sum(all);
  all = all.cpu();
  const double n = all[3].item<double>(), nt = all[5].item<double>();
  json line = {{"step", t.progress.step}, {"split", "valid"}};
  if (n <= 0) return line.dump();
  const double nll = all[2].item<double>() / n;
  line["nll"] = nll;
  line["positions"] = static_cast<int64_t>(n);
  if (lm.has_teacher()) {
    const double dist = all[1].item<double>() / n;
    const double alpha = t.cfg.run.stage == "text" ? 0.0 : t.cfg.loss.alpha;
    line["distillation"] = dist;
    line["misalignment"] = all[0].item<double>() / n;
    line["forgetting"] = nt > 0 ? all[4].item<double>() / nt : 0.0;
    line["loss"] = alpha * dist + (1.0 - alpha) * nll;
  } else {
    line["loss"] = nll;
  }
  return line.dump();
}

TrainResult Trainer::run(bool resume) {
  Impl& t = *impl_;
  const auto& tc = t.cfg.train;
  std::string cursor;
  if (t.is_root) {
    std::error_code ec;
    fs::create_directories(t.cfg.run.dir, ec);
    if (ec) throw IoError("cannot create run.dir " + t.cfg.run.dir.string() + ": " + ec.message());
    t.store.discard_all_staging();
  }
  t.comm->barrier();
  if (resume) {
    if (const auto c = t.resume()) cursor = *c;
  }
  if (t.is_root) {
    config::write_yaml(t.cfg, t.cfg.run.dir / "config.resolved.yaml");
    trim_metrics(t.cfg.run.dir, t.progress.step);
    t.metrics.open(t.cfg.run.dir / "metrics.jsonl", std::ios::app);
    if (!t.metrics) throw IoError("cannot open " + (t.cfg.run.dir / "metrics.jsonl").string());
  }
  t.source = t.parts.train(cursor);
  const int64_t world = t.comm->world_size();
  spdlog::info(
      "train: stage {} | {} | {} steps from step {} | {} micro-batch(es) of {} positions x {} "
      "rank(s) = {} positions per step (train.tokens_per_step = {}) | {} | {}",
      t.cfg.run.stage, t.flat->describe(), tc.steps, t.progress.step, t.accum,
      t.parts.micro_positions, world, t.accum * t.parts.micro_positions * world, tc.tokens_per_step,
      t.schedule.describe(),
      t.with_teacher ? "loss: alpha " + std::to_string(t.loss_fn.options().alpha) : "loss: NLL");

  TrainResult result;
  const auto start = Clock::now();
  t.run_start = start;
  double ema_seconds = 0, window_seconds = 0, window_wait = 0, window_flops = 0;
  int64_t window_tokens = 0, window_steps = 0;
  auto want = [](int64_t every, int64_t step) { return every > 0 && step % every == 0; };

  while (t.progress.step < tc.steps) {
    // 1. The step's micro-batches.
    const auto wait0 = Clock::now();
    std::vector<data::Batch> micro;
    micro.reserve(static_cast<size_t>(t.accum));
    for (int64_t i = 0; i < t.accum; ++i) {
      auto b = t.source->next();
      if (!b) break;
      micro.push_back(std::move(*b));
    }
    const double wait = seconds_since(wait0);
    const bool ended = t.comm->max(micro.size() < static_cast<size_t>(t.accum) ? 1.0 : 0.0) > 0;
    if (ended) {
      spdlog::warn("train: the training data ended at step {} (a non-repeating source)",
                   t.progress.step);
      break;
    }
    // 2-4. Forward, backward, update.
    StepStats s = t.step(micro);
    s.data_wait = wait;
    s.seconds += wait;
    s.step = ++t.progress.step;
    t.progress.tokens += s.tokens;
    if (s.skipped) {
      ++t.progress.skipped_steps;
      ++t.progress.bad_in_row;
      spdlog::warn(
          "train: step {} skipped: non-finite loss or gradients (loss {}, grad norm {}); "
          "{} in a row (train.max_bad_steps = {})",
          s.step, s.loss, s.grad_norm, t.progress.bad_in_row, tc.max_bad_steps);
      if (t.progress.bad_in_row >= tc.max_bad_steps) {
        throw Error("train: " + std::to_string(t.progress.bad_in_row) +
                    " non-finite steps in a row (train.max_bad_steps = " +
                    std::to_string(tc.max_bad_steps) + ") at step " + std::to_string(s.step) +
                    "; lower the learning rate or check the data; the last good checkpoint is in " +
                    t.store.dir().string());
      }
    } else {
      t.progress.bad_in_row = 0;
      result.last_loss = s.loss;
    }
    for (const auto& cb : t.callbacks) cb(s);

    // 5. Metrics, progress, validation, checkpoints.
    ema_seconds = ema_seconds == 0 ? s.seconds : 0.9 * ema_seconds + 0.1 * s.seconds;
    window_seconds += s.seconds, window_wait += s.data_wait, window_flops += s.flops;
    window_tokens += s.tokens, ++window_steps;
    if (t.is_root) {
      json line = {{"step", s.step},
                   {"time_s", t.progress.elapsed_s + seconds_since(start)},
                   {"loss", s.loss},
                   {"kl", s.kl},
                   {"nll", s.nll},
                   {"lr_adapter", s.lr_adapter},
                   {"lr_llm", s.lr_llm},
                   {"grad_norm", s.grad_norm},
                   {"positions", s.positions},
                   {"tokens", s.tokens},
                   {"tokens_per_s", s.tokens / std::max(1e-9, s.seconds)},
                   {"data_wait", s.data_wait / std::max(1e-9, s.seconds)},
                   {"skipped_items", t.source->skipped()}};
      if (tc.peak_tflops > 0) {
        line["mfu"] = s.flops / std::max(1e-9, s.seconds) / (tc.peak_tflops * 1e12 * world);
      }
      if (s.skipped) line["skipped"] = true;
      t.metrics << line.dump() << '\n';
      t.metrics.flush();
    }
    if (want(tc.log_every, s.step) || s.step == tc.steps) {
      const double tps = window_tokens / std::max(1e-9, window_seconds);
      std::string mfu;
      if (tc.peak_tflops > 0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, " | MFU %.1f%%",
                      100.0 * window_flops / std::max(1e-9, window_seconds) /
                          (tc.peak_tflops * 1e12 * world));
        mfu = buf;
      }
      spdlog::info(
          "step {}/{} | loss {:.4f} (kl {:.4f} nll {:.4f}) | lr {:.2e}/{:.2e} | gnorm {:.3f} | "
          "{} tok/s{} | data {:.1f}% | ETA {}",
          s.step, tc.steps, s.loss, s.kl, s.nll, s.lr_adapter, s.lr_llm, s.grad_norm,
          human_count(tps), mfu, 100.0 * window_wait / std::max(1e-9, window_seconds),
          human_duration(ema_seconds * static_cast<double>(tc.steps - s.step)));
      window_seconds = window_wait = window_flops = 0;
      window_tokens = window_steps = 0;
    }
    if (t.parts.valid && (want(tc.eval_every, s.step) || s.step == tc.steps)) {
      const std::string line = t.validate();
      if (t.is_root) {
        t.metrics << line << '\n';
        t.metrics.flush();
        spdlog::info("valid step {}: {}", s.step, line);
      }
    }
    const bool stop = t.comm->max(static_cast<double>(g_stop_signal.load())) > 0;
    const bool last = s.step == tc.steps;
    if (stop || last || want(tc.save_every, s.step) || s.step == t.schedule.branch_step()) {
      t.save(stop || last);
    }
    if (stop) {
      result.interrupted = true;
      result.signal = g_stop_signal.load();
      spdlog::warn(
          "train: stopped by signal {} after step {}; checkpoint saved; run again with "
          "--resume to continue",
          result.signal, s.step);
      break;
    }
  }
  result.step = t.progress.step;
  result.skipped_steps = t.progress.skipped_steps;
  return result;
}

}  // namespace salad::train
