// make_tts(), what the backends share, and synthesize_manifest().
//
// synthesize_manifest() and crashes: a wav is written atomically before its manifest line, and a
// line is appended with one write and flushed, so after a crash the manifest holds complete lines
// whose wavs exist, plus perhaps one torn last line. On the next run every line that parses
// counts as done; a line that does not (the torn one) is dropped by rewriting the manifest
// atomically without it, and its item is synthesized again (its wav is overwritten).
#include "salad/tts/tts.h"

#include "salad/core/config.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "salad/audio/audio.h"
#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "salad/data/skips.h"
#include "tts/backends.h"

namespace salad::tts {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

double Speech::duration() const {
  return samples.defined() ? static_cast<double>(samples.size(0)) / kSampleRate : 0.0;
}

namespace detail {

void check_text(const std::string& text, int64_t max_chars) {
  if (text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) {
    throw TtsError("empty text", "the text is empty or only whitespace");
  }
  int64_t chars = 0;
  for (unsigned char c : text) chars += (c & 0xC0) != 0x80;  // UTF-8 lead bytes
  if (chars > max_chars) {
    throw TtsError("text too long",
                   "the text has " + std::to_string(chars) +
                       " characters, more than tts.max_chars = " + std::to_string(max_chars));
  }
}

Speech finish_speech(at::Tensor samples, int64_t rate, const std::string& what) {
  samples = samples.to(at::kFloat).contiguous().reshape({-1});  // [L]
  if (samples.numel() == 0) throw TtsError("empty audio", what + ": no samples");
  if (!samples.isfinite().all().item<bool>()) {
    throw TtsError("failed", what + ": the audio has NaN or infinite samples");
  }
  if (rate != kSampleRate) samples = audio::resample(samples, rate, kSampleRate);
  const float peak = samples.abs().max().item<float>();
  if (peak > 0) samples = samples * (0.95f / peak);
  Speech sp;
  sp.samples = samples.contiguous();
  return sp;
}

std::string describe_item(const std::string& backend, const std::string& voice,
                          const std::string& text) {
  constexpr size_t kShown = 40;
  size_t cut = std::min(text.size(), kShown);
  while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
  std::string shown = text.substr(0, cut);
  for (char& c : shown) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return backend + " (voice '" + (voice.empty() ? "default" : voice) + "') on \"" + shown +
         (cut < text.size() ? "...\"" : "\"");
}

}  // namespace detail

TtsOptions TtsOptions::from_config(const config::TtsConfig& cfg) {
  TtsOptions o;
  o.backend = cfg.backend;
  o.voices = cfg.voices;
  o.voice_block = cfg.voice_block;
  o.command = cfg.command;
  o.espeak_binary = cfg.espeak_binary;
  o.rate_wpm = cfg.rate_wpm;
  o.timeout_s = cfg.timeout_s;
  o.max_chars = cfg.max_chars;
  return o;
}

namespace {
void check_voice_block(const TtsOptions& o) {
  if (o.voice_block < 1) {
    throw ConfigError("tts.voice_block: expected a positive count of items per voice, found " +
                      std::to_string(o.voice_block));
  }
}
}  // namespace

std::unique_ptr<TtsBackend> make_tts(const TtsOptions& o) {
  if (!(o.timeout_s > 0)) {
    throw ConfigError("tts.timeout_s: expected a positive number of seconds, found " +
                      std::to_string(o.timeout_s));
  }
  if (o.max_chars <= 0) {
    throw ConfigError("tts.max_chars: expected a positive count, found " +
                      std::to_string(o.max_chars));
  }
  check_voice_block(o);
  if (o.rate_wpm < 0 || o.rate_wpm > 2000) {
    throw ConfigError("tts.rate_wpm: expected 0 (default) or words per minute in 1..2000, found " +
                      std::to_string(o.rate_wpm));
  }
  if (o.backend == "flite") return detail::make_flite(o);
  if (o.backend == "espeak") return detail::make_espeak(o);
  if (o.backend == "command") return detail::make_command(o);
  throw ConfigError("tts.backend: unknown backend '" + o.backend +
                    "' (expected flite, espeak or command)");
}

namespace {

/// A file name for `id`: the id itself when it is a safe name, otherwise its safe characters
/// plus a hash of the whole id (so "a/b" and "a_b" do not share a file).
std::string file_stem(const std::string& id) {
  auto safe = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  };
  constexpr size_t kMaxStem = 100;
  if (!id.empty() && id.size() <= kMaxStem && id[0] != '.' &&
      std::all_of(id.begin(), id.end(), safe)) {
    return id;
  }
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
  std::string stem;
  for (char c : id.substr(0, kMaxStem)) stem += safe(c) ? c : '_';
  if (!stem.empty() && stem[0] == '.') stem[0] = '_';
  char hex[20];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return stem + "-" + std::string(hex, 8);
}

double round_time(double s) { return std::round(s * 1e4) / 1e4; }

/// What an earlier run left in the manifest.
struct Existing {
  std::unordered_set<std::string> ids;
  double seconds = 0;
};

/// Reads `path` (when present); drops lines that do not parse (a torn last line after a crash)
/// by rewriting the file atomically without them.
Existing read_existing(const fs::path& path) {
  Existing ex;
  std::error_code ec;
  if (!fs::exists(path, ec)) return ex;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot read the manifest to resume from");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string content = ss.str();
  const fs::path base = fs::absolute(path).parent_path();
  std::string kept;
  int64_t dropped = 0, lineno = 0;
  size_t begin = 0;
  while (begin < content.size()) {
    size_t end = content.find('\n', begin);
    if (end == std::string::npos) end = content.size();
    const std::string line = content.substr(begin, end - begin);
    begin = end + 1;
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const data::Utterance u = data::parse_manifest_line(line, base);
      if (!ex.ids.insert(u.id).second) {
        throw data::ManifestLineError("duplicate id", "id '" + u.id + "' appeared before");
      }
      if (u.duration > 0) ex.seconds += u.duration;
      kept += line + "\n";
    } catch (const data::ManifestLineError& e) {
      ++dropped;
      spdlog::warn(
          "{}:{}: dropping a manifest line that cannot be used ({}); its item is "
          "synthesized again",
          path.string(), lineno, e.what());
    }
  }
  if (dropped > 0 || (!content.empty() && content.back() != '\n')) {
    write_file_atomic(path, kept);
  }
  return ex;
}

