#include "salad/core/blas_info.h"

#include <torch/torch.h>

#include <cstdlib>

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
