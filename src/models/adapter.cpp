#include "salad/models/adapter.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/embedding.h>
#include <torch/torch.h>

#include <cstdio>
#include <vector>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/models/checkpointing.h"

namespace salad::models {

AdapterOptions AdapterOptions::from_config(const config::AdapterConfig& c, int64_t input_dim,
                                           bool codes, int64_t llm_hidden_size) {
  AdapterOptions o;
  o.input_dim = input_dim;
  o.codes = codes;
  o.codebook_size = c.codebook_size;
  o.hidden_size = c.hidden_size;
  o.num_layers = c.num_layers;
  o.num_heads = c.num_heads;
  o.num_kv_heads = c.num_kv_heads;
  o.intermediate_size = c.intermediate_size;
  o.rope_theta = c.rope_theta;
  o.rms_norm_eps = c.rms_norm_eps;
  o.causal = c.causal;
  o.init_std = c.init_std;
  o.output_dim = llm_hidden_size;
  o.validate();
  return o;
}

void AdapterOptions::validate() const {
  std::vector<std::string> e;
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) e.push_back(std::string(key) + " must be > 0, found " + std::to_string(v));
  };
  positive("adapter input width (encoder feature_dim)", input_dim);
  positive("adapter.hidden_size", hidden_size);
  positive("adapter.num_layers", num_layers);
  positive("adapter.num_heads", num_heads);
  positive("adapter.num_kv_heads", num_kv_heads);
  positive("adapter.intermediate_size", intermediate_size);
  positive("adapter output width (LLM hidden_size)", output_dim);
  if (codes) positive("adapter.codebook_size", codebook_size);
  if (num_heads > 0 && hidden_size % num_heads != 0) {
    e.push_back("adapter.num_heads (" + std::to_string(num_heads) +
                ") must divide adapter.hidden_size (" + std::to_string(hidden_size) + ")");
  } else if (num_heads > 0 && (hidden_size / num_heads) % 2 != 0) {
    e.push_back("adapter head width hidden_size/num_heads must be even for RoPE, found " +
                std::to_string(hidden_size / num_heads));
  }
  if (num_kv_heads > 0 && num_heads % num_kv_heads != 0) {
    e.push_back("adapter.num_kv_heads (" + std::to_string(num_kv_heads) +
                ") must divide adapter.num_heads (" + std::to_string(num_heads) + ")");
  }
  if (!(init_std > 0)) e.push_back("adapter.init_std must be > 0");
  if (!e.empty()) {
    std::string msg = "invalid adapter options:";
    for (const auto& s : e) msg += "\n  " + s;
    throw ConfigError(msg);
  }
}

int64_t AdapterOptions::parameter_count() const {
  const int64_t Da = hidden_size, Dh = hidden_size / num_heads;
  const int64_t kv = num_kv_heads * Dh;
  const int64_t per_layer = 2 * Da                   // two RMSNorms
                            + Da * Da + 2 * Da * kv  // q, k, v
                            + Da * Da                // o
                            + 3 * Da * intermediate_size;
  const int64_t in = codes ? input_dim * codebook_size * Da : input_dim * Da + Da;
  const int64_t out = Da * output_dim + output_dim;
  return in + num_layers * per_layer + Da /* final norm */ + out + 2 * output_dim /* markers */;
}

std::string AdapterOptions::describe() const {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "adapter: %s %lld -> %lld, %lld %s layers (width %lld, %lld heads / %lld KV, "
                "MLP %lld) -> %lld = %lld parameters (%.2f M)",
                codes ? "codes" : "features", static_cast<long long>(input_dim),
                static_cast<long long>(hidden_size), static_cast<long long>(num_layers),
                causal ? "causal" : "bidirectional", static_cast<long long>(hidden_size),
                static_cast<long long>(num_heads), static_cast<long long>(num_kv_heads),
                static_cast<long long>(intermediate_size), static_cast<long long>(output_dim),
                static_cast<long long>(parameter_count()),
                static_cast<double>(parameter_count()) / 1e6);
  return buf;
}

