// MimiOptions: validation and the two JSON layouts (moshi `_mimi_config`, Hugging Face MimiConfig).
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "salad/core/error.h"
#include "salad/models/mimi.h"

namespace salad::models {

using json = nlohmann::json;

namespace {

std::string join_problems(const std::string& head, const std::vector<std::string>& problems) {
  std::string msg = head + " (" + std::to_string(problems.size()) +
                    (problems.size() == 1 ? " problem" : " problems") + "):";
  for (const auto& p : problems) msg += "\n  " + p;
  return msg;
}

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path.string() + ": cannot open the Mimi config");
  try {
    json j = json::parse(in);
    if (!j.is_object()) throw ConfigError(path.string() + ": expected a JSON object");
    return j;
  } catch (const json::parse_error& ex) {
    throw ConfigError(path.string() + ": not valid JSON: " + ex.what());
  }
}

// Typed access to one JSON object, collecting every problem instead of stopping at the first.
// Keys read (or declared inert) are remembered so the unknown ones can be listed.
class Fields {
 public:
  Fields(const json& obj, std::string prefix, std::vector<std::string>& problems)
      : obj_(obj), prefix_(std::move(prefix)), problems_(problems) {}

  void integer(const char* key, int64_t& out) {
    if (const json* v = find(key)) {
      if (v->is_number_integer()) {
        out = v->get<int64_t>();
      } else {
        wrong(key, "an integer", *v);
      }
    }
  }
  void number(const char* key, double& out) {
    if (const json* v = find(key)) {
      if (v->is_number()) {
        out = v->get<double>();
      } else {
        wrong(key, "a number", *v);
      }
    }
  }
  void integers(const char* key, std::vector<int64_t>& out) {
    if (const json* v = find(key)) {
      bool ok = v->is_array();
      if (ok) {
        for (const auto& e : *v) ok &= e.is_number_integer();
      }
      if (!ok) return wrong(key, "a list of integers", *v);
      out = v->get<std::vector<int64_t>>();
    }
  }
  /// The value, if present, must be `expected` (a feature the port does not implement otherwise).
  void require(const char* key, const json& expected, const char* why) {
    if (const json* v = find(key)) {
      if (*v != expected) {
        problems_.push_back("key '" + prefix_ + key + "': only " + expected.dump() +
                            " is supported (" + why + "), found " + v->dump());
      }
    }
  }
  /// Present or not, the value does not matter at inference.
  void inert(const char* key) { seen_.insert(key); }
  const json* section(const char* key) {
    const json* v = find(key);
    if (v && !v->is_object()) {
      wrong(key, "an object", *v);
      return nullptr;
    }
    return v;
  }
  void reject_unknown() {
    for (const auto& item : obj_.items()) {
      if (!seen_.count(item.key())) {
        problems_.push_back("key '" + prefix_ + item.key() + "': unknown");
      }
    }
  }

