// Scoring multiple-choice benchmarks by the log-likelihood of each choice (see eval/benchmark.h).
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <unordered_map>
#include <utility>

#include "salad/core/error.h"
#include "salad/data/batch.h"
#include "salad/data/document.h"
#include "salad/data/packing.h"
#include "salad/data/skips.h"
#include "salad/eval/benchmark.h"
#include "salad/models/speech_lm.h"
#include "salad/text/tokenizer.h"

namespace salad::eval {

namespace {

using data::Document;
using data::Modality;
using data::Segment;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Up to k distinct indices of a pool of `pool` examples, never `self` (-1: no exclusion), a pure
// function of (seed, item). Rejection sampling: k is small, pools can be large.
std::vector<int64_t> choose_shots(int64_t item, int64_t pool, int64_t self, int64_t k,
                                  uint64_t seed) {
  const int64_t n = self >= 0 ? pool - 1 : pool;
  k = std::min(k, n);
  std::vector<int64_t> out;
  if (k <= 0) return out;
  std::mt19937_64 rng(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(item))));
  while (static_cast<int64_t>(out.size()) < k) {
    int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
    if (self >= 0 && j >= self) ++j;  // the n = pool - 1 others, skipping self
    if (std::find(out.begin(), out.end(), j) == out.end()) out.push_back(j);
  }
  return out;
}

// A context as the model reads it: its tokens, and in speech mode possibly its frames.
struct Context {
  std::vector<int64_t> tokens;
  at::Tensor features;  // [F, De]; undefined: read as text

  int64_t student_length() const {
    return features.defined() ? features.size(0) + 2 : static_cast<int64_t>(tokens.size());
  }
  int64_t teacher_length() const { return static_cast<int64_t>(tokens.size()); }
  Segment segment() const {
    Segment s;
    s.modality = features.defined() ? Modality::kSpeech : Modality::kText;
    s.tokens = tokens;
    s.features = features;
    return s;
  }
};

struct Shot {
  Context context;
  std::vector<int64_t> answer;  // " answer" + separator
  int64_t student_length() const {
    return context.student_length() + static_cast<int64_t>(answer.size());
  }
  int64_t teacher_length() const {
    return context.teacher_length() + static_cast<int64_t>(answer.size());
  }
};

Segment text_segment(std::vector<int64_t> tokens) {
  Segment s;
  s.modality = Modality::kText;
  s.tokens = std::move(tokens);
  return s;
}

// Which document a packed (item, choice) document is, in packing order.
struct Tag {
  size_t result;  // into the results vector
  size_t choice;
  int64_t tokens;  // continuation tokens: the document's last loss positions
};

// Encoder features of a spoken context, checked; throws BadItem("missing audio" | "bad
// features").
class SpeechFeatures {
 public:
  explicit SpeechFeatures(const data::FeatureFn& fn) : fn_(fn) {}

  at::Tensor get(const BenchItem& item) {
    if (item.context_audio.empty()) {
      throw data::BadItem("missing audio", "item '" + item.id + "' has no \"context_audio\"");
    }
    data::Utterance u;
    u.id = item.id;
    u.audio = item.context_audio;
    u.text = item.context;
    u.where = item.where;
    at::Tensor f;
    try {
      f = fn_(u);
    } catch (const std::exception& e) {
      throw data::BadItem("missing audio", "item '" + item.id + "': no features for " +
                                               item.context_audio.string() + ": " + e.what());
    }
    if (!f.defined() || f.dim() != 2 || f.size(0) < 1 || f.size(1) < 1) {
      throw data::BadItem("missing audio", "item '" + item.id + "': no [F >= 1, De] features for " +
                                               item.context_audio.string());
    }
    const bool codes = at::isIntegralType(f.scalar_type(), /*includeBool=*/false);
    if (!codes && !at::isFloatingType(f.scalar_type())) {
      throw data::BadItem("bad features", "item '" + item.id + "': features of dtype " +
                                              std::string(c10::toString(f.scalar_type())));
    }
    if (width_ < 0) {
      width_ = f.size(1);
      codes_ = codes;
    }
    if (f.size(1) != width_ || codes != codes_) {
      throw data::BadItem("bad features", "item '" + item.id + "': features [" +
                                              std::to_string(f.size(0)) + ", " +
                                              std::to_string(f.size(1)) + "] " +
                                              (codes ? "codes" : "floats") + ", expected width " +
                                              std::to_string(width_) + (codes_ ? " codes" : ""));
    }
    return f;
  }
  int64_t width() const { return std::max<int64_t>(width_, 0); }
  bool codes() const { return codes_; }

 private:
  const data::FeatureFn& fn_;
  int64_t width_ = -1;
  bool codes_ = false;
};

