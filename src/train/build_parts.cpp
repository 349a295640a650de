// TrainParts from a recipe: the same construction for every stage, so a checkpoint of one
// stage loads into the model of the next.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "salad/core/error.h"
#include "salad/core/logging.h"
#include "salad/data/loader.h"
#include "salad/models/speech_encoder.h"
#include "salad/models/speech_lm.h"
#include "salad/text/tokenizer.h"
#include "salad/train/trainer.h"

namespace salad::train {

namespace {

/// The training stream of a data::Loader.
class LoaderSource final : public BatchSource {
 public:
  LoaderSource(data::LoaderOptions o, const data::LoaderCursor& start)
      : loader_(std::move(o), start) {}
  std::optional<data::Batch> next() override { return loader_.next(); }
  std::string cursor() const override { return loader_.cursor().to_json(); }
  double wait_seconds() const override { return loader_.stats().wait_seconds; }
  int64_t skipped() const override { return loader_.stats().skipped.total(); }

 private:
  data::Loader loader_;
};

/// A decoder trained from scratch: normal(0, 0.02) matrices and embeddings, zero biases, unit
/// norms (the Qwen2 initializer_range), drawn from the global generator seeded by run.seed.
void init_fresh(models::Qwen2& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m->named_parameters()) {
    const std::string& name = p.key();
    at::Tensor t = p.value();
    if (name.find("norm") != std::string::npos) {
      t.fill_(1.0);
    } else if (t.dim() == 1) {
      t.zero_();
    } else {
      t.normal_(0.0, 0.02);
    }
  }
}

models::Qwen2 copy_decoder(models::Qwen2& src) {
  models::Qwen2 dst(src->options());
  torch::NoGradGuard no_grad;
  auto from = src->named_parameters();
  for (auto& p : dst->named_parameters()) p.value().copy_(from[p.key()]);
  return dst;
}

}  // namespace

c10::Device resolve_device(const std::string& device) {
  if (device == "auto") {
    if (torch::cuda::is_available()) {
      const char* local = std::getenv("LOCAL_RANK");
      return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local ? std::atoi(local) : 0));
    }
    return c10::Device(c10::kCPU);
  }
  try {
    const c10::Device d(device);
    if (d.is_cuda() && !torch::cuda::is_available()) {
      throw ConfigError("run.device = " + device +
                        " but this LibTorch has no CUDA device (use cpu or auto)");
    }
    return d;
  } catch (const c10::Error&) {
    throw ConfigError("run.device: expected auto, cpu, cuda or cuda:N, found '" + device + "'");
  }
}