 private:
  const json* find(const char* key) {
    seen_.insert(key);
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  void wrong(const char* key, const char* expected, const json& v) {
    problems_.push_back("key '" + prefix_ + key + "': expected " + expected + ", found " +
                        v.dump());
  }
  const json& obj_;
  std::string prefix_;
  std::vector<std::string>& problems_;
  std::set<std::string> seen_;
};

void validate_into(const MimiOptions& o, std::vector<std::string>& e) {
  auto positive = [&](const char* k, double v) {
    if (!(v > 0)) e.push_back(std::string(k) + " must be > 0, found " + std::to_string(v));
  };
  positive("sample_rate", o.sample_rate);
  positive("frame_rate", o.frame_rate);
  positive("dimension", o.dimension);
  positive("n_filters", o.n_filters);
  positive("kernel_size", o.kernel_size);
  positive("residual_kernel_size", o.residual_kernel_size);
  positive("last_kernel_size", o.last_kernel_size);
  positive("dilation_base", o.dilation_base);
  positive("compress", o.compress);
  positive("elu_alpha", o.elu_alpha);
  positive("num_heads", o.num_heads);
  positive("dim_feedforward", o.dim_feedforward);
  positive("max_period", o.max_period);
  positive("norm_eps", o.norm_eps);
  positive("n_q", o.n_q);
  positive("bins", o.bins);
  positive("codebook_dim", o.codebook_dim);
  if (o.n_residual_layers < 0) e.push_back("n_residual_layers must be >= 0");
  if (o.num_layers < 0) e.push_back("num_layers must be >= 0");
  if (o.context < 0) e.push_back("context must be >= 0 (0: no sliding window)");
  if (o.n_q_semantic < 1 || o.n_q_semantic > o.n_q) {
    e.push_back("n_q_semantic must be in [1, n_q = " + std::to_string(o.n_q) + "], found " +
                std::to_string(o.n_q_semantic));
  }
  bool ratios_ok = !o.ratios.empty();
  for (int64_t r : o.ratios) ratios_ok &= r > 0;
  if (!ratios_ok) e.push_back("ratios must be a non-empty list of positive strides");
  if (o.n_filters > 0 && o.compress > 0 && o.n_filters / o.compress < 1) {
    e.push_back("n_filters (" + std::to_string(o.n_filters) + ") / compress (" +
                std::to_string(o.compress) + ") leaves no residual channels");
  }
  if (o.num_heads > 0 && o.dimension > 0) {
    if (o.dimension % o.num_heads != 0) {
      e.push_back("num_heads (" + std::to_string(o.num_heads) + ") must divide dimension (" +
                  std::to_string(o.dimension) + ")");
    } else if ((o.dimension / o.num_heads) % 2 != 0) {
      e.push_back("head width dimension / num_heads = " +
                  std::to_string(o.dimension / o.num_heads) + " must be even for RoPE");
    }
  }
  if (ratios_ok && o.sample_rate > 0 && o.frame_rate > 0) {
    int64_t hop = 1;
    for (int64_t r : o.ratios) hop *= r;
    const double stride = static_cast<double>(o.sample_rate) / hop / o.frame_rate;
    if (std::abs(stride - std::round(stride)) > 1e-9 || std::round(stride) < 2) {
      e.push_back("sample_rate / prod(ratios) / frame_rate = " + std::to_string(o.sample_rate) +
                  " / " + std::to_string(hop) + " / " + std::to_string(o.frame_rate) + " = " +
                  std::to_string(stride) + " must be an integer >= 2 (the downsample stride)");
    }
  }
}

}  // namespace

void MimiOptions::validate() const {
  std::vector<std::string> e;
  validate_into(*this, e);
  if (!e.empty()) throw ConfigError(join_problems("invalid Mimi options", e));
}

int64_t MimiOptions::hop_length() const {
  int64_t hop = 1;
  for (int64_t r : ratios) hop *= r;
  return hop;
}

int64_t MimiOptions::downsample_stride() const {
  return static_cast<int64_t>(
      std::llround(static_cast<double>(sample_rate) / hop_length() / frame_rate));
}

