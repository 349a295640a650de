// Which BLAS LibTorch's CPU GEMMs run on. Debian's reference BLAS is ~30x slower than OpenBLAS,
// and OpenBLAS's pthread build fights LibTorch's OpenMP pool (scripts/setup.sh installs the
// OpenMP build); salad logs the BLAS at start-up and warns about both.
#pragma once

#include <string>

namespace salad {

struct BlasInfo {
  enum class Kind { kOpenBlas, kReference, kMkl, kBlis, kUnknown };
  enum class Threading { kSequential, kPthread, kOpenMP, kUnknown };
  Kind kind = Kind::kUnknown;
  Threading threading = Threading::kUnknown;
  std::string library;      ///< the shared object providing sgemm_ (dladdr)
  std::string description;  ///< e.g. "OpenBLAS 0.3.21 ... (OpenMP)"
};

/// Inspects the loaded process (dlsym/dladdr); never throws.
BlasInfo detect_blas();

/// Logs detect_blas() at info, with a warning for the reference BLAS or a pthread OpenBLAS.
void log_blas_info();

/// Sets LibTorch's intra-op threads: `requested` > 0 as given, 0 = every CPU this process may
/// run on (its affinity mask). LibTorch 1.13's own default can be 1 on a 2-core machine (seen
/// here), which halves GEMM throughput. Returns the number set.
int configure_threads(int requested);

/// Makes LibTorch's CPU ops called from the current thread run on that thread alone (OpenMP
/// team size 1 for this thread only). For helper threads (data loader workers): without it every
/// small tensor copy there starts an OpenMP team whose threads spin on the cores the trainer
/// uses. No effect when LibTorch was not built with OpenMP.
void use_one_op_thread_here();

}  // namespace salad
