#include "salad/core/blas_info.h"

#include <dlfcn.h>
#include <sched.h>

#include <spdlog/spdlog.h>
#include <algorithm>

#include <ATen/Parallel.h>

// OpenMP's C API, declared weak so libsalad needs no OpenMP at build or link time.
extern "C" void omp_set_num_threads(int) __attribute__((weak));

namespace salad {

BlasInfo detect_blas() {
  BlasInfo info;
  // LibTorch calls the Fortran symbol through libblas.so.3; whichever library defines it wins.
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info dl{};
  if (sgemm && dladdr(sgemm, &dl) && dl.dli_fname) {
    char resolved[4096];
    info.library = realpath(dl.dli_fname, resolved) ? resolved : dl.dli_fname;
  }
  // Other BLAS libraries may be loaded too (liblapack.so.3 pulls in libopenblas.so.0 even when
  // libblas.so.3 is the reference one), so a vendor's query function counts only when it is
  // reachable from the library that defines sgemm_: that library itself or its dependencies
  // (OpenBLAS's libblas.so.3 is a thin wrapper over libopenblas.so.0).
  const std::string loaded_name = (sgemm && dl.dli_fname) ? dl.dli_fname : "";
  auto vendor_symbol = [&](const char* name) -> void* {
    if (loaded_name.empty()) return nullptr;
    void* handle = dlopen(loaded_name.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (!handle) return nullptr;
    void* sym = dlsym(handle, name);
    dlclose(handle);
    return sym;
  };
  using GetConfig = char* (*)();
  using GetInt = int (*)();
  void* openblas_config = vendor_symbol("openblas_get_config");
  if (openblas_config) {
    info.kind = BlasInfo::Kind::kOpenBlas;
    info.description = reinterpret_cast<GetConfig>(openblas_config)();
    if (auto par = reinterpret_cast<GetInt>(vendor_symbol("openblas_get_parallel"))) {
      switch (par()) {
        case 0:
          info.threading = BlasInfo::Threading::kSequential;
          break;
        case 1:
          info.threading = BlasInfo::Threading::kPthread;
          break;
        case 2:
          info.threading = BlasInfo::Threading::kOpenMP;
          break;
        default:
          break;
      }
    }
  } else if (vendor_symbol("mkl_get_version_string")) {
    info.kind = BlasInfo::Kind::kMkl;
    info.description = "Intel MKL";
  } else if (vendor_symbol("bli_info_get_version_str")) {
    info.kind = BlasInfo::Kind::kBlis;
    info.description = "BLIS";
  } else if (info.library.find("/blas/") != std::string::npos ||
             info.library.find("libblas.so") != std::string::npos) {
    info.kind = BlasInfo::Kind::kReference;
    info.description = "reference BLAS (netlib)";
  } else {
    info.description = "unknown BLAS";
  }
  return info;
}

void log_blas_info() {
  const BlasInfo b = detect_blas();
  const char* threading = "";
  switch (b.threading) {
    case BlasInfo::Threading::kSequential:
      threading = ", sequential";
      break;
    case BlasInfo::Threading::kPthread:
      threading = ", pthreads";
      break;
    case BlasInfo::Threading::kOpenMP:
      threading = ", OpenMP";
      break;
    default:
      break;
  }
  spdlog::info("BLAS: {}{} ({}); LibTorch intra-op threads: {}", b.description, threading,
               b.library.empty() ? "library not found" : b.library, at::get_num_threads());
  if (b.kind == BlasInfo::Kind::kReference) {
    spdlog::warn(
        "LibTorch runs on the reference BLAS, ~30x slower than OpenBLAS: install "
        "libopenblas0-openmp and point the libblas.so.3 alternative at it "
        "(scripts/setup.sh does both)");
  } else if (b.threading == BlasInfo::Threading::kPthread) {
    spdlog::warn(
        "OpenBLAS is the pthread build; its threads fight LibTorch's OpenMP pool "
        "(~3x slower steps measured on 2 cores): install libopenblas0-openmp "
        "(scripts/setup.sh)");
  }
}

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  n = std::max(n, 1);
  at::set_num_threads(n);
  return n;
}

void use_one_op_thread_here() {
  // omp_set_num_threads sets the calling thread's nthreads ICV, so the parallel regions ATen
  // opens from this thread get a team of one. Weak: resolved against whichever OpenMP runtime
  // LibTorch loaded (Debian's libgomp or the one bundled with official LibTorch builds).
  if (omp_set_num_threads) omp_set_num_threads(1);
}

}  // namespace salad
