// A packed micro-batch, as the data pipeline hands it to the model and the loss (DESIGN §3).
//
// Every row packs whole documents; a document is a chain of segments, each either text tokens or
// the encoder frames of a span of speech (wrapped in the speech_start / speech_end markers). The
// student reads the interleaved rows; the teacher reads the text-only version of the same
// documents (every segment as its tokens), packed into rows of its own. `loss_index[k]` (student)
// and `teacher_loss_index[k]` (teacher) are the two positions that predict the same text token
// `targets[k]`: the aligned pairs of the distillation loss.
//
// Shape legend: B rows, T student positions, Tt teacher positions, S speech segments, F frames of
// the longest segment, De encoder feature width, N loss positions.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace salad::data {

/// What occupies a student position (values of Batch::kinds).
enum PositionKind : int8_t {
  kPad = 0,
  kTextToken = 1,
  kSpeechFrame = 2,
  kSpeechStart = 3,
  kSpeechEnd = 4,
};

/// One side's rows. Position ids restart at 0 with every document; document ids number the
/// documents of a row 0, 1, ... (padding: -1).
struct SequenceBatch {
  at::Tensor input_ids;       ///< [B, T] int64: text token ids (0 where the position is not text)
  at::Tensor position_ids;    ///< [B, T] int64
  at::Tensor document_ids;    ///< [B, T] int64
  at::Tensor attention_mask;  ///< [B, T] int64: 1 = real position, 0 = padding
  int64_t rows() const { return input_ids.defined() ? input_ids.size(0) : 0; }
  int64_t length() const { return input_ids.defined() ? input_ids.size(1) : 0; }
};

/// The speech segments of a batch, padded to the longest.
struct SpeechSpans {
  at::Tensor features;  ///< [S, F, De] float32 (encoder.output=codes: [S, F, n_q] int64)
  at::Tensor lengths;   ///< [S] int64: valid frames of each segment (>= 1)
  /// [sum(lengths)] int64: the student position (flat, row * T + t) of every valid frame, segment
  /// after segment, frames in order.
  at::Tensor slots;
  int64_t segments() const { return lengths.defined() ? lengths.size(0) : 0; }
};

/// Counts over the documents of a batch (for logs and metrics).
struct BatchStats {
  int64_t documents = 0;
  int64_t text_tokens = 0;     ///< student positions holding a text token
  int64_t speech_frames = 0;   ///< student positions holding a speech frame
  int64_t markers = 0;         ///< speech_start + speech_end positions
  int64_t padding = 0;         ///< student padding positions
  int64_t loss_positions = 0;  ///< N
  std::map<std::string, int64_t> documents_by_source;
};

struct Batch {
  SequenceBatch student;  ///< interleaved rows, [B, T]
  at::Tensor kinds;       ///< [B, T] int8 PositionKind of every student position
  SpeechSpans speech;     ///< frames to run through the adapter and place at speech.slots
  SequenceBatch teacher;  ///< text-only rows, [B, Tt] (same documents, same row order)

  at::Tensor loss_index;          ///< [N] int64 flat student positions (row * T + t)
  at::Tensor teacher_loss_index;  ///< [N] int64 flat teacher positions (row * Tt + t)
  at::Tensor targets;             ///< [N] int64 the text token both positions predict

  BatchStats stats;
  /// Ids of the packed documents in row order ("source/id"), for messages and debugging.
  std::vector<std::string> document_names;

  int64_t loss_positions() const { return targets.defined() ? targets.size(0) : 0; }
};

}  // namespace salad::data
