#include "salad/models/speech_lm.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdio>

#include "salad/core/error.h"
#include "salad/data/batch.h"
#include "salad/models/weight_loader.h"

namespace salad::models {

namespace {

std::string millions(int64_t n) {
  char buf[32];
  if (n < 1000000) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  } else if (n >= 1000000000) {
    std::snprintf(buf, sizeof buf, "%.2f B", static_cast<double>(n) / 1e9);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f M", static_cast<double>(n) / 1e6);
  }
  return buf;
}

Qwen2Input text_input(const data::SequenceBatch& rows, c10::Device device) {
  Qwen2Input in;
  in.input_ids = rows.input_ids.to(device);
  in.position_ids = rows.position_ids.to(device);
  in.attention_mask = rows.attention_mask.to(device);
  in.document_ids = rows.document_ids.to(device);
  return in;
}

void check_rows(const data::SequenceBatch& rows, const char* side) {
  if (!rows.input_ids.defined() || rows.input_ids.dim() != 2) {
    throw DataError(std::string("SpeechLM: batch.") + side + ".input_ids must be [B, T]");
  }
}

}  // namespace

SpeechLM::SpeechLM(Qwen2 student, Adapter adapter, Qwen2 teacher)
    : student_(std::move(student)), adapter_(std::move(adapter)), teacher_(std::move(teacher)) {
  if (student_.is_empty() || adapter_.is_empty()) {
    throw ConfigError("SpeechLM: the student decoder and the adapter are required");
  }
  const int64_t width = student_->options().hidden_size;
  if (adapter_->options().output_dim != width) {
    throw ConfigError("SpeechLM: the adapter writes width " +
                      std::to_string(adapter_->options().output_dim) +
                      " but the decoder's hidden_size is " + std::to_string(width));
  }
  if (has_teacher()) {
    if (teacher_.ptr() == student_.ptr()) {
      throw ConfigError(
          "SpeechLM: the teacher is the same module as the student (freezing it would freeze "
          "the student); give the teacher its own copy of the original weights");
    }
    if (teacher_->options().vocab_size != student_->options().vocab_size) {
      throw ConfigError("SpeechLM: teacher vocabulary " +
                        std::to_string(teacher_->options().vocab_size) + " != student's " +
                        std::to_string(student_->options().vocab_size));
    }
    for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
    teacher_->eval();
  }
  spdlog::info("speech LM: {}", adapter_->options().describe());
  spdlog::info("speech LM: {}", describe());
}

at::Tensor SpeechLM::student_embeddings(const data::Batch& batch) {
  check_rows(batch.student, "student");
  const c10::Device dev = device();
  const int64_t B = batch.student.rows(), T = batch.student.length();
  const at::Tensor emb = student_->embed(batch.student.input_ids.to(dev));  // [B, T, D]
  const int64_t D = emb.size(2);
  at::Tensor flat = emb.reshape({B * T, D});  // [B*T, D]
  const data::SpeechSpans& sp = batch.speech;
  if (sp.segments() > 0) {
    const at::Tensor lengths = sp.lengths.to(dev);
    const at::Tensor out = adapter_->forward(sp.features, lengths).to(flat.scalar_type());
    const int64_t S = out.size(0), F = out.size(1);
    const at::Tensor valid =
        at::arange(F, lengths.options()).unsqueeze(0) < lengths.unsqueeze(1);        // [S, F]
    const at::Tensor frames = out.reshape({S * F, D}).index({valid.reshape({-1})});  // [sum, D]
    const at::Tensor slots = sp.slots.to(dev);
    if (slots.numel() != frames.size(0)) {
      throw DataError("SpeechLM: batch.speech.slots has " + std::to_string(slots.numel()) +
                      " entries but the segments hold " + std::to_string(frames.size(0)) +
                      " frames");
    }
    flat = flat.index_copy(0, slots, frames);  // out of place: gradients reach both sides
  }
  const at::Tensor kinds = batch.kinds.to(dev).reshape({B * T, 1});  // [B*T, 1]
  const auto& a = adapter_;
  flat = at::where(kinds == static_cast<int64_t>(data::kSpeechStart),
                   a->speech_start.to(flat.scalar_type()), flat);
  flat = at::where(kinds == static_cast<int64_t>(data::kSpeechEnd),
                   a->speech_end.to(flat.scalar_type()), flat);
  return flat.view({B, T, D});  // [B, T, D]
}

