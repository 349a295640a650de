// Audio loading and fbank throughput, in seconds of audio per wall-clock second (x realtime).
//   decode: FLAC 44.1 kHz stereo, WAV 16 kHz mono, Ogg Vorbis and MP3 44.1 kHz stereo, read whole
//           at the file's rate (libsndfile + down-mix only) and resampled to 24 kHz (+ libsoxr),
//           and as 10 s segments at offsets (a manifest's access pattern: seek + decode +
//           resample);
//   fbank:  FbankEncoder::encode on a batch of 10 s clips at 24 kHz.
// Test files are synthesised into a temp folder (a chord with vibrato plus noise, so the lossless
// codecs cannot compress it to nothing). One thread unless --threads. Run through
// scripts/bench_audio.sh.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "salad/audio/audio.h"
#include "salad/core/error.h"
#include "salad/models/fbank.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using salad::audio::AudioFormat;
using salad::audio::LoadOptions;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// [C, L] test signal: a few partials with vibrato plus -40 dB noise, peak ~0.5.
at::Tensor test_signal(int64_t rate, int64_t seconds, int64_t channels) {
  at::manual_seed(0);
  const int64_t n = rate * seconds;
  const at::Tensor t = at::arange(n, at::kDouble) / static_cast<double>(rate);
  std::vector<at::Tensor> chans;
  for (int64_t c = 0; c < channels; ++c) {
    at::Tensor x = at::zeros({n}, at::kDouble);
    for (double f : {180.0, 360.0, 540.0, 1250.0, 2600.0}) {
      const at::Tensor vib = 3.0 * at::sin(2 * M_PI * 5.0 * t + c);
      x += (0.1 * 180.0 / f) * at::sin(2 * M_PI * (f * t + vib));
    }
    x += 0.01 * at::randn({n}, at::kDouble);
    chans.push_back(x.to(at::kFloat));
  }
  return at::stack(chans);
}

struct Best {
  double seconds = 1e300;
  void add(double s) { seconds = std::min(seconds, s); }
};

int usage() {
  std::fprintf(stderr,
               "usage: salad_bench_audio [--seconds N] [--reps N] [--threads N] [--batch N]\n"
               "  --seconds: length of each test file (default 60)\n"
               "  --reps: timed repetitions, best reported (default 3)\n"
               "  --threads: intra-op threads for the fbank encoder (default 1)\n"
               "  --batch: clips of 10 s per fbank batch (default 8)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t seconds = 60, reps = 3, threads = 1, batch = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> int64_t { return i + 1 < argc ? std::atoll(argv[++i]) : 0; };
    if (a == "--seconds") {
      seconds = next();
    } else if (a == "--reps") {
      reps = next();
    } else if (a == "--threads") {
      threads = next();
    } else if (a == "--batch") {
      batch = next();
    } else {
      return usage();
    }
  }
  if (seconds < 10 || reps < 1 || threads < 1 || batch < 1) return usage();
  try {
    at::set_num_threads(static_cast<int>(threads));
    std::string tmpl = (fs::temp_directory_path() / "salad-bench-audio-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw salad::IoError("mkdtemp failed");
    const fs::path dir = tmpl;

    struct File {
      std::string label;
      fs::path path;
    };
    std::vector<File> files;
    {
      const at::Tensor st44 = test_signal(44100, seconds, 2);
      const at::Tensor mono16 = test_signal(16000, seconds, 1)[0];
      salad::audio::write_audio(dir / "a.flac", st44, 44100, AudioFormat::kFlac);
      salad::audio::write_wav(dir / "b.wav", mono16, 16000);
      salad::audio::write_audio(dir / "c.ogg", st44, 44100, AudioFormat::kOggVorbis);
      salad::audio::write_audio(dir / "d.mp3", st44, 44100, AudioFormat::kMp3);
      files = {{"FLAC 44.1 kHz stereo 16-bit", dir / "a.flac"},
               {"WAV 16 kHz mono 16-bit", dir / "b.wav"},
               {"Ogg Vorbis 44.1 kHz stereo", dir / "c.ogg"},
               {"MP3 44.1 kHz stereo", dir / "d.mp3"}};
    }
    std::printf(
        "audio: %lld s per file, best of %lld; decode/resample on 1 thread, fbank on %lld\n",
        static_cast<long long>(seconds), static_cast<long long>(reps),
        static_cast<long long>(threads));
    std::printf("%-30s %14s %14s %16s\n", "file", "decode (x RT)", "+ 24 kHz (x RT)",
                "10 s cuts (x RT)");
    for (const auto& f : files) {
      Best native, to24, cuts;
      for (int64_t r = 0; r < reps; ++r) {
        LoadOptions o;
        o.sample_rate = 0;
        auto t0 = Clock::now();
        salad::audio::load_audio(f.path, o);
        native.add(seconds_since(t0));
        t0 = Clock::now();
        salad::audio::load_audio(f.path);
        to24.add(seconds_since(t0));
        t0 = Clock::now();
        for (int64_t s = 0; s + 10 <= seconds; s += 10) {
          LoadOptions c;
          c.offset = static_cast<double>(s) + 0.37;
          c.duration = std::min(10.0, static_cast<double>(seconds) - c.offset);
          salad::audio::load_audio(f.path, c);
        }
        cuts.add(seconds_since(t0));
      }
      const double audio_s = static_cast<double>(seconds);
      std::printf("%-30s %14.0f %14.0f %16.0f\n", f.label.c_str(), audio_s / native.seconds,
                  audio_s / to24.seconds, (audio_s - 0.37) / cuts.seconds);
    }

    // fbank on a [batch, 10 s] batch; lengths spread over 8.0 .. 10 s like a bucketed loader.
    salad::models::FbankEncoder enc;
    const int64_t L = 10 * 24000;
    const at::Tensor wave = test_signal(24000, 10, batch).contiguous();  // [batch, L]
    std::vector<int64_t> lens;
    for (int64_t b = 0; b < batch; ++b)
      lens.push_back(L - b * (2 * 24000) / std::max<int64_t>(1, batch));
    const at::Tensor lengths = at::tensor(lens, at::kLong);
    double total = 0;
    for (auto l : lens) total += static_cast<double>(l) / 24000.0;
    enc.encode(wave, lengths);  // warm-up
    Best fb;
    for (int64_t r = 0; r < reps; ++r) {
      const auto t0 = Clock::now();
      enc.encode(wave, lengths);
      fb.add(seconds_since(t0));
    }
    std::printf("fbank encode, batch %lld x 10 s, %lld thread(s): %.0f x RT (%.1f ms per batch)\n",
                static_cast<long long>(batch), static_cast<long long>(threads), total / fb.seconds,
                1e3 * fb.seconds);
    fs::remove_all(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "salad_bench_audio: %s\n", e.what());
    return 1;
  }
  return 0;
}
