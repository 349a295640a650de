#include "salad/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "salad/core/config.h"
#include "salad/core/error.h"

namespace salad::train {

WsdSchedule WsdSchedule::from_config(const config::OptimConfig& cfg, int64_t total_steps) {
  if (total_steps < 1) {
    throw ConfigError("train.steps must be >= 1, found " + std::to_string(total_steps));
  }
  if (cfg.warmup_steps < 0) {
    throw ConfigError("optim.warmup_steps must be >= 0, found " + std::to_string(cfg.warmup_steps));
  }
  if (!(cfg.decay_fraction >= 0.0 && cfg.decay_fraction <= 1.0)) {
    throw ConfigError("optim.decay_fraction must be in [0, 1], found " +
                      std::to_string(cfg.decay_fraction));
  }
  WsdSchedule s;
  s.total_steps = total_steps;
  s.warmup_steps = cfg.warmup_steps;
  const auto decay = static_cast<int64_t>(std::llround(cfg.decay_fraction * total_steps));
  s.decay_start = total_steps - std::min(decay, total_steps);
  return s;
}

double WsdSchedule::factor(int64_t step) const {
  double f = 1.0;
  if (step < warmup_steps) f = static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (step >= decay_start) {
    const double d = static_cast<double>(total_steps - step) /
                     static_cast<double>(std::max<int64_t>(1, total_steps - decay_start));
    f = std::min(f, std::max(0.0, d));
  }
  return f;
}

std::string WsdSchedule::describe() const {
  return "WSD: " + std::to_string(warmup_steps) + " warmup, constant to step " +
         std::to_string(decay_start) + ", linear decay to 0 at step " + std::to_string(total_steps);
}

}  // namespace salad::train
