#include "salad/train/checkpoint.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"

namespace salad::train {

namespace {

using json = nlohmann::json;
constexpr const char* kManifest = "checkpoint.json";
constexpr const char* kLatest = "latest";  // for people and tools; loading scans the folders
constexpr const char* kStagingPrefix = ".staging-";

std::optional<int64_t> parse_step(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() <= 5) return std::nullopt;
  const std::string digits = name.substr(5);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

CheckpointStore::CheckpointStore(fs::path run_dir) : dir_(std::move(run_dir) / "checkpoints") {}

std::string CheckpointStore::folder_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%06lld", static_cast<long long>(step));
  return buf;
}

fs::path CheckpointStore::staging(int64_t step) const {
  return dir_ / (kStagingPrefix + folder_name(step));
}

void CheckpointStore::prepare(int64_t step) const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  fs::remove_all(staging(step), ec);
  if (!fs::create_directories(staging(step), ec) && ec) {
    throw IoError("cannot create " + staging(step).string() + ": " + ec.message());
  }
}

void CheckpointStore::commit(int64_t step, int64_t world_size, int64_t keep_last,
                             int64_t keep_step) const {
  const fs::path tmp = staging(step);
  json files = json::object();
  for (const auto& e : fs::directory_iterator(tmp)) {
    if (!e.is_regular_file() || e.path().filename() == kManifest) continue;
    files[e.path().filename().string()] = static_cast<int64_t>(e.file_size());
  }
  const json manifest = {{"format", "salad-checkpoint"},
                         {"version", 1},
                         {"step", step},
                         {"world_size", world_size},
                         {"files", files}};
  write_file_atomic(tmp / kManifest, manifest.dump(2) + "\n");
  fsync_dir(tmp);
  const fs::path final_dir = folder(step);
  std::error_code ec;
  if (fs::exists(final_dir)) {
    // A re-save of the same step (e.g. a resumed run stopped again at once): replace it.
    const fs::path old = dir_ / (".old-" + folder_name(step));
    fs::remove_all(old, ec);
    fs::rename(final_dir, old, ec);
    if (ec) throw IoError("cannot move aside " + final_dir.string() + ": " + ec.message());
    fs::rename(tmp, final_dir, ec);
    if (ec) throw IoError("cannot rename " + tmp.string() + ": " + ec.message());
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp, final_dir, ec);
    if (ec) {
      throw IoError("cannot rename " + tmp.string() + " to " + final_dir.string() + ": " +
                    ec.message());
    }
  }
  fsync_dir(dir_);
  write_file_atomic(dir_ / kLatest, folder_name(step) + "\n");
  if (keep_last <= 0) return;
  int64_t kept = 0;
  for (const int64_t s : steps()) {
    if (s == step || s == keep_step) continue;
    if (s > step) continue;  // newer folders from an abandoned branch: not ours to delete
    if (++kept < keep_last) continue;
    fs::remove_all(folder(s), ec);
    if (ec) spdlog::warn("checkpoint: could not delete {}: {}", folder(s).string(), ec.message());
  }
}

void CheckpointStore::discard(int64_t step) const {
  std::error_code ec;
  fs::remove_all(staging(step), ec);
}

void CheckpointStore::discard_all_staging() const {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().filename().string().rfind(kStagingPrefix, 0) == 0) fs::remove_all(e.path(), ec);
  }
}

std::vector<int64_t> CheckpointStore::steps() const {
  std::vector<int64_t> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (!e.is_directory()) continue;
    if (const auto s = parse_step(e.path().filename().string())) out.push_back(*s);
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

void CheckpointStore::validate(int64_t step) const {
  const fs::path d = folder(step);
  const fs::path m = d / kManifest;
  if (!fs::is_regular_file(m)) {
    throw CheckpointError(d.string() + ": no " + kManifest + " (an incomplete save?)");
  }
  json manifest;
  try {
    manifest = json::parse(read_all(m));
  } catch (const std::exception& e) {
    throw CheckpointError(m.string() + ": not valid JSON (" + e.what() + ")");
  }
  if (!manifest.contains("files") || !manifest["files"].is_object()) {
    throw CheckpointError(m.string() + ": no \"files\" object");
  }
  for (const auto& [name, size] : manifest["files"].items()) {
    const fs::path f = d / name;
    std::error_code ec;
    const auto found = fs::file_size(f, ec);
    if (ec) throw CheckpointError(f.string() + ": missing (listed in " + kManifest + ")");
    if (static_cast<int64_t>(found) != size.get<int64_t>()) {
      throw CheckpointError(f.string() + ": " + std::to_string(found) +
                            " bytes, the manifest says " + std::to_string(size.get<int64_t>()) +
                            " (truncated or overwritten)");
    }
    if (f.extension() == ".safetensors") {
      try {
        safetensors::File::open(f);
      } catch (const Error& e) {
        throw CheckpointError(f.string() + ": unreadable: " + e.what());
      }
    }
  }
}

std::optional<int64_t> CheckpointStore::latest_valid() const {
  // Newest complete folder first. `latest` normally names it; it can lag behind only when a
  // save died between the rename and the pointer update, and that folder is complete.
  for (const int64_t s : steps()) {
    try {
      validate(s);
      return s;
    } catch (const CheckpointError& e) {
      spdlog::warn("checkpoint: skipping {}: {}; falling back to the previous checkpoint",
                   folder_name(s), e.what());
    }
  }
  return std::nullopt;
}

}  // namespace salad::train
