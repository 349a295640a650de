// The speech LM of SALAD: the student (adapter + trainable Qwen2 decoder) reading
// speech-interleaved rows, and the teacher (a frozen copy of the original decoder) reading the
// text-only version of the same documents (data/batch.h).
//
//   student embeddings = token embeddings at text positions, adapter(frames) at speech frames,
//                        speech_start / speech_end at the markers        -> decoder -> hidden
//   teacher            = original decoder on the text-only rows            -> hidden (no grad)
//
// Which parts train and which are frozen is decided here and nowhere else (trainable_groups()):
// the adapter and the student decoder train; the teacher and the speech encoder (not held here:
// features arrive precomputed in the batch) are frozen.
//
// Checkpoint names (state()): the student decoder under its Hugging Face names
// (model.layers.0.self_attn.q_proj.weight, ...), the adapter under `adapter.`.
//
// Shape legend: B rows, T student positions, Tt teacher positions, N loss positions, D width.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "salad/core/safetensors.h"
#include "salad/models/adapter.h"
#include "salad/models/qwen2.h"

namespace salad::data {
struct Batch;
}

namespace salad::models {

/// A group of parameters that share optimizer settings ("adapter" or "llm").
struct ParamGroup {
  std::string name;
  std::vector<std::pair<std::string, at::Tensor>> params;  ///< checkpoint name, tensor
};

/// Hidden states at the aligned loss positions of a batch.
struct AlignedHidden {
  at::Tensor student;  ///< [N, D] student final hidden states at batch.loss_index
  at::Tensor teacher;  ///< [N, Dt] teacher hidden states at batch.teacher_loss_index (no grad);
                       ///< undefined when the teacher was not run
};

class SpeechLM {
 public:
  /// `student`: the decoder that trains (initialised from the teacher's weights for Stage I);
  /// `teacher`: the frozen original (may be empty when only alpha = 0 / text stages are run).
  /// Marks the teacher's parameters requires_grad(false) and puts it in eval mode. Throws
  /// ConfigError when the adapter's output width differs from the decoder's hidden size or the
  /// student and teacher vocabularies differ.
  SpeechLM(Qwen2 student, Adapter adapter, Qwen2 teacher = Qwen2{nullptr});

  Qwen2& student() { return student_; }
  Adapter& adapter() { return adapter_; }
  Qwen2& teacher() { return teacher_; }
  bool has_teacher() const { return !teacher_.is_empty(); }

  /// The student's input embeddings for `batch`: [B, T, D], differentiable w.r.t. the adapter
  /// and the student's embedding table.
  at::Tensor student_embeddings(const data::Batch& batch);

  /// Student final hidden states over the whole batch: [B, T, D].
  at::Tensor student_hidden(const data::Batch& batch);
  /// Student hidden states of the text-only rows (batch.teacher): [B, Tt, D].
  at::Tensor student_text_hidden(const data::Batch& batch);
  /// Teacher hidden states of the text-only rows, without gradients: [B, Tt, Dt].
  at::Tensor teacher_hidden(const data::Batch& batch);

  /// The hidden states the loss needs, gathered at the aligned positions. The teacher runs only
  /// when `with_teacher` (alpha > 0). Never computes logits.
  AlignedHidden forward(const data::Batch& batch, bool with_teacher = true);

  /// The trainable parameters, labelled: {"adapter", ...}, {"llm", ...}.
  std::vector<ParamGroup> trainable_groups();
  /// Trainable weights under their checkpoint names (student: HF names; adapter: "adapter.*").
  safetensors::NamedTensors state();
  /// Loads trainable weights written by state() (every tensor checked; all problems at once).
  void load_state(const safetensors::Checkpoint& ckpt);

  /// Training/eval mode of the trainable parts (the teacher stays in eval mode).
  void train(bool on = true);
  /// Moves everything to `device` and the trainable parts to `dtype` (the teacher keeps the
  /// dtype it was loaded in).
  void to(c10::Device device, c10::ScalarType dtype);
  c10::Device device() const;

  /// "student 3.09 B + adapter 120.46 M trainable; teacher 3.09 B frozen".
  std::string describe() const;

 private:
  Qwen2 student_;
  Adapter adapter_;
  Qwen2 teacher_;
};

}  // namespace salad::models
