// Data-parallel training over Gloo: 2 processes with one micro-batch each end with the same
// weights as 1 process accumulating both (with and without ZeRO-1), and a dead rank ends the
// job with a clear error instead of a hang.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <future>

#include "salad/core/safetensors.h"
#include "test_util.h"

namespace salad::train {
namespace {

namespace fs = std::filesystem;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

std::string worker_cmd(int rank, int world, int port, const fs::path& run, const fs::path& out,
                       bool zero1, int die_at = -1) {
  return "RANK=" + std::to_string(rank) + " LOCAL_RANK=" + std::to_string(rank) +
         " WORLD_SIZE=" + std::to_string(world) +
         " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " OMP_NUM_THREADS=1 " +
         SALAD_TRAIN_WORKER_EXE + " " + run.string() + " " + out.string() + " " +
         (zero1 ? "1" : "0") + (die_at >= 0 ? " " + std::to_string(die_at) : "") + " 2>&1";
}

std::map<std::string, at::Tensor> load(const fs::path& p) {
  std::map<std::string, at::Tensor> out;
  const auto c = safetensors::Checkpoint::open(p);
  for (const auto& n : c.names()) out[n] = c.get(n).clone();
  return out;
}

void expect_same_weights(const fs::path& a, const fs::path& b) {
  const auto x = load(a), y = load(b);
  ASSERT_EQ(x.size(), y.size());
  double worst = 0;
  for (const auto& [n, t] : x) {
    ASSERT_TRUE(y.count(n)) << n;
    worst = std::max(worst, (t - y.at(n)).abs().max().item<double>());
    EXPECT_TRUE(test::all_close(t, y.at(n), 1e-5, n)) << n;
  }
  ::testing::Test::RecordProperty("max_abs_diff", std::to_string(worst));
  std::printf("max |w_ddp - w_single| = %.3g\n", worst);
}

void two_ranks_equal_one(bool zero1) {
  test::TempDir dir;
  const auto single = test::run(
      "RANK=0 WORLD_SIZE=1 OMP_NUM_THREADS=1 " + std::string(SALAD_TRAIN_WORKER_EXE) + " " +
      (dir.path() / "run1").string() + " " + (dir.path() / "w1.safetensors").string() + " 0 2>&1");
  ASSERT_EQ(single.exit_code, 0) << single.output;
  const int port = free_port();
  auto r1 = std::async(std::launch::async, [&] {
    return test::run(worker_cmd(1, 2, port, dir.path() / "run2", dir.path() / "unused", zero1));
  });
  const auto r0 =
      test::run(worker_cmd(0, 2, port, dir.path() / "run2", dir.path() / "w2.safetensors", zero1));
  const auto r1v = r1.get();
  ASSERT_EQ(r0.exit_code, 0) << r0.output;
  ASSERT_EQ(r1v.exit_code, 0) << r1v.output;
  EXPECT_NE(r0.output.find("x 2 rank(s)"), std::string::npos) << r0.output;
  EXPECT_NE(single.output.find("2 micro-batch(es)"), std::string::npos) << single.output;
  expect_same_weights(dir.path() / "w1.safetensors", dir.path() / "w2.safetensors");
}

TEST(DataParallel, TwoGlooRanksEqualOneProcessWithTheWholeBatch) { two_ranks_equal_one(false); }

TEST(DataParallel, ZeroOneShardsGiveTheSameWeights) { two_ranks_equal_one(true); }

TEST(DataParallel, DeadRankEndsTheJobWithAClearError) {
  test::TempDir dir;
  const int port = free_port();
  auto r1 = std::async(std::launch::async, [&] {
    return test::run(worker_cmd(1, 2, port, dir.path() / "run", dir.path() / "x", false, 2));
  });
  const auto t0 = std::chrono::steady_clock::now();
  const auto r0 = test::run(worker_cmd(0, 2, port, dir.path() / "run", dir.path() / "y", false));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r1.get().exit_code, 3);
  EXPECT_NE(r0.exit_code, 0) << r0.output;
  EXPECT_NE(r0.output.find("rank 0 of 2"), std::string::npos) << r0.output;
  EXPECT_LT(seconds, 10 + 15) << "timeout_s = 10 plus start-up";
}

}  // namespace
}  // namespace salad::train
