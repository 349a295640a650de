// Parsing the config tree from YAML files and --set overrides. This is the one translation unit
// that reads YAML into the typed tree (STYLE: config).
#include "salad/core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "core/config_fields.h"
#include "salad/core/error.h"

namespace salad::config {

namespace {

using detail::is_section;
using detail::is_vector;
using detail::type_name;

/// State shared by all parsers of one load(): collected problems and which keys were set.
struct Context {
  std::vector<std::string> errors;
  std::set<std::string> set_keys;  // dotted keys set by any file or override
};

/// Where a value came from: a YAML file (with its folder for relative paths) or a --set.
struct Origin {
  std::string name;  // file path or "--set a.b=c"
  fs::path base_dir;
  bool is_override = false;

  std::string at(const YAML::Mark& m) const {
    if (is_override || m.is_null()) return name;
    return name + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
  }
};

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      return "'" + n.Scalar() + "'";
    default:
      return "an undefined value";
  }
}

/// Applies one YAML mapping onto one config struct, field by field.
class Parser {
 public:
  Parser(const YAML::Node& map, const Origin& origin, Context& ctx, std::string prefix)
      : map_(map), origin_(origin), ctx_(ctx), prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(const char* key, T& value, const char* /*doc*/, unsigned /*flags*/ = kOptional) {
    known_.push_back(key);
    const YAML::Node node = map_[key];
    if (!node) return;
    const std::string full = prefix_ + key;
    if (parse(node, value, full)) ctx_.set_keys.insert(full);
  }

  void choice(const char* key, std::string& value, std::initializer_list<const char*> allowed,
              const char* doc, unsigned flags = kOptional) {
    std::string candidate = value;
    (*this)(key, candidate, doc, flags);
    if (candidate == value) return;
    if (std::find(allowed.begin(), allowed.end(), candidate) == allowed.end()) {
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "" : " | ") + std::string(a);
      ctx_.errors.push_back(origin_.at(map_[key].Mark()) + ": key '" + prefix_ + key +
                            "': expected one of " + list + ", found '" + candidate + "'");
      return;
    }
    value = candidate;
  }

  /// Reports every key of the mapping that no field claimed.
  void report_unknown() {
    for (auto it = map_.begin(); it != map_.end(); ++it) {
      const std::string key = it->first.Scalar();
      if (prefix_.empty() && key == "include") continue;
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      std::string msg = origin_.at(it->first.Mark()) + ": unknown key '" + prefix_ + key + "'";
      std::string best;
      size_t best_d = 3;  // suggest only close misspellings
      for (const auto& k : known_) {
        size_t d = edit_distance(key, k);
        if (d < best_d) best_d = d, best = k;
      }
      if (!best.empty()) msg += " (did you mean '" + prefix_ + best + "'?)";
      ctx_.errors.push_back(msg);
    }
  }

 private:
  void type_error(const YAML::Node& node, const std::string& full, const std::string& expected) {
    ctx_.errors.push_back(origin_.at(node.Mark()) + ": key '" + full + "': expected " + expected +
                          ", found " + describe(node));
  }

  template <class T>
  bool parse(const YAML::Node& node, T& value, const std::string& full) {
    if constexpr (is_section<T>::value) {
      if (node.IsNull()) return true;  // "section:" with nothing under it keeps the defaults
      if (!node.IsMap()) return type_error(node, full, "a mapping"), false;
      Parser sub(node, origin_, ctx_, full + ".");
      value.visit(sub);
      sub.report_unknown();
      return true;
    } else if constexpr (is_vector<T>::value) {
      using E = typename is_vector<T>::element;
      if (node.IsNull()) return value.clear(), true;
      if (!node.IsSequence()) return type_error(node, full, "a list"), false;
      // A list replaces the previous one whole: forget what was set inside the old one.
      for (auto it = ctx_.set_keys.lower_bound(full + "[");
           it != ctx_.set_keys.end() && it->rfind(full + "[", 0) == 0;) {
        it = ctx_.set_keys.erase(it);
      }
      T out;
      bool ok = true;
      for (size_t i = 0; i < node.size(); ++i) {
        E e{};
        const std::string item = full + "[" + std::to_string(i) + "]";
        if (parse(node[i], e, item)) {
          ctx_.set_keys.insert(item);
        } else {
          ok = false;
        }
        out.push_back(std::move(e));
      }
      if (ok) value = std::move(out);
      return ok;
    } else {
      if (!node.IsScalar() && !(node.IsNull() && std::is_same_v<T, std::string>)&&!(
                                  node.IsNull() && std::is_same_v<T, fs::path>)) {
        return type_error(node, full, "a " + type_name<T>()), false;
      }
      if constexpr (std::is_same_v<T, std::string>) {
        value = node.IsNull() ? std::string() : node.Scalar();
      } else if constexpr (std::is_same_v<T, fs::path>) {
        fs::path p = node.IsNull() ? fs::path() : fs::path(node.Scalar());
        if (!p.empty() && p.is_relative()) p = (origin_.base_dir / p).lexically_normal();
        value = p;
      } else if constexpr (std::is_same_v<T, bool>) {
        bool b;
        if (!YAML::convert<bool>::decode(node, b))
          return type_error(node, full, "a boolean"), false;
        value = b;
      } else if constexpr (std::is_integral_v<T>) {
        const std::string& s = node.Scalar();
        T v{};
        if (!YAML::convert<T>::decode(node, v) || s.find_first_of(".eE") != std::string::npos) {
          // yaml-cpp accepts "1e3" through the stream; an integer field takes digits only.
          return type_error(node, full, "an integer"), false;
        }
        value = v;
      } else {
        T v{};
        if (!YAML::convert<T>::decode(node, v)) return type_error(node, full, "a number"), false;
        value = v;
      }
      return true;
    }
  }

  const YAML::Node& map_;
  const Origin& origin_;
  Context& ctx_;
  std::string prefix_;
  std::vector<std::string> known_;
};

