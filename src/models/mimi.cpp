// MimiModel (the stages), MimiEncoder (the SpeechEncoder) and checkpoint loading (Kyutai and
// Hugging Face naming, weight-norm folding, HF q/k row order).
//
// Shape legend: B batch, L samples, T encoder steps (25 Hz), F frames (12.5 Hz), D latent width,
// H heads, Dh head width.
#include "salad/models/mimi.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "models/mimi_internal.h"
#include "salad/core/error.h"
#include "salad/core/shape.h"
#include "salad/models/weight_loader.h"

namespace salad::models {

using mimi_detail::path_segment;
namespace fs = std::filesystem;

namespace {

// SEANet chunk (samples) by default, 0.4 s at 24 kHz: the fastest of the lengths measured
// (docs/performance.md, Mimi section), and it bounds activation memory (a 60 s clip in one pass
// keeps ~1.5 GB of 24 kHz activations alive).
constexpr int64_t kDefaultSeanetChunkSamples = 9600;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Model

MimiModelImpl::MimiModelImpl(const MimiOptions& o) : o_(o), chunk_(kDefaultSeanetChunkSamples) {
  o_.validate();
  const int64_t D = o_.dimension, stride = o_.downsample_stride();
  encoder = register_module("encoder", SeanetEncoder(o_));
  encoder_transformer = path_segment(*this, "encoder_transformer")
                            ->register_module("transformer", MimiTransformer(o_));
  // moshi ConvDownsample1d(learnt=True): a full conv with kernel 2 * stride, no bias, replicate
  // pad.
  downsample = path_segment(*this, "downsample")
                   ->register_module("conv", CausalConv1d(D, D, 2 * stride, stride, /*dilation=*/1,
                                                          /*bias=*/false, /*replicate_pad=*/true));
  quantizer = register_module("quantizer", SplitResidualVQ(o_));
  set_seanet_chunk_samples(kDefaultSeanetChunkSamples);
}

void MimiModelImpl::set_seanet_chunk_samples(int64_t samples) {
  const int64_t hop = o_.hop_length();
  chunk_ = samples <= 0 ? 0 : std::max(hop, samples / hop * hop);
}

at::Tensor MimiModelImpl::seanet(const at::Tensor& wave) { return encoder->forward(wave, chunk_); }

at::Tensor MimiModelImpl::transformer(const at::Tensor& x) {
  return encoder_transformer->forward(x.transpose(1, 2)).transpose(1, 2);  // [B, D, T]
}

at::Tensor MimiModelImpl::downsample_steps(const at::Tensor& x) {
  return downsample->forward(x);  // [B, D, T / stride]
}

at::Tensor MimiModelImpl::latent(const at::Tensor& wave) {
  if (wave.dim() != 3 || wave.size(1) != 1 || wave.size(2) % o_.samples_per_frame() != 0) {
    throw Error("Mimi: latent() needs a [B, 1, L] waveform with L a multiple of " +
                std::to_string(o_.samples_per_frame()) + ", found " + shape_text(wave.sizes()));
  }
  return downsample_steps(transformer(seanet(wave)));  // [B, D, F]
}

// ---------------------------------------------------------------------------------------------
// SpeechEncoder

MimiOutput parse_mimi_output(const std::string& name) {
  if (name == "latent") return MimiOutput::kLatent;
  if (name == "quantized") return MimiOutput::kQuantized;
  if (name == "codes") return MimiOutput::kCodes;
  throw ConfigError("unknown Mimi output '" + name + "' (expected latent, quantized or codes)");
}

std::string to_string(MimiOutput output) {
  switch (output) {
    case MimiOutput::kLatent:
      return "latent";
    case MimiOutput::kQuantized:
      return "quantized";
    case MimiOutput::kCodes:
      return "codes";
  }
  return "?";
}

MimiEncoder::MimiEncoder(MimiModel model, const MimiEncoderOptions& options)
    : model_(std::move(model)), options_(options) {
  const int64_t n_q = model_->options().n_q;
  if (options_.output != MimiOutput::kLatent && (options_.n_q < 1 || options_.n_q > n_q)) {
    throw ConfigError("Mimi encoder: n_q must be in [1, " + std::to_string(n_q) + "] for output " +
                      to_string(options_.output) + ", found " + std::to_string(options_.n_q));
  }
  model_->eval();
  for (auto& p : model_->parameters()) p.requires_grad_(false);
}

int64_t MimiEncoder::feature_dim() const {
  return options_.output == MimiOutput::kCodes ? options_.n_q : model_->options().dimension;
}

std::string MimiEncoder::describe() const {
  std::string s = "mimi " + to_string(options_.output);
  if (options_.output != MimiOutput::kLatent) s += " n_q=" + std::to_string(options_.n_q);
  return s + " (" + std::to_string(feature_dim()) + "-d, " + std::to_string(sample_rate()) +
         " Hz / " + std::to_string(samples_per_frame()) + ")";
}

at::Tensor MimiEncoder::prepare(const at::Tensor& wave, const at::Tensor& lengths,
                                at::Tensor& frames) const {
  if (!wave.defined() || wave.dim() != 2 || wave.size(0) < 1 || wave.size(1) < 1) {
    throw Error("Mimi encoder: wave must be [B, L] mono samples with B, L >= 1, found " +
                (wave.defined() ? shape_text(wave.sizes()) : std::string("an undefined tensor")));
  }
  if (!at::isFloatingType(wave.scalar_type())) {
    throw Error("Mimi encoder: wave must be floating point, found " +
                std::string(c10::toString(wave.scalar_type())));
  }
  const int64_t B = wave.size(0), L = wave.size(1);
  if (!lengths.defined() || lengths.dim() != 1 || lengths.size(0) != B ||
      at::isFloatingType(lengths.scalar_type())) {
    throw Error("Mimi encoder: lengths must be [" + std::to_string(B) + "] integers, found " +
                (lengths.defined() ? shape_text(lengths.sizes()) + " " +
                                         std::string(c10::toString(lengths.scalar_type()))
                                   : std::string("an undefined tensor")));
  }
  const at::Tensor len = lengths.to(at::kCPU, at::kLong);
  const auto acc = len.accessor<int64_t, 1>();
  std::string bad;
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) {
    if (acc[b] < 1 || acc[b] > L) bad += " [" + std::to_string(b) + "]=" + std::to_string(acc[b]);
    longest = std::max(longest, acc[b]);
  }
  if (!bad.empty()) {
    throw Error("Mimi encoder: lengths must be in [1, " + std::to_string(L) + "]; found" + bad);
  }
  const int64_t spf = samples_per_frame();
  const int64_t F = (longest + spf - 1) / spf;
  frames = (len + spf - 1).div(spf, "floor");  // [B]
  const auto device = model_->downsample->conv->weight.device();
  at::Tensor x = wave.narrow(1, 0, longest).to(device, at::kFloat);  // [B, Lmax]
  // Zero what lies past each length: the last partial frame then sees the same zeros as the clip
  // alone (moshi's pad_for_conv1d), whatever the caller padded with.
  const at::Tensor valid = at::arange(longest, x.options().dtype(at::kLong)).unsqueeze(0) <
                           len.to(device).unsqueeze(1);  // [B, Lmax]
  x = at::where(valid, x, at::zeros({}, x.options()));
  x = at::constant_pad_nd(x, {0, F * spf - longest});  // [B, F * spf]
  return x.unsqueeze(1);                               // [B, 1, F * spf]
}

MimiStages MimiEncoder::stages(const at::Tensor& wave, const at::Tensor& lengths) {
  torch::NoGradGuard no_grad;
  MimiStages s;
  const at::Tensor x = prepare(wave, lengths, s.frames);
  s.seanet_out = model_->seanet(x);                        // [B, D, T]
  s.transformer_out = model_->transformer(s.seanet_out);   // [B, D, T]
  s.latent = model_->downsample_steps(s.transformer_out);  // [B, D, F]
  return s;
}

EncodedBatch MimiEncoder::encode(const at::Tensor& wave, const at::Tensor& lengths) {
  torch::NoGradGuard no_grad;
  EncodedBatch out;
  const at::Tensor latent = model_->latent(prepare(wave, lengths, out.frames));  // [B, D, F]
  at::Tensor f;
  switch (options_.output) {
    case MimiOutput::kLatent:
      f = latent;
      break;
    case MimiOutput::kQuantized:
      f = model_->quantized(model_->codes(latent, options_.n_q));  // [B, D, F]
      break;
    case MimiOutput::kCodes:
      f = model_->codes(latent, options_.n_q);  // [B, n_q, F]
      break;
  }
  f = f.transpose(1, 2);  // [B, F, D] (codes: [B, F, n_q])
  const at::Tensor pad = at::arange(f.size(1), out.frames.options()).unsqueeze(0) >=
                         out.frames.unsqueeze(1);  // [B, F]
  out.features = f.masked_fill(pad.to(f.device()).unsqueeze(2), 0).contiguous();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loading

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
}

// Kyutai key -> HF key: the encoder-side rules of transformers'
// convert_mimi_checkpoint_to_pytorch.py, applied in the same order.
std::string hf_key(std::string name) {
  static const std::pair<const char*, const char*> kRules[] = {
      {"conv.conv.conv", "conv"},
      {"conv.conv", "conv"},
      {"quantizer.rvq_first.vq", "quantizer.semantic_residual_vector_quantizer"},
      {"quantizer.rvq_first", "quantizer.semantic_residual_vector_quantizer"},
      {"quantizer.rvq_rest.vq", "quantizer.acoustic_residual_vector_quantizer"},
      {"quantizer.rvq_rest", "quantizer.acoustic_residual_vector_quantizer"},
      {"_codebook", "codebook"},
      {"_initialized", "initialized"},
      {"embedding_sum", "embed_sum"},
      {"encoder.model", "encoder.layers"},
      {"encoder_transformer.transformer", "encoder_transformer"},
      {"linear1", "mlp.fc1"},
      {"linear2", "mlp.fc2"},
      {"self_attn.out_proj", "self_attn.o_proj"},
      {"norm1", "input_layernorm"},
      {"norm2", "post_attention_layernorm"},
      {"layer_scale_1", "self_attn_layer_scale"},
      {"layer_scale_2", "mlp_layer_scale"},
  };
  for (const auto& [from, to] : kRules) replace_all(name, from, to);
  return name;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

MimiNaming detect_naming(const safetensors::Checkpoint& ckpt) {
  bool kyutai = false, hf = false;
  for (const auto& k : ckpt.names()) {
    kyutai |= starts_with(k, "encoder.model.") ||
              starts_with(k, "encoder_transformer.transformer.") ||
              starts_with(k, "quantizer.rvq_");
    hf |= starts_with(k, "encoder.layers.") || starts_with(k, "encoder_transformer.layers.") ||
          starts_with(k, "quantizer.semantic_residual_vector_quantizer.");
  }
  if (kyutai != hf) return kyutai ? MimiNaming::kKyutai : MimiNaming::kHuggingFace;
  throw CheckpointError(
      ckpt.source().string() + ": " +
      (kyutai ? "mixes Kyutai and Hugging Face" : "has neither Kyutai nor Hugging Face") +
      " Mimi key names (expected encoder.model.* / encoder_transformer.transformer.* / "
      "quantizer.rvq_* or encoder.layers.* / encoder_transformer.layers.* / "
      "quantizer.semantic_residual_vector_quantizer.*)");
}

// A module tensor assembled from several checkpoint tensors.
// HF stores q and k with rows (head, half, pair index) for its rotate-half RoPE; Kyutai's
// interleaved layout wants (head, pair index, half): HF row c * Dh/2 + i = Kyutai row 2i + c.
at::Tensor hf_to_interleaved_rows(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), Dh = rows / heads;
  return w.view({heads, 2, Dh / 2, w.size(1)}).transpose(1, 2).reshape({rows, w.size(1)});
}

// torch weight_norm(dim=0): w = v * (g / ||v||), the norm over all dims but the first.
at::Tensor fold_weight_norm(const at::Tensor& g, const at::Tensor& v) {
  const at::Tensor v32 = v.to(at::kFloat);
  return v32 * (g.to(at::kFloat) / v32.norm(2, {1, 2}, /*keepdim=*/true));
}

}  // namespace

