// Tokens/s and MFU of a full salad training step (issue #6's benchmark): the forward of the
// student (adapter + trainable Qwen2) and of the frozen teacher, the chunked distillation loss,
// backward, gradient clipping and AdamW, run by the trainer's own Trainer::step(), on batches
// packed by data::make_batch from synthetic documents (about half of the student positions are
// speech frames). scripts/bench_train_reference.py runs the same model, loss and optimizer step
// written in plain PyTorch on exactly these batches and initial weights (--dump writes them), and
// scripts/bench_train.sh compares the two.
//
//   salad_bench_train [--preset tiny|mid] [--threads N] [--warmup 2] [--steps 6] [--seed 1]
//                     [--dump DIR] [--profile 0|1]
//
// Reported: median step time, tokens/s (non-padding student positions per second), MFU (the
// model FLOPs StepStats::flops reports, over the fp32 GEMM peak measured in this run by a
// 2048^3 matmul, best of 5, before and after the steps; the higher of the two is the
// denominator), peak RSS. --profile 1 also builds a second copy of the model and, after every
// trainer step, times the phases of the same step on the same batch (student forward, teacher
// forward, loss forward, loss backward, model backward, norm + clip, AdamW, zero_grad) in a copy
// of Trainer::step's sequence; then the loss's three GEMM shapes and one [N, V] log_softmax
// alone.
//
// Shape legend: B rows, T student positions, N loss positions, D width, V vocabulary.
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "salad/core/blas_info.h"
#include "salad/core/config.h"
#include "salad/core/safetensors.h"
#include "salad/data/batch.h"
#include "salad/data/document.h"
#include "salad/data/packing.h"
#include "salad/dist/comm.h"
#include "salad/loss/distillation.h"
#include "salad/models/adapter.h"
#include "salad/models/qwen2.h"
#include "salad/models/speech_lm.h"
#include "salad/train/flat_adamw.h"
#include "salad/train/trainer.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
using salad::data::Batch;
using salad::data::Document;
using salad::data::Modality;
using salad::data::Segment;

constexpr int64_t kFeatureDim = 640;  // encoder feature width (De)
constexpr double kAlpha = 0.5;
constexpr int64_t kChunk = 1024;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

/// Minor page faults of the process so far (a fresh large buffer faults in every 4 KiB page).
double minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_minflt);
}

/// Best of `reps` fp32 2048^3 matmuls, GFLOP/s.
double gemm_peak_gflops(int reps = 5) {
  torch::NoGradGuard no_grad;
  const int64_t n = 2048;
  const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  (void)at::mm(a, b);
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    (void)at::mm(a, b);
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * n * n * n / best / 1e9;
}

struct Preset {
  salad::models::Qwen2Options decoder;
  salad::models::AdapterOptions adapter;
  int64_t context = 0, rows = 2;
};

Preset make_preset(const std::string& name) {
  Preset p;
  auto& d = p.decoder;
  auto& a = p.adapter;
  d.vocab_size = 151936;
  d.tie_word_embeddings = true;
  a.input_dim = kFeatureDim;
  if (name == "tiny") {
    d.hidden_size = 256, d.num_hidden_layers = 4, d.num_attention_heads = 4;
    d.num_key_value_heads = 2, d.intermediate_size = 704;
    a.hidden_size = 192, a.num_layers = 2, a.num_heads = 3, a.num_kv_heads = 1;
    a.intermediate_size = 512;
    p.context = 512;
  } else if (name == "mid") {
    d.hidden_size = 512, d.num_hidden_layers = 8, d.num_attention_heads = 8;
    d.num_key_value_heads = 2, d.intermediate_size = 1408;
    a.hidden_size = 384, a.num_layers = 4, a.num_heads = 6, a.num_kv_heads = 2;
    a.intermediate_size = 1024;
    p.context = 1024;
  } else {
    throw std::runtime_error("unknown preset '" + name + "' (tiny | mid)");
  }
  a.output_dim = d.hidden_size;
  d.validate();
  a.validate();
  return p;
}

