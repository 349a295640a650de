// salad-encode: runs the frozen speech encoder over a speech manifest and writes the feature
// cache training reads (docs/feature-cache.md). Resumable: re-running with the same --out skips
// what is cached; Ctrl-C writes the pending shard and exits.
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <iostream>
#include <mutex>
#include <thread>

#include "common/app.h"
#include "salad/audio/audio.h"
#include "salad/core/blas_info.h"
#include "salad/core/config.h"
#include "salad/data/feature_cache.h"
#include "salad/data/manifest.h"
#include "salad/models/speech_encoder.h"

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct Decoded {
  size_t index;
  at::Tensor samples;  // [L] at the encoder's rate
};

/// Decodes manifest items on worker threads into a bounded queue; failures are counted.
class Decoder {
 public:
  Decoder(const std::vector<salad::data::Utterance>& items, int64_t rate, int workers,
          size_t capacity, salad::data::SkipCounter& skips)
      : items_(items), rate_(rate), capacity_(capacity), skips_(skips) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { run(); });
  }
  ~Decoder() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      closing_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  /// Next decoded item; false when every item was decoded or skipped.
  bool pop(Decoded& out) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return !queue_.empty() || finished_ == threads_.size(); });
    if (queue_.empty()) return false;
    out = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return true;
  }

 private:
  void run() {
    for (;;) {
      const size_t i = next_.fetch_add(1);
      if (i >= items_.size() || g_stop) break;
      const auto& u = items_[i];
      salad::audio::LoadOptions o;
      o.sample_rate = rate_;
      o.offset = u.offset;
      o.duration = u.duration;
      try {
        auto a = salad::audio::load_audio(u.audio, o);
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return queue_.size() < capacity_ || closing_; });
        if (closing_) break;
        queue_.push_back({i, std::move(a.samples)});
        cv_.notify_all();
      } catch (const salad::IoError& e) {
        skips_.record(std::filesystem::exists(u.audio) ? "unreadable audio" : "missing audio",
                      u.where, e.what());
      } catch (const salad::Error& e) {
        skips_.record("bad audio", u.where, e.what());
      }
    }
    std::lock_guard<std::mutex> lk(mu_);
    ++finished_;
    cv_.notify_all();
  }

  const std::vector<salad::data::Utterance>& items_;
  int64_t rate_;
  size_t capacity_;
  salad::data::SkipCounter& skips_;
  std::atomic<size_t> next_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Decoded> queue_;
  size_t finished_ = 0;
  bool closing_ = false;
  std::vector<std::thread> threads_;
};