at::Tensor SpeechLM::student_hidden(const data::Batch& batch) {
  const c10::Device dev = device();
  Qwen2Input in;
  in.inputs_embeds = student_embeddings(batch);
  in.position_ids = batch.student.position_ids.to(dev);
  in.attention_mask = batch.student.attention_mask.to(dev);
  in.document_ids = batch.student.document_ids.to(dev);
  return student_->forward_hidden(in).hidden;  // [B, T, D]
}

at::Tensor SpeechLM::student_text_hidden(const data::Batch& batch) {
  check_rows(batch.teacher, "teacher");
  return student_->forward_hidden(text_input(batch.teacher, device())).hidden;  // [B, Tt, D]
}

at::Tensor SpeechLM::teacher_hidden(const data::Batch& batch) {
  if (!has_teacher()) throw ConfigError("SpeechLM: no teacher was given (needed for alpha > 0)");
  check_rows(batch.teacher, "teacher");
  torch::NoGradGuard no_grad;
  const c10::Device dev = teacher_->lm_head_weight().device();
  return teacher_->forward_hidden(text_input(batch.teacher, dev)).hidden;  // [B, Tt, Dt]
}

AlignedHidden SpeechLM::forward(const data::Batch& batch, bool with_teacher) {
  const c10::Device dev = device();
  AlignedHidden out;
  const at::Tensor hs = student_hidden(batch);  // [B, T, D]
  out.student = hs.reshape({-1, hs.size(2)}).index_select(0, batch.loss_index.to(dev));  // [N, D]
  if (with_teacher) {
    const at::Tensor ht = teacher_hidden(batch);  // [B, Tt, Dt]
    out.teacher = ht.reshape({-1, ht.size(2)})
                      .index_select(0, batch.teacher_loss_index.to(ht.device()));  // [N, Dt]
  }
  return out;
}

std::vector<ParamGroup> SpeechLM::trainable_groups() {
  ParamGroup adapter{"adapter", {}}, llm{"llm", {}};
  for (const auto& p : adapter_->named_parameters()) {
    adapter.params.emplace_back("adapter." + p.key(), p.value());
  }
  for (const auto& p : student_->named_parameters()) llm.params.emplace_back(p.key(), p.value());
  return {adapter, llm};
}

safetensors::NamedTensors SpeechLM::state() {
  safetensors::NamedTensors out = named_tensors(*student_);
  for (auto& t : named_tensors(*adapter_, "adapter.")) out.push_back(std::move(t));
  return out;
}

void SpeechLM::load_state(const safetensors::Checkpoint& ckpt) {
  LoadOptions lo;
  lo.what = "the student decoder";
  lo.ignore_prefixes = {"adapter."};
  if (student_->options().tie_word_embeddings) lo.allow_unexpected.push_back("lm_head.weight");
  load_weights(*student_, ckpt, lo);
  LoadOptions la;
  la.what = "the adapter";
  la.key_map = [](const std::string& name) { return "adapter." + name; };
  la.ignore_prefixes = {"model.", "lm_head."};
  load_weights(*adapter_, ckpt, la);
}

void SpeechLM::train(bool on) {
  student_->train(on);
  adapter_->train(on);
  if (has_teacher()) teacher_->eval();
}

void SpeechLM::to(c10::Device device, c10::ScalarType dtype) {
  student_->to(device, dtype);
  adapter_->to(device, dtype);
  if (has_teacher()) teacher_->to(device);
}

c10::Device SpeechLM::device() const { return student_->lm_head_weight().device(); }

std::string SpeechLM::describe() const {
  std::string s = "student decoder " + millions(count_parameters(*student_)) + " + adapter " +
                  millions(count_parameters(*adapter_)) + " trainable";
  if (has_teacher()) s += "; teacher " + millions(count_parameters(*teacher_)) + " frozen";
  return s;
}

}  // namespace salad::models
