#include "salad/models/speech_lm.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "models/speech_lm_fixture.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/data/packing.h"
#include "salad/eval/alignment.h"
#include "salad/loss/distillation.h"
#include "salad/models/weight_loader.h"
#include "test_util.h"

namespace salad::models {
namespace {

using namespace test_fixture;  // NOLINT: the shared tiny models and documents

TEST(SpeechLMTest, StudentEmbeddingsPutEverythingInItsPlace) {
  torch::manual_seed(7);
  Fixture f;
  const data::Batch b = batch_of({{speech_doc_a()}, {speech_doc_b(), text_doc_c()}});
  const at::Tensor emb = f.lm.student_embeddings(b);  // [B, T, D]
  const int64_t B = b.student.rows(), T = b.student.length();
  ASSERT_EQ(emb.sizes(), (std::vector<int64_t>{B, T, 32}));
  const at::Tensor flat = emb.reshape({B * T, 32});
  const at::Tensor kinds = b.kinds.reshape({-1});
  const at::Tensor ids = b.student.input_ids.reshape({-1});
  const at::Tensor table = f.student->model->embed_tokens->weight;
  int64_t checked_text = 0, checked_markers = 0;
  for (int64_t i = 0; i < B * T; ++i) {
    const int k = kinds[i].item<int>();
    if (k == data::kTextToken) {
      EXPECT_TRUE(test::all_close(flat[i], table[ids[i].item<int64_t>()], 0, "text position"));
      ++checked_text;
    } else if (k == data::kSpeechStart) {
      EXPECT_TRUE(test::all_close(flat[i], f.lm.adapter()->speech_start, 0, "speech_start"));
      ++checked_markers;
    } else if (k == data::kSpeechEnd) {
      EXPECT_TRUE(test::all_close(flat[i], f.lm.adapter()->speech_end, 0, "speech_end"));
      ++checked_markers;
    }
  }
  EXPECT_EQ(checked_text, 3 + 4 + 2 + 6);
  EXPECT_EQ(checked_markers, 2 * 3);
  // Speech frames: each segment's adapter output, in order, at speech.slots.
  const at::Tensor out = f.lm.adapter()->forward(b.speech.features, b.speech.lengths);
  int64_t k = 0;
  for (int64_t s = 0; s < b.speech.segments(); ++s) {
    for (int64_t t = 0; t < b.speech.lengths[s].item<int64_t>(); ++t, ++k) {
      const int64_t slot = b.speech.slots[k].item<int64_t>();
      EXPECT_EQ(kinds[slot].item<int>(), data::kSpeechFrame);
      EXPECT_TRUE(test::all_close(flat[slot], out[s][t], 1e-6, "speech frame"));
    }
  }
  EXPECT_EQ(k, 5 + 3 + 6);
}

// Packing is invisible to the model: a document's hidden states are the same alone and packed
// behind another document (per-document attention, positions restarting at 0).
TEST(SpeechLMTest, PackedDocumentsSeeOnlyThemselves) {
  torch::manual_seed(8);
  Fixture f;
  const data::Batch packed = batch_of({{speech_doc_a(), speech_doc_b()}});
  const data::Batch a = batch_of({{speech_doc_a()}});
  const data::Batch b = batch_of({{speech_doc_b()}});
  const at::Tensor hp = f.lm.student_hidden(packed)[0];  // [T, D]
  const at::Tensor ha = f.lm.student_hidden(a)[0];
  const at::Tensor hb = f.lm.student_hidden(b)[0];
  const int64_t la = speech_doc_a().student_length(), lb = speech_doc_b().student_length();
  EXPECT_TRUE(test::all_close(hp.narrow(0, 0, la), ha.narrow(0, 0, la), 2e-5, "doc a"));
  EXPECT_TRUE(test::all_close(hp.narrow(0, la, lb), hb.narrow(0, 0, lb), 2e-5, "doc b"));
  // The aligned student hidden states are the same rows too.
  const at::Tensor np = f.lm.forward(packed, false).student;
  const at::Tensor na = f.lm.forward(a, false).student;
  const at::Tensor nb = f.lm.forward(b, false).student;
  EXPECT_TRUE(test::all_close(np, at::cat({na, nb}), 2e-5, "aligned"));
}

// With the student a copy of the teacher, a text-only document gives identical student and
// teacher distributions at every aligned position: KL 0, forgetting 0.
TEST(SpeechLMTest, TextDocumentsMatchTheTeacherAtInitialisation) {
  torch::manual_seed(9);
  Fixture f;
  const data::Batch b = batch_of({{text_doc_c(), doc("d", {text({1, 2, 3, 4})})}});
  const AlignedHidden h = f.lm.forward(b);
  ASSERT_EQ(h.student.size(0), b.loss_positions());
  EXPECT_TRUE(test::all_close(h.student, h.teacher, 1e-5, "student vs teacher on text"));
  loss::DistillationOptions o;
  const loss::LossParts parts = loss::DistillationLoss(o)(
      h.student, f.student->lm_head_weight(), h.teacher, f.teacher->lm_head_weight(), b.targets,
      static_cast<double>(b.loss_positions()));
  EXPECT_NEAR(parts.kl_sum.item<double>(), 0.0, 1e-6);
  const eval::AlignmentSums s = eval::alignment_sums(f.lm, b, 4);
  EXPECT_NEAR(s.forgetting, 0.0, 1e-6);
  EXPECT_NEAR(s.misalignment, 0.0, 1e-6);
}

TEST(SpeechLMTest, GradientsReachAdapterAndStudentButNotTeacher) {
  torch::manual_seed(10);
  Fixture f;
  const data::Batch b = batch_of({{speech_doc_a()}, {speech_doc_b()}});
  const AlignedHidden h = f.lm.forward(b);
  loss::DistillationOptions o;
  o.alpha = 0.5;
  const loss::LossParts parts =
      loss::DistillationLoss(o)(h.student, f.student->lm_head_weight(), h.teacher,
                                f.teacher->lm_head_weight(), b.targets, 1.0);
  parts.loss.backward();
  for (const auto& group : f.lm.trainable_groups()) {
    for (const auto& [name, p] : group.params) {
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0) << name << " got no gradient";
    }
  }
  for (const auto& p : f.teacher->parameters()) {
    EXPECT_FALSE(p.requires_grad());
    EXPECT_FALSE(p.grad().defined());
  }
}

TEST(SpeechLMTest, TrainableGroupsLabelAdapterAndStudentOnly) {
  Fixture f;
  const auto groups = f.lm.trainable_groups();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "adapter");
  EXPECT_EQ(groups[1].name, "llm");
  std::set<const void*> teacher;
  for (const auto& p : f.teacher->parameters()) teacher.insert(p.data_ptr());
  int64_t n = 0;
  for (const auto& g : groups) {
    for (const auto& [name, p] : g.params) {
      EXPECT_EQ(teacher.count(p.data_ptr()), 0u) << name << " is the teacher's";
      EXPECT_EQ(name.rfind("adapter.", 0) == 0, g.name == "adapter") << name;
      n += p.numel();
    }
  }
  EXPECT_EQ(n, count_parameters(*f.student) + count_parameters(*f.lm.adapter()));
  EXPECT_NE(f.lm.describe().find("frozen"), std::string::npos);
}

