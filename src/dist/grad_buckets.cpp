// Bucketed gradient all-reduce overlapped with backward.
//
// A post hook on each parameter's gradient accumulator (the AccumulateGrad node, which runs once
// per backward after it has added the parameter's gradient into .grad) counts the parameters of
// its bucket; the engine sums every contribution to a leaf before running that node, so one firing
// per parameter per backward means "this gradient is final". Collectives must be issued in the
// same order on every rank, and which parameters get a gradient can differ between ranks (a
// text-only micro-batch leaves the adapter without one), so buckets are launched strictly in
// descending index order: a ready bucket waits for every bucket after it. What backward never
// made ready is launched by finish().
#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdint>
#include <mutex>
#include <sstream>

#include "dist/comm_impl.h"
#include "salad/core/error.h"
#include "salad/dist/comm.h"

namespace salad::dist {

namespace {

std::string bytes_text(int64_t bytes) {
  std::ostringstream os;
  os.precision(3);
  if (bytes < 1024) {
    os << bytes << " B";
  } else if (bytes < (1 << 20)) {
    os << static_cast<double>(bytes) / 1024 << " KiB";
  } else {
    os << static_cast<double>(bytes) / (1 << 20) << " MiB";
  }
  return os.str();
}

std::string shape_text(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

struct GradBuckets::Impl {
  struct Bucket {
    int64_t begin = 0, end = 0;              // elements of flat_grad
    int64_t first_param = 0, end_param = 0;  // [first, end) indices into params
    at::Tensor view;                         // flat_grad[begin:end]
    int64_t pending = 0;                     // parameters not ready yet in this sync step
    WorkPtr work;                            // set once launched
  };

  std::shared_ptr<Comm> comm;
  Comm::Impl* comm_impl = nullptr;  // comm's c10d side (GradBuckets is Comm's friend)
  std::vector<at::Tensor> params;
  at::Tensor flat;
  std::vector<int64_t> offsets;  // param i's grad starts at flat[offsets[i]]
  std::vector<Bucket> buckets;
  std::vector<int64_t> param_bucket;

  // Hooks; the accumulators are held so the nodes carrying our hooks outlive every graph.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hook_keys;

  std::mutex mu;  // hooks run on autograd's thread
  bool sync = false;
  std::vector<uint8_t> fired;
  int64_t next_launch = -1;  // the bucket to launch next (descending); -1: all launched
  int64_t launched_in_backward = 0;
  std::string error;  // first problem seen by a hook; finish() throws it

  Comm::Impl& c() { return *comm_impl; }

  void on_ready(int64_t i);
  void launch_ready_locked(bool from_hook);
  void launch_locked(int64_t k);
  void check_views(const char* when) const;
};

namespace {

class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradBuckets::Impl* owner, int64_t index) : owner_(owner), index_(index) {}
  torch::autograd::variable_list operator()(
      const torch::autograd::variable_list& outputs,
      const torch::autograd::variable_list& /*inputs*/) override {
    owner_->on_ready(index_);
    return outputs;
  }

 private:
  GradBuckets::Impl* owner_;
  int64_t index_;
};

}  // namespace

void GradBuckets::Impl::on_ready(int64_t i) {
  std::lock_guard<std::mutex> lock(mu);
  if (!sync) return;
  if (fired[i]) {
    if (error.empty()) {
      error = "dist: GradBuckets: parameter " + std::to_string(i) + " (shape " +
              shape_text(params[i]) +
              ") received a gradient twice in one sync step (two backward passes after "
              "begin(true)?); its bucket may already have been reduced, so call begin(true) "
              "only before the last backward of a step";
    }
    return;
  }
  fired[i] = 1;
  if (--buckets[param_bucket[i]].pending == 0) launch_ready_locked(/*from_hook=*/true);
}

void GradBuckets::Impl::launch_ready_locked(bool from_hook) {
  while (next_launch >= 0 && error.empty() && buckets[next_launch].pending == 0) {
    launch_locked(next_launch--);
    if (from_hook && error.empty()) ++launched_in_backward;
  }
}

void GradBuckets::Impl::launch_locked(int64_t k) {
  try {
    Bucket& b = buckets[k];
    b.work = c().launch("gradient all_reduce", [&] { return c().all_reduce_async(b.view); });
  } catch (const std::exception& e) {
    if (error.empty()) error = e.what();
  }
}

void GradBuckets::Impl::check_views(const char* when) const {
  const auto* base = static_cast<const char*>(flat.data_ptr());
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& g = params[i].grad();
    if (!g.defined() || g.data_ptr() != base + offsets[i] * flat.element_size()) {
      throw Error("dist: GradBuckets::" + std::string(when) + ": the gradient of parameter " +
                  std::to_string(i) + " (shape " + shape_text(params[i]) +
                  ") is no longer the view of flat_grad at element " + std::to_string(offsets[i]) +
                  (g.defined() ? "" : " (it is undefined)") +
                  "; was it replaced (zero_grad with set_to_none, an assignment to .grad(), or "
                  "a backward with create_graph)?");
    }
  }
}

