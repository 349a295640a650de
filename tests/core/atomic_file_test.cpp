#include "salad/core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad {
namespace {

using test::TempDir;

size_t count_files(const std::filesystem::path& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

TEST(AtomicFileTest, ReplacesContent) {
  TempDir d;
  write_file_atomic(d / "f.txt", "one");
  write_file_atomic(d / "f.txt", "two");
  EXPECT_EQ(test::read_text(d / "f.txt"), "two");
  EXPECT_EQ(count_files(d.path()), 1u);
}

TEST(AtomicFileTest, FailureMidWriteKeepsTheOldFileAndNoTemp) {
  TempDir d;
  write_file_atomic(d / "f.txt", "precious");
  EXPECT_THROW(write_file_atomic(d / "f.txt",
                                 [&](int fd) {
                                   write_all(fd, "par", 3, d / "f.txt");
                                   throw IoError("simulated: no space left on device");
                                 }),
               IoError);
  EXPECT_EQ(test::read_text(d / "f.txt"), "precious");
  EXPECT_EQ(count_files(d.path()), 1u);
}

TEST(AtomicFileTest, DiskFullIsAnIoErrorAndTheTargetIsUntouched) {
  // /dev/full answers every write with ENOSPC.
  int fd = ::open("/dev/full", O_WRONLY);
  if (fd < 0) GTEST_SKIP() << "/dev/full is not available";
  test::expect_error<IoError>([&] { write_all(fd, "x", 1, "/dev/full"); },
                              {"writing /dev/full", "No space left on device"});
  ::close(fd);
}

TEST(AtomicFileTest, UnwritableFolderNamesTheFile) {
  test::expect_error<IoError>([] { write_file_atomic("/nonexistent-dir/f.txt", "x"); },
                              {"/nonexistent-dir/f.txt"});
}

}  // namespace
}  // namespace salad