/// A random decoder with Hugging Face's init (matrices N(0, 0.02), biases 0, norms 1).
salad::models::Qwen2 random_decoder(const salad::models::Qwen2Options& o) {
  salad::models::Qwen2 m(o);
  torch::NoGradGuard no_grad;
  for (auto& p : m->named_parameters()) {
    const std::string& k = p.key();
    if (k.size() >= 5 && k.compare(k.size() - 5, 5, ".bias") == 0) {
      p.value().zero_();
    } else if (k.find("norm") == std::string::npos) {
      p.value().normal_(0.0, 0.02);
    }
  }
  return m;
}

salad::models::Qwen2 copy_of(salad::models::Qwen2& src) {
  salad::models::Qwen2 dst(src->options());
  torch::NoGradGuard no_grad;
  auto from = src->named_parameters();
  for (auto& p : dst->named_parameters()) p.value().copy_(from[p.key()]);
  return dst;
}

/// The speech LM of a preset: student = copy of a random teacher, adapter seeded.
std::shared_ptr<salad::models::SpeechLM> make_lm(const Preset& p, uint64_t seed) {
  torch::manual_seed(seed);
  salad::models::Qwen2 teacher = random_decoder(p.decoder);
  salad::models::Qwen2 student = copy_of(teacher);
  torch::manual_seed(seed + 1);
  salad::models::Adapter adapter(p.adapter);
  return std::make_shared<salad::models::SpeechLM>(student, adapter, teacher);
}

/// A document of 2-8 alternating segments that takes at most `room` student positions: text
/// segments of 20-60 tokens; speech segments of 5-15 words, 5 frames (12.5 Hz, 0.4 s) and 4/3
/// tokens per word, wrapped in the two markers. The last segment is cut to the room left.
Document random_document(std::mt19937_64& rng, int64_t vocab, int64_t room,
                         const std::string& name) {
  auto uniform = [&](int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  auto tokens = [&](int64_t n) {
    std::vector<int64_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = uniform(0, vocab - 1);
    return t;
  };
  Document d;
  d.name = "bench/" + name;
  d.source = "bench";
  const int64_t segments = uniform(2, 8);
  bool speech = rng() % 2 == 0;
  int64_t used = 0;
  for (int64_t s = 0; s < segments && used < room; ++s, speech = !speech) {
    const int64_t left = room - used;
    Segment seg;
    if (speech) {
      if (left < 3) break;  // two markers and a frame
      const int64_t frames = std::min(5 * uniform(5, 15), left - 2);
      const int64_t words = std::max<int64_t>(1, frames / 5);
      seg.modality = Modality::kSpeech;
      seg.tokens = tokens(words + words / 3);
      seg.features = at::randn({frames, kFeatureDim});  // [F, De]
    } else {
      seg.modality = Modality::kText;
      seg.tokens = tokens(std::min(uniform(20, 60), left));
    }
    used += seg.student_length();
    d.segments.push_back(std::move(seg));
  }
  return d;
}

/// Batch k: `rows` rows filled to exactly `context` student positions with random documents,
/// packed by the real RowPacker and make_batch.
Batch make_bench_batch(const Preset& p, uint64_t seed, int64_t k) {
  std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(k));
  torch::manual_seed(seed * 7919 + static_cast<uint64_t>(k));
  salad::data::RowPacker packer(p.context, p.rows);
  int64_t n = 0;
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t room = p.context; room > 0;) {
      Document d = random_document(rng, p.decoder.vocab_size, room,
                                   "b" + std::to_string(k) + "d" + std::to_string(n++));
      if (d.segments.empty()) continue;
      room -= d.student_length();
      packer.add(std::move(d));
    }
  }
  std::vector<std::vector<Document>> rows = packer.flush();
  if (static_cast<int64_t>(rows.size()) != p.rows) throw std::runtime_error("packing: row count");
  salad::data::PackOptions o;
  o.context = p.context;
  o.feature_dim = kFeatureDim;
  return salad::data::make_batch(rows, o);
}

