// Text-to-speech for Stage II and for spoken benchmarks: one interface over three backends, all
// returning mono float32 audio at 24 kHz (the Mimi rate) and, when the backend knows them, word
// timings for word-level interleaving (otherwise utterance-level):
//   flite    Flite's C library (BSD-style licence; the embedded default, needs no files), voices
//            "kal" (8 kHz diphone, the default), "kal16" (16 kHz diphone), "awb", "rms", "slt"
//            (16 kHz clustergen, statistical parametric) as Debian's libflite1 ships them; word
//            timings from the utterance's segment relation, one per whitespace-separated input
//            word, its text verbatim ("123,", "(please)"), spanning the words Flite speaks for
//            it ("one hundred twenty three"); pauses lie between words; a piece Flite speaks
//            nothing for ("--") is glued to a neighbour, so the words joined by spaces are the
//            whitespace-normalised text. Fast (about 500x real time for kal, 85x for the
//            others, on one core), serialised: one item at a time.
//   espeak   the espeak-ng command-line program (GPL-3: run as a separate process, never
//            linked); voices like "en-us" (the default), "en+f3", "en-gb-x-rp+m4", checked
//            against `espeak-ng --voices` (espeak-ng itself silently falls back to its default
//            voice); no word timings.
//   command  any external program given as a template with {text}, {text_file}, {out_wav},
//            {out_json} and {voice}, e.g. Piper or Kokoro; when {out_json} is in the template and
//            the program writes it, [{"w","start","end"}] gives the word timings. Run as
//            `/bin/sh -c TEMPLATE` with every substituted value single-quoted, so any text
//            reaches the program verbatim; other braces (`${HOME}`) are left to the shell.
// External programs run in a process group of their own, killed as a whole (SIGKILL) at the
// timeout and after they exit, so nothing they start outlives the item.
// Errors are TtsError with a reason tag (counted per reason by synthesize_manifest()).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "salad/data/manifest.h"

namespace salad::config {
struct TtsConfig;
}

namespace salad::tts {

constexpr int64_t kSampleRate = 24000;

/// A failed synthesis; reason() is one of "empty text", "text too long", "failed", "timeout",
/// "empty audio", "bad timings".
class TtsError : public std::runtime_error {
 public:
  TtsError(std::string reason, const std::string& msg)
      : std::runtime_error(msg), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

struct TtsOptions {
  std::string backend = "flite";    ///< flite | espeak | command
  std::vector<std::string> voices;  ///< cycled over items (empty: the backend's default)
  /// Item i gets voices[(i / voice_block) % voices.size()]: runs of consecutive items share a
  /// voice, so untimed utterances (chained per speaker by the loader) form multi-utterance
  /// documents.
  int64_t voice_block = 1;
  std::string command;  ///< command backend: the template (see above)
  std::string espeak_binary = "espeak-ng";
  int64_t rate_wpm = 0;      ///< espeak -s / flite duration stretch; 0: default
  double timeout_s = 60.0;   ///< per item, for external programs
  int64_t max_chars = 2000;  ///< longer texts are refused ("text too long")

  /// The recipe's `tts:` section.
  static TtsOptions from_config(const config::TtsConfig& cfg);
};

/// One synthesized utterance.
struct Speech {
  at::Tensor samples;             ///< [L] float32 at kSampleRate, peak-normalised to <= 0.95
  std::vector<data::Word> words;  ///< empty when the backend gives no timings
  double duration() const;        ///< seconds
};

class TtsBackend {
 public:
  virtual ~TtsBackend() = default;
  /// Synthesizes `text` with `voice` ("" = default). Thread-safe (serialised internally where
  /// the engine is not). Throws TtsError; ConfigError for a voice the backend does not have.
  virtual Speech synthesize(const std::string& text, const std::string& voice) = 0;
  virtual std::string name() const = 0;
  /// Whether several synthesize() calls can usefully run at once (external processes).
  virtual bool parallel() const = 0;
};

/// The backend `o.backend` names. Throws ConfigError for an unknown backend, an unknown flite or
/// espeak voice in `o.voices`, a command template without {out_wav}, an espeak binary not found
/// on PATH, or a timeout_s / max_chars / rate_wpm out of range.
std::unique_ptr<TtsBackend> make_tts(const TtsOptions& o);

/// One text to synthesize.
struct SynthItem {
  std::string id;  ///< unique; names the wav file (as is when [A-Za-z0-9._-]+, otherwise
                   ///< its safe characters plus a hash of the id)
  std::string text;
  std::string source;  ///< copied into the manifest's "source"
};

struct SynthOptions {
  /// Wavs go to out_dir/audio/, the manifest to out_dir/manifest.jsonl.
  std::filesystem::path out_dir;
  int64_t workers = 2;   ///< parallel items (when the backend is parallel())
  bool progress = true;  ///< a progress line on stderr
};

struct SynthReport {
  int64_t done = 0;             ///< synthesized now
  int64_t resumed = 0;          ///< already in the manifest from an earlier, interrupted run
  double seconds_of_audio = 0;  ///< total in the manifest (done + resumed)
  std::map<std::string, int64_t> skipped;  ///< reason -> count
  std::filesystem::path manifest;
};

/// Synthesizes `items` into out_dir: each success appends its manifest line (flushed) after its
/// wav (24 kHz, 16-bit) is written atomically; a rerun skips ids already in the manifest, so an
/// interrupted synthesis resumes without redoing finished items. Voices cycle over items by
/// index, in runs of voice_block. Failing items (TtsError) are logged, counted by reason and
/// skipped, and retried by a rerun; any other exception (a full disk, ConfigError for an unknown
/// voice) ends the run and is rethrown. A manifest line that does not parse (torn by a crash
/// mid-write) is dropped by rewriting the manifest without it, and its item is redone. Items whose
/// id is empty or repeats an earlier item's are skipped ("bad id", "duplicate id"). `stop_when`
/// (optional) is asked with the manifest's audio seconds before the first item (a budget met by an
/// earlier run starts nothing) and after each success; once true, no new item starts (items already
/// in flight are finished and written). With a parallel() backend and workers > 1, manifest lines
/// appear in completion order, not item order. Progress: a line on stderr every ~2 s.
SynthReport synthesize_manifest(TtsBackend& tts, const std::vector<SynthItem>& items,
                                const TtsOptions& tts_options, const SynthOptions& o,
                                const std::function<bool(double)>& stop_when = {});

}  // namespace salad::tts
