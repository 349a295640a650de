// The private half of data::Loader (see loader_sources.h): splitmix64/mt19937_64-based hashing
// and permutations that give the same data order on every standard library; the text corpus
// reader (line offsets only, pread from any thread); and the sources: opening a speech manifest
// (grouping untimed utterances of a speaker into items) or indexing a text corpus, and building
// one item's documents split to the context. Bad data (a FeatureFn that throws, features of the
// wrong shape or dtype, a line that does not parse, an unusable transcript) becomes a counted
// skip; anything else that throws is a bug and propagates to Loader::next().
#include "data/loader_sources.h"

#include <fcntl.h>
#include <unistd.h>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "salad/core/error.h"
#include "salad/text/tokenizer.h"

namespace salad::data::loader_detail {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- Deterministic randomness -----------------------------------------------------------------

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hash_values(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x73616c61642d6461ull;
  for (const uint64_t v : values) h = mix64(h ^ mix64(v));
  return h;
}

double unit_double(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }

uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  // Reject the lowest (2^64 mod n) values so every residue is equally likely.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i + 1)));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

// ---- Text corpus file --------------------------------------------------------------------------

/// A corpus read by offset (pread is safe from several threads); only line offsets are kept in
/// memory, so a corpus larger than RAM works.
class TextFile {
 public:
  explicit TextFile(const fs::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      throw IoError(path.string() + ": cannot open the text corpus: " + errno_text(errno));
    }
  }
  ~TextFile() { ::close(fd_); }
  TextFile(const TextFile&) = delete;
  TextFile& operator=(const TextFile&) = delete;

  /// Up to `length` bytes at `offset`; returns fewer only at the end of the file.
  int64_t read_at(int64_t offset, char* out, int64_t length) const {
    int64_t done = 0;
    while (done < length) {
      const ssize_t n = ::pread(fd_, out + done, static_cast<size_t>(length - done),
                                static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw IoError(path_.string() + ": read error: " + errno_text(errno));
      }
      if (n == 0) break;
      done += n;
    }
    return done;
  }

  std::string read_line(int64_t offset, int64_t length) const {
    std::string s(static_cast<size_t>(length), '\0');
    if (read_at(offset, s.data(), length) != length) {
      throw IoError(path_.string() + ": the file shrank while training read it (byte " +
                    std::to_string(offset) + ")");
    }
    return s;
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return is_space(c); });
}

BuiltItem skipped(std::string reason, std::string where, std::string message) {
  BuiltItem b;
  b.skip_reason = std::move(reason);
  b.where = std::move(where);
  b.message = std::move(message);
  return b;
}

/// Splits a built document to the context; bad data (BadItem, other DataErrors) becomes a skip.
template <class F>
BuiltItem finish(F&& make_document, const std::string& source, const std::string& name,
                 const std::string& where, int64_t context) {
  BuiltItem b;
  b.where = where;
  try {
    Document d = make_document();
    d.name = source + "/" + name;
    d.source = source;
    b.parts = split_to_context(std::move(d), context);
    b.split = b.parts.size() > 1;
    for (Document& p : b.parts) p.source = source;
  } catch (const BadItem& e) {
    return skipped(e.reason(), where, e.what());
  } catch (const DataError& e) {
    return skipped("bad data", where, e.what());
  }
  return b;
}

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "] " + std::string(c10::toString(t.scalar_type()));
}

/// Why a FeatureFn's tensor cannot go into a batch ("" when it can): make_batch needs every
/// segment [F >= 1, feature_dim] of one dtype kind, and one bad utterance must be a skip, not a
/// DataError in the packer that ends the run.
std::string check_features(const at::Tensor& f, const BuildContext& c) {
  const std::string want = "expected features [frames >= 1, " + std::to_string(c.feature_dim) +
                           "] of " + (c.codes ? "integer codes" : "floating point") + ", found ";
  if (!f.defined()) return want + "no tensor";
  const bool ok_dtype = c.codes ? at::isIntegralType(f.scalar_type(), /*includeBool=*/false)
                                : at::isFloatingType(f.scalar_type());
  if (f.dim() != 2 || f.size(0) < 1 || f.size(1) < 1 || !ok_dtype ||
      (c.feature_dim > 0 && f.size(1) != c.feature_dim)) {
    return want + shape_of(f);
  }
  return "";
}

}  // namespace

// ---- Sources -----------------------------------------------------------------------------------

Source::~Source() = default;

