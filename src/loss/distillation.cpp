// The chunked SALAD loss. Shape legend: N loss positions, c positions in one chunk, Ds / Dt the
// student / teacher hidden widths, V the vocabulary.
//
// One pass: each chunk's student and teacher logits are formed once, give the KL and NLL sums
// and, when gradients are wanted, the chunk's rows of d loss/d student_hidden and its share of
// d loss/d student_head, which the forward pass keeps ([N, Ds] + [V, Ds]) for backward to scale.
// Three [c, V] float32 buffers (four with τ ≠ 1), allocated once per call and reused by every
// chunk, are alive at the peak (docs/performance.md, "Distillation loss").
#include "salad/loss/distillation.h"

#include <ATen/ATen.h>
#include <ATen/core/Reduction.h>
#include <c10/core/ScalarType.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
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

/// Writes the logits of rows [start, start + c) of `hidden` through `head` into `out` ([c, V] in
/// the reduction dtype), reusing its storage when the dtypes allow.
void logits_into(at::Tensor& out, const at::Tensor& hidden, const at::Tensor& head, int64_t start,
                 int64_t c) {
  const at::Tensor h = hidden.narrow(0, start, c);  // [c, D]
  if (hidden.scalar_type() == out.scalar_type()) {
    at::mm_out(out, h, head.t());
  } else {
    out.copy_(at::mm(h, head.t()));  // bf16/fp16 logits, widened
  }
}

/// The loss sums and, when asked, the gradients of the loss with respect to the student hidden
/// states and head, all computed in one pass over the chunks: each chunk's logits are formed
/// once, and the backward pass only scales what the forward pass stored.
struct ChunkedResult {
  at::Tensor kl_sum, nll_sum;  // float64 scalars
  at::Tensor grad_hidden;      // [N, Ds] d(Σ weighted losses / normalizer)/dh; may be undefined
  at::Tensor grad_head;        // [V, Ds]; may be undefined
};

ChunkedResult chunked_pass(const at::Tensor& hs, const at::Tensor& ws, const at::Tensor& ht,
                           const at::Tensor& wt, const at::Tensor& targets, double alpha,
                           double tau, int64_t chunk, double normalizer, bool want_hidden,
                           bool want_head) {
  const int64_t n = hs.size(0), v = ws.size(0);
  const at::ScalarType acc = reduction_dtype(hs);
  const auto f64 = hs.options().dtype(at::kDouble);
  ChunkedResult r;
  r.kl_sum = at::zeros({}, f64);
  r.nll_sum = at::zeros({}, f64);
  const bool grads = want_hidden || want_head;
  // bf16/fp16 chunk contributions to the head gradient are summed in float32: rounding the
  // running sum to 8 bits of mantissa after every chunk would lose the small ones.
  const bool head_in_float = ws.scalar_type() != at::kFloat && ws.scalar_type() != at::kDouble;
  if (want_hidden) r.grad_hidden = at::empty(hs.sizes(), hs.options());  // [N, Ds]
  if (want_head) {
    r.grad_head =
        at::zeros(ws.sizes(), ws.options().dtype(head_in_float ? at::kFloat : ws.scalar_type()));
  }
  if (n == 0) return r;

  // [c, V] buffers, allocated once per call and reused by every chunk (a fresh buffer per
  // chunk costs a page fault per 4 KiB on CPU): z (logits), lp (student log-probs),
  // lq (teacher log-probs) and, with τ ≠ 1, lpt (tempered student log-probs).
  const int64_t rows = std::min(chunk, n);
  const auto opts = hs.options().dtype(acc);
  at::Tensor z_buf = at::empty({rows, v}, opts);
  at::Tensor lp_buf = at::empty({rows, v}, opts);
  at::Tensor lq_buf = alpha > 0 ? at::empty({rows, v}, opts) : at::Tensor();
  at::Tensor lpt_buf = alpha > 0 && tau != 1 ? at::empty({rows, v}, opts) : at::Tensor();

  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t c = std::min(chunk, n - s);
    const at::Tensor y = targets.narrow(0, s, c).unsqueeze(1);  // [c, 1]
    at::Tensor z = z_buf.narrow(0, 0, c);                       // [c, V]
    at::Tensor lp = lp_buf.narrow(0, 0, c);
    logits_into(z, hs, ws, s, c);
    at::log_softmax_out(lp, z, 1);  // log p_s
    r.nll_sum.sub_(lp.gather(1, y).sum());
    at::Tensor g;  // [c, V] d(Σ_k loss_k)/dz_s, before 1/normalizer
    if (alpha > 0) {
      at::Tensor lpt = lp;  // log p_s,τ
      if (tau != 1) {
        lpt = lpt_buf.narrow(0, 0, c);
        at::log_softmax_out(lpt, z.div_(tau), 1);
      }
      at::Tensor lq = lq_buf.narrow(0, 0, c);
      logits_into(z, ht, wt, s, c);
      if (tau != 1) z.div_(tau);
      at::log_softmax_out(lq, z, 1);  // log p_t,τ
      // τ²·KL(p_t,τ ‖ p_s,τ) = τ²·Σ_v p_t,τ·(log p_t,τ − log p_s,τ), row by row.
      at::sub_out(z, lq, lpt);
      lq.exp_();  // p_t,τ
      r.kl_sum.add_(z.mul_(lq).sum(), tau * tau);
      if (grads) {
        // NLL: (1 − α)·(p_s − onehot(y)). KL: d/dz_s of τ²·KL is τ·(p_s,τ − p_t,τ).
        if (tau == 1) {
          g = lp.exp_().sub_(lq, alpha);  // p_s − α·p_t: the two terms share p_s
        } else {
          g = lpt.exp_().sub_(lq).mul_(alpha * tau);
          if (alpha < 1) g.add_(lp.exp_(), 1 - alpha);
        }
      }
    } else if (grads) {
      g = lp.exp_();
    }
    if (!grads) continue;
    if (alpha < 1) g.scatter_add_(1, y, at::full({c, 1}, -(1 - alpha), g.options()));
    const at::Tensor gm = g.scalar_type() == hs.scalar_type() ? g : g.to(hs.scalar_type());
    if (want_hidden) {
      at::Tensor out = r.grad_hidden.narrow(0, s, c);  // [c, Ds], a contiguous block
      at::mm_out(out, gm, ws);
    }
    if (want_head) {
      const at::Tensor h = hs.narrow(0, s, c);  // [c, Ds]
      if (head_in_float) {
        r.grad_head.add_(at::mm(gm.t(), h));  // [V, Ds]
      } else {
        r.grad_head.addmm_(gm.t(), h);  // in place: no second [V, Ds] buffer
      }
    }
  }
  if (want_hidden) r.grad_hidden.div_(normalizer);
  if (want_head) {
    r.grad_head.div_(normalizer);
    if (head_in_float) r.grad_head = r.grad_head.to(ws.scalar_type());
  }
  return r;
}

