// Mimi speech encoder (Kyutai): a native LibTorch port of the encoder path of moshi's MimiModel
// (SEANet conv encoder -> causal transformer -> stride-2 downsample = the 12.5 Hz
// pre-quantisation latent) and its split residual vector quantizer. Inference only.
//
// Module names are the Kyutai checkpoint keys (encoder.model.N.conv.conv.weight,
// encoder_transformer.transformer.layers.i.self_attn.in_proj_weight,
// downsample.conv.conv.conv.weight, quantizer.rvq_first.vq.layers.l._codebook.embedding_sum, ...),
// so named_parameters() is the Kyutai format. Hugging Face kyutai/mimi checkpoints load through a
// key map; their q/k rows, permuted for HF's rotate-half RoPE, are permuted back at load so one
// forward (interleaved RoPE) serves both.
//
// Shape legend: B batch, L samples (24 kHz), C channels, T encoder steps (25 Hz), F frames
// (12.5 Hz, T = 2F), D latent width (512), Dc codebook width (256), K codebooks, N codebook bins,
// H heads, Dh head width.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "salad/core/safetensors.h"
#include "salad/models/speech_encoder.h"

namespace salad::models {

/// Architecture of a Mimi encoder + quantizer. Defaults are the released Mimi
/// (kyutai/mimi, moshi `loaders._mimi_config`).
struct MimiOptions {
  int64_t sample_rate = 24000;
  double frame_rate = 12.5;
  // SEANet encoder.
  int64_t dimension = 512;                     ///< latent width D (= transformer width)
  int64_t n_filters = 64;                      ///< channels of the first conv
  int64_t n_residual_layers = 1;               ///< residual blocks per stage (dilation base^j)
  std::vector<int64_t> ratios = {8, 6, 5, 4};  ///< decoder order: the encoder strides are reversed
  int64_t kernel_size = 7;
  int64_t residual_kernel_size = 3;
  int64_t last_kernel_size = 3;
  int64_t dilation_base = 2;
  int64_t compress = 2;  ///< residual hidden width = channels / compress
  double elu_alpha = 1.0;
  // Encoder transformer.
  int64_t num_layers = 8;
  int64_t num_heads = 8;
  int64_t dim_feedforward = 2048;
  /// Sliding window in encoder steps: key k is visible from query q iff 0 <= q - k < context
  /// (0: no window, plain causal).
  int64_t context = 250;
  double max_period = 10000.0;  ///< RoPE base
  double norm_eps = 1e-5;       ///< LayerNorm epsilon
  bool layer_scale = true;      ///< LayerScale on both residual branches
  // Split residual vector quantizer.
  int64_t n_q = 32;            ///< codebooks in the checkpoint (semantic + acoustic)
  int64_t n_q_semantic = 1;    ///< codebooks of rvq_first (the rest are rvq_rest)
  int64_t bins = 2048;         ///< entries per codebook N
  int64_t codebook_dim = 256;  ///< Dc

  /// Throws ConfigError listing every problem (non-positive sizes, heads not dividing the width,
  /// odd head width, frame rate not an integer fraction of the encoder rate, ...).
  void validate() const;
  /// Samples per encoder step: the product of the ratios (960).
  int64_t hop_length() const;
  /// Encoder steps per frame (2): sample_rate / hop_length / frame_rate.
  int64_t downsample_stride() const;
  /// Samples per output frame (1920).
  int64_t samples_per_frame() const { return hop_length() * downsample_stride(); }

  /// A moshi-style JSON config (top-level sample_rate/channels/frame_rate and sections seanet,
  /// transformer, quantizer, as `loaders._mimi_config`). Unknown keys, wrong types and
  /// unsupported values (non-causal, reflect padding, gating, ...) are ConfigErrors naming the
  /// file and every offending key.
  static MimiOptions from_kyutai_json(const std::filesystem::path& path);
  /// A Hugging Face `config.json` (model_type "mimi"). Decoder-only and unknown keys are ignored;
  /// encoder keys with unsupported values are ConfigErrors.
  static MimiOptions from_hf_config(const std::filesystem::path& path);
  /// Either layout, recognised by its keys.
  static MimiOptions from_json_file(const std::filesystem::path& path);
};

/// Causal Conv1d (moshi StreamingConv1d): left padding (k - 1) * dilation + 1 - stride with zeros
/// (or copies of the first step), no right padding, so a length divisible by the stride gives
/// length / stride. The Conv1d is registered as conv.conv (Kyutai's StreamingConv1d.conv.conv).
class CausalConv1dImpl : public torch::nn::Module {
 public:
  CausalConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
                   int64_t dilation, bool bias, bool replicate_pad = false);
  /// x: [B, Cin, T] (T divisible by stride) -> [B, Cout, T / stride].
  at::Tensor forward(const at::Tensor& x);
  /// Streaming step: `history` holds the last left_padding() input steps of the previous chunk
  /// (undefined at the start: zeros or replicate) and is updated. Chunk outputs concatenated
  /// equal forward() of the whole input.
  at::Tensor forward_chunk(const at::Tensor& x, at::Tensor& history);
  int64_t left_padding() const { return pad_; }
  torch::nn::Conv1d conv{nullptr};