std::string clock_text(double s) {
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"salad-encode: encode a speech manifest into a feature cache"};
  std::string manifest_path, out_dir, config_path;
  std::vector<std::string> overrides;
  salad::config::EncoderConfig enc;
  int threads = 0, workers = 2;
  double batch_seconds = 60.0, max_skip_fraction = -1;
  int64_t shard_mb = 256;
  app.add_option("--manifest,-m", manifest_path, "Speech manifest (JSONL, DESIGN §4)")->required();
  app.add_option("--out,-o", out_dir, "Cache folder (created, or resumed)")->required();
  app.add_option("--config,-c", config_path,
                 "Take the encoder section (and data.max_skip_fraction) from a recipe");
  app.add_option("--set", overrides, "Override a recipe key (with --config)");
  auto* type_opt = app.add_option("--encoder", enc.type, "mimi | fbank")
                       ->check(CLI::IsMember({"mimi", "fbank"}));
  auto* ckpt_opt = app.add_option("--checkpoint", enc.checkpoint,
                                  "Mimi weights (Kyutai .safetensors or HF folder)");
  auto* out_opt = app.add_option("--output", enc.output, "latent | quantized | codes")
                      ->check(CLI::IsMember({"latent", "quantized", "codes"}));
  auto* nq_opt = app.add_option("--n-q", enc.n_q, "Codebooks for quantized/codes");
  app.add_option("--threads", threads,
                 "LibTorch intra-op threads for the encoder (0: every available CPU)");
  app.add_option("--workers", workers, "Audio decoding threads")->check(CLI::Range(1, 256));
  app.add_option("--batch-seconds", batch_seconds, "Audio per encoder batch (seconds)");
  app.add_option("--shard-mb", shard_mb, "Shard size (MB)");
  app.add_option(
      "--max-skip-fraction", max_skip_fraction,
      "Fail when more items are bad (default: the recipe's data.max_skip_fraction, 0.05)");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    double allowed_skips = 0.05;
    if (!config_path.empty()) {
      const auto cfg = salad::config::load(config_path, overrides);
      salad::config::EncoderConfig from_cfg = cfg.encoder;
      // Flags given on the command line win over the recipe.
      if (*type_opt) from_cfg.type = enc.type;
      if (*ckpt_opt) from_cfg.checkpoint = enc.checkpoint;
      if (*out_opt) from_cfg.output = enc.output;
      if (*nq_opt) from_cfg.n_q = enc.n_q;
      enc = from_cfg;
      allowed_skips = cfg.data.max_skip_fraction;
    }
    if (max_skip_fraction >= 0) allowed_skips = max_skip_fraction;
    salad::configure_threads(threads);
    salad::log_blas_info();

    auto encoder = salad::models::make_speech_encoder(enc);
    auto manifest = salad::data::read_manifest(manifest_path);
    salad::data::FeatureCacheMeta meta;
    meta.encoder = encoder->describe();
    meta.feature_dim = encoder->feature_dim();
    meta.dtype = enc.type == "mimi" && enc.output == "codes" ? "I64" : "F32";
    meta.samples_per_frame = encoder->samples_per_frame();
    meta.sample_rate = encoder->sample_rate();
    salad::data::FeatureCacheWriter writer(out_dir, meta, shard_mb << 20);

    std::vector<salad::data::Utterance> todo;
    for (auto& u : manifest.utterances) {
      if (!writer.contains(u.id)) todo.push_back(std::move(u));
    }
    spdlog::info("{}: {} utterances, {} already cached, {} to encode with {}; manifest: {}",
                 out_dir, manifest.utterances.size(), manifest.utterances.size() - todo.size(),
                 todo.size(), meta.encoder, manifest.skipped.summary());

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    salad::data::SkipCounter skips;
    skips.merge(manifest.skipped);
    const bool tty = ::isatty(STDERR_FILENO);
    const auto t0 = std::chrono::steady_clock::now();
    auto last_report = t0;
    int64_t done = 0;
    double audio_seconds = 0;
    const double rate = static_cast<double>(encoder->sample_rate());
    {
      Decoder decoder(todo, encoder->sample_rate(), workers, 64, skips);
      std::vector<Decoded> batch;
      int64_t batch_samples = 0;
      auto encode_batch = [&] {
        if (batch.empty()) return;
        int64_t longest = 0;
        for (const auto& d : batch) longest = std::max<int64_t>(longest, d.samples.size(0));
        at::Tensor wave = torch::zeros({static_cast<int64_t>(batch.size()), longest});  // [B, L]
        at::Tensor lengths = torch::empty({static_cast<int64_t>(batch.size())}, torch::kLong);
        for (size_t b = 0; b < batch.size(); ++b) {
          const int64_t n = batch[b].samples.size(0);
          wave[b].narrow(0, 0, n).copy_(batch[b].samples);
          lengths[b] = n;
        }
        const auto out = encoder->encode(wave, lengths);
        for (size_t b = 0; b < batch.size(); ++b) {
          const int64_t f = out.frames[b].item<int64_t>();
          writer.add(todo[batch[b].index].id, out.features[b].narrow(0, 0, f).clone());  // [F, D]
          audio_seconds += static_cast<double>(batch[b].samples.size(0)) / rate;
          ++done;
        }
        batch.clear();
        batch_samples = 0;
      };
      Decoded d;
      while (!g_stop && decoder.pop(d)) {
        if (d.samples.size(0) == 0) {
          skips.record("empty audio", todo[d.index].where, "no samples");
          continue;
        }
        batch_samples += d.samples.size(0);
        batch.push_back(std::move(d));
        if (static_cast<double>(batch_samples) >= batch_seconds * rate) encode_batch();
        const auto now = std::chrono::steady_clock::now();
        if (now - last_report > std::chrono::seconds(tty ? 1 : 10)) {
          last_report = now;
          const double el = std::chrono::duration<double>(now - t0).count();
          const int64_t handled = done + skips.total() - manifest.skipped.total();
          const double frac = todo.empty() ? 1.0 : static_cast<double>(handled) / todo.size();
          const std::string line =
              "[" + std::to_string(handled) + "/" + std::to_string(todo.size()) + "] " +
              std::to_string(static_cast<int>(100 * frac)) + "%  " +
              std::to_string(static_cast<int>(audio_seconds / std::max(el, 1e-9))) +
              " s audio/s  ETA " + clock_text(frac > 0 ? el / frac - el : 0) + "  skipped " +
              std::to_string(skips.total());
          if (tty)
            std::cerr << "\r" << line << std::flush;
          else
            spdlog::info("{}", line);
        }
      }
      if (!g_stop) encode_batch();
    }
    writer.flush();
    if (tty) std::cerr << "\n";
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    spdlog::info(
        "encoded {} utterances ({:.2f} h of audio) in {:.1f} s ({:.1f} s audio/s); {}; cache {} "
        "now holds {}",
        done, audio_seconds / 3600, el, audio_seconds / std::max(el, 1e-9), skips.summary(),
        out_dir, writer.finished());
    if (g_stop) {
      spdlog::warn("interrupted: finished shards are kept; run the same command again to resume");
      return 130;
    }
    skips.check(manifest.lines, allowed_skips, manifest_path);
    return salad::kExitOk;
  });
}
