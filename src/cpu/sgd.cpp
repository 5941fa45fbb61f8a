// CPU SGD step with momentum and L2 weight decay, in place on one flat parameter tensor.
// Not a learning-rate schedule or an optimiser object: the trainer owns those.
#include "evo/ops.h"

namespace evo::cpu {

namespace {
constexpr int64_t kParallelMin = int64_t(1) << 15;
}  // namespace

// PyTorch's form (ops.h): v = momentum * v + (g + weight_decay * w);  w -= lr * v
void sgd_update(Context&, int64_t n, float lr, float momentum, float weight_decay, float* w,
                const float* g, float* v) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float vi = momentum * v[i] + (g[i] + weight_decay * w[i]);
    v[i] = vi;
    w[i] -= lr * vi;
  }
}

}  // namespace evo::cpu