// The scoring of one benchmark in one mode.
class Scorer {
 public:
  Scorer(models::SpeechLM& lm, const text::Tokenizer& tok, const data::FeatureFn& features,
         const Benchmark& b, Mode mode, const ScoreOptions& o)
      : lm_(lm),
        tok_(tok),
        features_(features),
        b_(b),
        mode_(mode),
        o_(o),
        speech_(mode == Mode::kModelSpeech),
        packer_(o.context, o.batch_rows) {}

  ModeResult run();

 private:
  const std::vector<BenchItem>& pool() const { return b_.fewshot.empty() ? b_.items : b_.fewshot; }
  const Shot& shot(int64_t index);
  void prepare(size_t index);
  void add(Document d, Tag tag);
  void score(const std::vector<std::vector<Document>>& rows);

  models::SpeechLM& lm_;
  const text::Tokenizer& tok_;
  SpeechFeatures features_;
  const Benchmark& b_;
  Mode mode_;
  const ScoreOptions& o_;
  bool speech_;
  data::RowPacker packer_;
  std::deque<Tag> pending_;  // tags of the documents in the packer, in order
  std::vector<ItemResult> results_;
  std::map<int64_t, Shot> shots_;  // bounded cache (spoken shots hold features)
  data::SkipCounter skips_;
};

const Shot& Scorer::shot(int64_t index) {
  auto it = shots_.find(index);
  if (it != shots_.end()) return it->second;
  if (shots_.size() >= 256) shots_.clear();  // speech features of a whole split can be large
  const BenchItem& item = pool()[static_cast<size_t>(index)];
  const auto [context, continuation] =
      split_continuation(item.context, item.choices[static_cast<size_t>(item.answer)]);
  Shot s;
  s.context.tokens = tok_.encode(context);
  s.answer = tok_.encode(continuation + o_.fewshot_separator);
  if (speech_ && !item.context_audio.empty()) {
    try {
      s.context.features = features_.get(item);
    } catch (const data::BadItem& e) {
      // A shot without usable audio is still a good example: it is read as text.
      spdlog::warn("few-shot example {} is read as text: {}", item.where, e.what());
    }
  }
  return shots_.emplace(index, std::move(s)).first->second;
}

void Scorer::prepare(size_t index) {
  const BenchItem& item = b_.items[index];
  ItemResult r;
  r.index = static_cast<int64_t>(index);
  r.id = item.id;
  r.answer = item.answer;

  std::string context;
  std::vector<std::vector<int64_t>> choices;
  int64_t longest = 0;
  for (const std::string& c : item.choices) {
    auto [ctx, continuation] = split_continuation(item.context, c);
    context = std::move(ctx);
    r.bytes.push_back(static_cast<int64_t>(continuation.size()));
    choices.push_back(tok_.encode(continuation));
    if (choices.back().empty()) {
      throw data::BadItem("empty choice",
                          "item '" + item.id + "': choice '" + c + "' has no tokens");
    }
    longest = std::max(longest, static_cast<int64_t>(choices.back().size()));
  }
  Context ctx;
  ctx.tokens = tok_.encode(context);
  if (ctx.tokens.empty()) throw data::BadItem("empty context", "item '" + item.id + "'");
  if (speech_) ctx.features = features_.get(item);
  // The shortest possible document: one context token (or one frame), then the continuation.
  if (longest + (speech_ ? 3 : 1) > o_.context) {
    throw data::BadItem("choice longer than context",
                        "item '" + item.id + "': a choice of " + std::to_string(longest) +
                            " tokens leaves no room for its context in " +
                            std::to_string(o_.context) + " positions");
  }

  // Shots, then drop them (first first) until the longest choice's document fits.
  const bool from_items = b_.fewshot.empty();
  const std::vector<int64_t> chosen = choose_shots(r.index, static_cast<int64_t>(pool().size()),
                                                   from_items ? r.index : -1, o_.shots, o_.seed);
  std::vector<Shot> shots;
  for (int64_t k : chosen) shots.push_back(shot(k));
  int64_t used = ctx.student_length() + longest, used_teacher = ctx.teacher_length() + longest;
  for (const Shot& s : shots) {
    used += s.student_length();
    used_teacher += s.teacher_length();
  }
  size_t first = 0;
  while (first < shots.size() && (used > o_.context || used_teacher > o_.context)) {
    used -= shots[first].student_length();
    used_teacher -= shots[first].teacher_length();
    ++first;
  }
  if (used > o_.context || used_teacher > o_.context) {
    // Keep the end of the context: the part next to the choices.
    const int64_t keep_tokens = o_.context - longest;
    if (ctx.teacher_length() > keep_tokens) {
      ctx.tokens.erase(ctx.tokens.begin(), ctx.tokens.end() - keep_tokens);
    }
    if (speech_) {
      const int64_t keep_frames = o_.context - longest - 2, F = ctx.features.size(0);
      if (F > keep_frames) ctx.features = ctx.features.narrow(0, F - keep_frames, keep_frames);
    }
    r.truncated = true;
  }
  r.shot_indices.assign(chosen.begin() + static_cast<int64_t>(first), chosen.end());
  r.shots = static_cast<int64_t>(r.shot_indices.size());

  std::vector<Segment> prefix;
  for (size_t k = first; k < shots.size(); ++k) {
    prefix.push_back(shots[k].context.segment());
    prefix.push_back(text_segment(shots[k].answer));
  }
  prefix.push_back(ctx.segment());

  r.loglik.assign(choices.size(), 0.0);
  const size_t slot = results_.size();
  results_.push_back(std::move(r));
  for (size_t j = 0; j < choices.size(); ++j) {
    Document d;
    d.name = b_.name + "/" + item.id + "#" + std::to_string(j);
    d.source = b_.name;
    d.segments = prefix;
    const auto n = static_cast<int64_t>(choices[j].size());
    d.segments.push_back(text_segment(std::move(choices[j])));
    add(std::move(d), Tag{slot, j, n});
  }
}

