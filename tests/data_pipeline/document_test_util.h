// Helpers of document_test.cpp and packing_test.cpp: a word-level fake tokenizer, word-timed
// utterances, hand-made documents, and the alignment invariant of a Batch.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "salad/data/batch.h"
#include "salad/data/document.h"
#include "salad/data/manifest.h"
#include "salad/text/tokenizer.h"

namespace salad::data::test_util {

/// One token per space-separated word of a fixed vocabulary, like a byte-level BPE whose words
/// are all single tokens: word i is id 10 + 2 i at the start of the text and 11 + 2 i after a
/// space (the "Ġword" form), so tokenizing segments with leading spaces reproduces the
/// tokenization of the full text. Unknown words throw.
class WordTokenizer final : public text::Tokenizer {
 public:
  explicit WordTokenizer(std::vector<std::string> vocab) : vocab_(std::move(vocab)) {
    for (size_t i = 0; i < vocab_.size(); ++i) index_[vocab_[i]] = static_cast<int64_t>(i);
  }
  /// "w0" ... "w<n-1>".
  static WordTokenizer numbered(int64_t n) {
    std::vector<std::string> v;
    for (int64_t i = 0; i < n; ++i) v.push_back("w" + std::to_string(i));
    return WordTokenizer(std::move(v));
  }

  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int64_t> ids;
    size_t i = 0;
    while (i < text.size()) {
      bool space = false;
      while (i < text.size() && text[i] == ' ') {
        if (space)
          throw std::runtime_error("WordTokenizer: double space in '" + std::string(text) + "'");
        space = true;
        ++i;
      }
      if (i == text.size()) throw std::runtime_error("WordTokenizer: trailing space");
      size_t j = text.find(' ', i);
      if (j == std::string_view::npos) j = text.size();
      const std::string w(text.substr(i, j - i));
      const auto it = index_.find(w);
      if (it == index_.end()) throw std::runtime_error("WordTokenizer: unknown word '" + w + "'");
      ids.push_back(10 + 2 * it->second + (space ? 1 : 0));
      i = j;
    }
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (int64_t id : ids) s += id_to_token(id);
    return s;
  }
  int64_t vocab_size() const override { return 10 + 2 * static_cast<int64_t>(vocab_.size()); }
  std::optional<int64_t> token_to_id(std::string_view token) const override {
    const bool space = !token.empty() && token[0] == ' ';
    const auto it = index_.find(std::string(token.substr(space ? 1 : 0)));
    if (it == index_.end()) return std::nullopt;
    return 10 + 2 * it->second + (space ? 1 : 0);
  }
  std::string id_to_token(int64_t id) const override {
    if (id < 10 || id >= vocab_size()) throw std::runtime_error("WordTokenizer: bad id");
    return ((id - 10) % 2 ? " " : "") + vocab_[(id - 10) / 2];
  }
  std::string kind() const override { return "fake"; }

 private:
  std::vector<std::string> vocab_;
  std::map<std::string, int64_t> index_;
};

/// An utterance of `words`, word k timed [k * step, k * step + dur].
inline Utterance timed_utterance(const std::vector<std::string>& words, double step = 0.4,
                                 double dur = 0.3, const std::string& id = "u1") {
  Utterance u;
  u.id = id;
  u.source = "ls";
  u.where = "train.jsonl:7";
  std::string text;
  for (size_t k = 0; k < words.size(); ++k) {
    u.words.push_back({words[k], k * step, k * step + dur});
    text += (k ? " " : "") + words[k];
  }
  u.text = text;
  return u;
}

/// [F, De] features whose row k is k + 0.001 * c in column c: every frame names itself.
inline at::Tensor frame_features(int64_t frames, int64_t dim) {
  return at::arange(frames, at::kFloat).unsqueeze(1) +
         0.001 * at::arange(dim, at::kFloat).unsqueeze(0);  // [F, De]
}

/// Enough frames (at `rate` Hz) to cover the utterance's last word.
inline int64_t frames_for(const Utterance& u, double rate = 12.5) {
  return static_cast<int64_t>(std::ceil(u.words.back().end * rate));
}