MimiNaming load_mimi_weights(MimiModelImpl& model, const safetensors::Checkpoint& ckpt,
                             const std::string& config_source) {
  const MimiNaming naming = detect_naming(ckpt);
  const bool hf = naming == MimiNaming::kHuggingFace;
  const auto key_of = [hf](const std::string& name) { return hf ? hf_key(name) : name; };
  const MimiOptions& o = model.options();

  std::vector<CompositeTensor> composites;
  if (hf) {
    const int64_t D = o.dimension, H = o.num_heads;
    for (int64_t i = 0; i < o.num_layers; ++i) {
      const std::string base = "encoder_transformer.layers." + std::to_string(i) + ".self_attn.";
      composites.push_back(
          {"encoder_transformer.transformer.layers." + std::to_string(i) +
               ".self_attn.in_proj_weight",
           {base + "q_proj.weight", base + "k_proj.weight", base + "v_proj.weight"},
           {{D, D}, {D, D}, {D, D}},
           [H](const std::vector<at::Tensor>& t) {
             return at::cat(
                 {hf_to_interleaved_rows(t[0], H), hf_to_interleaved_rows(t[1], H), t[2]});
           }});
    }
  }
  for (const auto& p : model.named_parameters()) {
    const std::string& name = p.key();
    if (p.value().dim() != 3 || name.size() < 7 ||
        name.compare(name.size() - 7, 7, ".weight") != 0) {
      continue;  // only conv weights carry weight norm
    }
    const std::string key = key_of(name);
    if (ckpt.contains(key)) continue;
    const std::string stem = key.substr(0, key.size() - 6);  // "...conv."
    const auto shape = p.value().sizes().vec();
    const std::vector<int64_t> g_shape = {shape[0], 1, 1};
    for (const auto& [g, v] :
         {std::pair<std::string, std::string>{"weight_g", "weight_v"},
          {"parametrizations.weight.original0", "parametrizations.weight.original1"}}) {
      if (ckpt.contains(stem + g) || ckpt.contains(stem + v)) {
        composites.push_back(
            {name, {stem + g, stem + v}, {g_shape, shape}, [](const std::vector<at::Tensor>& t) {
               return fold_weight_norm(t[0], t[1]);
             }});
        break;
      }
    }
  }

  LoadOptions lo;
  lo.what = std::string("the Mimi encoder (") + (hf ? "Hugging Face" : "Kyutai") + " naming)";
  lo.key_map = key_of;
  lo.ignore_prefixes = {"decoder.", "decoder_transformer.", "upsample."};
  lo.composites = std::move(composites);
  if (!config_source.empty()) lo.hint = "model config: " + config_source;
  load_weights(model, ckpt, lo);
  model.refresh_codebooks();
  return naming;
}

