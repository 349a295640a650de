// tests/tts mirrors src/tts: the three backends (Flite linked in, espeak-ng and a command run as
// programs) and synthesize_manifest() with a stub backend.
#include "salad/tts/tts.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "salad/audio/audio.h"
#include "salad/core/error.h"
#include "test_util.h"

namespace salad::tts {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<std::string> split_words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::string join(const std::vector<data::Word>& words) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : " ") + w.w;
  return s;
}

/// Asserts the timings are what a manifest accepts and lie inside the audio.
void expect_valid_words(const Speech& sp) {
  data::Utterance u;
  u.duration = sp.duration();
  u.words = sp.words;
  EXPECT_NO_THROW(data::validate_words(u));
  for (const auto& w : sp.words) {
    EXPECT_GE(w.start, 0.0) << w.w;
    EXPECT_LE(w.end, sp.duration()) << w.w;
  }
}

void expect_reason(const std::function<void()>& f, const std::string& reason,
                   std::initializer_list<std::string> fragments = {}) {
  try {
    f();
    ADD_FAILURE() << "expected TtsError(" << reason << ")";
  } catch (const TtsError& e) {
    EXPECT_EQ(e.reason(), reason) << e.what();
    const std::string msg = e.what();
    for (const auto& frag : fragments) {
      EXPECT_NE(msg.find(frag), std::string::npos) << "message lacks '" << frag << "':\n" << msg;
    }
  }
}

std::unique_ptr<TtsBackend> flite(int64_t rate_wpm = 0) {
  TtsOptions o;
  o.rate_wpm = rate_wpm;
  return make_tts(o);
}

// ---- flite ---------------------------------------------------------------------------------

TEST(FliteTtsTest, SentenceGives24kHzAudioAndOneTimedWordPerInputWord) {
  const std::string text = "The quick brown fox jumps over the lazy dog.";
  const Speech sp = flite()->synthesize(text, "");
  ASSERT_EQ(sp.samples.dim(), 1);
  EXPECT_EQ(sp.samples.scalar_type(), at::kFloat);
  const double n_words = 9;
  EXPECT_GT(sp.duration(), 0.2 * n_words);
  EXPECT_LT(sp.duration(), 1.0 * n_words);
  const float peak = sp.samples.abs().max().item<float>();
  EXPECT_NEAR(peak, 0.95f, 1e-4);
  ASSERT_EQ(sp.words.size(), 9u);
  EXPECT_EQ(join(sp.words), text);
  expect_valid_words(sp);
  for (const auto& w : sp.words) EXPECT_GT(w.end - w.start, 0.05) << w.w;
  // Speech ends with the last word (plus Flite's final pause), not long after it.
  EXPECT_GT(sp.words.back().end, sp.duration() - 0.6);
}

TEST(FliteTtsTest, NumbersAndPunctuationKeepTheInputWords) {
  const std::string text = "Call me at 123, (please) -- now!";
  const Speech sp = flite()->synthesize(text, "");
  // "123" is spoken as three words but stays one input word; "--" speaks nothing and is glued.
  EXPECT_EQ(join(sp.words), text);
  ASSERT_GE(sp.words.size(), 5u);
  EXPECT_EQ(sp.words[3].w, "123,");
  EXPECT_GT(sp.words[3].end - sp.words[3].start, 0.6);  // "one hundred twenty three"
  expect_valid_words(sp);
}

TEST(FliteTtsTest, VoicesDifferAndRateStretches) {
  auto tts = flite();
  const std::string text = "Hello there, general Kenobi.";
  const Speech kal = tts->synthesize(text, "kal");
  const Speech awb = tts->synthesize(text, "awb");
  ASSERT_EQ(kal.words.size(), 4u);
  ASSERT_EQ(awb.words.size(), 4u);
  const int64_t n = std::min(kal.samples.size(0), awb.samples.size(0));
  EXPECT_GT((kal.samples.narrow(0, 0, n) - awb.samples.narrow(0, 0, n)).abs().mean().item<float>(),
            0.01f);
  const Speech fast = flite(350)->synthesize(text, "kal");
  EXPECT_LT(fast.duration(), 0.7 * kal.duration());
  EXPECT_GT(fast.duration(), 0.3 * kal.duration());
  // The stretch does not leak into a backend at the default rate.
  EXPECT_NEAR(tts->synthesize(text, "kal").duration(), kal.duration(), 1e-9);
}

