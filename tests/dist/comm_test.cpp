#include "salad/dist/comm.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>

#include "dist/dist_launch.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "test_util.h"

namespace salad::dist {
namespace {

// Sets (or unsets, with nullopt) environment variables for a scope, restoring the old values.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::optional<std::string>>& vars) {
    for (const auto& [k, v] : vars) {
      const char* old = std::getenv(k.c_str());
      old_[k] = old ? std::optional<std::string>(old) : std::nullopt;
      if (v) {
        ::setenv(k.c_str(), v->c_str(), 1);
      } else {
        ::unsetenv(k.c_str());
      }
    }
  }
  ~ScopedEnv() {
    for (const auto& [k, v] : old_) {
      if (v) {
        ::setenv(k.c_str(), v->c_str(), 1);
      } else {
        ::unsetenv(k.c_str());
      }
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> old_;
};

// Every torchrun variable unset, then `vars` applied.
std::map<std::string, std::optional<std::string>> torchrun_env(
    const std::map<std::string, std::string>& vars) {
  std::map<std::string, std::optional<std::string>> env;
  for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) {
    env[k] = std::nullopt;
  }
  for (const auto& [k, v] : vars) env[k] = v;
  return env;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(CommTest, SingleProcessCollectivesAreNoOps) {
  Comm comm(CommOptions{});
  EXPECT_FALSE(comm.distributed());
  EXPECT_EQ(comm.backend(), "none");
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.world_size(), 1);

  at::Tensor t = at::arange(4, at::kFloat);
  comm.all_reduce_sum(t);
  comm.broadcast(t, 0);
  EXPECT_TRUE(t.equal(at::arange(4, at::kFloat)));
  comm.barrier();
  EXPECT_EQ(comm.sum(2.5), 2.5);
  EXPECT_EQ(comm.max(-1.0), -1.0);
  EXPECT_EQ(comm.broadcast_string("abc"), "abc");

  // all_gather over one rank: flat_out gets the shard (and an aliasing shard stays put).
  at::Tensor out = at::zeros({3});
  comm.all_gather(out, at::full({3}, 5.0f));
  EXPECT_TRUE(out.equal(at::full({3}, 5.0f)));
  comm.all_gather(out, out);
  EXPECT_TRUE(out.equal(at::full({3}, 5.0f)));
  test::expect_error<Error>([&] { comm.all_gather(at::zeros({4}), at::zeros({3})); },
                            {"all_gather needs", "1 * 3"});
  test::expect_error<Error>([&] { comm.broadcast(t, 1); }, {"broadcast root 1 is not a rank"});
}

TEST(CommTest, OptionsFromTheEnvironment) {
  config::DistConfig cfg;
  cfg.backend = "gloo";
  cfg.timeout_s = 42;
  {
    ScopedEnv env(torchrun_env({}));
    const CommOptions o = CommOptions::from_env(cfg);
    EXPECT_EQ(o.rank, 0);
    EXPECT_EQ(o.world_size, 1);
    EXPECT_EQ(o.local_rank, 0);
    EXPECT_EQ(o.backend, "gloo");
    EXPECT_EQ(o.timeout_s, 42);
  }
  ScopedEnv env(torchrun_env({{"RANK", "3"},
                              {"WORLD_SIZE", "4"},
                              {"LOCAL_RANK", "1"},
                              {"MASTER_ADDR", "10.1.2.3"},
                              {"MASTER_PORT", "1234"}}));
  const CommOptions o = CommOptions::from_env(cfg);
  EXPECT_EQ(o.rank, 3);
  EXPECT_EQ(o.world_size, 4);
  EXPECT_EQ(o.local_rank, 1);
  EXPECT_EQ(o.master_addr, "10.1.2.3");
  EXPECT_EQ(o.master_port, 1234);
}

TEST(CommTest, BadOrMissingEnvironmentVariablesAreNamed) {
  const config::DistConfig cfg;
  const std::map<std::string, std::string> ok{{"RANK", "1"},
                                              {"WORLD_SIZE", "2"},
                                              {"LOCAL_RANK", "1"},
                                              {"MASTER_ADDR", "127.0.0.1"},
                                              {"MASTER_PORT", "29500"}};
  const auto with = [&](const std::string& k, const std::optional<std::string>& v) {
    auto env = torchrun_env(ok);
    env[k] = v;
    return env;
  };
  const auto expect_config_error = [&](const std::map<std::string, std::optional<std::string>>& e,
                                       std::initializer_list<std::string> fragments) {
    ScopedEnv env(e);
    test::expect_error<ConfigError>([&] { CommOptions::from_env(cfg); }, fragments);
  };
  expect_config_error(with("MASTER_ADDR", std::nullopt),
                      {"MASTER_ADDR is not set", "WORLD_SIZE=2"});
  expect_config_error(with("MASTER_PORT", std::nullopt), {"MASTER_PORT is not set"});
  expect_config_error(with("RANK", std::nullopt), {"RANK is not set"});
  expect_config_error(with("WORLD_SIZE", "two"), {"WORLD_SIZE='two'", "not an integer"});
  expect_config_error(with("WORLD_SIZE", "0"), {"WORLD_SIZE='0'"});
  expect_config_error(with("RANK", "2"), {"RANK='2'", "[0, 1]"});
  expect_config_error(with("RANK", "-1"), {"RANK='-1'"});
  expect_config_error(with("LOCAL_RANK", "x1"), {"LOCAL_RANK='x1'"});
  expect_config_error(with("MASTER_PORT", "70000"), {"MASTER_PORT='70000'", "65535"});
  expect_config_error(with("MASTER_PORT", "29500 "), {"MASTER_PORT='29500 '"});

  // One process needs no master.
  ScopedEnv env(torchrun_env({{"WORLD_SIZE", "1"}}));
  EXPECT_EQ(CommOptions::from_env(cfg).world_size, 1);
}

TEST(CommTest, OptionsAreValidated) {
  CommOptions o;
  o.backend = "mpi";
  o.timeout_s = 0;
  test::expect_error<ConfigError>([&] { Comm c(o); }, {"backend 'mpi'", "timeout_s"});
  o = CommOptions{};
  o.world_size = 2;
  o.rank = 2;
  test::expect_error<ConfigError>([&] { o.validate(); }, {"rank 2"});
}

#ifndef USE_C10D_NCCL
TEST(CommTest, NcclWithoutNcclIsAConfigError) {
  CommOptions o;
  o.backend = "nccl";
  o.world_size = 2;
  test::expect_error<ConfigError>([&] { Comm c(o); }, {"built without NCCL"});
}
#endif

TEST(CommTest, RendezvousWithoutRankZeroTimesOut) {
  CommOptions o;
  o.backend = "gloo";
  o.rank = 1;
  o.world_size = 2;
  o.master_port = test::free_port();
  o.timeout_s = 1;
  const auto t0 = std::chrono::steady_clock::now();
  test::expect_error<Error>([&] { Comm c(o); },
                            {"dist: rendezvous failed on rank 1 of 2 (gloo, master 127.0.0.1:" +
                                 std::to_string(o.master_port) + ", timeout 1 s)",
                             "while connecting to rank 0's store", "rank 0 is running"});
  EXPECT_LT(seconds_since(t0), 5.0);
}

TEST(CommTest, RendezvousWithoutTheOtherRanksTimesOut) {
  CommOptions o;
  o.backend = "gloo";
  o.world_size = 2;
  o.master_port = test::free_port();
  o.timeout_s = 1;
  const auto t0 = std::chrono::steady_clock::now();
  test::expect_error<Error>(
      [&] { Comm c(o); }, {"dist: rendezvous failed on rank 0 of 2",
                           "while waiting for all 2 ranks to join: 1 of 2 ranks joined within 1 s",
                           "all 2 ranks were started"});
  EXPECT_LT(seconds_since(t0), 5.0);
}

TEST(CommIntegrationTest, TwoRanksCollectives) {
  const auto rs = test::run_ranks({"collectives"}, 2, /*timeout_s=*/20, /*deadline_s=*/60);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(rs[r].exit_code, 0) << test::outputs(rs);
    EXPECT_NE(rs[r].output.find("collectives ok on rank " + std::to_string(r)), std::string::npos)
        << test::outputs(rs);
  }
  // Rank 0 logs the group at info.
  EXPECT_NE(rs[0].output.find("gloo process group of 2 ranks ready"), std::string::npos)
      << test::outputs(rs);
}