MimiOptions MimiOptions::from_kyutai_json(const std::filesystem::path& path) {
  const json j = read_json(path);
  std::vector<std::string> e;
  MimiOptions o;
  Fields top(j, "", e);
  top.integer("sample_rate", o.sample_rate);
  top.number("frame_rate", o.frame_rate);
  top.require("channels", 1, "mono");

  int64_t quantizer_in = -1, quantizer_out = -1, tr_in = -1, tr_width = -1;
  std::vector<int64_t> tr_out;
  if (const json* s = top.section("seanet")) {
    Fields f(*s, "seanet.", e);
    f.require("channels", 1, "mono");
    f.integer("dimension", o.dimension);
    f.require("causal", true, "Mimi's encoder is causal");
    f.integer("n_filters", o.n_filters);
    f.integer("n_residual_layers", o.n_residual_layers);
    f.require("activation", "ELU", "Mimi uses ELU");
    if (const json* a = f.section("activation_params")) {
      Fields fa(*a, "seanet.activation_params.", e);
      fa.number("alpha", o.elu_alpha);
      fa.reject_unknown();
    }
    f.integer("compress", o.compress);
    f.integer("dilation_base", o.dilation_base);
    f.inert("disable_norm_outer_blocks");  // which convs have weight norm: folded at load anyway
    f.integer("kernel_size", o.kernel_size);
    f.integer("residual_kernel_size", o.residual_kernel_size);
    f.integer("last_kernel_size", o.last_kernel_size);
    if (s->contains("norm") && (*s)["norm"] != "none" && (*s)["norm"] != "weight_norm") {
      e.push_back(
          "key 'seanet.norm': only \"none\" or \"weight_norm\" (folded at load) are "
          "supported, found " +
          (*s)["norm"].dump());
    }
    f.inert("norm");
    f.inert("norm_params");
    f.require("pad_mode", "constant", "Mimi pads with zeros");
    f.integers("ratios", o.ratios);
    f.require("true_skip", true, "identity shortcuts");
    f.require("lstm", 0, "no LSTM in Mimi");
    f.reject_unknown();
  }
  if (const json* s = top.section("transformer")) {
    Fields f(*s, "transformer.", e);
    f.integer("d_model", tr_width);
    f.integer("num_heads", o.num_heads);
    f.integer("num_layers", o.num_layers);
    f.require("causal", true, "Mimi's encoder is causal");
    if (s->contains("layer_scale")) {
      const json& ls = (*s)["layer_scale"];
      if (ls.is_null()) {
        o.layer_scale = false;
      } else if (!ls.is_number()) {
        e.push_back("key 'transformer.layer_scale': expected a number or null, found " + ls.dump());
      }
    }
    f.inert("layer_scale");
    if (s->contains("context") && (*s)["context"].is_null()) o.context = 0;
    f.integer("context", o.context);
    f.require("conv_layout", true, "[B, D, T] in and out");
    f.number("max_period", o.max_period);
    f.require("gating", "none", "Mimi's FFN is linear-GELU-linear");
    f.require("norm", "layer_norm", "Mimi uses LayerNorm");
    f.require("positional_embedding", "rope", "Mimi uses RoPE only");
    f.integer("dim_feedforward", o.dim_feedforward);
    f.integer("input_dimension", tr_in);
    f.integers("output_dimensions", tr_out);
    f.require("bias_ff", false, "Mimi's FFN has no bias");
    f.require("bias_attn", false, "Mimi's attention has no bias");
    f.require("kv_repeat", 1, "no grouped-query attention");
    f.reject_unknown();
  }
  if (const json* s = top.section("quantizer")) {
    Fields f(*s, "quantizer.", e);
    f.integer("dimension", o.codebook_dim);
    f.integer("n_q", o.n_q);
    f.integer("n_q_semantic", o.n_q_semantic);
    f.integer("bins", o.bins);
    f.integer("input_dimension", quantizer_in);
    f.integer("output_dimension", quantizer_out);
    f.require("force_projection", true, "the split RVQ always projects");
    for (const char* k : {"q_dropout", "no_quantization_rate", "decay", "threshold_usage_ratio",
                          "replaced_usage_ratio", "generator_seed"}) {
      f.inert(k);  // training-time settings
    }
    f.reject_unknown();
  }
  top.reject_unknown();
  auto same_width = [&](const char* key, int64_t v) {
    if (v != -1 && v != o.dimension) {
      e.push_back("key '" + std::string(key) + "' (" + std::to_string(v) +
                  ") must equal seanet.dimension (" + std::to_string(o.dimension) + ")");
    }
  };
  same_width("transformer.d_model", tr_width);
  same_width("transformer.input_dimension", tr_in);
  same_width("quantizer.input_dimension", quantizer_in);
  same_width("quantizer.output_dimension", quantizer_out);
  if (!tr_out.empty() && (tr_out.size() != 1 || tr_out[0] != o.dimension)) {
    e.push_back("key 'transformer.output_dimensions' must be [seanet.dimension]");
  }
  if (e.empty()) validate_into(o, e);
  if (!e.empty()) throw ConfigError(join_problems(path.string() + ": invalid Mimi config", e));
  return o;
}