TEST(FliteTtsTest, BadConfigAndTexts) {
  TtsOptions o;
  o.voices = {"kal", "nobody"};
  test::expect_error<ConfigError>([&] { make_tts(o); }, {"nobody", "kal16", "slt"});
  o = {};
  o.backend = "festival";
  test::expect_error<ConfigError>([&] { make_tts(o); }, {"festival", "flite, espeak or command"});
  o = {};
  o.max_chars = 10;
  auto tts = make_tts(o);
  expect_reason([&] { tts->synthesize("  \n\t ", ""); }, "empty text");
  expect_reason([&] { tts->synthesize("", ""); }, "empty text");
  expect_reason([&] { tts->synthesize("eleven char", ""); }, "text too long", {"11", "10"});
  EXPECT_NO_THROW(tts->synthesize("ten chars!", ""));
  expect_reason([&] { tts->synthesize("... ---", ""); }, "empty audio");
}

// ---- command ---------------------------------------------------------------------------------

// Writes 0.25 s of 440 Hz per word at 16 kHz, word timings, and what it was given (argv and the
// text file) into --echo; --bad writes overlapping timings.
constexpr const char* kFakeTts = R"PY(
import json, math, struct, sys, wave
a = sys.argv[1:]
args = {a[i]: a[i + 1] for i in range(0, len(a) - 1, 2)}
text = args["--text"]
words = text.split()
rate = 16000
n = int(0.25 * len(words) * rate)
with wave.open(args["--wav"], "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                           for i in range(n)))
timed = [{"w": x, "start": 0.25 * k + 0.02, "end": 0.25 * k + 0.22} for k, x in enumerate(words)]
if "--bad" in args:
    timed[1]["start"] = 0.1
with open(args["--json"], "w") as f:
    json.dump(timed, f)
with open(args["--text-file"], encoding="utf-8") as f:
    from_file = f.read()
with open(args["--echo"], "w", encoding="utf-8") as f:
    json.dump({"text": text, "text_file": from_file, "voice": args["--voice"]}, f)
)PY";

struct CommandFixture {
  test::TempDir dir;
  TtsOptions options;
  explicit CommandFixture(const std::string& extra = "") {
    test::write_text(dir / "fake_tts.py", kFakeTts);
    options.backend = "command";
    options.command = "python3 " + (dir / "fake_tts.py").string() +
                      " --text {text} --wav {out_wav} --json {out_json} --voice {voice}"
                      " --text-file {text_file} --echo " +
                      (dir / "echo.json").string() + extra;
    options.timeout_s = 10;
  }
  json echo() const { return json::parse(test::read_text(dir / "echo.json")); }
};

TEST(CommandTtsTest, ReadsAudioAndTimings) {
  CommandFixture f;
  auto tts = make_tts(f.options);
  EXPECT_TRUE(tts->parallel());
  const Speech sp = tts->synthesize("one two three", "alto");
  EXPECT_NEAR(sp.duration(), 0.75, 1e-6);  // 12000 samples at 16 kHz -> 18000 at 24 kHz
  EXPECT_EQ(sp.samples.size(0), 18000);
  EXPECT_NEAR(sp.samples.abs().max().item<float>(), 0.95f, 1e-3);
  ASSERT_EQ(sp.words.size(), 3u);
  EXPECT_EQ(sp.words[2].w, "three");
  EXPECT_NEAR(sp.words[2].start, 0.52, 1e-9);
  EXPECT_NEAR(sp.words[2].end, 0.72, 1e-9);
  EXPECT_EQ(f.echo()["voice"], "alto");
}

TEST(CommandTtsTest, TextArrivesVerbatimWhateverItHolds) {
  CommandFixture f;
  auto tts = make_tts(f.options);
  const std::string text =
      "it's \"quoted\" $HOME ${PATH} `touch pwned` $(touch pwned2); echo 'x' \\ \xc3\xa9 &&|>";
  const Speech sp = tts->synthesize(text, "a'b; $x");
  const json e = f.echo();
  EXPECT_EQ(e["text"], text);
  EXPECT_EQ(e["text_file"], text + "\n");
  EXPECT_EQ(e["voice"], "a'b; $x");
  EXPECT_EQ(sp.words.size(), split_words(text).size());
  EXPECT_FALSE(fs::exists("pwned"));
  EXPECT_FALSE(fs::exists("pwned2"));
}

