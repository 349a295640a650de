// The typed config tree of every salad job, and how it is loaded.
//
// Precedence: defaults (the member initialisers below) < YAML recipe (which may `include:` other
// YAML files, applied first) < `--set a.b=c` overrides. Every struct lists its fields once, in
// visit(); parsing, validation of unknown keys, the resolved-config writer and the Markdown
// reference (docs/config.md) all walk that one list. Relative paths are resolved against the
// folder of the YAML file that set them (the working directory for --set).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace salad::config {

namespace fs = std::filesystem;

// Field flags for visit(): kRequired fields must be set by some YAML file or --set.
enum FieldFlags : unsigned { kOptional = 0u, kRequired = 1u };

/// Where the job writes and how it behaves as a process.
struct RunConfig {
  fs::path dir;                    ///< run folder (checkpoints, metrics, resolved config)
  int64_t seed = 1234;             ///< seeds data order, init and dropout
  std::string stage = "1";         ///< text | 1 | 2
  std::string log_level = "info";  ///< trace | debug | info | warn | error
  bool log_all_ranks = false;      ///< non-zero ranks log at info too (default: warn and up)
  int64_t threads = 0;             ///< intra-op threads; 0 = LibTorch's default
  std::string device = "auto";     ///< auto | cpu | cuda | cuda:N

  template <class V>
  void visit(V& v) {
    v("dir", dir, "Run folder: resolved config, metrics.jsonl, checkpoints/.", kRequired);
    v("seed", seed, "Seed of data order, initialisation and sampling.");
    v.choice("stage", stage, {"text", "1", "2"},
             "text: plain LM training (a small teacher); 1: Stage I distillation; 2: Stage II.");
    v.choice("log_level", log_level, {"trace", "debug", "info", "warn", "error"},
             "Console log level of rank 0.");
    v("log_all_ranks", log_all_ranks, "Let ranks other than 0 log at log_level (else warn).");
    v("threads", threads, "Intra-op CPU threads (0: every CPU the process may use).");
    v("device", device,
      "auto (cuda:LOCAL_RANK when CUDA is available, else cpu) | cpu | cuda | cuda:N.");
  }
};

/// Architecture of a Qwen2-style decoder built from scratch (stage `text`, tests). Ignored when
/// model.llm names a Hugging Face checkpoint folder, whose config.json wins.
struct DecoderArchConfig {
  int64_t vocab_size = 0;  ///< 0: the tokenizer's size
  int64_t hidden_size = 256;
  int64_t intermediate_size = 704;
  int64_t num_hidden_layers = 4;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 2;
  int64_t max_position_embeddings = 2048;
  double rope_theta = 1000000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = true;

  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size, "Vocabulary size (0: the tokenizer's size).");
    v("hidden_size", hidden_size, "Model width.");
    v("intermediate_size", intermediate_size, "SwiGLU hidden width.");
    v("num_hidden_layers", num_hidden_layers, "Decoder layers.");
    v("num_attention_heads", num_attention_heads, "Query heads.");
    v("num_key_value_heads", num_key_value_heads, "Key/value heads (GQA).");
    v("max_position_embeddings", max_position_embeddings, "Longest sequence.");
    v("rope_theta", rope_theta, "RoPE base.");
    v("rms_norm_eps", rms_norm_eps, "RMSNorm epsilon.");
    v("tie_word_embeddings", tie_word_embeddings, "LM head shares the embedding matrix.");
  }
};

/// The text LLM (teacher and student decoder) and its tokenizer.
struct ModelConfig {
  fs::path llm;        ///< HF checkpoint folder (config.json + safetensors); empty: build `arch`
  fs::path tokenizer;  ///< tokenizer.json or SentencePiece .model; empty: llm/tokenizer.json
  std::string dtype = "fp32";  ///< fp32 | bf16 | fp16 (weights as loaded)
  DecoderArchConfig arch;

  template <class V>
  void visit(V& v) {
    v("llm", llm, "Hugging Face Qwen2/Qwen2.5 checkpoint folder; empty: build model.arch.");
    v("tokenizer", tokenizer,
      "tokenizer.json or SentencePiece .model (empty: <llm>/tokenizer.json).");
    v.choice("dtype", dtype, {"fp32", "bf16", "fp16"}, "Weight dtype of the loaded decoder.");
    v("arch", arch, "Decoder architecture when training from scratch.");
  }
};

