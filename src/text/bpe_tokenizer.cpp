// Loading a Hugging Face tokenizer.json into BpeTokenizer::Impl, and the lookups and decoding.
// The encode pipeline is in bpe_encode.cpp.
//
// What is accepted is what Qwen2.5's file uses (and what cannot change ids); anything else that
// could change ids is an IoError naming the file, the piece and the value found, rather than a
// silently different tokenization.
#include "salad/text/bpe_tokenizer.h"

#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "salad/core/error.h"
#include "text/bpe_internal.h"

namespace salad::text {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_file(const fs::path& p) {
  std::error_code ec;
  if (fs::is_directory(p, ec)) throw IoError(p.string() + ": is a folder, expected a file");
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw IoError(p.string() + ": cannot open: " + errno_text(err));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(p.string() + ": read error");
  return std::move(ss).str();
}

json parse_json(const fs::path& p) {
  const std::string text = read_file(p);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw IoError(p.string() + ": not valid JSON: " + e.what());
  }
}

std::string short_dump(const json& j) {
  std::string s = j.dump();
  return s.size() > 120 ? s.substr(0, 117) + "..." : s;
}

// Typed access to the JSON tree; every error names the file and the key path.
class Reader {
 public:
  explicit Reader(const fs::path& file) : file_(file) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw IoError(file_.string() + ": " + what);
  }

  void unsupported(const std::string& where, const json& found, const std::string& why) const {
    fail("unsupported " + where + " = " + short_dump(found) + " (" + why + ")");
  }

  const json& object(const json& j, const std::string& where) const {
    if (!j.is_object()) fail(where + ": expected an object, found " + short_dump(j));
    return j;
  }

  // Rejects keys not in `known`: an unknown key may be a feature that changes ids.
  void known_keys(const json& obj, const std::string& where,
                  std::initializer_list<const char*> known) const {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool ok = false;
      for (const char* k : known) ok = ok || it.key() == k;
      if (!ok) fail("unsupported key '" + it.key() + "' in " + where);
    }
  }

  const json& member(const json& obj, const char* key, const std::string& where) const {
    const auto it = obj.find(key);
    if (it == obj.end()) fail(where + ": missing '" + key + "'");
    return *it;
  }

  std::string string(const json& obj, const char* key, const std::string& where) const {
    const json& v = member(obj, key, where);
    if (!v.is_string()) fail(where + "." + key + ": expected a string, found " + short_dump(v));
    return v.get<std::string>();
  }

  // A boolean that may be absent (then `absent`).
  bool flag(const json& obj, const char* key, const std::string& where, bool absent) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return absent;
    if (!it->is_boolean()) {
      fail(where + "." + key + ": expected true or false, found " + short_dump(*it));
    }
    return it->get<bool>();
  }

  int32_t id(const json& v, const std::string& where) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= (int64_t{1} << 31)) {
      fail(where + ": expected a token id (a non-negative integer), found " + short_dump(v));
    }
    return static_cast<int32_t>(v.get<int64_t>());
  }

 private:
  const fs::path& file_;
};

bool is_null_or_empty(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty());
}