TEST(CommandTtsTest, FailureReportsExitCodeAndStderrTail) {
  TtsOptions o;
  o.backend = "command";
  o.command = "echo some noise >&2; echo 'model file missing: voice.onnx' >&2; exit 3; : {out_wav}";
  expect_reason([&] { make_tts(o)->synthesize("hello", ""); }, "failed",
                {"code 3", "model file missing: voice.onnx", "hello"});
}

bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return false;
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

TEST(CommandTtsTest, HangingProgramIsKilledWithItsChildren) {
  test::TempDir d;
  TtsOptions o;
  o.backend = "command";
  o.timeout_s = 0.5;
  o.command = "echo $$ > " + (d / "sh.pid").string() + "; sleep 30 & echo $! > " +
              (d / "sleep.pid").string() + "; wait; : {out_wav}";
  auto tts = make_tts(o);
  const auto t0 = std::chrono::steady_clock::now();
  expect_reason([&] { tts->synthesize("hello", ""); }, "timeout", {"0.5"});
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 2.0);
  EXPECT_GE(took, 0.5);
  const pid_t sh = std::stoi(test::read_text(d / "sh.pid"));
  const pid_t sleeper = std::stoi(test::read_text(d / "sleep.pid"));
  // The orphaned sleep is reaped by init (or stays a zombie where init does not reap): not alive.
  for (int i = 0; i < 100 && alive(sleeper); ++i) usleep(10000);
  EXPECT_FALSE(alive(sh));
  EXPECT_FALSE(alive(sleeper));
}

TEST(CommandTtsTest, MissingOrEmptyOutputAndBadTimings) {
  TtsOptions o;
  o.backend = "command";
  o.command = "true {out_wav}";
  expect_reason([&] { make_tts(o)->synthesize("hello", ""); }, "empty audio");
  o.command = ": > {out_wav}";
  expect_reason([&] { make_tts(o)->synthesize("hello", ""); }, "empty audio");
  CommandFixture f(" --bad 1");
  expect_reason([&] { make_tts(f.options)->synthesize("one two three", ""); }, "bad timings",
                {"out.json", "'two'", "overlapping"});
  o.command = "echo {text}";
  test::expect_error<ConfigError>([&] { make_tts(o); }, {"{out_wav}", "echo {text}"});
}

// ---- espeak ----------------------------------------------------------------------------------

bool on_path(const std::string& program) {
  return test::run("command -v " + program).exit_code == 0;
}

TEST(EspeakTtsTest, SynthesizesWithoutTimings) {
  if (!on_path("espeak-ng")) GTEST_SKIP() << "espeak-ng is not installed (apt install espeak-ng)";
  TtsOptions o;
  o.backend = "espeak";
  auto tts = make_tts(o);
  const Speech sp = tts->synthesize("Hello world, this is a test.", "en-us");
  EXPECT_GT(sp.duration(), 0.8);
  EXPECT_LT(sp.duration(), 5.0);
  EXPECT_TRUE(sp.words.empty());
  EXPECT_NEAR(sp.samples.abs().max().item<float>(), 0.95f, 1e-3);
  o.rate_wpm = 350;
  EXPECT_LT(make_tts(o)->synthesize("Hello world, this is a test.", "en-us").duration(),
            0.75 * sp.duration());
  // espeak-ng itself falls back to its default voice for an unknown one: salad refuses it.
  test::expect_error<ConfigError>([&] { tts->synthesize("hello", "no-such-voice-xx+f3"); },
                                  {"no-such-voice-xx", "--voices"});
  o.voices = {"en-gb-x-rp+m4", "EN+f3", "nope"};
  test::expect_error<ConfigError>([&] { make_tts(o); }, {"'nope'"});
  o.voices.pop_back();
  const Speech f3 = make_tts(o)->synthesize("Hello world, this is a test.", "en+f3");
  EXPECT_GT(f3.duration(), 0.5);
}

