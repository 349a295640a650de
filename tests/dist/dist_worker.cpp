// salad_dist_worker: one rank of the multi-process dist tests (tests/dist/*_test.cpp launch two).
//
//   salad_dist_worker collectives          every Comm collective, checked against known values
//   salad_dist_worker buckets OUT_PREFIX   GradBuckets on TinyNet; writes OUT_PREFIX<rank>.bin
//                                          (flat_grad as raw fp64) after two identical steps
//   salad_dist_worker die                  all_reduce in a loop; rank 1 exits after 3 rounds
//   salad_dist_worker hang                 all_reduce in a loop; rank 1 stops calling after 3
//
// Rank, world and master come from torchrun's variables; SALAD_TEST_TIMEOUT_S sets the timeout.
// Exit codes: 0 ok, 1 salad::Error (its message on stderr), 2 a check failed, 3 rank 1 in `die`.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

#include "dist/dist_test_model.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/logging.h"
#include "salad/dist/comm.h"

namespace {

using salad::dist::Comm;

struct CheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(bool ok, const std::string& what) {
  if (!ok) throw CheckFailed(what);
}

void check_equal(const at::Tensor& actual, const at::Tensor& expected, const std::string& what) {
  if (!actual.equal(expected)) {
    std::ostringstream os;
    os << what << ": got " << actual << " expected " << expected;
    throw CheckFailed(os.str());
  }
}

void collectives(Comm& comm) {
  const int64_t r = comm.rank(), w = comm.world_size();
  check(comm.distributed() && comm.backend() == "gloo", "backend " + comm.backend());

  at::Tensor t = torch::full({3}, static_cast<double>(r + 1));
  comm.all_reduce_sum(t);
  check_equal(t, torch::full({3}, static_cast<double>(w * (w + 1) / 2)), "all_reduce_sum");

  // Non-contiguous: every other element of a [2, 3] float tensor's transpose.
  at::Tensor base = torch::full({2, 3}, static_cast<float>(r + 1));
  at::Tensor nc = base.t();
  comm.all_reduce_sum(nc);
  check_equal(base, torch::full({2, 3}, static_cast<float>(w * (w + 1) / 2)), "non-contiguous");

  at::Tensor b = r == 1 ? torch::arange(5, torch::kLong) : torch::zeros({5}, torch::kLong);
  comm.broadcast(b, 1);
  check_equal(b, torch::arange(5, torch::kLong), "broadcast from rank 1");

  at::Tensor out = torch::full({w * 4}, -1.0f);
  comm.all_gather(out, torch::full({4}, static_cast<float>(10 * r)));
  at::Tensor expected = torch::arange(w, torch::kFloat).mul(10).repeat_interleave(4);
  check_equal(out, expected, "all_gather");

  // The shard aliasing this rank's slice of the output.
  at::Tensor flat = torch::zeros({w * 3}, torch::kDouble);
  at::Tensor own = flat.narrow(0, r * 3, 3);
  own.fill_(static_cast<double>(r + 7));
  comm.all_gather(flat, own);
  check_equal(flat, torch::arange(w, torch::kDouble).add(7).repeat_interleave(3),
              "all_gather in place");

  check(comm.sum(0.5 + static_cast<double>(r)) == 0.5 * w + w * (w - 1) / 2.0, "sum");
  check(comm.max(static_cast<double>(10 - r)) == 10.0, "max");
  check(comm.max(static_cast<double>(r)) == static_cast<double>(w - 1), "max of ranks");

  static const char kBytes[] = "from rank 0: \xc3\xa9t\xc3\xa9\0binary";
  const std::string s0(kBytes, sizeof(kBytes) - 1);
  check(comm.broadcast_string(r == 0 ? s0 : "ignored") == s0, "broadcast_string root 0");
  check(comm.broadcast_string(r == 1 ? "from 1" : "", 1) == "from 1", "broadcast_string root 1");
  check(comm.broadcast_string(r == 0 ? "" : "not empty").empty(), "broadcast_string empty");
  comm.barrier();
  std::cout << "collectives ok on rank " << r << std::endl;
}

void buckets(const std::shared_ptr<Comm>& comm, const std::string& out_prefix) {
  salad::test::TinyNet net = salad::test::make_tiny_net();
  std::vector<at::Tensor> params;
  at::Tensor flat = salad::test::attach_flat_grad(net, params);
  salad::dist::GradBuckets gb(comm, params, flat, /*bucket_bytes=*/256);
  check(gb.bucket_count() >= 4, "bucket count " + std::to_string(gb.bucket_count()));

  at::Tensor first;
  for (int step = 0; step < 2; ++step) {
    flat.zero_();
    for (int64_t m = 0; m < salad::test::kMicroBatchesPerRank; ++m) {
      gb.begin(m == salad::test::kMicroBatchesPerRank - 1);
      salad::test::tiny_loss(net, comm->rank() * salad::test::kMicroBatchesPerRank + m).backward();
    }
    gb.finish();
    check(gb.launched_during_backward() > 0, "no bucket was launched during backward");
    if (step == 0) first = flat.clone();
  }
  check_equal(flat, first, "second step");
  std::ofstream f(out_prefix + std::to_string(comm->rank()) + ".bin", std::ios::binary);
  f.write(static_cast<const char*>(flat.data_ptr()), flat.numel() * sizeof(double));
  check(f.good(), "writing " + out_prefix);
  std::cout << "buckets ok on rank " << comm->rank() << ": " << gb.bucket_count()
            << " buckets, launched_during_backward=" << gb.launched_during_backward() << std::endl;
}

void failing(Comm& comm, bool die) {
  at::Tensor t = torch::ones({1000});
  for (int i = 0; i < 100000; ++i) {
    if (comm.rank() == 1 && i == 3) {
      if (die) {
        std::cout << "rank 1 exits now" << std::endl;
        ::_exit(3);
      }
      std::cout << "rank 1 stops calling collectives" << std::endl;
      std::this_thread::sleep_for(std::chrono::seconds(120));
      return;
    }
    comm.all_reduce_sum(t);
    t.fill_(1.0f);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    salad::setup_logging();
    salad::config::DistConfig cfg;
    cfg.backend = "gloo";
    if (const char* t = std::getenv("SALAD_TEST_TIMEOUT_S")) cfg.timeout_s = std::atof(t);
    auto comm = std::make_shared<Comm>(salad::dist::CommOptions::from_env(cfg));
    if (mode == "collectives") {
      collectives(*comm);
    } else if (mode == "buckets" && argc > 2) {
      buckets(comm, argv[2]);
    } else if (mode == "die" || mode == "hang") {
      failing(*comm, mode == "die");
    } else {
      std::cerr << "usage: salad_dist_worker collectives|buckets OUT_PREFIX|die|hang\n";
      return 2;
    }
  } catch (const CheckFailed& e) {
    std::cerr << "check failed: " << e.what() << std::endl;
    return 2;
  } catch (const salad::Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
