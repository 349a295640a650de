// Private: the c10d side of salad::dist::Comm, shared by comm.cpp and grad_buckets.cpp.
//
// LibTorch 1.13 and 2.x differ here: in 2.x ProcessGroupGloo/NCCL derive from c10d::Backend (the
// c10d::ProcessGroup of 2.x is a dispatcher over backends), in 1.13 from c10d::ProcessGroup. Both
// expose the same collective calls returning c10::intrusive_ptr<c10d::Work>, so we hold the
// backend object directly.
#pragma once

// ProcessGroupGloo.hpp is empty without this; LibTorch's CMake package normally defines it (every
// Linux LibTorch ships Gloo), this covers builds that take their flags from elsewhere.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif

#include <torch/version.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "salad/dist/comm.h"

namespace salad::dist {

#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

struct Comm::Impl {
  CommOptions options;
  std::string backend = "none";   ///< resolved: gloo | nccl | none
  c10::Device device{c10::kCPU};  ///< where the helpers' scratch tensors live (CUDA for NCCL)
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<BackendBase> pg;

  explicit Impl(const CommOptions& o);
  ~Impl();

  bool distributed() const { return options.world_size > 1; }

  /// Starts a collective (`op` names it in errors). Throws salad::Error when the group failed
  /// earlier or the backend rejects the call.
  WorkPtr launch(const char* op, const std::function<WorkPtr()>& start);
  /// Waits up to the timeout; a failure or timeout throws salad::Error and breaks the group.
  void wait(const char* op, const WorkPtr& work);
  void run(const char* op, const std::function<WorkPtr()>& start) { wait(op, launch(op, start)); }

  WorkPtr all_reduce_async(const at::Tensor& contiguous, c10d::ReduceOp op = c10d::ReduceOp::SUM);

  /// "rank 0 of 2 (gloo, timeout 5 s)".
  std::string where(bool with_timeout = true) const;

 private:
  std::atomic<bool> broken_{false};
  std::mutex mu_;
  std::string first_error_;  // guarded by mu_
};

/// The message of any exception, without LibTorch's C++ backtrace, on one line.
std::string exception_text(const std::exception_ptr& e);

/// "5 s", "0.5 s".
std::string seconds_text(double s);

}  // namespace salad::dist