/// After everything is applied: every kRequired field must have been set somewhere.
class RequiredChecker {
 public:
  RequiredChecker(Context& ctx, std::string prefix) : ctx_(ctx), prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(const char* key, T& value, const char* /*doc*/, unsigned flags = kOptional) {
    const std::string full = prefix_ + key;
    if ((flags & kRequired) && !ctx_.set_keys.count(full)) {
      ctx_.errors.push_back("missing required key '" + full + "' (" + type_name<T>() + ")");
    }
    if constexpr (is_section<T>::value) {
      RequiredChecker sub(ctx_, full + ".");
      value.visit(sub);
    } else if constexpr (is_vector<T>::value) {
      if constexpr (is_section<typename is_vector<T>::element>::value) {
        for (size_t i = 0; i < value.size(); ++i) {
          RequiredChecker sub(ctx_, full + "[" + std::to_string(i) + "].");
          value[i].visit(sub);
        }
      }
    }
  }
  void choice(const char* key, std::string& value, std::initializer_list<const char*>,
              const char* doc, unsigned flags = kOptional) {
    (*this)(key, value, doc, flags);
  }

 private:
  Context& ctx_;
  std::string prefix_;
};

[[noreturn]] void throw_all(const std::string& header, const std::vector<std::string>& errors) {
  std::ostringstream os;
  os << header << " (" << errors.size() << (errors.size() == 1 ? " problem" : " problems") << "):";
  for (const auto& e : errors) os << "\n  " << e;
  throw ConfigError(os.str());
}

void apply_node(SaladConfig& cfg, const YAML::Node& root, const Origin& origin, Context& ctx) {
  if (!root || root.IsNull()) return;
  if (!root.IsMap()) {
    ctx.errors.push_back(origin.at(root.Mark()) + ": the top level must be a mapping, found " +
                         describe(root));
    return;
  }
  Parser p(root, origin, ctx, "");
  cfg.visit(p);
  p.report_unknown();
}