void Scorer::add(Document d, Tag tag) {
  packer_.add(std::move(d));
  pending_.push_back(tag);
  if (packer_.ready()) score(packer_.take());
}

void Scorer::score(const std::vector<std::vector<Document>>& rows) {
  data::PackOptions po;
  po.context = o_.context;
  po.feature_dim = features_.width();
  po.codes = features_.codes();
  const data::Batch batch = data::make_batch(rows, po);

  const bool teacher = mode_ == Mode::kTeacherText;
  const at::Tensor hidden = teacher ? lm_.teacher_hidden(batch) : lm_.student_hidden(batch);
  const at::Tensor& index = teacher ? batch.teacher_loss_index : batch.loss_index;
  const at::Tensor head =
      teacher ? lm_.teacher()->lm_head_weight() : lm_.student()->lm_head_weight();  // [V, D]
  const at::Tensor flat = hidden.reshape({-1, hidden.size(2)});                     // [B*T, D]

  // The loss entries of every document are consecutive, documents in packing order; a
  // continuation's tokens are its document's last entries.
  std::vector<int64_t> entries;
  std::vector<Tag> tags;
  int64_t offset = 0;
  for (const auto& row : rows) {
    for (const Document& d : row) {
      const Tag tag = pending_.front();
      pending_.pop_front();
      offset += d.loss_positions();
      for (int64_t e = offset - tag.tokens; e < offset; ++e) entries.push_back(e);
      tags.push_back(tag);
    }
  }
  if (offset != batch.loss_positions()) {
    throw std::logic_error("score_benchmark: the batch has " +
                           std::to_string(batch.loss_positions()) +
                           " loss positions, the documents " + std::to_string(offset));
  }
  const auto M = static_cast<int64_t>(entries.size());
  const at::Tensor sel = at::tensor(entries, at::kLong);
  const at::Tensor positions = index.index_select(0, sel).to(flat.device());  // [M]
  const at::Tensor targets = batch.targets.index_select(0, sel).to(flat.device());
  std::vector<at::Tensor> parts;
  for (int64_t s = 0; s < M; s += o_.chunk) {
    const int64_t n = std::min(o_.chunk, M - s);
    const at::Tensor h = flat.index_select(0, positions.narrow(0, s, n));  // [n, D]
    const at::Tensor logits =
        at::matmul(h.to(head.device(), head.scalar_type()), head.t()).to(at::kFloat);  // [n, V]
    parts.push_back(at::log_softmax(logits, -1)
                        .gather(1, targets.narrow(0, s, n).to(head.device()).unsqueeze(1))
                        .squeeze(1));  // [n]
  }
  const at::Tensor logp = at::cat(parts).to(at::kCPU, at::kDouble).contiguous();  // [M]
  const double* p = logp.data_ptr<double>();
  for (const Tag& tag : tags) {
    double sum = 0;
    for (int64_t k = 0; k < tag.tokens; ++k) sum += *p++;
    results_[tag.result].loglik[tag.choice] = sum;
  }
}