 private:
  int64_t pad_;
  bool replicate_;
};
TORCH_MODULE(CausalConv1d);

/// SEANet residual block, pre-activation, identity shortcut (true_skip):
/// y = x + conv_k1(ELU(conv_k(ELU(x)))); convs registered as block.1 and block.3.
class SeanetResBlockImpl : public torch::nn::Module {
 public:
  SeanetResBlockImpl(int64_t channels, int64_t hidden, int64_t kernel_size, int64_t dilation,
                     double elu_alpha);
  /// Streaming step over [B, C, T] -> [B, C, T]; one history per conv (see CausalConv1d).
  at::Tensor forward_chunk(const at::Tensor& x, at::Tensor& history1, at::Tensor& history2);
  torch::nn::ModuleList block{nullptr};
  CausalConv1d conv1{nullptr}, conv2{nullptr};

 private:
  double alpha_;
};
TORCH_MODULE(SeanetResBlock);

/// SEANet encoder: conv, then per stride s (ratios reversed): residual blocks, ELU, conv k=2s
/// stride s doubling the channels; then ELU and the last conv to D. Layers are registered as
/// model.N (ELUs take an index without weights, as in Kyutai's nn.Sequential).
class SeanetEncoderImpl : public torch::nn::Module {
 public:
  explicit SeanetEncoderImpl(const MimiOptions& o);
  /// x: [B, 1, L] (L divisible by hop_length) -> [B, D, L / hop_length]. The layers before the
  /// last two downsampling stages run on chunks of `chunk_samples` (rounded down to a multiple of
  /// hop_length; 0 = whole input), the rest on chunks 25 times longer, each conv carrying its
  /// left context across chunks: the same result as one pass, faster and in bounded memory.
  at::Tensor forward(const at::Tensor& x, int64_t chunk_samples = 0);
  torch::nn::ModuleList model{nullptr};

 private:
  struct Layer {
    CausalConv1d conv{nullptr};
    SeanetResBlock res{nullptr};
    bool elu = false;
  };
  // Layers [begin, end) on one chunk; history: two slots per layer (a residual block has two
  // convs, a conv uses the first).
  at::Tensor run(const at::Tensor& x, size_t begin, size_t end, std::vector<at::Tensor>& history);
  std::vector<Layer> layers_;
  size_t split_ = 0;  // first layer of the late part
  int64_t hop_;
  double alpha_;
};
TORCH_MODULE(SeanetEncoder);

/// Multi-head self-attention of the encoder transformer: packed in_proj_weight [3D, D] = rows
/// [q; k; v] (head-major inside each), interleaved RoPE on q and k, causal sliding window of
/// `context` steps, out_proj without bias.
class MimiAttentionImpl : public torch::nn::Module {
 public:
  MimiAttentionImpl(int64_t dim, int64_t num_heads, int64_t context);
  /// x: [B, T, D]; cos, sin: [T, Dh/2] rotary tables -> [B, T, D].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
  at::Tensor in_proj_weight;  ///< [3D, D]
  torch::nn::Linear out_proj{nullptr};

 private:
  int64_t heads_, context_;
};
TORCH_MODULE(MimiAttention);

/// Per-channel scale of a residual branch (registered as `scale` [D]).
class LayerScaleImpl : public torch::nn::Module {
 public:
  LayerScaleImpl(int64_t dim, double init);
  at::Tensor forward(const at::Tensor& x) { return x * scale; }
  at::Tensor scale;
};
TORCH_MODULE(LayerScale);

/// Pre-norm layer: x += ls1 * attn(norm1(x)); x += ls2 * linear2(gelu(linear1(norm2(x)))).
class MimiTransformerLayerImpl : public torch::nn::Module {
 public:
  explicit MimiTransformerLayerImpl(const MimiOptions& o);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  MimiAttention self_attn{nullptr};
  torch::nn::Linear linear1{nullptr}, linear2{nullptr};
  LayerScale layer_scale_1{nullptr}, layer_scale_2{nullptr};  ///< null without layer_scale
};
TORCH_MODULE(MimiTransformerLayer);

