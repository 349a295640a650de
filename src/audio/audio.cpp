// Reading and writing audio files with libsndfile (see audio.h for the contract).
#include "salad/audio/audio.h"

#include <sndfile.h>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"

namespace salad::audio {

namespace fs = std::filesystem;

namespace {

// Frames per sf_readf_float / sf_writef_* call: bounds the interleaved scratch buffer of
// multi-channel reads (64 KiB per channel) whatever the file's length.
constexpr int64_t kChunkFrames = 16384;

// Audio that MP3 and Opus reads decode and discard before their offset (see load_audio).
// Measured with libsndfile 1.2.0 on a tone: after a cold MP3 seek (mpg123 1.31, LAME's default
// encoding) the output is wrong for up to 122 / 267 / 208 / 89 / 91 ms at 8 / 16 / 24 / 44.1 /
// 48 kHz; after an Opus seek with libsndfile's own pre-roll, 16 and 24 kHz mono cuts still
// differed from the full decode by up to 1.4e-3. With this pre-roll both match the full decode
// (to 1e-7) at every offset tried.
constexpr double kPrerollSeconds = 1.0;

// Closes the handle at scope exit.
class SndFile {
 public:
  explicit SndFile(SNDFILE* f) : f_(f) {}
  SndFile(const SndFile&) = delete;
  SndFile& operator=(const SndFile&) = delete;
  ~SndFile() {
    if (f_) sf_close(f_);
  }
  SNDFILE* get() const { return f_; }
  // Closes now and returns libsndfile's status (0 = ok): a writer must see it, since the
  // encoders flush their last blocks and patch headers on close.
  int close() {
    const int rc = f_ ? sf_close(f_) : 0;
    f_ = nullptr;
    return rc;
  }

 private:
  SNDFILE* f_;
};

std::string seconds_text(double s) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g s", s);
  return buf;
}

std::string format_name(int format) {
  SF_FORMAT_INFO fi{};
  fi.format = format;
  if (sf_command(nullptr, SFC_GET_FORMAT_INFO, &fi, sizeof(fi)) != 0 || !fi.name) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "0x%x", static_cast<unsigned>(format));
    return buf;
  }
  return fi.name;
}

const char* kReadableFormats =
    "WAV, RF64, W64, AIFF, CAF, FLAC, Ogg Vorbis, Ogg Opus, MP3 and the other libsndfile formats";

// Opens `path` for reading; throws IoError for a missing, unreadable or undecodable file.
SNDFILE* open_for_read(const fs::path& path, SF_INFO& info) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    throw IoError(path.string() + ": cannot read: " + ec.message());
  }
  if (!fs::exists(st)) throw IoError(path.string() + ": no such audio file");
  if (fs::is_directory(st)) throw IoError(path.string() + ": is a folder, not an audio file");
  info = SF_INFO{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (!f) {
    // sf_strerror(nullptr) is libsndfile's last failed open, kept in one process-wide slot: with
    // several loader threads failing at once the reason may be another file's; the name is ours.
    throw IoError(path.string() + ": cannot decode as audio (libsndfile: " + sf_strerror(nullptr) +
                  "); readable formats: " + kReadableFormats);
  }
  if (info.samplerate <= 0 || info.channels <= 0 || info.frames < 0) {
    sf_close(f);
    throw IoError(path.string() + ": corrupt header (sample rate " +
                  std::to_string(info.samplerate) + " Hz, " + std::to_string(info.channels) +
                  " channels, " + std::to_string(info.frames) + " frames)");
  }
  return f;
}

AudioInfo info_of(const SF_INFO& info) {
  AudioInfo a;
  a.sample_rate = info.samplerate;
  a.channels = info.channels;
  a.frames = info.frames;
  a.duration = static_cast<double>(info.frames) / info.samplerate;
  a.format = format_name(info.format & SF_FORMAT_TYPEMASK);
  a.encoding = format_name(info.format & SF_FORMAT_SUBMASK);
  return a;
}

