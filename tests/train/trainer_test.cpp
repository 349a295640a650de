// The training loop on a tiny model and a fixed batch stream: learning, exact resume, skipped
// non-finite steps, damaged checkpoints, resume refusals and a full disk.
#include "salad/train/trainer.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <fstream>

#include "salad/core/error.h"
#include "salad/dist/comm.h"
#include "salad/models/speech_lm.h"
#include "salad/train/checkpoint.h"
#include "test_util.h"
#include "train/train_test_util.h"

namespace salad::train {
namespace {

namespace tu = test_util;

std::shared_ptr<dist::Comm> single() { return std::make_shared<dist::Comm>(dist::CommOptions{}); }

struct Losses {
  std::vector<double> loss;
  std::vector<double> grad_norm;
  std::vector<bool> skipped;
};

Losses run_trainer(const config::SaladConfig& cfg, TrainParts parts, bool resume,
                   int64_t stop_after = -1, TrainResult* result = nullptr) {
  Trainer t(cfg, std::move(parts), single());
  Losses out;
  t.on_step([&](const StepStats& s) {
    out.loss.push_back(s.loss);
    out.grad_norm.push_back(s.grad_norm);
    out.skipped.push_back(s.skipped);
    if (s.step == stop_after) request_stop(SIGTERM);
  });
  const TrainResult r = t.run(resume);
  clear_stop();
  if (result) *result = r;
  return out;
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(Trainer, LossGoesDownAndRunFolderIsComplete) {
  test::TempDir dir;
  auto cfg = tu::tiny_config(dir.path(), 60);
  cfg.train.eval_every = 30;
  cfg.train.save_every = 30;
  cfg.optim.lr_llm = 1e-2;
  cfg.optim.lr_adapter = 1e-2;
  const Losses l = run_trainer(cfg, tu::tiny_parts(), false);
  ASSERT_EQ(l.loss.size(), 60u);
  double first = 0, last = 0;  // the batches differ: average over 10 steps
  for (int i = 0; i < 10; ++i) first += l.loss[i] / 10, last += l.loss[50 + i] / 10;
  EXPECT_LT(last, 0.93 * first) << "loss " << first << " -> " << last;
  const fs::path run = dir.path();
  EXPECT_TRUE(fs::exists(run / "config.resolved.yaml"));
  const auto metrics = lines_of(run / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 60u + 2u);  // 60 steps + 2 validations
  const auto v = nlohmann::json::parse(metrics[30]);
  EXPECT_EQ(v.at("split"), "valid");
  EXPECT_GT(v.at("misalignment").get<double>(), 0.0);
  EXPECT_GE(v.at("forgetting").get<double>(), 0.0);
  CheckpointStore store(run);
  // step 45 is the branch point (decay_fraction 0.25 of 60) and is kept with the others.
  EXPECT_EQ(store.steps(), (std::vector<int64_t>{60, 45, 30}));
  for (const int64_t s : store.steps()) EXPECT_NO_THROW(store.validate(s));
  EXPECT_EQ(test::read_text(store.dir() / "latest"), "step-000060\n");
  for (const char* f : {"model.safetensors", "trainer.json", "optimizer-rank-00000.safetensors",
                        "rank-00000.json", "config.resolved.yaml", "checkpoint.json"}) {
    EXPECT_TRUE(fs::exists(store.folder(60) / f)) << f;
  }
}

TEST(Trainer, KeepLastPrunesButKeepsTheBranchPoint) {
  test::TempDir dir;
  auto cfg = tu::tiny_config(dir.path(), 16);
  cfg.train.save_every = 2;
  cfg.train.keep_last = 2;
  run_trainer(cfg, tu::tiny_parts(), false);
  // branch point: 16 - round(0.25 * 16) = 12
  EXPECT_EQ(CheckpointStore(dir.path()).steps(), (std::vector<int64_t>{16, 14, 12}));
}

// The acceptance test of exact resume: the losses of steps k+1..n after a resume at k equal
// those of an uninterrupted run, bit for bit (with gradient accumulation and a decay phase).
TEST(Trainer, ResumeContinuesBitIdentically) {
  test::TempDir a, b;
  const int64_t n = 10, k = 6;
  const Losses full = run_trainer(tu::tiny_config(a.path(), n, 2), tu::tiny_parts(), false);
  ASSERT_EQ(full.loss.size(), static_cast<size_t>(n));

  auto cfg = tu::tiny_config(b.path(), n, 2);
  TrainResult r;
  const Losses head = run_trainer(cfg, tu::tiny_parts(), false, k, &r);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.step, k);
  ASSERT_EQ(head.loss.size(), static_cast<size_t>(k));
  // Another initial student and adapter (the teacher is the recipe's): the trained weights must
  // come from the checkpoint.
  TrainParts other = tu::tiny_parts();
  {
    torch::NoGradGuard no_grad;
    for (auto& g : other.lm->trainable_groups()) {
      for (auto& [name, t] : g.params) t.add_(torch::randn_like(t));
    }
  }
  const Losses tail = run_trainer(cfg, std::move(other), true);
  ASSERT_EQ(tail.loss.size(), static_cast<size_t>(n - k));
  for (int64_t i = 0; i < k; ++i) EXPECT_EQ(head.loss[i], full.loss[i]) << "step " << i + 1;
  for (int64_t i = k; i < n; ++i) {
    EXPECT_EQ(tail.loss[i - k], full.loss[i]) << "step " << i + 1;
    EXPECT_EQ(tail.grad_norm[i - k], full.grad_norm[i]) << "step " << i + 1;
  }
}

TEST(Trainer, NonFiniteStepsAreSkippedThenAbort) {
  test::TempDir dir;
  auto cfg = tu::tiny_config(dir.path(), 8);
  cfg.train.max_bad_steps = 2;
  // Batch 2 is corrupt: step 3 is skipped, the run goes on.
  TrainResult r;
  Losses l = run_trainer(cfg, tu::tiny_parts(0, 1, 1000, {2}), false, -1, &r);
  ASSERT_EQ(l.skipped.size(), 8u);
  EXPECT_TRUE(l.skipped[2]);
  EXPECT_EQ(std::count(l.skipped.begin(), l.skipped.end(), true), 1);
  EXPECT_EQ(r.skipped_steps, 1);
  const auto line = nlohmann::json::parse(lines_of(dir.path() / "metrics.jsonl")[2]);
  EXPECT_TRUE(line.value("skipped", false));
  // Two corrupt batches in a row reach max_bad_steps.
  test::TempDir dir2;
  auto cfg2 = tu::tiny_config(dir2.path(), 8);
  cfg2.train.max_bad_steps = 2;
  test::expect_error<Error>(
      [&] {
        run_trainer(cfg2, tu::tiny_parts(0, 1, 1000, {3, 4}), false);
      },
      {"2 non-finite steps in a row", "train.max_bad_steps = 2"});
}

TEST(Trainer, TruncatedCheckpointFallsBackToThePreviousOne) {
  test::TempDir dir;
  auto cfg = tu::tiny_config(dir.path(), 6);
  cfg.train.save_every = 2;
  cfg.optim.decay_fraction = 0.0;
  run_trainer(cfg, tu::tiny_parts(), false);
  CheckpointStore store(dir.path());
  const fs::path model = store.folder(6) / "model.safetensors";
  fs::resize_file(model, fs::file_size(model) / 2);
  test::expect_error<CheckpointError>([&] { store.validate(6); }, {"truncated"});
  EXPECT_EQ(store.latest_valid(), 4);
  cfg.train.steps = 8;
  const Losses tail = run_trainer(cfg, tu::tiny_parts(), true);
  EXPECT_EQ(tail.loss.size(), 4u);     // steps 5..8 from the step-4 checkpoint
  EXPECT_NO_THROW(store.validate(6));  // saved again, whole
  EXPECT_NO_THROW(store.validate(8));
}

TEST(Trainer, ResumeRefusesAnotherModel) {
  test::TempDir dir;
  auto cfg = tu::tiny_config(dir.path(), 2);
  run_trainer(cfg, tu::tiny_parts(), false);
  // Another config of the model: every difference listed.
  auto other = cfg;
  other.adapter.hidden_size = 24;
  other.model.arch.num_hidden_layers = 3;
  other.train.steps = 4;
  test::expect_error<CheckpointError>([&] { run_trainer(other, tu::tiny_parts(), true); },
                                      {"adapter.hidden_size: checkpoint 960, now 24",
                                       "model.arch.num_hidden_layers: checkpoint 4, now 3"});
  // Same config, another tensor shape: the tensors are named with both shapes.
  auto more = cfg;
  more.train.steps = 4;
  test::expect_error<CheckpointError>(
      [&] { run_trainer(more, tu::tiny_parts(0, 1, 1000, {}, 24), true); },
      {"adapter.in_proj.weight: checkpoint [16, 8], model [24, 8]"});
}

TEST(Trainer, FullDiskKeepsThePreviousCheckpoint) {
  test::TempDir dir;
  auto cfg = tu::tiny_config(dir.path(), 6);
  cfg.train.save_every = 2;
  cfg.optim.decay_fraction = 0.0;
  // Files larger than 4 KiB fail with EFBIG (as ENOSPC would) while step 4 is saved.
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  Trainer t(cfg, tu::tiny_parts(), single());
  CheckpointStore store(dir.path());
  t.on_step([&](const StepStats& s) {
    if (s.step == 3) {
      rlimit small = old;
      small.rlim_cur = 4096;
      setrlimit(RLIMIT_FSIZE, &small);
    }
    if (s.step == 5) {
      setrlimit(RLIMIT_FSIZE, &old);
      EXPECT_NO_THROW(store.validate(2)) << "the previous checkpoint is intact";
      EXPECT_EQ(test::read_text(store.dir() / "latest"), "step-000002\n");
    }
  });
  const TrainResult r = t.run(false);
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_EQ(r.step, 6);
  EXPECT_EQ(store.steps(), (std::vector<int64_t>{6, 2}));
  EXPECT_FALSE(fs::exists(store.staging(4)));
}

}  // namespace
}  // namespace salad::train

