// salad-eval: scores a checkpoint on spoken and text multiple-choice benchmarks (teacher on
// text, model on text, model on speech), the gap per benchmark and on average, and M / F on
// held-out data; writes results.json, results.md and results.png.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/app.h"
#include "salad/core/blas_info.h"
#include "salad/core/logging.h"
#include "salad/eval/evaluate.h"
#include "salad/train/stage2.h"

int main(int argc, char** argv) {
  CLI::App app{"salad-eval: spoken and text multiple-choice benchmarks, gap, M and F"};
  std::string checkpoint, benchmarks, out, modes = "teacher_text,model_text,model_speech";
  std::string device;
  std::vector<std::string> overrides;
  int64_t limit = 0, threads = 0;
  app.add_option("--checkpoint", checkpoint, "Checkpoint folder (or a run folder: its newest)")
      ->required();
  app.add_option("--benchmarks", benchmarks, "YAML list of benchmarks (and held-out data)")
      ->required();
  app.add_option("--out", out, "Output folder (default: <checkpoint>/eval)");
  app.add_option("--modes", modes, "Comma-separated: teacher_text, model_text, model_speech");
  app.add_option("--limit", limit, "Score only the first N items of each benchmark");
  app.add_option("--device", device, "cpu | cuda | cuda:N (default: the checkpoint's)");
  app.add_option("--threads", threads, "Intra-op CPU threads (0: all)");
  app.add_option("--set", overrides, "Override a key of the checkpoint's config (repeatable)");
  return salad::apps::run(app, argc, argv, [&]() -> int {
    salad::setup_logging();
    salad::configure_threads(static_cast<int>(threads));
    salad::log_blas_info();
    salad::eval::EvalOptions o;
    o.modes.clear();
    std::stringstream ss(modes);
    for (std::string m; std::getline(ss, m, ',');) {
      if (m == "teacher_text") {
        o.modes.push_back(salad::eval::Mode::kTeacherText);
      } else if (m == "model_text") {
        o.modes.push_back(salad::eval::Mode::kModelText);
      } else if (m == "model_speech") {
        o.modes.push_back(salad::eval::Mode::kModelSpeech);
      } else {
        std::cerr << "salad-eval: --modes: unknown mode '" << m
                  << "' (teacher_text, model_text, model_speech)\n";
        return salad::kExitUsage;
      }
    }
    o.limit = limit;
    o.device = device;
    o.overrides = overrides;
    const auto spec = salad::eval::read_eval_spec(benchmarks);
    const auto report = salad::eval::evaluate(checkpoint, spec, o);
    const std::filesystem::path out_dir =
        out.empty() ? report.checkpoint / "eval" : std::filesystem::path(out);
    salad::eval::write_eval_report(report, out_dir);
    salad::train::run_plot_script(salad::apps::scripts_dir() / "plot_eval.py",
                                  out_dir / "results.json");
    std::ifstream md(out_dir / "results.md");
    std::cout << md.rdbuf();
    std::cout << "\nresults: " << (out_dir / "results.json").string() << ", "
              << (out_dir / "results.md").string() << ", " << (out_dir / "results.png").string()
              << "\n";
    return salad::kExitOk;
  });
}
