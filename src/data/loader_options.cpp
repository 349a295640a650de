// LoaderOptions: the checks of validate() and from_config() (naming the recipe's keys there) and
// cache_features().
#include "salad/data/loader.h"

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "data/loader_sources.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/logging.h"
#include "salad/text/tokenizer.h"

namespace salad::data {

namespace {

// ---- Options ------------------------------------------------------------------------------------

/// How the fields of LoaderOptions are called in messages: their own names for validate(), the
/// recipe's keys for from_config().
struct FieldNames {
  std::string sources = "sources";
  std::string rows = "rows";
  std::string utterance_group = "utterance_group";
  std::string prefetch = "prefetch";
  std::string workers = "workers";
  std::string max_skip_fraction = "max_skip_fraction";
  std::string context = "pack.context";
  std::string feature_dim = "pack.feature_dim";
};

void check_options(const LoaderOptions& o, const FieldNames& n) {
  auto fail = [](const std::string& msg) { throw ConfigError(msg); };
  if (o.sources.empty()) {
    fail(n.sources + ": no data sources (add at least one {name, kind, path, weight})");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < o.sources.size(); ++i) {
    const SourceSpec& s = o.sources[i];
    const std::string at = n.sources + "[" + std::to_string(i) + "]";
    const std::string named = s.name.empty() ? "" : " (source '" + s.name + "')";
    if (s.name.empty()) fail(at + ".name is empty (sources are named in logs and metrics)");
    if (!names.insert(s.name).second) fail(at + ".name '" + s.name + "' is used twice");
    if (s.kind != "speech" && s.kind != "text") {
      fail(at + ".kind must be speech or text, found '" + s.kind + "'" + named);
    }
    if (s.path.empty()) fail(at + ".path is empty" + named);
    if (!(s.weight > 0) || !std::isfinite(s.weight)) {
      fail(at + ".weight must be > 0, found " + std::to_string(s.weight) + named);
    }
    if (s.kind == "speech" && !o.features) {
      fail(at + named +
           ": a speech source needs encoder features (LoaderOptions::features is empty; set "
           "data.cache or an encoder)");
    }
  }
  if (!o.tokenizer) fail("tokenizer is not set");
  auto at_least_one = [&](int64_t v, const std::string& name) {
    if (v < 1) fail(name + " must be >= 1, found " + std::to_string(v));
  };
  at_least_one(o.rows, n.rows);
  at_least_one(o.utterance_group, n.utterance_group);
  at_least_one(o.prefetch, n.prefetch);
  at_least_one(o.workers, n.workers);
  at_least_one(o.pack.context, n.context);
  // Every utterance's features are checked against this width when its item is built, so that
  // one odd tensor is a skip and not a make_batch error that ends the run.
  const bool speech = std::any_of(o.sources.begin(), o.sources.end(),
                                  [](const SourceSpec& s) { return s.kind == "speech"; });
  if (speech && o.pack.feature_dim < 1) {
    fail(n.feature_dim + " must be >= 1 (the encoder feature width) when a speech source is " +
         "present, found " + std::to_string(o.pack.feature_dim));
  }
  if (o.world_size < 1) fail("world_size must be >= 1, found " + std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size) {
    fail("rank must be in [0, world_size = " + std::to_string(o.world_size) + "), found " +
         std::to_string(o.rank));
  }
  if (!(o.max_skip_fraction >= 0 && o.max_skip_fraction <= 1)) {
    fail(n.max_skip_fraction + " must be in [0, 1], found " + std::to_string(o.max_skip_fraction));
  }
  o.interleave.validate();
}

}  // namespace

// ---- LoaderOptions ------------------------------------------------------------------------------

FeatureFn cache_features(const FeatureCache& cache) {
  return [cache](const Utterance& u) { return cache.get(u.id); };
}

LoaderOptions LoaderOptions::from_config(const config::SaladConfig& cfg, bool train,
                                         std::shared_ptr<const text::Tokenizer> tokenizer,
                                         FeatureFn features, double frame_rate,
                                         int64_t feature_dim) {
  LoaderOptions o;
  for (const config::SourceConfig& s : train ? cfg.data.train : cfg.data.valid) {
    o.sources.push_back({s.name, s.kind, s.path, s.weight});
  }
  o.tokenizer = std::move(tokenizer);
  o.features = std::move(features);
  o.interleave = InterleaveOptions::from_config(cfg.data, frame_rate);
  o.pack.context = cfg.data.context;
  o.pack.feature_dim = feature_dim;
  o.pack.codes = cfg.encoder.output == "codes";
  o.rows = cfg.train.micro_batch_sequences;
  o.utterance_group = cfg.data.utterance_group;
  o.prefetch = cfg.data.prefetch;
  o.workers = cfg.data.workers;
  o.seed = static_cast<uint64_t>(cfg.run.seed);
  o.rank = env_rank();
  o.world_size = env_world_size();
  o.repeat = train;
  o.max_skip_fraction = cfg.data.max_skip_fraction;
  FieldNames n;
  n.sources = train ? "data.train" : "data.valid";
  n.rows = "train.micro_batch_sequences";
  n.utterance_group = "data.utterance_group";
  n.prefetch = "data.prefetch";
  n.workers = "data.workers";
  n.max_skip_fraction = "data.max_skip_fraction";
  n.context = "data.context";
  check_options(o, n);
  return o;
}

void LoaderOptions::validate() const { check_options(*this, FieldNames{}); }

}  // namespace salad::data