void load_model(const Reader& r, const json& root, BpeTokenizer::Impl& t,
                std::unordered_map<std::string, int32_t>& vocab) {
  const json& model = r.object(r.member(root, "model", "the top level"), "model");
  const auto type_it = model.find("type");
  const std::string type =
      type_it != model.end() && type_it->is_string() ? type_it->get<std::string>() : "(none)";
  if (type != "BPE") {
    r.fail("unsupported model type '" + type + "' (model.type; salad reads byte-level BPE only)");
  }
  r.known_keys(model, "model",
               {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"});
  if (const auto it = model.find("dropout");
      it != model.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 0.0)) {
    r.unsupported("model.dropout", *it, "BPE dropout makes encoding random");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!is_null_or_empty(model, key)) {
      r.unsupported(std::string("model.") + key, model[key], "byte-level BPE uses none");
    }
  }
  // unk_token, fuse_unk and byte_fallback only act on a symbol missing from the vocabulary; every
  // byte's symbol is checked to be there below, so they cannot change ids.
  t.ignore_merges = r.flag(model, "ignore_merges", "model", false);

  const json& v = r.member(model, "vocab", "model");
  if (!v.is_object()) r.fail("model.vocab: expected an object of token -> id");
  vocab.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    vocab.emplace(it.key(), r.id(it.value(), "model.vocab['" + it.key() + "']"));
  }
  for (int b = 0; b < 256; ++b) {
    const std::string symbol = bpe::to_byte_level(std::string(1, static_cast<char>(b)));
    const auto it = vocab.find(symbol);
    if (it == vocab.end()) {
      r.fail("model.vocab lacks '" + symbol + "', the byte-level symbol of byte " +
             std::to_string(b) + " (not a byte-level BPE vocabulary)");
    }
    t.byte_ids[b] = it->second;
  }

  const json& merges = r.member(model, "merges", "model");
  if (!merges.is_array()) r.fail("model.merges: expected an array");
  t.merges.reserve(merges.size());
  std::string a, b;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    if (m.is_string()) {  // "a b" (Qwen2.5's files, older tokenizers)
      const auto& s = m.get_ref<const std::string&>();
      const auto space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        r.fail(where + ": expected \"left right\" with one space, found " + short_dump(m));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();  // ["a", "b"] (tokenizers >= 0.20)
      b = m[1].get<std::string>();
    } else {
      r.fail(where + ": expected \"left right\" or [\"left\", \"right\"], found " + short_dump(m));
    }
    const auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end()) {
      const std::string& missing = ia == vocab.end() ? a : ib == vocab.end() ? b : a + b;
      r.fail(where + " " + short_dump(m) + ": '" + missing + "' is not in model.vocab");
    }
    t.merges.insert(ia->second, ib->second, static_cast<int32_t>(i), iab->second);
  }
  if (t.ignore_merges) {
    for (const auto& [token, id] : vocab) {
      const std::string raw = bpe::from_byte_level(token);
      if (bpe::to_byte_level(raw) == token) t.raw_vocab.emplace(raw, id);
    }
  }
}

void load_normalizer(const Reader& r, const json& root, BpeTokenizer::Impl& t) {
  const auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return;
  std::vector<const json*> parts{&*it};
  if (it->is_object() && it->value("type", "") == "Sequence") {
    r.known_keys(*it, "normalizer", {"type", "normalizers"});
    const json& list = r.member(*it, "normalizers", "normalizer");
    if (!list.is_array()) r.fail("normalizer.normalizers: expected an array");
    parts.clear();
    for (const json& n : list) parts.push_back(&n);
  }
  for (const json* n : parts) {
    r.object(*n, "normalizer");
    const std::string type = n->value("type", "(none)");
    if (type != "NFC") {
      r.fail("unsupported normalizer type '" + type + "' (salad implements NFC only)");
    }
    r.known_keys(*n, "normalizer NFC", {"type"});
    t.nfc = true;
  }
}

