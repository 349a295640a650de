// Running an external program with a time limit, for the TTS backends that call other programs
// (espeak-ng, a user's command). Private to src/tts.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace salad::tts::detail {

/// What a finished (not timed out) child did.
struct ProcessResult {
  int exit_code = 0;        ///< WEXITSTATUS, or 128 + signal number when a signal ended it
  std::string stderr_tail;  ///< the last `stderr_tail_bytes` bytes the program wrote to stderr
};

/// Runs argv[0] (looked up on PATH when it has no '/') with `argv`, stdin from /dev/null, stdout
/// to `stdout_file` (empty: discarded) and stderr to `stderr_file`, in a process group of its own.
/// The group is polled; after `timeout_s` seconds the whole group (grandchildren included) is
/// killed with SIGKILL and TtsError("timeout") is thrown naming `what`; after a normal exit the
/// group is killed too, so nothing the program started in the background outlives it. Throws
/// TtsError("failed") when the program cannot be started. Thread-safe: several children can run at
/// once.
ProcessResult run_process(const std::vector<std::string>& argv, double timeout_s,
                          const std::filesystem::path& stderr_file, const std::string& what,
                          const std::filesystem::path& stdout_file = {},
                          size_t stderr_tail_bytes = 500);

/// `s` quoted for /bin/sh: inside single quotes, each ' written as '\''. The shell passes the
/// result through verbatim ($, `, ", \, ;, newlines included).
std::string shell_quote(const std::string& s);

/// The full path of `program` found on $PATH (or `program` itself when it contains '/' and is
/// executable); empty when not found.
std::filesystem::path find_on_path(const std::string& program);

/// A fresh private folder under the temp directory, removed with its content at scope exit.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace salad::tts::detail