MimiOptions MimiOptions::from_hf_config(const std::filesystem::path& path) {
  const json j = read_json(path);
  std::vector<std::string> e;
  MimiOptions o;
  Fields f(j, "", e);
  f.require("model_type", "mimi", "a Mimi config");
  f.integer("sampling_rate", o.sample_rate);
  f.number("frame_rate", o.frame_rate);
  f.require("audio_channels", 1, "mono");
  f.integer("hidden_size", o.dimension);
  f.integer("num_filters", o.n_filters);
  f.integer("num_residual_layers", o.n_residual_layers);
  f.integers("upsampling_ratios", o.ratios);
  f.integer("kernel_size", o.kernel_size);
  f.integer("last_kernel_size", o.last_kernel_size);
  f.integer("residual_kernel_size", o.residual_kernel_size);
  f.integer("dilation_growth_rate", o.dilation_base);
  f.require("use_causal_conv", true, "Mimi's encoder is causal");
  f.require("pad_mode", "constant", "Mimi pads with zeros");
  f.integer("compress", o.compress);
  f.integer("codebook_size", o.bins);
  f.integer("codebook_dim", o.codebook_dim);
  int64_t vq_hidden = -1, kv_heads = -1, head_dim = -1;
  f.integer("vector_quantization_hidden_dimension", vq_hidden);
  f.integer("num_quantizers", o.n_q);
  f.integer("num_semantic_quantizers", o.n_q_semantic);
  f.require("use_conv_shortcut", false, "identity shortcuts");
  f.integer("num_hidden_layers", o.num_layers);
  f.integer("intermediate_size", o.dim_feedforward);
  f.integer("num_attention_heads", o.num_heads);
  f.integer("num_key_value_heads", kv_heads);
  f.integer("head_dim", head_dim);
  f.require("hidden_act", "gelu", "exact GELU");
  f.number("norm_eps", o.norm_eps);
  f.number("rope_theta", o.max_period);
  if (const json* rp = f.section("rope_parameters")) {
    Fields fr(*rp, "rope_parameters.", e);
    fr.number("rope_theta", o.max_period);
    fr.require("rope_type", "default", "plain RoPE");
  }
  if (j.contains("sliding_window") && j["sliding_window"].is_null()) o.context = 0;
  f.integer("sliding_window", o.context);
  f.require("attention_bias", false, "Mimi's attention has no bias");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    e.push_back("key 'rope_scaling': only null is supported, found " + j["rope_scaling"].dump());
  }
  if (vq_hidden != -1 && vq_hidden != o.codebook_dim) {
    e.push_back("key 'vector_quantization_hidden_dimension' (" + std::to_string(vq_hidden) +
                ") must equal codebook_dim (" + std::to_string(o.codebook_dim) + ")");
  }
  if (kv_heads != -1 && kv_heads != o.num_heads) {
    e.push_back("key 'num_key_value_heads' (" + std::to_string(kv_heads) +
                ") must equal num_attention_heads (" + std::to_string(o.num_heads) + ")");
  }
  if (head_dim != -1 && o.num_heads > 0 && head_dim * o.num_heads != o.dimension) {
    e.push_back("key 'head_dim' (" + std::to_string(head_dim) +
                ") must equal hidden_size / num_attention_heads");
  }
  if (e.empty()) validate_into(o, e);
  if (!e.empty()) throw ConfigError(join_problems(path.string() + ": invalid Mimi config", e));
  return o;
}

MimiOptions MimiOptions::from_json_file(const std::filesystem::path& path) {
  const json j = read_json(path);
  if (j.contains("seanet") || j.contains("transformer") || j.contains("quantizer")) {
    return from_kyutai_json(path);
  }
  if (j.contains("model_type") || j.contains("hidden_size") || j.contains("num_quantizers")) {
    return from_hf_config(path);
  }
  throw ConfigError(path.string() +
                    ": not a Mimi config (expected a moshi config with seanet/transformer/"
                    "quantizer sections, or a Hugging Face config.json with model_type \"mimi\")");
}

}  // namespace salad::models
