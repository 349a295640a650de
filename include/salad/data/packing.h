// Packing documents into the rows of a Batch (data/batch.h): whole documents side by side, each
// attending only to itself (document ids), positions restarting at 0 in every document. The
// teacher's rows hold the text-only versions of the same documents in the same order.
#pragma once

#include <cstdint>
#include <vector>

#include "salad/data/batch.h"
#include "salad/data/document.h"

namespace salad::data {

struct PackOptions {
  int64_t context = 2048;       ///< longest student row, and longest teacher row
  bool pad_to_context = false;  ///< T = Tt = context (fixed shapes) instead of the longest rows
  int64_t feature_dim = 0;      ///< De; used when no document of the batch has speech
  bool codes = false;           ///< features are int64 codes (encoder.output=codes)
};

/// Builds the batch whose row r packs `rows[r]` in order. Every document must have
/// student_length() <= context and teacher_length() <= context, and the documents of a row must
/// fit together on both sides (DataError naming the row otherwise). Rows may be empty (all
/// padding). T is the longest student row, Tt the longest teacher row (both context when
/// pad_to_context), both at least 1. Speech features are copied into one padded [S, F, De]
/// tensor; floating features become float32 (codes: integer features become int64; any other
/// dtype is a DataError); every segment must have the same De (and De == feature_dim when
/// feature_dim > 0), else DataError.
Batch make_batch(const std::vector<std::vector<Document>>& rows, const PackOptions& o);

/// Greedy first-fit-in-order row filling: documents are appended to the open row while they
/// fit; a document that does not fit closes the row and opens the next one. A row fits when both
/// its student positions and its teacher positions (the documents' teacher_length()) stay within
/// the context.
class RowPacker {
 public:
  RowPacker(int64_t context, int64_t rows_per_batch);
  /// True when `d` fits in the open row (or the open row is empty).
  bool fits(const Document& d) const;
  /// Appends to the open row when it fits, else closes it first. Requires
  /// d.student_length() <= context and d.teacher_length() <= context (DataError naming the
  /// document otherwise).
  void add(Document d);
  /// Rows closed so far (the open one not counted).
  int64_t closed_rows() const { return static_cast<int64_t>(rows_.size()) - 1; }
  /// True when rows_per_batch rows are closed: take() them.
  bool ready() const { return closed_rows() >= rows_per_batch_; }
  /// Removes and returns the first rows_per_batch closed rows (std::logic_error unless ready()).
  std::vector<std::vector<Document>> take();
  /// Closes the open row and returns everything left (the last, possibly short batch; no empty
  /// row, so nothing at all when nothing is left). The packer is empty afterwards.
  std::vector<std::vector<Document>> flush();

 private:
  int64_t context_;
  int64_t rows_per_batch_;
  std::vector<std::vector<Document>> rows_{1};
  int64_t open_length_ = 0;          ///< student positions of the open row
  int64_t open_teacher_length_ = 0;  ///< teacher positions of the open row
};

}  // namespace salad::data
