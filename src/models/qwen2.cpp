#include "salad/models/qwen2.h"

#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/models/checkpointing.h"
#include "salad/models/weight_loader.h"

namespace salad::models {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Options

void Qwen2Options::validate() const {
  std::vector<std::string> e;
  auto positive = [&](const char* k, double v) {
    if (!(v > 0)) e.push_back(std::string(k) + " must be > 0");
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("rope_theta", rope_theta);
  positive("rms_norm_eps", rms_norm_eps);
  if (head_dim == 0 && num_attention_heads > 0 && hidden_size % num_attention_heads != 0) {
    e.push_back("num_attention_heads (" + std::to_string(num_attention_heads) +
                ") must divide hidden_size (" + std::to_string(hidden_size) + ")");
  }
  if (num_key_value_heads > 0 && num_attention_heads % num_key_value_heads != 0) {
    e.push_back("num_key_value_heads (" + std::to_string(num_key_value_heads) +
                ") must divide num_attention_heads (" + std::to_string(num_attention_heads) + ")");
  }
  if (num_attention_heads > 0 && hidden_size > 0 && resolved_head_dim() % 2 != 0) {
    e.push_back("head_dim (" + std::to_string(resolved_head_dim()) + ") must be even for RoPE");
  }
  if (!e.empty()) {
    std::string msg = "invalid Qwen2 options:";
    for (const auto& s : e) msg += "\n  " + s;
    throw ConfigError(msg);
  }
}

Qwen2Options Qwen2Options::from_hf_config(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path.string() + ": cannot open the model config");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& ex) {
    throw ConfigError(path.string() + ": not valid JSON: " + ex.what());
  }
  if (!j.is_object()) throw ConfigError(path.string() + ": expected a JSON object");
  std::vector<std::string> e;
  Qwen2Options o;
  auto get_int = [&](const char* key, int64_t& out, bool required) {
    if (!j.contains(key) || j[key].is_null()) {
      if (required) e.push_back("key '" + std::string(key) + "': missing (an integer)");
      return;
    }
    const json& v = j[key];
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) {
      out = v[0].get<int64_t>();  // eos_token_id may be a list; the first is the default
    } else if (!v.is_number_integer()) {
      e.push_back("key '" + std::string(key) + "': expected an integer, found " + v.dump());
    } else {
      out = v.get<int64_t>();
    }
  };
  auto get_num = [&](const json& obj, const char* key, double& out) {
    if (!obj.contains(key) || obj[key].is_null()) return;
    if (!obj[key].is_number()) {
      e.push_back("key '" + std::string(key) + "': expected a number, found " + obj[key].dump());
    } else {
      out = obj[key].get<double>();
    }
  };
  const std::string model_type = j.value("model_type", std::string());
  if (model_type != "qwen2") {
    e.push_back("key 'model_type': expected \"qwen2\", found \"" + model_type + "\"");
  }
  get_int("vocab_size", o.vocab_size, true);
  get_int("hidden_size", o.hidden_size, true);
  get_int("intermediate_size", o.intermediate_size, true);
  get_int("num_hidden_layers", o.num_hidden_layers, true);
  get_int("num_attention_heads", o.num_attention_heads, true);
  o.num_key_value_heads = -1;
  get_int("num_key_value_heads", o.num_key_value_heads, false);
  if (o.num_key_value_heads == -1) o.num_key_value_heads = o.num_attention_heads;  // HF default
  get_int("head_dim", o.head_dim, false);
  get_int("max_position_embeddings", o.max_position_embeddings, false);
  get_int("bos_token_id", o.bos_token_id, false);
  get_int("eos_token_id", o.eos_token_id, false);
  o.rope_theta = 10000.0;  // Qwen2Config's default when the key is absent
  get_num(j, "rope_theta", o.rope_theta);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    get_num(j["rope_parameters"], "rope_theta", o.rope_theta);
    const std::string t = j["rope_parameters"].value("rope_type", std::string("default"));
    if (t != "default") e.push_back("rope_parameters.rope_type '" + t + "' is not supported");
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    e.push_back("key 'rope_scaling': only null is supported, found " + j["rope_scaling"].dump());
  }
  get_num(j, "rms_norm_eps", o.rms_norm_eps);
  if (j.contains("tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean()) {
      e.push_back("key 'tie_word_embeddings': expected a boolean, found " +
                  j["tie_word_embeddings"].dump());
    } else {
      o.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
    }
  }
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu")
    e.push_back("key 'hidden_act': only \"silu\" is supported, found \"" + act + "\"");
  if (j.value("use_sliding_window", false)) {
    e.push_back("key 'use_sliding_window': sliding-window attention is not supported");
  }
  o.torch_dtype = j.value("torch_dtype", j.value("dtype", std::string("float32")));
  if (e.empty()) {
    try {
      o.validate();
    } catch (const ConfigError& ex) {
      e.push_back(ex.what());
    }
  }
  if (!e.empty()) {
    std::string msg = path.string() + ": invalid Qwen2 config (" + std::to_string(e.size()) +
                      (e.size() == 1 ? " problem" : " problems") + "):";
    for (const auto& s : e) msg += "\n  " + s;
    throw ConfigError(msg);
  }
  return o;
}

Qwen2Options Qwen2Options::from_arch(const config::DecoderArchConfig& a, int64_t vocab_size) {
  Qwen2Options o;
  o.vocab_size = vocab_size;
  o.hidden_size = a.hidden_size;
  o.intermediate_size = a.intermediate_size;
  o.num_hidden_layers = a.num_hidden_layers;
  o.num_attention_heads = a.num_attention_heads;
  o.num_key_value_heads = a.num_key_value_heads;
  o.max_position_embeddings = a.max_position_embeddings;
  o.rope_theta = a.rope_theta;
  o.rms_norm_eps = a.rms_norm_eps;
  o.tie_word_embeddings = a.tie_word_embeddings;
  o.validate();
  return o;
}