/// The layer stack (no final norm, no projections: Mimi's input/output widths equal D).
class MimiTransformerImpl : public torch::nn::Module {
 public:
  explicit MimiTransformerImpl(const MimiOptions& o);
  /// x: [B, T, D] -> [B, T, D]; positions 0..T-1.
  at::Tensor forward(const at::Tensor& x);
  torch::nn::ModuleList layers{nullptr};

 private:
  int64_t head_dim_;
  double max_period_;
};
TORCH_MODULE(MimiTransformer);

/// One codebook (EMA storage): embedding = embedding_sum / max(cluster_usage, 1e-5), computed by
/// refresh() (call it after loading; the constructor calls it once).
class EuclideanCodebookImpl : public torch::nn::Module {
 public:
  EuclideanCodebookImpl(int64_t bins, int64_t dim);
  void refresh();
  /// x: [M, Dc] -> [M] int64, the nearest entry in Euclidean distance (ties: lowest index).
  at::Tensor encode(const at::Tensor& x) const;
  /// codes: [...] int64 -> [..., Dc].
  at::Tensor decode(const at::Tensor& codes) const;
  const at::Tensor& embedding() const { return embedding_; }  ///< [N, Dc]
  at::Tensor embedding_sum;                                   ///< [N, Dc] buffer
  at::Tensor cluster_usage;                                   ///< [N] buffer
  at::Tensor initialized;  ///< [1] buffer, registered as `_initialized` (unused at inference)

 private:
  at::Tensor embedding_;  // [N, Dc]
};
TORCH_MODULE(EuclideanCodebook);

/// One residual VQ (moshi ResidualVectorQuantizer with force_projection): input_proj D -> Dc and
/// output_proj Dc -> D (1x1 convs, no bias) around levels vq.layers.l._codebook.
class ResidualVQImpl : public torch::nn::Module {
 public:
  ResidualVQImpl(int64_t dim, int64_t codebook_dim, int64_t bins, int64_t levels);
  /// latent: [B, D, F] -> codes [B, n, F] of the first n levels (n <= levels).
  at::Tensor encode(const at::Tensor& latent, int64_t n) const;
  /// codes: [B, n, F] -> [B, D, F]: output_proj of the sum of the entries.
  at::Tensor decode(const at::Tensor& codes) const;
  torch::nn::Conv1d input_proj{nullptr}, output_proj{nullptr};
  std::vector<EuclideanCodebook> codebooks;
};
TORCH_MODULE(ResidualVQ);

/// Split RVQ: rvq_first (semantic, n_q_semantic levels) and rvq_rest (acoustic) both quantise
/// the same latent; the dequantised latent is the sum of both decodes.
class SplitResidualVQImpl : public torch::nn::Module {
 public:
  explicit SplitResidualVQImpl(const MimiOptions& o);
  /// latent: [B, D, F] -> [B, n, F] int64, codes of the first n codebooks (1 <= n <= n_q).
  at::Tensor encode(const at::Tensor& latent, int64_t n) const;
  /// codes: [B, n, F] (the first n codebooks) -> [B, D, F].
  at::Tensor decode(const at::Tensor& codes) const;
  void refresh();
  ResidualVQ rvq_first{nullptr}, rvq_rest{nullptr};  ///< rvq_rest null when n_q == n_q_semantic
  int64_t n_q() const { return n_q_; }

 private:
  int64_t n_q_, n_semantic_;
};
TORCH_MODULE(SplitResidualVQ);

/// The whole encoder side of Mimi, stage by stage, in moshi's [B, C, T] layout.
class MimiModelImpl : public torch::nn::Module {
 public:
  explicit MimiModelImpl(const MimiOptions& o);

  /// wave: [B, 1, L] with L a multiple of samples_per_frame() -> [B, D, T].
  at::Tensor seanet(const at::Tensor& wave);
  /// [B, D, T] -> [B, D, T].
  at::Tensor transformer(const at::Tensor& x);
  /// [B, D, T] -> [B, D, T / stride]: learnt causal conv, replicate left padding, no bias.
  at::Tensor downsample_steps(const at::Tensor& x);
  /// The three above: [B, 1, L] -> latent [B, D, F].
  at::Tensor latent(const at::Tensor& wave);
  /// latent [B, D, F] -> [B, n, F] int64.
  at::Tensor codes(const at::Tensor& latent, int64_t n) const {
    return quantizer->encode(latent, n);
  }
  /// codes [B, n, F] -> dequantised latent [B, D, F] of those n codebooks.
  at::Tensor quantized(const at::Tensor& codes) const { return quantizer->decode(codes); }
  /// Recomputes the codebooks from embedding_sum / cluster_usage (after loading weights).
  void refresh_codebooks() { quantizer->refresh(); }

