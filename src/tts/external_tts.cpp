// The backends that run another program per item: espeak (the espeak-ng CLI; GPL-3, so it is
// only ever executed, never linked or included) and command (a user's template run by /bin/sh).
// Each item gets a private scratch folder for the text file, the outputs and the captured stderr.
#include <nlohmann/json.hpp>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include "salad/audio/audio.h"
#include "salad/core/error.h"
#include "tts/backends.h"
#include "tts/subprocess.h"

namespace salad::tts::detail {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

void write_text_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text << '\n';
  out.close();
  if (!out) throw IoError(path.string() + ": cannot write the text for the TTS program");
}

/// Throws TtsError("failed") for a non-zero exit, with the end of the program's stderr.
void check_exit(const ProcessResult& r, const std::string& program, const std::string& what) {
  if (r.exit_code == 0) return;
  std::string tail = r.stderr_tail;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
  throw TtsError("failed",
                 what + ": " + program + " exited with code " + std::to_string(r.exit_code) +
                     (tail.empty() ? " (no stderr)" : "; the end of its stderr:\n" + tail));
}

/// The program's wav at 24 kHz. Throws TtsError "empty audio" (missing, empty or no samples)
/// or "failed" (not a readable audio file).
Speech read_output(const fs::path& wav, const std::string& program, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(wav, ec) || fs::file_size(wav, ec) == 0) {
    throw TtsError("empty audio", what + ": " + program + " wrote no audio to " + wav.string());
  }
  audio::Audio a;
  try {
    a = audio::load_audio(wav, {});
  } catch (const DataError& e) {
    throw TtsError("empty audio", what + ": " + program + "'s output: " + e.what());
  } catch (const IoError& e) {
    throw TtsError("failed",
                   what + ": " + program + "'s output is not a readable audio file: " + e.what());
  }
  return finish_speech(a.samples, a.sample_rate, what);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// The names `espeak-ng --voices` lists (languages, voice names, voice files and their base
/// names, the other languages a voice speaks), lower-cased. espeak-ng quietly falls back to its
/// default voice for a name it does not know, so salad checks them itself.
std::set<std::string> espeak_voice_names(const fs::path& binary, double timeout_s) {
  ScratchDir dir;
  const std::string what = "listing the voices of " + binary.string();
  const ProcessResult r = run_process({binary.string(), "--voices"}, timeout_s, dir / "stderr.txt",
                                      what, dir / "stdout.txt");
  check_exit(r, binary.filename().string(), what);
  std::ifstream in(dir / "stdout.txt");
  std::set<std::string> names;
  std::string line;
  std::getline(in, line);  // Pty Language Age/Gender VoiceName File Other Languages
  while (std::getline(in, line)) {
    std::istringstream cols(line);
    std::string pty, language, gender, name, file, other;
    if (!(cols >> pty >> language >> gender >> name >> file)) continue;
    names.insert({lower(language), lower(name), lower(file), lower(fs::path(file).filename())});
    while (cols >> other) {
      if (other.front() == '(') names.insert(lower(other.substr(1)));
    }
  }
  return names;
}

class EspeakTts : public TtsBackend {
 public:
  EspeakTts(const TtsOptions& o, fs::path binary)
      : options_(o),
        binary_(std::move(binary)),
        voices_(espeak_voice_names(binary_, options_.timeout_s)) {
    if (voices_.empty()) {
      throw ConfigError(binary_.string() +
                        " --voices listed no voice (is espeak-ng-data installed?)");
    }
    for (const auto& v : options_.voices) check_voice(v);
  }

  Speech synthesize(const std::string& text, const std::string& voice) override {
    check_text(text, options_.max_chars);
    const std::string v = voice.empty() ? "en-us" : voice;
    check_voice(v);
    const std::string what = describe_item("espeak", v, text);
    ScratchDir dir;
    write_text_file(dir / "text.txt", text);
    std::vector<std::string> argv = {binary_.string(), "-v", v};
    if (options_.rate_wpm > 0) {
      argv.push_back("-s");
      argv.push_back(std::to_string(options_.rate_wpm));
    }
    argv.insert(argv.end(), {"-w", (dir / "out.wav").string(), "-f", (dir / "text.txt").string()});
    const ProcessResult r = run_process(argv, options_.timeout_s, dir / "stderr.txt", what);
    check_exit(r, binary_.filename().string(), what);
    return read_output(dir / "out.wav", binary_.filename().string(), what);
  }

  std::string name() const override { return "espeak"; }
  bool parallel() const override { return true; }