TEST(SpeechLMTest, StateRoundTripsWithHuggingFaceAndAdapterNames) {
  test::TempDir dir;
  Fixture f;
  const auto state = f.lm.state();
  std::set<std::string> names;
  for (const auto& [name, t] : state) names.insert(name);
  EXPECT_TRUE(names.count("model.embed_tokens.weight"));
  EXPECT_TRUE(names.count("model.layers.1.self_attn.q_proj.bias"));
  EXPECT_TRUE(names.count("adapter.in_proj.weight"));
  EXPECT_TRUE(names.count("adapter.layers.0.mlp.up_proj.weight"));
  EXPECT_TRUE(names.count("adapter.speech_start"));
  const auto path = dir.path() / "model.safetensors";
  safetensors::save(path, state);

  torch::manual_seed(99);
  SpeechLM other{Qwen2(tiny_decoder()), Adapter(tiny_adapter())};
  other.load_state(safetensors::Checkpoint::open(path));
  const auto again = other.state();
  ASSERT_EQ(again.size(), state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    EXPECT_EQ(again[i].first, state[i].first);
    EXPECT_TRUE(test::all_close(again[i].second, state[i].second, 0, state[i].first));
  }
  // A checkpoint without the adapter names what is missing.
  safetensors::NamedTensors no_adapter;
  for (const auto& nt : state) {
    if (nt.first.rfind("adapter.", 0) != 0) no_adapter.push_back(nt);
  }
  safetensors::save(dir.path() / "partial.safetensors", no_adapter);
  test::expect_error<CheckpointError>(
      [&] { other.load_state(safetensors::Checkpoint::open(dir.path() / "partial.safetensors")); },
      {"adapter.in_proj.weight"});
}

TEST(SpeechLMTest, MismatchedPartsAreRejected) {
  AdapterOptions wide = tiny_adapter();
  wide.output_dim = 40;
  test::expect_error<ConfigError>([&] { SpeechLM(Qwen2(tiny_decoder()), Adapter(wide)); },
                                  {"40", "32"});
  Qwen2Options other = tiny_decoder();
  other.vocab_size = 51;
  test::expect_error<ConfigError>(
      [&] { SpeechLM(Qwen2(tiny_decoder()), Adapter(tiny_adapter()), Qwen2(other)); },
      {"vocabulary", "51"});
  Qwen2 same(tiny_decoder());
  test::expect_error<ConfigError>([&] { SpeechLM(same, Adapter(tiny_adapter()), same); },
                                  {"same module", "copy"});
}

}  // namespace
}  // namespace salad::models