GradBuckets::GradBuckets(std::shared_ptr<Comm> comm, std::vector<at::Tensor> params,
                         at::Tensor flat_grad, int64_t bucket_bytes)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  if (!comm) throw Error("dist: GradBuckets needs a Comm");
  if (!flat_grad.defined() || flat_grad.dim() != 1 || !flat_grad.is_contiguous()) {
    throw Error("dist: GradBuckets needs a contiguous 1-D flat_grad");
  }
  if (bucket_bytes <= 0) {
    throw Error("dist: GradBuckets bucket_bytes must be > 0, got " + std::to_string(bucket_bytes));
  }
  s.comm = std::move(comm);
  s.comm_impl = s.comm->impl_.get();
  s.params = std::move(params);
  s.flat = std::move(flat_grad);

  // Each grad must be a contiguous slice of flat_grad, in increasing, non-overlapping order.
  const auto* base = static_cast<const char*>(s.flat.data_ptr());
  const int64_t item = s.flat.element_size();
  int64_t prev_end = 0;
  for (size_t i = 0; i < s.params.size(); ++i) {
    const at::Tensor& p = s.params[i];
    const std::string what = "dist: GradBuckets: parameter " + std::to_string(i) +
                             (p.defined() ? " (shape " + shape_text(p) + ")" : "");
    if (!p.defined() || !p.is_leaf() || !p.requires_grad()) {
      throw Error(what + " must be a leaf tensor that requires grad");
    }
    const at::Tensor& g = p.grad();
    if (!g.defined()) throw Error(what + " has no .grad(); set it to its view of flat_grad first");
    const int64_t byte_off = static_cast<int64_t>(reinterpret_cast<std::uintptr_t>(g.data_ptr()) -
                                                  reinterpret_cast<std::uintptr_t>(base));
    if (!g.is_alias_of(s.flat) || g.scalar_type() != s.flat.scalar_type() || !g.is_contiguous() ||
        byte_off < 0 || byte_off % item != 0 || byte_off / item + g.numel() > s.flat.numel() ||
        g.numel() != p.numel()) {
      throw Error(what +
                  ": its .grad() is not a contiguous view of flat_grad with the "
                  "parameter's numel and flat_grad's dtype");
    }
    const int64_t off = byte_off / item;
    if (off < prev_end) {
      throw Error(what + ": its gradient starts at element " + std::to_string(off) +
                  ", before the end of the previous one (" + std::to_string(prev_end) +
                  "); list the parameters in flat order, each once");
    }
    s.offsets.push_back(off);
    prev_end = off + g.numel();
  }

  // Greedy cut at parameter boundaries; the buckets tile flat_grad from 0 to its end.
  const int64_t n = static_cast<int64_t>(s.params.size());
  s.param_bucket.assign(n, 0);
  int64_t begin = 0, first = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t end = s.offsets[i] + s.params[i].numel();
    if ((end - begin) * item >= bucket_bytes || i == n - 1) {
      s.buckets.push_back({begin, i == n - 1 ? s.flat.numel() : end, first, i + 1});
      begin = end;
      first = i + 1;
    }
  }
  if (s.buckets.empty() && s.flat.numel() > 0) s.buckets.push_back({0, s.flat.numel(), 0, 0});
  for (size_t k = 0; k < s.buckets.size(); ++k) {
    Impl::Bucket& b = s.buckets[k];
    b.view = s.flat.narrow(0, b.begin, b.end - b.begin);
    for (int64_t i = b.first_param; i < b.end_param; ++i) s.param_bucket[i] = k;
  }

  if (s.comm->distributed()) {
    for (int64_t i = 0; i < n; ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(s.params[i]);
      if (!acc)
        throw Error("dist: GradBuckets: parameter " + std::to_string(i) +
                    " has no "
                    "gradient accumulator");
      s.hook_keys.push_back(acc->add_post_hook(std::make_unique<ReadyHook>(impl_.get(), i)));
      s.accumulators.push_back(std::move(acc));
    }
  }

  std::ostringstream sizes;
  const size_t shown = std::min<size_t>(s.buckets.size(), 12);
  for (size_t k = 0; k < shown; ++k) {
    sizes << (k ? ", " : "") << bytes_text((s.buckets[k].end - s.buckets[k].begin) * item);
  }
  if (shown < s.buckets.size()) sizes << ", ...";
  const auto level =
      s.comm->distributed() && s.comm->rank() == 0 ? spdlog::level::info : spdlog::level::debug;
  spdlog::log(level, "dist: {} gradient buckets over {} parameters, {} (target {}): {}",
              s.buckets.size(), n, bytes_text(s.flat.numel() * item), bytes_text(bucket_bytes),
              sizes.str());
}

