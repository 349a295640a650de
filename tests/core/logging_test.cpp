#include "salad/core/logging.h"

#include <spdlog/sinks/ostream_sink.h>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad {
namespace {

TEST(LoggingTest, UnknownLevelIsAConfigError) {
  test::expect_error<ConfigError>([] { setup_logging({"loud"}); }, {"unknown log level 'loud'"});
}

TEST(LoggingTest, NonZeroRanksLogWarningsOnlyUnlessAsked) {
  setup_logging({"info", 1, false, ""});
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::warn);
  setup_logging({"info", 1, true, ""});
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::info);
  setup_logging({"debug", 0, false, ""});
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::debug);
  setup_logging();
}

TEST(LoggingTest, FileSinkReceivesMessages) {
  test::TempDir d;
  setup_logging({"info", 0, false, (d / "log.txt").string()});
  spdlog::info("hello {}", 42);
  spdlog::default_logger()->flush();
  EXPECT_NE(test::read_text(d / "log.txt").find("hello 42"), std::string::npos);
  setup_logging();
}

TEST(LoggingTest, RankFromEnvironment) {
  ::setenv("RANK", "3", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  EXPECT_EQ(env_rank(), 3);
  EXPECT_EQ(env_world_size(), 4);
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  EXPECT_EQ(env_rank(), 0);
  EXPECT_EQ(env_world_size(), 1);
}

}  // namespace
}  // namespace salad