void load_added_tokens(const Reader& r, const json& root, BpeTokenizer::Impl& t) {
  const auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return;
  if (!it->is_array()) r.fail("added_tokens: expected an array");
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    const json& a = r.object((*it)[i], where);
    r.known_keys(a, where,
                 {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
    const int32_t id = r.id(r.member(a, "id", where), where + ".id");
    const std::string content = r.string(a, "content", where);
    if (content.empty()) r.fail(where + ": empty content");
    if (!bpe::is_valid_utf8(content)) r.fail(where + ": content is not valid UTF-8");
    // Qwen's added tokens use none of these; their matching rules are not implemented.
    for (const char* key : {"single_word", "lstrip", "rstrip"}) {
      if (r.flag(a, key, where, false)) {
        r.fail(where + " '" + content + "' (id " + std::to_string(id) + "): " + key +
               " = true is not supported");
      }
    }
    // Hugging Face's default: special tokens are matched in the raw text, others after the
    // normalizer (against their normalized content).
    const bool special = r.flag(a, "special", where, false);
    const bool normalized = r.flag(a, "normalized", where, !special);
    if (static_cast<std::size_t>(id) >= t.tokens.size()) {
      t.tokens.resize(id + 1);
      t.assigned.resize(id + 1, 0);
    }
    t.tokens[id] = content;
    t.assigned[id] = 1;
    t.token_ids[content] = id;
    if (normalized && t.nfc) {
      std::string buf;
      t.normalized_added.add(std::string(bpe::nfc(content, buf)), id);
    } else if (normalized) {
      t.normalized_added.add(content, id);
    } else {
      t.raw_added.add(content, id);
    }
  }
}

void load_pre_tokenizer(const Reader& r, const json& root, BpeTokenizer::Impl& t) {
  const auto it = root.find("pre_tokenizer");
  if (it == root.end() || it->is_null()) {
    r.fail("pre_tokenizer is null; a byte-level BPE needs the ByteLevel pre-tokenizer");
  }
  r.object(*it, "pre_tokenizer");
  std::vector<const json*> parts{&*it};
  std::string prefix = "pre_tokenizer";
  if (it->value("type", "") == "Sequence") {
    r.known_keys(*it, "pre_tokenizer", {"type", "pretokenizers"});
    const json& list = r.member(*it, "pretokenizers", "pre_tokenizer");
    if (!list.is_array()) r.fail("pre_tokenizer.pretokenizers: expected an array");
    parts.clear();
    for (const json& p : list) parts.push_back(&p);
    prefix = "pre_tokenizer.pretokenizers";
  }
  bool byte_level = false;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const json& p = r.object(*parts[i], prefix);
    const std::string where = parts.size() > 1 || prefix != "pre_tokenizer"
                                  ? prefix + "[" + std::to_string(i) + "]"
                                  : prefix;
    const std::string type = p.value("type", "(none)");
    if (byte_level) r.fail(where + ": a " + type + " after ByteLevel is not supported");
    if (type == "Split") {
      r.known_keys(p, where, {"type", "pattern", "behavior", "invert"});
      const json& pattern = r.object(r.member(p, "pattern", where), where + ".pattern");
      bool literal = false;
      std::string text;
      if (pattern.contains("Regex")) {
        text = r.string(pattern, "Regex", where + ".pattern");
      } else if (pattern.contains("String")) {
        text = r.string(pattern, "String", where + ".pattern");
        literal = true;
      } else {
        r.unsupported(where + ".pattern", pattern,
                      "expected {\"Regex\": ...} or {\"String\": ...}");
      }
      const std::string behavior = r.string(p, "behavior", where);
      if (behavior != "Isolated") {
        r.unsupported(where + ".behavior", p["behavior"], "salad implements Isolated only");
      }
      if (r.flag(p, "invert", where, false)) {
        r.unsupported(where + ".invert", p["invert"], "salad implements invert = false only");
      }
      try {
        t.splits.push_back(std::make_unique<bpe::SplitRegex>(text, literal));
      } catch (const std::invalid_argument& e) {
        r.fail(where + ".pattern " + short_dump(pattern) +
               " does not compile with PCRE2: " + e.what());
      }
    } else if (type == "ByteLevel") {
      r.known_keys(p, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
      // Hugging Face's defaults when absent: add_prefix_space and use_regex true.
      if (r.flag(p, "add_prefix_space", where, true)) {
        r.unsupported(where + ".add_prefix_space", p.value("add_prefix_space", json(true)),
                      "salad implements add_prefix_space = false only");
      }
      if (r.flag(p, "use_regex", where, true)) {
        r.unsupported(where + ".use_regex", p.value("use_regex", json(true)),
                      "salad implements use_regex = false (the split given by a Split) only");
      }
      byte_level = true;  // trim_offsets only changes offsets
    } else {
      r.fail("unsupported " + where + " type '" + type +
             "' (salad implements the Split and ByteLevel pre-tokenizers only)");
    }
  }
  if (!byte_level) r.fail("pre_tokenizer has no ByteLevel step; not a byte-level BPE");
}

void load_decoder(const Reader& r, const json& root) {
  const auto it = root.find("decoder");
  const std::string type = it == root.end() || it->is_null() ? "null"
                           : it->is_object()                 ? it->value("type", "(none)")
                                                             : short_dump(*it);
  if (type != "ByteLevel") {
    r.fail("unsupported decoder type '" + type + "' (salad implements the ByteLevel decoder only)");
  }
  // Its options change offsets only, never the decoded text.
  r.known_keys(*it, "decoder", {"type", "add_prefix_space", "trim_offsets", "use_regex"});
}

// bos/eos/pad token names come from tokenizer_config.json beside tokenizer.json, if present.
void load_special_ids(const fs::path& tokenizer_json, BpeTokenizer::Impl& t) {
  const fs::path config = tokenizer_json.parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::is_regular_file(config, ec)) return;
  const json root = parse_json(config);
  const Reader r(config);
  r.object(root, "tokenizer_config.json");
  const auto id_of = [&](const char* key) -> int64_t {
    const auto it = root.find(key);
    if (it == root.end() || it->is_null()) return -1;
    std::string name;
    if (it->is_string()) {
      name = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      name = (*it)["content"].get<std::string>();
    } else {
      r.fail(std::string(key) + ": expected a token string, found " + short_dump(*it));
    }
    const auto found = t.token_ids.find(name);
    if (found == t.token_ids.end()) {
      r.fail(std::string(key) + " '" + name + "' is not a token of " + tokenizer_json.string());
    }
    return found->second;
  };
  t.bos = id_of("bos_token");
  t.eos = id_of("eos_token");
  t.pad = id_of("pad_token");
}