GradBuckets::~GradBuckets() {
  Impl& s = *impl_;
  for (size_t i = 0; i < s.accumulators.size(); ++i) {
    s.accumulators[i]->del_post_hook(s.hook_keys[i]);
  }
}

void GradBuckets::begin(bool sync) {
  Impl& s = *impl_;
  if (!s.comm->distributed()) return;
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.sync && s.next_launch < static_cast<int64_t>(s.buckets.size()) - 1) {
    throw Error(
        "dist: GradBuckets::begin called while a sync step has buckets in flight; call finish() "
        "after the last backward of a step");
  }
  s.check_views("begin");
  s.sync = sync;
  if (!sync) return;
  s.fired.assign(s.params.size(), 0);
  for (auto& b : s.buckets) {
    b.pending = b.end_param - b.first_param;
    b.work.reset();
  }
  s.next_launch = static_cast<int64_t>(s.buckets.size()) - 1;
  s.launched_in_backward = 0;
  s.error.clear();
}

void GradBuckets::finish() {
  Impl& s = *impl_;
  if (!s.comm->distributed()) return;
  std::vector<std::pair<int64_t, WorkPtr>> works;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.sync) {  // no begin(true) this step: reduce everything now, without overlap
      for (auto& b : s.buckets) b.work.reset();
      s.next_launch = static_cast<int64_t>(s.buckets.size()) - 1;
      s.launched_in_backward = 0;
      s.error.clear();
    }
    s.sync = false;
    if (s.error.empty()) s.check_views("finish");
    while (s.error.empty() && s.next_launch >= 0) s.launch_locked(s.next_launch--);
    if (!s.error.empty()) {
      const std::string e = s.error;
      s.next_launch = -1;
      throw Error(e);
    }
    for (int64_t k = static_cast<int64_t>(s.buckets.size()) - 1; k >= 0; --k) {
      works.emplace_back(k, s.buckets[k].work);
      s.buckets[k].work.reset();
    }
  }
  for (auto& [k, work] : works) {
    const std::string op = "all_reduce of gradient bucket " + std::to_string(k + 1) + "/" +
                           std::to_string(s.buckets.size());
    s.c().wait(op.c_str(), work);
  }
}

int64_t GradBuckets::bucket_count() const { return static_cast<int64_t>(impl_->buckets.size()); }

std::vector<std::pair<int64_t, int64_t>> GradBuckets::bucket_ranges() const {
  std::vector<std::pair<int64_t, int64_t>> r;
  for (const auto& b : impl_->buckets) r.emplace_back(b.begin, b.end);
  return r;
}

int64_t GradBuckets::launched_during_backward() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->launched_in_backward;
}

}  // namespace salad::dist