ModeResult Scorer::run() {
  ModeResult out;
  out.mode = mode_;
  const size_t n = b_.items.size();
  size_t next_report = n / 10;
  for (size_t i = 0; i < n; ++i) {
    try {
      prepare(i);
    } catch (const data::BadItem& e) {
      skips_.record(e.reason(), b_.items[i].where, e.what());
    }
    if (o_.progress && i + 1 >= next_report && i + 1 < n) {
      spdlog::info("{} {}: {}/{} items prepared", b_.name, mode_name(mode_), i + 1, n);
      next_report += std::max<size_t>(n / 10, 1);
    }
  }
  // Every ready batch was scored on the way; what is left is at most batch_rows rows.
  const std::vector<std::vector<Document>> rest = packer_.flush();
  if (!rest.empty()) score(rest);

  int64_t correct = 0, correct_norm = 0;
  for (ItemResult& r : results_) {
    size_t best = 0, best_norm = 0;
    for (size_t j = 1; j < r.loglik.size(); ++j) {
      if (r.loglik[j] > r.loglik[best]) best = j;
      if (r.loglik[j] / static_cast<double>(r.bytes[j]) >
          r.loglik[best_norm] / static_cast<double>(r.bytes[best_norm])) {
        best_norm = j;
      }
    }
    r.pred = static_cast<int64_t>(best);
    r.pred_norm = static_cast<int64_t>(best_norm);
    correct += r.pred == r.answer;
    correct_norm += r.pred_norm == r.answer;
    out.truncated += r.truncated;
  }
  out.scored = static_cast<int64_t>(results_.size());
  if (out.scored > 0) {
    out.acc = static_cast<double>(correct) / static_cast<double>(out.scored);
    out.acc_norm = static_cast<double>(correct_norm) / static_cast<double>(out.scored);
  }
  out.skipped = b_.skipped;
  for (const auto& [reason, count] : skips_.by_reason()) out.skipped[reason] += count;
  out.items = std::move(results_);
  return out;
}

}  // namespace

std::string mode_name(Mode mode) {
  switch (mode) {
    case Mode::kTeacherText:
      return "teacher_text";
    case Mode::kModelText:
      return "model_text";
    case Mode::kModelSpeech:
      return "model_speech";
  }
  return "unknown";
}

void ScoreOptions::validate() const {
  std::string bad;
  if (shots < 0) bad += " shots must be >= 0 (got " + std::to_string(shots) + ");";
  if (context < 2) bad += " context must be >= 2 (got " + std::to_string(context) + ");";
  if (batch_rows < 1) bad += " batch_rows must be >= 1 (got " + std::to_string(batch_rows) + ");";
  if (chunk < 1) bad += " chunk must be >= 1 (got " + std::to_string(chunk) + ");";
  if (!bad.empty()) {
    bad.pop_back();
    throw ConfigError("benchmark scoring options:" + bad);
  }
}

std::pair<std::string, std::string> split_continuation(const std::string& context,
                                                       const std::string& choice) {
  size_t end = context.size();
  while (end > 0 && is_space(context[end - 1])) --end;
  std::string continuation = context.substr(end);
  if (continuation.empty() && !(!choice.empty() && is_space(choice[0]))) continuation = " ";
  continuation += choice;
  return {context.substr(0, end), continuation};
}

ModeResult score_benchmark(models::SpeechLM& lm, const text::Tokenizer& tokenizer,
                           const data::FeatureFn& features, const Benchmark& b, Mode mode,
                           const ScoreOptions& o) {
  o.validate();
  if (mode == Mode::kTeacherText && !lm.has_teacher()) {
    throw ConfigError("benchmark " + b.name +
                      ": the teacher_text baseline needs the teacher (the original text LLM)");
  }
  if (mode == Mode::kModelSpeech && !features) {
    throw ConfigError("benchmark " + b.name + ": speech mode needs encoder features");
  }
  torch::NoGradGuard no_grad;
  const bool was_training = lm.student()->is_training();
  lm.train(false);
  struct Restore {
    models::SpeechLM& lm;
    bool on;
    ~Restore() { lm.train(on); }
  } restore{lm, was_training};

  Scorer scorer(lm, tokenizer, features, b, mode, o);
  ModeResult r = scorer.run();
  spdlog::info("{} {}: acc {:.4f} acc_norm {:.4f} over {} items ({} truncated, {} skipped)", b.name,
               mode_name(mode), r.acc, r.acc_norm, r.scored, r.truncated, [&] {
                 int64_t n = 0;
                 for (const auto& [reason, count] : r.skipped) n += count;
                 return n;
               }());
  return r;
}

double accuracy_gap(const ModeResult& reference, const ModeResult& other, bool norm) {
  std::unordered_map<int64_t, const ItemResult*> by_index;
  for (const ItemResult& r : other.items) by_index[r.index] = &r;
  int64_t shared = 0, ref_correct = 0, other_correct = 0;
  for (const ItemResult& r : reference.items) {
    const auto it = by_index.find(r.index);
    if (it == by_index.end()) continue;
    ++shared;
    ref_correct += (norm ? r.pred_norm : r.pred) == r.answer;
    other_correct += (norm ? it->second->pred_norm : it->second->pred) == it->second->answer;
  }
  if (shared == 0) return 0.0;
  return static_cast<double>(ref_correct - other_correct) / static_cast<double>(shared);
}

}  // namespace salad::eval