/// The frozen speech encoder.
struct EncoderConfig {
  std::string type = "fbank";     ///< fbank | mimi
  fs::path checkpoint;            ///< Mimi safetensors (Kyutai or HF layout) or HF folder
  std::string output = "latent";  ///< latent | quantized | codes
  int64_t n_q = 8;                ///< codebooks for quantized/codes
  int64_t n_mels = 80;            ///< fbank: mel bands per 10 ms frame (8 frames stacked)

  template <class V>
  void visit(V& v) {
    v.choice("type", type, {"fbank", "mimi"},
             "Speech encoder: mimi (needs checkpoint) or the built-in log-mel fbank.");
    v("checkpoint", checkpoint, "Mimi weights: Kyutai .safetensors or HF kyutai/mimi folder.");
    v.choice("output", output, {"latent", "quantized", "codes"},
             "Mimi output fed to the adapter (DESIGN §3: pre-quantization latent).");
    v("n_q", n_q, "Codebooks used for output=quantized|codes.");
    v("n_mels", n_mels, "fbank: mel bands.");
  }
};

/// The trainable speech adapter (encoder frames -> LLM embedding space).
struct AdapterConfig {
  int64_t hidden_size = 960;
  int64_t num_layers = 12;
  int64_t num_heads = 15;
  int64_t num_kv_heads = 5;
  int64_t intermediate_size = 2560;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool causal = true;            ///< causal self-attention inside a speech segment
  double init_std = 0.02;        ///< normal init of the projections and markers
  int64_t codebook_size = 2048;  ///< encoder.output=codes: entries per codebook

  template <class V>
  void visit(V& v) {
    v("hidden_size", hidden_size, "Adapter width.");
    v("num_layers", num_layers, "Llama-style layers.");
    v("num_heads", num_heads, "Query heads.");
    v("num_kv_heads", num_kv_heads, "Key/value heads (GQA).");
    v("intermediate_size", intermediate_size, "SwiGLU hidden width.");
    v("rope_theta", rope_theta, "RoPE base.");
    v("rms_norm_eps", rms_norm_eps, "RMSNorm epsilon.");
    v("causal", causal,
      "Causal self-attention over a speech segment's frames (false: bidirectional).");
    v("init_std", init_std, "Std of the normal initialisation of weights and markers.");
    v("codebook_size", codebook_size,
      "encoder.output=codes: entries per codebook (one embedding table per codebook).");
  }
};

/// One data source of the training mix.
struct SourceConfig {
  std::string name;
  std::string kind = "speech";  ///< speech | text
  fs::path path;                ///< speech manifest JSONL or text corpus (JSONL / plain lines)
  double weight = 1.0;          ///< sampling weight in the mix (normalised over sources)

  template <class V>
  void visit(V& v) {
    v("name", name, "Name used in logs and metrics.", kRequired);
    v.choice("kind", kind, {"speech", "text"}, "speech: manifest with audio; text: replay corpus.");
    v("path", path, "Speech manifest (JSONL) or text corpus (JSONL or plain lines).", kRequired);
    v("weight", weight, "Sampling weight in the mix.");
  }
};

/// Training and validation data, interleaving and packing.
struct DataConfig {
  std::vector<SourceConfig> train;
  std::vector<SourceConfig> valid;
  fs::path cache;          ///< encoder feature cache folder (salad-encode)
  int64_t context = 2048;  ///< packed sequence length
  int64_t text_words_min = 10;
  int64_t text_words_max = 30;
  int64_t speech_words_min = 5;
  int64_t speech_words_max = 15;
  std::string first_modality = "random";  ///< random | text | speech
  int64_t utterance_group = 8;            ///< untimed utterances chained into one document
  int64_t prefetch = 4;                   ///< batches prepared ahead
  int64_t workers = 2;                    ///< loader threads
  double max_skip_fraction = 0.05;        ///< more skipped items than this is an error