inline Segment text_segment(std::vector<int64_t> tokens) {
  Segment s;
  s.modality = Modality::kText;
  s.tokens = std::move(tokens);
  return s;
}

/// A speech segment of `frames` frames whose values are base + frame_features(frames, dim).
inline Segment speech_segment(std::vector<int64_t> tokens, int64_t frames, int64_t dim,
                              float base) {
  Segment s;
  s.modality = Modality::kSpeech;
  s.tokens = std::move(tokens);
  s.features = frame_features(frames, dim) + base;  // [F, De]
  return s;
}

inline Document document(const std::string& name, const std::string& source,
                         std::vector<Segment> segments) {
  Document d;
  d.name = name;
  d.source = source;
  d.segments = std::move(segments);
  return d;
}

/// The central invariant of a batch: the aligned positions of every loss pair predict the same
/// token, which is a text token of the student and the next teacher token; in the same row and
/// document; in row-major order; the number of pairs is the documents' loss_positions().
inline void expect_aligned(const Batch& b, const std::vector<std::vector<Document>>& rows) {
  const int64_t T = b.student.length(), Tt = b.teacher.length();
  const at::Tensor sid = b.student.input_ids.flatten(), tid = b.teacher.input_ids.flatten();
  const at::Tensor sdoc = b.student.document_ids.flatten();
  const at::Tensor tdoc = b.teacher.document_ids.flatten();
  const at::Tensor kinds = b.kinds.flatten();
  const int64_t N = b.loss_positions();
  ASSERT_EQ(b.loss_index.numel(), N);
  ASSERT_EQ(b.teacher_loss_index.numel(), N);
  int64_t expected = 0;
  for (const auto& row : rows) {
    for (const Document& d : row) expected += d.loss_positions();
  }
  EXPECT_EQ(N, expected);
  EXPECT_EQ(b.stats.loss_positions, N);
  int64_t prev_s = -1, prev_t = -1;
  for (int64_t k = 0; k < N; ++k) {
    const int64_t s = b.loss_index[k].item<int64_t>();
    const int64_t t = b.teacher_loss_index[k].item<int64_t>();
    const int64_t target = b.targets[k].item<int64_t>();
    ASSERT_EQ(s / T, t / Tt) << "pair " << k << " in different rows";
    ASSERT_LT(s % T + 1, T) << "pair " << k;
    ASSERT_LT(t % Tt + 1, Tt) << "pair " << k;
    EXPECT_GT(s, prev_s) << "pair " << k << ": student positions not increasing";
    if (k > 0 && s / T == prev_s / T) {
      EXPECT_GT(t, prev_t) << "pair " << k;
    }
    prev_s = s;
    prev_t = t;
    EXPECT_EQ(kinds[s + 1].item<int8_t>(), kTextToken) << "pair " << k;
    EXPECT_EQ(sid[s + 1].item<int64_t>(), target) << "pair " << k;
    EXPECT_EQ(tid[t + 1].item<int64_t>(), target) << "pair " << k;
    EXPECT_EQ(sdoc[s].item<int64_t>(), sdoc[s + 1].item<int64_t>()) << "pair " << k;
    EXPECT_EQ(tdoc[t].item<int64_t>(), tdoc[t + 1].item<int64_t>()) << "pair " << k;
    EXPECT_EQ(sdoc[s].item<int64_t>(), tdoc[t].item<int64_t>()) << "pair " << k;
    EXPECT_GE(sdoc[s].item<int64_t>(), 0) << "pair " << k;
  }
  // Completeness: every student position followed by a text token of its own document is a
  // loss position.
  std::vector<int64_t> all;
  for (int64_t p = 0; p < kinds.numel(); ++p) {
    if (p % T + 1 < T && kinds[p + 1].item<int8_t>() == kTextToken &&
        sdoc[p].item<int64_t>() >= 0 && sdoc[p].item<int64_t>() == sdoc[p + 1].item<int64_t>()) {
      all.push_back(p);
    }
  }
  const at::Tensor index = b.loss_index.contiguous();
  EXPECT_EQ(std::vector<int64_t>(index.data_ptr<int64_t>(), index.data_ptr<int64_t>() + N), all);
}

}  // namespace salad::data::test_util