void apply_file(SaladConfig& cfg, const fs::path& path, Context& ctx,
                std::vector<fs::path>& stack) {
  std::error_code ec;
  fs::path canon = fs::weakly_canonical(path, ec);
  if (ec) canon = fs::absolute(path);
  if (std::find(stack.begin(), stack.end(), canon) != stack.end()) {
    std::string chain;
    for (const auto& s : stack) chain += s.string() + " -> ";
    throw ConfigError("include cycle: " + chain + canon.string());
  }
  if (!fs::exists(canon)) {
    std::string by = stack.empty() ? "" : " (included by " + stack.back().string() + ")";
    throw ConfigError("config file not found: " + path.string() + by);
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(canon.string());
  } catch (const YAML::ParserException& e) {
    throw ConfigError(canon.string() + ":" + std::to_string(e.mark.line + 1) + ":" +
                      std::to_string(e.mark.column + 1) + ": malformed YAML: " + e.msg);
  } catch (const YAML::BadFile&) {
    throw ConfigError("cannot read config file " + canon.string());
  }
  const Origin origin{canon.string(), canon.parent_path(), false};
  stack.push_back(canon);
  if (root.IsMap() && root["include"]) {
    const YAML::Node inc = root["include"];
    std::vector<std::string> files;
    if (inc.IsScalar()) {
      files.push_back(inc.Scalar());
    } else if (inc.IsSequence() && std::all_of(inc.begin(), inc.end(),
                                               [](const YAML::Node& n) { return n.IsScalar(); })) {
      for (const auto& n : inc) files.push_back(n.Scalar());
    } else {
      throw ConfigError(origin.at(inc.Mark()) +
                        ": key 'include': expected a path or a list of paths, found " +
                        describe(inc));
    }
    for (const auto& f : files) {
      fs::path p(f);
      apply_file(cfg, p.is_relative() ? origin.base_dir / p : p, ctx, stack);
    }
  }
  apply_node(cfg, root, origin, ctx);
  stack.pop_back();
}

void apply_override(SaladConfig& cfg, const std::string& text, Context& ctx) {
  const Origin origin{"--set " + text, fs::current_path(), true};
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    ctx.errors.push_back(origin.name + ": expected key=value (e.g. --set train.steps=100)");
    return;
  }
  const std::string key = text.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::ParserException& e) {
    ctx.errors.push_back(origin.name + ": the value is not valid YAML: " + e.msg);
    return;
  }
  // Build {a: {b: value}} from "a.b" and apply it like a file.
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  if (std::any_of(parts.begin(), parts.end(), [](const std::string& s) { return s.empty(); })) {
    ctx.errors.push_back(origin.name + ": malformed key '" + key + "'");
    return;
  }
  YAML::Node node = value;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    YAML::Node m(YAML::NodeType::Map);
    m[*it] = node;
    node = m;
  }
  apply_node(cfg, node, origin, ctx);
}

SaladConfig finish(SaladConfig cfg, Context& ctx, const std::string& what) {
  if (ctx.errors.empty()) {
    RequiredChecker rc(ctx, "");
    cfg.visit(rc);
  }
  if (!ctx.errors.empty()) throw_all("invalid config " + what, ctx.errors);
  cfg.validate();
  return cfg;
}

}  // namespace

SaladConfig load(const fs::path& path, const std::vector<std::string>& overrides) {
  SaladConfig cfg;
  Context ctx;
  std::vector<fs::path> stack;
  apply_file(cfg, path, ctx, stack);
  for (const auto& o : overrides) apply_override(cfg, o, ctx);
  return finish(std::move(cfg), ctx, path.string());
}

SaladConfig apply_overrides(SaladConfig base, const std::vector<std::string>& overrides) {
  Context ctx;
  // Required keys were satisfied by whatever built `base`; only check what the overrides add.
  for (const auto& o : overrides) apply_override(base, o, ctx);
  if (!ctx.errors.empty()) throw_all("invalid overrides", ctx.errors);
  base.validate();
  return base;
}

}  // namespace salad::config