  template <class V>
  void visit(V& v) {
    v("train", train, "Training sources (list of {name, kind, path, weight}).");
    v("valid", valid, "Held-out sources for validation loss, M and F.");
    v("cache", cache, "Encoder feature cache written by salad-encode (empty: encode on the fly).");
    v("context", context, "Packed sequence length in positions.");
    v("text_words_min", text_words_min, "Interleaving: shortest text segment (words).");
    v("text_words_max", text_words_max, "Interleaving: longest text segment (words).");
    v("speech_words_min", speech_words_min, "Interleaving: shortest speech segment (words).");
    v("speech_words_max", speech_words_max, "Interleaving: longest speech segment (words).");
    v.choice("first_modality", first_modality, {"random", "text", "speech"},
             "Interleaving: modality of a document's first segment.");
    v("utterance_group", utterance_group,
      "Utterances without word timings: consecutive ones chained into one document, each a "
      "segment of alternating modality (at most this many).");
    v("prefetch", prefetch, "Batches prepared ahead by the loader.");
    v("workers", workers, "Loader threads.");
    v("max_skip_fraction", max_skip_fraction, "Fraction of bad items tolerated before an error.");
  }
};

/// L = alpha * KL(teacher || student) + (1 - alpha) * NLL.
struct LossConfig {
  double alpha = 1.0;
  double temperature = 1.0;
  int64_t chunk_size = 1024;  ///< positions per chunk of the LM head

  template <class V>
  void visit(V& v) {
    v("alpha", alpha, "Weight of the distillation KL (1 - alpha on NLL).");
    v("temperature", temperature, "Softmax temperature of teacher and student in the KL.");
    v("chunk_size", chunk_size, "Positions per chunk when computing the LM head and loss.");
  }
};

/// AdamW with two parameter groups and a warmup-stable-decay schedule.
struct OptimConfig {
  double lr_adapter = 1e-3;
  double lr_llm = 5e-5;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  ///< global-norm clip (0: off)
  int64_t warmup_steps = 500;
  double decay_fraction = 0.2;  ///< final fraction of steps decaying linearly to 0

  template <class V>
  void visit(V& v) {
    v("lr_adapter", lr_adapter, "Peak learning rate of the adapter.");
    v("lr_llm", lr_llm, "Peak learning rate of the decoder.");
    v("weight_decay", weight_decay, "AdamW weight decay (not on norms and biases).");
    v("beta1", beta1, "AdamW beta1.");
    v("beta2", beta2, "AdamW beta2.");
    v("eps", eps, "AdamW epsilon.");
    v("grad_clip", grad_clip, "Global gradient-norm clip (0: off).");
    v("warmup_steps", warmup_steps, "Linear warmup steps.");
    v("decay_fraction", decay_fraction, "Final fraction of steps with linear decay to 0.");
  }
};

/// The training loop.
struct TrainConfig {
  int64_t steps = 1000;
  int64_t tokens_per_step = 1 << 20;  ///< global batch in positions; accumulation reaches it
  int64_t micro_batch_sequences = 1;  ///< packed sequences per forward/backward
  std::string precision = "fp32";     ///< fp32 | bf16 (autocast on CUDA, fp32 master weights)
  bool activation_checkpointing = false;
  int64_t log_every = 10;
  int64_t eval_every = 500;
  int64_t save_every = 1000;
  int64_t keep_last = 3;
  int64_t max_bad_steps = 10;  ///< NaN/inf steps in a row before aborting
  double peak_tflops = 0.0;    ///< per device, for MFU (0: not reported)

  template <class V>
  void visit(V& v) {
    v("steps", steps, "Optimizer steps in this stage.");
    v("tokens_per_step", tokens_per_step, "Global batch in positions (gradient accumulation).");
    v("micro_batch_sequences", micro_batch_sequences, "Packed sequences per forward/backward.");
    v.choice("precision", precision, {"fp32", "bf16"},
             "bf16: autocast on CUDA with fp32 master weights.");
    v("activation_checkpointing", activation_checkpointing,
      "Recompute layer activations in backward.");
    v("log_every", log_every, "Steps between progress lines.");
    v("eval_every", eval_every, "Steps between validations (0: never).");
    v("save_every", save_every, "Steps between checkpoints (0: only at the end).");
    v("keep_last", keep_last, "Checkpoints kept (plus the Stage II branch point).");
    v("max_bad_steps", max_bad_steps, "Non-finite steps in a row before aborting.");
    v("peak_tflops", peak_tflops, "Per-device peak TFLOP/s for MFU (0: MFU not shown).");
  }
};

