// Misalignment M and forgetting F: against a direct full-logits computation, and the teacher
// requirement. (The end-to-end check that training lowers M is alignment_integration_test.cpp.)
#include "salad/eval/alignment.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <vector>

#include "models/speech_lm_fixture.h"
#include "salad/core/error.h"
#include "salad/data/batch.h"
#include "test_util.h"

namespace salad::models {
namespace {

using namespace test_fixture;  // NOLINT

// M and F against a direct full-logits computation.
TEST(AlignmentMetricsTest, MatchDirectComputation) {
  torch::manual_seed(11);
  Fixture f;
  {  // make the student differ from the teacher, so F > 0
    torch::NoGradGuard no_grad;
    for (auto& p : f.student->parameters()) p.add_(torch::randn_like(p) * 0.05);
  }
  const data::Batch b = batch_of({{speech_doc_a(), text_doc_c()}, {speech_doc_b()}});
  const eval::AlignmentSums s = eval::alignment_sums(f.lm, b, 3);

  torch::NoGradGuard no_grad;
  auto logp = [](Qwen2& m, const at::Tensor& hidden) {
    return at::log_softmax(m->logits(hidden).to(at::kDouble), -1);
  };
  auto kl = [](const at::Tensor& lp, const at::Tensor& lq) {
    return (lp.exp() * (lp - lq)).sum(-1);
  };
  const at::Tensor mix =
      logp(f.student, f.lm.student_hidden(b).reshape({-1, 32})).index_select(0, b.loss_index);
  const at::Tensor s_text = logp(f.student, f.lm.student_text_hidden(b).reshape({-1, 32}));
  const at::Tensor t_text = logp(f.teacher, f.lm.teacher_hidden(b).reshape({-1, 32}));
  const at::Tensor M = kl(s_text.index_select(0, b.teacher_loss_index), mix).sum();
  const at::Tensor D = kl(t_text.index_select(0, b.teacher_loss_index), mix).sum();
  const at::Tensor nll = -mix.gather(1, b.targets.unsqueeze(1)).sum();
  // Text positions of the text-only rows that predict a next token of the same document.
  std::vector<int64_t> pos;
  const int64_t Tt = b.teacher.length();
  for (int64_t r = 0; r < b.teacher.rows(); ++r) {
    for (int64_t t = 0; t + 1 < Tt; ++t) {
      if (b.teacher.attention_mask[r][t].item<int64_t>() &&
          b.teacher.attention_mask[r][t + 1].item<int64_t>() &&
          b.teacher.document_ids[r][t].item<int64_t>() ==
              b.teacher.document_ids[r][t + 1].item<int64_t>()) {
        pos.push_back(r * Tt + t);
      }
    }
  }
  const at::Tensor idx = torch::tensor(pos, torch::kLong);
  const at::Tensor F = kl(t_text.index_select(0, idx), s_text.index_select(0, idx)).sum();

  EXPECT_EQ(s.aligned_positions, b.loss_positions());
  EXPECT_EQ(s.text_positions, static_cast<int64_t>(pos.size()));
  EXPECT_EQ(s.text_positions, (3 + 2 + 4 + 1) - 1 + (6 - 1) + (3 + 2 - 1));
  EXPECT_NEAR(s.misalignment, M.item<double>(), 1e-4);
  EXPECT_NEAR(s.distillation, D.item<double>(), 1e-4);
  EXPECT_NEAR(s.nll, nll.item<double>(), 1e-4);
  EXPECT_NEAR(s.forgetting, F.item<double>(), 1e-4);
  EXPECT_GT(s.misalignment, 1e-3);
  EXPECT_GT(s.forgetting, 1e-4);

  // measure_alignment over two batches: per-token means of the summed parts.
  const data::Batch b2 = batch_of({{text_doc_c()}});
  std::vector<data::Batch> batches{b, b2};
  size_t next = 0;
  const eval::AlignmentMetrics m = eval::measure_alignment(
      f.lm,
      [&]() -> std::optional<data::Batch> {
        if (next == batches.size()) return std::nullopt;
        return batches[next++];
      },
      5);
  eval::AlignmentSums total = s;
  total.add(eval::alignment_sums(f.lm, b2, 5));
  EXPECT_NEAR(m.misalignment, total.misalignment / total.aligned_positions, 1e-6);
  EXPECT_NEAR(m.forgetting, total.forgetting / total.text_positions, 1e-6);
  EXPECT_EQ(m.aligned_positions, total.aligned_positions);
}

TEST(AlignmentMetricsTest, NeedTheTeacher) {
  SpeechLM lm{Qwen2(tiny_decoder()), Adapter(tiny_adapter())};
  const data::Batch b = batch_of({{text_doc_c()}});
  test::expect_error<ConfigError>([&] { eval::alignment_sums(lm, b, 4); }, {"teacher"});
}

}  // namespace
}  // namespace salad::models