 private:
  /// A voice is a language or voice name, optionally with a "+variant" (en+f3, en-gb-x-rp+m4).
  void check_voice(const std::string& voice) const {
    const std::string base = lower(voice.substr(0, voice.find('+')));
    if (!voices_.count(base)) {
      throw ConfigError("tts.voices: espeak-ng has no voice '" + base + "' (in '" + voice +
                        "'); `" + binary_.string() + " --voices` lists them (en-us, en-gb, ...)");
    }
  }

  TtsOptions options_;
  fs::path binary_;
  std::set<std::string> voices_;
};

/// Replaces each known {placeholder} of `tmpl` by its value, shell-quoted; anything else
/// (including "${VAR}") is left as written.
std::string expand(const std::string& tmpl,
                   const std::vector<std::pair<std::string, std::string>>& values) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    bool replaced = false;
    if (tmpl[i] == '{') {
      for (const auto& [key, value] : values) {
        const std::string ph = "{" + key + "}";
        if (tmpl.compare(i, ph.size(), ph) == 0) {
          out += shell_quote(value);
          i += ph.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += tmpl[i++];
  }
  return out;
}

/// Word timings from the program's JSON: [{"w": string, "start": s, "end": s}, ...], checked
/// like a manifest's words against the audio's duration. Throws TtsError("bad timings").
std::vector<data::Word> read_timings(const fs::path& path, double duration,
                                     const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  data::Utterance u;
  u.duration = duration;
  try {
    const json j = json::parse(ss.str());
    if (!j.is_array())
      throw std::runtime_error("expected a JSON array, found " + std::string(j.type_name()));
    for (size_t k = 0; k < j.size(); ++k) {
      const json& w = j[k];
      if (!w.is_object() || !w.contains("w") || !w["w"].is_string() || !w.contains("start") ||
          !w["start"].is_number() || !w.contains("end") || !w["end"].is_number()) {
        throw std::runtime_error("[" + std::to_string(k) +
                                 "]: expected {\"w\": string, \"start\": seconds, \"end\": "
                                 "seconds}, found " +
                                 w.dump().substr(0, 80));
      }
      u.words.push_back(
          {w["w"].get<std::string>(), w["start"].get<double>(), w["end"].get<double>()});
    }
    data::validate_words(u);
  } catch (const std::exception& e) {
    throw TtsError("bad timings", what + ": bad timings in " + path.string() + ": " + e.what());
  }
  return u.words;
}

class CommandTts : public TtsBackend {
 public:
  explicit CommandTts(const TtsOptions& o)
      : options_(o), wants_json_(o.command.find("{out_json}") != std::string::npos) {}

  Speech synthesize(const std::string& text, const std::string& voice) override {
    check_text(text, options_.max_chars);
    const std::string what = describe_item("command", voice, text);
    ScratchDir dir;
    const fs::path text_file = dir / "text.txt", wav = dir / "out.wav", js = dir / "out.json";
    write_text_file(text_file, text);
    const std::string cmd = expand(options_.command, {{"text", text},
                                                      {"text_file", text_file.string()},
                                                      {"out_wav", wav.string()},
                                                      {"out_json", js.string()},
                                                      {"voice", voice}});
    const ProcessResult r =
        run_process({"/bin/sh", "-c", cmd}, options_.timeout_s, dir / "stderr.txt", what);
    check_exit(r, "the command", what);
    Speech sp = read_output(wav, "the command", what);
    std::error_code ec;
    if (wants_json_ && fs::exists(js, ec)) sp.words = read_timings(js, sp.duration(), what);
    return sp;
  }

  std::string name() const override { return "command"; }
  bool parallel() const override { return true; }

 private:
  TtsOptions options_;
  bool wants_json_;
};

}  // namespace

std::unique_ptr<TtsBackend> make_espeak(const TtsOptions& o) {
  const fs::path binary = find_on_path(o.espeak_binary);
  if (binary.empty()) {
    throw ConfigError("tts.espeak_binary: '" + o.espeak_binary +
                      "' not found on PATH (install Debian's espeak-ng package, or choose "
                      "tts.backend: flite)");
  }
  return std::make_unique<EspeakTts>(o, binary);
}

std::unique_ptr<TtsBackend> make_command(const TtsOptions& o) {
  if (o.command.find("{out_wav}") == std::string::npos) {
    throw ConfigError(
        "tts.command: the template must contain {out_wav} (where the program writes "
        "its wav), found '" +
        o.command + "'");
  }
  return std::make_unique<CommandTts>(o);
}

}  // namespace salad::tts::detail
