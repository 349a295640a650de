// Misalignment M and forgetting F (DESIGN §3), per-token means in nats, on held-out batches
// (used by validation during training and by salad-eval):
//   M = mean KL(P_θ(·|text) ‖ P_θ(·|speech-interleaved))  at the aligned loss positions
//       (the student reading the text-only rows vs the student reading the interleaved rows),
//   F = mean KL(Q_φ(·|text) ‖ P_θ(·|text))                at every text position of the text-only
//       rows that predicts a next token of its document (teacher vs student, both on text).
// Also reported: L_DIST = mean KL(Q_φ(·|text) ‖ P_θ(·|interleaved)) and the NLL of the targets
// under the student on the interleaved rows, at the aligned positions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

namespace salad::data {
struct Batch;
}
namespace salad::models {
class SpeechLM;
}

namespace salad::eval {

/// Sums over batches (add() them; across ranks, all-reduce the fields), then finish().
struct AlignmentSums {
  double misalignment = 0;  ///< Σ KL(P_θ(·|text) ‖ P_θ(·|interleaved)), aligned positions
  double distillation = 0;  ///< Σ KL(Q_φ(·|text) ‖ P_θ(·|interleaved)), aligned positions
  double nll = 0;           ///< Σ −log P_θ(target | interleaved), aligned positions
  int64_t aligned_positions = 0;
  double forgetting = 0;  ///< Σ KL(Q_φ(·|text) ‖ P_θ(·|text)), text positions
  int64_t text_positions = 0;

  void add(const AlignmentSums& o);
};

struct AlignmentMetrics {
  double misalignment = 0;  ///< M (nats per aligned position)
  double forgetting = 0;    ///< F (nats per text position)
  double distillation = 0;  ///< L_DIST (nats per aligned position)
  double nll = 0;           ///< NLL (nats per aligned position)
  int64_t aligned_positions = 0;
  int64_t text_positions = 0;
};

/// Means of the sums (0 where a count is 0).
AlignmentMetrics finish(const AlignmentSums& s);

/// The sums of one batch, without gradients (the model's train/eval mode is left as it is).
/// Requires a teacher. Logits are computed in chunks of `chunk_size` positions.
AlignmentSums alignment_sums(models::SpeechLM& lm, const data::Batch& batch, int64_t chunk_size);

/// M, F, L_DIST and NLL over the batches `next` yields until it returns nullopt (or
/// `max_batches` batches when > 0). Puts the model in eval mode and restores training mode.
AlignmentMetrics measure_alignment(models::SpeechLM& lm,
                                   const std::function<std::optional<data::Batch>()>& next,
                                   int64_t chunk_size, int64_t max_batches = 0);

}  // namespace salad::eval