TEST(CommIntegrationTest, DeadRankEndsTheOthersWithAClearError) {
  constexpr double kTimeout = 5;
  const auto rs = test::run_ranks({"die"}, 2, kTimeout, /*deadline_s=*/kTimeout + 30);
  EXPECT_EQ(rs[1].exit_code, 3) << test::outputs(rs);
  EXPECT_EQ(rs[0].exit_code, 1) << test::outputs(rs);
  EXPECT_NE(rs[0].output.find("dist: all_reduce failed on rank 0 of 2 (gloo, timeout 5 s): "),
            std::string::npos)
      << test::outputs(rs);
  EXPECT_NE(rs[0].output.find("another rank died or is stuck"), std::string::npos)
      << test::outputs(rs);
  // Rank 0 notices within the timeout (plus start-up and slack) of rank 1's death.
  EXPECT_LT(rs[0].seconds - rs[1].seconds, kTimeout + 3) << test::outputs(rs);
}

TEST(CommIntegrationTest, StuckRankTimesOutWithAClearError) {
  constexpr double kTimeout = 5;
  const auto t0 = std::chrono::steady_clock::now();
  // Rank 1 stops calling collectives (and sleeps); only rank 0 is waited for, then rank 1 killed.
  const auto rs = test::run_ranks({"hang"}, 2, kTimeout, /*deadline_s=*/kTimeout + 30, {0});
  const double total = seconds_since(t0);
  EXPECT_EQ(rs[0].exit_code, 1) << test::outputs(rs);
  EXPECT_NE(rs[0].output.find("dist: all_reduce failed on rank 0 of 2 (gloo, timeout 5 s): "),
            std::string::npos)
      << test::outputs(rs);
  EXPECT_NE(rs[0].output.find("another rank died or is stuck"), std::string::npos)
      << test::outputs(rs);
  EXPECT_NE(rs[0].output.find("no result within 5 s"), std::string::npos) << test::outputs(rs);
  EXPECT_NE(rs[1].output.find("rank 1 stops calling collectives"), std::string::npos)
      << test::outputs(rs);
  // Rank 0 gives up one timeout after rank 1 stopped (start-up takes a few seconds on a loaded
  // machine), and the test never waits for the stuck rank itself.
  EXPECT_GT(rs[0].seconds, kTimeout - 0.5) << test::outputs(rs);
  EXPECT_LT(rs[0].seconds, kTimeout + 8) << test::outputs(rs);
  EXPECT_LT(total, kTimeout + 12) << test::outputs(rs);
}

}  // namespace
}  // namespace salad::dist