salad::config::SaladConfig make_config(const Preset& p, const fs::path& run_dir) {
  salad::config::SaladConfig c;
  c.run.dir = run_dir;
  c.run.stage = "1";
  c.train.steps = 1000000;
  c.train.tokens_per_step = p.rows * p.context;  // one micro-batch per step
  c.train.micro_batch_sequences = p.rows;
  c.data.context = p.context;
  c.loss.alpha = kAlpha;
  c.loss.chunk_size = kChunk;
  return c;  // optim.*: the defaults
}

/// The batch tensors under "b{k}.<field>" for the PyTorch reference.
void add_batch(salad::safetensors::NamedTensors& out, const Batch& b, int64_t k) {
  const std::string p = "b" + std::to_string(k) + ".";
  auto rows = [&](const std::string& side, const salad::data::SequenceBatch& s) {
    out.emplace_back(p + side + ".input_ids", s.input_ids);
    out.emplace_back(p + side + ".position_ids", s.position_ids);
    out.emplace_back(p + side + ".document_ids", s.document_ids);
    out.emplace_back(p + side + ".attention_mask", s.attention_mask);
  };
  rows("student", b.student);
  rows("teacher", b.teacher);
  out.emplace_back(p + "kinds", b.kinds);
  out.emplace_back(p + "speech.features", b.speech.features);
  out.emplace_back(p + "speech.lengths", b.speech.lengths);
  out.emplace_back(p + "speech.slots", b.speech.slots);
  out.emplace_back(p + "loss_index", b.loss_index);
  out.emplace_back(p + "teacher_loss_index", b.teacher_loss_index);
  out.emplace_back(p + "targets", b.targets);
}

json options_json(const Preset& p, const salad::config::SaladConfig& c, int64_t warmup,
                  int64_t steps) {
  const auto& d = p.decoder;
  const auto& a = p.adapter;
  return {{"decoder",
           {{"vocab_size", d.vocab_size},
            {"hidden_size", d.hidden_size},
            {"intermediate_size", d.intermediate_size},
            {"num_hidden_layers", d.num_hidden_layers},
            {"num_attention_heads", d.num_attention_heads},
            {"num_key_value_heads", d.num_key_value_heads},
            {"rope_theta", d.rope_theta},
            {"rms_norm_eps", d.rms_norm_eps}}},
          {"adapter",
           {{"input_dim", a.input_dim},
            {"hidden_size", a.hidden_size},
            {"num_layers", a.num_layers},
            {"num_heads", a.num_heads},
            {"num_kv_heads", a.num_kv_heads},
            {"intermediate_size", a.intermediate_size},
            {"rope_theta", a.rope_theta},
            {"rms_norm_eps", a.rms_norm_eps},
            {"causal", a.causal}}},
          {"context", p.context},
          {"rows", p.rows},
          {"alpha", c.loss.alpha},
          {"optim",
           {{"lr_adapter", c.optim.lr_adapter},
            {"lr_llm", c.optim.lr_llm},
            {"weight_decay", c.optim.weight_decay},
            {"beta1", c.optim.beta1},
            {"beta2", c.optim.beta2},
            {"eps", c.optim.eps},
            {"grad_clip", c.optim.grad_clip},
            {"warmup_steps", c.optim.warmup_steps}}},
          {"warmup", warmup},
          {"steps", steps}};
}

// ---- --profile: the phases of one step ----

struct Phases {
  double student = 0, teacher = 0, loss_fwd = 0, loss_bwd = 0, model_bwd = 0, norm_clip = 0,
         optimizer = 0, zero_grad = 0;
  double total() const {
    return student + teacher + loss_fwd + loss_bwd + model_bwd + norm_clip + optimizer + zero_grad;
  }
};