/// Data-parallel launch over c10d.
struct DistConfig {
  std::string backend = "auto";  ///< auto | nccl | gloo
  double timeout_s = 600.0;
  bool zero1 = false;
  double bucket_mb = 25.0;  ///< gradient all-reduce bucket size

  template <class V>
  void visit(V& v) {
    v.choice("backend", backend, {"auto", "nccl", "gloo"},
             "Process group backend (auto: NCCL with CUDA, else Gloo).");
    v("timeout_s", timeout_s, "Collective timeout; a dead rank ends the job after this.");
    v("zero1", zero1, "Shard optimizer state across ranks (ZeRO-1).");
    v("bucket_mb", bucket_mb, "Gradient all-reduce bucket size in MiB (launched during backward).");
  }
};

/// Text-to-speech for Stage II probes and selected texts (and salad-synth).
struct TtsConfig {
  std::string backend = "flite";    ///< flite | espeak | command
  std::vector<std::string> voices;  ///< cycled over items; empty: the backend's default
  int64_t voice_block = 1;          ///< consecutive items per voice before the next one
  std::string command;              ///< command backend template ({text}, {out_wav}, ...)
  std::string espeak_binary = "espeak-ng";
  int64_t rate_wpm = 0;     ///< speaking rate; 0: the backend's default
  double timeout_s = 60.0;  ///< per item, for external programs
  int64_t max_chars = 2000;
  int64_t workers = 2;  ///< parallel items for external programs

  template <class V>
  void visit(V& v) {
    v.choice("backend", backend, {"flite", "espeak", "command"},
             "flite: Flite's C library (default); espeak: the espeak-ng program; command: any "
             "program given as a template.");
    v("voices", voices,
      "Voices cycled over items (flite: kal, kal16, awb, rms, slt; espeak: en-us, en+f3, ...).");
    v("voice_block", voice_block,
      "Consecutive items spoken by one voice before the next (1: a new voice every item). "
      "Untimed speech (espeak, a command without timings) is chained into documents only "
      "across consecutive utterances of one speaker (data.utterance_group), so set it to at "
      "least that there.");
    v("command", command,
      "command backend: template with {text}, {text_file}, {out_wav}, {out_json}, {voice}.");
    v("espeak_binary", espeak_binary, "espeak backend: the espeak-ng program.");
    v("rate_wpm", rate_wpm, "Speaking rate in words per minute (0: the backend's default).");
    v("timeout_s", timeout_s, "Per-item time limit of an external TTS program.");
    v("max_chars", max_chars, "Longer texts are skipped (counted as 'text too long').");
    v("workers", workers, "Items synthesized at once by external programs.");
  }
};

/// Stage II: active selection of texts by the Stage I model's misalignment, synthesis, training.
struct Stage2Config {
  fs::path from;        ///< Stage I run folder (its branch-point checkpoint) or a checkpoint folder
  fs::path selection;   ///< a ready selection manifest: skips selection and synthesis
  fs::path corpus;      ///< broad text corpus to cluster (JSONL {"id","text"} or lines)
  fs::path embeddings;  ///< external embeddings (.npy / .safetensors), one row per corpus text
  fs::path out;         ///< selection folder (default: run.dir/selection)
  int64_t embed_max_tokens = 512;  ///< teacher embeddings: tokens per chunk, chunks averaged
  int64_t max_texts = 0;           ///< use the first N corpus texts (0: all)
  int64_t clusters = 128;
  int64_t kmeans_iters = 50;
  bool balanced = false;
  int64_t probe_per_cluster = 16;
  double gamma = 5.0;
  double budget_hours = 0.0;  ///< 0: budget_fraction of the Stage I speech hours
  double budget_fraction = 0.01;
  double natural_weight = 1.0;    ///< mix weight of the natural speech sources (data.train)
  double synthetic_weight = 1.0;  ///< mix weight of the selected synthetic speech
  double text_weight = 1.0;       ///< mix weight of the text replay sources (data.train)

