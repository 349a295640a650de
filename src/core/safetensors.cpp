#include "salad/core/safetensors.h"

#include <ATen/ATen.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "salad/core/shape.h"

namespace salad::safetensors {

using json = nlohmann::json;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

namespace {

// Header sizes above this are rejected before allocating (the reference reader uses 100 MB).
constexpr uint64_t kMaxHeader = 100ull << 20;

struct DTypeEntry {
  const char* name;
  c10::ScalarType type;
};
const DTypeEntry kDTypes[] = {
    {"F64", c10::kDouble}, {"F32", c10::kFloat}, {"F16", c10::kHalf},  {"BF16", c10::kBFloat16},
    {"I64", c10::kLong},   {"I32", c10::kInt},   {"I16", c10::kShort}, {"I8", c10::kChar},
    {"U8", c10::kByte},    {"BOOL", c10::kBool},
};
// Valid safetensors dtypes that this LibTorch build cannot hold.
const char* const kUnsupported[] = {"U16",     "U32",     "U64",     "F8_E4M3", "F8_E5M2",
                                    "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",      "C64"};

[[noreturn]] void fail(const fs::path& p, const std::string& what) {
  throw IoError(p.string() + ": " + what);
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

c10::ScalarType scalar_type_of(const std::string& dtype) {
  for (const auto& e : kDTypes) {
    if (dtype == e.name) return e.type;
  }
  for (const char* u : kUnsupported) {
    if (dtype == u) throw IoError("safetensors dtype '" + dtype + "' is not supported by salad");
  }
  throw IoError("unknown safetensors dtype '" + dtype + "'");
}

std::string dtype_name(c10::ScalarType t) {
  for (const auto& e : kDTypes) {
    if (t == e.type) return e.name;
  }
  throw Error(std::string("LibTorch dtype ") + c10::toString(t) + " has no safetensors dtype");
}

struct File::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
  }
};

File::~File() = default;

std::shared_ptr<const File> File::open(const fs::path& path) {
  std::shared_ptr<File> f(new File());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, "cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ < 8) {
    ::close(fd);
    fail(path, "file is " + std::to_string(f->size_) +
                   " bytes, shorter than the 8-byte header length (truncated or not safetensors)");
  }
  void* addr = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) fail(path, "mmap failed: " + errno_text(err));
  f->mapping_ = std::make_shared<Mapping>();
  f->mapping_->addr = addr;
  f->mapping_->size = f->size_;
  const auto* base = static_cast<const unsigned char*>(addr);

  uint64_t n = 0;
  std::memcpy(&n, base, 8);
  if (n > f->size_ - 8) {
    fail(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                   std::to_string(f->size_) + " bytes; truncated or not safetensors)");
  }
  if (n > kMaxHeader) fail(path, "header length " + std::to_string(n) + " exceeds 100 MB");
  f->data_start_ = 8 + n;
  const uint64_t data_size = f->size_ - f->data_start_;

  json header;
  try {
    header = json::parse(base + 8, base + 8 + n);
  } catch (const json::parse_error& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__['" + m.key() + "'] is not a string");
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "': ";
    if (!v.is_object()) fail(path, where + "entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string())
      fail(path, where + "missing string 'dtype'");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(path, where + "missing array 'shape'");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2 || !v["data_offsets"][0].is_number_unsigned() ||
        !v["data_offsets"][1].is_number_unsigned()) {
      fail(path, where + "'data_offsets' must be two non-negative integers");
    }
    TensorInfo info;
    info.name = name;
    info.dtype = v["dtype"].get<std::string>();
    try {
      info.scalar_type = scalar_type_of(info.dtype);
    } catch (const IoError& e) {
      fail(path, where + e.what());
    }
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(path, where + "shape has a non-integer or negative entry");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / dim) {
        fail(path, where + "shape is too large");
      }
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    info.begin = v["data_offsets"][0].get<uint64_t>();
    info.end = v["data_offsets"][1].get<uint64_t>();
    if (info.end < info.begin) fail(path, where + "data_offsets end before they begin");
    if (info.end > data_size) {
      fail(path, where + "data_offsets [" + std::to_string(info.begin) + ", " +
                     std::to_string(info.end) + ") run past the data section (" +
                     std::to_string(data_size) + " bytes; truncated file?)");
    }
    const uint64_t expected = numel * c10::elementSize(info.scalar_type);
    if (info.end - info.begin != expected) {
      fail(path, where + "dtype " + info.dtype + " and shape " + shape_text(info.shape) + " need " +
                     std::to_string(expected) + " bytes, data_offsets give " +
                     std::to_string(info.end - info.begin));
    }
    f->tensors_.push_back(std::move(info));
  }
  std::sort(f->tensors_.begin(), f->tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < f->tensors_.size(); ++i) {
    const auto& prev = f->tensors_[i - 1];
    const auto& cur = f->tensors_[i];
    if (cur.begin < prev.end) {
      fail(path, "tensor '" + cur.name + "' [" + std::to_string(cur.begin) + ", " +
                     std::to_string(cur.end) + ") overlaps tensor '" + prev.name + "' [" +
                     std::to_string(prev.begin) + ", " + std::to_string(prev.end) + ")");
    }
  }
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

const TensorInfo* File::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

at::Tensor File::get(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) fail(path_, "no tensor named '" + name + "'");
  auto* ptr = static_cast<unsigned char*>(mapping_->addr) + data_start_ + info->begin;
  const auto opts = at::TensorOptions().dtype(info->scalar_type).device(at::kCPU);
  const size_t align = c10::elementSize(info->scalar_type);
  if (reinterpret_cast<uintptr_t>(ptr) % align != 0) {
    at::Tensor out = at::empty(info->shape, opts);
    std::memcpy(out.data_ptr(), ptr, info->end - info->begin);
    return out;
  }
  auto keep = mapping_;
  return at::from_blob(
      ptr, info->shape, [keep](void*) mutable { keep.reset(); }, opts);
}