/// Trainer::step's sequence for one micro-batch, with a timer between the parts. The loss is
/// applied to a detached copy of the student's hidden states so that its backward (chunked
/// logits recompute, the head gradient) and the model's backward are timed apart; the gradients
/// are the same.
Phases profiled_step(salad::models::SpeechLM& lm, salad::train::FlatParams& flat,
                     salad::train::FlatAdamW& opt, const salad::loss::DistillationLoss& loss_fn,
                     const Batch& b, const std::map<std::string, double>& lr, double clip) {
  Phases ph;
  lm.train(true);
  auto t = Clock::now();
  auto lap = [&t] {
    const double s = seconds_since(t);
    t = Clock::now();
    return s;
  };
  const at::Tensor hs_all = lm.student_hidden(b);  // [B, T, D]
  const at::Tensor hs =
      hs_all.reshape({-1, hs_all.size(2)}).index_select(0, b.loss_index);  // [N, D]
  ph.student = lap();
  const at::Tensor ht_all = lm.teacher_hidden(b);  // [B, Tt, D]
  const at::Tensor ht =
      ht_all.reshape({-1, ht_all.size(2)}).index_select(0, b.teacher_loss_index);  // [N, D]
  ph.teacher = lap();
  const at::Tensor leaf = hs.detach().requires_grad_();
  const auto parts =
      loss_fn(leaf, lm.student()->lm_head_weight(), ht, lm.teacher()->lm_head_weight(), b.targets,
              static_cast<double>(b.loss_positions()));
  ph.loss_fwd = lap();
  parts.loss.backward();
  ph.loss_bwd = lap();
  hs.backward(leaf.grad());
  ph.model_bwd = lap();
  {
    torch::NoGradGuard no_grad;
    const double norm = flat.grad_norm();
    if (clip > 0.0 && norm > clip) flat.grads().mul_(clip / (norm + 1e-6));
    ph.norm_clip = lap();
    opt.step(lr);
    ph.optimizer = lap();
  }
  flat.zero_grad();
  ph.zero_grad = lap();
  return ph;
}

/// A second copy of the model with its own flat parameters and AdamW, stepped by profiled_step.
class Profiler {
 public:
  Profiler(const Preset& p, uint64_t seed, const salad::config::SaladConfig& cfg)
      : p_(p), cfg_(cfg), lm_(make_lm(p, seed)), loss_fn_(loss_options()) {
    std::vector<salad::models::ParamGroup> groups = lm_->trainable_groups();
    flat_ = std::make_unique<salad::train::FlatParams>(groups, c10::kCPU, 1);
    salad::train::AdamWOptions ao;
    ao.beta1 = cfg.optim.beta1, ao.beta2 = cfg.optim.beta2, ao.eps = cfg.optim.eps;
    ao.weight_decay = cfg.optim.weight_decay;
    opt_ = std::make_unique<salad::train::FlatAdamW>(*flat_, ao, 0, flat_->padded());
  }

  Phases step(const Batch& b) {
    const std::map<std::string, double> lr = {{"adapter", cfg_.optim.lr_adapter * 0.01},
                                              {"llm", cfg_.optim.lr_llm * 0.01}};
    return profiled_step(*lm_, *flat_, *opt_, loss_fn_, b, lr, cfg_.optim.grad_clip);
  }

