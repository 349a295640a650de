#include "salad/dist/comm.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "dist/comm_impl.h"
#include "salad/core/config.h"
#include "salad/core/error.h"

#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace salad::dist {

namespace {

// ---------------------------------------------------------------------------- environment

const char* env_value(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int64_t env_int(const char* name, int64_t fallback, int64_t min, int64_t max) {
  const char* v = env_value(name);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < min || x > max) {
    throw ConfigError(std::string("environment variable ") + name + "='" + v +
                      "' is not an integer in [" + std::to_string(min) + ", " +
                      std::to_string(max) + "] (set by the launcher, e.g. torchrun)");
  }
  return x;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Resolves "auto" and rejects a backend this LibTorch cannot provide.
std::string resolve_backend(const std::string& requested) {
#ifdef USE_C10D_NCCL
  if (requested == "auto") return torch::cuda::is_available() ? "nccl" : "gloo";
  if (requested == "nccl" && !torch::cuda::is_available()) {
    throw ConfigError("dist.backend is nccl but no CUDA device is visible; use gloo or auto");
  }
  return requested;
#else
  if (requested == "nccl") {
    throw ConfigError(
        "dist.backend is nccl but this LibTorch was built without NCCL (a CPU build); use gloo "
        "or auto, or build salad against a CUDA LibTorch");
  }
  return "gloo";
#endif
}

std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  // All ranks on this host talking over loopback (tests, single-node CPU runs): bind there, so
  // no hostname resolution is involved. Otherwise the interface GLOO_SOCKET_IFNAME names (the
  // variable PyTorch honours), else the address this host's name resolves to.
  if (is_loopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  if (const char* ifname = env_value("GLOO_SOCKET_IFNAME")) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// A peer that died closes its sockets; writing to one raises SIGPIPE, whose default action kills
// this process silently, before the collective can report the error. Python ignores SIGPIPE, so
// PyTorch code never sees this; a C++ process has to ask. An installed handler is left alone.
void ignore_sigpipe() {
  struct sigaction old {};
  if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace

// ---------------------------------------------------------------------------- helpers

std::string exception_text(const std::exception_ptr& e) {
  std::string text;
  try {
    std::rethrow_exception(e);
  } catch (const c10::Error& err) {
    text = err.what_without_backtrace();
  } catch (const std::exception& err) {
    text = err.what();
  } catch (...) {
    text = "unknown exception";
  }
  // LibTorch messages can span lines; keep one line, and drop a trailing newline.
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

std::string seconds_text(double s) {
  std::ostringstream os;
  if (s == static_cast<double>(static_cast<int64_t>(s))) {
    os << static_cast<int64_t>(s);
  } else {
    os << s;
  }
  os << " s";
  return os.str();
}

// ---------------------------------------------------------------------------- CommOptions

CommOptions CommOptions::from_env(const config::DistConfig& cfg) {
  CommOptions o;
  o.backend = cfg.backend;
  o.timeout_s = cfg.timeout_s;
  constexpr int64_t kMaxRanks = 1 << 20;
  o.world_size = env_int("WORLD_SIZE", 1, 1, kMaxRanks);
  if (o.world_size > 1 && !env_value("RANK")) {
    throw ConfigError(
        "environment variable RANK is not set but WORLD_SIZE=" + std::to_string(o.world_size) +
        ": launch every rank with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and "
        "MASTER_PORT (torchrun --no-python sets them)");
  }
  o.rank = env_int("RANK", 0, 0, o.world_size - 1);
  o.local_rank = env_int("LOCAL_RANK", 0, 0, kMaxRanks);
  if (const char* addr = env_value("MASTER_ADDR")) {
    o.master_addr = addr;
  } else if (o.world_size > 1) {
    throw ConfigError("environment variable MASTER_ADDR is not set but WORLD_SIZE=" +
                      std::to_string(o.world_size) +
                      ": set it to the address of the host running rank 0 (torchrun sets it)");
  }
  if (!env_value("MASTER_PORT") && o.world_size > 1) {
    throw ConfigError("environment variable MASTER_PORT is not set but WORLD_SIZE=" +
                      std::to_string(o.world_size) +
                      ": set it to a free TCP port on rank 0's host (torchrun sets it)");
  }
  o.master_port = env_int("MASTER_PORT", o.master_port, 1, 65535);
  o.validate();
  return o;
}

void CommOptions::validate() const {
  std::vector<std::string> bad;
  if (backend != "auto" && backend != "nccl" && backend != "gloo") {
    bad.push_back("backend '" + backend + "' (expected auto, nccl or gloo)");
  }
  if (!(timeout_s > 0)) bad.push_back("timeout_s " + std::to_string(timeout_s) + " (must be > 0)");
  if (world_size < 1) bad.push_back("world_size " + std::to_string(world_size) + " (must be >= 1)");
  if (rank < 0 || rank >= world_size) {
    bad.push_back("rank " + std::to_string(rank) +
                  " (must be in [0, world_size=" + std::to_string(world_size) + "))");
  }
  if (local_rank < 0) bad.push_back("local_rank " + std::to_string(local_rank) + " (must be >= 0)");
  if (master_addr.empty()) bad.push_back("master_addr is empty");
  if (master_port < 1 || master_port > 65535) {
    bad.push_back("master_port " + std::to_string(master_port) + " (must be in [1, 65535])");
  }
  if (bad.empty()) return;
  std::string msg = "dist: bad communication options:";
  for (const auto& b : bad) msg += "\n  " + b;
  throw ConfigError(msg);
}

// ---------------------------------------------------------------------------- Comm::Impl

Comm::Impl::Impl(const CommOptions& o) : options(o) {
  options.validate();
  if (!distributed()) return;  // backend "none": no store, no group
  backend = resolve_backend(options.backend);
  timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000.0 + 0.5));
  ignore_sigpipe();

  const std::string master = options.master_addr + ":" + std::to_string(options.master_port);
  // What the rendezvous was doing when it failed, for the message.
  std::string phase =
      options.rank == 0 ? "while starting the store" : "while connecting to rank 0's store";
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(options.master_port);
    so.isServer = options.rank == 0;
    so.numWorkers = static_cast<std::size_t>(options.world_size);
    // We count the ranks ourselves below: TCPStore's own wait (1.13) does not bound the whole
    // rendezvous by the timeout, and its error does not say how many ranks were missing.
    so.waitWorkers = false;
    so.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, so);

    phase = "while waiting for all " + std::to_string(options.world_size) + " ranks to join";
    const std::string key = "salad/dist/joined";
    store->add(key, 1);
    for (int64_t joined = store->add(key, 0); joined < options.world_size;
         joined = store->add(key, 0)) {
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error(std::to_string(joined) + " of " +
                                 std::to_string(options.world_size) + " ranks joined within " +
                                 seconds_text(options.timeout_s));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    phase = "while connecting the " + backend + " process group";

    if (backend == "gloo") {
      auto go = c10d::ProcessGroupGloo::Options::create(timeout);
      go->devices.push_back(gloo_device(options.master_addr));
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(options.rank),
                                                       static_cast<int>(options.world_size), go);
    } else {
#ifdef USE_C10D_NCCL
      // Blocking wait makes Work::wait(timeout) block the host and throw on timeout, as Gloo
      // does; without it a stuck NCCL collective is only noticed by the watchdog.
#if TORCH_VERSION_MAJOR >= 2
      ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
#else
      ::setenv("NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
#endif
      device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(options.local_rank));
      c10::cuda::set_device(device.index());
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(options.rank),
                                                       static_cast<int>(options.world_size), no);
#endif
    }
  } catch (const std::exception&) {
    // Leave the half-built group and store to their destructors; they do not block here.
    throw Error("dist: rendezvous failed on rank " + std::to_string(options.rank) + " of " +
                std::to_string(options.world_size) + " (" + backend + ", master " + master +
                ", timeout " + seconds_text(options.timeout_s) + ") " + phase + ": " +
                exception_text(std::current_exception()) + " — check that all " +
                std::to_string(options.world_size) +
                " ranks were started with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, that "
                "rank 0 is running and that its port is free and reachable");
  }
  if (options.rank == 0) {
    spdlog::info("dist: {} process group of {} ranks ready (master {}, timeout {}, local rank {})",
                 backend, options.world_size, master, seconds_text(options.timeout_s),
                 options.local_rank);
  }
}