// ---------------------------------------------------------------------------------------------

Checkpoint Checkpoint::open(const fs::path& what) {
  Checkpoint c;
  c.source_ = what;
  fs::path target = what;
  if (fs::is_directory(what)) {
    std::vector<fs::path> indexes, singles;
    for (const auto& e : fs::directory_iterator(what)) {
      const std::string fn = e.path().filename().string();
      auto ends = [&](const std::string& s) {
        return fn.size() >= s.size() && fn.compare(fn.size() - s.size(), s.size(), s) == 0;
      };
      if (ends(".safetensors.index.json")) indexes.push_back(e.path());
      if (ends(".safetensors") && fn[0] != '.') singles.push_back(e.path());
    }
    if (fs::exists(what / "model.safetensors.index.json")) {
      target = what / "model.safetensors.index.json";
    } else if (fs::exists(what / "model.safetensors")) {
      target = what / "model.safetensors";
    } else if (indexes.size() == 1) {
      target = indexes[0];
    } else if (singles.size() == 1) {
      target = singles[0];
    } else {
      throw IoError(what.string() +
                    ": expected model.safetensors, model.safetensors.index.json or "
                    "exactly one *.safetensors file in the folder, found " +
                    std::to_string(singles.size()) + " .safetensors and " +
                    std::to_string(indexes.size()) + " index files");
    }
  } else if (!fs::exists(what)) {
    throw IoError(what.string() + ": no such file or folder");
  }

  const std::string tn = target.filename().string();
  if (tn.size() > 5 && tn.compare(tn.size() - 5, 5, ".json") == 0) {
    json idx;
    try {
      std::ifstream in(target);
      if (!in) throw IoError(target.string() + ": cannot open");
      idx = json::parse(in);
    } catch (const json::parse_error& e) {
      throw IoError(target.string() + ": not valid JSON: " + e.what());
    }
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object()) {
      throw IoError(target.string() + ": expected an object with a 'weight_map' object");
    }
    if (idx.contains("metadata") && idx["metadata"].is_object()) {
      for (auto m = idx["metadata"].begin(); m != idx["metadata"].end(); ++m) {
        c.metadata_[m.key()] =
            m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      }
    }
    std::map<std::string, size_t> file_index;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        throw IoError(target.string() + ": weight_map['" + it.key() + "'] is not a file name");
      }
      const std::string shard = it.value().get<std::string>();
      auto fi = file_index.find(shard);
      if (fi == file_index.end()) {
        c.files_.push_back(File::open(target.parent_path() / shard));
        fi = file_index.emplace(shard, c.files_.size() - 1).first;
      }
      if (!c.files_[fi->second]->find(it.key())) {
        throw IoError(target.string() + ": weight_map puts tensor '" + it.key() + "' in " + shard +
                      ", which does not contain it");
      }
      c.where_[it.key()] = fi->second;
    }
    for (const auto& f : c.files_) {
      for (const auto& t : f->tensors()) {
        if (!c.where_.count(t.name)) {
          throw IoError(target.string() + ": tensor '" + t.name + "' of " + f->path().string() +
                        " is missing from weight_map");
        }
      }
    }
  } else {
    c.files_.push_back(File::open(target));
    c.metadata_ = c.files_[0]->metadata();
    for (const auto& t : c.files_[0]->tensors()) c.where_[t.name] = 0;
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [k, v] : where_) out.push_back(k);
  return out;
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    throw CheckpointError(source_.string() + ": no tensor named '" + name + "'");
  }
  return *files_[it->second]->find(name);
}

at::Tensor Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    throw CheckpointError(source_.string() + ": no tensor named '" + name + "'");
  }
  return files_[it->second]->get(name);
}

const fs::path& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    throw CheckpointError(source_.string() + ": no tensor named '" + name + "'");
  }
  return files_[it->second]->path();
}

std::vector<fs::path> Checkpoint::files() const {
  std::vector<fs::path> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

int64_t Checkpoint::total_numel() const {
  int64_t n = 0;
  for (const auto& [name, i] : where_) n += files_[i]->find(name)->numel();
  return n;
}

// ---------------------------------------------------------------------------------------------

void save(const fs::path& path, const NamedTensors& tensors,
          const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  std::set<std::string> names;
  uint64_t offset = 0;
  data.reserve(tensors.size());
  // Data goes in order of decreasing element size so that every tensor stays aligned for a
  // zero-copy read (the format allows no gaps between tensors). The JSON key order is irrelevant.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto& ta = tensors[a].second;
    const auto& tb = tensors[b].second;
    return (ta.defined() ? ta.element_size() : 0) > (tb.defined() ? tb.element_size() : 0);
  });
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    if (name == "__metadata__")
      throw Error(path.string() + ": '__metadata__' is not a tensor name");
    if (!names.insert(name).second) {
      throw Error(path.string() + ": duplicate tensor name '" + name + "'");
    }
    if (!t.defined()) throw Error(path.string() + ": tensor '" + name + "' is undefined");
    std::string dt;
    try {
      dt = dtype_name(t.scalar_type());
    } catch (const Error& e) {
      throw Error(path.string() + ": tensor '" + name + "': " + e.what());
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {
        {"dtype", dt}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(c));
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  const uint64_t n = h.size();
  write_file_atomic(path, [&](int fd) {
    write_all(fd, &n, 8, path);
    write_all(fd, h.data(), h.size(), path);
    for (const auto& c : data) {
      write_all(fd, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size(), path);
    }
  });
}

}  // namespace salad::safetensors
