#include "salad/core/config.h"

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::config {
namespace {

using test::expect_error;
using test::TempDir;
using test::write_text;

TEST(ConfigTest, DefaultsAndAMinimalRecipe) {
  TempDir d;
  write_text(d / "r.yaml", "run:\n  dir: out\n");
  const SaladConfig c = load(d / "r.yaml");
  EXPECT_EQ(c.run.dir, d.path() / "out");  // relative to the recipe's folder
  EXPECT_EQ(c.train.steps, SaladConfig{}.train.steps);
  EXPECT_EQ(c.adapter.hidden_size, 960);
  EXPECT_DOUBLE_EQ(c.loss.alpha, 1.0);
}

TEST(ConfigTest, IncludesApplyFirstAndPathsFollowTheirFile) {
  TempDir d;
  write_text(d / "base/base.yaml",
             "run:\n  dir: runs/base\n  seed: 7\ntrain:\n  steps: 10\n  log_every: 3\n"
             "model:\n  tokenizer: tok.model\n");
  write_text(d / "mid.yaml", "include: base/base.yaml\ntrain:\n  steps: 20\n");
  write_text(d / "top.yaml",
             "include: [mid.yaml]\nloss:\n  alpha: 0.25\ndata:\n  train:\n"
             "    - {name: ls, path: data/ls.jsonl, weight: 2}\n"
             "    - {name: replay, kind: text, path: /abs/t.txt}\n");
  const SaladConfig c = load(d / "top.yaml", {"train.log_every=5", "run.seed=9"});
  EXPECT_EQ(c.run.dir, d.path() / "base/runs/base");
  EXPECT_EQ(c.model.tokenizer, d.path() / "base/tok.model");
  EXPECT_EQ(c.train.steps, 20);     // mid overrides base
  EXPECT_EQ(c.train.log_every, 5);  // --set overrides files
  EXPECT_EQ(c.run.seed, 9);
  EXPECT_DOUBLE_EQ(c.loss.alpha, 0.25);
  ASSERT_EQ(c.data.train.size(), 2u);
  EXPECT_EQ(c.data.train[0].path, d.path() / "data/ls.jsonl");
  EXPECT_DOUBLE_EQ(c.data.train[0].weight, 2.0);
  EXPECT_EQ(c.data.train[1].kind, "text");
  EXPECT_EQ(c.data.train[1].path, fs::path("/abs/t.txt"));
}

TEST(ConfigTest, SetTakesYamlValuesAndWholeLists) {
  TempDir d;
  write_text(d / "r.yaml", "run: {dir: o}\ndata:\n  train: [{name: a, path: a.jsonl}]\n");
  const SaladConfig c =
      load(d / "r.yaml", {"data.train=[{name: b, path: /b.jsonl}, {name: c, path: /c}]",
                          "train.activation_checkpointing=yes", "optim.lr_llm=1e-6"});
  ASSERT_EQ(c.data.train.size(), 2u);
  EXPECT_EQ(c.data.train[0].name, "b");
  EXPECT_TRUE(c.train.activation_checkpointing);
  EXPECT_DOUBLE_EQ(c.optim.lr_llm, 1e-6);
}

TEST(ConfigTest, UnknownKeysAreAllReportedWithFileLineColumn) {
  TempDir d;
  write_text(d / "inc.yaml", "run:\n  dir: x\n  sed: 3\n");
  write_text(d / "r.yaml",
             "include: inc.yaml\ntrain:\n  stepz: 10\n  steps: 4\nmodle:\n  llm: x\nloss:\n"
             "  alpha: 0.5\n  beta: 2\n");
  const std::string r = fs::weakly_canonical(d / "r.yaml").string();
  const std::string inc = fs::weakly_canonical(d / "inc.yaml").string();
  expect_error<ConfigError>(
      [&] { load(d / "r.yaml", {"train.nope=1"}); },
      {"5 problems", inc + ":3:3: unknown key 'run.sed' (did you mean 'run.seed'?)",
       r + ":3:3: unknown key 'train.stepz' (did you mean 'train.steps'?)",
       r + ":5:1: unknown key 'modle' (did you mean 'model'?)", r + ":9:3: unknown key 'loss.beta'",
       "--set train.nope=1: unknown key 'train.nope'"});
}

TEST(ConfigTest, TypeErrorsNameKeyExpectedAndFound) {
  TempDir d;
  write_text(d / "r.yaml",
             "run:\n  dir: o\ntrain:\n  steps: many\n  tokens_per_step: 1.5\n"
             "  activation_checkpointing: maybe\nloss:\n  alpha: [1]\nrun2: 1\n");
  const std::string r = fs::weakly_canonical(d / "r.yaml").string();
  expect_error<ConfigError>(
      [&] { load(d / "r.yaml"); },
      {r + ":4:10: key 'train.steps': expected an integer, found 'many'",
       r + ":5:20: key 'train.tokens_per_step': expected an integer, found '1.5'",
       "key 'train.activation_checkpointing': expected a boolean, found 'maybe'",
       r + ":8:10: key 'loss.alpha': expected a number, found a list", "unknown key 'run2'"});
}

TEST(ConfigTest, ChoicesListTheAllowedValues) {
  TempDir d;
  write_text(d / "r.yaml", "run: {dir: o, stage: 3}\n");
  expect_error<ConfigError>([&] { load(d / "r.yaml"); },
                            {"key 'run.stage': expected one of text | 1 | 2, found '3'"});
}

TEST(ConfigTest, MissingRequiredKeysAreAllListed) {
  TempDir d;
  write_text(d / "r.yaml", "data:\n  train:\n    - {name: a}\n    - {path: b}\n");
  expect_error<ConfigError>([&] { load(d / "r.yaml"); },
                            {"3 problems", "missing required key 'run.dir' (path)",
                             "missing required key 'data.train[0].path' (path)",
                             "missing required key 'data.train[1].name' (string)"});
}

TEST(ConfigTest, IncludeCycleIsAnError) {
  TempDir d;
  write_text(d / "a.yaml", "include: b.yaml\nrun: {dir: o}\n");
  write_text(d / "b.yaml", "include: sub/c.yaml\n");
  write_text(d / "sub/c.yaml", "include: ../a.yaml\n");
  expect_error<ConfigError>([&] { load(d / "a.yaml"); },
                            {"include cycle", "a.yaml -> ", "b.yaml -> ", "c.yaml -> "});
}

TEST(ConfigTest, MissingIncludeNamesTheIncludingFile) {
  TempDir d;
  write_text(d / "a.yaml", "include: nothere.yaml\n");
  expect_error<ConfigError>([&] { load(d / "a.yaml"); },
                            {"config file not found", "nothere.yaml", "included by"});
  expect_error<ConfigError>([&] { load(d / "absent.yaml"); }, {"config file not found"});
}

TEST(ConfigTest, MalformedYamlGivesFileLineColumn) {
  TempDir d;
  write_text(d / "bad.yaml", "run:\n  dir: [unclosed\n  seed: 1\n");
  expect_error<ConfigError>([&] { load(d / "bad.yaml"); }, {"bad.yaml:", "malformed YAML"});
  write_text(d / "list.yaml", "- a\n- b\n");
  expect_error<ConfigError>([&] { load(d / "list.yaml"); },
                            {"list.yaml:1:1: the top level must be a mapping"});
}

TEST(ConfigTest, ValidateReportsEveryBadValue) {
  TempDir d;
  write_text(d / "r.yaml",
             "run: {dir: o}\nloss: {alpha: 1.5}\nadapter: {hidden_size: 100, num_heads: 15}\n"
             "data:\n  train: [{name: a, path: a}, {name: a, path: b}]\n");
  expect_error<ConfigError>([&] { load(d / "r.yaml"); },
                            {"3 problems", "'loss.alpha' must be in [0, 1], found 1.5",
                             "'adapter.num_heads' (15) must divide 'adapter.hidden_size' (100)",
                             "duplicate source name 'a'"});
}

TEST(ConfigTest, BadOverrideSyntax) {
  TempDir d;
  write_text(d / "r.yaml", "run: {dir: o}\n");
  expect_error<ConfigError>([&] { load(d / "r.yaml", {"train.steps"}); },
                            {"--set train.steps: expected key=value"});
  expect_error<ConfigError>([&] { load(d / "r.yaml", {"train..steps=3"}); }, {"malformed key"});
}

TEST(ConfigTest, ResolvedYamlRoundTrips) {
  TempDir d;
  write_text(d / "r.yaml",
             "run: {dir: o, stage: text}\noptim: {lr_adapter: 0.001, eps: 1e-10}\n"
             "data:\n  train: [{name: a, path: a.jsonl, weight: 0.3333333333333333}]\n");
  const SaladConfig c = load(d / "r.yaml");
  write_yaml(c, d / "resolved.yaml");
  const SaladConfig c2 = load(d / "resolved.yaml");
  EXPECT_EQ(to_yaml(c), to_yaml(c2));
  EXPECT_EQ(c2.run.stage, "text");
  EXPECT_EQ(c2.optim.eps, 1e-10);  // exact: shortest round-trip formatting
  EXPECT_EQ(c2.data.train[0].weight, 1.0 / 3.0);
  EXPECT_EQ(c2.data.train[0].path, d.path() / "a.jsonl");
}

TEST(ConfigTest, ApplyOverridesOnALoadedConfig) {
  SaladConfig base;
  base.run.dir = "/r";
  const SaladConfig c = apply_overrides(base, {"train.steps=3"});
  EXPECT_EQ(c.train.steps, 3);
  expect_error<ConfigError>([&] { apply_overrides(base, {"train.steps=-1"}); },
                            {"'train.steps' must be > 0"});
}

TEST(ConfigTest, ReferenceDocumentsEveryKeyAndDocsAreInSync) {
  const std::string md = reference_markdown();
  for (const char* key :
       {"`run.dir` | path | **required**", "`data.train[].weight` | number",
        "`run.stage` | one of text \\| 1 \\| 2 | `1`", "`loss.alpha` | number | `1.0`"}) {
    EXPECT_NE(md.find(key), std::string::npos) << key;
  }
  const std::string doc = test::read_text(fs::path(SALAD_SOURCE_DIR) / "docs/config.md");
  EXPECT_NE(doc.find(md), std::string::npos)
      << "docs/config.md is out of date: regenerate with `salad-train --config-reference`";
}

}  // namespace
}  // namespace salad::config