AdapterImpl::AdapterImpl(const AdapterOptions& o) : o_(o) {
  o_.validate();
  using torch::nn::LinearOptions;
  if (o_.codes) {
    code_embeddings = register_module("code_embeddings", torch::nn::ModuleList());
    for (int64_t q = 0; q < o_.input_dim; ++q) {
      code_embeddings->push_back(torch::nn::Embedding(o_.codebook_size, o_.hidden_size));
    }
  } else {
    in_proj =
        register_module("in_proj", torch::nn::Linear(LinearOptions(o_.input_dim, o_.hidden_size)));
  }
  BlockOptions bo;
  bo.attention.hidden_size = o_.hidden_size;
  bo.attention.num_heads = o_.num_heads;
  bo.attention.num_kv_heads = o_.num_kv_heads;
  bo.attention.qkv_bias = false;
  bo.attention.rope_theta = o_.rope_theta;
  bo.intermediate_size = o_.intermediate_size;
  bo.rms_norm_eps = o_.rms_norm_eps;
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o_.num_layers; ++i) layers->push_back(DecoderBlock(bo));
  norm = register_module("norm", RMSNorm(o_.hidden_size, o_.rms_norm_eps));
  out_proj =
      register_module("out_proj", torch::nn::Linear(LinearOptions(o_.hidden_size, o_.output_dim)));
  speech_start = register_parameter("speech_start", torch::zeros({o_.output_dim}));
  speech_end = register_parameter("speech_end", torch::zeros({o_.output_dim}));

  // Llama-style init: every matrix N(0, std), biases 0, norm weights 1 (RMSNorm's default).
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters(/*recurse=*/true)) {
    const std::string& name = p.key();
    if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      p.value().zero_();
    } else if (name.find("norm") == std::string::npos) {
      p.value().normal_(0.0, o_.init_std);
    }
  }
}

at::Tensor AdapterImpl::forward(const at::Tensor& features, const at::Tensor& lengths) {
  if (features.dim() != 3 || features.size(2) != o_.input_dim) {
    throw DataError("adapter: features must be [S, F, " + std::to_string(o_.input_dim) +
                    "], found " + c10::str(features.sizes()));
  }
  if (lengths.dim() != 1 || lengths.size(0) != features.size(0)) {
    throw DataError("adapter: lengths must be [" + std::to_string(features.size(0)) + "], found " +
                    c10::str(lengths.sizes()));
  }
  const int64_t S = features.size(0), F = features.size(1);
  if (S > 0) {
    // One host sync per call; a bad length or code would otherwise surface as an index error
    // deep inside attention or an embedding.
    const auto [lo, hi] = at::aminmax(lengths);
    if (lo.item<int64_t>() < 1 || hi.item<int64_t>() > F) {
      throw DataError("adapter: segment lengths must be in [1, " + std::to_string(F) +
                      "], found [" + std::to_string(lo.item<int64_t>()) + ", " +
                      std::to_string(hi.item<int64_t>()) + "]");
    }
    if (o_.codes && features.scalar_type() == at::kLong && F > 0) {
      const auto [cmin, cmax] = at::aminmax(features);
      if (cmin.item<int64_t>() < 0 || cmax.item<int64_t>() >= o_.codebook_size) {
        throw DataError("adapter: codes must be in [0, adapter.codebook_size = " +
                        std::to_string(o_.codebook_size) + "), found [" +
                        std::to_string(cmin.item<int64_t>()) + ", " +
                        std::to_string(cmax.item<int64_t>()) +
                        "] (was the feature cache made with another codebook size?)");
      }
    }
  }
  const auto device = out_proj->weight.device();
  const auto dtype = out_proj->weight.scalar_type();
  if (S == 0 || F == 0)
    return at::zeros({S, F, o_.output_dim}, at::TensorOptions().dtype(dtype).device(device));
  at::Tensor h;
  if (o_.codes) {
    if (features.scalar_type() != at::kLong) {
      throw DataError("adapter: codes input must be int64, found " +
                      std::string(c10::toString(features.scalar_type())));
    }
    const at::Tensor codes = features.to(device);
    for (int64_t q = 0; q < o_.input_dim; ++q) {
      at::Tensor e = code_embeddings[q]->as<torch::nn::Embedding>()->forward(
          codes.select(2, q));  // [S, F, Da]
      h = h.defined() ? h + e : e;
    }
  } else {
    h = in_proj(features.to(device, dtype));  // [S, F, Da]
  }
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor pos = at::arange(F, long_opts).unsqueeze(0).expand({S, F});  // [S, F]
  const at::Tensor mask = pos < lengths.to(device).unsqueeze(1);                // [S, F]
  const Rotary rot = rotary_embedding(pos, o_.hidden_size / o_.num_heads, o_.rope_theta, dtype);
  const at::Tensor allowed = attention_allowed(S, F, mask, {}, device, o_.causal);  // [S,1,F,F]
  const bool checkpoint = activation_checkpointing_ && is_training() && at::GradMode::is_enabled();
  for (size_t i = 0; i < layers->size(); ++i) {
    DecoderBlock layer(layers->ptr<DecoderBlockImpl>(i));
    h = checkpoint ? checkpointed_block(layer, h, rot, allowed)
                   : layer->forward(h, rot, allowed);  // [S, F, Da]
  }
  return out_proj(norm(h));  // [S, F, D]
}

int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

}  // namespace salad::models