std::string Qwen2Options::to_hf_config_json() const {
  json j = {
      {"architectures", {"Qwen2ForCausalLM"}},
      {"model_type", "qwen2"},
      {"hidden_act", "silu"},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"max_position_embeddings", max_position_embeddings},
      {"rope_theta", rope_theta},
      {"rms_norm_eps", rms_norm_eps},
      {"tie_word_embeddings", tie_word_embeddings},
      {"use_sliding_window", false},
      {"rope_scaling", nullptr},
      {"attention_dropout", 0.0},
      {"torch_dtype", torch_dtype},
  };
  if (head_dim) j["head_dim"] = head_dim;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  return j.dump(2) + "\n";
}

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32") return at::kFloat;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp16" || name == "float16") return at::kHalf;
  throw ConfigError("unknown dtype '" + name + "' (expected fp32, bf16 or fp16)");
}

// ---------------------------------------------------------------------------------------------
// Modules

Qwen2ModelImpl::Qwen2ModelImpl(const Qwen2Options& o) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(o.vocab_size, o.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  BlockOptions b;
  b.attention.hidden_size = o.hidden_size;
  b.attention.num_heads = o.num_attention_heads;
  b.attention.num_kv_heads = o.num_key_value_heads;
  b.attention.head_dim = o.resolved_head_dim();
  b.attention.qkv_bias = true;
  b.attention.rope_theta = o.rope_theta;
  b.intermediate_size = o.intermediate_size;
  b.rms_norm_eps = o.rms_norm_eps;
  for (int64_t i = 0; i < o.num_hidden_layers; ++i) layers->push_back(DecoderBlock(b));
  norm = register_module("norm", RMSNorm(o.hidden_size, o.rms_norm_eps));
}

Qwen2Impl::Qwen2Impl(const Qwen2Options& o) : o_(o) {
  o_.validate();
  model = register_module("model", Qwen2Model(o_));
  if (!o_.tie_word_embeddings) {
    lm_head = register_module(
        "lm_head",
        torch::nn::Linear(torch::nn::LinearOptions(o_.hidden_size, o_.vocab_size).bias(false)));
  }
}

at::Tensor Qwen2Impl::embed(const at::Tensor& ids) { return model->embed_tokens(ids); }

at::Tensor Qwen2Impl::lm_head_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

Qwen2Output Qwen2Impl::forward_hidden(const Qwen2Input& in, bool keep_layer_outputs) {
  if (in.input_ids.defined() == in.inputs_embeds.defined()) {
    throw Error("Qwen2::forward: give exactly one of input_ids and inputs_embeds");
  }
  at::Tensor h = in.input_ids.defined() ? embed(in.input_ids) : in.inputs_embeds;  // [B, T, D]
  if (h.dim() != 3 || h.size(2) != o_.hidden_size) {
    throw Error("Qwen2::forward: inputs must be [B, T, " + std::to_string(o_.hidden_size) +
                "] embeddings or [B, T] ids");
  }
  const int64_t B = h.size(0), T = h.size(1);
  at::Tensor pos = in.position_ids;
  if (!pos.defined()) {
    pos = at::arange(T, at::TensorOptions().dtype(at::kLong).device(h.device()))
              .unsqueeze(0)
              .expand({B, T});
  }
  const Rotary rot =
      rotary_embedding(pos.to(h.device()), o_.resolved_head_dim(), o_.rope_theta, h.scalar_type());
  const at::Tensor allowed =
      attention_allowed(B, T, in.attention_mask, in.document_ids, h.device());
  Qwen2Output out;
  const bool checkpoint = activation_checkpointing_ && is_training() && at::GradMode::is_enabled();
  for (size_t i = 0; i < model->layers->size(); ++i) {
    DecoderBlock layer(model->layers->ptr<DecoderBlockImpl>(i));
    h = checkpoint ? checkpointed_block(layer, h, rot, allowed)
                   : layer->forward(h, rot, allowed);  // [B, T, D]
    if (keep_layer_outputs) out.layer_outputs.push_back(h);
  }
  out.hidden = model->norm(h);
  return out;
}

at::Tensor Qwen2Impl::logits(const at::Tensor& hidden) {
  return at::linear(hidden, lm_head_weight());  // [..., V]
}

at::Tensor Qwen2Impl::forward(const Qwen2Input& in) { return logits(forward_hidden(in).hidden); }

Qwen2 load_qwen2(const std::filesystem::path& dir, c10::ScalarType dtype) {
  if (!std::filesystem::is_directory(dir)) {
    throw IoError(dir.string() +
                  ": not a folder (expected a Hugging Face checkpoint folder "
                  "with config.json and *.safetensors)");
  }
  const Qwen2Options o = Qwen2Options::from_hf_config(dir / "config.json");
  const auto ckpt = safetensors::Checkpoint::open(dir);
  Qwen2 model(o);
  model->to(dtype);
  LoadOptions lo;
  lo.what = "the Qwen2 decoder";
  // A tied checkpoint normally has no lm_head.weight; if one is there anyway it is the embedding.
  if (o.tie_word_embeddings) lo.allow_unexpected.push_back("lm_head.weight");
  load_weights(*model, ckpt, lo);
  return model;
}

}  // namespace salad::models
