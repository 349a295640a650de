// The chunked distillation loss: gradients against central differences, equality with the
// full-logits reference, the loss's invariants (α = 0 / α = 1, self-distillation, masking,
// micro-batching, tied heads, empty batches), bounded memory, input checks and chunked_kl.
#include "salad/loss/distillation.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu_memory_counter.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "test_util.h"

namespace salad::loss {
namespace {

using test::all_close;
using test::expect_error;

/// One loss problem: student hidden [N, Ds] and head [V, Ds] (leaves requiring grad), teacher
/// hidden [N, Dt] and head [V, Dt] (no grad), targets [N].
struct Problem {
  at::Tensor hs, ws, ht, wt, y;
};

Problem make_problem(int64_t n, int64_t ds, int64_t dt, int64_t v, at::ScalarType dtype,
                     uint64_t seed) {
  torch::manual_seed(seed);
  const auto opt = at::TensorOptions().dtype(dtype);
  Problem p;
  // Logits of standard deviation ~1.5: peaked enough that the terms differ, not saturated.
  p.hs = at::randn({n, ds}, opt).requires_grad_();
  p.ws = (at::randn({v, ds}, opt) * (1.5 / std::sqrt(ds))).requires_grad_();
  p.ht = at::randn({n, dt}, opt);
  p.wt = at::randn({v, dt}, opt) * (1.5 / std::sqrt(dt));
  p.y = at::randint(0, v, {n}, at::TensorOptions().dtype(at::kLong));
  return p;
}

DistillationLoss make_loss(double alpha, double tau, int64_t chunk) {
  DistillationOptions o;
  o.alpha = alpha;
  o.temperature = tau;
  o.chunk_size = chunk;
  return DistillationLoss(o);
}

/// The loss parts and the gradients of the student hidden states and head, from fresh leaves.
struct Result {
  LossParts parts;
  at::Tensor grad_hidden, grad_head;
};

Result run(const DistillationLoss& loss, const Problem& p, double normalizer,
           bool reference = false) {
  const at::Tensor hs = p.hs.detach().clone().requires_grad_();
  const at::Tensor ws = p.ws.detach().clone().requires_grad_();
  Result r;
  r.parts = reference ? loss.reference(hs, ws, p.ht, p.wt, p.y, normalizer)
                      : loss(hs, ws, p.ht, p.wt, p.y, normalizer);
  r.parts.loss.backward();
  r.grad_hidden = hs.grad();
  r.grad_head = ws.grad();
  return r;
}

double loss_value(const DistillationLoss& loss, const at::Tensor& hs, const at::Tensor& ws,
                  const Problem& p, double normalizer) {
  at::NoGradGuard no_grad;
  return loss(hs, ws, p.ht, p.wt, p.y, normalizer).loss.item<double>();
}

/// Central differences (eps 1e-6, float64) at `count` random entries of `which` (0 = student
/// hidden, 1 = student head) against the analytic gradient `analytic`. The tolerance is
/// 1e-7 relative to the gradient tensor's scale; a wrong factor (τ, α, 1/normalizer) is off by
/// O(scale).
void expect_gradient_matches(const DistillationLoss& loss, const Problem& p, double normalizer,
                             int which, const at::Tensor& analytic, int count,
                             const std::string& what) {
  at::Tensor hs = p.hs.detach().clone();
  at::Tensor ws = p.ws.detach().clone();
  at::Tensor& x = which == 0 ? hs : ws;
  double* data = x.data_ptr<double>();
  const at::Tensor ana = analytic.contiguous();
  const double* ana_data = ana.data_ptr<double>();
  const double scale = ana.abs().max().item<double>();
  ASSERT_GT(scale, 1e-3) << what << ": gradient too small to test";
  const at::Tensor picks = at::randperm(x.numel(), at::TensorOptions().dtype(at::kLong));
  constexpr double kEps = 1e-6;
  double worst = 0;
  for (int k = 0; k < std::min<int64_t>(count, x.numel()); ++k) {
    const int64_t i = picks[k].item<int64_t>();
    const double orig = data[i];
    data[i] = orig + kEps;
    const double plus = loss_value(loss, hs, ws, p, normalizer);
    data[i] = orig - kEps;
    const double minus = loss_value(loss, hs, ws, p, normalizer);
    data[i] = orig;
    const double numeric = (plus - minus) / (2 * kEps);
    const double err = std::abs(numeric - ana_data[i]);
    worst = std::max(worst, err);
    EXPECT_LE(err, 1e-7 * scale) << what << ": entry " << i << " numeric " << numeric
                                 << " analytic " << ana_data[i] << " (gradient scale " << scale
                                 << ")";
  }
  EXPECT_GT(worst, 0.0) << what << ": every difference exactly 0; the check is not checking";
}

TEST(DistillationLoss, GradientMatchesFiniteDifferences) {
  struct Case {
    double alpha, tau;
  };
  // N = 11 with chunks of 4: the last chunk is partial.
  for (const Case c : {Case{0.0, 1.0}, Case{1.0, 1.0}, Case{0.5, 1.0}, Case{0.3, 2.0},
                       Case{1.0, 0.5}, Case{0.7, 3.0}}) {
    const Problem p = make_problem(11, 6, 5, 13, at::kDouble, 1);
    const DistillationLoss loss = make_loss(c.alpha, c.tau, 4);
    const double normalizer = 7.0;
    const Result r = run(loss, p, normalizer);
    ASSERT_EQ(r.parts.loss.scalar_type(), at::kDouble);
    const std::string what = "alpha " + std::to_string(c.alpha) + " tau " + std::to_string(c.tau);
    expect_gradient_matches(loss, p, normalizer, 0, r.grad_hidden, 24, what + " student_hidden");
    expect_gradient_matches(loss, p, normalizer, 1, r.grad_head, 24, what + " student_head");
  }
}

TEST(DistillationLoss, ChunkedEqualsReference) {
  struct Case {
    at::ScalarType dtype;
    double tol;  // relative to each quantity's scale
  };
  const int64_t n = 23;
  for (const Case c : {Case{at::kFloat, 1e-5}, Case{at::kDouble, 1e-12}}) {
    const Problem p = make_problem(n, 16, 12, 97, c.dtype, 2);
    for (const double alpha : {0.0, 0.4, 1.0}) {
      for (const double tau : {1.0, 2.5}) {
        for (const int64_t chunk : {int64_t{1}, int64_t{7}, n, n + 9}) {
          const DistillationLoss loss = make_loss(alpha, tau, chunk);
          const Result got = run(loss, p, 31.0);
          const Result want = run(loss, p, 31.0, /*reference=*/true);
          const std::string what = std::string(c10::toString(c.dtype)) + " alpha " +
                                   std::to_string(alpha) + " tau " + std::to_string(tau) +
                                   " chunk " + std::to_string(chunk);
          ASSERT_EQ(got.parts.loss.scalar_type(), c.dtype) << what;
          ASSERT_EQ(got.parts.loss.dim(), 0) << what;
          EXPECT_FALSE(got.parts.kl_sum.requires_grad()) << what;
          EXPECT_EQ(got.parts.kl_sum.scalar_type(), at::kDouble) << what;
          EXPECT_EQ(got.parts.nll_sum.scalar_type(), at::kDouble) << what;
          EXPECT_EQ(got.parts.positions, n);
          const double loss_scale = want.parts.loss.abs().item<double>();
          EXPECT_TRUE(all_close(got.parts.loss, want.parts.loss, c.tol * loss_scale, what));
          EXPECT_TRUE(all_close(got.parts.kl_sum, want.parts.kl_sum,
                                c.tol * std::max(1.0, want.parts.kl_sum.item<double>()),
                                what + " kl_sum"));
          EXPECT_TRUE(all_close(got.parts.nll_sum, want.parts.nll_sum,
                                c.tol * want.parts.nll_sum.item<double>(), what + " nll_sum"));
          EXPECT_TRUE(all_close(got.grad_hidden, want.grad_hidden,
                                c.tol * want.grad_hidden.abs().max().item<double>(),
                                what + " grad student_hidden"));
          EXPECT_TRUE(all_close(got.grad_head, want.grad_head,
                                c.tol * want.grad_head.abs().max().item<double>(),
                                what + " grad student_head"));
        }
      }
    }
  }
}

TEST(DistillationLoss, AlphaZeroIsCrossEntropyWithoutTeacher) {
  const Problem p = make_problem(19, 8, 8, 41, at::kFloat, 3);
  const double normalizer = 25.0;
  const at::Tensor hs = p.hs.detach().clone().requires_grad_();
  const LossParts parts = make_loss(0.0, 2.0, 5)(hs, p.ws.detach(), at::Tensor(), at::Tensor(), p.y,
                                                 normalizer);  // no teacher at all
  parts.loss.backward();

  const at::Tensor hs2 = p.hs.detach().clone().requires_grad_();
  const at::Tensor ce =
      torch::nn::functional::cross_entropy(
          hs2.mm(p.ws.detach().t()), p.y,
          torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
      normalizer;
  ce.backward();
  EXPECT_TRUE(all_close(parts.loss, ce, 1e-5 * ce.item<double>(), "loss vs cross_entropy"));
  EXPECT_TRUE(
      all_close(parts.nll_sum, ce * normalizer, 1e-5 * normalizer * ce.item<double>(), "nll_sum"));
  EXPECT_EQ(parts.kl_sum.item<double>(), 0.0);
  EXPECT_TRUE(all_close(hs.grad(), hs2.grad(), 1e-6, "grad student_hidden"));
}

TEST(DistillationLoss, AlphaOneIsKlOnly) {
  const Problem p = make_problem(17, 8, 6, 29, at::kDouble, 4);
  const DistillationLoss loss = make_loss(1.0, 1.5, 4);
  const Result r = run(loss, p, 9.0);
  EXPECT_TRUE(all_close(r.parts.loss * 9.0, r.parts.kl_sum, 1e-12, "loss * normalizer vs kl"));
  EXPECT_GT(r.parts.kl_sum.item<double>(), 0.1);
  // The NLL is still reported, but other targets change neither the loss nor its gradient.
  Problem other = p;
  other.y = (p.y + 1).remainder(29);
  const Result r2 = run(loss, other, 9.0);
  EXPECT_EQ(r2.parts.loss.item<double>(), r.parts.loss.item<double>());
  EXPECT_TRUE(all_close(r2.grad_hidden, r.grad_hidden, 0.0, "grad with other targets"));
  EXPECT_GT(std::abs(r2.parts.nll_sum.item<double>() - r.parts.nll_sum.item<double>()), 1e-3);
  const at::Tensor ce = torch::nn::functional::cross_entropy(
      p.hs.detach().mm(p.ws.detach().t()), p.y,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  EXPECT_TRUE(all_close(r.parts.nll_sum, ce, 1e-10, "nll_sum vs cross_entropy"));
}

TEST(DistillationLoss, SelfDistillationHasZeroKlAndGradient) {
  Problem p = make_problem(21, 10, 10, 37, at::kFloat, 5);
  p.ht = p.hs.detach().clone();
  p.wt = p.ws.detach().clone();
  for (const double tau : {1.0, 2.0}) {
    const Result r = run(make_loss(1.0, tau, 8), p, 21.0);
    EXPECT_NEAR(r.parts.kl_sum.item<double>(), 0.0, 1e-6) << "tau " << tau;
    EXPECT_TRUE(all_close(r.grad_hidden, at::zeros_like(r.grad_hidden), 1e-7, "grad hidden"));
    EXPECT_TRUE(all_close(r.grad_head, at::zeros_like(r.grad_head), 1e-7, "grad head"));
  }
}

TEST(DistillationLoss, UnselectedRowsContributeNothing) {
  // A packed batch: 40 positions, of which 15 are loss positions (gathered by index). Rows that
  // are not gathered may hold anything, NaN included, without changing the loss.
  torch::manual_seed(6);
  const int64_t total = 40, d = 8, v = 31;
  const at::Tensor index =
      at::randperm(total, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, 15);
  const at::Tensor selected =
      at::zeros({total}, at::TensorOptions().dtype(at::kBool)).index_fill_(0, index, true);
  const at::Tensor clean = at::randn({total, d});
  const at::Tensor garbage =
      at::where(selected.unsqueeze(1), clean, at::full({total, d}, std::nan("")));
  const at::Tensor ws = at::randn({v, d}) * 0.5;
  const at::Tensor teacher = at::randn({total, d});
  const at::Tensor wt = at::randn({v, d}) * 0.5;
  const at::Tensor y = at::randint(0, v, {15}, at::TensorOptions().dtype(at::kLong));
  const DistillationLoss loss = make_loss(0.5, 2.0, 4);

  std::vector<at::Tensor> losses, grads;
  for (const at::Tensor& base : {clean, garbage}) {
    const at::Tensor leaf = base.clone().requires_grad_();
    const LossParts parts =
        loss(leaf.index_select(0, index), ws, teacher.index_select(0, index), wt, y, 15.0);
    parts.loss.backward();
    losses.push_back(parts.loss.detach());
    grads.push_back(leaf.grad());
  }
  EXPECT_EQ(losses[0].item<float>(), losses[1].item<float>());
  EXPECT_FALSE(std::isnan(losses[1].item<float>()));
  const at::Tensor unselected = selected.logical_not();
  for (const at::Tensor& g : grads) {
    EXPECT_EQ(g.index({unselected}).abs().max().item<float>(), 0.0f)
        << "gradient reached an unselected row";
    EXPECT_GT(g.index({selected}).abs().max().item<float>(), 0.0f);
  }
  EXPECT_TRUE(all_close(grads[1], grads[0], 0.0, "grad with garbage rows"));
}

TEST(DistillationLoss, MicroBatchesSumToOneBatch) {
  const Problem p = make_problem(13, 8, 6, 23, at::kDouble, 7);
  const DistillationLoss loss = make_loss(0.6, 1.7, 3);
  const double normalizer = 13.0;  // the global count, as every micro-batch must use
  const Result whole = run(loss, p, normalizer);

  const at::Tensor hs = p.hs.detach().clone().requires_grad_();
  const at::Tensor ws = p.ws.detach().clone().requires_grad_();
  double sum = 0, kl = 0, nll = 0;
  const std::vector<std::pair<int64_t, int64_t>> parts = {{0, 5}, {5, 4}, {9, 4}};
  for (const auto& [start, len] : parts) {
    const LossParts lp = loss(hs.narrow(0, start, len), ws, p.ht.narrow(0, start, len), p.wt,
                              p.y.narrow(0, start, len), normalizer);
    lp.loss.backward();  // gradients accumulate in the leaves, as in gradient accumulation
    sum += lp.loss.item<double>();
    kl += lp.kl_sum.item<double>();
    nll += lp.nll_sum.item<double>();
  }
  EXPECT_NEAR(sum, whole.parts.loss.item<double>(), 1e-12);
  EXPECT_NEAR(kl, whole.parts.kl_sum.item<double>(), 1e-11);
  EXPECT_NEAR(nll, whole.parts.nll_sum.item<double>(), 1e-11);
  EXPECT_TRUE(all_close(hs.grad(), whole.grad_hidden, 1e-13, "grad student_hidden"));
  EXPECT_TRUE(all_close(ws.grad(), whole.grad_head, 1e-13, "grad student_head"));
}

TEST(DistillationLoss, TiedHeadGetsBothGradients) {
  // The student's head is its input embedding: the gradient reaches it through the head and
  // through the hidden states computed from it.
  torch::manual_seed(8);
  const int64_t n = 12, d = 6, v = 19;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor embedding0 = at::randn({v, d}, f64) * 0.7;
  const at::Tensor mix = at::randn({d, d}, f64) * 0.5;
  const at::Tensor ids = at::randint(0, v, {n}, at::TensorOptions().dtype(at::kLong));
  const at::Tensor ht = at::randn({n, 5}, f64), wt = at::randn({v, 5}, f64);
  const at::Tensor y = at::randint(0, v, {n}, at::TensorOptions().dtype(at::kLong));
  const DistillationLoss loss = make_loss(0.5, 2.0, 5);

  auto grad_of_embedding = [&](int mode) {  // 0 chunked, 1 reference, 2 reference untied
    const at::Tensor e = embedding0.clone().requires_grad_();
    const at::Tensor hs = at::tanh(e.index_select(0, ids).mm(mix));  // [N, D]
    const at::Tensor head = mode == 2 ? e.detach() : e;
    const LossParts parts =
        mode == 0 ? loss(hs, head, ht, wt, y, 12.0) : loss.reference(hs, head, ht, wt, y, 12.0);
    parts.loss.backward();
    return e.grad();
  };
  const at::Tensor got = grad_of_embedding(0);
  const at::Tensor want = grad_of_embedding(1);
  const at::Tensor hidden_path_only = grad_of_embedding(2);
  EXPECT_TRUE(all_close(got, want, 1e-13, "tied embedding gradient"));
  // The head path matters, so the comparison above checks it.
  EXPECT_GT((want - hidden_path_only).abs().max().item<double>(), 1e-3);
}

TEST(DistillationLoss, TeacherGetsNoGradient) {
  const Problem p = make_problem(9, 6, 4, 11, at::kFloat, 9);
  const at::Tensor ht = p.ht.clone().requires_grad_();
  const at::Tensor wt = p.wt.clone().requires_grad_();
  const at::Tensor hs = p.hs.detach().clone().requires_grad_();
  const LossParts parts = make_loss(0.5, 1.0, 4)(hs, p.ws, ht, wt, p.y, 9.0);
  parts.loss.backward();
  EXPECT_FALSE(ht.grad().defined());
  EXPECT_FALSE(wt.grad().defined());
  EXPECT_TRUE(hs.grad().defined());
}

TEST(DistillationLoss, EmptyBatch) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor hs = at::zeros({0, 8}, f32).requires_grad_();
  const at::Tensor ws = at::randn({17, 8}, f32).requires_grad_();
  const at::Tensor ht = at::zeros({0, 5}, f32), wt = at::randn({17, 5}, f32);
  const at::Tensor y = at::zeros({0}, at::TensorOptions().dtype(at::kLong));
  const LossParts parts = make_loss(0.5, 2.0, 4)(hs, ws, ht, wt, y, 1.0);
  EXPECT_EQ(parts.positions, 0);
  EXPECT_EQ(parts.loss.item<float>(), 0.0f);
  EXPECT_EQ(parts.kl_sum.item<double>(), 0.0);
  EXPECT_EQ(parts.nll_sum.item<double>(), 0.0);
  ASSERT_TRUE(parts.loss.requires_grad());
  parts.loss.backward();
  ASSERT_TRUE(hs.grad().defined());
  EXPECT_EQ(hs.grad().sizes(), hs.sizes());
  ASSERT_TRUE(ws.grad().defined());
  EXPECT_EQ(ws.grad().abs().max().item<float>(), 0.0f);
}

TEST(DistillationLoss, PeakMemoryIsChunkBounded) {
  // N·V logits would be 4 MiB per [N, V] buffer; the chunked loss may hold a few [c, V]
  // buffers (c = 16: 256 KiB each) plus the [V, Ds] head gradient and the [N, Ds] hidden one.
  const int64_t n = 256, d = 32, v = 4096, chunk = 16;
  const Problem p = make_problem(n, d, d, v, at::kFloat, 10);
  const DistillationLoss loss = make_loss(0.5, 2.0, chunk);
  auto peak_of = [&](bool reference) {
    const at::Tensor hs = p.hs.detach().clone().requires_grad_();
    const at::Tensor ws = p.ws.detach().clone().requires_grad_();
    test::CpuMemoryCounter counter;
    {
      const LossParts parts = reference ? loss.reference(hs, ws, p.ht, p.wt, p.y, 1.0 * n)
                                        : loss(hs, ws, p.ht, p.wt, p.y, 1.0 * n);
      parts.loss.backward();
    }
    return counter.peak_bytes();
  };
  const int64_t chunked = peak_of(false);
  const int64_t naive = peak_of(true);
  const int64_t row_block = chunk * v * 4, grads = (v + n) * d * 4;
  EXPECT_GE(naive, 3 * n * v * 4) << "the reference should hold several [N, V] buffers";
  EXPECT_LE(chunked, grads + 6 * row_block) << "chunked peak " << chunked << " bytes";
  EXPECT_LE(chunked * 4, naive) << "chunked " << chunked << " vs naive " << naive;
}

TEST(DistillationLoss, IncomingGradientScalesTheStoredGradients) {
  // The forward pass computes the gradients; backward only scales them by d out/d loss and
  // hands them over, so a second backward through a retained graph is refused by name.
  const Problem p = make_problem(9, 6, 5, 17, at::kDouble, 11);
  const DistillationLoss loss = make_loss(0.6, 1.5, 4);
  const Result once = run(loss, p, 5.0);
  const at::Tensor hs = p.hs.detach().clone().requires_grad_();
  const at::Tensor ws = p.ws.detach().clone().requires_grad_();
  const at::Tensor out = loss(hs, ws, p.ht, p.wt, p.y, 5.0).loss * -2.5;
  out.backward({}, /*retain_graph=*/true);
  EXPECT_TRUE(all_close(hs.grad(), once.grad_hidden * -2.5, 1e-12, "x -2.5 student_hidden"));
  EXPECT_TRUE(all_close(ws.grad(), once.grad_head * -2.5, 1e-12, "x -2.5 student_head"));
  try {
    out.backward();
    ADD_FAILURE() << "a second backward through the loss was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("second backward"), std::string::npos) << e.what();
  }
}

TEST(DistillationLoss, NoGradForwardSkipsTheGradients) {
  // Under NoGradGuard (validation, probing) no [V, Ds] head gradient may be allocated.
  const int64_t n = 64, d = 64, v = 8192, chunk = 16;
  const Problem p = make_problem(n, d, d, v, at::kFloat, 12);
  const DistillationLoss loss = make_loss(0.5, 1.0, chunk);
  const at::Tensor hs = p.hs.detach().clone().requires_grad_();
  const at::Tensor ws = p.ws.detach().clone().requires_grad_();
  auto peak = [&](bool grad) {
    at::AutoGradMode mode(grad);
    test::CpuMemoryCounter counter;
    const LossParts parts = loss(hs, ws, p.ht, p.wt, p.y, 1.0 * n);
    EXPECT_EQ(parts.loss.requires_grad(), grad);
    return counter.peak_bytes();
  };
  const int64_t with = peak(true), without = peak(false);
  EXPECT_GE(with - without, v * d * 4) << "with grads " << with << ", without " << without;
  EXPECT_LT(without, v * d * 4) << "no-grad peak " << without << " bytes";
}

TEST(DistillationLoss, RejectsBadInputs) {
  const Problem p = make_problem(4, 8, 6, 10, at::kFloat, 11);
  const DistillationLoss loss = make_loss(0.5, 1.0, 2);
  auto call = [&](const at::Tensor& hs, const at::Tensor& ws, const at::Tensor& ht,
                  const at::Tensor& wt, const at::Tensor& y, double normalizer = 4.0) {
    return [&loss, hs, ws, ht, wt, y, normalizer] { loss(hs, ws, ht, wt, y, normalizer); };
  };
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  expect_error<ConfigError>(call(p.hs, at::randn({10, 7}, f32), p.ht, p.wt, p.y),
                            {"student_head", "[V, 8]", "[10, 7]"});
  expect_error<ConfigError>(call(p.hs.detach().flatten(), p.ws, p.ht, p.wt, p.y),
                            {"student_hidden", "[N, Ds]", "[32]"});
  expect_error<ConfigError>(call(p.hs, p.ws.detach().to(at::kDouble), p.ht, p.wt, p.y),
                            {"student_head", "dtype", "Float", "Double"});
  expect_error<DataError>(call(p.hs, p.ws, at::randn({5, 6}, f32), p.wt, p.y),
                          {"teacher_hidden", "N = 4", "[5, 6]"});
  expect_error<ConfigError>(call(p.hs, p.ws, p.ht, at::randn({11, 6}, f32), p.y),
                            {"teacher_head", "V = 10", "[11, 6]"});
  expect_error<ConfigError>(call(p.hs, p.ws, p.ht, at::randn({10, 5}, f32), p.y),
                            {"teacher_head", "[V, 6]", "[10, 5]"});
  expect_error<ConfigError>(call(p.hs, p.ws, at::Tensor(), at::Tensor(), p.y),
                            {"teacher_hidden", "undefined", "loss.alpha"});
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  expect_error<DataError>(call(p.hs, p.ws, p.ht, p.wt, at::tensor({1, 2, 10, 3}, i64)),
                          {"targets", "[0, V = 10)", "max 10"});
  expect_error<DataError>(call(p.hs, p.ws, p.ht, p.wt, at::tensor({1, -1, 0, 3}, i64)),
                          {"targets", "min -1"});
  expect_error<DataError>(call(p.hs, p.ws, p.ht, p.wt, p.y.to(at::kInt)),
                          {"targets", "int64", "Int"});
  expect_error<DataError>(call(p.hs, p.ws, p.ht, p.wt, p.y.narrow(0, 0, 3)),
                          {"targets", "N = 4", "[3]"});
  expect_error<DataError>(call(p.hs, p.ws, p.ht, p.wt, p.y, 0.0), {"normalizer", "found 0"});
  // The reference checks the same way.
  expect_error<ConfigError>(
      [&] {
        loss.reference(p.hs, at::randn({10, 7}, f32), p.ht, p.wt, p.y, 4.0);
      },
      {"student_head", "[10, 7]"});
  // α = 0 needs no teacher and ignores a mismatched one.
  EXPECT_NO_THROW(
      make_loss(0.0, 1.0, 2)(p.hs, p.ws, at::randn({3, 2}, f32), at::Tensor(), p.y, 4.0));
}

TEST(DistillationOptions, FromConfigAndValidate) {
  config::LossConfig cfg;
  cfg.alpha = 0.25;
  cfg.temperature = 2.0;
  cfg.chunk_size = 64;
  const DistillationOptions o = DistillationOptions::from_config(cfg);
  EXPECT_EQ(o.alpha, 0.25);
  EXPECT_EQ(o.temperature, 2.0);
  EXPECT_EQ(o.chunk_size, 64);

  cfg.alpha = 1.5;
  expect_error<ConfigError>([&] { DistillationOptions::from_config(cfg); },
                            {"loss.alpha", "[0, 1]", "1.5"});
  DistillationOptions bad;
  bad.alpha = -0.1;
  bad.temperature = 0;
  bad.chunk_size = 0;
  // Every problem at once.
  expect_error<ConfigError>([&] { bad.validate(); },
                            {"loss.alpha", "-0.1", "loss.temperature", "loss.chunk_size"});
  expect_error<ConfigError>([&] { DistillationLoss loss(bad); }, {"loss.alpha"});
  EXPECT_NO_THROW(DistillationOptions{}.validate());
}

TEST(DistillationChunkedKl, EqualsDirectComputation) {
  torch::manual_seed(12);
  const int64_t n = 15, v = 33;
  const at::Tensor ph = at::randn({n, 8}), pw = at::randn({v, 8}) * 0.6;
  const at::Tensor qh = at::randn({n, 5}), qw = at::randn({v, 5}) * 0.6;
  const at::Tensor zp = ph.to(at::kDouble).mm(pw.to(at::kDouble).t());
  const at::Tensor zq = qh.to(at::kDouble).mm(qw.to(at::kDouble).t());
  const at::Tensor log_p = at::log_softmax(zp, 1), log_q = at::log_softmax(zq, 1);
  const at::Tensor want = (log_p.exp() * (log_p - log_q)).sum(1);  // [N]
  ASSERT_GT(want.min().item<double>(), 0.01);
  for (const int64_t chunk : {int64_t{1}, int64_t{4}, n + 3}) {
    const at::Tensor got = chunked_kl(ph, pw, qh, qw, chunk);
    EXPECT_EQ(got.scalar_type(), at::kDouble);
    EXPECT_TRUE(all_close(got, want, 1e-5, "chunked_kl chunk " + std::to_string(chunk)));
  }
  // KL is not symmetric: the argument order matters.
  EXPECT_GT((chunked_kl(qh, qw, ph, pw, 4) - want).abs().max().item<double>(), 1e-3);
  expect_error<DataError>([&] { chunked_kl(ph, pw, qh.narrow(0, 0, 3), qw, 4); },
                          {"q_hidden", "N = 15", "[3, 5]"});
  expect_error<ConfigError>([&] { chunked_kl(ph, pw, qh, qw, 0); }, {"chunk_size"});
}

TEST(DistillationChunkedKl, ZeroForIdenticalInputs) {
  torch::manual_seed(13);
  const at::Tensor h = at::randn({10, 6}), w = at::randn({27, 6});
  const at::Tensor kl = chunked_kl(h, w, h.clone(), w.clone(), 3);
  EXPECT_EQ(kl.sizes(), (std::vector<int64_t>{10}));
  EXPECT_TRUE(all_close(kl, at::zeros_like(kl), 1e-7, "KL(p || p)"));
}

}  // namespace
}  // namespace salad::loss
