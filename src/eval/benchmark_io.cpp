// Reading benchmark JSONL files (see eval/benchmark.h).
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "salad/core/error.h"
#include "salad/data/document.h"
#include "salad/data/skips.h"
#include "salad/eval/benchmark.h"

namespace salad::eval {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& reason, const std::string& msg) {
  throw data::BadItem(reason, msg);
}

std::string short_dump(const json& j) {
  std::string s = j.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

const json& field(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) {
    bad("missing field", std::string("missing field \"") + key + "\"");
  }
  return j[key];
}

std::string string_field(const json& j, const char* key) {
  const json& v = field(j, key);
  if (!v.is_string()) {
    bad("bad field",
        std::string("field \"") + key + "\": expected a string, found " + short_dump(v));
  }
  return v.get<std::string>();
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// Adds `reader`'s items of `path` to `out`, counting bad lines in `skipped` under prefix+reason.
void read_split(const fs::path& path, const std::string& prefix, std::vector<BenchItem>& out,
                std::map<std::string, int64_t>& skipped) {
  std::ifstream in(path);
  if (!in) throw IoError(path.string() + ": cannot open the benchmark file");
  const fs::path base = fs::absolute(path).parent_path();
  data::SkipCounter skips;
  std::unordered_set<std::string> ids;
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    if (blank(line)) continue;
    const std::string where = path.string() + ":" + std::to_string(lineno);
    try {
      BenchItem item = parse_benchmark_line(line, base);
      if (!ids.insert(item.id).second) bad("duplicate id", "id '" + item.id + "' appeared before");
      item.where = where;
      out.push_back(std::move(item));
    } catch (const data::BadItem& e) {
      skips.record(prefix + e.reason(), where, e.what());
    }
  }
  if (in.bad()) throw IoError(path.string() + ": read error");
  for (const auto& [reason, n] : skips.by_reason()) skipped[reason] += n;
}

}  // namespace

BenchItem parse_benchmark_line(const std::string& line, const fs::path& base_dir) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    bad("bad json", std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad("bad json", "expected a JSON object, found " + short_dump(j));
  BenchItem item;
  const json& id = field(j, "id");
  if (id.is_number_integer()) {
    item.id = std::to_string(id.get<int64_t>());
  } else if (id.is_string() && !id.get<std::string>().empty()) {
    item.id = id.get<std::string>();
  } else {
    bad("bad field",
        "field \"id\": expected a non-empty string or an integer, found " + short_dump(id));
  }
  item.context = string_field(j, "context");
  if (blank(item.context)) bad("empty context", "item '" + item.id + "': the context is empty");
  const json& choices = field(j, "choices");
  if (!choices.is_array()) {
    bad("bad field", "item '" + item.id +
                         "': field \"choices\": expected a list of strings, found " +
                         short_dump(choices));
  }
  for (const json& c : choices) {
    if (!c.is_string()) {
      bad("bad field", "item '" + item.id + "': a choice is not a string: " + short_dump(c));
    }
    item.choices.push_back(c.get<std::string>());
  }
  if (item.choices.size() < 2) {
    bad("too few choices", "item '" + item.id + "' has " + std::to_string(item.choices.size()) +
                               " choice(s), at least 2 are needed");
  }
  const json& answer = field(j, "answer");
  if (!answer.is_number_integer()) {
    bad("bad field", "item '" + item.id + "': field \"answer\": expected an integer, found " +
                         short_dump(answer));
  }
  item.answer = answer.get<int64_t>();
  if (item.answer < 0 || item.answer >= static_cast<int64_t>(item.choices.size())) {
    bad("answer out of range", "item '" + item.id + "': answer " + std::to_string(item.answer) +
                                   " is not an index into its " +
                                   std::to_string(item.choices.size()) + " choices");
  }
  if (j.contains("context_audio") && !j["context_audio"].is_null()) {
    const std::string audio = string_field(j, "context_audio");
    if (audio.empty()) bad("bad field", "item '" + item.id + "': field \"context_audio\" is empty");
    const fs::path p(audio);
    item.context_audio = p.is_relative() ? (base_dir / p).lexically_normal() : p;
  }
  return item;
}

Benchmark read_benchmark(const std::string& name, const fs::path& jsonl, const fs::path& fewshot) {
  Benchmark b;
  b.name = name;
  read_split(jsonl, "", b.items, b.skipped);
  if (!fewshot.empty()) read_split(fewshot, "fewshot: ", b.fewshot, b.skipped);
  return b;
}

}  // namespace salad::eval
