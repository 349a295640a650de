// SentencePieceTokenizer: the libsalad side. All sentencepiece work happens in libsalad_spm.so,
// opened here with dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND):
//  - RTLD_LOCAL keeps the module's and libsentencepiece's symbols (among them a whole
//    protobuf-lite) out of the global scope, so they cannot interpose on LibTorch's libprotobuf;
//  - RTLD_DEEPBIND makes libsentencepiece resolve its own protobuf symbols to its bundled copy
//    first, instead of to the libprotobuf.so.32 that LibTorch already put in the global scope.
// What goes wrong otherwise (Debian 12: sentencepiece 0.1.97 bundling protobuf 3.14, LibTorch
// 1.13 on libprotobuf 3.21.12): linking libsentencepiece into a LibTorch program segfaults before
// main() (libprotobuf's static initialisers call sentencepiece's MergeFromImpl); dlopen() without
// RTLD_DEEPBIND, LOCAL or GLOBAL, binds sentencepiece's generated code to libprotobuf 3.21, which
// fails its version check ("compiled against 3.14.0") and then deadlocks in InitSCCImpl.
// The module is never dlclose()d: sentencepiece keeps thread-local state with destructors.
#include "salad/text/sentencepiece_tokenizer.h"
#include "salad/text/utf8.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <utility>

#include "salad/core/atomic_file.h"
#include "salad/core/error.h"
#include "text/spm_module_api.h"

namespace salad::text {

namespace fs = std::filesystem;

namespace {

constexpr const char* kModuleFile = "libsalad_spm.so";
constexpr const char* kModuleEnv = "SALAD_SPM_MODULE";

// ---- the module ----------------------------------------------------------------------------

struct Module {
  std::string path;
  decltype(&salad_spm_load) load;
  decltype(&salad_spm_free) free;
  decltype(&salad_spm_encode) encode;
  decltype(&salad_spm_decode) decode;
  decltype(&salad_spm_vocab_size) vocab_size;
  decltype(&salad_spm_id_to_piece) id_to_piece;
  decltype(&salad_spm_piece_to_id) piece_to_id;
  decltype(&salad_spm_special_id) special_id;
  decltype(&salad_spm_train) train;
};

// Lives in libsalad, so dladdr() on it names libsalad's file.
const char kLibsaladAnchor = 0;

fs::path libsalad_file() {
  Dl_info info{};
  if (::dladdr(&kLibsaladAnchor, &info) != 0 && info.dli_fname && info.dli_fname[0] != '\0') {
    return info.dli_fname;
  }
  // libsalad linked into the executable itself: the main program has no name in the link map.
  std::error_code ec;
  return fs::read_symlink("/proc/self/exe", ec);
}

template <class Fn>
void bind_symbol(void* handle, const std::string& path, const char* symbol, Fn* fn) {
  ::dlerror();
  void* p = ::dlsym(handle, symbol);
  if (!p) {
    const char* why = ::dlerror();
    throw IoError("the SentencePiece module " + path + " lacks the symbol " + symbol + " (" +
                  (why ? why : "null") + "); it does not belong to this libsalad: rebuild it");
  }
  *fn = reinterpret_cast<Fn>(p);
}

Module open_module() {
  std::string path;
  std::string origin;
  const char* env = std::getenv(kModuleEnv);
  if (env && env[0] != '\0') {
    path = env;
    origin = std::string("from $") + kModuleEnv;
  } else {
    const fs::path lib = libsalad_file();
    path = (lib.parent_path() / kModuleFile).string();
    origin = "the folder of libsalad, " + lib.string();
  }
  ::dlerror();
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!handle) {
    const char* why = ::dlerror();
    throw IoError("cannot load the SentencePiece module: tried " + path + " (" + origin +
                  "): " + (why ? why : "unknown dlopen error") +
                  ". It is built with libsalad (target salad_spm) and installed next to it; set $" +
                  kModuleEnv + " to its path if it lives elsewhere");
  }
  Module m;
  m.path = path;
  decltype(&salad_spm_abi_version) abi_version = nullptr;
  bind_symbol(handle, path, "salad_spm_abi_version", &abi_version);
  if (const int v = abi_version(); v != SALAD_SPM_ABI_VERSION) {
    throw IoError("the SentencePiece module " + path + " has interface version " +
                  std::to_string(v) + ", this libsalad needs " +
                  std::to_string(SALAD_SPM_ABI_VERSION) + ": rebuild or reinstall salad");
  }
  bind_symbol(handle, path, "salad_spm_load", &m.load);
  bind_symbol(handle, path, "salad_spm_free", &m.free);
  bind_symbol(handle, path, "salad_spm_encode", &m.encode);
  bind_symbol(handle, path, "salad_spm_decode", &m.decode);
  bind_symbol(handle, path, "salad_spm_vocab_size", &m.vocab_size);
  bind_symbol(handle, path, "salad_spm_id_to_piece", &m.id_to_piece);
  bind_symbol(handle, path, "salad_spm_piece_to_id", &m.piece_to_id);
  bind_symbol(handle, path, "salad_spm_special_id", &m.special_id);
  bind_symbol(handle, path, "salad_spm_train", &m.train);
  spdlog::debug("loaded the SentencePiece module {}", path);
  return m;
}

// Opened on first use; a failed attempt throws and is retried on the next call.
const Module& module() {
  static const Module m = open_module();
  return m;
}

// Sinks for the module's callbacks: `ctx` is a std::string* or std::vector<int64_t>*.
void append_bytes(void* ctx, const char* data, size_t size) {
  static_cast<std::string*>(ctx)->append(data, size);
}

void append_ids(void* ctx, const int32_t* ids, size_t count) {
  static_cast<std::vector<int64_t>*>(ctx)->insert(static_cast<std::vector<int64_t>*>(ctx)->end(),
                                                  ids, ids + count);
}

}  // namespace

