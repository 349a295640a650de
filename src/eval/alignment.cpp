#include "salad/eval/alignment.h"

#include <torch/torch.h>

#include "salad/core/error.h"
#include "salad/data/batch.h"
#include "salad/loss/distillation.h"
#include "salad/models/speech_lm.h"

namespace salad::eval {

void AlignmentSums::add(const AlignmentSums& o) {
  misalignment += o.misalignment;
  distillation += o.distillation;
  nll += o.nll;
  aligned_positions += o.aligned_positions;
  forgetting += o.forgetting;
  text_positions += o.text_positions;
}

AlignmentMetrics finish(const AlignmentSums& s) {
  AlignmentMetrics m;
  m.aligned_positions = s.aligned_positions;
  m.text_positions = s.text_positions;
  if (s.aligned_positions > 0) {
    const double n = static_cast<double>(s.aligned_positions);
    m.misalignment = s.misalignment / n;
    m.distillation = s.distillation / n;
    m.nll = s.nll / n;
  }
  if (s.text_positions > 0) m.forgetting = s.forgetting / static_cast<double>(s.text_positions);
  return m;
}

namespace {

// Flat indices of the text-only rows' positions that predict a next token of the same document:
// [M] int64 into B * Tt.
at::Tensor next_token_positions(const data::SequenceBatch& rows) {
  const at::Tensor mask = rows.attention_mask.to(at::kBool);  // [B, Tt]
  const at::Tensor doc = rows.document_ids;
  const int64_t Tt = mask.size(1);
  if (Tt < 2) return at::zeros({0}, at::kLong);
  const at::Tensor here = mask.narrow(1, 0, Tt - 1), next = mask.narrow(1, 1, Tt - 1);
  const at::Tensor same = doc.narrow(1, 0, Tt - 1) == doc.narrow(1, 1, Tt - 1);
  at::Tensor ok = here & next & same;                                 // [B, Tt-1]
  ok = at::cat({ok, at::zeros({mask.size(0), 1}, ok.options())}, 1);  // [B, Tt]
  return ok.reshape({-1}).nonzero().reshape({-1});                    // [M]
}

}  // namespace

AlignmentSums alignment_sums(models::SpeechLM& lm, const data::Batch& batch, int64_t chunk_size) {
  if (!lm.has_teacher()) {
    throw ConfigError("misalignment/forgetting need the teacher (the original text LLM)");
  }
  if (chunk_size <= 0) throw ConfigError("alignment metrics: chunk_size must be > 0");
  torch::NoGradGuard no_grad;
  AlignmentSums s;
  const c10::Device dev = lm.device();
  const at::Tensor student_head = lm.student()->lm_head_weight();
  const at::Tensor teacher_head = lm.teacher()->lm_head_weight();

  const at::Tensor s_text = lm.student_text_hidden(batch);              // [B, Tt, D]
  const at::Tensor t_text = lm.teacher_hidden(batch);                   // [B, Tt, Dt]
  const at::Tensor s_text_flat = s_text.reshape({-1, s_text.size(2)});  // [B*Tt, D]
  const at::Tensor t_text_flat = t_text.reshape({-1, t_text.size(2)});  // [B*Tt, Dt]

  const int64_t N = batch.loss_positions();
  if (N > 0) {
    const at::Tensor s_mix = lm.forward(batch, /*with_teacher=*/false).student;  // [N, D]
    const at::Tensor tidx = batch.teacher_loss_index.to(dev);
    const at::Tensor s_at_text = s_text_flat.index_select(0, tidx);                      // [N, D]
    const at::Tensor t_at_text = t_text_flat.index_select(0, tidx.to(t_text.device()));  // [N, Dt]
    s.misalignment = loss::chunked_kl(s_at_text, student_head, s_mix, student_head, chunk_size)
                         .sum()
                         .item<double>();
    s.distillation = loss::chunked_kl(t_at_text, teacher_head, s_mix.to(t_at_text.device()),
                                      student_head.to(t_at_text.device()), chunk_size)
                         .sum()
                         .item<double>();
    loss::DistillationOptions nll_only;
    nll_only.alpha = 0.0;
    nll_only.chunk_size = chunk_size;
    s.nll =
        loss::DistillationLoss(nll_only)(s_mix, student_head, {}, {}, batch.targets.to(dev), 1.0)
            .nll_sum.item<double>();
    s.aligned_positions = N;
  }
  const at::Tensor pos = next_token_positions(batch.teacher);  // [M]
  if (pos.numel() > 0) {
    const at::Tensor t_pos = t_text_flat.index_select(0, pos.to(t_text.device()));
    const at::Tensor s_pos = s_text_flat.index_select(0, pos.to(dev)).to(t_pos.device());
    s.forgetting =
        loss::chunked_kl(t_pos, teacher_head, s_pos, student_head.to(t_pos.device()), chunk_size)
            .sum()
            .item<double>();
    s.text_positions = pos.numel();
  }
  return s;
}

AlignmentMetrics measure_alignment(models::SpeechLM& lm,
                                   const std::function<std::optional<data::Batch>()>& next,
                                   int64_t chunk_size, int64_t max_batches) {
  const bool was_training = lm.student()->is_training();
  lm.train(false);
  AlignmentSums total;
  try {
    for (int64_t b = 0; max_batches <= 0 || b < max_batches; ++b) {
      std::optional<data::Batch> batch = next();
      if (!batch) break;
      total.add(alignment_sums(lm, *batch, chunk_size));
    }
  } catch (...) {
    lm.train(was_training);
    throw;
  }
  lm.train(was_training);
  return finish(total);
}

}  // namespace salad::eval
