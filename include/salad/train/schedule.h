// The learning-rate schedule: warmup-stable-decay (WSD, paper-notes §4.3). Linear warmup over
// `warmup` steps, constant, then the final `decay_fraction` of the steps linearly to 0. The
// checkpoint taken when the decay starts (after `decay_start` completed steps) is the Stage II
// branch point: Stage II continues from it with its own decay.
#pragma once

#include <cstdint>
#include <string>

namespace salad::config {
struct OptimConfig;
}

namespace salad::train {

struct WsdSchedule {
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;
  int64_t decay_start = 1;  ///< completed steps when the decay begins (= total: no decay)

  /// decay_start = total - round(decay_fraction * total). Throws ConfigError naming the key for
  /// a negative warmup, a fraction outside [0, 1] or total < 1.
  static WsdSchedule from_config(const config::OptimConfig& cfg, int64_t total_steps);

  /// LR multiplier (of the peak) for the update with 0-based index `step`:
  ///   step < warmup:       (step + 1) / warmup
  ///   step >= decay_start: (total - step) / (total - decay_start)   (last update: 1 / decay len)
  ///   otherwise:           1
  /// (the smaller of the warmup and decay factors when they overlap).
  double factor(int64_t step) const;
  /// Completed steps at the Stage II branch point (the checkpoint kept apart from keep_last);
  /// -1 when there is no decay phase.
  int64_t branch_step() const { return decay_start < total_steps ? decay_start : -1; }
  std::string describe() const;
};

}  // namespace salad::train