Comm::Impl::~Impl() {
  if (broken_) {
    // A failed or timed-out collective may still occupy the group's worker threads, and its
    // destructor joins them; the process is about to report the error and exit, so let it go
    // rather than wait (possibly one timeout per queued bucket).
    (void)pg.release();
    (void)store.release();
  }
}

std::string Comm::Impl::where(bool with_timeout) const {
  std::string s = "rank " + std::to_string(options.rank) + " of " +
                  std::to_string(options.world_size) + " (" + backend;
  if (with_timeout) s += ", timeout " + seconds_text(options.timeout_s);
  return s + ")";
}

WorkPtr Comm::Impl::launch(const char* op, const std::function<WorkPtr()>& start) {
  if (broken_) {
    std::lock_guard<std::mutex> lock(mu_);
    throw Error(std::string("dist: ") + op + " refused on " + where(false) +
                ": an earlier collective failed (" + first_error_ + ")");
  }
  try {
    return start();
  } catch (const std::exception&) {
    // Rejected before anything was sent (bad dtype, device, shape): a bug on this rank.
    throw Error(std::string("dist: ") + op + " could not start on " + where(false) + ": " +
                exception_text(std::current_exception()));
  }
}

void Comm::Impl::wait(const char* op, const WorkPtr& work) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    work->wait(timeout);
  } catch (const std::exception&) {
    const std::string cause = exception_text(std::current_exception());
    // Work::wait's own timeout or Gloo's (which may fire a moment earlier).
    const bool timed_out = std::chrono::steady_clock::now() - t0 >= timeout * 9 / 10 ||
                           cause.find("imed out") != std::string::npos;
    std::string msg =
        std::string("dist: ") + op + " failed on " + where() + ": " +
        (timed_out ? "no result within " + seconds_text(options.timeout_s) + " (" + cause + ")"
                   : cause) +
        " — another rank died or is stuck (its log may show the first error)";
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (first_error_.empty()) first_error_ = msg;
    }
    broken_ = true;
    throw Error(msg);
  }
}

