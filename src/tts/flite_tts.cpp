// The flite backend: Flite 2.2's C library with the voices Debian's flite1-dev ships.
//
// Word timings. Flite splits the input on whitespace into Token items (features "whitespace",
// "prepunctuation", "name", "punc") and expands each into zero or more Word items: "123" becomes
// one hundred twenty three, "Dr." doctor, "(hello)" hello, "--" or "&" nothing or a word. A
// Word's time span is its segments' in the SylStructure relation: it starts where the segment
// before its first segment ends and ends with its last segment, so a pause ("pau" segment, which
// belongs to no word) always lies between words. The manifest words are the *input* words, not
// Flite's expansions: each whitespace-separated piece of the text is one word, its text verbatim
// (punctuation included: "dog.", "(hello)"), its span from its first Flite word's start to its last
// one's end. A piece that Flite speaks no word for (a lone "-") is glued to the previous word with
// a space (to the next one at the start). So the words, joined by spaces, are the
// whitespace-normalised text, and a text segment cut at word boundaries reads like the original.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "salad/audio/audio.h"
#include "salad/core/error.h"
#include "tts/backends.h"

extern "C" {
#include <flite/flite.h>

cst_voice* register_cmu_us_kal(const char* voxdir);
cst_voice* register_cmu_us_kal16(const char* voxdir);
cst_voice* register_cmu_us_awb(const char* voxdir);
cst_voice* register_cmu_us_rms(const char* voxdir);
cst_voice* register_cmu_us_slt(const char* voxdir);
}

namespace salad::tts::detail {

namespace {

struct FliteVoice {
  std::string name;
  cst_voice* voice = nullptr;
  float stretch = 1.0f;  ///< the voice's own duration_stretch, restored when rate_wpm is 0
};

// Flite keeps global state (the lexicon, voice features that synthesis reads and the rate
// changes): voices are registered once per process and every synthesis runs under one lock.
std::once_flag g_init_once;
std::vector<FliteVoice>* g_voices = nullptr;
std::mutex g_synth_mutex;

void init_flite() {
  std::call_once(g_init_once, [] {
    flite_init();
    auto* v = new std::vector<FliteVoice>;  // lives as long as the process (Flite's voices do)
    const std::pair<const char*, cst_voice* (*)(const char*)> table[] = {
        {"kal", register_cmu_us_kal},
        {"kal16", register_cmu_us_kal16},
        {"awb", register_cmu_us_awb},
        {"rms", register_cmu_us_rms},
        {"slt", register_cmu_us_slt}};
    for (const auto& [name, reg] : table) {
      FliteVoice fv;
      fv.name = name;
      fv.voice = reg(nullptr);
      if (fv.voice) fv.stretch = get_param_float(fv.voice->features, "duration_stretch", 1.0f);
      v->push_back(fv);
    }
    g_voices = v;
  });
}

/// Seconds from the utterance start where `word` (an item of any relation holding the word)
/// starts and ends; false when it has no segments (no pronunciation).
bool word_span(const cst_item* word, double& start, double& end) {
  const cst_item* w = item_as(word, "SylStructure");
  if (!w) return false;
  const cst_item* first_syl = item_daughter(w);
  const cst_item* last_syl = item_last_daughter(w);
  if (!first_syl || !last_syl) return false;
  const cst_item* first_phone = item_daughter(first_syl);
  const cst_item* last_phone = item_last_daughter(last_syl);
  if (!first_phone || !last_phone) return false;
  const cst_item* first_seg = item_as(first_phone, "Segment");
  const cst_item* last_seg = item_as(last_phone, "Segment");
  if (!first_seg || !last_seg) return false;
  const cst_item* before = item_prev(first_seg);
  start = before ? item_feat_float(before, "end") : 0.0;
  end = item_feat_float(last_seg, "end");
  return std::isfinite(start) && std::isfinite(end) && end >= start;
}

std::string feat(const cst_item* i, const char* name) {
  if (!item_feat_present(i, name)) return {};
  const char* s = item_feat_string(i, name);
  return s ? s : "";
}

/// The input words and their times (see the top of the file), in seconds at Flite's rate.
std::vector<data::Word> input_words(cst_utterance* utt) {
  struct Piece {
    std::string text;
    bool timed = false;
    double start = 0, end = 0;
  };
  std::vector<Piece> pieces;
  cst_relation* tokens = utt_relation(utt, "Token");
  for (const cst_item* tok = tokens ? relation_head(tokens) : nullptr; tok; tok = item_next(tok)) {
    const std::string text = feat(tok, "prepunctuation") + feat(tok, "name") + feat(tok, "punc");
    // A token glued to the previous one (Flite splits some symbols off) continues its word.
    if (pieces.empty() || !feat(tok, "whitespace").empty()) {
      pieces.push_back({});
    }
    Piece& p = pieces.back();
    p.text += text;
    for (const cst_item* w = item_daughter(tok); w; w = item_next(w)) {
      double s = 0, e = 0;
      if (!word_span(w, s, e)) continue;
      if (!p.timed) p.start = s;
      p.end = std::max(p.timed ? p.end : e, e);
      p.timed = true;
    }
  }
  std::vector<data::Word> words;
  std::string pending;  // untimed pieces before the first timed one
  for (const Piece& p : pieces) {
    if (p.text.empty()) continue;
    if (!p.timed) {
      if (words.empty()) {
        pending += (pending.empty() ? "" : " ") + p.text;
      } else {
        words.back().w += " " + p.text;
      }
      continue;
    }
    const double start = words.empty() ? p.start : std::max(p.start, words.back().end);
    words.push_back(
        {pending.empty() ? p.text : pending + " " + p.text, start, std::max(start, p.end)});
    pending.clear();
  }
  return words;
}

class FliteTts : public TtsBackend {
 public:
  explicit FliteTts(const TtsOptions& o) : options_(o) {
    init_flite();
    for (const auto& v : o.voices) find(v);  // unknown voices fail now, not per item
  }