// "12.5 s (300000 samples at 24000 Hz)"
std::string length_text(int64_t frames, int64_t rate) {
  return seconds_text(static_cast<double>(frames) / rate) + " (" + std::to_string(frames) +
         " samples at " + std::to_string(rate) + " Hz)";
}

// Decodes `count` frames from the current position into mono `out`, averaging the channels.
// Returns the frames actually decoded (fewer at a premature end of data).
int64_t read_mono(SNDFILE* f, int64_t channels, int64_t count, float* out) {
  int64_t done = 0;
  if (channels == 1) {
    while (done < count) {
      const sf_count_t n = sf_readf_float(f, out + done, std::min(kChunkFrames, count - done));
      if (n <= 0) break;
      done += n;
    }
    return done;
  }
  std::vector<float> buf(static_cast<size_t>(kChunkFrames * channels));
  const float inv = 1.0f / static_cast<float>(channels);
  while (done < count) {
    const sf_count_t n = sf_readf_float(f, buf.data(), std::min(kChunkFrames, count - done));
    if (n <= 0) break;
    for (sf_count_t i = 0; i < n; ++i) {
      const float* frame = buf.data() + i * channels;
      float sum = 0.0f;
      for (int64_t c = 0; c < channels; ++c) sum += frame[c];
      out[done + i] = sum * inv;
    }
    done += n;
  }
  return done;
}

// Discards `count` frames (decoders that cannot seek).
int64_t skip_frames(SNDFILE* f, int64_t channels, int64_t count) {
  if (count <= 0) return 0;
  std::vector<float> buf(static_cast<size_t>(kChunkFrames * channels));
  int64_t done = 0;
  while (done < count) {
    const sf_count_t n = sf_readf_float(f, buf.data(), std::min(kChunkFrames, count - done));
    if (n <= 0) break;
    done += n;
  }
  return done;
}

}  // namespace

AudioInfo probe(const fs::path& path) {
  SF_INFO info;
  SndFile f(open_for_read(path, info));
  return info_of(info);
}

