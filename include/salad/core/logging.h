// Logging: one spdlog default logger for the process, rank-aware. Library code logs with
// spdlog::info(...) etc.; apps call setup_logging() once.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace salad {

struct LogOptions {
  std::string level = "info";  ///< trace | debug | info | warn | error | off
  int rank = -1;               ///< -1: from the RANK environment variable (0 when unset)
  bool all_ranks = false;      ///< ranks other than 0 log at `level` too (else warn and up)
  std::string file;            ///< also append to this file (empty: console only)
};

/// Installs the process-wide logger: console on stderr, `[time] [rank] level message`.
/// Throws ConfigError for an unknown level. Safe to call again (replaces the logger).
void setup_logging(const LogOptions& options = {});

/// The rank of this process as the launcher set it (RANK, else 0); WORLD_SIZE likewise (1).
int env_rank();
int env_world_size();

}  // namespace salad
