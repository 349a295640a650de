#include "salad/data/feature_cache.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"

namespace salad::data {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kFormat = "salad-feature-cache";
constexpr int kVersion = 1;

std::string shard_name(int64_t i) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "shard-%06lld.safetensors", static_cast<long long>(i));
  return buf;
}

FeatureCacheMeta read_meta(const fs::path& dir) {
  const fs::path p = dir / "cache.json";
  std::ifstream in(p);
  if (!in)
    throw IoError(dir.string() +
                  ": not a feature cache (no cache.json; make one with salad-encode)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    throw IoError(p.string() + ": not valid JSON: " + e.what());
  }
  if (j.value("format", "") != kFormat || j.value("version", 0) != kVersion) {
    throw IoError(p.string() + ": expected format \"" + kFormat + "\" version " +
                  std::to_string(kVersion) + ", found " + j.dump().substr(0, 120));
  }
  FeatureCacheMeta m;
  try {
    m.encoder = j.at("encoder").get<std::string>();
    m.feature_dim = j.at("feature_dim").get<int64_t>();
    m.dtype = j.at("dtype").get<std::string>();
    m.samples_per_frame = j.at("samples_per_frame").get<int64_t>();
    m.sample_rate = j.at("sample_rate").get<int64_t>();
  } catch (const json::exception& e) {
    throw IoError(p.string() + ": " + e.what());
  }
  return m;
}

std::string meta_json(const FeatureCacheMeta& m) {
  return json{{"format", kFormat},
              {"version", kVersion},
              {"encoder", m.encoder},
              {"feature_dim", m.feature_dim},
              {"dtype", m.dtype},
              {"samples_per_frame", m.samples_per_frame},
              {"sample_rate", m.sample_rate}}
             .dump(2) +
         "\n";
}

// Index lines, plus entries recovered from shards the index does not mention (a run that died
// between renaming a shard and appending its lines). Returns the recovered entries separately.
std::vector<std::pair<std::string, CacheEntry>> load_entries(
    const fs::path& dir, std::unordered_map<std::string, CacheEntry>& entries, int64_t& max_shard) {
  std::set<std::string> indexed_shards;
  std::ifstream in(dir / "index.jsonl");
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.empty()) continue;
    try {
      const json j = json::parse(line);
      CacheEntry e{j.at("shard").get<std::string>(), j.at("frames").get<int64_t>()};
      indexed_shards.insert(e.shard);
      entries[j.at("id").get<std::string>()] = e;
    } catch (const json::exception&) {
      // Only a torn last line (a crash mid-append) is expected; its shard is re-indexed below.
      spdlog::warn("{}: ignoring unreadable index line {}", (dir / "index.jsonl").string(), lineno);
    }
  }
  std::vector<std::pair<std::string, CacheEntry>> recovered;
  max_shard = -1;
  std::vector<fs::path> shards;
  for (const auto& f : fs::directory_iterator(dir)) {
    const std::string n = f.path().filename().string();
    if (n.rfind("shard-", 0) == 0 && f.path().extension() == ".safetensors")
      shards.push_back(f.path());
  }
  std::sort(shards.begin(), shards.end());
  for (const auto& p : shards) {
    const std::string n = p.filename().string();
    max_shard = std::max<int64_t>(max_shard, std::stoll(n.substr(6, n.size() - 6 - 12)));
    bool complete = indexed_shards.count(n) > 0;
    const auto file = safetensors::File::open(p);
    if (complete) {
      for (const auto& t : file->tensors()) complete &= entries.count(t.name) > 0;
    }
    if (complete) continue;
    for (const auto& t : file->tensors()) {
      CacheEntry e{n, t.shape.empty() ? 0 : t.shape[0]};
      entries[t.name] = e;
      recovered.emplace_back(t.name, e);
    }
  }
  return recovered;
}

std::string index_lines(const std::vector<std::pair<std::string, CacheEntry>>& es) {
  std::string out;
  for (const auto& [id, e] : es) {
    out += json{{"id", id}, {"shard", e.shard}, {"frames", e.frames}}.dump() + "\n";
  }
  return out;
}