Audio load_audio(const fs::path& path, const LoadOptions& o) {
  const std::string name = path.string();
  if (o.sample_rate < 0) {
    throw Error("load_audio " + name + ": sample_rate must be >= 0 (0: the file's rate), found " +
                std::to_string(o.sample_rate));
  }
  if (!std::isfinite(o.offset) || o.offset < 0) {
    throw DataError(name + ": offset must be a finite number of seconds >= 0, found " +
                    std::to_string(o.offset));
  }
  if (std::isnan(o.duration) || std::isinf(o.duration)) {
    throw DataError(name + ": duration must be a finite number of seconds, found " +
                    std::to_string(o.duration));
  }
  SF_INFO info;
  SndFile f(open_for_read(path, info));
  const int64_t rate = info.samplerate;
  const int64_t channels = info.channels;
  const int64_t total = info.frames;
  if (total == 0) {
    throw DataError(name + ": holds no audio (0 samples; " +
                    format_name(info.format & SF_FORMAT_TYPEMASK) + ")");
  }

  const int64_t start = std::llround(o.offset * rate);
  if (start >= total) {
    throw DataError(name + ": offset " + seconds_text(o.offset) +
                    " is at or beyond the end of the audio, whose duration is " +
                    length_text(total, rate));
  }
  const int64_t tolerance = std::max<int64_t>(0, std::llround(o.end_tolerance * rate));
  int64_t count = total - start;
  if (o.duration >= 0) {
    count = std::llround(o.duration * rate);
    if (count == 0) {
      throw DataError(name + ": duration " + seconds_text(o.duration) +
                      " is zero-length (less than half a sample at " + std::to_string(rate) +
                      " Hz)");
    }
    if (start + count > total) {
      if (start + count - total > tolerance) {
        throw DataError(name + ": segment [" + seconds_text(o.offset) + ", " +
                        seconds_text(o.offset + o.duration) +
                        ") ends beyond the end of the audio, whose duration is " +
                        length_text(total, rate));
      }
      count = total - start;
    }
  }

  if (start > 0) {
    // Where decoding starts: `start` itself, except that
    //  - an MP3 decoder restarts cold after a seek and outputs silence until its bit reservoir
    //    refills, and Opus needs longer than libsndfile's pre-roll to converge, so those land
    //    kPrerollSeconds early and decode their way to `start`;
    //  - libsndfile's Vorbis seek is not sample exact (libsndfile issue #885, open for 1.2.x:
    //    measured here, seeks past ~2.4 s of a 48 kHz file land 64 samples late), so Vorbis
    //    decodes from the beginning: exact, at the price of decoding the skipped audio.
    int64_t from = start;
    if (!info.seekable || (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_VORBIS) {
      from = 0;
    } else if ((info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_MPEG ||
               (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_OPUS) {
      from = std::max<int64_t>(0, start - std::llround(kPrerollSeconds * rate));
    }
    if (from > 0 && sf_seek(f.get(), from, SEEK_SET) != from) {
      throw IoError(name + ": cannot seek to sample " + std::to_string(from) + " (" +
                    seconds_text(static_cast<double>(from) / rate) + "): " + sf_strerror(f.get()));
    }
    if (skip_frames(f.get(), channels, start - from) != start - from) {
      throw DataError(name + ": the audio ends before the offset " + seconds_text(o.offset) +
                      " although its header says " + length_text(total, rate));
    }
  }

  at::Tensor mono = at::empty({count}, at::kFloat);
  float* out = mono.data_ptr<float>();
  const int64_t got = read_mono(f.get(), channels, count, out);
  if (got < count) {
    // Compressed formats may announce a few more samples than their decoder delivers; a
    // truncated or damaged file delivers many fewer.
    if (got == 0 || count - got > tolerance) {
      throw DataError(name + ": decoded only " + std::to_string(got) + " of the " +
                      std::to_string(count) + " samples expected from sample " +
                      std::to_string(start) + " (header: " + length_text(total, rate) +
                      "); the file is truncated or corrupt (libsndfile: " + sf_strerror(f.get()) +
                      ")");
    }
    mono = mono.slice(0, 0, got).clone();
    out = mono.data_ptr<float>();
  }
  for (int64_t i = 0; i < mono.size(0); ++i) {
    if (!std::isfinite(out[i])) {
      throw DataError(name + ": sample " + std::to_string(start + i) + " (at " +
                      seconds_text(static_cast<double>(start + i) / rate) + ") is " +
                      (std::isnan(out[i]) ? "NaN" : "infinite") +
                      "; the file holds non-finite float samples");
    }
  }
  f.close();

  Audio a;
  a.sample_rate = o.sample_rate == 0 ? rate : o.sample_rate;
  a.samples = resample(mono, rate, a.sample_rate);
  return a;
}

void write_audio(const fs::path& path, const at::Tensor& samples, int64_t sample_rate,
                 AudioFormat format) {
  const std::string name = path.string();
  if (samples.dim() != 1 && samples.dim() != 2) {
    std::ostringstream os;
    os << "write_audio " << name << ": samples must be [L] or [C, L], found shape "
       << samples.sizes();
    throw Error(os.str());
  }
  if (!samples.is_floating_point()) {
    throw Error("write_audio " + name + ": samples must be floating point, found " +
                std::string(c10::toString(samples.scalar_type())));
  }
  if (sample_rate <= 0 || sample_rate > std::numeric_limits<int>::max()) {
    throw Error("write_audio " + name + ": sample rate must be > 0 Hz, found " +
                std::to_string(sample_rate));
  }
  at::Tensor x = samples.detach().to(at::kCPU, at::kFloat);
  if (x.dim() == 1) x = x.unsqueeze(0);  // [1, L]
  const int64_t channels = x.size(0), frames = x.size(1);
  if (channels == 0 || frames == 0) {
    throw DataError("write_audio " + name + ": no samples to write (shape " +
                    std::to_string(channels) + " x " + std::to_string(frames) + ")");
  }
  if (!at::isfinite(x).all().item<bool>()) {
    throw DataError("write_audio " + name + ": samples contain NaN or inf");
  }
  const at::Tensor interleaved = x.t().contiguous();  // [L, C]

  SF_INFO info{};
  info.samplerate = static_cast<int>(sample_rate);
  info.channels = static_cast<int>(channels);
  bool pcm16 = false;
  switch (format) {
    case AudioFormat::kWavPcm16:
      info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
      pcm16 = true;
      break;
    case AudioFormat::kWavFloat:
      info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
      break;
    case AudioFormat::kFlac:
      info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
      pcm16 = true;
      break;
    case AudioFormat::kOggVorbis:
      info.format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
      break;
    case AudioFormat::kOggOpus:
      info.format = SF_FORMAT_OGG | SF_FORMAT_OPUS;
      break;
    case AudioFormat::kMp3:
      info.format = SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
      break;
  }
  const std::string what = format_name(info.format & SF_FORMAT_TYPEMASK) + " / " +
                           format_name(info.format & SF_FORMAT_SUBMASK) + ", " +
                           std::to_string(channels) + " channel(s) at " +
                           std::to_string(sample_rate) + " Hz";
  if (!sf_format_check(&info)) {
    throw IoError("write_audio " + name + ": libsndfile cannot write " + what);
  }

  // 16-bit formats are quantised here with the reader's scale (2^15), so that a value on the
  // 1/32768 grid reads back exactly; libsndfile's own float->short path scales by 32767.
  std::vector<int16_t> quantised;
  if (pcm16) {
    const float* p = interleaved.data_ptr<float>();
    quantised.resize(static_cast<size_t>(interleaved.numel()));
    for (size_t i = 0; i < quantised.size(); ++i) {
      const float v = std::nearbyint(p[i] * 32768.0f);
      quantised[i] = static_cast<int16_t>(std::clamp(v, -32768.0f, 32767.0f));
    }
  }

  if (path.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) {
      throw IoError("write_audio " + name + ": cannot create the folder " +
                    path.parent_path().string() + ": " + ec.message());
    }
  }
  write_file_atomic(path, [&](int fd) {
    SndFile f(sf_open_fd(fd, SFM_WRITE, &info, /*close_desc=*/0));
    if (!f.get()) {
      throw IoError("write_audio " + name + ": libsndfile cannot write " + what + ": " +
                    sf_strerror(nullptr));
    }
    // In chunks: libsndfile 1.2.0 hands a whole call's frames to the Vorbis encoder at once,
    // and libvorbis then crashes (SIGSEGV in vorbis_analysis_wrote; fine at 2.0 M frames per
    // call, crashes at 2.6 M, mono or stereo, with an 8 MiB stack).
    for (int64_t done = 0; done < frames;) {
      const int64_t want = std::min(kChunkFrames, frames - done);
      const int64_t at = done * channels;
      const sf_count_t n = pcm16
                               ? sf_writef_short(f.get(), quantised.data() + at, want)
                               : sf_writef_float(f.get(), interleaved.data_ptr<float>() + at, want);
      if (n != want) {
        throw IoError("write_audio " + name + ": wrote " + std::to_string(done + n) + " of " +
                      std::to_string(frames) + " frames: " + sf_strerror(f.get()));
      }
      done += want;
    }
    if (f.close() != 0) {
      throw IoError("write_audio " + name + ": finishing the " + what + " failed");
    }
  });
}

void write_wav(const fs::path& path, const at::Tensor& samples, int64_t sample_rate, bool float32) {
  write_audio(path, samples, sample_rate,
              float32 ? AudioFormat::kWavFloat : AudioFormat::kWavPcm16);
}

}  // namespace salad::audio
