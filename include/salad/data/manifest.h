// Speech manifests (DESIGN §4): JSONL, one utterance a line:
//   {"id", "audio" (path, relative to the manifest's folder), "offset" (s, optional),
//    "duration" (s, optional: to the end of the file), "text",
//    "words" (optional: [{"w", "start", "end"}], seconds from the utterance start),
//    "speaker" (optional), "source" (optional)}
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "salad/data/skips.h"

namespace salad::data {

struct Word {
  std::string w;
  double start = 0;  ///< seconds from the utterance's start (its offset in the file)
  double end = 0;
};

struct Utterance {
  std::string id;
  std::filesystem::path audio;  ///< absolute (resolved against the manifest's folder)
  double offset = 0;            ///< seconds into the audio file
  double duration = -1;         ///< seconds; < 0: to the end of the file
  std::string text;
  std::vector<Word> words;
  std::string speaker;
  std::string source;
  std::string where;  ///< "manifest.jsonl:LINE", for messages
};

/// A manifest line that cannot be used; reason() is the tag it is counted under.
class ManifestLineError : public std::runtime_error {
 public:
  ManifestLineError(std::string reason, const std::string& msg)
      : std::runtime_error(msg), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

/// Parses one line. Throws ManifestLineError (reasons: "bad json", "missing field",
/// "bad field", "bad words") naming the field and what was expected.
Utterance parse_manifest_line(const std::string& line, const std::filesystem::path& base_dir);

/// Checks word timings: each start <= end, sorted, not overlapping, inside [0, duration] when
/// the duration is known. Throws ManifestLineError("bad words") naming the first bad word.
void validate_words(const Utterance& u);

struct Manifest {
  std::filesystem::path path;
  std::vector<Utterance> utterances;
  int64_t lines = 0;  ///< non-blank lines read
  SkipCounter skipped;
};

/// Reads a whole manifest; bad lines and duplicate ids are logged (file:line), counted and
/// skipped. Throws IoError when the file cannot be read, DataError when more than
/// `max_skip_fraction` of the lines were bad.
Manifest read_manifest(const std::filesystem::path& path, double max_skip_fraction = 1.0);

}  // namespace salad::data
