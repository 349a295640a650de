// Packing documents into batches: every tensor of a hand-computed multi-document multi-row batch,
// the alignment invariant on mixed interleaved/chained/text documents, and RowPacker's greedy
// row filling.
#include "salad/data/packing.h"

#include <ATen/ATen.h>

#include <random>
#include <string>
#include <vector>

#include "data_pipeline/document_test_util.h"
#include "salad/core/error.h"
#include "test_util.h"

namespace salad::data {
namespace {

using test_util::document;
using test_util::frame_features;
using test_util::speech_segment;
using test_util::text_segment;

at::Tensor longs(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }

void expect_eq(const at::Tensor& actual, const at::Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << what;
  EXPECT_TRUE(at::equal(actual, expected)) << what << ":\n" << actual << "\nexpected\n" << expected;
}

// Row 0: A = text [1 2 3] + speech (2 frames, tokens [4 5]) + text [6];
//        B = speech (3 frames, tokens [7]) + text [8 9].
// Row 1: C = text [10 11]. Row 2: empty.
std::vector<std::vector<Document>> three_rows() {
  std::vector<std::vector<Document>> rows(3);
  rows[0].push_back(
      document("ls/A", "ls",
               {text_segment({1, 2, 3}), speech_segment({4, 5}, 2, 3, 100), text_segment({6})}));
  rows[0].push_back(
      document("vox/B", "vox", {speech_segment({7}, 3, 3, 200), text_segment({8, 9})}));
  rows[1].push_back(document("books/C", "books", {text_segment({10, 11})}));
  return rows;
}

TEST(PackingTest, MultiDocumentMultiRowBatchByHand) {
  const auto rows = three_rows();
  PackOptions o;
  o.context = 20;
  const Batch b = make_batch(rows, o);

  // Student: row 0 = A (8 positions) + B (7); T = 15.
  const std::vector<int64_t> pad(13, 0), pad_all(15, 0), minus(13, -1), minus_all(15, -1);
  auto row = [](std::vector<int64_t> head, const std::vector<int64_t>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  expect_eq(
      b.student.input_ids,
      longs(row(row({1, 2, 3, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 8, 9}, row({10, 11}, pad)), pad_all))
          .view({3, 15}),
      "student.input_ids");
  expect_eq(
      b.kinds,
      longs(row(row({1, 1, 1, 3, 2, 2, 4, 1, 3, 2, 2, 2, 4, 1, 1}, row({1, 1}, pad)), pad_all))
          .view({3, 15})
          .to(at::kChar),
      "kinds");
  expect_eq(
      b.student.position_ids,
      longs(row(row({0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6}, row({0, 1}, pad)), pad_all))
          .view({3, 15}),
      "student.position_ids");
  expect_eq(
      b.student.document_ids,
      longs(row(row({0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1}, row({0, 0}, minus)), minus_all))
          .view({3, 15}),
      "student.document_ids");
  expect_eq(b.student.attention_mask,
            longs(row(row(std::vector<int64_t>(15, 1), row({1, 1}, pad)), pad_all)).view({3, 15}),
            "student.attention_mask");

  // Teacher: row 0 = A's 6 tokens + B's 3; Tt = 9.
  const std::vector<int64_t> tpad(7, 0), tpad_all(9, 0), tminus(7, -1), tminus_all(9, -1);
  expect_eq(
      b.teacher.input_ids,
      longs(row(row({1, 2, 3, 4, 5, 6, 7, 8, 9}, row({10, 11}, tpad)), tpad_all)).view({3, 9}),
      "teacher.input_ids");
  expect_eq(b.teacher.position_ids,
            longs(row(row({0, 1, 2, 3, 4, 5, 0, 1, 2}, row({0, 1}, tpad)), tpad_all)).view({3, 9}),
            "teacher.position_ids");
  expect_eq(
      b.teacher.document_ids,
      longs(row(row({0, 0, 0, 0, 0, 0, 1, 1, 1}, row({0, 0}, tminus)), tminus_all)).view({3, 9}),
      "teacher.document_ids");
  expect_eq(b.teacher.attention_mask,
            longs(row(row(std::vector<int64_t>(9, 1), row({1, 1}, tpad)), tpad_all)).view({3, 9}),
            "teacher.attention_mask");

  // Loss pairs: 2 <- (0, 0), 3 <- (1, 1), 6 <- (speech_end 6, teacher 4), 8 <- (12, 6),
  // 9 <- (13, 7), 11 <- (15 + 0, 9 + 0).
  expect_eq(b.loss_index, longs({0, 1, 6, 12, 13, 15}), "loss_index");
  expect_eq(b.teacher_loss_index, longs({0, 1, 4, 6, 7, 9}), "teacher_loss_index");
  expect_eq(b.targets, longs({2, 3, 6, 8, 9, 11}), "targets");
  test_util::expect_aligned(b, rows);

  // Speech: two segments, padded to 3 frames; slots at the kSpeechFrame positions.
  expect_eq(b.speech.lengths, longs({2, 3}), "speech.lengths");
  expect_eq(b.speech.slots, longs({4, 5, 9, 10, 11}), "speech.slots");
  ASSERT_EQ(b.speech.features.sizes(), (std::vector<int64_t>{2, 3, 3}));
  EXPECT_EQ(b.speech.features.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(b.speech.features[0].narrow(0, 0, 2), rows[0][0].segments[1].features));
  EXPECT_TRUE(at::equal(b.speech.features[0][2], at::zeros({3})));
  EXPECT_TRUE(at::equal(b.speech.features[1], rows[0][1].segments[0].features));
  // Frame values at the slots: segment s, frame k is base_s + k.
  const at::Tensor kinds = b.kinds.flatten();
  const std::vector<float> frame_value = {100, 101, 200, 201, 202};
  int64_t j = 0;
  for (int64_t s = 0; s < b.speech.segments(); ++s) {
    for (int64_t k = 0; k < b.speech.lengths[s].item<int64_t>(); ++k, ++j) {
      EXPECT_EQ(kinds[b.speech.slots[j].item<int64_t>()].item<int8_t>(), kSpeechFrame);
      EXPECT_FLOAT_EQ(b.speech.features[s][k][0].item<float>(), frame_value[j]);
    }
  }

  // Stats and names.
  EXPECT_EQ(b.stats.documents, 3);
  EXPECT_EQ(b.stats.text_tokens, 8);
  EXPECT_EQ(b.stats.speech_frames, 5);
  EXPECT_EQ(b.stats.markers, 4);
  EXPECT_EQ(b.stats.padding, 3 * 15 - 17);
  EXPECT_EQ(b.stats.loss_positions, 6);
  EXPECT_EQ(b.stats.documents_by_source,
            (std::map<std::string, int64_t>{{"books", 1}, {"ls", 1}, {"vox", 1}}));
  EXPECT_EQ(b.document_names, (std::vector<std::string>{"ls/A", "vox/B", "books/C"}));
  EXPECT_EQ(b.stats.text_tokens, b.kinds.eq(kTextToken).sum().item<int64_t>());
  EXPECT_EQ(b.stats.padding, (b.student.attention_mask == 0).sum().item<int64_t>());
}

TEST(PackingTest, PadToContextAndCodes) {
  auto rows = three_rows();
  for (auto& r : rows) {
    for (auto& d : r) {
      for (auto& s : d.segments) {
        if (s.features.defined()) s.features = s.features.to(at::kLong);  // codes [F, n_q]
      }
    }
  }
  PackOptions o;
  o.context = 20;
  o.pad_to_context = true;
  o.codes = true;
  const Batch b = make_batch(rows, o);
  EXPECT_EQ(b.student.input_ids.sizes(), (std::vector<int64_t>{3, 20}));
  EXPECT_EQ(b.kinds.sizes(), (std::vector<int64_t>{3, 20}));
  EXPECT_EQ(b.teacher.input_ids.sizes(), (std::vector<int64_t>{3, 20}));  // Tt = context too
  EXPECT_EQ(b.teacher.attention_mask.sum().item<int64_t>(), 11);
  EXPECT_EQ(b.speech.features.scalar_type(), at::kLong);
  EXPECT_EQ(b.speech.features[1][2][0].item<int64_t>(), 202);
  expect_eq(b.loss_index, longs({0, 1, 6, 12, 13, 20}), "loss_index");
  expect_eq(b.teacher_loss_index, longs({0, 1, 4, 6, 7, 20}), "teacher_loss_index");
  EXPECT_EQ(b.stats.padding, 3 * 20 - 17);
  test_util::expect_aligned(b, rows);
}

TEST(PackingTest, TextOnlyAndEmptyBatches) {
  PackOptions o;
  o.context = 8;
  o.feature_dim = 5;
  const std::vector<std::vector<Document>> rows = {
      {document("t/1", "t", {text_segment({3, 4, 5})})},
      {document("t/2", "t", {text_segment({6})}), document("t/3", "t", {text_segment({7, 8})})}};
  const Batch b = make_batch(rows, o);
  EXPECT_EQ(b.speech.features.sizes(), (std::vector<int64_t>{0, 0, 5}));
  EXPECT_EQ(b.speech.features.scalar_type(), at::kFloat);
  EXPECT_EQ(b.speech.lengths.sizes(), (std::vector<int64_t>{0}));
  EXPECT_EQ(b.speech.slots.sizes(), (std::vector<int64_t>{0}));
  EXPECT_EQ(b.speech.segments(), 0);
  EXPECT_EQ(b.student.length(), 3);
  EXPECT_EQ(b.teacher.length(), 3);
  // Text-only: student and teacher rows coincide; "6" starts its document and is no target.
  expect_eq(b.student.input_ids, b.teacher.input_ids, "input_ids");
  expect_eq(b.student.position_ids, longs({0, 1, 2, 0, 0, 1}).view({2, 3}), "position_ids");
  expect_eq(b.loss_index, longs({0, 1, 4}), "loss_index");
  expect_eq(b.targets, longs({4, 5, 8}), "targets");
  expect_eq(b.loss_index, b.teacher_loss_index, "teacher_loss_index");
  EXPECT_EQ(b.stats.documents_by_source.at("t"), 3);
  test_util::expect_aligned(b, rows);

  o.codes = true;
  const Batch e = make_batch({{}, {}}, o);
  EXPECT_EQ(e.student.input_ids.sizes(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(e.teacher.input_ids.sizes(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(e.student.attention_mask.sum().item<int64_t>(), 0);
  EXPECT_EQ(e.speech.features.sizes(), (std::vector<int64_t>{0, 0, 5}));
  EXPECT_EQ(e.speech.features.scalar_type(), at::kLong);
  EXPECT_EQ(e.loss_positions(), 0);
  EXPECT_EQ(e.stats.documents, 0);
  EXPECT_EQ(e.stats.padding, 2);
}

TEST(PackingTest, RowsThatDoNotFitAreDataErrors) {
  PackOptions o;
  o.context = 10;
  test::expect_error<DataError>(
      [&] {
        make_batch({{document("x/ok", "x", {text_segment({1, 2})})},
                    {document("x/a", "x", {text_segment({1, 2, 3, 4, 5, 6})}),
                     document("x/b", "x", {text_segment({1, 2, 3, 4, 5})})}},
                   o);
      },
      {"row 1", "11 positions", "context (10)", "x/a", "x/b"});
  test::expect_error<DataError>(
      [&] { make_batch({{document("x/long", "x", {speech_segment({1}, 9, 2, 0)})}}, o); },
      {"row 0", "x/long", "11 positions"});
  o.feature_dim = 4;
  test::expect_error<DataError>(
      [&] { make_batch({{document("x/w", "x", {speech_segment({1}, 2, 3, 0)})}}, o); },
      {"x/w", "width 3", "expected 4"});
}

TEST(PackingTest, TeacherRowsAreBoundedByTheContext) {
  PackOptions o;
  o.context = 10;
  // 3 student positions, 6 teacher positions each.
  auto dense = [](const std::string& name) {
    return document(name, "x", {speech_segment({1, 2, 3, 4, 5, 6}, 1, 2, 0)});
  };
  test::expect_error<DataError>(
      [&] {
        make_batch({{dense("x/a"), dense("x/b")}}, o);
      },
      {"row 0", "6 positions", "12 teacher positions", "context (10)", "x/a", "x/b"});
  test::expect_error<DataError>(
      [&] {
        make_batch(
            {{document("x/long", "x", {speech_segment(std::vector<int64_t>(11, 1), 1, 2, 0)})}}, o);
      },
      {"row 0", "x/long", "11 teacher positions", "split_to_context"});
  o.pad_to_context = true;
  const Batch b = make_batch({{dense("x/a")}, {dense("x/b")}}, o);
  EXPECT_EQ(b.student.input_ids.sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(b.teacher.input_ids.sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(b.teacher.attention_mask.sum().item<int64_t>(), 12);
}

TEST(PackingTest, FeatureDtypeMustMatchCodes) {
  PackOptions o;
  o.context = 10;
  o.codes = true;  // float features would be truncated into the int64 codes tensor
  test::expect_error<DataError>(
      [&] { make_batch({{document("x/f", "x", {speech_segment({1}, 2, 3, 0.5f)})}}, o); },
      {"x/f", "dtype Float", "integer codes"});
  o.codes = false;
  Segment codes = speech_segment({1}, 2, 3, 0);
  codes.features = codes.features.to(at::kLong);
  test::expect_error<DataError>([&] { make_batch({{document("x/c", "x", {codes})}}, o); },
                                {"x/c", "dtype Long", "floating point"});
  Segment half = speech_segment({1}, 2, 3, 0);
  half.features = half.features.to(at::kDouble);
  EXPECT_EQ(make_batch({{document("x/d", "x", {half})}}, o).speech.features.scalar_type(),
            at::kFloat);
}

// Mixed documents from the interleaver, the chainer and text replay, packed by RowPacker into
// several rows: the alignment invariant holds everywhere and frames land at their slots.
TEST(PackingTest, PackedInterleavedDocumentsStayAligned) {
  using test_util::WordTokenizer;
  const WordTokenizer tok = WordTokenizer::numbered(100);
  std::vector<std::string> words;
  for (int i = 0; i < 100; ++i) words.push_back("w" + std::to_string(i));
  InterleaveOptions io;
  io.text_words_min = 3;
  io.text_words_max = 8;
  io.speech_words_min = 2;
  io.speech_words_max = 5;
  std::vector<Document> docs;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    std::vector<std::string> w(words.begin() + seed * 7, words.begin() + seed * 7 + 20 + seed);
    const Utterance u = test_util::timed_utterance(w, 0.4, 0.3, "u" + std::to_string(seed));
    std::mt19937_64 rng(seed);
    docs.push_back(
        interleave_utterance(u, frame_features(test_util::frames_for(u), 4), tok, io, rng));
  }
  Utterance a, c;
  a.id = "a";
  a.text = "w1 w2 w3";
  c.id = "c";
  c.text = "w4 w5";
  std::mt19937_64 rng(9);
  docs.push_back(
      chain_utterances({&a, &c}, {frame_features(5, 4), frame_features(2, 4)}, tok, io, rng));
  docs.push_back(text_document("t/1", "t", "w7 w8 w9 w10", tok));

  const int64_t context = 80;
  RowPacker packer(context, 100);
  for (Document& d : docs) {
    for (Document& part : split_to_context(std::move(d), context)) packer.add(std::move(part));
  }
  const auto rows = packer.flush();
  ASSERT_GE(rows.size(), 2u);
  PackOptions o;
  o.context = context;
  const Batch b = make_batch(rows, o);
  test_util::expect_aligned(b, rows);
  EXPECT_EQ(b.speech.slots.numel(), b.kinds.eq(kSpeechFrame).sum().item<int64_t>());
  EXPECT_EQ(b.stats.markers, b.kinds.eq(kSpeechStart).sum().item<int64_t>() * 2);
  EXPECT_EQ(b.stats.markers, 2 * b.speech.segments());
  // Every segment's frames, in order, at its slots; each slot run is wrapped in the markers.
  const at::Tensor kinds = b.kinds.flatten();
  int64_t j = 0, s = 0;
  for (const auto& row : rows) {
    for (const Document& d : row) {
      for (const Segment& seg : d.segments) {
        if (seg.modality != Modality::kSpeech) continue;
        const int64_t n = seg.features.size(0);
        ASSERT_EQ(b.speech.lengths[s].item<int64_t>(), n);
        EXPECT_TRUE(at::equal(b.speech.features[s].narrow(0, 0, n), seg.features));
        const int64_t first = b.speech.slots[j].item<int64_t>();
        EXPECT_EQ(kinds[first - 1].item<int8_t>(), kSpeechStart);
        for (int64_t k = 0; k < n; ++k) {
          EXPECT_EQ(b.speech.slots[j + k].item<int64_t>(), first + k);
        }
        EXPECT_EQ(kinds[first + n].item<int8_t>(), kSpeechEnd);
        j += n;
        ++s;
      }
    }
  }
  EXPECT_EQ(s, b.speech.segments());
}

// ---- RowPacker ----------------------------------------------------------------------------

Document of_length(int64_t n, const std::string& name) {
  std::vector<int64_t> tokens(n, 1);
  return document(name, "x", {text_segment(tokens)});
}

std::vector<std::vector<std::string>> names(const std::vector<std::vector<Document>>& rows) {
  std::vector<std::vector<std::string>> out;
  for (const auto& r : rows) {
    out.emplace_back();
    for (const Document& d : r) out.back().push_back(d.name);
  }
  return out;
}

TEST(RowPackerTest, GreedyInOrderRowFilling) {
  RowPacker p(10, 2);
  EXPECT_EQ(p.closed_rows(), 0);
  EXPECT_FALSE(p.ready());
  EXPECT_TRUE(p.fits(of_length(10, "any")));
  p.add(of_length(4, "a"));
  EXPECT_TRUE(p.fits(of_length(6, "six")));
  EXPECT_FALSE(p.fits(of_length(7, "seven")));
  p.add(of_length(5, "b"));  // row [a b] = 9
  EXPECT_EQ(p.closed_rows(), 0);
  p.add(of_length(3, "c"));  // does not fit: closes [a b]
  EXPECT_EQ(p.closed_rows(), 1);
  EXPECT_FALSE(p.ready());
  p.add(of_length(8, "d"));  // closes [c]
  EXPECT_TRUE(p.ready());
  EXPECT_EQ(names(p.take()), (std::vector<std::vector<std::string>>{{"a", "b"}, {"c"}}));
  EXPECT_FALSE(p.ready());
  EXPECT_EQ(p.closed_rows(), 0);
  p.add(of_length(2, "e"));   // [d e] = 10
  p.add(of_length(0, "f"));   // an empty document still fits a full row
  p.add(of_length(10, "g"));  // closes [d e f]
  p.add(of_length(1, "h"));   // closes [g]
  EXPECT_TRUE(p.ready());
  EXPECT_THROW(p.add(of_length(11, "too long")), DataError);
  EXPECT_EQ(names(p.take()), (std::vector<std::vector<std::string>>{{"d", "e", "f"}, {"g"}}));
  EXPECT_THROW(p.take(), std::logic_error);
  EXPECT_EQ(names(p.flush()), (std::vector<std::vector<std::string>>{{"h"}}));
  EXPECT_TRUE(p.flush().empty());
  EXPECT_EQ(p.closed_rows(), 0);
  p.add(of_length(9, "i"));
  EXPECT_EQ(names(p.flush()), (std::vector<std::vector<std::string>>{{"i"}}));

  EXPECT_THROW(RowPacker(0, 1), ConfigError);
  EXPECT_THROW(RowPacker(8, 0), ConfigError);
}

TEST(RowPackerTest, RowsAreBoundedOnTheTeacherSideToo) {
  // 3 student positions and 6 teacher positions each: two fit a student row of 10, not a teacher
  // row.
  auto dense = [](const std::string& name) {
    return document(name, "x", {speech_segment({1, 2, 3, 4, 5, 6}, 1, 2, 0)});
  };
  RowPacker p(10, 1);
  p.add(dense("a"));
  EXPECT_FALSE(p.fits(dense("b")));
  EXPECT_TRUE(p.fits(of_length(4, "four")));
  EXPECT_FALSE(p.fits(of_length(5, "five")));  // student 8 fits, teacher 11 does not
  p.add(dense("b"));
  EXPECT_TRUE(p.ready());
  EXPECT_EQ(names(p.take()), (std::vector<std::vector<std::string>>{{"a"}}));
  p.add(of_length(4, "c"));  // [b c]: student 7, teacher 10
  EXPECT_FALSE(p.ready());
  test::expect_error<DataError>(
      [&] {
        p.add(document("x/long", "x", {speech_segment(std::vector<int64_t>(11, 1), 1, 2, 0)}));
      },
      {"x/long", "11 teacher positions", "context (10)"});
  EXPECT_EQ(names(p.flush()), (std::vector<std::vector<std::string>>{{"b", "c"}}));
  // After flush() the open row is empty again on both sides.
  p.add(dense("d"));
  EXPECT_TRUE(p.fits(of_length(4, "e")));
}

}  // namespace
}  // namespace salad::data
