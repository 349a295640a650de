// The chunked SALAD loss. Shape legend: N loss positions, c positions in one chunk, Ds / Dt the
// student / teacher hidden widths, V the vocabulary.
//
// Memory: the forward pass keeps only its inputs (hidden states, heads, targets) and two sums;
// the backward pass recomputes each chunk's logits from them and writes the gradient rows of the
// student hidden states and one [V, Ds] head-gradient buffer. Three [c, V] float32 buffers are
// alive at the peak (docs/performance.md, "Distillation loss").
#include "salad/loss/distillation.h"

#include <ATen/ATen.h>
#include <ATen/core/Reduction.h>
#include <c10/core/ScalarType.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/shape.h"

namespace salad::loss {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/// The dtype of the softmax/KL reductions: float64 for float64 inputs (the gradient check needs
/// it), float32 otherwise (bf16/fp16 logits are too coarse to sum 151,936 probabilities).
at::ScalarType reduction_dtype(const at::Tensor& hidden) {
  return hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

/// Logits of rows [start, start + c) of `hidden` through `head`, computed in the hidden dtype and
/// returned in `acc`: [c, V]. Always a fresh buffer, so callers may modify it in place.
at::Tensor chunk_logits(const at::Tensor& hidden, const at::Tensor& head, int64_t start, int64_t c,
                        at::ScalarType acc) {
  at::Tensor z = at::mm(hidden.narrow(0, start, c), head.t());  // [c, V]
  return z.scalar_type() == acc ? z : z.to(acc);
}

/// Per-row KL(p ‖ q) = Σ_v p·(log p − log q) from log-probabilities: [c]. Overwrites both
/// arguments' buffers (callers pass temporaries) so a chunk needs no third [c, V] buffer.
at::Tensor kl_rows(at::Tensor log_p, at::Tensor log_q) {
  log_q.neg_().add_(log_p);                // log p − log q
  return log_p.exp_().mul_(log_q).sum(1);  // [c]
}

// ---- input checks ----

/// `hidden` [N, D] and `head` [V, D]: both defined, 2-D, floating, same width, dtype and device.
void check_pair(const at::Tensor& hidden, const at::Tensor& head, const std::string& hidden_name,
                const std::string& head_name, const std::string& width, const char* where) {
  const std::string w = std::string(where) + ": ";
  if (!hidden.defined())
    throw ConfigError(w + hidden_name + " is undefined; expected [N, " + width + "]");
  if (!head.defined())
    throw ConfigError(w + head_name + " is undefined; expected [V, " + width + "]");
  if (hidden.dim() != 2) {
    throw ConfigError(w + hidden_name + " must be [N, " + width + "]; found " +
                      shape_text(hidden.sizes()));
  }
  if (head.dim() != 2) {
    throw ConfigError(w + head_name + " must be [V, " + width + "]; found " +
                      shape_text(head.sizes()));
  }
  if (!c10::isFloatingType(hidden.scalar_type())) {
    throw ConfigError(w + hidden_name + " must be floating point; found dtype " +
                      c10::toString(hidden.scalar_type()));
  }
  if (head.size(1) != hidden.size(1)) {
    throw ConfigError(w + head_name + " must be [V, " + std::to_string(hidden.size(1)) +
                      "] to match " + hidden_name + " " + shape_text(hidden.sizes()) + "; found " +
                      shape_text(head.sizes()));
  }
  if (head.scalar_type() != hidden.scalar_type()) {
    throw ConfigError(w + head_name + " must have the dtype of " + hidden_name + " (" +
                      c10::toString(hidden.scalar_type()) + "); found " +
                      c10::toString(head.scalar_type()));
  }
  if (head.device() != hidden.device()) {
    throw ConfigError(w + head_name + " must be on " + hidden_name + "'s device (" +
                      hidden.device().str() + "); found " + head.device().str());
  }
}

/// Rows of `t` must equal `n`, the rows of `reference_name`.
void check_rows(const at::Tensor& t, int64_t n, const std::string& name,
                const std::string& reference_name, const char* where) {
  if (t.size(0) != n) {
    throw DataError(std::string(where) + ": " + name + " must have N = " + std::to_string(n) +
                    " rows like " + reference_name + "; found " + shape_text(t.sizes()));
  }
}

/// The checks shared by the chunked and the reference loss.
void check_inputs(const DistillationOptions& o, const at::Tensor& student_hidden,
                  const at::Tensor& student_head, const at::Tensor& teacher_hidden,
                  const at::Tensor& teacher_head, const at::Tensor& targets, double normalizer) {
  constexpr const char* kWhere = "distillation loss";
  const std::string w = std::string(kWhere) + ": ";
  check_pair(student_hidden, student_head, "student_hidden", "student_head", "Ds", kWhere);
  const int64_t n = student_hidden.size(0);
  const int64_t v = student_head.size(0);
  if (o.alpha > 0) {
    if (!teacher_hidden.defined() || !teacher_head.defined()) {
      throw ConfigError(w + (teacher_hidden.defined() ? "teacher_head" : "teacher_hidden") +
                        " is undefined, but loss.alpha = " + num(o.alpha) +
                        " > 0 needs the teacher (only alpha = 0 may omit it)");
    }
    check_pair(teacher_hidden, teacher_head, "teacher_hidden", "teacher_head", "Dt", kWhere);
    check_rows(teacher_hidden, n, "teacher_hidden", "student_hidden", kWhere);
    if (teacher_head.size(0) != v) {
      throw ConfigError(w + "teacher_head must have V = " + std::to_string(v) +
                        " rows like student_head (one vocabulary); found " +
                        shape_text(teacher_head.sizes()));
    }
    if (teacher_hidden.device() != student_hidden.device()) {
      throw ConfigError(w + "teacher_hidden must be on student_hidden's device (" +
                        student_hidden.device().str() + "); found " +
                        teacher_hidden.device().str());
    }
  }
  if (!targets.defined()) throw DataError(w + "targets is undefined; expected [N] int64");
  if (targets.dim() != 1 || targets.scalar_type() != at::kLong) {
    throw DataError(w + "targets must be [N] int64; found " + shape_text(targets.sizes()) + " " +
                    c10::toString(targets.scalar_type()));
  }
  check_rows(targets, n, "targets", "student_hidden", kWhere);
  if (targets.device() != student_hidden.device()) {
    throw DataError(w + "targets must be on student_hidden's device (" +
                    student_hidden.device().str() + "); found " + targets.device().str());
  }
  if (!(normalizer > 0) || !std::isfinite(normalizer)) {
    throw DataError(w +
                    "normalizer must be a finite number > 0 (the global count of loss "
                    "positions); found " +
                    num(normalizer));
  }
  if (n > 0) {
    // One host sync per call; gather() would read out of bounds or fail without naming targets.
    const at::Tensor range = at::stack({targets.min(), targets.max()}).cpu();
    const int64_t lo = range[0].item<int64_t>(), hi = range[1].item<int64_t>();
    if (lo < 0 || hi >= v) {
      throw DataError(w + "targets must be in [0, V = " + std::to_string(v) + "); found min " +
                      std::to_string(lo) + ", max " + std::to_string(hi));
    }
  }
}

// ---- the custom autograd function ----

/// d(Σ_k loss_k)/dz_s for one chunk, before the 1/normalizer: [c, V] in the dtype of `zs`.
/// Consumes `zs` and `zt_scaled` (teacher logits already divided by τ; undefined when α = 0).
at::Tensor chunk_grad(at::Tensor zs, at::Tensor zt_scaled, const at::Tensor& y, double alpha,
                      double tau) {
  // NLL: (1 − α)·(p_s − onehot(y)). KL: d/dz_s of τ²·KL(p_t,τ ‖ p_s,τ) is τ·(p_s,τ − p_t,τ).
  at::Tensor g;
  if (alpha > 0 && tau == 1) {
    // Both terms share p_s: g = p_s − α·p_t − (1 − α)·onehot(y), one softmax of z_s fewer.
    g = at::softmax(zs, 1);
    zs.reset();
    g.sub_(at::softmax(zt_scaled, 1), alpha);
  } else {
    if (alpha < 1) g = at::softmax(zs, 1).mul_(1 - alpha);
    if (alpha > 0) {
      at::Tensor d = at::softmax(zs.div_(tau), 1);
      zs.reset();
      d.sub_(at::softmax(zt_scaled, 1)).mul_(alpha * tau);
      g = g.defined() ? g.add_(d) : d;
    }
  }
  if (alpha < 1) {
    g.scatter_add_(1, y.unsqueeze(1), at::full({y.size(0), 1}, -(1 - alpha), g.options()));
  }
  return g;
}

class ChunkedDistillation : public torch::autograd::Function<ChunkedDistillation> {
 public:
  /// Returns {loss (reduction dtype), Σ τ²·KL (float64), Σ NLL (float64)}; the sums are not
  /// differentiable. Tensor arguments come first so needs_input_grad(i) indexes them.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student_hidden,
                               const at::Tensor& student_head, const at::Tensor& teacher_hidden,
                               const at::Tensor& teacher_head, const at::Tensor& targets,
                               double alpha, double tau, int64_t chunk, double normalizer) {
    const int64_t n = student_hidden.size(0);
    const at::ScalarType acc = reduction_dtype(student_hidden);
    const auto f64 = student_hidden.options().dtype(at::kDouble);
    at::Tensor kl_sum = at::zeros({}, f64);
    at::Tensor nll_sum = at::zeros({}, f64);
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t c = std::min(chunk, n - s);
      const at::Tensor y = targets.narrow(0, s, c);                           // [c]
      at::Tensor zs = chunk_logits(student_hidden, student_head, s, c, acc);  // [c, V]
      at::Tensor log_ps = at::log_softmax(zs, 1);                             // [c, V]
      nll_sum.sub_(log_ps.gather(1, y.unsqueeze(1)).sum());
      if (alpha > 0) {
        if (tau != 1) log_ps = at::log_softmax(zs.div_(tau), 1);
        zs.reset();
        at::Tensor zt = chunk_logits(teacher_hidden, teacher_head, s, c, acc);  // [c, V]
        if (tau != 1) zt.div_(tau);
        at::Tensor log_pt = at::log_softmax(zt, 1);
        zt.reset();
        kl_sum.add_(kl_rows(std::move(log_pt), std::move(log_ps)).sum(), tau * tau);
      }
    }
    // Terms with weight 0 stay out of the loss, so a non-finite term cannot poison it (0·inf).
    at::Tensor total = at::zeros({}, f64);
    if (alpha > 0) total.add_(kl_sum, alpha);
    if (alpha < 1) total.add_(nll_sum, 1 - alpha);
    at::Tensor loss = total.div_(normalizer).to(acc);

    ctx->save_for_backward({student_hidden, student_head, teacher_hidden, teacher_head, targets});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["normalizer"] = normalizer;
    ctx->mark_non_differentiable({kl_sum, nll_sum});
    return {loss, kl_sum, nll_sum};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& hs = saved[0];  // [N, Ds]
    const at::Tensor& ws = saved[1];  // [V, Ds]
    const at::Tensor& ht = saved[2];  // [N, Dt]; a placeholder when alpha = 0
    const at::Tensor& wt = saved[3];  // [V, Dt]; a placeholder when alpha = 0
    const at::Tensor& targets = saved[4];
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const double tau = ctx->saved_data["tau"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const double normalizer = ctx->saved_data["normalizer"].toDouble();
    const bool want_hidden = ctx->needs_input_grad(0);
    const bool want_head = ctx->needs_input_grad(1);

    const int64_t n = hs.size(0);
    const at::ScalarType acc = reduction_dtype(hs);
    // A 0-dim tensor, not a double: reading grad_output on the host would sync the device.
    const at::Tensor scale = grad_outputs[0].to(acc) / normalizer;
    at::Tensor grad_hidden, grad_head;
    if (want_hidden) grad_hidden = at::empty(hs.sizes(), hs.options());  // [N, Ds], contiguous
    // bf16/fp16 chunk contributions are summed in float32: rounding the running sum to 8 bits
    // of mantissa after every chunk would lose the small ones.
    const bool head_in_float = ws.scalar_type() != at::kFloat && ws.scalar_type() != at::kDouble;
    if (want_head) {
      grad_head =
          at::zeros(ws.sizes(), ws.options().dtype(head_in_float ? at::kFloat : ws.scalar_type()));
    }
    for (int64_t s = 0; s < n && (want_hidden || want_head); s += chunk) {
      const int64_t c = std::min(chunk, n - s);
      at::Tensor zt;
      if (alpha > 0) {
        zt = chunk_logits(ht, wt, s, c, acc);  // [c, V]
        if (tau != 1) zt.div_(tau);
      }
      at::Tensor g = chunk_grad(chunk_logits(hs, ws, s, c, acc), std::move(zt),
                                targets.narrow(0, s, c), alpha, tau);  // [c, V]
      g.mul_(scale);
      if (g.scalar_type() != hs.scalar_type()) g = g.to(hs.scalar_type());
      const at::Tensor h = hs.narrow(0, s, c);  // [c, Ds]
      if (want_hidden) {
        at::Tensor rows = grad_hidden.narrow(0, s, c);  // [c, Ds], a contiguous block
        at::mm_out(rows, g, ws);
      }
      if (want_head) {
        if (head_in_float) {
          grad_head.add_(at::mm(g.t(), h));  // [V, Ds]
        } else {
          grad_head.addmm_(g.t(), h);  // in place: no second [V, Ds] buffer
        }
      }
    }
    if (want_head && head_in_float) grad_head = grad_head.to(ws.scalar_type());
    // One entry per forward argument; the teacher, targets and the scalars get none.
    return {grad_hidden,  grad_head,    at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// ---- options ----

DistillationOptions DistillationOptions::from_config(const config::LossConfig& cfg) {
  DistillationOptions o;
  o.alpha = cfg.alpha;
  o.temperature = cfg.temperature;
  o.chunk_size = cfg.chunk_size;
  o.validate();
  return o;
}

void DistillationOptions::validate() const {
  std::vector<std::string> problems;
  if (!(alpha >= 0 && alpha <= 1))
    problems.push_back("loss.alpha must be in [0, 1]; found " + num(alpha));
  if (!(temperature > 0) || !std::isfinite(temperature)) {
    problems.push_back("loss.temperature must be a finite number > 0; found " + num(temperature));
  }
  if (chunk_size <= 0) {
    problems.push_back("loss.chunk_size must be > 0; found " + std::to_string(chunk_size));
  }
  if (problems.empty()) return;
  std::string msg = "distillation loss options:";
  for (const auto& p : problems) msg += "\n  " + p;
  throw ConfigError(msg);
}

// ---- the loss ----

DistillationLoss::DistillationLoss(const DistillationOptions& o) : o_(o) { o_.validate(); }

LossParts DistillationLoss::operator()(const at::Tensor& student_hidden,
                                       const at::Tensor& student_head,
                                       const at::Tensor& teacher_hidden,
                                       const at::Tensor& teacher_head, const at::Tensor& targets,
                                       double normalizer) const {
  check_inputs(o_, student_hidden, student_head, teacher_hidden, teacher_head, targets, normalizer);
  // With alpha = 0 the teacher is never read. LibTorch 1.13's Function::apply rejects undefined
  // tensor arguments ("tensor does not have a device"), so an empty tensor stands in for it.
  const bool use_teacher = o_.alpha > 0;
  const at::Tensor no_teacher =
      use_teacher ? at::Tensor() : at::empty({0}, student_hidden.options());
  const variable_list out = ChunkedDistillation::apply(
      student_hidden, student_head, use_teacher ? teacher_hidden : no_teacher,
      use_teacher ? teacher_head : no_teacher, targets, o_.alpha, o_.temperature, o_.chunk_size,
      normalizer);
  LossParts parts;
  parts.loss = out[0];
  parts.kl_sum = out[1].detach();
  parts.nll_sum = out[2].detach();
  parts.positions = student_hidden.size(0);
  return parts;
}

LossParts DistillationLoss::reference(const at::Tensor& student_hidden,
                                      const at::Tensor& student_head,
                                      const at::Tensor& teacher_hidden,
                                      const at::Tensor& teacher_head, const at::Tensor& targets,
                                      double normalizer) const {
  check_inputs(o_, student_hidden, student_head, teacher_hidden, teacher_head, targets, normalizer);
  const double alpha = o_.alpha, tau = o_.temperature;
  const at::ScalarType acc = reduction_dtype(student_hidden);
  const at::Tensor zs = at::mm(student_hidden, student_head.t()).to(acc);  // [N, V]
  const at::Tensor nll = -at::log_softmax(zs, 1).gather(1, targets.unsqueeze(1)).sum();
  at::Tensor kl = at::zeros({}, zs.options());
  if (alpha > 0) {
    const at::Tensor zt = at::mm(teacher_hidden, teacher_head.t()).to(acc).detach();  // [N, V]
    kl = tau * tau *
         at::kl_div(at::log_softmax(zs / tau, 1), at::log_softmax(zt / tau, 1), at::Reduction::Sum,
                    /*log_target=*/true);
  }
  at::Tensor total = at::zeros({}, zs.options());
  if (alpha > 0) total = total + alpha * kl;
  if (alpha < 1) total = total + (1 - alpha) * nll;
  LossParts parts;
  parts.loss = total / normalizer;
  parts.kl_sum = kl.detach().to(at::kDouble);
  parts.nll_sum = nll.detach().to(at::kDouble);
  parts.positions = student_hidden.size(0);
  return parts;
}

at::Tensor chunked_kl(const at::Tensor& p_hidden, const at::Tensor& p_head,
                      const at::Tensor& q_hidden, const at::Tensor& q_head, int64_t chunk_size) {
  constexpr const char* kWhere = "chunked_kl";
  check_pair(p_hidden, p_head, "p_hidden", "p_head", "Dp", kWhere);
  check_pair(q_hidden, q_head, "q_hidden", "q_head", "Dq", kWhere);
  check_rows(q_hidden, p_hidden.size(0), "q_hidden", "p_hidden", kWhere);
  if (q_head.size(0) != p_head.size(0)) {
    throw ConfigError(std::string(kWhere) +
                      ": q_head must have V = " + std::to_string(p_head.size(0)) +
                      " rows like p_head; found " + shape_text(q_head.sizes()));
  }
  if (q_hidden.device() != p_hidden.device()) {
    throw ConfigError(std::string(kWhere) + ": q_hidden must be on p_hidden's device (" +
                      p_hidden.device().str() + "); found " + q_hidden.device().str());
  }
  if (chunk_size <= 0) {
    throw ConfigError(std::string(kWhere) + ": chunk_size must be > 0; found " +
                      std::to_string(chunk_size));
  }
  at::NoGradGuard no_grad;
  const int64_t n = p_hidden.size(0);
  const at::ScalarType acc =
      p_hidden.scalar_type() == at::kDouble || q_hidden.scalar_type() == at::kDouble ? at::kDouble
                                                                                     : at::kFloat;
  at::Tensor out = at::empty({n}, p_hidden.options().dtype(at::kDouble));  // [N]
  for (int64_t s = 0; s < n; s += chunk_size) {
    const int64_t c = std::min(chunk_size, n - s);
    at::Tensor log_p = at::log_softmax(chunk_logits(p_hidden, p_head, s, c, acc), 1);  // [c, V]
    at::Tensor log_q = at::log_softmax(chunk_logits(q_hidden, q_head, s, c, acc), 1);  // [c, V]
    out.narrow(0, s, c).copy_(kl_rows(std::move(log_p), std::move(log_q)));
  }
  return out;
}

}  // namespace salad::loss