TEST(EspeakTtsTest, RunsTheProgramWithTheseArgumentsAndReportsItsFailure) {
  // A stand-in espeak-ng: lists one voice, records its arguments, fails.
  test::TempDir d;
  test::write_text(d / "espeak",
                   "#!/bin/sh\n"
                   "if [ \"$1\" = --voices ]; then\n"
                   "  echo 'Pty Language       Age/Gender VoiceName          File'\n"
                   "  echo ' 2  en-us           --/M      English_(America)  gmw/en-US   (en 3)'\n"
                   "  exit 0\n"
                   "fi\n"
                   "printf '%s\\n' \"$@\" > " +
                       (d / "args.txt").string() +
                       "\n"
                       "echo 'espeak: phoneme data missing' >&2\n"
                       "exit 2\n");
  fs::permissions(d / "espeak", fs::perms::owner_all);
  TtsOptions o;
  o.backend = "espeak";
  o.espeak_binary = (d / "espeak").string();
  o.rate_wpm = 210;
  o.voices = {"en"};
  auto tts = make_tts(o);
  expect_reason([&] { tts->synthesize("-v hello", "en+m2"); }, "failed",
                {"code 2", "phoneme data missing"});
  std::istringstream args(test::read_text(d / "args.txt"));
  std::vector<std::string> a;
  for (std::string line; std::getline(args, line);) a.push_back(line);
  ASSERT_EQ(a.size(), 8u) << test::read_text(d / "args.txt");
  EXPECT_EQ(a[0], "-v");
  EXPECT_EQ(a[1], "en+m2");
  EXPECT_EQ(a[2], "-s");
  EXPECT_EQ(a[3], "210");
  EXPECT_EQ(a[4], "-w");
  EXPECT_EQ(fs::path(a[5]).filename(), "out.wav");
  EXPECT_EQ(a[6], "-f");
  EXPECT_EQ(fs::path(a[7]).filename(), "text.txt");
  o.voices = {"en-gb"};
  test::expect_error<ConfigError>([&] { make_tts(o); }, {"'en-gb'"});
}

TEST(EspeakTtsTest, MissingBinaryIsAConfigError) {
  TtsOptions o;
  o.backend = "espeak";
  o.espeak_binary = "salad-no-such-espeak";
  test::expect_error<ConfigError>([&] { make_tts(o); }, {"salad-no-such-espeak", "PATH"});
}

// ---- synthesize_manifest ----------------------------------------------------------------------

/// 0.1 s of sine per word with word timings; "FAIL:<reason>" texts throw TtsError(reason).
class StubTts : public TtsBackend {
 public:
  explicit StubTts(bool parallel = false) : parallel_(parallel) {}
  Speech synthesize(const std::string& text, const std::string& voice) override {
    ++calls;
    if (text.rfind("FAIL:", 0) == 0) throw TtsError(text.substr(5), "stub refuses " + text);
    const auto words = split_words(text);
    Speech sp;
    sp.samples = test::sine(voice == "low" ? 220 : 440, kSampleRate,
                            static_cast<int64_t>(words.size()) * 2400, 0.9);
    for (size_t k = 0; k < words.size(); ++k)
      sp.words.push_back({words[k], 0.1 * k, 0.1 * k + 0.08});
    return sp;
  }
  std::string name() const override { return "stub"; }
  bool parallel() const override { return parallel_; }
  std::atomic<int> calls{0};

 private:
  bool parallel_;
};

std::vector<SynthItem> make_items(int n) {
  std::vector<SynthItem> items;
  for (int i = 0; i < n; ++i) {
    std::string text;
    for (int k = 0; k <= i % 3; ++k) text += "w" + std::to_string(k) + " ";
    items.push_back({"utt" + std::to_string(i), text, "test"});
  }
  return items;
}

SynthOptions synth_options(const fs::path& out) {
  SynthOptions o;
  o.out_dir = out;
  o.progress = false;
  return o;
}

std::multiset<std::string> manifest_ids(const fs::path& manifest) {
  std::multiset<std::string> ids;
  std::ifstream in(manifest);
  std::string line;
  while (std::getline(in, line)) ids.insert(json::parse(line)["id"].get<std::string>());
  return ids;
}

