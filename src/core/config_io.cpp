// Writing the config tree (resolved YAML, Markdown reference) and its cross-field checks.
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <set>
#include <sstream>

#include "core/config_fields.h"
#include "salad/core/atomic_file.h"
#include "salad/core/config.h"
#include "salad/core/error.h"

namespace salad::config {

namespace {

using detail::is_section;
using detail::is_vector;
using detail::type_name;

/// Shortest text that reads back as the same double (and still looks like a float to YAML).
std::string format_double(double d) {
  if (std::isnan(d)) return ".nan";
  if (std::isinf(d)) return d > 0 ? ".inf" : "-.inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

class Emitter {
 public:
  explicit Emitter(YAML::Emitter& out) : out_(out) {}

  template <class T>
  void operator()(const char* key, const T& value, const char* /*doc*/, unsigned = kOptional) {
    out_ << YAML::Key << key << YAML::Value;
    emit(value);
  }
  void choice(const char* key, const std::string& value, std::initializer_list<const char*>,
              const char* doc, unsigned flags = kOptional) {
    (*this)(key, value, doc, flags);
  }

 private:
  template <class T>
  void emit(const T& value) {
    if constexpr (is_section<T>::value) {
      out_ << YAML::BeginMap;
      const_cast<T&>(value).visit(*this);
      out_ << YAML::EndMap;
    } else if constexpr (is_vector<T>::value) {
      out_ << YAML::BeginSeq;
      for (const auto& e : value) emit(e);
      out_ << YAML::EndSeq;
    } else if constexpr (std::is_same_v<T, fs::path>) {
      out_ << YAML::DoubleQuoted << value.string();
    } else if constexpr (std::is_same_v<T, std::string>) {
      out_ << YAML::DoubleQuoted << value;
    } else if constexpr (std::is_same_v<T, bool>) {
      out_ << (value ? "true" : "false");
    } else if constexpr (std::is_floating_point_v<T>) {
      out_ << format_double(value);
    } else {
      out_ << std::to_string(value);
    }
  }
  YAML::Emitter& out_;
};

std::string value_text(const std::string& s) { return s.empty() ? "\"\"" : "`" + s + "`"; }

class Documenter {
 public:
  Documenter(std::ostringstream& os, std::string prefix) : os_(os), prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(const char* key, const T& value, const char* doc, unsigned flags = kOptional) {
    row(key, value, type_name<T>(), doc, flags);
  }
  void choice(const char* key, const std::string& value, std::initializer_list<const char*> allowed,
              const char* doc, unsigned flags = kOptional) {
    std::string t;
    for (const char* a : allowed) t += (t.empty() ? "" : " \\| ") + std::string(a);
    row(key, value, "one of " + t, doc, flags);
  }

 private:
  template <class T>
  void row(const char* key, const T& value, const std::string& type, const char* doc,
           unsigned flags) {
    const std::string full = prefix_ + key;
    if constexpr (is_section<T>::value) {
      os_ << "| `" << full << "` | section | | " << doc << " |\n";
      Documenter sub(os_, full + ".");
      const_cast<T&>(value).visit(sub);
      return;
    } else {
      std::string def;
      if (flags & kRequired) {
        def = "**required**";
      } else if constexpr (is_vector<T>::value) {
        def = "`[]`";
      } else if constexpr (std::is_same_v<T, fs::path>) {
        def = value_text(value.string());
      } else if constexpr (std::is_same_v<T, std::string>) {
        def = value_text(value);
      } else if constexpr (std::is_same_v<T, bool>) {
        def = value ? "`true`" : "`false`";
      } else if constexpr (std::is_floating_point_v<T>) {
        def = "`" + format_double(value) + "`";
      } else {
        def = "`" + std::to_string(value) + "`";
      }
      os_ << "| `" << full << "` | " << type << " | " << def << " | " << doc << " |\n";
      if constexpr (is_vector<T>::value) {
        using E = typename is_vector<T>::element;
        if constexpr (is_section<E>::value) {
          E e{};
          Documenter sub(os_, full + "[].");
          e.visit(sub);
        }
      }
    }
  }
  std::ostringstream& os_;
  std::string prefix_;
};

}  // namespace

std::string to_yaml(const SaladConfig& cfg) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Emitter e(out);
  const_cast<SaladConfig&>(cfg).visit(e);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void write_yaml(const SaladConfig& cfg, const fs::path& path) {
  write_file_atomic(path, "# salad resolved config\n" + to_yaml(cfg));
}

std::string reference_markdown() {
  std::ostringstream os;
  os << "| key | type | default | meaning |\n|---|---|---|---|\n";
  SaladConfig defaults;
  Documenter d(os, "");
  defaults.visit(d);
  return os.str();
}

void SaladConfig::validate() const {
  std::vector<std::string> e;
  auto positive = [&](const char* key, double v) {
    if (!(v > 0))
      e.push_back("key '" + std::string(key) + "' must be > 0, found " + format_double(v));
  };
  auto non_negative = [&](const char* key, double v) {
    if (!(v >= 0))
      e.push_back("key '" + std::string(key) + "' must be >= 0, found " + format_double(v));
  };
  auto divides = [&](const char* a, int64_t av, const char* b, int64_t bv) {
    if (av > 0 && bv > 0 && bv % av != 0) {
      e.push_back("key '" + std::string(a) + "' (" + std::to_string(av) + ") must divide '" + b +
                  "' (" + std::to_string(bv) + ")");
    }
  };
  const auto& a = model.arch;
  non_negative("model.arch.vocab_size", a.vocab_size);
  positive("model.arch.hidden_size", a.hidden_size);
  positive("model.arch.intermediate_size", a.intermediate_size);
  positive("model.arch.num_hidden_layers", a.num_hidden_layers);
  positive("model.arch.num_attention_heads", a.num_attention_heads);
  positive("model.arch.num_key_value_heads", a.num_key_value_heads);
  positive("model.arch.rope_theta", a.rope_theta);
  positive("model.arch.rms_norm_eps", a.rms_norm_eps);
  divides("model.arch.num_attention_heads", a.num_attention_heads, "model.arch.hidden_size",
          a.hidden_size);
  divides("model.arch.num_key_value_heads", a.num_key_value_heads, "model.arch.num_attention_heads",
          a.num_attention_heads);
  positive("adapter.hidden_size", adapter.hidden_size);
  positive("adapter.num_layers", adapter.num_layers);
  positive("adapter.num_heads", adapter.num_heads);
  positive("adapter.num_kv_heads", adapter.num_kv_heads);
  positive("adapter.intermediate_size", adapter.intermediate_size);
  divides("adapter.num_heads", adapter.num_heads, "adapter.hidden_size", adapter.hidden_size);
  divides("adapter.num_kv_heads", adapter.num_kv_heads, "adapter.num_heads", adapter.num_heads);
  positive("adapter.codebook_size", adapter.codebook_size);
  if (!(adapter.init_std > 0)) e.push_back("key 'adapter.init_std' must be > 0");
  positive("encoder.n_q", encoder.n_q);
  positive("encoder.n_mels", encoder.n_mels);
  if (encoder.type == "mimi" && encoder.checkpoint.empty() && run.stage != "text") {
    e.push_back("key 'encoder.checkpoint' is required when encoder.type is mimi");
  }
  positive("data.context", data.context);
  positive("data.text_words_min", data.text_words_min);
  positive("data.speech_words_min", data.speech_words_min);
  if (data.text_words_max < data.text_words_min) {
    e.push_back("key 'data.text_words_max' must be >= data.text_words_min");
  }
  if (data.speech_words_max < data.speech_words_min) {
    e.push_back("key 'data.speech_words_max' must be >= data.speech_words_min");
  }
  positive("data.utterance_group", data.utterance_group);
  positive("data.prefetch", data.prefetch);
  positive("data.workers", data.workers);
  if (!(data.max_skip_fraction >= 0 && data.max_skip_fraction <= 1)) {
    e.push_back("key 'data.max_skip_fraction' must be in [0, 1]");
  }
  for (const auto* list : {&data.train, &data.valid}) {
    const char* name = list == &data.train ? "data.train" : "data.valid";
    std::set<std::string> seen;
    for (size_t i = 0; i < list->size(); ++i) {
      const auto& s = (*list)[i];
      const std::string key = std::string(name) + "[" + std::to_string(i) + "]";
      if (!seen.insert(s.name).second)
        e.push_back(key + ": duplicate source name '" + s.name + "'");
      if (!(s.weight >= 0)) e.push_back(key + ".weight must be >= 0");
    }
  }
  if (!(loss.alpha >= 0 && loss.alpha <= 1)) {
    e.push_back("key 'loss.alpha' must be in [0, 1], found " + format_double(loss.alpha));
  }
  positive("loss.temperature", loss.temperature);
  positive("loss.chunk_size", loss.chunk_size);
  non_negative("optim.lr_adapter", optim.lr_adapter);
  non_negative("optim.lr_llm", optim.lr_llm);
  non_negative("optim.weight_decay", optim.weight_decay);
  if (!(optim.beta1 >= 0 && optim.beta1 < 1)) e.push_back("key 'optim.beta1' must be in [0, 1)");
  if (!(optim.beta2 >= 0 && optim.beta2 < 1)) e.push_back("key 'optim.beta2' must be in [0, 1)");
  positive("optim.eps", optim.eps);
  non_negative("optim.grad_clip", optim.grad_clip);
  non_negative("optim.warmup_steps", optim.warmup_steps);
  if (!(optim.decay_fraction >= 0 && optim.decay_fraction <= 1)) {
    e.push_back("key 'optim.decay_fraction' must be in [0, 1]");
  }
  positive("train.steps", train.steps);
  positive("train.tokens_per_step", train.tokens_per_step);
  positive("train.micro_batch_sequences", train.micro_batch_sequences);
  non_negative("train.log_every", train.log_every);
  non_negative("train.eval_every", train.eval_every);
  non_negative("train.save_every", train.save_every);
  positive("train.keep_last", train.keep_last);
  positive("train.max_bad_steps", train.max_bad_steps);
  non_negative("train.peak_tflops", train.peak_tflops);
  positive("dist.timeout_s", dist.timeout_s);
  positive("stage2.embed_max_tokens", stage2.embed_max_tokens);
  non_negative("stage2.max_texts", stage2.max_texts);
  positive("stage2.clusters", stage2.clusters);
  positive("stage2.kmeans_iters", stage2.kmeans_iters);
  positive("stage2.probe_per_cluster", stage2.probe_per_cluster);
  non_negative("stage2.gamma", stage2.gamma);
  non_negative("stage2.budget_hours", stage2.budget_hours);
  positive("stage2.budget_fraction", stage2.budget_fraction);
  non_negative("stage2.natural_weight", stage2.natural_weight);
  non_negative("stage2.synthetic_weight", stage2.synthetic_weight);
  non_negative("stage2.text_weight", stage2.text_weight);
  positive("tts.timeout_s", tts.timeout_s);
  positive("tts.max_chars", tts.max_chars);
  positive("tts.workers", tts.workers);
  non_negative("tts.rate_wpm", tts.rate_wpm);
  if (run.stage == "2" && stage2.from.empty()) {
    e.push_back("key 'stage2.from' is required with run.stage = 2 (the Stage I run folder)");
  }
  if (run.stage == "2" && stage2.selection.empty() && stage2.corpus.empty()) {
    e.push_back(
        "run.stage = 2 needs 'stage2.corpus' (the text corpus to select from) or "
        "'stage2.selection' (a ready selection manifest)");
  }
  if (tts.backend == "command" && tts.command.find("{out_wav}") == std::string::npos) {
    e.push_back("key 'tts.command' must contain {out_wav} with tts.backend = command");
  }
  if (!e.empty()) {
    std::ostringstream os;
    os << "invalid config values (" << e.size() << (e.size() == 1 ? " problem" : " problems")
       << "):";
    for (const auto& s : e) os << "\n  " << s;
    throw ConfigError(os.str());
  }
}

}  // namespace salad::config
