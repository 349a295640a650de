// salad::Error and its subclasses. The library throws these for a user's mistake (bad config,
// unreadable file, inconsistent checkpoint, bad data); it never exits or aborts. Apps map them to
// exit codes (see exit_code()).
#pragma once

#include <stdexcept>
#include <string>

namespace salad {

/// Base of every error salad reports to a user. The message names the file and key/tensor and
/// says what was expected and what was found.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A config file, `--set` override or option struct is wrong.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A file could not be opened, read, written or parsed at the byte level.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A checkpoint (weights, optimizer state, trainer state) does not match what is expected.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

/// A data item (audio, manifest line, transcript) is unusable.
class DataError : public Error {
 public:
  using Error::Error;
};

/// Process exit codes used by every salad app.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,       ///< any other salad::Error
  kExitUsage = 2,       ///< bad command line
  kExitConfig = 3,      ///< ConfigError
  kExitIo = 4,          ///< IoError
  kExitCheckpoint = 5,  ///< CheckpointError
  kExitData = 6,        ///< DataError
  kExitInternal = 70,   ///< an unexpected exception (a bug in salad)
};

/// The exit code for an exception caught at the top of an app.
int exit_code(const std::exception& e) noexcept;

/// errno as text ("No such file or directory"), for IoError messages.
std::string errno_text(int err);

}  // namespace salad