std::string manifest_line(const SynthItem& item, const std::string& stem, const Speech& sp,
                          const std::string& voice) {
  ordered_json j;
  j["id"] = item.id;
  j["audio"] = "audio/" + stem + ".wav";
  j["duration"] = sp.duration();
  j["text"] = item.text;
  if (!sp.words.empty()) {
    ordered_json words = ordered_json::array();
    for (const auto& w : sp.words) {
      words.push_back({{"w", w.w}, {"start", round_time(w.start)}, {"end", round_time(w.end)}});
    }
    j["words"] = std::move(words);
  }
  if (!voice.empty()) j["speaker"] = voice;
  j["source"] = item.source;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

SynthReport synthesize_manifest(TtsBackend& tts, const std::vector<SynthItem>& items,
                                const TtsOptions& tts_options, const SynthOptions& o,
                                const std::function<bool(double)>& stop_when) {
  check_voice_block(tts_options);
  if (o.out_dir.empty()) throw ConfigError("synthesize_manifest: out_dir is empty");
  fs::create_directories(o.out_dir / "audio");
  SynthReport report;
  report.manifest = o.out_dir / "manifest.jsonl";
  const Existing existing = read_existing(report.manifest);
  report.seconds_of_audio = existing.seconds;

  data::SkipCounter skips;
  std::vector<size_t> todo;
  std::unordered_set<std::string> seen;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string& id = items[i].id;
    if (id.empty()) {
      skips.record("bad id", "item " + std::to_string(i), "the item has an empty id");
    } else if (!seen.insert(id).second) {
      skips.record("duplicate id", "item '" + id + "'", "the id appeared before in the input");
    } else if (existing.ids.count(id)) {
      ++report.resumed;
    } else {
      todo.push_back(i);
    }
  }

  const int64_t skipped_before = skips.total();  // not among `todo`
  std::ofstream out(report.manifest, std::ios::binary | std::ios::app);
  if (!out) throw IoError(report.manifest.string() + ": cannot open the manifest for appending");

  std::mutex mu;  // the manifest stream, the report, the progress line, `error`
  std::exception_ptr error;
  std::atomic<size_t> next{0};
  // A budget already met by an earlier run starts nothing.
  std::atomic<bool> stop{stop_when && stop_when(report.seconds_of_audio)};
  const auto t0 = std::chrono::steady_clock::now();
  auto last_progress = t0;
  auto progress_line = [&] {  // with `mu` held
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cerr << "[" << tts.name() << "] " << report.done + skips.total() - skipped_before << "/"
              << todo.size() << " items (" << report.resumed << " resumed), "
              << fmt::format("{:.3f}", report.seconds_of_audio / 3600) << " h of audio, "
              << fmt::format("{:.1f}", report.done / std::max(el, 1e-9)) << " items/s, "
              << skips.summary() << "\n";
  };

  auto maybe_progress = [&] {  // with `mu` held
    const auto now = std::chrono::steady_clock::now();
    if (o.progress && now - last_progress > std::chrono::seconds(2)) {
      last_progress = now;
      progress_line();
    }
  };

  auto worker = [&] {
    while (!stop) {
      const size_t k = next.fetch_add(1);
      if (k >= todo.size()) break;
      const size_t i = todo[k];
      const SynthItem& item = items[i];
      const std::string voice =
          tts_options.voices.empty()
              ? ""
              : tts_options.voices[(i / static_cast<size_t>(tts_options.voice_block)) %
                                   tts_options.voices.size()];
      try {
        Speech sp;
        try {
          sp = tts.synthesize(item.text, voice);
        } catch (const TtsError& e) {
          skips.record(e.reason(), "item '" + item.id + "'", e.reason() + ": " + e.what());
          std::lock_guard<std::mutex> lock(mu);
          maybe_progress();
          continue;
        }
        const std::string stem = file_stem(item.id);
        audio::write_wav(o.out_dir / "audio" / (stem + ".wav"), sp.samples, kSampleRate);
        const std::string line = manifest_line(item, stem, sp, voice);
        std::lock_guard<std::mutex> lock(mu);
        out.write(line.data(), static_cast<std::streamsize>(line.size()));
        out.flush();
        if (!out) {
          throw IoError(report.manifest.string() + ": cannot append to the manifest (disk full?)");
        }
        ++report.done;
        report.seconds_of_audio += sp.duration();
        if (stop_when && stop_when(report.seconds_of_audio)) stop = true;
        maybe_progress();
      } catch (...) {
        // Not a synthesis failure (a full disk, a bug): stop everything and rethrow it.
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        stop = true;
      }
    }
  };

  const int64_t n_threads =
      tts.parallel() ? std::max<int64_t>(1, std::min<int64_t>(o.workers, todo.size())) : 1;
  if (n_threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> threads;
    for (int64_t t = 0; t < n_threads; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  }
  if (error) std::rethrow_exception(error);
  if (o.progress) progress_line();
  report.skipped = skips.by_reason();
  return report;
}

}  // namespace salad::tts