  /// SEANet chunk length in samples (rounded down to a multiple of hop_length; 0: whole input).
  void set_seanet_chunk_samples(int64_t samples);
  int64_t seanet_chunk_samples() const { return chunk_; }
  const MimiOptions& options() const { return o_; }

  SeanetEncoder encoder{nullptr};
  MimiTransformer encoder_transformer{nullptr};  ///< registered as encoder_transformer.transformer
  CausalConv1d downsample{nullptr};              ///< registered as downsample.conv
  SplitResidualVQ quantizer{nullptr};

 private:
  MimiOptions o_;
  int64_t chunk_;
};
TORCH_MODULE(MimiModel);

/// Which tensor a MimiEncoder outputs (DESIGN §3: the latent by default).
enum class MimiOutput { kLatent, kQuantized, kCodes };
/// "latent" | "quantized" | "codes"; throws ConfigError otherwise.
MimiOutput parse_mimi_output(const std::string& name);
std::string to_string(MimiOutput output);

struct MimiEncoderOptions {
  MimiOutput output = MimiOutput::kLatent;
  int64_t n_q = 8;  ///< codebooks used by kQuantized / kCodes (1..MimiOptions::n_q)
  /// Model config for load_mimi_encoder (Kyutai or HF JSON). Empty: `<checkpoint stem>.json`,
  /// then `config.json` beside the checkpoint (or inside the folder), else the released Mimi.
  std::filesystem::path config;
};

/// The model's stages for one batch, moshi layout (for tests and analysis).
struct MimiStages {
  at::Tensor seanet_out;       ///< [B, D, T]
  at::Tensor transformer_out;  ///< [B, D, T]
  at::Tensor latent;           ///< [B, D, F]
  at::Tensor frames;           ///< [B] int64 valid frames
};

/// The frozen Mimi encoder behind the SpeechEncoder interface. Waveforms are 24 kHz mono float;
/// samples past each item's length are zeroed and the batch is zero-padded on the right to a
/// multiple of samples_per_frame(), so, everything being causal, a clip gives the same valid
/// frames alone or in any right-padded batch. Not thread-safe (one encode at a time).
class MimiEncoder : public SpeechEncoder {
 public:
  /// Puts `model` in eval mode and freezes it. Throws ConfigError for n_q out of range.
  MimiEncoder(MimiModel model, const MimiEncoderOptions& options);

  int64_t sample_rate() const override { return model_->options().sample_rate; }
  int64_t samples_per_frame() const override { return model_->options().samples_per_frame(); }
  /// D for latent / quantized, n_q for codes.
  int64_t feature_dim() const override;
  std::string describe() const override;
  /// wave: [B, L] float, lengths: [B] int64 in [1, L] -> features [B, F, D] float32 (codes:
  /// [B, F, n_q] int64), F = ceil(max(lengths) / 1920); frames >= frames[b] are zero.
  /// Throws Error for a wave of another rank or dtype kind, or lengths of the wrong shape/range.
  EncodedBatch encode(const at::Tensor& wave, const at::Tensor& lengths) override;
  /// Same input checks and padding; the intermediate tensors in moshi layout.
  MimiStages stages(const at::Tensor& wave, const at::Tensor& lengths);

  MimiModel& model() { return model_; }
  const MimiEncoderOptions& options() const { return options_; }

 private:
  at::Tensor prepare(const at::Tensor& wave, const at::Tensor& lengths, at::Tensor& frames) const;
  MimiModel model_;
  MimiEncoderOptions options_;
};

/// Checkpoint key naming of a Mimi file.
enum class MimiNaming { kKyutai, kHuggingFace };

/// Loads `ckpt` into `model`: Kyutai or HF naming (detected from the keys), weight-norm
/// (weight_g/weight_v or parametrizations.weight.original0/1) folded, HF q/k rows permuted back,
/// decoder keys ignored; then refreshes the codebooks. Throws CheckpointError listing every
/// missing, unexpected, mis-shaped or mistyped tensor at once, with `config_source` as a hint.
MimiNaming load_mimi_weights(MimiModelImpl& model, const safetensors::Checkpoint& ckpt,
                             const std::string& config_source = "");

/// Builds and loads a Mimi model from a Kyutai .safetensors file or an HF folder
/// (config.json + model.safetensors); see MimiEncoderOptions::config for the config lookup.
MimiModel load_mimi_model(const std::filesystem::path& path,
                          const std::filesystem::path& config = {});

/// load_mimi_model wrapped as a frozen SpeechEncoder with the chosen output.
std::unique_ptr<MimiEncoder> load_mimi_encoder(const std::filesystem::path& path,
                                               const MimiEncoderOptions& options = {});

}  // namespace salad::models
