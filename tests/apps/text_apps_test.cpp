// salad-perplexity and salad-tokenize as a user runs them.
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/text/sentencepiece_tokenizer.h"
#include "test_util.h"

namespace salad {
namespace {

using test::run;
using test::TempDir;

const std::string kPerplexity = SALAD_PERPLEXITY_EXE;
const std::string kTokenize = SALAD_TOKENIZE_EXE;

std::filesystem::path qwen_tokenizer() {
  const auto p = test::qwen_tokenizer_json();
  if (!std::filesystem::exists(p)) ADD_FAILURE() << test::missing_qwen_tokenizer_message();
  return p;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(PerplexityAppGolden, LogprobsMatchTheReferenceLogits) {
  // The fixture's reference logits give the exact log-probabilities the tool must print.
  for (const char* name : {"qwen2_tiny_tied", "qwen2_tiny_untied"}) {
    TempDir d;
    const auto dir = test::data_dir() / "qwen2" / name;
    const auto cases = safetensors::Checkpoint::open(dir / "cases.safetensors");
    const at::Tensor ids = cases.get("single.input_ids").to(at::kLong)[0];
    const at::Tensor ref = cases.get("single.logits")[0].to(at::kDouble).log_softmax(-1);
    const at::Tensor expected =
        ref.slice(0, 0, -1).gather(1, ids.slice(0, 1).unsqueeze(1)).squeeze(1);
    std::vector<int64_t> v(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    test::write_text(d / "ids.jsonl",
                     nlohmann::json(v).dump() + "\n\n" + nlohmann::json(v).dump() + "\n");
    const auto r =
        run(kPerplexity + " --model " + dir.string() + " --ids " + (d / "ids.jsonl").string() +
            " --dump-logprobs " + (d / "lp.jsonl").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto dumped = lines_of(test::read_text(d / "lp.jsonl"));
    ASSERT_EQ(dumped.size(), 2u) << "one line per sequence; the blank line is not a sequence";
    const auto lp = nlohmann::json::parse(dumped[0])["logprobs"].get<std::vector<double>>();
    EXPECT_TRUE(test::all_close(torch::tensor(lp, torch::kDouble), expected, 1e-4, name));
    const double ppl = std::exp(-expected.mean().item<double>());
    const auto pos = r.output.find("perplexity ");
    ASSERT_NE(pos, std::string::npos) << r.output;
    EXPECT_NEAR(std::stod(r.output.substr(pos + 11)), ppl, 1e-3 * ppl) << r.output;
    EXPECT_NE(
        r.output.find("over " + std::to_string(2 * (v.size() - 1)) + " tokens in 2 sequences"),
        std::string::npos)
        << r.output;
  }
}

TEST(PerplexityAppTest, TextModeScoresTheTokenizedWindows) {
  // A SentencePiece model small enough for the fixture's 320-token vocabulary: --text must give
  // exactly what --ids gives for the same tokens cut into the same windows.
  TempDir d;
  std::string corpus;
  for (int i = 0; i < 200; ++i) {
    corpus += "the quick brown fox " + std::to_string(i % 17) + " jumps over the lazy dog number " +
              std::to_string(i % 5) + "\n";
  }
  test::write_text(d / "corpus.txt", corpus);
  text::SentencePieceTrainOptions o;
  o.vocab_size = 300;  // 260 reserved (specials and byte fallback) + 40 learned pieces
  text::train_sentencepiece(d / "corpus.txt", d / "spm", o);
  const auto tok = text::SentencePieceTokenizer::load(d / "spm.model");
  const std::string sample = "the lazy dog jumps over the quick brown fox number 3 and 12";
  test::write_text(d / "sample.txt", sample);
  const auto ids = tok->encode(sample);
  ASSERT_GT(ids.size(), 10u);
  const size_t window = 8;
  std::string lines;
  for (size_t s = 0; s < ids.size(); s += window) {
    std::vector<int64_t> w(ids.begin() + s, ids.begin() + std::min(ids.size(), s + window));
    lines += nlohmann::json(w).dump() + "\n";
  }
  test::write_text(d / "ids.jsonl", lines);
  const auto model = (test::data_dir() / "qwen2/qwen2_tiny_tied").string();
  const auto a = run(kPerplexity + " --model " + model + " --tokenizer " +
                     (d / "spm.model").string() + " --text " + (d / "sample.txt").string() +
                     " --context 8 --dump-logprobs " + (d / "a.jsonl").string());
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const auto b = run(kPerplexity + " --model " + model + " --ids " + (d / "ids.jsonl").string() +
                     " --dump-logprobs " + (d / "b.jsonl").string());
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_EQ(test::read_text(d / "a.jsonl"), test::read_text(d / "b.jsonl"));
  // The Qwen tokenizer's ids do not fit this model: a clear error, not a crash.
  const auto c = run(kPerplexity + " --model " + model + " --tokenizer " +
                     qwen_tokenizer().string() + " --text " + (d / "sample.txt").string());
  EXPECT_EQ(c.exit_code, kExitData) << c.output;
  EXPECT_NE(c.output.find("outside the model's vocabulary [0, 320)"), std::string::npos)
      << c.output;
}

TEST(PerplexityAppTest, BadIdsAreDataErrors) {
  TempDir d;
  const auto dir = test::data_dir() / "qwen2/qwen2_tiny_tied";
  test::write_text(d / "ids.jsonl", "[1, 2, 3]\n[1, 99999]\n");
  auto r = run(kPerplexity + " --model " + dir.string() + " --ids " + (d / "ids.jsonl").string());
  EXPECT_EQ(r.exit_code, kExitData) << r.output;
  EXPECT_NE(r.output.find("ids.jsonl:2: id 99999 is outside the vocabulary [0, 320)"),
            std::string::npos)
      << r.output;
  test::write_text(d / "ids.jsonl", "[1, \"a\"]\n");
  r = run(kPerplexity + " --model " + dir.string() + " --ids " + (d / "ids.jsonl").string());
  EXPECT_EQ(r.exit_code, kExitData) << r.output;
  EXPECT_NE(r.output.find("ids.jsonl:1: expected a JSON array of integer ids"), std::string::npos)
      << r.output;
  r = run(kPerplexity + " --model " + (d / "nothing").string() + " --ids " +
          (d / "ids.jsonl").string());
  EXPECT_EQ(r.exit_code, kExitIo) << r.output;
}

TEST(TokenizeAppTest, EncodesLinesAndJsonlAndDecodesBack) {
  TempDir d;
  const auto tok = qwen_tokenizer();
  test::write_text(d / "in.txt", "The quick brown fox jumps over the lazy dog.\nHello, world!\n");
  auto r = run(kTokenize + " --tokenizer " + tok.string() + " < " + (d / "in.txt").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto lines = lines_of(r.output);
  ASSERT_EQ(lines.size(), 2u) << r.output;
  // Line 0 of the tokenizer fixture (tests/data/tokenizer/corpus.ids.jsonl).
  EXPECT_EQ(lines[0], "[785,3974,13876,38835,34208,916,279,15678,5562,13]");

  test::write_text(d / "in.jsonl",
                   "\"The quick brown fox jumps over the lazy dog.\"\n{\"id\": 3, \"text\": "
                   "\"Hello, world!\"}\n");
  r = run(kTokenize + " --jsonl -t " + tok.string() + " < " + (d / "in.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(lines_of(r.output), lines);

  test::write_text(d / "ids.txt", lines[0] + "\n" + lines[1] + "\n");
  r = run(kTokenize + " --decode -t " + tok.string() + " < " + (d / "ids.txt").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, test::read_text(d / "in.txt"));
}

TEST(TokenizeAppTest, BadLinesNameTheLine) {
  TempDir d;
  const auto tok = qwen_tokenizer();
  test::write_text(d / "ids.txt", "[1,2]\n[1, 99999999]\n");
  auto r = run(kTokenize + " --decode -t " + tok.string() + " < " + (d / "ids.txt").string());
  EXPECT_EQ(r.exit_code, kExitData) << r.output;
  EXPECT_NE(r.output.find("stdin line 2: "), std::string::npos) << r.output;
  test::write_text(d / "in.jsonl", "{\"txt\": 1}\n");
  r = run(kTokenize + " --jsonl -t " + tok.string() + " < " + (d / "in.jsonl").string());
  EXPECT_EQ(r.exit_code, kExitData) << r.output;
  EXPECT_NE(r.output.find("stdin line 1: expected a JSON string or an object"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace salad
