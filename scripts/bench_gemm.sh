#!/usr/bin/env bash
# fp32 GEMM GFLOP/s and a small training step with each BLAS LibTorch can load here: the
# configured one (setup.sh: OpenBLAS OpenMP), Debian's reference BLAS, and OpenBLAS pthreads
# if libopenblas0-pthread is installed. The library is switched per run with LD_LIBRARY_PATH
# (libtorch_cpu loads libblas.so.3 by soname), nothing system-wide changes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SALAD_BUILD_DIR:-build}/bench/salad_bench_gemm
[ -x "$bin" ] || { echo "build first: scripts/build.sh"; exit 1; }
libdir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
echo "== configured BLAS"; "$bin"
for variant in blas:libblas3 openblas-pthread:libopenblas0-pthread; do
  dir=${variant%%:*} pkg=${variant##*:}
  if [ -f "$libdir/$dir/libblas.so.3" ]; then
    echo "== $dir"; LD_LIBRARY_PATH="$libdir/$dir" "$bin"
  else
    echo "== $dir: not installed (apt-get install $pkg)"
  fi
done
