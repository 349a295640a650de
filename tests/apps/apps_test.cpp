// The apps as a user runs them: exit codes and output.
#include <torch/torch.h>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "test_util.h"

namespace salad {
namespace {

using test::run;
using test::TempDir;

const std::string kTrain = SALAD_TRAIN_EXE;
const std::string kInspect = SALAD_INSPECT_EXE;

TEST(AppsTest, DumpConfigPrintsTheResolvedConfigThatLoadsAgain) {
  TempDir d;
  test::write_text(d / "r.yaml", "run: {dir: out}\ntrain: {steps: 7}\n");
  const auto r =
      run(kTrain + " --config " + (d / "r.yaml").string() + " --set loss.alpha=0.5 --dump-config");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  test::write_text(d / "dumped.yaml", r.output);
  const auto c = config::load(d / "dumped.yaml");
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_DOUBLE_EQ(c.loss.alpha, 0.5);
  EXPECT_EQ(c.run.dir, d.path() / "out");
}

TEST(AppsTest, BadConfigExitsWithTheConfigCodeAndMessage) {
  TempDir d;
  test::write_text(d / "r.yaml", "run: {dir: out}\ntrian: {steps: 7}\n");
  const auto r = run(kTrain + " --config " + (d / "r.yaml").string() + " --dump-config");
  EXPECT_EQ(r.exit_code, kExitConfig) << r.output;
  EXPECT_NE(r.output.find("unknown key 'trian' (did you mean 'train'?)"), std::string::npos)
      << r.output;
  EXPECT_EQ(run(kTrain + " --bogus-flag").exit_code, kExitUsage);
  EXPECT_EQ(run(kTrain).exit_code, kExitUsage);
}

TEST(AppsTest, InspectListsTensorsCountAndMetadata) {
  TempDir d;
  const auto r = run(kInspect + " " + (test::data_dir() / "qwen2/qwen2_tiny_untied").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model.layers.0.self_attn.q_proj.bias"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("BF16"), std::string::npos);
  EXPECT_NE(r.output.find("[352, 96]"), std::string::npos);
  EXPECT_NE(r.output.find("in 2 file(s)"), std::string::npos);

  safetensors::save(d / "m.safetensors", {{"w", torch::ones({2, 3})}}, {{"step", "5"}});
  const auto m = run(kInspect + " " + (d / "m.safetensors").string());
  ASSERT_EQ(m.exit_code, 0) << m.output;
  EXPECT_NE(m.output.find("1 tensors, 6 parameters"), std::string::npos) << m.output;
  EXPECT_NE(m.output.find("step: 5"), std::string::npos) << m.output;
}

TEST(AppsTest, InspectOfACorruptFileIsAnIoError) {
  TempDir d;
  test::write_text(d / "bad.safetensors", "xyz");
  const auto r = run(kInspect + " " + (d / "bad.safetensors").string());
  EXPECT_EQ(r.exit_code, kExitIo) << r.output;
  EXPECT_NE(r.output.find("bad.safetensors: file is 3 bytes"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace salad