void append_durably(const fs::path& p, const std::string& text) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError("cannot open " + p.string() + ": " + errno_text(errno));
  try {
    write_all(fd, text.data(), text.size(), p);
    if (::fsync(fd) != 0) throw IoError("fsync of " + p.string() + ": " + errno_text(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

}  // namespace

FeatureCache FeatureCache::open(const fs::path& dir) {
  FeatureCache c;
  c.dir_ = dir;
  c.meta_ = read_meta(dir);
  int64_t max_shard;
  const auto recovered = load_entries(dir, c.entries_, max_shard);
  if (!recovered.empty()) {
    spdlog::warn("{}: {} utterances found in shards but not in index.jsonl (interrupted run?)",
                 dir.string(), recovered.size());
  }
  return c;
}

int64_t FeatureCache::frames(const std::string& id) const {
  auto it = entries_.find(id);
  if (it == entries_.end())
    throw DataError(dir_.string() + ": no features for utterance '" + id + "'");
  return it->second.frames;
}

at::Tensor FeatureCache::get(const std::string& id) const {
  auto it = entries_.find(id);
  if (it == entries_.end())
    throw DataError(dir_.string() + ": no features for utterance '" + id + "'");
  std::shared_ptr<const safetensors::File> f;
  {
    std::lock_guard<std::mutex> lk(shards_->mu);
    auto& slot = shards_->open[it->second.shard];
    if (!slot) slot = safetensors::File::open(dir_ / it->second.shard);
    f = slot;
  }
  return f->get(id);
}

std::vector<std::string> FeatureCache::ids() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [id, e] : entries_) out.push_back(id);
  std::sort(out.begin(), out.end());
  return out;
}

FeatureCacheWriter::FeatureCacheWriter(const fs::path& dir, const FeatureCacheMeta& meta,
                                       int64_t shard_bytes)
    : dir_(dir), meta_(meta), shard_bytes_(shard_bytes) {
  fs::create_directories(dir);
  if (fs::exists(dir / "cache.json")) {
    const FeatureCacheMeta old = read_meta(dir);
    if (!(old == meta)) {
      throw DataError(dir.string() + ": this cache was made with encoder '" + old.encoder +
                      "' (dim " + std::to_string(old.feature_dim) + ", " + old.dtype +
                      "), the run asks for '" + meta.encoder + "' (dim " +
                      std::to_string(meta.feature_dim) + ", " + meta.dtype +
                      "): use another --out folder or delete this one");
    }
  } else {
    write_file_atomic(dir / "cache.json", meta_json(meta));
  }
  std::unordered_map<std::string, CacheEntry> entries;
  int64_t max_shard;
  const auto recovered = load_entries(dir, entries, max_shard);
  if (!recovered.empty()) {
    spdlog::warn("{}: re-indexing {} utterances of shards missing from index.jsonl", dir.string(),
                 recovered.size());
    append_durably(dir / "index.jsonl", index_lines(recovered));
  }
  for (const auto& [id, e] : entries) done_.insert(id);
  next_shard_ = max_shard + 1;
}

FeatureCacheWriter::~FeatureCacheWriter() {
  if (!pending_.empty()) {
    spdlog::warn("{}: {} encoded utterances were not flushed and will be redone on resume",
                 dir_.string(), pending_.size());
  }
}

bool FeatureCacheWriter::contains(const std::string& id) const {
  return done_.count(id) > 0 || pending_ids_.count(id) > 0;
}

void FeatureCacheWriter::add(const std::string& id, const at::Tensor& features) {
  const c10::ScalarType want = meta_.dtype == "I64" ? at::kLong : at::kFloat;
  if (features.dim() != 2 || features.size(1) != meta_.feature_dim ||
      features.scalar_type() != want) {
    throw Error("feature cache: utterance '" + id + "' has features " +
                std::string(features.toString()) + " " + c10::str(features.sizes()) +
                ", expected [frames, " + std::to_string(meta_.feature_dim) + "] " + meta_.dtype);
  }
  if (contains(id)) throw DataError("feature cache: utterance '" + id + "' is already cached");
  pending_.emplace_back(id, features.contiguous());
  pending_ids_.insert(id);
  pending_bytes_ += features.numel() * features.element_size();
  if (pending_bytes_ >= shard_bytes_) flush();
}

void FeatureCacheWriter::flush() {
  if (pending_.empty()) return;
  const std::string name = shard_name(next_shard_);
  safetensors::save(dir_ / name, pending_, {{"encoder", meta_.encoder}});
  std::vector<std::pair<std::string, CacheEntry>> lines;
  for (const auto& [id, t] : pending_) lines.emplace_back(id, CacheEntry{name, t.size(0)});
  append_durably(dir_ / "index.jsonl", index_lines(lines));
  for (const auto& [id, t] : pending_) done_.insert(id);
  pending_.clear();
  pending_ids_.clear();
  pending_bytes_ = 0;
  ++next_shard_;
  ++shards_written_;
}

}  // namespace salad::data
