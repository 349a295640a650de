// Data-parallel communication over c10d: a process group (Gloo on CPU, NCCL on CUDA builds) set up
// from torchrun's environment variables, blocking collectives with a timeout, and bucketed
// gradient all-reduce overlapped with backward.
//
// Every collective is bounded by CommOptions::timeout_s: when another rank dies or hangs, the
// call throws salad::Error naming the op, this rank, the world size, the backend, the timeout and
// the underlying cause, instead of hanging. After such a failure the Comm is broken: every later
// collective throws at once, and the destructor does not wait for the stuck process group.
//
// Thread-safety: a Comm and a GradBuckets are used from one thread (the trainer's); GradBuckets'
// hooks run on autograd's thread during backward and synchronise internally.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace salad::config {
struct DistConfig;
}

namespace salad::dist {

/// How to join the process group.
struct CommOptions {
  /// auto (NCCL when LibTorch was built with NCCL and a CUDA device is present, else Gloo) |
  /// nccl | gloo.
  std::string backend = "auto";
  double timeout_s = 600.0;  ///< every collective and the rendezvous
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;

  /// backend and timeout_s from `cfg`; RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
  /// (torchrun's variables) from the environment. Unset variables mean a single process; when
  /// WORLD_SIZE > 1, RANK, MASTER_ADDR and MASTER_PORT are required. A missing or bad variable
  /// throws salad::ConfigError naming it and the value found.
  static CommOptions from_env(const config::DistConfig& cfg);

  /// Throws salad::ConfigError listing every bad field.
  void validate() const;
};

/// A process group. world_size 1: no process group; every collective is a cheap no-op.
class Comm {
 public:
  /// Rendezvous through a c10d::TCPStore hosted by rank 0 at master_addr:master_port, then a
  /// ProcessGroupGloo (or ProcessGroupNCCL). Throws salad::Error when the rendezvous fails or
  /// times out, salad::ConfigError for bad options (including nccl without NCCL support).
  explicit Comm(const CommOptions& o);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int64_t rank() const;
  int64_t world_size() const;
  int64_t local_rank() const;
  bool distributed() const;            ///< world_size > 1
  const std::string& backend() const;  ///< "gloo" | "nccl" | "none"
  const CommOptions& options() const;  ///< as given (backend unresolved)

  /// In-place SUM over ranks, blocking. Any dtype the backend supports; a non-contiguous tensor
  /// is reduced through a contiguous copy.
  void all_reduce_sum(const at::Tensor& t);
  /// In place: every rank gets root's values.
  void broadcast(const at::Tensor& t, int64_t root = 0);
  /// flat_out: 1-D, world_size * shard.numel(), rank order; every rank's slice of flat_out gets
  /// that rank's `shard`. `shard` may alias this rank's slice of flat_out.
  void all_gather(const at::Tensor& flat_out, const at::Tensor& shard);
  void barrier();
  double sum(double v);  ///< fp64 all-reduce helpers
  double max(double v);
  /// root's string on every rank (any bytes).
  std::string broadcast_string(const std::string& s, int64_t root = 0);

  struct Impl;  ///< c10d state (src/dist/comm_impl.h); opaque to users

 private:
  friend class GradBuckets;
  std::unique_ptr<Impl> impl_;
};

/// Gradient all-reduce in flat buckets, overlapped with backward.
///
/// `params`: trainable leaf parameters whose .grad() are views into the 1-D contiguous `flat_grad`
/// (param i's grad = flat_grad.narrow(0, offset_i, numel_i).view(shape)), listed in increasing
/// offset order. Buckets are consecutive ranges of flat_grad of about `bucket_bytes`, cut at
/// parameter boundaries; together they cover all of flat_grad (padding included). Autograd
/// accumulates in place into those views (a defined grad, grad mode off during backward), so after
/// a backward flat_grad holds this rank's gradient.
///
/// Buckets are all-reduced in descending index order on every rank (collectives must be issued in
/// the same order everywhere); a bucket is launched from backward as soon as all of its parameters
/// and every bucket after it are ready, so put the parameters whose gradients come first in
/// backward (the output side) last in flat order.
class GradBuckets {
 public:
  /// Throws salad::Error if a parameter is not a leaf that requires grad or its grad is not the
  /// view of flat_grad described above.
  GradBuckets(std::shared_ptr<Comm> comm, std::vector<at::Tensor> params, at::Tensor flat_grad,
              int64_t bucket_bytes = 25 << 20);
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  /// Before each micro-batch's backward. sync = true on the last micro-batch of an optimizer step:
  /// during that backward, each bucket's asynchronous SUM all-reduce is launched once all of its
  /// parameters have had their gradient accumulated.
  void begin(bool sync);
  /// After the last backward: launches the buckets not launched yet (parameters without a
  /// gradient in this step), waits for all; flat_grad then holds the SUM over ranks. A failed or
  /// timed-out collective throws salad::Error. A no-op when not distributed.
  void finish();

  int64_t bucket_count() const;
  /// [begin, end) element ranges of flat_grad, one per bucket.
  std::vector<std::pair<int64_t, int64_t>> bucket_ranges() const;
  /// Buckets launched from backward hooks in the last sync step (for tests and logs).
  int64_t launched_during_backward() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace salad::dist