  template <class V>
  void visit(V& v) {
    v("from", from,
      "Stage I run folder (its branch-point checkpoint is used) or one checkpoint folder.");
    v("selection", selection,
      "A ready selection manifest (skips clustering, probing and synthesis).");
    v("corpus", corpus, "Broad text corpus to cluster: JSONL {id, text} or plain lines.");
    v("embeddings", embeddings,
      "Embeddings of the corpus from an external embedder (.npy or .safetensors 'embeddings', "
      "one row per text); empty: the teacher's mean-pooled hidden states.");
    v("out", out, "Selection folder (empty: run.dir/selection).");
    v("embed_max_tokens", embed_max_tokens,
      "Teacher embeddings: tokens per chunk of a long text (chunk means are averaged).");
    v("max_texts", max_texts, "Use only the first N corpus texts (0: all).");
    v("clusters", clusters, "k-means clusters K.");
    v("kmeans_iters", kmeans_iters, "k-means iterations at most.");
    v("balanced", balanced, "Balanced k-means assignment (cluster size at most ceil(N/K)).");
    v("probe_per_cluster", probe_per_cluster, "Texts synthesized per cluster to measure M(c).");
    v("gamma", gamma, "P_target(c) ~ P_web(c) * M(c)^gamma (0: uniform over the corpus).");
    v("budget_hours", budget_hours,
      "Synthetic speech to select, hours (0: budget_fraction of the Stage I speech hours).");
    v("budget_fraction", budget_fraction, "Default budget as a fraction of Stage I speech hours.");
    v("natural_weight", natural_weight, "Mix weight of the natural speech sources of data.train.");
    v("synthetic_weight", synthetic_weight, "Mix weight of the selected synthetic speech.");
    v("text_weight", text_weight, "Mix weight of the text replay sources of data.train.");
  }
};

/// The root of a recipe.
struct SaladConfig {
  RunConfig run;
  ModelConfig model;
  EncoderConfig encoder;
  AdapterConfig adapter;
  DataConfig data;
  LossConfig loss;
  OptimConfig optim;
  TrainConfig train;
  DistConfig dist;
  Stage2Config stage2;
  TtsConfig tts;

  template <class V>
  void visit(V& v) {
    v("run", run, "The run folder and process settings.");
    v("model", model, "The text LLM and its tokenizer.");
    v("encoder", encoder, "The frozen speech encoder.");
    v("adapter", adapter, "The trainable speech adapter.");
    v("data", data, "Data sources, interleaving and packing.");
    v("loss", loss, "The alpha-interpolated distillation loss.");
    v("optim", optim, "AdamW and the learning-rate schedule.");
    v("train", train, "The training loop.");
    v("dist", dist, "Data-parallel settings.");
    v("stage2", stage2, "Stage II: active selection, synthesis and its training mix.");
    v("tts", tts, "Text-to-speech for Stage II and salad-synth.");
  }

  /// Cross-field checks (ranges, consistency); throws ConfigError listing every problem.
  void validate() const;
};

/// Loads `path` (following `include:`), applies `overrides` ("a.b=value", value in YAML syntax),
/// checks required keys and validate(). Throws ConfigError listing every unknown key
/// (file:line:col), type error (key, expected, found) and missing required key at once.
SaladConfig load(const fs::path& path, const std::vector<std::string>& overrides = {});

/// Same, starting from `base` instead of the defaults, with no file (only overrides).
SaladConfig apply_overrides(SaladConfig base, const std::vector<std::string>& overrides);

/// The config as YAML (paths absolute), loadable again by load().
std::string to_yaml(const SaladConfig& cfg);

/// Writes to_yaml(cfg) to `path` atomically (temp file, fsync, rename).
void write_yaml(const SaladConfig& cfg, const fs::path& path);

/// Markdown reference of every key: type, default, description (docs/config.md).
std::string reference_markdown();

}  // namespace salad::config
