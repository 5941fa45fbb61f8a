// The CPU backend's threading knob for callers outside it (the search's workers, evo train):
// OpenMP threads of the calling host thread, OpenBLAS single-threaded (blas.h says why). Not a
// thread pool of its own.
#include <algorithm>

#include "evo/backend.h"
#include "src/cpu/blas.h"

namespace evo {

void set_cpu_threads(int threads) {
  omp_set_num_threads(std::max(1, threads));  // per host thread: each worker sets its own
  cpu::use_single_threaded_blas();
}

}  // namespace evo
