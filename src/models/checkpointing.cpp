#include "salad/models/checkpointing.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "salad/core/error.h"

// LibTorch 2.4 made the autocast API device-generic and deprecated the per-device calls that 1.13
// (and 2.0-2.3) have.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define SALAD_AUTOCAST_BY_DEVICE 1
#else
#define SALAD_AUTOCAST_BY_DEVICE 0
#endif

namespace salad::models {

AutocastState AutocastState::current() {
  AutocastState s;
#if SALAD_AUTOCAST_BY_DEVICE
  s.cpu_enabled = at::autocast::is_autocast_enabled(at::kCPU);
  s.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  s.cuda_enabled = at::autocast::is_autocast_enabled(at::kCUDA);
  s.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
#else
  s.cpu_enabled = at::autocast::is_cpu_enabled();
  s.cpu_dtype = at::autocast::get_autocast_cpu_dtype();
  s.cuda_enabled = at::autocast::is_enabled();
  s.cuda_dtype = at::autocast::get_autocast_gpu_dtype();
#endif
  s.cache_enabled = at::autocast::is_autocast_cache_enabled();
  return s;
}

namespace {
void set_autocast_state(const AutocastState& s) {
#if SALAD_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_enabled(at::kCPU, s.cpu_enabled);
  at::autocast::set_autocast_dtype(at::kCPU, s.cpu_dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, s.cuda_enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, s.cuda_dtype);
#else
  at::autocast::set_cpu_enabled(s.cpu_enabled);
  at::autocast::set_autocast_cpu_dtype(s.cpu_dtype);
  at::autocast::set_enabled(s.cuda_enabled);
  at::autocast::set_autocast_gpu_dtype(s.cuda_dtype);
#endif
  at::autocast::set_autocast_cache_enabled(s.cache_enabled);
}
}  // namespace

AutocastStateGuard::AutocastStateGuard(const AutocastState& state)
    : previous_(AutocastState::current()) {
  set_autocast_state(state);
}

AutocastStateGuard::~AutocastStateGuard() { set_autocast_state(previous_); }

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs besides x. AutogradContext::saved_data holds IValues, hence a capsule.
struct Recompute : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> fn;
  AutocastState autocast;  // at the forward call, cache switched off
  bool x_requires_grad = false;
};

// Inputs: x and `anchor`. The parameters fn reads are deliberately not inputs: their gradients
// come from the reentrant backward in backward(), through their own accumulators. `anchor` is an
// empty leaf that requires grad when x does not (Function::apply only records a backward node if
// some input requires grad); it never receives a gradient.
class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& anchor,
                            c10::intrusive_ptr<Recompute> r) {
    (void)anchor;
    at::Tensor y;
    {
      // Function::apply runs this with grad mode off: nothing inside fn is recorded.
      const AutocastStateGuard autocast(r->autocast);
      y = r->fn(x);
    }
    ctx->save_for_backward({x});
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(std::move(r));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    if (at::GradMode::is_enabled()) {
      throw Error(
          "activation checkpointing: double backward (create_graph = true) is not supported; "
          "turn checkpointing off for this model");
    }
    const auto r =
        c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data.at("recompute").toCapsule());
    const at::Tensor x =
        ctx->get_saved_variables().at(0).detach().requires_grad_(r->x_requires_grad);
    at::Tensor y;
    {
      // The blocks draw no random numbers (no dropout), so the recompute needs no RNG state
      // replay: with the same input, weights and autocast state it gives the same graph.
      const at::AutoGradMode grad_mode(true);
      const AutocastStateGuard autocast(r->autocast);
      y = r->fn(x);
    }
    // One gradient per forward argument: x, anchor (none) and the capsule (none). y needs no
    // grad only if requires_grad was switched off on everything since the forward.
    if (!y.requires_grad()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    // Reentrant: the parameters' AccumulateGrad nodes run in this backward, adding into their
    // existing .grad in place and firing their post hooks, as they would without checkpointing.
    torch::autograd::backward({y}, {grad_outputs.at(0)});
    return {r->x_requires_grad ? x.grad() : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params) {
  const bool params_need_grad = std::any_of(params.begin(), params.end(), [](const at::Tensor& p) {
    return p.defined() && p.requires_grad();
  });
  if (!at::GradMode::is_enabled() || (!x.requires_grad() && !params_need_grad)) return fn(x);
  auto r = c10::make_intrusive<Recompute>();
  r->fn = fn;
  r->autocast = AutocastState::current();
  r->autocast.cache_enabled = false;
  r->x_requires_grad = x.requires_grad();
  // Function::apply needs a defined tensor for every tensor argument (1.13 records its metadata).
  const at::Tensor anchor =
      at::empty({0}, x.options().dtype(at::kFloat)).requires_grad_(!x.requires_grad());
  return CheckpointFunction::apply(x, anchor, std::move(r));
}

at::Tensor checkpointed_block(const DecoderBlock& block, const at::Tensor& x, const Rotary& rot,
                              const at::Tensor& allowed) {
  // Shared ownership: the block must outlive the graph that will recompute it.
  std::shared_ptr<DecoderBlockImpl> impl = block.ptr();
  return checkpointed(
      [impl, rot, allowed](const at::Tensor& in) { return impl->forward(in, rot, allowed); }, x,
      impl->parameters());
}

}  // namespace salad::models
