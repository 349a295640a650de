// Launches salad_dist_worker as a group of ranks (like torchrun) for the multi-process dist tests.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

extern char** environ;

namespace salad::test {

/// A TCP port that was free on 127.0.0.1 a moment ago.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("free_port: cannot bind a socket");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

struct RankResult {
  int exit_code = -1;  ///< -1: killed by the test (or by a signal)
  int signal = 0;      ///< the signal that ended it, if any
  double seconds = 0;  ///< from launch until it ended (or was killed)
  std::string output;  ///< stdout + stderr
};

/// One attempt of run_ranks() (below).
inline std::vector<RankResult> run_ranks_once(const std::vector<std::string>& args, int world,
                                              double timeout_s, double deadline_s,
                                              const std::vector<int>& wait_ranks) {
  TempDir logs;
  const int port = free_port();
  std::vector<pid_t> pids(world, -1);
  std::vector<RankResult> results(world);
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < world; ++r) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      const auto eq = kv.find('=');
      if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    env["RANK"] = std::to_string(r);
    env["LOCAL_RANK"] = std::to_string(r);
    env["WORLD_SIZE"] = std::to_string(world);
    env["MASTER_ADDR"] = "127.0.0.1";
    env["MASTER_PORT"] = std::to_string(port);
    env["SALAD_TEST_TIMEOUT_S"] = std::to_string(timeout_s);
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);

    std::vector<std::string> argv_strings{SALAD_DIST_WORKER_EXE};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    const std::string log = (logs / ("rank" + std::to_string(r) + ".log")).string();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    const int rc = ::posix_spawn(&pids[r], argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      for (int q = 0; q < r; ++q) ::kill(pids[q], SIGKILL), ::waitpid(pids[q], nullptr, 0);
      throw std::runtime_error("cannot start " + argv_strings[0]);
    }
  }

  std::vector<bool> done(world, false);
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const auto waited_for_all = [&] {
    if (wait_ranks.empty()) {
      for (int r = 0; r < world; ++r)
        if (!done[r]) return false;
      return true;
    }
    for (int r : wait_ranks)
      if (!done[r]) return false;
    return true;
  };
  const auto reap = [&] {
    for (int r = 0; r < world; ++r) {
      int status = 0;
      if (done[r] || ::waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      done[r] = true;
      results[r].seconds = elapsed();
      if (WIFEXITED(status)) results[r].exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) results[r].signal = WTERMSIG(status);
    }
  };
  while (!waited_for_all() && elapsed() < deadline_s) {
    reap();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  reap();
  for (int r = 0; r < world; ++r) {
    if (!done[r]) {
      ::kill(pids[r], SIGKILL);
      ::waitpid(pids[r], nullptr, 0);
      results[r].seconds = elapsed();
    }
    results[r].output = read_text(logs / ("rank" + std::to_string(r) + ".log"));
  }
  return results;
}

/// Runs `world` ranks of salad_dist_worker with `args`, torchrun's variables and
/// SALAD_TEST_TIMEOUT_S=timeout_s. Waits until every rank in `wait_ranks` (all when empty) has
/// exited or `deadline_s` passed, then kills whatever still runs. Starts again (up to twice) when
/// another process took the port between free_port() and rank 0's bind (tests run in parallel).
inline std::vector<RankResult> run_ranks(const std::vector<std::string>& args, int world,
                                         double timeout_s, double deadline_s,
                                         const std::vector<int>& wait_ranks = {}) {
  for (int attempt = 0;; ++attempt) {
    auto rs = run_ranks_once(args, world, timeout_s, deadline_s, wait_ranks);
    if (attempt == 2 || rs[0].output.find("ddress already in use") == std::string::npos) return rs;
  }
}

/// All ranks' outputs, labelled, for failure messages.
inline std::string outputs(const std::vector<RankResult>& rs) {
  std::string s;
  for (size_t r = 0; r < rs.size(); ++r) {
    s += "---- rank " + std::to_string(r) + " (exit " + std::to_string(rs[r].exit_code) +
         (rs[r].signal ? ", signal " + std::to_string(rs[r].signal) : std::string()) + ", " +
         std::to_string(rs[r].seconds) + " s)\n" + rs[r].output;
  }
  return s;
}

}  // namespace salad::test
