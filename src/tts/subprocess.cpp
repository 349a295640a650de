#include "tts/subprocess.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "salad/core/error.h"
#include "salad/tts/tts.h"

extern char** environ;

namespace salad::tts::detail {

namespace fs = std::filesystem;

namespace {

/// posix_spawn's attribute and file-action objects, destroyed on every path.
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  SpawnSetup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

std::string read_tail(const fs::path& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return {};
  const std::streamoff size = in.tellg();
  const std::streamoff from =
      std::max<std::streamoff>(0, size - static_cast<std::streamoff>(bytes));
  in.seekg(from);
  std::string s(static_cast<size_t>(size - from), '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

/// Whether `pid` has ended, without reaping it (the zombie keeps its process group id reserved,
/// so killing the group afterwards cannot hit a recycled id).
bool has_exited(pid_t pid) {
  siginfo_t info{};
  for (;;) {
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
      return info.si_pid == pid;
    }
    if (errno != EINTR) return true;  // ECHILD: nothing left to wait for
  }
}

int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, double timeout_s,
                          const fs::path& stderr_file, const std::string& what,
                          const fs::path& stdout_file, size_t stderr_tail_bytes) {
  if (argv.empty()) throw std::invalid_argument("run_process: empty argv");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  SpawnSetup s;
  // Own process group (so a timeout kills grandchildren too), default signal dispositions and
  // an empty mask: the caller may ignore SIGPIPE or block signals in its threads.
  posix_spawnattr_setpgroup(&s.attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  posix_spawnattr_setflags(&s.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
  if (stdout_file.empty()) {
    posix_spawn_file_actions_addopen(&s.actions, 1, "/dev/null", O_WRONLY, 0);
  } else {
    posix_spawn_file_actions_addopen(&s.actions, 1, stdout_file.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
  }
  posix_spawn_file_actions_addopen(&s.actions, 2, stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);

  pid_t pid = 0;
  const int err = ::posix_spawnp(&pid, args[0], &s.actions, &s.attr, args.data(), environ);
  if (err != 0) {
    throw TtsError("failed", what + ": cannot run '" + argv[0] + "': " + errno_text(err));
  }

  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                           std::chrono::duration<double>(std::max(timeout_s, 0.0)));
  auto pause = std::chrono::milliseconds(2);
  bool timed_out = false;
  while (!has_exited(pid)) {
    if (clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  // Also after a normal exit: whatever the program left running in its group goes with it.
  ::kill(-pid, SIGKILL);
  ProcessResult r;
  r.exit_code = reap(pid);
  if (timed_out) {
    throw TtsError("timeout",
                   what + ": '" + argv[0] + "' did not finish within " + std::to_string(timeout_s) +
                       " s (killed; raise tts.timeout_s / --timeout if it is just slow)");
  }
  r.stderr_tail = read_tail(stderr_file, stderr_tail_bytes);
  return r;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

fs::path find_on_path(const std::string& program) {
  auto executable = [](const fs::path& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (program.empty()) return {};
  if (program.find('/') != std::string::npos)
    return executable(program) ? fs::path(program) : fs::path();
  const char* env = std::getenv("PATH");
  const std::string path = env ? env : "/usr/local/bin:/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= path.size()) {
    size_t end = path.find(':', begin);
    if (end == std::string::npos) end = path.size();
    const std::string dir = end > begin ? path.substr(begin, end - begin) : ".";
    const fs::path candidate = fs::path(dir) / program;
    if (executable(candidate)) return candidate;
    begin = end + 1;
  }
  return {};
}

ScratchDir::ScratchDir() {
  std::string tmpl = (fs::temp_directory_path() / "salad-tts-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    throw IoError("cannot create a temp folder " + tmpl + ": " + errno_text(errno) +
                  " (set TMPDIR to a writable folder)");
  }
  path_ = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace salad::tts::detail