// ---- SentencePieceTokenizer ------------------------------------------------------------------

// Owns one model handle of the module.
struct SentencePieceTokenizer::Model {
  Model(const Module* m, SaladSpmModel* h) : module(m), handle(h) {}
  ~Model() { module->free(handle); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Module* const module;
  SaladSpmModel* const handle;
};

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<Model> model, std::string name)
    : model_(std::move(model)), name_(std::move(name)) {
  vocab_size_ = model_->module->vocab_size(model_->handle);
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const fs::path& model) {
  const int fd = ::open(model.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw IoError("cannot open the SentencePiece model " + model.string() + ": " +
                  errno_text(errno));
  }
  std::string bytes;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw IoError("cannot read the SentencePiece model " + model.string() + ": " +
                    errno_text(err));
    }
    bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return from_bytes(bytes, model.string());
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_bytes(
    std::string_view serialized, std::string name) {
  const Module& m = module();
  if (serialized.empty()) {
    throw IoError(name + " is not a SentencePiece model: it is empty");
  }
  std::string why;
  SaladSpmModel* handle = m.load(serialized.data(), serialized.size(), append_bytes, &why);
  if (!handle) {
    throw IoError(name + " is not a SentencePiece model (" + std::to_string(serialized.size()) +
                  " bytes): " + why);
  }
  auto model = std::make_unique<Model>(&m, handle);
  return std::unique_ptr<SentencePieceTokenizer>(
      new SentencePieceTokenizer(std::move(model), std::move(name)));
}

std::vector<int64_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = utf8_lossy(text);
    text = repaired;
  }
  std::vector<int64_t> ids;
  std::string why;
  if (model_->module->encode(model_->handle, text.data(), text.size(), append_ids, &ids,
                             append_bytes, &why) != 0) {
    throw Error("SentencePiece encode with " + name_ + " failed: " + why);
  }
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int32_t> narrow(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size_) {
      throw DataError("token id " + std::to_string(ids[i]) + " (at position " + std::to_string(i) +
                      ") is outside the vocabulary of " + name_ + ": ids are in [0, " +
                      std::to_string(vocab_size_) + ")");
    }
    narrow[i] = static_cast<int32_t>(ids[i]);
  }
  std::string text, why;
  if (model_->module->decode(model_->handle, narrow.data(), narrow.size(), append_bytes, &text,
                             append_bytes, &why) != 0) {
    throw Error("SentencePiece decode with " + name_ + " failed: " + why);
  }
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const { return vocab_size_; }

std::optional<int64_t> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  const int id = model_->module->piece_to_id(model_->handle, token.data(), token.size());
  if (id < 0) return std::nullopt;
  return id;
}

std::string SentencePieceTokenizer::id_to_token(int64_t id) const {
  const char* data = nullptr;
  size_t size = 0;
  if (id < 0 || id >= vocab_size_ ||
      model_->module->id_to_piece(model_->handle, static_cast<int>(id), &data, &size) != 0) {
    throw DataError("token id " + std::to_string(id) + " is outside the vocabulary of " + name_ +
                    ": ids are in [0, " + std::to_string(vocab_size_) + ")");
  }
  return std::string(data, size);
}