WorkPtr Comm::Impl::all_reduce_async(const at::Tensor& contiguous, c10d::ReduceOp op) {
  std::vector<at::Tensor> ts{contiguous};
  c10d::AllreduceOptions ao;
  ao.reduceOp = op;
  return pg->allreduce(ts, ao);
}

// ---------------------------------------------------------------------------- Comm

Comm::Comm(const CommOptions& o) : impl_(std::make_unique<Impl>(o)) {}
Comm::~Comm() = default;

int64_t Comm::rank() const { return impl_->options.rank; }
int64_t Comm::world_size() const { return impl_->options.world_size; }
int64_t Comm::local_rank() const { return impl_->options.local_rank; }
bool Comm::distributed() const { return impl_->distributed(); }
const std::string& Comm::backend() const { return impl_->backend; }
const CommOptions& Comm::options() const { return impl_->options; }

void Comm::all_reduce_sum(const at::Tensor& t) {
  if (!distributed()) return;
  if (t.is_contiguous()) {
    impl_->run("all_reduce", [&] { return impl_->all_reduce_async(t); });
    return;
  }
  at::Tensor c = t.contiguous();
  impl_->run("all_reduce", [&] { return impl_->all_reduce_async(c); });
  t.copy_(c);
}

void Comm::broadcast(const at::Tensor& t, int64_t root) {
  if (root < 0 || root >= world_size()) {
    throw Error("dist: broadcast root " + std::to_string(root) + " is not a rank (world size " +
                std::to_string(world_size()) + ")");
  }
  if (!distributed()) return;
  at::Tensor c = t.is_contiguous() ? t : t.contiguous();
  impl_->run("broadcast", [&] {
    std::vector<at::Tensor> ts{c};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    return impl_->pg->broadcast(ts, bo);
  });
  if (!c.is_same(t)) t.copy_(c);
}