namespace salad::train {
namespace {

// bf16 autocast (CPU autocast here; CUDA in real runs) trains on the fp32 master weights: the
// losses follow the fp32 run closely and the weights stay fp32.
TEST(Trainer, Bf16AutocastFollowsFp32) {
  test::TempDir a, b;
  const Losses fp32 = run_trainer(tu::tiny_config(a.path(), 4), tu::tiny_parts(), false);
  auto cfg = tu::tiny_config(b.path(), 4);
  cfg.train.precision = "bf16";
  TrainParts parts = tu::tiny_parts();
  auto lm = parts.lm;
  const Losses bf16 = run_trainer(cfg, std::move(parts), false);
  ASSERT_EQ(bf16.loss.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::isfinite(bf16.loss[i]));
    EXPECT_NEAR(bf16.loss[i], fp32.loss[i], 0.05 * fp32.loss[i]) << "step " << i + 1;
  }
  EXPECT_NE(bf16.loss[0], fp32.loss[0]) << "autocast changed nothing: was it enabled?";
  for (const auto& g : lm->trainable_groups()) {
    for (const auto& [name, t] : g.params) EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
  }
}

}  // namespace
}  // namespace salad::train

namespace salad::train {
namespace {

// train.activation_checkpointing recomputes every decoder and adapter layer in backward: the
// same losses and gradient norms, bit for bit, with the flat gradient views and their hooks.
TEST(Trainer, ActivationCheckpointingChangesNothing) {
  test::TempDir a, b;
  const Losses plain = run_trainer(tu::tiny_config(a.path(), 4, 2), tu::tiny_parts(), false);
  auto cfg = tu::tiny_config(b.path(), 4, 2);
  cfg.train.activation_checkpointing = true;
  TrainParts parts = tu::tiny_parts();
  auto lm = parts.lm;
  const Losses ckpt = run_trainer(cfg, std::move(parts), false);
  EXPECT_TRUE(lm->student()->activation_checkpointing());
  EXPECT_TRUE(lm->adapter()->activation_checkpointing());
  ASSERT_EQ(ckpt.loss.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(ckpt.loss[i], plain.loss[i]) << "step " << i + 1;
    EXPECT_EQ(ckpt.grad_norm[i], plain.grad_norm[i]) << "step " << i + 1;
  }
}

}  // namespace
}  // namespace salad::train
