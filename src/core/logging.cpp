#include "salad/core/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

#include "salad/core/error.h"

namespace salad {

namespace {
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0') return fallback;
  return static_cast<int>(x);
}
}  // namespace

int env_rank() { return env_int("RANK", 0); }
int env_world_size() { return env_int("WORLD_SIZE", 1); }

void setup_logging(const LogOptions& o) {
  auto level = spdlog::level::from_str(o.level);
  if (level == spdlog::level::off && o.level != "off") {
    throw ConfigError("unknown log level '" + o.level +
                      "' (expected trace, debug, info, warn, error or off)");
  }
  const int rank = o.rank >= 0 ? o.rank : env_rank();
  if (rank != 0 && !o.all_ranks && level < spdlog::level::warn) level = spdlog::level::warn;

  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!o.file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(o.file));
    } catch (const spdlog::spdlog_ex& e) {
      throw IoError("cannot open log file " + o.file + ": " + e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("salad", sinks.begin(), sinks.end());
  const std::string rank_tag =
      env_world_size() > 1 || rank != 0 ? " [r" + std::to_string(rank) + "]" : "";
  logger->set_pattern("[%H:%M:%S.%e]" + rank_tag + " [%^%l%$] %v");
  logger->set_level(level);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace salad