std::unique_ptr<BpeTokenizer::Impl> load_impl(const fs::path& file,
                                              const BpeTokenizerOptions& options) {
  const json root = parse_json(file);
  const Reader r(file);
  r.object(root, "the top level");
  r.known_keys(root, "the top level",
               {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer",
                "post_processor", "decoder", "model"});
  for (const char* key : {"truncation", "padding"}) {
    if (root.contains(key) && !root[key].is_null()) {
      r.unsupported(key, root[key], "encode() neither truncates nor pads; set it to null");
    }
  }
  // post_processor only adds special tokens (add_special_tokens = true); encode() never does.

  auto t = std::make_unique<BpeTokenizer::Impl>();
  t->path = file;
  t->options = options;
  std::unordered_map<std::string, int32_t> vocab;
  load_model(r, root, *t, vocab);

  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) max_id = std::max(max_id, id);
  t->tokens.resize(static_cast<std::size_t>(max_id) + 1);
  t->assigned.resize(t->tokens.size(), 0);
  for (const auto& [token, id] : vocab) {
    t->tokens[id] = token;
    t->assigned[id] = 1;
  }
  t->token_ids = std::move(vocab);

  load_normalizer(r, root, *t);
  load_added_tokens(r, root, *t);  // after the normalizer: normalized tokens match its output
  load_pre_tokenizer(r, root, *t);
  load_decoder(r, root);

  t->decoded_offsets.reserve(t->tokens.size() + 1);
  t->decoded_offsets.push_back(0);
  for (std::size_t id = 0; id < t->tokens.size(); ++id) {
    t->decoded += bpe::from_byte_level(t->tokens[id]);
    t->decoded_offsets.push_back(static_cast<uint32_t>(t->decoded.size()));
  }
  load_special_ids(file, *t);
  t->cache = std::make_unique<bpe::WordCache>(options);
  return t;
}

void check_id(const BpeTokenizer::Impl& t, int64_t id) {
  const auto n = static_cast<int64_t>(t.tokens.size());
  if (id < 0 || id >= n) {
    throw DataError("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                    std::to_string(n) + ") of " + t.path.string());
  }
  if (!t.assigned[id]) {
    throw DataError("token id " + std::to_string(id) + " has no token in " + t.path.string() +
                    " (vocabulary size " + std::to_string(n) + ")");
  }
}

}  // namespace

void BpeTokenizerOptions::validate() const {
  if (cache != Cache::kNone && cache_capacity == 0) {
    throw ConfigError("BpeTokenizerOptions.cache_capacity must be > 0 when a cache is used");
  }
  if (max_cached_word_bytes > 0xFFFF) {
    throw ConfigError("BpeTokenizerOptions.max_cached_word_bytes must be <= 65535, found " +
                      std::to_string(max_cached_word_bytes));
  }
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::load(const fs::path& tokenizer_json) {
  return load(tokenizer_json, BpeTokenizerOptions{});
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::load(const fs::path& tokenizer_json,
                                                 const BpeTokenizerOptions& options) {
  options.validate();
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(load_impl(tokenizer_json, options)));
}

std::vector<int64_t> BpeTokenizer::encode(std::string_view text) const {
  return impl_->encode(text);
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  const Impl& t = *impl_;
  std::string out;
  out.reserve(ids.size() * 4);
  for (const int64_t id : ids) {
    check_id(t, id);
    out.append(t.decoded.data() + t.decoded_offsets[id],
               t.decoded_offsets[id + 1] - t.decoded_offsets[id]);
  }
  return bpe::is_valid_utf8(out) ? out : bpe::utf8_lossy(out);
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->tokens.size()); }

std::optional<int64_t> BpeTokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->token_ids.find(std::string(token));
  if (it == impl_->token_ids.end()) return std::nullopt;
  return it->second;
}

std::string BpeTokenizer::id_to_token(int64_t id) const {
  check_id(*impl_, id);
  return impl_->tokens[id];
}

int64_t BpeTokenizer::bos_id() const { return impl_->bos; }
int64_t BpeTokenizer::eos_id() const { return impl_->eos; }
int64_t BpeTokenizer::pad_id() const { return impl_->pad; }
const fs::path& BpeTokenizer::path() const { return impl_->path; }

}  // namespace salad::text