TEST(SynthesizeManifestTest, WritesAReadableManifest) {
  test::TempDir d;
  StubTts stub;
  TtsOptions topts;
  topts.voices = {"high", "low"};
  auto items = make_items(5);
  items[4].id = "a/b c";  // needs sanitising
  const SynthReport r = synthesize_manifest(stub, items, topts, synth_options(d.path()));
  EXPECT_EQ(r.done, 5);
  EXPECT_EQ(r.resumed, 0);
  EXPECT_TRUE(r.skipped.empty());
  EXPECT_EQ(r.manifest, d / "manifest.jsonl");
  const data::Manifest m = data::read_manifest(r.manifest);  // validates every line's words
  ASSERT_EQ(m.utterances.size(), 5u);
  EXPECT_EQ(m.skipped.total(), 0);
  double total = 0;
  for (size_t i = 0; i < 5; ++i) {
    const data::Utterance& u = m.utterances[i];
    EXPECT_EQ(u.id, items[i].id);
    EXPECT_EQ(u.text, items[i].text);
    EXPECT_EQ(u.source, "test");
    EXPECT_EQ(u.speaker, i % 2 ? "low" : "high");
    EXPECT_EQ(u.words.size(), split_words(items[i].text).size());
    EXPECT_EQ(u.audio.parent_path(), d / "audio");
    const audio::AudioInfo info = audio::probe(u.audio);
    EXPECT_EQ(info.sample_rate, kSampleRate);
    EXPECT_EQ(info.encoding, "Signed 16 bit PCM");
    EXPECT_NEAR(info.duration, u.duration, 1e-9);
    total += u.duration;
  }
  EXPECT_EQ(m.utterances[4].audio.filename().string().rfind("a_b_c-", 0), 0u)
      << m.utterances[4].audio;
  EXPECT_NEAR(r.seconds_of_audio, total, 1e-9);
  EXPECT_NEAR(total, 0.1 + 0.2 + 0.3 + 0.1 + 0.2, 1e-9);
}

TEST(SynthesizeManifestTest, InterruptedRunResumesWithOnlyTheMissingItems) {
  test::TempDir d;
  const auto items = make_items(6);
  TtsOptions topts;
  topts.voices = {"high", "low"};
  StubTts first;
  const SynthReport r1 = synthesize_manifest(first, items, topts, synth_options(d.path()),
                                             [](double s) { return s >= 0.3 - 1e-9; });
  EXPECT_EQ(first.calls.load(), 2);  // 0.1 + 0.2 s: the budget is met after two items
  EXPECT_EQ(r1.done, 2);
  StubTts second(true);
  SynthOptions o = synth_options(d.path());
  o.workers = 3;
  const SynthReport r2 = synthesize_manifest(second, items, topts, o);
  EXPECT_EQ(second.calls.load(), 4);
  EXPECT_EQ(r2.done, 4);
  EXPECT_EQ(r2.resumed, 2);
  EXPECT_NEAR(r2.seconds_of_audio, 1.2, 1e-9);
  const auto ids = manifest_ids(r2.manifest);
  ASSERT_EQ(ids.size(), 6u);
  for (const auto& it : items) EXPECT_EQ(ids.count(it.id), 1u) << it.id;
  // Voices follow the item's index, whichever run made it.
  const data::Manifest m = data::read_manifest(r2.manifest);
  for (const auto& u : m.utterances) {
    EXPECT_EQ(u.speaker, std::stoi(u.id.substr(3)) % 2 ? "low" : "high") << u.id;
  }
  // A third run has nothing to do; a met budget starts nothing.
  StubTts third;
  const SynthReport r3 = synthesize_manifest(third, items, topts, synth_options(d.path()),
                                             [](double s) { return s >= 0.5; });
  EXPECT_EQ(third.calls.load(), 0);
  EXPECT_EQ(r3.resumed, 6);
}

