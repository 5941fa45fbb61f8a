// CPU He et al. (2015) weight initialisation from the counter-based Philox generator.
// Not the choice of fan-in or of which tensors to reset: the model decides those.
#include <cmath>
#include <string>

#include "evo/draws.h"
#include "evo/error.h"
#include "evo/ops.h"

namespace evo::cpu {

// w[i] ~ Normal(0, sqrt(2 / fan_in)); element i is a pure function of (rng, i) (evo/draws.h), so
// the thread layout cannot change the values.
void he_init(Context&, int64_t n, int fan_in, PhiloxState rng, float* w) {
  if (fan_in < 1)
    throw Error("he_init: fan_in " + std::to_string(fan_in) +
                " must be >= 1 (inputs feeding one output: KH*KW*Cin for a convolution)");
  const float std = std::sqrt(2.0f / float(fan_in));
#pragma omp parallel for schedule(static) if (n >= 4096)
  for (int64_t i = 0; i < n; ++i) w[i] = he_normal_draw(rng, i, std);
}

}  // namespace evo::cpu