  Speech synthesize(const std::string& text, const std::string& voice) override {
    check_text(text, options_.max_chars);
    const FliteVoice& v = find(voice);
    const std::string what = describe_item("flite", v.name, text);
    at::Tensor samples;
    int64_t rate = 0;
    std::vector<data::Word> words;
    {
      std::lock_guard<std::mutex> lock(g_synth_mutex);
      // 175 wpm is Flite's normal speed; duration_stretch scales every segment.
      const float stretch =
          options_.rate_wpm > 0 ? 175.0f / static_cast<float>(options_.rate_wpm) : v.stretch;
      feat_set_float(v.voice->features, "duration_stretch", stretch);
      cst_utterance* utt = flite_synth_text(text.c_str(), v.voice);
      if (!utt) throw TtsError("failed", what + ": Flite returned no utterance");
      struct Release {
        cst_utterance* u;
        ~Release() { delete_utterance(u); }
      } release{utt};
      const cst_wave* wave = utt_wave(utt);
      const int n = cst_wave_num_samples(wave);
      rate = cst_wave_sample_rate(wave);
      if (n <= 0 || rate <= 0) throw TtsError("empty audio", what + ": Flite produced no samples");
      const int channels = std::max(1, wave->num_channels);
      samples = at::empty({n}, at::kFloat);  // [L]
      float* out = samples.data_ptr<float>();
      for (int i = 0; i < n; ++i) {
        out[i] = static_cast<float>(wave->samples[static_cast<size_t>(i) * channels]) / 32768.0f;
      }
      words = input_words(utt);
    }
    if (words.empty()) {
      throw TtsError("empty audio", what + ": Flite spoke no word of the text (symbols only?)");
    }
    Speech sp = finish_speech(samples, rate, what);
    const double duration = sp.duration();
    for (auto& w : words) {
      w.start = std::min(w.start, duration);
      w.end = std::min(w.end, duration);
    }
    sp.words = std::move(words);
    return sp;
  }

  std::string name() const override { return "flite"; }
  bool parallel() const override { return false; }

 private:
  const FliteVoice& find(const std::string& voice) const {
    const std::string name = voice.empty() ? "kal" : voice;
    for (const auto& v : *g_voices) {
      if (v.name == name) {
        if (!v.voice) throw ConfigError("tts: Flite failed to register its voice '" + name + "'");
        return v;
      }
    }
    std::string known;
    for (const auto& v : *g_voices) known += (known.empty() ? "" : ", ") + v.name;
    throw ConfigError("tts.voices: unknown flite voice '" + name + "' (expected one of " + known +
                      ")");
  }

  TtsOptions options_;
};

}  // namespace

std::unique_ptr<TtsBackend> make_flite(const TtsOptions& o) {
  return std::make_unique<FliteTts>(o);
}

}  // namespace salad::tts::detail
