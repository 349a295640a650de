#include <torch/torch.h>

#include <fstream>
#include <set>

#include "dist/dist_launch.h"
#include "dist/dist_test_model.h"
#include "salad/core/error.h"
#include "salad/dist/comm.h"
#include "test_util.h"

namespace salad::dist {
namespace {

std::shared_ptr<Comm> single_process_comm() { return std::make_shared<Comm>(CommOptions{}); }

TEST(GradBucketsTest, BucketsTileFlatGradAtParameterBoundaries) {
  test::TinyNet net = test::make_tiny_net();
  std::vector<at::Tensor> params;
  const at::Tensor flat = test::attach_flat_grad(net, params, /*pad=*/3);
  constexpr int64_t kBucketBytes = 256;
  GradBuckets gb(single_process_comm(), params, flat, kBucketBytes);

  std::set<int64_t> boundaries{0, flat.numel()};
  int64_t off = 0;
  for (const auto& p : params) boundaries.insert(off += p.numel());
  const auto ranges = gb.bucket_ranges();
  ASSERT_EQ(static_cast<int64_t>(ranges.size()), gb.bucket_count());
  ASSERT_GE(gb.bucket_count(), 4);
  EXPECT_EQ(ranges.front().first, 0);
  EXPECT_EQ(ranges.back().second, flat.numel());  // the padding is reduced too
  for (size_t k = 0; k < ranges.size(); ++k) {
    const auto [b, e] = ranges[k];
    EXPECT_LT(b, e);
    EXPECT_TRUE(boundaries.count(e)) << "bucket " << k << " ends inside a parameter";
    if (k > 0) EXPECT_EQ(b, ranges[k - 1].second);
    if (k + 1 < ranges.size()) {
      EXPECT_GE((e - b) * 8, kBucketBytes) << "bucket " << k << " cut too early";
    }
  }
  // One bucket when the target exceeds the whole buffer.
  EXPECT_EQ(GradBuckets(single_process_comm(), params, flat).bucket_count(), 1);
}

TEST(GradBucketsTest, SingleProcessLeavesTheLocalGradient) {
  test::TinyNet net = test::make_tiny_net();
  std::vector<at::Tensor> params;
  const at::Tensor flat = test::attach_flat_grad(net, params);
  GradBuckets gb(single_process_comm(), params, flat, 256);
  gb.begin(false);
  test::tiny_loss(net, 0).backward();
  gb.begin(true);
  test::tiny_loss(net, 1).backward();
  gb.finish();
  EXPECT_EQ(gb.launched_during_backward(), 0);

  // The same two backward passes with ordinary (non-flat) gradients.
  test::TinyNet ref = test::make_tiny_net();
  test::tiny_loss(ref, 0).backward();
  test::tiny_loss(ref, 1).backward();
  const auto ref_params = ref->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    // The flat views received the gradient in place.
    EXPECT_TRUE(params[i].grad().is_alias_of(flat)) << "param " << i;
    const at::Tensor expected =
        ref_params[i].grad().defined() ? ref_params[i].grad() : at::zeros_like(ref_params[i]);
    EXPECT_TRUE(test::all_close(params[i].grad(), expected, 1e-12, "param " + std::to_string(i)));
  }
}

TEST(GradBucketsTest, RejectsGradientsThatAreNotFlatViews) {
  test::TinyNet net = test::make_tiny_net();
  std::vector<at::Tensor> params;
  const at::Tensor flat = test::attach_flat_grad(net, params);
  {
    auto swapped = params;
    std::swap(swapped[0], swapped[1]);
    test::expect_error<Error>([&] { GradBuckets(single_process_comm(), swapped, flat); },
                              {"parameter 1", "before the end of the previous one"});
  }
  params[2].mutable_grad() = at::zeros_like(params[2]);
  test::expect_error<Error>([&] { GradBuckets(single_process_comm(), params, flat); },
                            {"parameter 2", "not a contiguous view of flat_grad"});
  params[2].mutable_grad() = at::Tensor();
  test::expect_error<Error>([&] { GradBuckets(single_process_comm(), params, flat); },
                            {"parameter 2", "has no .grad()"});
  test::expect_error<Error>(
      [&] { GradBuckets(single_process_comm(), {at::zeros({2})}, at::zeros({2})); },
      {"parameter 0", "leaf tensor that requires grad"});
}

// Two ranks x two micro-batches must give the gradient one process gets from all four.
TEST(GradBucketsIntegrationTest, TwoRanksSumEqualsSingleProcessGradient) {
  test::TempDir dir;
  const std::string prefix = (dir / "flat_rank").string();
  const auto rs = test::run_ranks({"buckets", prefix}, 2, /*timeout_s=*/20, /*deadline_s=*/60);

  test::TinyNet net = test::make_tiny_net();
  std::vector<at::Tensor> params;
  const at::Tensor expected = test::attach_flat_grad(net, params);
  for (int64_t g = 0; g < 2 * test::kMicroBatchesPerRank; ++g) test::tiny_loss(net, g).backward();
  // Every layer got a gradient somewhere (extra, extra2) except `unused`, which stays zero.
  EXPECT_TRUE(net->extra->weight.grad().abs().sum().item<double>() > 0);
  EXPECT_TRUE(net->extra2->weight.grad().abs().sum().item<double>() > 0);
  EXPECT_EQ(net->unused->weight.grad().abs().sum().item<double>(), 0.0);

  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(rs[r].exit_code, 0) << test::outputs(rs);
    EXPECT_NE(rs[r].output.find("buckets ok on rank " + std::to_string(r)), std::string::npos)
        << test::outputs(rs);
    const std::string bytes = test::read_text(prefix + std::to_string(r) + ".bin");
    ASSERT_EQ(bytes.size(), expected.numel() * sizeof(double)) << test::outputs(rs);
    const at::Tensor got =
        at::from_blob(const_cast<char*>(bytes.data()), {expected.numel()}, at::kDouble).clone();
    EXPECT_TRUE(test::all_close(got, expected, 1e-6, "rank " + std::to_string(r)));
  }
  // Rank 0 logs the bucket layout at info.
  EXPECT_NE(rs[0].output.find("gradient buckets over 12 parameters"), std::string::npos)
      << test::outputs(rs);
}

}  // namespace
}  // namespace salad::dist