void Comm::all_gather(const at::Tensor& flat_out, const at::Tensor& shard) {
  const int64_t n = shard.numel();
  if (flat_out.dim() != 1 || !flat_out.is_contiguous() || flat_out.numel() != n * world_size() ||
      flat_out.scalar_type() != shard.scalar_type()) {
    std::ostringstream os;
    os << "dist: all_gather needs a contiguous 1-D flat_out of world_size * shard numel = "
       << world_size() << " * " << n << " elements of the shard's dtype " << shard.scalar_type()
       << "; got " << flat_out.sizes() << " " << flat_out.scalar_type()
       << (flat_out.is_contiguous() ? "" : " (not contiguous)");
    throw Error(os.str());
  }
  at::Tensor own = flat_out.narrow(0, rank() * n, n);
  const bool aliased = shard.is_contiguous() && shard.data_ptr() == own.data_ptr();
  if (!distributed()) {
    if (!aliased) own.copy_(shard.reshape({-1}));
    return;
  }
  at::Tensor input = shard.reshape({-1});
  // The backend may write our slice of the output while it still reads the input; never let
  // the two share memory.
  const auto* in_begin = static_cast<const char*>(input.data_ptr());
  const auto* out_begin = static_cast<const char*>(flat_out.data_ptr());
  const auto bytes = [](const at::Tensor& x) { return x.numel() * x.element_size(); };
  if (in_begin < out_begin + bytes(flat_out) && out_begin < in_begin + bytes(input)) {
    input = input.clone();
  } else if (!input.is_contiguous()) {
    input = input.contiguous();
  }
  if (impl_->backend == "nccl") {
    at::Tensor out = flat_out;
    impl_->run("all_gather", [&] { return impl_->pg->_allgather_base(out, input); });
    return;
  }
  // Gloo (1.13 and 2.x) has no flat all-gather; the list form writes the rank slices.
  std::vector<std::vector<at::Tensor>> outs(1);
  for (int64_t r = 0; r < world_size(); ++r) outs[0].push_back(flat_out.narrow(0, r * n, n));
  std::vector<at::Tensor> ins{input};
  impl_->run("all_gather", [&] { return impl_->pg->allgather(outs, ins); });
}

void Comm::barrier() {
  if (!distributed()) return;
  impl_->run("barrier", [&] { return impl_->pg->barrier(); });
}

double Comm::sum(double v) {
  if (!distributed()) return v;
  at::Tensor t = at::full({1}, v, at::TensorOptions().dtype(at::kDouble).device(impl_->device));
  impl_->run("sum", [&] { return impl_->all_reduce_async(t); });
  return t.item<double>();
}

double Comm::max(double v) {
  if (!distributed()) return v;
  at::Tensor t = at::full({1}, v, at::TensorOptions().dtype(at::kDouble).device(impl_->device));
  impl_->run("max", [&] { return impl_->all_reduce_async(t, c10d::ReduceOp::MAX); });
  return t.item<double>();
}

std::string Comm::broadcast_string(const std::string& s, int64_t root) {
  if (root < 0 || root >= world_size()) {
    throw Error("dist: broadcast_string root " + std::to_string(root) +
                " is not a rank (world size " + std::to_string(world_size()) + ")");
  }
  if (!distributed()) return s;
  const auto dev = at::TensorOptions().device(impl_->device);
  at::Tensor len =
      at::full({1}, rank() == root ? static_cast<int64_t>(s.size()) : 0, dev.dtype(at::kLong));
  impl_->run("broadcast_string", [&] {
    std::vector<at::Tensor> ts{len};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    return impl_->pg->broadcast(ts, bo);
  });
  const int64_t n = len.item<int64_t>();
  if (n == 0) return {};
  at::Tensor bytes = at::empty({n}, at::TensorOptions().dtype(at::kByte));
  if (rank() == root) std::memcpy(bytes.data_ptr(), s.data(), s.size());
  at::Tensor on_dev = bytes.to(impl_->device);
  impl_->run("broadcast_string", [&] {
    std::vector<at::Tensor> ts{on_dev};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    return impl_->pg->broadcast(ts, bo);
  });
  bytes = on_dev.cpu().contiguous();
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(n));
}

}  // namespace salad::dist
