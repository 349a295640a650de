// Packing documents into the rows of a Batch (see data/packing.h and data/batch.h).
#include "salad/data/packing.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "salad/core/error.h"

namespace salad::data {
namespace {

// A [sizes] tensor of `dtype` holding `v` (copied).
template <class T>
at::Tensor to_tensor(const std::vector<T>& v, at::IntArrayRef sizes, at::ScalarType dtype) {
  if (v.empty()) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  return at::from_blob(const_cast<T*>(v.data()), sizes, at::TensorOptions().dtype(dtype)).clone();
}

// Host-side buffers of one SequenceBatch.
struct Rows {
  int64_t length;
  std::vector<int64_t> ids, pos, doc, mask;
  Rows(int64_t rows, int64_t length)
      : length(length),
        ids(rows * length, 0),
        pos(rows * length, 0),
        doc(rows * length, -1),
        mask(rows * length, 0) {}
  void set(int64_t flat, int64_t id, int64_t position, int64_t document) {
    ids[flat] = id;
    pos[flat] = position;
    doc[flat] = document;
    mask[flat] = 1;
  }
  SequenceBatch tensors(int64_t rows) const {
    SequenceBatch b;
    b.input_ids = to_tensor(ids, {rows, length}, at::kLong);        // [B, T]
    b.position_ids = to_tensor(pos, {rows, length}, at::kLong);     // [B, T]
    b.document_ids = to_tensor(doc, {rows, length}, at::kLong);     // [B, T]
    b.attention_mask = to_tensor(mask, {rows, length}, at::kLong);  // [B, T]
    return b;
  }
};

}  // namespace

Batch make_batch(const std::vector<std::vector<Document>>& rows, const PackOptions& o) {
  const auto B = static_cast<int64_t>(rows.size());

  // Lengths, checks, and the speech segments' shape.
  int64_t longest = 0, longest_teacher = 0;
  int64_t S = 0, F = 0, De = -1;
  for (int64_t r = 0; r < B; ++r) {
    int64_t length = 0, teacher = 0;
    for (const Document& d : rows[r]) {
      const int64_t n = d.student_length(), nt = d.teacher_length();
      if (n > o.context || nt > o.context) {
        throw DataError("make_batch: row " + std::to_string(r) + ": document '" + d.name +
                        "' needs " + std::to_string(n) + " positions and " + std::to_string(nt) +
                        " teacher positions, more than the context (" + std::to_string(o.context) +
                        "); split_to_context() it first");
      }
      length += n;
      teacher += nt;
      for (const Segment& s : d.segments) {
        if (s.modality != Modality::kSpeech) continue;
        if (!s.features.defined() || s.features.dim() != 2 || s.features.size(0) < 1) {
          throw DataError("make_batch: row " + std::to_string(r) + ": document '" + d.name +
                          "' has a speech segment without [F >= 1, De] features");
        }
        // Copying float features into the int64 codes tensor would truncate them silently.
        const bool integral = at::isIntegralType(s.features.scalar_type(), /*includeBool=*/false);
        if (o.codes ? !integral : !at::isFloatingType(s.features.scalar_type())) {
          throw DataError("make_batch: row " + std::to_string(r) + ": document '" + d.name +
                          "' has speech features of dtype " +
                          std::string(c10::toString(s.features.scalar_type())) + ", expected " +
                          (o.codes ? "integer codes (encoder.output=codes)" : "floating point"));
        }
        if (De < 0) De = s.features.size(1);
        if (s.features.size(1) != De || (o.feature_dim > 0 && De != o.feature_dim)) {
          throw DataError("make_batch: row " + std::to_string(r) + ": document '" + d.name +
                          "' has speech features of width " + std::to_string(s.features.size(1)) +
                          ", expected " + std::to_string(o.feature_dim > 0 ? o.feature_dim : De));
        }
        ++S;
        F = std::max(F, s.features.size(0));
      }
    }
    if (length > o.context || teacher > o.context) {
      std::string names;
      for (const Document& d : rows[r]) names += (names.empty() ? "" : ", ") + d.name;
      throw DataError("make_batch: row " + std::to_string(r) + " holds " + std::to_string(length) +
                      " positions and " + std::to_string(teacher) +
                      " teacher positions, more than the context (" + std::to_string(o.context) +
                      "): " + names);
    }
    longest = std::max(longest, length);
    longest_teacher = std::max(longest_teacher, teacher);
  }
  if (De < 0) De = std::max<int64_t>(o.feature_dim, 0);
  const int64_t T = std::max<int64_t>(o.pad_to_context ? o.context : longest, 1);
  const int64_t Tt = std::max<int64_t>(o.pad_to_context ? o.context : longest_teacher, 1);

  Batch batch;
  Rows student(B, T), teacher(B, Tt);
  std::vector<int8_t> kinds(B * T, kPad);
  std::vector<int64_t> lengths, slots, loss_index, teacher_loss_index, targets;
  lengths.reserve(S);
  const at::ScalarType feature_type = o.codes ? at::kLong : at::kFloat;
  at::Tensor features = at::zeros({S, F, De}, at::TensorOptions().dtype(feature_type));
  BatchStats& stats = batch.stats;

  int64_t s_index = 0;
  for (int64_t r = 0; r < B; ++r) {
    int64_t t = 0, tt = 0;  // student / teacher cursor in the row
    for (size_t j = 0; j < rows[r].size(); ++j) {
      const Document& d = rows[r][j];
      const auto doc = static_cast<int64_t>(j);
      const int64_t t0 = t, tt0 = tt;
      for (const Segment& s : d.segments) {
        if (s.modality == Modality::kText) {
          for (int64_t token : s.tokens) {
            // The positions just before this token predict it, when both exist in the document.
            if (t > t0 && tt > tt0) {
              loss_index.push_back(r * T + t - 1);
              teacher_loss_index.push_back(r * Tt + tt - 1);
              targets.push_back(token);
            }
            student.set(r * T + t, token, t - t0, doc);
            kinds[r * T + t] = kTextToken;
            teacher.set(r * Tt + tt, token, tt - tt0, doc);
            ++t;
            ++tt;
          }
          stats.text_tokens += static_cast<int64_t>(s.tokens.size());
          continue;
        }
        const int64_t n = s.features.size(0);
        student.set(r * T + t, 0, t - t0, doc);
        kinds[r * T + t] = kSpeechStart;
        ++t;
        for (int64_t k = 0; k < n; ++k, ++t) {
          student.set(r * T + t, 0, t - t0, doc);
          kinds[r * T + t] = kSpeechFrame;
          slots.push_back(r * T + t);
        }
        student.set(r * T + t, 0, t - t0, doc);
        kinds[r * T + t] = kSpeechEnd;
        ++t;
        features[s_index].narrow(0, 0, n).copy_(s.features);  // [n, De]
        lengths.push_back(n);
        ++s_index;
        for (int64_t token : s.tokens) {
          teacher.set(r * Tt + tt, token, tt - tt0, doc);
          ++tt;
        }
        stats.speech_frames += n;
        stats.markers += 2;
      }
      ++stats.documents;
      ++stats.documents_by_source[d.source];
      batch.document_names.push_back(d.name);
    }
  }

  batch.student = student.tensors(B);
  batch.teacher = teacher.tensors(B);
  batch.kinds = to_tensor(kinds, {B, T}, at::kChar);  // [B, T]
  batch.speech.features = features;                   // [S, F, De]
  batch.speech.lengths = to_tensor(lengths, {S}, at::kLong);
  batch.speech.slots = to_tensor(slots, {static_cast<int64_t>(slots.size())}, at::kLong);
  const auto N = static_cast<int64_t>(targets.size());
  batch.loss_index = to_tensor(loss_index, {N}, at::kLong);
  batch.teacher_loss_index = to_tensor(teacher_loss_index, {N}, at::kLong);
  batch.targets = to_tensor(targets, {N}, at::kLong);
  stats.loss_positions = N;
  stats.padding = B * T - stats.text_tokens - stats.speech_frames - stats.markers;
  return batch;
}

// ---- RowPacker ------------------------------------------------------------------------------

RowPacker::RowPacker(int64_t context, int64_t rows_per_batch)
    : context_(context), rows_per_batch_(rows_per_batch) {
  if (context < 1)
    throw ConfigError("RowPacker: context must be >= 1, got " + std::to_string(context));
  if (rows_per_batch < 1) {
    throw ConfigError("RowPacker: rows_per_batch must be >= 1, got " +
                      std::to_string(rows_per_batch));
  }
}

bool RowPacker::fits(const Document& d) const {
  return rows_.back().empty() || (open_length_ + d.student_length() <= context_ &&
                                  open_teacher_length_ + d.teacher_length() <= context_);
}

void RowPacker::add(Document d) {
  const int64_t n = d.student_length(), nt = d.teacher_length();
  if (n > context_ || nt > context_) {
    throw DataError("RowPacker: document '" + d.name + "' needs " + std::to_string(n) +
                    " positions and " + std::to_string(nt) +
                    " teacher positions, more than the context (" + std::to_string(context_) +
                    "); split_to_context() it first");
  }
  if (!fits(d)) {
    rows_.emplace_back();
    open_length_ = 0;
    open_teacher_length_ = 0;
  }
  rows_.back().push_back(std::move(d));
  open_length_ += n;
  open_teacher_length_ += nt;
}

std::vector<std::vector<Document>> RowPacker::take() {
  if (!ready()) {
    throw std::logic_error("RowPacker::take: " + std::to_string(closed_rows()) + " rows closed, " +
                           std::to_string(rows_per_batch_) + " needed");
  }
  std::vector<std::vector<Document>> out(std::make_move_iterator(rows_.begin()),
                                         std::make_move_iterator(rows_.begin() + rows_per_batch_));
  rows_.erase(rows_.begin(), rows_.begin() + rows_per_batch_);
  return out;
}

std::vector<std::vector<Document>> RowPacker::flush() {
  std::vector<std::vector<Document>> out = std::move(rows_);
  if (out.back().empty()) out.pop_back();
  rows_.assign(1, {});
  open_length_ = 0;
  open_teacher_length_ = 0;
  return out;
}

}  // namespace salad::data
