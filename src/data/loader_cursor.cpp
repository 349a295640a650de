// LoaderCursor's JSON form and the data identity (sources, item counts, packing and interleaving
// options) whose fingerprint a cursor carries and is checked against when a loader resumes.
#include "salad/data/loader.h"

#include <charconv>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "data/loader_sources.h"
#include "salad/core/error.h"

namespace salad::data {

namespace ld = loader_detail;
using json = nlohmann::json;

namespace {

[[noreturn]] void cursor_error(const std::string& where, const std::string& msg) {
  throw CheckpointError(where + ": data loader cursor: " + msg);
}

// ---- Data identity ------------------------------------------------------------------------------

/// The shortest decimal that reads back as `v` ("1", "0.1"), so equal weights print equal.
std::string exact(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string flag(bool b) { return b ? "true" : "false"; }

std::string first_name(InterleaveOptions::First f) {
  switch (f) {
    case InterleaveOptions::First::kText:
      return "text";
    case InterleaveOptions::First::kSpeech:
      return "speech";
    case InterleaveOptions::First::kRandom:
      break;
  }
  return "random";
}

}  // namespace

namespace loader_detail {

/// LoaderCursor::identity of a loader whose sources have `counts` items.
std::map<std::string, std::string> data_identity(const LoaderOptions& o,
                                                 const std::vector<int64_t>& counts) {
  std::map<std::string, std::string> id;
  for (size_t i = 0; i < o.sources.size(); ++i) {
    const std::string at = "sources[" + std::to_string(i) + "].";
    id[at + "name"] = o.sources[i].name;
    id[at + "kind"] = o.sources[i].kind;
    id[at + "weight"] = exact(o.sources[i].weight);
    id[at + "items"] = std::to_string(counts[i]);
  }
  id["pack.context"] = std::to_string(o.pack.context);
  id["pack.pad_to_context"] = flag(o.pack.pad_to_context);
  id["rows"] = std::to_string(o.rows);
  id["utterance_group"] = std::to_string(o.utterance_group);
  id["repeat"] = flag(o.repeat);
  const InterleaveOptions& in = o.interleave;
  id["interleave.text_words_min"] = std::to_string(in.text_words_min);
  id["interleave.text_words_max"] = std::to_string(in.text_words_max);
  id["interleave.speech_words_min"] = std::to_string(in.speech_words_min);
  id["interleave.speech_words_max"] = std::to_string(in.speech_words_max);
  id["interleave.first"] = first_name(in.first);
  id["interleave.frame_rate"] = exact(in.frame_rate);
  id["interleave.end_tolerance"] = exact(in.end_tolerance);
  return id;
}

/// 16 hex digits of an FNV-1a hash of the "key=value" lines, finished with splitmix64.
std::string fingerprint_of(const std::map<std::string, std::string>& identity) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto feed = [&](const std::string& text) {
    for (const unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
    h = (h ^ 0x0a) * 0x100000001b3ull;  // a separator no key or value ends with
  };
  for (const auto& [key, value] : identity) feed(key + "=" + value);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(ld::mix64(h)));
  return hex;
}

/// "sources[1].items: 40 then, 41 now; pack.context: 128 then, 256 now" (every key that differs).
std::string identity_changes(const std::map<std::string, std::string>& saved,
                             const std::map<std::string, std::string>& now) {
  std::map<std::string, std::pair<std::string, std::string>> keys;
  for (const auto& [k, v] : saved) keys[k].first = v;
  for (const auto& [k, v] : now) keys[k].second = v;
  std::string out;
  for (const auto& [k, v] : keys) {
    if (saved.count(k) && now.count(k) && v.first == v.second) continue;
    out += (out.empty() ? "" : "; ") + k + ": " +
           (saved.count(k) ? "'" + v.first + "'" : "nothing") + " then, " +
           (now.count(k) ? "'" + v.second + "'" : "nothing") + " now";
  }
  return out;
}

}  // namespace loader_detail

// ---- LoaderCursor -------------------------------------------------------------------------------

constexpr int kCursorVersion = 2;

std::string LoaderCursor::to_json() const {
  json j;
  j["format"] = "salad-loader-cursor";
  j["version"] = kCursorVersion;
  j["seed"] = seed;
  j["rank"] = rank;
  j["world_size"] = world_size;
  j["draws"] = draws;
  j["skip_parts"] = skip_parts;
  j["sources"] = json::array();
  for (const SourceCursor& s : sources)
    j["sources"].push_back({{"epoch", s.epoch}, {"index", s.index}});
  j["fingerprint"] = fingerprint;
  j["identity"] = identity;
  return j.dump();
}

LoaderCursor LoaderCursor::from_json(const std::string& text, const std::string& where) {
  auto fail = [&](const std::string& msg) { cursor_error(where, msg); };
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail("expected a JSON object, found " + std::string(j.type_name()));
  auto found = [](const json& o, const char* key) {
    return o.contains(key) ? o.at(key).dump().substr(0, 80) : std::string("nothing");
  };
  if (!j.contains("format") || !j.at("format").is_string() ||
      j.at("format").get<std::string>() != "salad-loader-cursor") {
    fail("expected \"format\": \"salad-loader-cursor\", found " + found(j, "format"));
  }
  if (!j.contains("version") || !j.at("version").is_number_integer()) {
    fail("\"version\": expected an integer, found " + found(j, "version"));
  }
  if (j.at("version") != kCursorVersion) {
    fail("version " + j.at("version").dump() + " is not supported: this build reads version " +
         std::to_string(kCursorVersion) +
         " only (version 1 has no data fingerprint; resume without the data cursor to start the "
         "data stream afresh)");
  }
  auto integer = [&](const json& o, const char* key, const std::string& at) -> int64_t {
    if (!o.contains(key) || !o.at(key).is_number_integer()) {
      fail(at + "\"" + key + "\": expected an integer, found " + found(o, key));
    }
    if (o.at(key).is_number_unsigned() && o.at(key).get<uint64_t>() > INT64_MAX) {
      fail(at + "\"" + key + "\": out of range, found " + o.at(key).dump());
    }
    const int64_t v = o.at(key).get<int64_t>();
    if (v < 0) fail(at + "\"" + key + "\": expected >= 0, found " + std::to_string(v));
    return v;
  };
  LoaderCursor c;
  if (!j.contains("seed") || !j.at("seed").is_number_unsigned()) {
    fail("\"seed\": expected an unsigned integer, found " + found(j, "seed"));
  }
  c.seed = j.at("seed").get<uint64_t>();
  c.rank = integer(j, "rank", "");
  c.world_size = integer(j, "world_size", "");
  c.draws = integer(j, "draws", "");
  c.skip_parts = integer(j, "skip_parts", "");
  if (!j.contains("sources") || !j.at("sources").is_array()) {
    fail("\"sources\": expected a list of {epoch, index}, found " + found(j, "sources"));
  }
  const json& sources = j.at("sources");
  for (size_t i = 0; i < sources.size(); ++i) {
    const json& s = sources.at(i);
    const std::string at = "sources[" + std::to_string(i) + "].";
    if (!s.is_object()) fail(at.substr(0, at.size() - 1) + ": expected {epoch, index}");
    c.sources.push_back({integer(s, "epoch", at), integer(s, "index", at)});
  }
  if (!j.contains("fingerprint") || !j.at("fingerprint").is_string()) {
    fail("\"fingerprint\": expected a string, found " + found(j, "fingerprint"));
  }
  c.fingerprint = j.at("fingerprint").get<std::string>();
  if (!j.contains("identity") || !j.at("identity").is_object()) {
    fail("\"identity\": expected an object of strings, found " + found(j, "identity"));
  }
  for (const auto& [key, value] : j.at("identity").items()) {
    if (!value.is_string()) {
      fail("\"identity\".\"" + key + "\": expected a string, found " + value.dump());
    }
    c.identity[key] = value.get<std::string>();
  }
  return c;
}

bool LoaderCursor::operator==(const LoaderCursor& o) const {
  if (sources.size() != o.sources.size()) return false;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (sources[i].epoch != o.sources[i].epoch || sources[i].index != o.sources[i].index) {
      return false;
    }
  }
  return draws == o.draws && skip_parts == o.skip_parts && seed == o.seed && rank == o.rank &&
         world_size == o.world_size && fingerprint == o.fingerprint && identity == o.identity;
}

}  // namespace salad::data
