// salad-synth: synthesizes a text file into a speech manifest (wavs + manifest.jsonl) with one of
// the TTS backends (include/salad/tts/tts.h). Resumable: re-running with the same --out skips
// the ids already in its manifest. Ctrl-C lets the items in flight finish, then stops (a second
// Ctrl-C stops at once; the manifest stays usable either way).
#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/app.h"
#include "salad/tts/tts.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::atomic<bool> g_stop{false};
void on_signal(int sig) {
  g_stop = true;
  std::signal(sig, SIG_DFL);
}

/// The texts of `path`: JSONL {"id", "text", "source"?} (decided by the first non-blank line
/// starting with '{') or plain UTF-8 lines (id = line number), as text corpora are read. Bad
/// JSONL lines are logged and skipped; `limit` > 0 keeps the first N texts.
std::vector<salad::tts::SynthItem> read_texts(const fs::path& path, int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw salad::IoError(path.string() + ": cannot open the input texts");
  const std::string default_source = path.stem().string();
  std::vector<salad::tts::SynthItem> items;
  std::string line;
  int64_t lineno = 0, bad = 0;
  int jsonl = -1;
  while (std::getline(in, line) && (limit <= 0 || static_cast<int64_t>(items.size()) < limit)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    if (jsonl < 0) jsonl = line[first] == '{';
    salad::tts::SynthItem item{std::to_string(lineno), line, default_source};
    if (jsonl == 1) {
      try {
        const json j = json::parse(line);
        item.text = j.at("text").get<std::string>();
        if (j.contains("id") && j["id"].is_number_integer()) {
          item.id = std::to_string(j["id"].get<int64_t>());
        } else if (j.contains("id")) {
          item.id = j["id"].get<std::string>();
        }
        if (j.contains("source") && !j["source"].is_null()) {
          item.source = j["source"].get<std::string>();
        }
      } catch (const std::exception& e) {
        if (++bad <= 5) {
          spdlog::warn("{}:{}: skipped: expected {{\"id\", \"text\": string, \"source\"?}} ({})",
                       path.string(), lineno, e.what());
        }
        continue;
      }
    }
    items.push_back(std::move(item));
  }
  if (bad > 0) spdlog::warn("{}: {} bad lines skipped", path.string(), bad);
  if (items.empty()) throw salad::DataError(path.string() + ": no text to synthesize");
  return items;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"salad-synth: synthesize texts into a speech manifest (wavs + manifest.jsonl)"};
  std::string input, out_dir;
  salad::tts::TtsOptions topts;
  salad::tts::SynthOptions sopts;
  int64_t limit = 0;
  bool quiet = false;
  app.add_option("--input,-i", input,
                 "Texts: JSONL {\"id\", \"text\", \"source\"?} or plain lines (id = line number)")
      ->required();
  app.add_option("--out,-o", out_dir, "Output folder (created, or resumed)")->required();
  app.add_option("--backend", topts.backend, "flite | espeak | command")
      ->check(CLI::IsMember({"flite", "espeak", "command"}));
  app.add_option("--voice", topts.voices,
                 "Voice, repeatable: cycled over items (flite: kal, kal16, awb, rms, slt; espeak: "
                 "en-us, en+f3, ...)");
  app.add_option("--voice-block", topts.voice_block,
                 "Consecutive items per voice (untimed speech is chained into documents per "
                 "speaker: use at least data.utterance_group, 8)")
      ->check(CLI::PositiveNumber);
  app.add_option("--command", topts.command,
                 "command backend: template with {text}, {text_file}, {out_wav}, {out_json}, "
                 "{voice} (each substituted shell-quoted)");
  app.add_option("--espeak-binary", topts.espeak_binary, "espeak backend: the program");
  app.add_option("--workers", sopts.workers, "Items at once (espeak/command)")
      ->check(CLI::Range(1, 256));
  app.add_option("--timeout", topts.timeout_s, "Per-item time limit of a program (s)")
      ->check(CLI::PositiveNumber);
  app.add_option("--rate", topts.rate_wpm, "Speaking rate, words per minute (0: default)")
      ->check(CLI::Range(0, 2000));
  app.add_option("--max-chars", topts.max_chars, "Longer texts are skipped")
      ->check(CLI::PositiveNumber);
  app.add_option("--limit", limit, "Synthesize only the first N texts (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--quiet,-q", quiet, "No progress line");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    auto tts = salad::tts::make_tts(topts);
    const auto items = read_texts(input, limit);
    sopts.out_dir = out_dir;
    sopts.progress = !quiet;
    spdlog::info("{}: {} texts to {} with {}", input, items.size(), out_dir, tts->name());
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const auto r = salad::tts::synthesize_manifest(*tts, items, topts, sopts,
                                                   [](double) { return g_stop.load(); });
    int64_t skipped = 0;
    std::string reasons;
    for (const auto& [reason, n] : r.skipped) {
      skipped += n;
      reasons += (reasons.empty() ? "" : ", ") + reason + ": " + std::to_string(n);
    }
    std::cout << "done: " << r.done << "\nresumed: " << r.resumed
              << "\nhours of audio: " << fmt::format("{:.4f}", r.seconds_of_audio / 3600)
              << "\nskipped: " << skipped << (reasons.empty() ? "" : " (" + reasons + ")")
              << "\nmanifest: " << r.manifest.string() << "\n";
    if (g_stop) {
      spdlog::warn("interrupted: run the same command again to resume");
      return 130;
    }
    if (r.done + r.resumed == 0) {
      throw salad::DataError(input + ": no text could be synthesized (" + reasons +
                             "); see the warnings above");
    }
    return salad::kExitOk;
  });
}