std::unique_ptr<Source> Source::open(const SourceSpec& spec, int64_t utterance_group,
                                     double max_skip_fraction) {
  std::unique_ptr<Source> s(new Source);
  s->spec_ = spec;
  if (spec.kind == "speech") {
    s->manifest_ = read_manifest(spec.path, max_skip_fraction);
    const auto& utts = s->manifest_.utterances;
    // Untimed utterances are chained in runs of consecutive lines of one speaker; a timed
    // utterance, or one with a blank transcript (skipped on its own instead of taking its run
    // down with it), is an item by itself.
    bool open_run = false;
    for (int64_t i = 0; i < static_cast<int64_t>(utts.size()); ++i) {
      const Utterance& u = utts[static_cast<size_t>(i)];
      if (!u.words.empty() || is_blank(u.text)) {
        s->groups_.push_back({i, i + 1});
        open_run = false;
        continue;
      }
      if (open_run) {
        auto& last = s->groups_.back();
        if (last.second - last.first < utterance_group &&
            utts[static_cast<size_t>(last.second - 1)].speaker == u.speaker) {
          last.second = i + 1;
          continue;
        }
      }
      s->groups_.push_back({i, i + 1});
      open_run = true;
    }
    return s;
  }
  s->file_ = std::make_unique<TextFile>(spec.path);
  // Index the non-blank lines; the format is decided by the first one.
  std::vector<char> buf(size_t{1} << 20);
  int64_t pos = 0;
  int64_t line_start = 0;
  int64_t number = 1;
  bool blank = true;
  bool first_line = true;
  auto end_line = [&](int64_t end) {
    if (!blank) s->lines_.push_back({line_start, end - line_start, number});
    ++number;
    line_start = end + 1;
    blank = true;
  };
  for (;;) {
    const int64_t n = s->file_->read_at(pos, buf.data(), static_cast<int64_t>(buf.size()));
    if (n == 0) break;
    int64_t i = 0;
    if (pos == 0 && n >= 3 && std::memcmp(buf.data(), "\xEF\xBB\xBF", 3) == 0) {
      i = 3;  // a UTF-8 byte-order mark
      line_start = 3;
    }
    for (; i < n; ++i) {
      const char c = buf[static_cast<size_t>(i)];
      if (c == '\n') {
        end_line(pos + i);
      } else if (blank && !is_space(c)) {
        blank = false;
        if (first_line) {
          s->jsonl_ = c == '{';
          first_line = false;
        }
      }
    }
    pos += n;
  }
  end_line(pos);
  return s;
}

int64_t Source::items() const {
  return static_cast<int64_t>(spec_.kind == "speech" ? groups_.size() : lines_.size());
}

std::string Source::describe() const {
  if (spec_.kind == "speech") {
    std::string d = std::to_string(items()) + " items (" +
                    std::to_string(manifest_.utterances.size()) + " utterances";
    if (manifest_.skipped.total() > 0) d += ", bad lines: " + manifest_.skipped.summary();
    return d + ")";
  }
  return std::to_string(items()) + " items (" + (jsonl_ ? "JSONL" : "plain lines") + ")";
}

BuiltItem Source::build(int64_t item, std::mt19937_64& rng, const BuildContext& c) const {
  return spec_.kind == "speech" ? build_speech(item, rng, c) : build_text(item, c);
}

BuiltItem Source::build_speech(int64_t item, std::mt19937_64& rng, const BuildContext& c) const {
  const auto [begin, end] = groups_[static_cast<size_t>(item)];
  const auto& utts = manifest_.utterances;
  const Utterance& first = utts[static_cast<size_t>(begin)];
  std::string where = first.where;
  std::string name = first.id;
  for (int64_t i = begin + 1; i < end; ++i) name += "+" + utts[static_cast<size_t>(i)].id;
  if (end - begin > 1) where += " (+" + std::to_string(end - begin - 1) + " chained)";

  std::vector<const Utterance*> group;
  std::vector<at::Tensor> features;
  for (int64_t i = begin; i < end; ++i) {
    const Utterance& u = utts[static_cast<size_t>(i)];
    at::Tensor f;
    // A FeatureFn is user code (a cache lookup, an encoder): whatever it throws, from a
    // salad::Error to a c10::Error of a bad reshape, is this utterance's problem, not the run's.
    try {
      f = (*c.features)(u);
    } catch (const c10::Error& e) {
      return skipped("missing features", u.where,
                     "utterance '" + u.id + "': " + e.what_without_backtrace());
    } catch (const std::exception& e) {
      return skipped("missing features", u.where, "utterance '" + u.id + "': " + e.what());
    }
    if (std::string bad = check_features(f, c); !bad.empty()) {
      return skipped("bad features", u.where, "utterance '" + u.id + "': " + bad);
    }
    group.push_back(&u);
    features.push_back(std::move(f));
  }
  return finish(
      [&] {
        if (group.size() == 1 && !first.words.empty()) {
          return interleave_utterance(first, features[0], *c.tokenizer, *c.interleave, rng);
        }
        return chain_utterances(group, features, *c.tokenizer, *c.interleave, rng);
      },
      spec_.name, name, where, c.context);
}

BuiltItem Source::build_text(int64_t item, const BuildContext& c) const {
  const Line& l = lines_[static_cast<size_t>(item)];
  const std::string where = spec_.path.string() + ":" + std::to_string(l.number);
  std::string text = file_->read_line(l.offset, l.length);
  if (!text.empty() && text.back() == '\r') text.pop_back();
  std::string id = std::to_string(l.number);
  if (jsonl_) {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      return skipped("bad json", where, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      return skipped("bad json", where,
                     "expected {\"id\", \"text\": string}, found " + j.dump().substr(0, 80));
    }
    if (j.contains("id") && j["id"].is_string()) {
      id = j["id"].get<std::string>();
    } else if (j.contains("id") && j["id"].is_number_integer()) {
      id = std::to_string(j["id"].get<int64_t>());
    }
    text = j["text"].get<std::string>();
  }
  return finish([&] { return text_document(id, spec_.name, text, *c.tokenizer); }, spec_.name, id,
                where, c.context);
}

}  // namespace salad::data::loader_detail
