// Tiny student/teacher decoders, adapters and hand-made documents shared by the SpeechLM and
// alignment-metric tests.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "salad/data/document.h"
#include "salad/data/packing.h"
#include "salad/models/adapter.h"
#include "salad/models/qwen2.h"
#include "salad/models/speech_lm.h"

namespace salad::models::test_fixture {

using data::Document;
using data::Modality;
using data::Segment;

inline constexpr int64_t kFeat = 8;

inline Qwen2Options tiny_decoder() {
  Qwen2Options o;
  o.vocab_size = 50;
  o.hidden_size = 32;
  o.intermediate_size = 48;
  o.num_hidden_layers = 2;
  o.num_attention_heads = 4;
  o.num_key_value_heads = 2;
  o.tie_word_embeddings = true;
  return o;
}

inline AdapterOptions tiny_adapter() {
  AdapterOptions o;
  o.input_dim = kFeat;
  o.hidden_size = 16;
  o.num_layers = 2;
  o.num_heads = 2;
  o.num_kv_heads = 1;
  o.intermediate_size = 24;
  o.output_dim = 32;
  return o;
}

// A decoder with the same weights as `src` (the teacher is a frozen copy of the original).
inline Qwen2 copy_of(Qwen2& src) {
  Qwen2 dst(src->options());
  torch::NoGradGuard no_grad;
  auto from = src->named_parameters();
  for (auto& p : dst->named_parameters()) p.value().copy_(from[p.key()]);
  return dst;
}

// Non-trivial random weights (the default init gives near-uniform logits).
inline Qwen2 random_decoder(uint64_t seed) {
  torch::manual_seed(seed);
  Qwen2 m(tiny_decoder());
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.normal_(0.0, 0.3);
  return m;
}

inline Segment text(std::vector<int64_t> tokens) {
  Segment s;
  s.modality = Modality::kText;
  s.tokens = std::move(tokens);
  return s;
}

inline Segment speech(std::vector<int64_t> tokens, int64_t frames, uint64_t seed) {
  Segment s;
  s.modality = Modality::kSpeech;
  s.tokens = std::move(tokens);
  torch::manual_seed(seed);
  s.features = torch::randn({frames, kFeat});
  return s;
}

inline Document doc(std::string name, std::vector<Segment> segments) {
  Document d;
  d.name = "src/" + name;
  d.source = "src";
  d.segments = std::move(segments);
  return d;
}

inline data::Batch batch_of(const std::vector<std::vector<Document>>& rows, int64_t context = 64) {
  data::PackOptions o;
  o.context = context;
  o.feature_dim = kFeat;
  return data::make_batch(rows, o);
}

inline Document speech_doc_a() {
  return doc("a",
             {text({3, 4, 5}), speech({6, 7}, 5, 11), text({8, 9, 10, 11}), speech({12}, 3, 12)});
}
inline Document speech_doc_b() { return doc("b", {speech({20, 21, 22}, 6, 13), text({23, 24})}); }
inline Document text_doc_c() { return doc("c", {text({30, 31, 32, 33, 34, 35})}); }

struct Fixture {
  Qwen2 student = random_decoder(5);
  Qwen2 teacher = copy_of(student);
  SpeechLM lm{student, Adapter(tiny_adapter()), teacher};
};

}  // namespace salad::models::test_fixture
