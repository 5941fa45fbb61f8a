// The one place the CPU backend includes OpenBLAS, and the threading rule for calling it.
// Not a BLAS wrapper: the ops call cblas_sgemm directly, where the transposes can be read.
#pragma once

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace evo::cpu {

// OpenMP is the CPU backend's only thread pool: ops split their work into per-thread GEMMs and
// call OpenBLAS single-threaded. Two pools on the same cores fight: libgomp's idle workers spin
// for milliseconds after each parallel region and OpenBLAS's (pthread build) idle workers spin
// for ~0.1 s after each GEMM, which halved SGEMM speed between im2col passes when both ran. One
// pool also makes OMP_NUM_THREADS / omp_set_num_threads() the single knob for the search's
// workers. OpenBLAS's thread count is process-wide, so this sets it; cheap when already 1.
inline void use_single_threaded_blas() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

// [0, total) in `parts` contiguous near-equal ranges: part i is [begin(i), begin(i + 1)).
struct Split {
  int64_t total, parts;
  int64_t begin(int64_t i) const { return total * i / parts; }
};

// A split into parts of at most `max_per_part` elements whose count is a multiple of `threads`,
// so a static schedule hands every thread the same amount of work.
inline Split split_for_threads(int64_t total, int64_t max_per_part, int threads) {
  const int64_t per_thread = (total + threads - 1) / threads;
  const int64_t parts_per_thread = (per_thread + max_per_part - 1) / max_per_part;
  return Split{total, std::max<int64_t>(1, parts_per_thread) * threads};
}

}  // namespace evo::cpu
