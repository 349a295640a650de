// Shared by the apps' main(): run the body, map exceptions to exit codes (salad::ExitCode).
#pragma once

#include <cstdlib>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <functional>

#include "salad/core/error.h"
#include "salad/core/logging.h"

namespace salad::apps {

/// Parses `app` from argv, then runs `body`; every salad::Error becomes one log line and its
/// exit code, anything else an internal error (exit 70).
inline int run(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  try {
    return body();
  } catch (const salad::Error& e) {
    spdlog::error("{}", e.what());
    return exit_code(e);
  } catch (const std::exception& e) {
    spdlog::critical("internal error: {}", e.what());
    return kExitInternal;
  }
}

/// The folder of the plotting scripts (plot_selection.py, plot_eval.py): $SALAD_SCRIPTS_DIR, else
/// the source tree's scripts/ that CMake passes as SALAD_SCRIPTS_DIR, else ./scripts.
inline std::filesystem::path scripts_dir() {
#ifndef SALAD_SCRIPTS_DIR
#define SALAD_SCRIPTS_DIR "scripts"
#endif
  const char* env = std::getenv("SALAD_SCRIPTS_DIR");
  return env ? env : SALAD_SCRIPTS_DIR;
}

}  // namespace salad::apps
