#include "salad/data/manifest.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "salad/core/error.h"

namespace salad::data {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& reason, const std::string& msg) {
  throw ManifestLineError(reason, msg);
}

std::string get_string(const json& j, const char* key, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) bad("missing field", std::string("missing field \"") + key + "\"");
    return {};
  }
  if (!j[key].is_string()) {
    bad("bad field",
        std::string("field \"") + key + "\": expected a string, found " + j[key].dump());
  }
  return j[key].get<std::string>();
}

double get_seconds(const json& j, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number() || !std::isfinite(j[key].get<double>()) || j[key].get<double>() < 0) {
    bad("bad field", std::string("field \"") + key +
                         "\": expected a non-negative number of seconds, found " + j[key].dump());
  }
  return j[key].get<double>();
}

}  // namespace

Utterance parse_manifest_line(const std::string& line, const fs::path& base_dir) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    bad("bad json", std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad("bad json", "expected a JSON object, found " + j.dump().substr(0, 40));
  Utterance u;
  if (j.contains("id") && j["id"].is_number_integer()) {
    u.id = std::to_string(j["id"].get<int64_t>());
  } else {
    u.id = get_string(j, "id", true);
  }
  if (u.id.empty()) bad("bad field", "field \"id\" is empty");
  const std::string audio = get_string(j, "audio", true);
  if (audio.empty()) bad("bad field", "field \"audio\" is empty");
  u.audio = fs::path(audio).is_relative() ? (base_dir / audio).lexically_normal() : fs::path(audio);
  u.text = get_string(j, "text", true);
  u.offset = get_seconds(j, "offset", 0.0);
  u.duration = get_seconds(j, "duration", -1.0);
  u.speaker = get_string(j, "speaker", false);
  u.source = get_string(j, "source", false);
  if (j.contains("words") && !j["words"].is_null()) {
    if (!j["words"].is_array())
      bad("bad words", "field \"words\": expected a list of {w, start, end}");
    for (size_t i = 0; i < j["words"].size(); ++i) {
      const json& w = j["words"][i];
      const std::string at = "words[" + std::to_string(i) + "]";
      if (!w.is_object() || !w.contains("w") || !w["w"].is_string() || !w.contains("start") ||
          !w["start"].is_number() || !w.contains("end") || !w["end"].is_number()) {
        bad("bad words",
            at + ": expected {\"w\": string, \"start\": seconds, \"end\": seconds}, found " +
                w.dump().substr(0, 80));
      }
      u.words.push_back(
          {w["w"].get<std::string>(), w["start"].get<double>(), w["end"].get<double>()});
    }
  }
  return u;
}

void validate_words(const Utterance& u) {
  double prev_end = 0;
  for (size_t i = 0; i < u.words.size(); ++i) {
    const Word& w = u.words[i];
    const std::string at = "word " + std::to_string(i) + " '" + w.w + "' [" +
                           std::to_string(w.start) + ", " + std::to_string(w.end) + "]";
    if (!(w.start >= 0) || !(w.end >= w.start)) bad("bad words", at + ": needs 0 <= start <= end");
    if (w.start < prev_end - 1e-6) {
      bad("bad words", at + ": starts before the previous word ends (" + std::to_string(prev_end) +
                           "): unsorted or overlapping");
    }
    if (u.duration >= 0 && w.end > u.duration + 1e-3) {
      bad("bad words", at + ": ends after the utterance (" + std::to_string(u.duration) + " s)");
    }
    prev_end = w.end;
  }
}

Manifest read_manifest(const fs::path& path, double max_skip_fraction) {
  std::ifstream in(path);
  if (!in) throw IoError(path.string() + ": cannot open the manifest");
  Manifest m;
  m.path = path;
  const fs::path base = fs::absolute(path).parent_path();
  std::unordered_set<std::string> ids;
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++m.lines;
    const std::string where = path.string() + ":" + std::to_string(lineno);
    try {
      Utterance u = parse_manifest_line(line, base);
      validate_words(u);
      if (!ids.insert(u.id).second) bad("duplicate id", "id '" + u.id + "' appeared before");
      u.where = where;
      m.utterances.push_back(std::move(u));
    } catch (const ManifestLineError& e) {
      m.skipped.record(e.reason(), where, e.what());
    }
  }
  if (in.bad()) throw IoError(path.string() + ": read error");
  m.skipped.check(m.lines, max_skip_fraction, path.string());
  return m;
}

}  // namespace salad::data
