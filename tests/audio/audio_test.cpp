// Audio I/O: round trips through every written format, down-mixing, offset/duration cuts,
// resampling lengths and fidelity, and each bad input with its message.
#include "salad/audio/audio.h"

#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::audio {
namespace {

namespace fs = std::filesystem;
using test::all_close;
using test::expect_error;

using test::sine;

// Frequency (Hz) of the largest FFT peak, refined by parabolic interpolation of the log
// magnitude around it (Hann window, so the estimate is within a few hundredths of a bin).
double peak_hz(const at::Tensor& x, int64_t rate) {
  const int64_t n = x.size(0);
  const at::Tensor w = at::hann_window(n, /*periodic=*/false, at::kDouble);
  const at::Tensor mag = at::fft_rfft(x.to(at::kDouble) * w).abs();
  const int64_t k = mag.argmax().item<int64_t>();
  double delta = 0.0;
  if (k > 0 && k + 1 < mag.size(0)) {
    const double a = std::log(mag[k - 1].item<double>()), b = std::log(mag[k].item<double>()),
                 c = std::log(mag[k + 1].item<double>());
    delta = 0.5 * (a - c) / (a - 2 * b + c);
  }
  return (static_cast<double>(k) + delta) * rate / static_cast<double>(n);
}

// Peak amplitude of a steady sine from its RMS over the middle half (away from filter edges).
double sine_amplitude(const at::Tensor& x) {
  const int64_t n = x.size(0);
  const at::Tensor mid = x.slice(0, n / 4, 3 * n / 4).to(at::kDouble);
  return std::sqrt(2.0) * mid.pow(2).mean().sqrt().item<double>();
}

// Random samples on the 16-bit grid (k / 32768), which 16-bit formats store exactly.
at::Tensor pcm16_noise(int64_t n, int64_t channels = 1, uint64_t seed = 1) {
  at::manual_seed(seed);
  const at::Tensor k = at::randint(-32768, 32768, {channels, n}, at::kLong);
  at::Tensor x = (k.to(at::kDouble) / 32768.0).to(at::kFloat);
  return channels == 1 ? x.squeeze(0) : x;
}

LoadOptions native_rate() {
  LoadOptions o;
  o.sample_rate = 0;
  return o;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}

// A canonical 44-byte-header WAV, built by hand so tests can hold content write_audio refuses
// (no samples, NaN). format_tag 1 = PCM, 3 = IEEE float.
std::string wav_bytes(uint16_t format_tag, uint16_t bits, uint32_t rate, const std::string& data) {
  std::string s = "RIFF";
  put_u32(s, static_cast<uint32_t>(36 + data.size()));
  s += "WAVEfmt ";
  put_u32(s, 16);
  put_u16(s, format_tag);
  put_u16(s, 1);  // channels
  put_u32(s, rate);
  put_u32(s, rate * bits / 8);
  put_u16(s, bits / 8);
  put_u16(s, bits);
  s += "data";
  put_u32(s, static_cast<uint32_t>(data.size()));
  return s + data;
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(AudioTest, WavPcm16RoundTripIsExactOnTheGrid) {
  test::TempDir dir;
  const at::Tensor x = pcm16_noise(16000);
  write_wav(dir / "a.wav", x, 16000);
  const Audio a = load_audio(dir / "a.wav", native_rate());
  EXPECT_EQ(a.sample_rate, 16000);
  EXPECT_TRUE(a.samples.equal(x));
  // Off-grid values are rounded to the nearest step: error <= 1/65536.
  const at::Tensor y = sine(440, 16000, 16000, 0.9);
  write_wav(dir / "b.wav", y, 16000);
  EXPECT_TRUE(all_close(load_audio(dir / "b.wav", native_rate()).samples, y, 0.5 / 32768, "pcm16"));
}

TEST(AudioTest, WavPcm16ClipsOutOfRangeSamples) {
  test::TempDir dir;
  write_wav(dir / "a.wav", at::tensor({-2.0f, -1.0f, 0.0f, 1.0f, 3.0f}), 8000);
  const at::Tensor r = load_audio(dir / "a.wav", native_rate()).samples;
  EXPECT_TRUE(r.equal(at::tensor({-1.0f, -1.0f, 0.0f, 32767 / 32768.0f, 32767 / 32768.0f})));
}

TEST(AudioTest, WavFloatRoundTripIsExact) {
  test::TempDir dir;
  at::manual_seed(3);
  const at::Tensor x = at::randn({12345}) * 0.3;
  write_wav(dir / "f.wav", x, 22050, /*float32=*/true);
  const Audio a = load_audio(dir / "f.wav", native_rate());
  EXPECT_EQ(a.sample_rate, 22050);
  EXPECT_TRUE(a.samples.equal(x));
  const AudioInfo info = probe(dir / "f.wav");
  EXPECT_EQ(info.encoding, "32 bit float");
}

TEST(AudioTest, FlacRoundTripIsExactOnTheGrid) {
  test::TempDir dir;
  const at::Tensor x = pcm16_noise(44100, 1, 7);
  write_audio(dir / "a.flac", x, 44100, AudioFormat::kFlac);
  const AudioInfo info = probe(dir / "a.flac");
  EXPECT_EQ(info.sample_rate, 44100);
  EXPECT_EQ(info.channels, 1);
  EXPECT_EQ(info.frames, 44100);
  EXPECT_DOUBLE_EQ(info.duration, 1.0);
  EXPECT_EQ(info.format, "FLAC (Free Lossless Audio Codec)");
  EXPECT_EQ(info.encoding, "Signed 16 bit PCM");
  EXPECT_TRUE(load_audio(dir / "a.flac", native_rate()).samples.equal(x));
}

struct LossyCase {
  AudioFormat format;
  const char* file;
  const char* format_name;
  int64_t rate;
  int64_t max_length_error;  // samples the decoder may add or drop at the ends
  double amplitude_tol;      // relative
};

class LossyRoundTrip : public ::testing::TestWithParam<LossyCase> {};

// Lossy codecs keep a steady tone's frequency and level, and (with the encoder delay removed by
// the decoder) its length.
TEST_P(LossyRoundTrip, ToneSurvives) {
  const LossyCase c = GetParam();
  test::TempDir dir;
  const int64_t n = 2 * c.rate;
  const at::Tensor x = sine(1000, c.rate, n, 0.5);
  write_audio(dir / c.file, x, c.rate, c.format);
  const AudioInfo info = probe(dir / c.file);
  EXPECT_EQ(info.format, c.format_name);
  EXPECT_EQ(info.sample_rate, c.rate);
  EXPECT_EQ(info.channels, 1);
  const Audio a = load_audio(dir / c.file, native_rate());
  EXPECT_EQ(a.sample_rate, c.rate);
  EXPECT_LE(std::abs(a.samples.size(0) - n), c.max_length_error) << "decoded " << a.samples.size(0);
  EXPECT_NEAR(peak_hz(a.samples, c.rate), 1000.0, 0.5);
  EXPECT_NEAR(sine_amplitude(a.samples), 0.5, 0.5 * c.amplitude_tol);
  // Aligned with the input: the decoder removed the encoder delay.
  const int64_t m = std::min<int64_t>(n, a.samples.size(0));
  const at::Tensor err = a.samples.slice(0, m / 4, 3 * m / 4) - x.slice(0, m / 4, 3 * m / 4);
  EXPECT_LT(err.abs().max().item<double>(), 0.05) << "decoded signal is shifted or distorted";
}

INSTANTIATE_TEST_SUITE_P(Codecs, LossyRoundTrip,
                         ::testing::Values(LossyCase{AudioFormat::kOggVorbis, "a.ogg",
                                                     "OGG (OGG Container format)", 44100, 0, 0.01},
                                           LossyCase{AudioFormat::kOggOpus, "a.opus",
                                                     "OGG (OGG Container format)", 48000, 0, 0.01},
                                           LossyCase{AudioFormat::kMp3, "a.mp3", "MPEG-1/2 Audio",
                                                     44100, 0, 0.01}),
                         [](const auto& info) { return std::string(info.param.file).substr(2); });

// libvorbis crashes when libsndfile hands it 2.6 M frames in one call; write_audio chunks them.
TEST(AudioTest, LongOggVorbisWriteIsChunked) {
  test::TempDir dir;
  const int64_t n = 2'700'000;  // 61 s at 44.1 kHz
  write_audio(dir / "long.ogg", sine(440, 44100, n, 0.3), 44100, AudioFormat::kOggVorbis);
  EXPECT_EQ(probe(dir / "long.ogg").frames, n);
}

TEST(AudioTest, StereoIsAveragedToMono) {
  test::TempDir dir;
  const at::Tensor left = sine(300, 16000, 8000, 0.4), right = sine(700, 16000, 8000, 0.2);
  write_wav(dir / "s.wav", at::stack({left, right}), 16000, /*float32=*/true);
  EXPECT_EQ(probe(dir / "s.wav").channels, 2);
  EXPECT_TRUE(load_audio(dir / "s.wav", native_rate()).samples.equal((left + right) * 0.5f));
  // FLAC stereo on the 16-bit grid: (a + b) / 2 is exact in float.
  const at::Tensor st = pcm16_noise(5000, 2, 11);
  write_audio(dir / "s.flac", st, 16000, AudioFormat::kFlac);
  EXPECT_TRUE(load_audio(dir / "s.flac", native_rate()).samples.equal(st.mean(0)));
}

// The data loader decodes on several threads at once.
TEST(AudioTest, ConcurrentLoadsGiveTheSameSamples) {
  test::TempDir dir;
  const at::Tensor x = sine(440, 44100, 3 * 44100, 0.4);
  write_audio(dir / "a.flac", x, 44100, AudioFormat::kFlac);
  write_audio(dir / "a.mp3", x, 44100, AudioFormat::kMp3);
  LoadOptions o;
  o.offset = 1.1;
  o.duration = 1.3;
  const at::Tensor flac = load_audio(dir / "a.flac", o).samples;
  const at::Tensor mp3 = load_audio(dir / "a.mp3", o).samples;
  std::atomic<int> mismatches{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (!load_audio(dir / "a.flac", o).samples.equal(flac)) ++mismatches;
        if (!load_audio(dir / "a.mp3", o).samples.equal(mp3)) ++mismatches;
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(AudioTest, WriteCreatesFoldersReplacesAtomicallyAndLeavesNoTempFiles) {
  test::TempDir dir;
  write_wav(dir / "new" / "sub" / "y.wav", pcm16_noise(10), 8000);
  EXPECT_EQ(probe(dir / "new" / "sub" / "y.wav").frames, 10);
  fs::remove_all(dir / "new");
  write_wav(dir / "x.wav", pcm16_noise(100), 8000);
  write_wav(dir / "x.wav", pcm16_noise(200), 8000);
  EXPECT_EQ(probe(dir / "x.wav").frames, 200);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    ++files;
    EXPECT_EQ(e.path().filename(), "x.wav");
  }
  EXPECT_EQ(files, 1);
}

// ---------------------------------------------------------------------------------------------
// Offset and duration

TEST(AudioTest, OffsetAndDurationCutExactSamples) {
  test::TempDir dir;
  const at::Tensor x = pcm16_noise(48000, 1, 5);  // 3 s at 16 kHz
  write_wav(dir / "a.wav", x, 16000);
  write_audio(dir / "a.flac", x, 16000, AudioFormat::kFlac);
  for (const char* name : {"a.wav", "a.flac"}) {
    LoadOptions o = native_rate();
    o.offset = 0.25;
    o.duration = 1.5;
    EXPECT_TRUE(load_audio(dir / name, o).samples.equal(x.slice(0, 4000, 28000))) << name;
    // Off-grid times round to the nearest sample: 0.10003 s -> 1600, 0.00004 s -> 1 sample.
    o.offset = 0.10003;
    o.duration = 0.00004;
    EXPECT_TRUE(load_audio(dir / name, o).samples.equal(x.slice(0, 1600, 1601))) << name;
    // No duration: to the end.
    o = native_rate();
    o.offset = 2.9;
    EXPECT_TRUE(load_audio(dir / name, o).samples.equal(x.slice(0, 46400))) << name;
  }
}

// A cut decodes the same samples as the whole file does. This needs load_audio's workarounds:
// MP3 and Opus pre-roll (a cold MP3 seek gives up to ~270 ms of silence; Opus cuts at 16 and
// 24 kHz differed by ~1e-3), Vorbis decoding from the start (its seeks landed 64 samples late).
TEST(AudioTest, OffsetInLossyFilesMatchesTheFullDecode) {
  test::TempDir dir;
  for (int64_t rate : {16000, 24000, 48000}) {
    at::manual_seed(rate);
    const at::Tensor x = sine(440, rate, 4 * rate, 0.3) + 0.05 * at::randn({4 * rate});
    write_audio(dir / "a.ogg", x, rate, AudioFormat::kOggVorbis);
    write_audio(dir / "a.opus", x, rate, AudioFormat::kOggOpus);
    write_audio(dir / "a.mp3", x, rate, AudioFormat::kMp3);
    for (const char* name : {"a.ogg", "a.opus", "a.mp3"}) {
      const at::Tensor full = load_audio(dir / name, native_rate()).samples;
      for (double offset : {0.3, 1.25, 2.71}) {
        LoadOptions o = native_rate();
        o.offset = offset;
        o.duration = 0.5;
        const at::Tensor cut = load_audio(dir / name, o).samples;
        const int64_t start = std::llround(offset * rate);
        ASSERT_EQ(cut.size(0), rate / 2) << name;
        EXPECT_TRUE(all_close(cut, full.slice(0, start, start + rate / 2), 1e-6,
                              std::string(name) + " at " + std::to_string(rate) + " Hz, offset " +
                                  std::to_string(offset)));
      }
    }
  }
}

TEST(AudioTest, DurationSlightlyPastTheEndIsCutThere) {
  test::TempDir dir;
  write_wav(dir / "a.wav", pcm16_noise(16000), 16000);  // exactly 1 s
  LoadOptions o = native_rate();
  o.offset = 0.5;
  o.duration = 0.505;  // 5 ms past the end, inside the 10 ms tolerance
  EXPECT_EQ(load_audio(dir / "a.wav", o).samples.size(0), 8000);
  o.duration = 0.55;
  expect_error<DataError>([&] { load_audio(dir / "a.wav", o); },
                          {"a.wav", "segment [0.5 s, 1.05 s) ends beyond the end",
                           "duration is 1 s (16000 samples at 16000 Hz)"});
  o.end_tolerance = 0.1;
  EXPECT_EQ(load_audio(dir / "a.wav", o).samples.size(0), 8000);
}

// ---------------------------------------------------------------------------------------------
// Resampling

struct RateCase {
  int64_t rate;
  int64_t length;
  int64_t expected;  // floor(length * 24000 / rate + 1/2)
};

class ResampleTo24k : public ::testing::TestWithParam<RateCase> {};

TEST_P(ResampleTo24k, LengthRuleFrequencyAndAmplitude) {
  const RateCase c = GetParam();
  const at::Tensor x = sine(1000, c.rate, c.length, 0.5);
  const at::Tensor y = resample(x, c.rate, 24000);
  EXPECT_EQ(y.size(0), c.expected);
  EXPECT_EQ(y.size(0), (2 * c.length * 24000 + c.rate) / (2 * c.rate));
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  if (c.length >= c.rate / 2) {
    EXPECT_NEAR(peak_hz(y, 24000), 1000.0, 0.5);
    EXPECT_NEAR(sine_amplitude(y), 0.5, 0.005);  // within 1%
    // Linear phase with the delay removed: the output is the same sine sampled at 24 kHz.
    const at::Tensor ref = sine(1000, 24000, y.size(0), 0.5);
    const int64_t n = y.size(0);
    EXPECT_TRUE(all_close(y.slice(0, n / 10, n - n / 10), ref.slice(0, n / 10, n - n / 10), 1e-3,
                          "resampled sine vs ideal"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Rates, ResampleTo24k,
    ::testing::Values(RateCase{8000, 16000, 48000}, RateCase{8000, 7, 21},
                      RateCase{16000, 32000, 48000}, RateCase{16000, 1919, 2879},    // 2878.5
                      RateCase{16000, 1, 2},                                         // 1.5
                      RateCase{44100, 44100, 24000}, RateCase{44100, 88201, 48001},  // 48000.54
                      RateCase{44100, 1920, 1045},                                   // 1044.898
                      RateCase{44100, 44099, 23999}, RateCase{22050, 22051, 24001},
                      RateCase{48000, 1919, 960}),  // 959.5
    [](const auto& info) {
      return std::to_string(info.param.rate) + "Hz_" + std::to_string(info.param.length);
    });

TEST(AudioTest, LoadResamplesStereoFlacTo24kMono) {
  test::TempDir dir;
  const at::Tensor l = sine(1000, 44100, 44100 * 2, 0.5), r = sine(1000, 44100, 44100 * 2, 0.3);
  write_audio(dir / "s.flac", at::stack({l, r}), 44100, AudioFormat::kFlac);
  const Audio a = load_audio(dir / "s.flac");  // default: 24 kHz
  EXPECT_EQ(a.sample_rate, 24000);
  EXPECT_EQ(a.samples.size(0), 48000);
  EXPECT_DOUBLE_EQ(a.duration(), 2.0);
  EXPECT_NEAR(peak_hz(a.samples, 24000), 1000.0, 0.5);
  EXPECT_NEAR(sine_amplitude(a.samples), 0.4, 0.004);
  // A cut is resampled on its own: 0.5 s at 44.1 kHz = 22050 samples -> 12000.
  LoadOptions o;
  o.offset = 0.5;
  o.duration = 0.5;
  EXPECT_EQ(load_audio(dir / "s.flac", o).samples.size(0), 12000);
}

TEST(AudioTest, ResampleSameRateIsIdentityAndBadArgumentsThrow) {
  const at::Tensor x = at::randn({100});
  EXPECT_TRUE(resample(x, 24000, 24000).equal(x));
  const at::Tensor square = x.view({10, 10});
  expect_error<Error>([&] { resample(square, 16000, 24000); },
                      {"resample", "mono [L]", "[10, 10]"});
  expect_error<Error>([&] { resample(x, 0, 24000); }, {"rates must be > 0", "0 -> 24000"});
  EXPECT_EQ(resample(at::empty({0}), 16000, 24000).size(0), 0);
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST(AudioTest, MissingFileIsAnIoError) {
  test::TempDir dir;
  expect_error<IoError>([&] { load_audio(dir / "nope.wav"); }, {"nope.wav", "no such audio file"});
  expect_error<IoError>([&] { probe(dir / "nope.flac"); }, {"nope.flac", "no such audio file"});
  expect_error<IoError>([&] { load_audio(dir.path()); }, {"is a folder"});
}

TEST(AudioTest, CorruptHeaderIsAnIoError) {
  test::TempDir dir;
  write_bytes(dir / "junk.wav", std::string("RIFF\x10\0\0\0WAVEjunkjunkjunkjunk", 28));
  expect_error<IoError>([&] { load_audio(dir / "junk.wav"); },
                        {"junk.wav", "cannot decode as audio", "libsndfile:"});
  test::write_text(dir / "notes.mp3", "this is not an mp3 file, only text\n");
  expect_error<IoError>([&] { probe(dir / "notes.mp3"); }, {"notes.mp3", "cannot decode as audio"});
}

TEST(AudioTest, ZeroLengthAudioIsADataError) {
  test::TempDir dir;
  write_bytes(dir / "empty.wav", wav_bytes(1, 16, 16000, ""));
  EXPECT_EQ(probe(dir / "empty.wav").frames, 0);
  expect_error<DataError>([&] { load_audio(dir / "empty.wav"); },
                          {"empty.wav", "holds no audio (0 samples"});
}

TEST(AudioTest, TruncatedFlacIsADataError) {
  test::TempDir dir;
  write_audio(dir / "a.flac", pcm16_noise(48000), 16000, AudioFormat::kFlac);
  const std::string bytes = test::read_text(dir / "a.flac");
  write_bytes(dir / "cut.flac", bytes.substr(0, bytes.size() / 2));
  EXPECT_EQ(probe(dir / "cut.flac").frames, 48000);  // the header still says 3 s
  expect_error<DataError>([&] { load_audio(dir / "cut.flac"); },
                          {"cut.flac", "decoded only", "of the 48000 samples", "truncated"});
}

TEST(AudioTest, OffsetOrDurationOutsideTheFileIsADataError) {
  test::TempDir dir;
  write_wav(dir / "a.wav", pcm16_noise(16000), 16000);
  LoadOptions o;
  o.offset = 1.0;
  expect_error<DataError>([&] { load_audio(dir / "a.wav", o); },
                          {"a.wav", "offset 1 s is at or beyond the end",
                           "duration is 1 s (16000 samples at 16000 Hz)"});
  o.offset = 12.5;
  expect_error<DataError>([&] { load_audio(dir / "a.wav", o); }, {"offset 12.5 s"});
  o.offset = -0.1;
  expect_error<DataError>([&] { load_audio(dir / "a.wav", o); }, {"offset must be", ">= 0"});
  o.offset = 0.2;
  o.duration = 0.0;
  expect_error<DataError>([&] { load_audio(dir / "a.wav", o); }, {"a.wav", "zero-length"});
  o.duration = std::nan("");
  expect_error<DataError>([&] { load_audio(dir / "a.wav", o); }, {"duration must be a finite"});
}

TEST(AudioTest, NonFiniteSamplesAreADataError) {
  test::TempDir dir;
  std::vector<float> v(1000, 0.25f);
  v[400] = std::nanf("");
  std::string data(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  write_bytes(dir / "nan.wav", wav_bytes(3, 32, 8000, data));
  expect_error<DataError>([&] { load_audio(dir / "nan.wav"); },
                          {"nan.wav", "sample 400 (at 0.05 s) is NaN", "non-finite"});
  v[400] = 0.0f;
  v[999] = -INFINITY;
  data.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  write_bytes(dir / "inf.wav", wav_bytes(3, 32, 8000, data));
  expect_error<DataError>([&] { load_audio(dir / "inf.wav"); }, {"sample 999", "is infinite"});
  // A cut that avoids the bad sample is fine.
  LoadOptions o = native_rate();
  o.duration = 0.1;
  EXPECT_EQ(load_audio(dir / "inf.wav", o).samples.size(0), 800);
}

TEST(AudioTest, WriterRejectsBadInput) {
  test::TempDir dir;
  const at::Tensor with_nan = at::tensor({0.0f, NAN});
  expect_error<DataError>([&] { write_wav(dir / "n.wav", with_nan, 8000); },
                          {"n.wav", "NaN or inf"});
  expect_error<DataError>([&] { write_wav(dir / "e.wav", at::empty({0}), 8000); },
                          {"e.wav", "no samples"});
  const at::Tensor rank3 = at::zeros({1, 2, 3});
  expect_error<Error>([&] { write_wav(dir / "s.wav", rank3, 8000); },
                      {"s.wav", "[L] or [C, L]", "[1, 2, 3]"});
  expect_error<Error>([&] { write_wav(dir / "r.wav", at::zeros({8}), 0); },
                      {"r.wav", "sample rate must be > 0"});
  expect_error<Error>([&] { write_wav(dir / "i.wav", at::zeros({8}, at::kInt), 8000); },
                      {"i.wav", "floating point"});
  expect_error<IoError>(
      [&] { write_audio(dir / "x.opus", at::zeros({4410}), 44100, AudioFormat::kOggOpus); },
      {"x.opus", "cannot write", "44100 Hz"});
  test::write_text(dir / "file.txt", "a file, not a folder");
  expect_error<IoError>([&] { write_wav(dir / "file.txt" / "x.wav", at::zeros({8}), 8000); },
                        {"x.wav", "cannot create the folder"});
  EXPECT_FALSE(fs::exists(dir / "n.wav"));
  EXPECT_FALSE(fs::exists(dir / "x.opus"));
}

}  // namespace
}  // namespace salad::audio
