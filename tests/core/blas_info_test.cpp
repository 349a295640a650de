#include "salad/core/blas_info.h"

#include <torch/torch.h>

#include <cstdlib>
#include <thread>

#include "test_util.h"

namespace salad {
namespace {

TEST(BlasInfoTest, FindsTheBlasLibTorchUses) {
  // Make sure LibTorch has resolved its BLAS.
  auto c = torch::mm(torch::ones({64, 64}), torch::ones({64, 64}));
  EXPECT_FLOAT_EQ(c[0][0].item<float>(), 64.f);
  const BlasInfo b = detect_blas();
  EXPECT_FALSE(b.library.empty()) << "no library defines sgemm_";
  EXPECT_FALSE(b.description.empty());
  // The kind follows the library that really defines sgemm_, even when another BLAS is loaded
  // too (liblapack.so.3 of OpenBLAS loads libopenblas.so.0 next to a reference libblas.so.3).
  if (b.library.find("openblas") != std::string::npos) {
    EXPECT_EQ(b.kind, BlasInfo::Kind::kOpenBlas) << b.library;
  } else if (b.library.find("/blas/") != std::string::npos) {
    EXPECT_EQ(b.kind, BlasInfo::Kind::kReference) << b.library;
  }
}

TEST(BlasInfoTest, SetupInstalledOpenBlasWithOpenMP) {
  // scripts/setup.sh points libblas.so.3 at libopenblas0-openmp; CI checks that it did.
  if (!std::getenv("CI")) GTEST_SKIP() << "checked in CI (CI=true), where setup.sh ran";
  const BlasInfo b = detect_blas();
  EXPECT_EQ(b.kind, BlasInfo::Kind::kOpenBlas) << b.description << " from " << b.library;
  EXPECT_EQ(b.threading, BlasInfo::Threading::kOpenMP) << b.description << " from " << b.library;
}

}  // namespace
}  // namespace salad

namespace salad {
namespace {

TEST(BlasInfoTest, ConfigureThreads) {
  const int all = configure_threads(0);
  EXPECT_GE(all, 1);
  EXPECT_EQ(at::get_num_threads(), all);
  // Every CPU of the affinity mask: never more than the machine has.
  if (std::thread::hardware_concurrency() > 0) {
    EXPECT_LE(all, static_cast<int>(std::thread::hardware_concurrency()));
  }
  EXPECT_EQ(configure_threads(1), 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  configure_threads(0);
}

}  // namespace
}  // namespace salad