  /// Median phases of `all`, next to the median Trainer::step time of the same batches.
  void report(const std::vector<Phases>& all, double trainer_median) const {
    auto med = [&](double Phases::*f) {
      std::vector<double> v;
      for (const auto& ph : all) v.push_back(ph.*f);
      return median(v);
    };
    std::vector<double> totals;
    for (const auto& ph : all) totals.push_back(ph.total());
    const double total = median(totals);
    std::printf(
        "\nprofile (a copy of Trainer::step with timers, each run right after the trainer's step "
        "on the same batch; median of %zu steps, seconds):\n",
        all.size());
    const std::pair<const char*, double Phases::*> rows[] = {
        {"student forward (embeddings, adapter, decoder, gather)", &Phases::student},
        {"teacher forward (no grad)", &Phases::teacher},
        {"loss forward (chunked logits, KL, NLL and both gradients)", &Phases::loss_fwd},
        {"loss backward (scales the stored gradients)", &Phases::loss_bwd},
        {"model backward (decoder, adapter, embedding)", &Phases::model_bwd},
        {"grad norm + clip", &Phases::norm_clip},
        {"AdamW (flat)", &Phases::optimizer},
        {"zero_grad (flat)", &Phases::zero_grad}};
    for (const auto& [name, f] : rows) {
      const double s = med(f);
      std::printf("  %-58s %8.4f  %5.1f%%\n", name, s, 100.0 * s / total);
    }
    std::printf("  %-58s %8.4f  (Trainer::step, interleaved: %.4f)\n", "total", total,
                trainer_median);
  }

  /// The loss's GEMMs and one [N, V] log_softmax alone, at N of `b` (one chunk: N <= chunk).
  void kernels(const Batch& b) const {
    torch::NoGradGuard no_grad;
    const int64_t N = b.loss_positions(), D = p_.decoder.hidden_size, V = p_.decoder.vocab_size;
    const at::Tensor W = lm_->student()->lm_head_weight().detach();
    const at::Tensor h = at::randn({N, D}), g = at::randn({N, V});
    at::Tensor gw = at::zeros({V, D});
    auto time_of = [](const std::function<void()>& f) {
      f();
      std::vector<double> v;
      for (int i = 0; i < 3; ++i) {
        const auto t0 = Clock::now();
        f();
        v.push_back(seconds_since(t0));
      }
      return median(v);
    };
    const double flop = 2.0 * N * D * V;
    const double t_logits = time_of([&] { (void)at::mm(h, W.t()); });
    const double t_dh = time_of([&] { (void)at::mm(g, W); });
    const double t_dw = time_of([&] { gw.addmm_(g.t(), h); });
    std::printf(
        "loss GEMMs at N=%lld, D=%lld, V=%lld (%.1f GFLOP each): logits [N,D]x[D,V] %.4f s "
        "(%.0f GFLOP/s), dH [N,V]x[V,D] %.4f s (%.0f), dW += [V,N]x[N,D] %.4f s (%.0f)\n",
        (long long)N, (long long)D, (long long)V, flop / 1e9, t_logits, flop / t_logits / 1e9, t_dh,
        flop / t_dh / 1e9, t_dw, flop / t_dw / 1e9);
    const double t_fresh = time_of([&] { (void)at::log_softmax(g, 1); });
    at::Tensor out = at::empty_like(g);
    const double t_reused = time_of([&] { at::_log_softmax_out(out, g, 1, false); });
    std::printf(
        "one [N, V] log_softmax (%.0f MB): into a fresh buffer %.4f s, into a reused one %.4f s "
        "(the difference is page faults of the fresh allocation)\n",
        4.0 * N * V / 1e6, t_fresh, t_reused);
  }