class ChunkedDistillation : public torch::autograd::Function<ChunkedDistillation> {
 public:
  /// Returns {loss (reduction dtype), Σ τ²·KL (float64), Σ NLL (float64)}; the sums are not
  /// differentiable. Tensor arguments come first so needs_input_grad(i) indexes them. With
  /// `grads` the gradients are computed here, in the same pass as the loss, and kept for
  /// backward (no second pass over the [N, V] logits).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student_hidden,
                               const at::Tensor& student_head, const at::Tensor& teacher_hidden,
                               const at::Tensor& teacher_head, const at::Tensor& targets,
                               double alpha, double tau, int64_t chunk, double normalizer,
                               bool grads) {
    ChunkedResult r = chunked_pass(
        student_hidden, student_head, teacher_hidden, teacher_head, targets, alpha, tau, chunk,
        normalizer, grads && student_hidden.requires_grad(), grads && student_head.requires_grad());
    // Terms with weight 0 stay out of the loss, so a non-finite term cannot poison it (0·inf).
    at::Tensor total = at::zeros({}, r.kl_sum.options());
    if (alpha > 0) total.add_(r.kl_sum, alpha);
    if (alpha < 1) total.add_(r.nll_sum, 1 - alpha);
    at::Tensor loss = total.div_(normalizer).to(reduction_dtype(student_hidden));
    ctx->saved_data["grad_hidden"] = r.grad_hidden;
    ctx->saved_data["grad_head"] = r.grad_head;
    ctx->mark_non_differentiable({r.kl_sum, r.nll_sum});
    return {loss, r.kl_sum, r.nll_sum};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    // The stored gradients are of the loss itself: scaled in place by the incoming gradient (a
    // 0-dim tensor: on CPU a factor of exactly 1 is skipped; on a GPU reading it would sync)
    // and handed over, so no second [V, Ds] buffer exists. A second backward through a
    // retained graph therefore has nothing left to return.
    auto take = [&](const char* key, const char* input) {
      auto it = ctx->saved_data.find(key);
      if (it == ctx->saved_data.end()) {
        throw std::logic_error(
            std::string("distillation loss: a second backward through the same loss (") + input +
            "); its gradients are computed by the forward pass and handed over by the first "
            "backward, so retain_graph=True cannot reuse them: recompute the loss");
      }
      at::Tensor t = it->second.toTensor();
      ctx->saved_data.erase(it);
      if (!t.defined()) {
        throw std::logic_error(std::string("distillation loss: backward needs the gradient of ") +
                               input + " but the forward pass ran with gradients disabled");
      }
      const at::Tensor& go = grad_outputs[0];
      if (go.is_cpu() && go.item<double>() == 1.0) return t;
      return t.mul_(go.to(t.scalar_type()));
    };
    at::Tensor grad_hidden, grad_head;
    if (ctx->needs_input_grad(0)) grad_hidden = take("grad_hidden", "student_hidden");
    if (ctx->needs_input_grad(1)) grad_head = take("grad_head", "student_head");
    // One entry per forward argument; the teacher, targets and the scalars get none.
    return {grad_hidden,  grad_head,    at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
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
      normalizer, at::GradMode::is_enabled());
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
