// Audio files in and out: every format Debian's libsndfile 1.2 reads (WAV/RF64/W64, FLAC, AIFF,
// Ogg Vorbis, Ogg Opus, MP3, ...), down-mixed to mono and resampled with libsoxr, as float32
// tensors; and a writer (WAV, FLAC, Ogg Vorbis/Opus, MP3) that replaces its target atomically.
//
// Errors: IoError when a file is missing, unreadable, not audio or in a format libsndfile cannot
// decode (including a corrupt header); DataError when the file opens but its content cannot be
// used (no samples, NaN/inf samples, an offset/duration outside the file). Both name the file.
// Every function is safe to call from several threads at once (on different or the same files).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace salad::audio {

/// What a file's header says, without decoding it.
struct AudioInfo {
  int64_t sample_rate = 0;  ///< Hz
  int64_t channels = 0;
  int64_t frames = 0;     ///< samples per channel
  double duration = 0.0;  ///< frames / sample_rate, seconds
  std::string format;     ///< container, as libsndfile names it: "FLAC (Free Lossless Audio Codec)"
  std::string encoding;   ///< samples: "Signed 16 bit PCM", "32 bit float", "Vorbis", "Opus", ...
};

/// Reads the header of `path`. Throws IoError (missing, unreadable, not a supported format).
AudioInfo probe(const std::filesystem::path& path);

/// How load_audio() cuts, mixes and resamples.
struct LoadOptions {
  /// Output rate in Hz; 0 keeps the file's rate.
  int64_t sample_rate = 24000;
  /// Start, in seconds from the beginning of the file (>= 0). The first sample read is
  /// llround(offset * file_rate); the decoder seeks there instead of decoding what lies before.
  double offset = 0.0;
  /// Length in seconds; < 0 reads to the end of the file. The segment has
  /// llround(duration * file_rate) samples at the file's rate (before resampling).
  double duration = -1.0;
  /// A segment whose end lies at most this many seconds past the end of the file (manifests
  /// round durations), or a decoder that delivers at most this much less than the header
  /// announced, gives a segment cut at the real end; more than that is a DataError.
  double end_tolerance = 0.01;
};

/// Mono float32 samples and their rate.
struct Audio {
  at::Tensor samples;       ///< [L] float32, CPU, contiguous; full scale is [-1, 1]
  int64_t sample_rate = 0;  ///< Hz
  double duration() const { return sample_rate > 0 ? double(samples.size(0)) / sample_rate : 0.0; }
};

/// Decodes [offset, offset + duration) of `path`, averages its channels to mono and resamples it
/// to options.sample_rate (libsoxr, SOXR_HQ; see resample()). Integer PCM is scaled by 1/2^(bits-1)
/// (int16 32767 -> 0.99997); float files are returned as stored. A cut gives exactly the samples
/// of the whole file's decode (lossy formats included); the resampler then sees the cut alone.
/// Cost: WAV/FLAC/AIFF seek directly; MP3 and Opus seek 1 s early and decode from there; Ogg
/// Vorbis decodes from the start of the file, because libsndfile 1.2's Vorbis seek is inexact.
/// Throws IoError (missing/unreadable/unsupported file) or DataError (zero samples, an offset or
/// duration that is negative or beyond the file, NaN/inf samples), naming the file.
Audio load_audio(const std::filesystem::path& path, const LoadOptions& options = {});

/// Resamples mono `samples` ([L] float32) from `from_rate` to `to_rate` Hz with libsoxr at
/// SOXR_HQ (20-bit precision, linear phase, the filter delay removed), one thread. The output has
/// exactly floor(L * to_rate / from_rate + 1/2) samples (L rounded half up to the new rate, as
/// soxr_oneshot gives it): 16 kHz -> 24 kHz turns 1919 samples into 2879 (2878.5 rounded up).
/// Equal rates return `samples` unchanged. Throws salad::Error for bad arguments.
at::Tensor resample(const at::Tensor& samples, int64_t from_rate, int64_t to_rate);

/// Output file format of write_audio().
enum class AudioFormat {
  kWavPcm16,   ///< RIFF WAVE, 16-bit signed PCM (samples clipped to [-1, 1))
  kWavFloat,   ///< RIFF WAVE, 32-bit IEEE float (exact)
  kFlac,       ///< FLAC, 16-bit
  kOggVorbis,  ///< Ogg Vorbis (lossy)
  kOggOpus,    ///< Ogg Opus (lossy; rate must be 8, 12, 16, 24 or 48 kHz)
  kMp3,        ///< MPEG-1/2/2.5 Layer III via LAME (lossy; rate 8-48 kHz of the MPEG set)
};

/// Writes `samples` ([L] mono or [C, L] channels-first, any floating dtype, CPU or not) at
/// `sample_rate` Hz to `path` in `format`, atomically: the data goes to a temp file next to
/// `path` that is renamed over it only when complete. Missing parent folders are created. Throws
/// DataError for NaN/inf or empty samples, salad::Error for a bad shape or rate, IoError when the
/// file cannot be written or the codec refuses the parameters (the message names the file and
/// libsndfile's reason).
void write_audio(const std::filesystem::path& path, const at::Tensor& samples, int64_t sample_rate,
                 AudioFormat format);

/// write_audio() as WAV: 16-bit PCM (default) or 32-bit float.
void write_wav(const std::filesystem::path& path, const at::Tensor& samples, int64_t sample_rate,
               bool float32 = false);

}  // namespace salad::audio