ModelParts build_model(const config::SaladConfig& cfg) {
  const bool text_stage = cfg.run.stage == "text";
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  const config::fs::path tok_path =
      !cfg.model.tokenizer.empty() ? cfg.model.tokenizer : cfg.model.llm / "tokenizer.json";
  if (tok_path.empty() || tok_path == "tokenizer.json") {
    throw ConfigError("model.tokenizer: required when model.llm is empty");
  }
  std::shared_ptr<const text::Tokenizer> tokenizer = text::load_tokenizer(tok_path);

  // The decoder: a Hugging Face checkpoint, or model.arch from scratch.
  models::Qwen2 base{nullptr};
  if (!cfg.model.llm.empty()) {
    base = models::load_qwen2(cfg.model.llm, models::parse_dtype(cfg.model.dtype));
    if (base->options().vocab_size < tokenizer->vocab_size()) {
      throw ConfigError("model.llm " + cfg.model.llm.string() + " has " +
                        std::to_string(base->options().vocab_size) + " embeddings but " +
                        tok_path.string() + " has " + std::to_string(tokenizer->vocab_size()) +
                        " ids");
    }
  } else {
    const int64_t vocab =
        cfg.model.arch.vocab_size > 0 ? cfg.model.arch.vocab_size : tokenizer->vocab_size();
    base = models::Qwen2(models::Qwen2Options::from_arch(cfg.model.arch, vocab));
    init_fresh(base);
    if (!text_stage) {
      spdlog::warn(
          "model.llm is empty: stage {} distils from a freshly initialised decoder (a test "
          "setup; train a teacher with stage `text` and export it for real runs)",
          cfg.run.stage);
    }
  }

  // Speech features (not needed to train text only).
  models::FeatureSource features;
  bool any_speech = false;
  for (const auto* list : {&cfg.data.train, &cfg.data.valid}) {
    for (const auto& s : *list) any_speech = any_speech || s.kind == "speech";
  }
  // Speech stages always get their encoder: the adapter's input width comes from it, so a
  // checkpoint loads into a model built without speech data (salad-eval).
  if (any_speech || !text_stage) {
    features = models::feature_source(cfg);
    if (cfg.run.stage == "2" && !cfg.data.cache.empty()) {
      // Stage II synthesizes speech after the cache was written: what the cache lacks is
      // encoded on the fly (same encoder, checked against the cache by feature_source).
      std::shared_ptr<models::SpeechEncoder> encoder = models::make_speech_encoder(cfg.encoder);
      auto on_the_fly = models::on_the_fly_features(encoder);
      auto cached = features.features;
      features.features = [cached, on_the_fly](const data::Utterance& u) {
        try {
          return cached(u);
        } catch (const std::exception&) {
          return on_the_fly(u);
        }
      };
      features.description += " + on the fly for utterances not in it";
    }
    spdlog::info("features: {}", features.description);
  } else {
    features.feature_dim = 1;  // an adapter is still built (never run) so the model is whole
  }

  const int64_t width = base->options().hidden_size;
  models::Adapter adapter(models::AdapterOptions::from_config(cfg.adapter, features.feature_dim,
                                                              features.codes, width));
  std::shared_ptr<models::SpeechLM> lm;
  if (text_stage) {
    lm = std::make_shared<models::SpeechLM>(base, adapter);
  } else {
    models::Qwen2 student = copy_decoder(base);
    lm = std::make_shared<models::SpeechLM>(student, adapter, base);
  }
  lm->to(resolve_device(cfg.run.device), at::kFloat);

  ModelParts out;
  out.lm = lm;
  out.tokenizer = tokenizer;
  out.features = features;
  return out;
}

TrainParts build_parts(const config::SaladConfig& cfg) {
  const bool text_stage = cfg.run.stage == "text";
  ModelParts mp = build_model(cfg);
  const std::shared_ptr<const text::Tokenizer>& tokenizer = mp.tokenizer;
  const models::FeatureSource& features = mp.features;
  const std::shared_ptr<models::SpeechLM>& lm = mp.lm;
  TrainParts parts;
  parts.lm = lm;
  parts.train_adapter = !text_stage;
  parts.micro_positions = cfg.train.micro_batch_sequences * cfg.data.context;
  if (cfg.data.train.empty()) throw ConfigError("data.train: no training sources");
  const data::LoaderOptions train_opts = data::LoaderOptions::from_config(
      cfg, true, tokenizer, features.features, features.frame_rate, features.feature_dim);
  parts.tokenizer = tokenizer;
  parts.train_loader = train_opts;
  parts.train = [train_opts](const std::string& cursor) -> std::unique_ptr<BatchSource> {
    const data::LoaderCursor start =
        cursor.empty() ? data::LoaderCursor{} : data::LoaderCursor::from_json(cursor, "checkpoint");
    return std::make_unique<LoaderSource>(train_opts, start);
  };
  if (!cfg.data.valid.empty()) {
    const data::LoaderOptions valid_opts = data::LoaderOptions::from_config(
        cfg, false, tokenizer, features.features, features.frame_rate, features.feature_dim);
    parts.valid = [valid_opts]() -> std::unique_ptr<BatchSource> {
      return std::make_unique<LoaderSource>(valid_opts, data::LoaderCursor{});
    };
  }
  return parts;
}

}  // namespace salad::train
