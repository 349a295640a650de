// salad-eval's benchmark list and checkpoint lookup (the scoring itself: benchmark_test.cpp; the
// whole app: apps/train_app_test.cpp).
#include <gtest/gtest.h>

#include "salad/core/error.h"
#include "salad/eval/evaluate.h"
#include "test_util.h"

namespace salad::eval {
namespace {

TEST(EvalSpec, ReadsBenchmarksAndHeldoutWithPathsRelativeToTheFile) {
  test::TempDir d;
  test::write_text(d.path() / "e.yaml",
                   "shots: 3\nseed: 9\nbenchmarks:\n"
                   "  - {name: a, path: a.jsonl, fewshot: a_train.jsonl, shots: 0}\n"
                   "  - {name: b, path: /abs/b.jsonl}\n"
                   "heldout:\n  - {name: dev, kind: speech, path: dev.jsonl}\n");
  const EvalSpec s = read_eval_spec(d.path() / "e.yaml");
  EXPECT_EQ(s.shots, 3);
  EXPECT_EQ(s.seed, 9u);
  ASSERT_EQ(s.benchmarks.size(), 2u);
  EXPECT_EQ(s.benchmarks[0].path, d.path() / "a.jsonl");
  EXPECT_EQ(s.benchmarks[0].fewshot, d.path() / "a_train.jsonl");
  EXPECT_EQ(s.benchmarks[0].shots, 0);
  EXPECT_EQ(s.benchmarks[1].path, std::filesystem::path("/abs/b.jsonl"));
  EXPECT_EQ(s.benchmarks[1].shots, -1);
  ASSERT_EQ(s.heldout.size(), 1u);
  EXPECT_EQ(s.heldout[0].path, d.path() / "dev.jsonl");
}

TEST(EvalSpec, ErrorsNameTheFileLineAndKey) {
  test::TempDir d;
  auto error_of = [&](const std::string& yaml) -> std::string {
    test::write_text(d.path() / "e.yaml", yaml);
    try {
      read_eval_spec(d.path() / "e.yaml");
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of("shots: 1\nbenchmark: []\n").find("e.yaml:2: unknown key 'benchmark'"),
            std::string::npos);
  EXPECT_NE(error_of("benchmarks:\n  - {name: a}\n").find("needs 'name' and 'path'"),
            std::string::npos);
  EXPECT_NE(error_of("benchmarks:\n  - {name: a, path: x}\n  - {name: a, path: y}\n")
                .find("'a' is used twice"),
            std::string::npos);
  EXPECT_NE(error_of("benchmarks:\n  - {name: a, path: x, shot: 2}\n")
                .find("unknown key 'benchmarks[].shot'"),
            std::string::npos);
  EXPECT_NE(error_of("shots: 1\n").find("nothing to evaluate"), std::string::npos);
  EXPECT_NE(error_of("shots: many\nbenchmarks:\n  - {name: a, path: x}\n").find("'shots'"),
            std::string::npos);
  EXPECT_THROW(read_eval_spec(d.path() / "missing.yaml"), IoError);
}

TEST(EvalCheckpoint, FolderOrRunFolderElseClearError) {
  test::TempDir d;
  test::write_text(d.path() / "ck/model.safetensors", "x");
  test::write_text(d.path() / "ck/config.resolved.yaml", "x");
  EXPECT_EQ(resolve_checkpoint(d.path() / "ck"), d.path() / "ck");
  try {
    resolve_checkpoint(d.path() / "none");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("none"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace salad::eval
