// Exact live/peak byte counts of CPU tensor storage, for memory tests and benchmarks
// (tests/loss/distillation_test.cpp, bench/bench_loss.cpp). Memory the BLAS or OpenMP allocate
// behind LibTorch's back (GEMM packing buffers) is not tensor storage and is not counted.
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>

namespace salad::test {

/// While alive, every CPU tensor allocation goes through this counter (c10::SetCPUAllocator),
/// which delegates to the allocator that was installed before and tracks live and peak bytes.
/// Only one may exist at a time. Storage allocated before it is installed is never counted;
/// storage it counted may outlive it. Thread-safe (atomics).
class CpuMemoryCounter : public c10::Allocator {
 public:
  CpuMemoryCounter() : original_(c10::GetCPUAllocator()) {
    c10::SetCPUAllocator(this, kPriority);
    if (c10::GetCPUAllocator() != this) {
      throw std::runtime_error("CpuMemoryCounter: a higher-priority CPU allocator is installed");
    }
  }
  ~CpuMemoryCounter() override { c10::SetCPUAllocator(original_, kPriority); }
  CpuMemoryCounter(const CpuMemoryCounter&) = delete;
  CpuMemoryCounter& operator=(const CpuMemoryCounter&) = delete;

  // LibTorch 1.x and 2.0-2.2 declare `allocate(size_t) const`; later 2.x make it non-const
  // and add a pure copy_data(). Declaring both overloads (without `override`) implements
  // whichever one the installed headers declare.
  c10::DataPtr allocate(size_t n) const { return counted(n); }
  c10::DataPtr allocate(size_t n) { return counted(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const {
    std::memcpy(dest, src, count);
  }

  int64_t live_bytes() const { return state_->live.load(); }
  int64_t peak_bytes() const { return state_->peak.load(); }
  /// Starts a new peak from the current live bytes.
  void reset_peak() { state_->peak.store(state_->live.load()); }

 private:
  static constexpr uint8_t kPriority = 0;

  // Shared with every live allocation, so a tensor that outlives the counter can still be freed.
  struct State {
    std::atomic<int64_t> live{0};
    std::atomic<int64_t> peak{0};
  };
  struct Record {
    c10::DataPtr inner;  // the original allocator's allocation; freed with the record
    int64_t bytes;
    std::shared_ptr<State> state;
  };

  static void release(void* ctx) {
    auto* r = static_cast<Record*>(ctx);
    r->state->live.fetch_sub(r->bytes);
    delete r;
  }

  c10::DataPtr counted(size_t n) const {
    c10::DataPtr inner = original_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    const auto bytes = static_cast<int64_t>(n);
    auto* r = new Record{std::move(inner), bytes, state_};
    const int64_t live = state_->live.fetch_add(bytes) + bytes;
    int64_t peak = state_->peak.load();
    while (live > peak && !state_->peak.compare_exchange_weak(peak, live)) {
    }
    return c10::DataPtr(data, r, &release, device);
  }

  c10::Allocator* original_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace salad::test