TEST(SynthesizeManifestTest, VoiceBlocksGiveRunsOfOneSpeaker) {
  test::TempDir d;
  const auto items = make_items(7);
  TtsOptions topts;
  topts.voices = {"high", "low"};
  topts.voice_block = 3;
  StubTts stub;
  const SynthReport r = synthesize_manifest(stub, items, topts, synth_options(d.path()));
  ASSERT_EQ(r.done, 7);
  const data::Manifest m = data::read_manifest(r.manifest);
  const std::vector<std::string> want = {"high", "high", "high", "low", "low", "low", "high"};
  ASSERT_EQ(m.utterances.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(m.utterances[i].speaker, want[i]) << i;

  topts.voice_block = 0;
  StubTts none;
  try {
    synthesize_manifest(none, items, topts, synth_options(d / "zero"));
    ADD_FAILURE() << "voice_block 0 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("tts.voice_block"), std::string::npos) << e.what();
  }
  EXPECT_EQ(none.calls.load(), 0);
}

TEST(SynthesizeManifestTest, ParallelWorkersWriteEachItemOnce) {
  test::TempDir d;
  const auto items = make_items(40);
  StubTts stub(true);
  SynthOptions o = synth_options(d.path());
  o.workers = 4;
  const SynthReport r = synthesize_manifest(stub, items, {}, o);
  EXPECT_EQ(r.done, 40);
  EXPECT_EQ(stub.calls.load(), 40);
  const data::Manifest m = data::read_manifest(r.manifest);
  EXPECT_EQ(m.utterances.size(), 40u);
  EXPECT_EQ(m.skipped.total(), 0);
}

TEST(SynthesizeManifestTest, FailuresAreCountedPerReasonAndRetriedOnRerun) {
  test::TempDir d;
  auto items = make_items(7);
  items[1].text = "FAIL:timeout";
  items[3].text = "FAIL:failed";
  items[5].text = "FAIL:failed";
  items.push_back(items[0]);  // a duplicate id
  StubTts stub;
  const SynthReport r = synthesize_manifest(stub, items, {}, synth_options(d.path()));
  EXPECT_EQ(r.done, 4);
  const std::map<std::string, int64_t> expected = {
      {"duplicate id", 1}, {"failed", 2}, {"timeout", 1}};
  EXPECT_EQ(r.skipped, expected);
  EXPECT_EQ(data::read_manifest(r.manifest).utterances.size(), 4u);
  StubTts again;
  const SynthReport r2 = synthesize_manifest(again, items, {}, synth_options(d.path()));
  EXPECT_EQ(again.calls.load(), 3);
  EXPECT_EQ(r2.resumed, 4);
  EXPECT_EQ(r2.skipped.at("failed"), 2);
}

TEST(SynthesizeManifestTest, TornLastLineIsDroppedAndRedone) {
  test::TempDir d;
  const auto items = make_items(4);
  StubTts stub;
  synthesize_manifest(stub, std::vector<SynthItem>(items.begin(), items.begin() + 3), {},
                      synth_options(d.path()));
  const fs::path manifest = d / "manifest.jsonl";
  {
    std::ofstream out(manifest, std::ios::app);
    out << R"({"id": "utt3", "audio": "audio/ut)";  // a crash in the middle of a write
  }
  StubTts rerun;
  const SynthReport r = synthesize_manifest(rerun, items, {}, synth_options(d.path()));
  EXPECT_EQ(r.resumed, 3);
  EXPECT_EQ(r.done, 1);
  EXPECT_EQ(rerun.calls.load(), 1);
  const data::Manifest m = data::read_manifest(manifest);
  EXPECT_EQ(m.lines, 4);
  EXPECT_EQ(m.skipped.total(), 0);
  EXPECT_EQ(manifest_ids(manifest), (std::multiset<std::string>{"utt0", "utt1", "utt2", "utt3"}));
}

TEST(SynthesizeManifestTest, OtherErrorsStopTheRun) {
  class Broken : public StubTts {
   public:
    Speech synthesize(const std::string&, const std::string&) override {
      throw std::logic_error("stub bug");
    }
  } broken;
  test::TempDir d;
  EXPECT_THROW(synthesize_manifest(broken, make_items(3), {}, synth_options(d.path())),
               std::logic_error);
}

TEST(SynthesizeManifestTest, FliteManifestPassesTheReader) {
  test::TempDir d;
  auto tts = flite();
  const std::vector<SynthItem> items = {{"a", "Good morning, everyone.", "t"},
                                        {"b", "It is 5 o'clock.", "t"}};
  const SynthReport r = synthesize_manifest(*tts, items, {}, synth_options(d.path()));
  EXPECT_EQ(r.done, 2);
  const data::Manifest m = data::read_manifest(r.manifest);
  ASSERT_EQ(m.utterances.size(), 2u);
  EXPECT_EQ(m.skipped.total(), 0);
  EXPECT_EQ(m.utterances[0].words.size(), 3u);
  EXPECT_EQ(m.utterances[1].words.size(), 4u);
  EXPECT_EQ(m.utterances[1].words[2].w, "5");
}

}  // namespace
}  // namespace salad::tts