MimiModel load_mimi_model(const fs::path& path, const fs::path& config) {
  if (!fs::exists(path)) {
    throw IoError(path.string() +
                  ": no such file or folder (expected a Kyutai Mimi .safetensors "
                  "or a Hugging Face kyutai/mimi folder)");
  }
  fs::path cfg = config;
  if (cfg.empty()) {
    const std::vector<fs::path> candidates =
        fs::is_directory(path) ? std::vector<fs::path>{path / "config.json"}
                               : std::vector<fs::path>{fs::path(path).replace_extension(".json"),
                                                       path.parent_path() / "config.json"};
    for (const auto& c : candidates) {
      if (fs::is_regular_file(c)) {
        cfg = c;
        break;
      }
    }
  }
  const MimiOptions o = cfg.empty() ? MimiOptions{} : MimiOptions::from_json_file(cfg);
  const std::string source =
      cfg.empty() ? "defaults of the released Mimi (no config file found)" : cfg.string();
  const auto ckpt = safetensors::Checkpoint::open(path);
  MimiModel model(o);
  const MimiNaming naming = load_mimi_weights(*model, ckpt, source);
  model->eval();
  for (auto& p : model->parameters()) p.requires_grad_(false);
  spdlog::info("Mimi encoder: {} ({} naming), config {}", path.string(),
               naming == MimiNaming::kKyutai ? "Kyutai" : "Hugging Face", source);
  return model;
}

std::unique_ptr<MimiEncoder> load_mimi_encoder(const fs::path& path,
                                               const MimiEncoderOptions& options) {
  return std::make_unique<MimiEncoder>(load_mimi_model(path, options.config), options);
}

}  // namespace salad::models
