// salad-perplexity and salad-tokenize as a user runs them.
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "test_util.h"

namespace salad {
namespace {

using test::run;
using test::TempDir;

const std::string kPerplexity = SALAD_PERPLEXITY_EXE;
const std::string kTokenize = SALAD_TOKENIZE_EXE;

std::filesystem::path qwen_tokenizer() {
  const auto p = std::filesystem::path(SALAD_ASSETS_DIR) / "qwen-tokenizer/tokenizer.json";
  if (!std::filesystem::exists(p)) {
    ADD_FAILURE() << p << " is missing: run scripts/fetch_assets.sh (scripts/setup.sh does)";
  }
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
