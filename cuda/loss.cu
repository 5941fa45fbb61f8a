// GPU softmax cross-entropy against integer labels: summed loss, correct count, mean-loss gradient.
// Not a general softmax: rows are the batch, the loss is always reduced over it.
//
// One warp per row (classes: 10 or 100, a few per lane): max, argmax and sum of exponentials by
// warp shuffles, then per-row loss and hit into a workspace; one block then adds the rows in a
// fixed tree (deterministic, no atomics) and writes the LossResult on the device.
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "evo/ops.h"

namespace evo::EVO_GPU_NS {

namespace {

constexpr int kRowsPerBlock = 4;  // warps per block
constexpr int kSumThreads = 256;  // the final reduction (power of two)

// logits: [N, classes], labels: [N] -> row_loss, row_hit: [N], dlogits (when not null).
// A label outside [0, classes) cannot throw on a GPU: its row's loss and gradient become NaN, so
// the summed loss is NaN and the caller sees it (the CPU backend throws instead).
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    softmax_rows_kernel(int n, int classes, const float* __restrict__ logits,
                        const int32_t* __restrict__ labels, double* __restrict__ row_loss,
                        int* __restrict__ row_hit, float* __restrict__ dlogits, int grad_n) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;  // whole warps leave: every shuffle below has all 32 lanes
  const float* z = logits + int64_t(row) * classes;
  // Max and argmax; ties go to the lower index (the CPU's "first maximum").
  float best = -INFINITY;
  int arg = classes;  // lanes with no class lose every comparison
  for (int k = lane; k < classes; k += 32)
    if (z[k] > best || arg == classes) best = z[k], arg = k;
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, best, offset);
    const int other_arg = __shfl_xor_sync(0xffffffffu, arg, offset);
    if (other_arg < classes &&
        (arg == classes || other > best || (other == best && other_arg < arg)))
      best = other, arg = other_arg;
  }
  // In double, as the CPU: p - 1 for the label's class cancels to a few significant bits when
  // the net is confident, and a float p would leave ~1e-7 absolute error in the gradient. A row
  // is 10 or 100 values: the double math costs nothing next to the launch.
  double sum = 0.0;
  for (int k = lane; k < classes; k += 32) sum += exp(double(z[k]) - best);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const double log_sum = log(sum);
  const int label = labels[row];
  const bool valid = label >= 0 && label < classes;
  if (lane == 0) {
    row_loss[row] = valid ? log_sum - (double(z[label]) - best) : NAN;  // -log softmax[label]
    row_hit[row] = valid && arg == label;
  }
  if (dlogits) {
    float* d = dlogits + int64_t(row) * classes;
    for (int k = lane; k < classes; k += 32) {
      const double p = exp(double(z[k]) - best - log_sum);
      d[k] = valid ? float((p - (k == label ? 1.0 : 0.0)) / grad_n) : NAN;
    }
  }
}

// One block: result = {sum of row_loss (in double), sum of row_hit}.
__global__ void __launch_bounds__(kSumThreads)
    sum_rows_kernel(int n, const double* __restrict__ row_loss, const int* __restrict__ row_hit,
                    LossResult* __restrict__ result) {
  __shared__ double loss[kSumThreads];
  __shared__ int hits[kSumThreads];
  double l = 0.0;
  int h = 0;
  for (int r = threadIdx.x; r < n; r += kSumThreads) {
    l += row_loss[r];
    h += row_hit[r];
  }
  loss[threadIdx.x] = l;
  hits[threadIdx.x] = h;
  __syncthreads();
  for (int half = kSumThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) {
      loss[threadIdx.x] += loss[threadIdx.x + half];
      hits[threadIdx.x] += hits[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    result->loss_sum = float(loss[0]);
    result->correct = hits[0];
  }
}

}  // namespace

void softmax_cross_entropy(Context& ctx, int n, int classes, const float* logits,
                           const int32_t* labels, LossResult* result, float* dlogits, int grad_n) {
  if (dlogits && grad_n < 1)
    throw Error("softmax_cross_entropy: grad_n = " + std::to_string(grad_n) + ", needs >= 1");
  check_int32(int64_t(n) * classes, "softmax_cross_entropy");
  if (classes < 1)
    throw Error("softmax_cross_entropy: classes = " + std::to_string(classes) + ", needs >= 1");
  Arena::Scope scope(ctx.arena());
  double* row_loss = ctx.arena().allocate_n<double>(n > 0 ? n : 1);
  int* row_hit = ctx.arena().allocate_n<int>(n > 0 ? n : 1);
  const cudaStream_t s = stream_of(ctx);
  if (n > 0)
    EVO_LAUNCH(softmax_rows_kernel, (n + kRowsPerBlock - 1) / kRowsPerBlock, kRowsPerBlock * 32, 0,
               s, n, classes, logits, labels, row_loss, row_hit, dlogits, grad_n);
  EVO_LAUNCH(sum_rows_kernel, 1, kSumThreads, 0, s, n, row_loss, row_hit, result);
}

}  // namespace evo::EVO_GPU_NS
