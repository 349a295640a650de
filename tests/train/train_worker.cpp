// One rank of a data-parallel training run of the tiny test model (tests/train/ddp_test.cpp
// launches it). Usage: salad_train_worker RUN_DIR OUT.safetensors ZERO1 [DIE_AT_STEP]
// Rank and world come from RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT. The global batch is two
// micro-batches per step whatever the world size, so 1 rank accumulates 2 and 2 ranks take one
// each. Rank 1 exits abruptly after DIE_AT_STEP when given (a dead rank).
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "salad/core/error.h"
#include "salad/core/logging.h"
#include "salad/core/safetensors.h"
#include "salad/dist/comm.h"
#include "salad/train/trainer.h"
#include "train/train_test_util.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: salad_train_worker RUN_DIR OUT ZERO1 [DIE_AT_STEP]\n";
    return 2;
  }
  try {
    salad::setup_logging();
    namespace tu = salad::train::test_util;
    auto cfg = tu::tiny_config(argv[1], 6, 2);
    cfg.dist.zero1 = std::atoi(argv[3]) != 0;
    cfg.dist.timeout_s = 10;
    cfg.dist.bucket_mb = 0.01;  // several buckets for the tiny model
    cfg.train.log_every = 1;
    const int64_t die_at = argc > 4 ? std::atoll(argv[4]) : -1;
    auto comm = std::make_shared<salad::dist::Comm>(salad::dist::CommOptions::from_env(cfg.dist));
    salad::train::Trainer trainer(cfg, tu::tiny_parts(comm->rank(), comm->world_size()), comm);
    trainer.on_step([&](const salad::train::StepStats& s) {
      if (comm->rank() == 1 && s.step == die_at) _exit(3);
      std::cout << "step " << s.step << " loss " << s.loss << "\n";
    });
    const auto result = trainer.run(false);
    if (comm->rank() == 0) {
      // The trained weights of the final checkpoint, copied out for the comparison.
      const auto ckpt = salad::safetensors::Checkpoint::open(
          std::filesystem::path(argv[1]) / "checkpoints" / "step-000006" / "model.safetensors");
      salad::safetensors::NamedTensors out;
      for (const auto& n : ckpt.names()) out.emplace_back(n, ckpt.get(n).clone());
      salad::safetensors::save(argv[2], out);
    }
    return result.step == 6 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "worker error: " << e.what() << "\n";
    return 1;
  }
}