int64_t SentencePieceTokenizer::bos_id() const {
  return model_->module->special_id(model_->handle, kSaladSpmBos);
}
int64_t SentencePieceTokenizer::eos_id() const {
  return model_->module->special_id(model_->handle, kSaladSpmEos);
}
int64_t SentencePieceTokenizer::pad_id() const {
  return model_->module->special_id(model_->handle, kSaladSpmPad);
}
int64_t SentencePieceTokenizer::unk_id() const {
  return model_->module->special_id(model_->handle, kSaladSpmUnk);
}

// ---- training ------------------------------------------------------------------------------

void SentencePieceTrainOptions::validate() const {
  const auto fail = [](const std::string& field, const std::string& value,
                       const std::string& expected) {
    throw ConfigError("SentencePieceTrainOptions." + field + " = " + value + ": expected " +
                      expected);
  };
  const auto check_range = [&](const char* field, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
      fail(field, std::to_string(v),
           "a value in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
  };
  if (model_type != "unigram" && model_type != "bpe" && model_type != "char" &&
      model_type != "word") {
    fail("model_type", "\"" + model_type + "\"", "one of unigram, bpe, char, word");
  }
  if (normalization_rule_name != "nmt_nfkc" && normalization_rule_name != "nfkc" &&
      normalization_rule_name != "nmt_nfkc_cf" && normalization_rule_name != "nfkc_cf" &&
      normalization_rule_name != "identity") {
    fail("normalization_rule_name", "\"" + normalization_rule_name + "\"",
         "one of nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf, identity");
  }
  check_range("vocab_size", vocab_size, 1, std::numeric_limits<int32_t>::max());
  if (!(character_coverage >= 0.98 && character_coverage <= 1.0)) {
    fail("character_coverage", std::to_string(character_coverage), "a value in [0.98, 1]");
  }
  if (input_sentence_size != 0) {
    check_range("input_sentence_size", input_sentence_size, 101,
                std::numeric_limits<int64_t>::max());
  }
  check_range("seed", seed, 0, int64_t{std::numeric_limits<uint32_t>::max()} - 1);
  check_range("num_threads", num_threads, 1, 128);
  check_range("max_sentence_length", max_sentence_length, 10, 1 << 30);
  if (byte_fallback && model_type != "bpe" && model_type != "unigram") {
    fail("byte_fallback", "true", "false for model_type " + model_type + " (bpe/unigram only)");
  }
  for (size_t i = 0; i < user_defined_symbols.size(); ++i) {
    const std::string& s = user_defined_symbols[i];
    const std::string field = "user_defined_symbols[" + std::to_string(i) + "]";
    if (s.empty()) fail(field, "\"\"", "a non-empty piece");
    if (s.find(',') != std::string::npos) {
      fail(field, "\"" + s + "\"", "a piece without ',' (sentencepiece splits the list on commas)");
    }
    if (!is_valid_utf8(s)) fail(field, "\"" + utf8_lossy(s) + "\"", "valid UTF-8");
  }
  check_range("unk_id", unk_id, 0, vocab_size - 1);
  const std::pair<const char*, int64_t> ids[] = {
      {"unk_id", unk_id}, {"bos_id", bos_id}, {"eos_id", eos_id}, {"pad_id", pad_id}};
  int64_t reserved = 0;
  for (size_t i = 0; i < 4; ++i) {
    if (ids[i].second == -1) continue;
    check_range(ids[i].first, ids[i].second, 0, vocab_size - 1);
    ++reserved;
    for (size_t j = 0; j < i; ++j) {
      if (ids[j].second == ids[i].second) {
        fail(ids[i].first, std::to_string(ids[i].second),
             std::string("an id different from ") + ids[j].first + " (or -1 for none)");
      }
    }
  }
  reserved += static_cast<int64_t>(user_defined_symbols.size()) + (byte_fallback ? 256 : 0);
  if (vocab_size <= reserved) {
    fail("vocab_size", std::to_string(vocab_size),
         "more than the " + std::to_string(reserved) +
             " ids reserved for special pieces, user_defined_symbols" +
             (byte_fallback ? " and the 256 byte_fallback pieces" : ""));
  }
}

namespace {

// Reads the corpus for the trainer, line by line, repairing UTF-8; keeps its own error.
class CorpusReader {
 public:
  explicit CorpusReader(const fs::path& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) {
      throw IoError("cannot open the SentencePiece training corpus " + path.string() + ": " +
                    errno_text(errno));
    }
  }

  // Whether some line has a non-whitespace character; rewinds.
  bool has_text() {
    bool found = false;
    while (!found && std::getline(in_, line_)) {
      found = line_.find_first_not_of(" \t\r\n\v\f") != std::string::npos;
    }
    check_read();
    in_.clear();
    in_.seekg(0);
    return found;
  }

  // SaladSpmLineSource
  static int next(void* ctx, const char** data, size_t* size) noexcept {
    auto* self = static_cast<CorpusReader*>(ctx);
    try {
      if (!std::getline(self->in_, self->line_)) {
        self->check_read();
        return 0;
      }
      if (!self->line_.empty() && self->line_.back() == '\r') self->line_.pop_back();
      if (!is_valid_utf8(self->line_)) {
        self->line_ = utf8_lossy(self->line_);
        ++self->repaired_lines_;
      }
      *data = self->line_.data();
      *size = self->line_.size();
      return 1;
    } catch (const std::exception& e) {
      self->error_ = e.what();
    } catch (...) {
      self->error_ = "unknown error reading " + self->path_.string();
    }
    return -1;
  }

  const std::string& error() const { return error_; }
  int64_t repaired_lines() const { return repaired_lines_; }

 private:
  void check_read() {
    if (in_.bad()) {
      throw IoError("cannot read the SentencePiece training corpus " + path_.string() + ": " +
                    errno_text(errno));
    }
  }

  fs::path path_;
  std::ifstream in_;
  std::string line_;
  std::string error_;
  int64_t repaired_lines_ = 0;
};

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

void train_sentencepiece(const fs::path& corpus, const fs::path& model_prefix,
                         const SentencePieceTrainOptions& options) {
  options.validate();
  if (model_prefix.empty() || !model_prefix.has_filename()) {
    throw ConfigError("train_sentencepiece: the model prefix \"" + model_prefix.string() +
                      "\" names no file (expected e.g. out/spm, giving out/spm.model)");
  }
  // Fail before a long training rather than after it.
  const fs::path out_dir = model_prefix.has_parent_path() ? model_prefix.parent_path() : ".";
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) {
    throw IoError("cannot write " + model_prefix.string() + ".model: the folder " +
                  out_dir.string() + " does not exist");
  }
  const Module& m = module();
  CorpusReader reader(corpus);
  if (!reader.has_text()) {
    throw Error("cannot train a SentencePiece model on " + corpus.string() +
                ": the corpus has no text (only empty or blank lines)");
  }

  const auto flag = [](bool v) { return std::string(v ? "true" : "false"); };
  std::vector<std::pair<std::string, std::string>> spec = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"character_coverage", format_double(options.character_coverage)},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"shuffle_input_sentence", flag(options.shuffle_input_sentence)},
      {"num_threads", std::to_string(options.num_threads)},
      {"byte_fallback", flag(options.byte_fallback)},
      {"max_sentence_length", std::to_string(options.max_sentence_length)},
      {"unk_id", std::to_string(options.unk_id)},
      {"bos_id", std::to_string(options.bos_id)},
      {"eos_id", std::to_string(options.eos_id)},
      {"pad_id", std::to_string(options.pad_id)},
      {"normalization_rule_name", options.normalization_rule_name},
  };
  if (!options.user_defined_symbols.empty()) {
    std::string joined;
    for (const auto& s : options.user_defined_symbols) {
      if (!joined.empty()) joined += ',';
      joined += s;
    }
    spec.emplace_back("user_defined_symbols", joined);
  }
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : spec) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  SaladSpmTrainArgs args{};
  args.keys = keys.data();
  args.values = values.data();
  args.count = spec.size();
  args.seed = static_cast<uint32_t>(options.seed);
  args.min_log_level = options.verbose ? 0 : 2;
  args.next_line = &CorpusReader::next;
  args.line_ctx = &reader;

  std::string model, vocab, why;
  if (m.train(&args, append_bytes, &model, append_bytes, &vocab, append_bytes, &why) != 0) {
    if (!reader.error().empty()) throw IoError(reader.error());
    throw Error("SentencePiece training on " + corpus.string() + " failed (" + options.model_type +
                ", vocab_size " + std::to_string(options.vocab_size) + "): " + why);
  }
  if (reader.repaired_lines() > 0) {
    spdlog::warn("{}: {} lines had invalid UTF-8, replaced by U+FFFD for training", corpus.string(),
                 reader.repaired_lines());
  }
  write_file_atomic(model_prefix.string() + ".model", model);
  write_file_atomic(model_prefix.string() + ".vocab", vocab);
}

}  // namespace salad::text
