// tests/data_pipeline mirrors src/data (tests/data holds golden files).
#include "salad/data/manifest.h"

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::data {
namespace {

TEST(ManifestTest, ParsesFieldsAndResolvesPaths) {
  test::TempDir d;
  test::write_text(
      d / "sub/m.jsonl",
      R"({"id": "u1", "audio": "wav/a.wav", "offset": 1.5, "duration": 2.0, "text": "hi there",)"
      R"( "words": [{"w": "hi", "start": 0.1, "end": 0.4}, {"w": "there", "start": 0.5, "end": 0.9}],)"
      R"( "speaker": "s1", "source": "ls"})"
      "\n\n"
      R"({"id": 7, "audio": "/abs/b.flac", "text": ""})"
      "\n");
  const Manifest m = read_manifest(d / "sub/m.jsonl");
  ASSERT_EQ(m.utterances.size(), 2u);
  EXPECT_EQ(m.lines, 2);
  const Utterance& u = m.utterances[0];
  EXPECT_EQ(u.audio, d.path() / "sub/wav/a.wav");
  EXPECT_DOUBLE_EQ(u.offset, 1.5);
  EXPECT_DOUBLE_EQ(u.duration, 2.0);
  ASSERT_EQ(u.words.size(), 2u);
  EXPECT_EQ(u.words[1].w, "there");
  EXPECT_EQ(u.speaker, "s1");
  EXPECT_EQ(u.where, (d / "sub/m.jsonl").string() + ":1");
  EXPECT_EQ(m.utterances[1].id, "7");
  EXPECT_DOUBLE_EQ(m.utterances[1].duration, -1.0);
  EXPECT_EQ(m.skipped.total(), 0);
}

TEST(ManifestTest, BadLinesAreCountedPerReasonAndSkipped) {
  test::TempDir d;
  test::write_text(
      d / "m.jsonl",
      "not json\n"
      R"({"audio": "a.wav", "text": "x"})"
      "\n"
      R"({"id": "a", "audio": 3, "text": "x"})"
      "\n"
      R"({"id": "b", "audio": "b.wav", "text": "x", "duration": -1})"
      "\n"
      R"({"id": "c", "audio": "c.wav", "text": "x y", "duration": 1, "words": [{"w": "x", "start": 0.5, "end": 0.6}, {"w": "y", "start": 0.2, "end": 0.3}]})"
      "\n"
      R"({"id": "d", "audio": "d.wav", "text": "x", "duration": 1, "words": [{"w": "x", "start": 0.5, "end": 1.6}]})"
      "\n"
      R"({"id": "e", "audio": "e.wav", "text": "ok"})"
      "\n"
      R"({"id": "e", "audio": "e2.wav", "text": "dup"})"
      "\n"
      R"({"id": "f", "audio": "f.wav", "text": "x", "words": [{"w": "x"}]})"
      "\n");
  const Manifest m = read_manifest(d / "m.jsonl");
  ASSERT_EQ(m.utterances.size(), 1u);
  EXPECT_EQ(m.utterances[0].id, "e");
  EXPECT_EQ(m.lines, 9);
  EXPECT_EQ(m.skipped.count("bad json"), 1);
  EXPECT_EQ(m.skipped.count("missing field"), 1);
  EXPECT_EQ(m.skipped.count("bad field"), 2);
  EXPECT_EQ(m.skipped.count("bad words"), 3);
  EXPECT_EQ(m.skipped.count("duplicate id"), 1);
  EXPECT_EQ(
      m.skipped.summary(),
      "8 skipped (bad field: 2, bad json: 1, bad words: 3, duplicate id: 1, missing field: 1)");
  test::expect_error<DataError>(
      [&] { read_manifest(d / "m.jsonl", 0.5); },
      {(d / "m.jsonl").string(), "8 skipped", "of 9 items", "data.max_skip_fraction"});
}

TEST(ManifestTest, WordTimingMessages) {
  Utterance u;
  u.duration = 1.0;
  u.words = {{"a", 0.0, 0.5}, {"b", 0.4, 0.6}};
  try {
    validate_words(u);
    FAIL();
  } catch (const ManifestLineError& e) {
    EXPECT_EQ(e.reason(), "bad words");
    EXPECT_NE(std::string(e.what()).find("word 1 'b'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("unsorted or overlapping"), std::string::npos) << e.what();
  }
  u.words = {{"a", 0.3, 0.2}};
  EXPECT_THROW(validate_words(u), ManifestLineError);
  u.words = {{"a", 0.0, 0.5}, {"b", 0.5, 1.0}};
  EXPECT_NO_THROW(validate_words(u));
}

TEST(ManifestTest, MissingFileIsAnIoError) {
  test::expect_error<IoError>([] { read_manifest("/nonexistent/m.jsonl"); },
                              {"/nonexistent/m.jsonl", "cannot open the manifest"});
}

}  // namespace
}  // namespace salad::data