 private:
  static salad::loss::DistillationOptions loss_options() {
    salad::loss::DistillationOptions lo;
    lo.alpha = kAlpha;
    lo.chunk_size = kChunk;
    return lo;
  }
  Preset p_;
  salad::config::SaladConfig cfg_;
  std::shared_ptr<salad::models::SpeechLM> lm_;
  salad::loss::DistillationLoss loss_fn_;
  std::unique_ptr<salad::train::FlatParams> flat_;
  std::unique_ptr<salad::train::FlatAdamW> opt_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string preset_name = "tiny";
  int threads = 2;
  int64_t warmup = 2, steps = 6;
  uint64_t seed = 1;
  fs::path dump;
  bool profile = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--preset")
      preset_name = v;
    else if (k == "--threads")
      threads = std::stoi(v);
    else if (k == "--warmup")
      warmup = std::stoll(v);
    else if (k == "--steps")
      steps = std::stoll(v);
    else if (k == "--seed")
      seed = std::stoull(v);
    else if (k == "--dump")
      dump = v;
    else if (k == "--profile")
      profile = v != "0";
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "options come in pairs: --name value\n");
    return 2;
  }
  try {
    const int used_threads = salad::configure_threads(threads);
    const Preset p = make_preset(preset_name);
    const salad::BlasInfo blas = salad::detect_blas();
    std::printf("BLAS: %s; torch threads %d (at::get_num_threads %d)\n", blas.description.c_str(),
                used_threads, at::get_num_threads());
    const double peak_before = gemm_peak_gflops();
    std::printf("fp32 GEMM peak (2048^3, best of 5) before: %.1f GFLOP/s\n", peak_before);

    const fs::path run_dir =
        dump.empty() ? fs::temp_directory_path() / ("salad_bench_train_" + preset_name) : dump;
    fs::create_directories(run_dir);
    auto lm = make_lm(p, seed);
    std::vector<Batch> batches;
    for (int64_t k = 0; k < warmup + steps; ++k) batches.push_back(make_bench_batch(p, seed, k));
    const salad::config::SaladConfig cfg = make_config(p, run_dir / "run");
    {
      const Batch& b = batches.front();
      const auto& s = b.stats;
      const int64_t tokens = s.text_tokens + s.speech_frames + s.markers;
      std::printf(
          "preset %s: decoder D %lld x %lld layers, %lld/%lld heads, I %lld, V %lld (tied); "
          "adapter %lld x %lld layers, %lld/%lld heads, MLP %lld, De %lld; %lld rows x %lld\n",
          preset_name.c_str(), (long long)p.decoder.hidden_size,
          (long long)p.decoder.num_hidden_layers, (long long)p.decoder.num_attention_heads,
          (long long)p.decoder.num_key_value_heads, (long long)p.decoder.intermediate_size,
          (long long)p.decoder.vocab_size, (long long)p.adapter.hidden_size,
          (long long)p.adapter.num_layers, (long long)p.adapter.num_heads,
          (long long)p.adapter.num_kv_heads, (long long)p.adapter.intermediate_size,
          (long long)kFeatureDim, (long long)p.rows, (long long)p.context);
      std::printf(
          "batch 0: T %lld, Tt %lld, %lld documents, %lld tokens = %lld text + %lld speech frames "
          "(%.0f%%) + %lld markers, %lld padding, %lld speech segments (F %lld), N = %lld loss "
          "positions\n",
          (long long)b.student.length(), (long long)b.teacher.length(), (long long)s.documents,
          (long long)tokens, (long long)s.text_tokens, (long long)s.speech_frames,
          100.0 * s.speech_frames / tokens, (long long)s.markers, (long long)s.padding,
          (long long)b.speech.segments(), (long long)b.speech.features.size(1),
          (long long)b.loss_positions());
    }
    if (!dump.empty()) {
      salad::safetensors::NamedTensors w = lm->state();  // before training: the initial weights
      salad::safetensors::save(dump / "weights.safetensors", w);
      salad::safetensors::NamedTensors bt;
      for (size_t k = 0; k < batches.size(); ++k)
        add_batch(bt, batches[k], static_cast<int64_t>(k));
      salad::safetensors::save(dump / "batches.safetensors", bt,
                               {{"options", options_json(p, cfg, warmup, steps).dump()}});
    }

    salad::train::TrainParts parts;
    parts.lm = lm;
    parts.train = [](const std::string&) -> std::unique_ptr<salad::train::BatchSource> {
      return nullptr;  // Trainer::step() gets its batches directly
    };
    parts.train_adapter = true;
    parts.micro_positions = p.rows * p.context;
    auto comm = std::make_shared<salad::dist::Comm>(salad::dist::CommOptions{});
    salad::train::Trainer trainer(cfg, parts, comm);

    // --profile: the phases of a copy of the step, run right after each trainer step on the same
    // batch, so that both see the same machine load (the trainer's numbers then include the
    // second model's memory).
    std::unique_ptr<Profiler> profiler;
    if (profile) profiler = std::make_unique<Profiler>(p, seed, cfg);
    std::vector<Phases> phases;

    std::vector<double> secs, tps, mfu_in_run, faults;
    json steps_json = json::array();
    for (size_t k = 0; k < batches.size(); ++k) {
      const double faults0 = minor_faults();
      const salad::train::StepStats s = trainer.step({batches[k]});
      const double step_faults = minor_faults() - faults0;
      if (profiler) {
        const Phases ph = profiler->step(batches[k]);
        if (static_cast<int64_t>(k) >= warmup) phases.push_back(ph);
      }
      std::printf(
          "step %zu%s: %.3f s, %lld tokens, %lld loss positions, loss %.6f (kl %.6f nll %.6f), "
          "grad norm %.6f, %.2f GFLOP, %.0f tok/s, %.0f k minor page faults\n",
          k + 1, static_cast<int64_t>(k) < warmup ? " (warm-up)" : "", s.seconds,
          (long long)s.tokens, (long long)s.positions, s.loss, s.kl, s.nll, s.grad_norm,
          s.flops / 1e9, s.tokens / s.seconds, step_faults / 1e3);
      std::fflush(stdout);
      steps_json.push_back({{"seconds", s.seconds},
                            {"tokens", s.tokens},
                            {"positions", s.positions},
                            {"flops", s.flops},
                            {"loss", s.loss},
                            {"kl", s.kl},
                            {"nll", s.nll},
                            {"grad_norm", s.grad_norm}});
      if (static_cast<int64_t>(k) < warmup) continue;
      secs.push_back(s.seconds);
      faults.push_back(step_faults);
      tps.push_back(s.tokens / s.seconds);
      mfu_in_run.push_back(s.flops / s.seconds);
    }
    const double rss = peak_rss_mib();
    const double peak_after = gemm_peak_gflops();
    const double peak = std::max(peak_before, peak_after);
    const double doc_peak = threads == 1 ? 152.0 : 306.0;  // docs/performance.md, idle machine
    const double flops_per_s = median(mfu_in_run);
    std::printf("fp32 GEMM peak after: %.1f GFLOP/s\n", peak_after);
    std::printf(
        "\nsalad %s, %d threads: median step %.3f s over %zu steps, %.0f tokens/s, %.1f model "
        "GFLOP/s, MFU %.1f%% of the measured peak (%.0f GFLOP/s), %.1f%% of the idle peak (%.0f), "
        "peak RSS %.0f MiB, %.0f k minor page faults per step\n",
        preset_name.c_str(), used_threads, median(secs), secs.size(), median(tps),
        flops_per_s / 1e9, 100.0 * flops_per_s / (peak * 1e9), peak,
        100.0 * flops_per_s / (doc_peak * 1e9), doc_peak, rss, median(faults) / 1e3);
    const json result = {{"impl", "salad"},
                         {"preset", preset_name},
                         {"threads", used_threads},
                         {"median_step_s", median(secs)},
                         {"tokens_per_s", median(tps)},
                         {"model_gflops_per_s", flops_per_s / 1e9},
                         {"gemm_peak_before", peak_before},
                         {"gemm_peak_after", peak_after},
                         {"mfu", flops_per_s / (peak * 1e9)},
                         {"mfu_idle_peak", flops_per_s / (doc_peak * 1e9)},
                         {"peak_rss_mib", rss},
                         {"minor_faults_per_step", median(faults)},
                         {"steps", steps_json}};
    std::printf("RESULT %s\n", result.dump().c_str());
    if (!dump.empty()) std::ofstream(dump / "salad_result.json") << result.dump(2) << '\n';
    if (profiler) {
      profiler->report(phases, median(secs));
      profiler->kernels(batches.back());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "salad_bench_train: %s\n", e.what());
    return 1;
  }
  return 0;
}
