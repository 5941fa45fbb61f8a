// GPU batch normalisation over the rows of x[m, c] (m = N*H*W): training and inference forward,
// backward, each optionally fused with ReLU. Not the running-statistics policy (that is ops.h's).
//
// The per-channel sums (sum x and sum x^2 forward; sum g and sum g*xhat backward) are reductions
// over m rows, done in three deterministic steps, without atomics:
//   1. partial sums: block (32 channels x 8 row lanes) per (32 channels, block of rows); a warp
//      reads 32 consecutive channels of a row (coalesced); each thread sums in double, the eight
//      row lanes are added in order; one double per (channel, row block) goes to a workspace;
//   2. finalize: one block per channel adds its row blocks in a fixed tree, then thread 0 derives
//      the per-channel coefficients (and the batch statistics, running statistics, dgamma, dbeta);
//   3. apply: one thread per element, y = (x - mean) * scale + beta (ReLU fused), or dx.
// The row-block size depends only on m, so every device (and the emulator) sums in the same
// order. Double accumulation, as on the CPU: E[x^2] - E[x]^2 keeps ~1e-8 relative error even when
// |mean| is far above the standard deviation.
//
// Ceiling: memory bandwidth. Forward reads x twice (statistics, then apply) and writes y once;
// backward reads x, y, dy twice and writes dx: ~12 and ~28 bytes per element.
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "evo/ops.h"

namespace evo::EVO_GPU_NS {

namespace {

constexpr int kChannels = 32, kLanes = 8;  // partial-sum block: 32 channels x 8 row lanes
constexpr int kPartialThreads = kChannels * kLanes;
constexpr int kFinalizeThreads = 256;  // power of two (tree reduction)
constexpr float kUpdate = 1.f - kBatchNormMomentum;

// Rows per partial-sum block: at least 64, and at most 512 row blocks, so that the finalize step
// reads little; a multiple of the lane count.
int rows_per_block(int64_t m) {
  int64_t r = (m + 511) / 512;
  if (r < 64) r = 64;
  return int((r + kLanes - 1) / kLanes * kLanes);
}

// partial: [2][c][row_blocks] doubles. kBackward: term 0 = g, term 1 = g * xhat, with g = dy
// masked by the ReLU; else term 0 = x, term 1 = x^2.
template <bool kBackward>
__global__ void __launch_bounds__(kPartialThreads)
    partial_sums_kernel(int m, int c, int rows, const float* __restrict__ x,
                        const float* __restrict__ y, const float* __restrict__ dy,
                        const float* __restrict__ mean, const float* __restrict__ invstd, bool relu,
                        double* __restrict__ partial) {
  __shared__ double part[2][kLanes][kChannels + 1];
  const int ch = blockIdx.x * kChannels + threadIdx.x;
  const int r_begin = blockIdx.y * rows;
  const int r_end = min(m, r_begin + rows);
  double s0 = 0.0, s1 = 0.0;
  if (ch < c) {
    if constexpr (kBackward) {
      const double mu = mean[ch], is = invstd[ch];
      for (int r = r_begin + threadIdx.y; r < r_end; r += kLanes) {
        const int64_t e = int64_t(r) * c + ch;
        const double g = (!relu || y[e] > 0.f) ? double(dy[e]) : 0.0;
        s0 += g;
        s1 += g * (double(x[e]) - mu) * is;
      }
    } else {
      for (int r = r_begin + threadIdx.y; r < r_end; r += kLanes) {
        const double v = x[int64_t(r) * c + ch];
        s0 += v;
        s1 += v * v;
      }
    }
  }
  part[0][threadIdx.y][threadIdx.x] = s0;
  part[1][threadIdx.y][threadIdx.x] = s1;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    for (int l = 1; l < kLanes; ++l) {
      s0 += part[0][l][threadIdx.x];
      s1 += part[1][l][threadIdx.x];
    }
    const int blocks = gridDim.y;
    partial[int64_t(ch) * blocks + blockIdx.y] = s0;
    partial[(int64_t(c) + ch) * blocks + blockIdx.y] = s1;
  }
}

// Sums partial[term][ch][0 .. blocks) for both terms in a fixed tree; valid in thread 0.
__device__ void sum_row_blocks(const double* __restrict__ partial, int c, int blocks, int ch,
                               double& s0, double& s1) {
  __shared__ double tree[2][kFinalizeThreads];
  double a = 0.0, b = 0.0;
  for (int i = threadIdx.x; i < blocks; i += kFinalizeThreads) {
    a += partial[int64_t(ch) * blocks + i];
    b += partial[(int64_t(c) + ch) * blocks + i];
  }
  tree[0][threadIdx.x] = a;
  tree[1][threadIdx.x] = b;
  __syncthreads();
  for (int half = kFinalizeThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) {
      tree[0][threadIdx.x] += tree[0][threadIdx.x + half];
      tree[1][threadIdx.x] += tree[1][threadIdx.x + half];
    }
    __syncthreads();
  }
  s0 = tree[0][0];
  s1 = tree[1][0];
}

// One block per channel. scale[c] = gamma * invstd.
__global__ void __launch_bounds__(kFinalizeThreads)
    finalize_forward_kernel(int64_t m, int c, int blocks, const double* __restrict__ partial,
                            const float* __restrict__ gamma, float* __restrict__ save_mean,
                            float* __restrict__ save_invstd, float* __restrict__ running_mean,
                            float* __restrict__ running_var, float* __restrict__ scale) {
  const int ch = blockIdx.x;
  double sum, sum_sq;
  sum_row_blocks(partial, c, blocks, ch, sum, sum_sq);
  if (threadIdx.x != 0) return;
  const double mean = sum / double(m);
  double var = sum_sq / double(m) - mean * mean;  // biased
  if (var < 0.0) var = 0.0;
  const double invstd = 1.0 / sqrt(var + double(kBatchNormEps));
  save_mean[ch] = float(mean);
  save_invstd[ch] = float(invstd);
  scale[ch] = float(double(gamma[ch]) * invstd);
  // The running variance is the unbiased estimate (ops.h); one row has none, keep the biased.
  const double unbiased = m > 1 ? var * double(m) / double(m - 1) : var;
  running_mean[ch] = kBatchNormMomentum * running_mean[ch] + kUpdate * float(mean);
  running_var[ch] = kBatchNormMomentum * running_var[ch] + kUpdate * float(unbiased);
}

// scale[c] = gamma / sqrt(running_var + eps) (float, as the CPU computes it).
__global__ void infer_scale_kernel(int c, const float* __restrict__ gamma,
                                   const float* __restrict__ running_var,
                                   float* __restrict__ scale) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  const float invstd = 1.f / sqrtf(running_var[ch] + kBatchNormEps);
  scale[ch] = gamma[ch] * invstd;
}

// y = (x - mean[ch]) * scale[ch] + beta[ch], then max(0, .) when relu. y may alias x.
// Centred first: the folded x * scale + (beta - mean * scale) cancels catastrophically when
// |mean| >> std (both terms are then ~|mean| / std times larger than y).
__global__ void apply_forward_kernel(int total, FastDiv c, const float* x,
                                     const float* __restrict__ mean,
                                     const float* __restrict__ scale,
                                     const float* __restrict__ beta, bool relu, float* y) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    uint32_t r;
    const int ch = int(fast_divmod(c, uint32_t(e), r));
    const float v = (x[e] - mean[ch]) * scale[ch] + beta[ch];
    y[e] = relu ? (v < 0.f ? 0.f : v) : v;
  }
}

// With g = dy masked by the ReLU and xhat = (x - mean) * invstd:
//   dbeta = sum g,  dgamma = sum g * xhat,
//   dx = gamma * invstd * (g - dbeta / m - xhat * dgamma / m)
// coef: [3][c] = a, b, d of dx = a * g + b * (x - mean) + d (centring x first avoids the
// cancellation of b * x + d when |mean| >> std).
__global__ void __launch_bounds__(kFinalizeThreads)
    finalize_backward_kernel(int64_t m, int c, int blocks, const double* __restrict__ partial,
                             const float* __restrict__ gamma, const float* __restrict__ invstd,
                             float* __restrict__ dgamma, float* __restrict__ dbeta,
                             float* __restrict__ coef) {
  const int ch = blockIdx.x;
  double sum_g, sum_gx;
  sum_row_blocks(partial, c, blocks, ch, sum_g, sum_gx);
  if (threadIdx.x != 0) return;
  dbeta[ch] = float(sum_g);
  dgamma[ch] = float(sum_gx);
  const double is = invstd[ch];
  const double k = double(gamma[ch]) * is;
  coef[ch] = float(k);
  coef[c + ch] = float(-k * is * sum_gx / double(m));
  coef[2 * c + ch] = float(-k * sum_g / double(m));
}

__global__ void apply_backward_kernel(int total, FastDiv c, const float* x, const float* y,
                                      const float* dy, const float* __restrict__ mean,
                                      const float* __restrict__ coef, bool relu, float* dx) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    uint32_t r;
    const int ch = int(fast_divmod(c, uint32_t(e), r));
    const float g = (!relu || y[e] > 0.f) ? dy[e] : 0.f;
    dx[e] = coef[ch] * g + coef[c.d + ch] * (x[e] - mean[ch]) + coef[2 * c.d + ch];
  }
}

}  // namespace

void batchnorm_forward_train(Context& ctx, int64_t m, int c, const float* x, const float* gamma,
                             const float* beta, bool relu, float* y, float* save_mean,
                             float* save_invstd, float* running_mean, float* running_var) {
  check_int32(m * c, "batchnorm_forward_train");
  if (m < 1 || c < 1)
    throw Error("batchnorm_forward_train: m = " + std::to_string(m) +
                " rows and c = " + std::to_string(c) + " channels; both must be >= 1");
  const int rows = rows_per_block(m);
  const int blocks = int((m + rows - 1) / rows);
  Arena::Scope scope(ctx.arena());  // stream-ordered: reused only by work queued after ours
  double* partial = ctx.arena().allocate_n<double>(std::size_t(2) * c * blocks);
  float* scale = ctx.arena().allocate_n<float>(c);
  const cudaStream_t s = stream_of(ctx);
  EVO_LAUNCH(partial_sums_kernel<false>, dim3((c + kChannels - 1) / kChannels, blocks),
             dim3(kChannels, kLanes), 0, s, int(m), c, rows, x, nullptr, nullptr, nullptr, nullptr,
             false, partial);
  EVO_LAUNCH(finalize_forward_kernel, c, kFinalizeThreads, 0, s, m, c, blocks, partial, gamma,
             save_mean, save_invstd, running_mean, running_var, scale);
  EVO_LAUNCH(apply_forward_kernel, blocks_for(m * c), kThreads, 0, s, int(m * c), make_fastdiv(c),
             x, save_mean, scale, beta, relu, y);
}

void batchnorm_forward_infer(Context& ctx, int64_t m, int c, const float* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             bool relu, float* y) {
  check_int32(m * c, "batchnorm_forward_infer");
  if (m * c == 0) return;
  Arena::Scope scope(ctx.arena());
  float* scale = ctx.arena().allocate_n<float>(c);
  const cudaStream_t s = stream_of(ctx);
  EVO_LAUNCH(infer_scale_kernel, (c + kThreads - 1) / kThreads, kThreads, 0, s, c, gamma,
             running_var, scale);
  EVO_LAUNCH(apply_forward_kernel, blocks_for(m * c), kThreads, 0, s, int(m * c), make_fastdiv(c),
             x, running_mean, scale, beta, relu, y);
}

void batchnorm_backward(Context& ctx, int64_t m, int c, const float* x, const float* y,
                        const float* dy, const float* gamma, const float* save_mean,
                        const float* save_invstd, bool relu, float* dx, float* dgamma,
                        float* dbeta) {
  check_int32(m * c, "batchnorm_backward");
  if (m < 1 || c < 1)
    throw Error("batchnorm_backward: m = " + std::to_string(m) +
                " rows and c = " + std::to_string(c) + " channels; both must be >= 1");
  const int rows = rows_per_block(m);
  const int blocks = int((m + rows - 1) / rows);
  Arena::Scope scope(ctx.arena());
  double* partial = ctx.arena().allocate_n<double>(std::size_t(2) * c * blocks);
  float* coef = ctx.arena().allocate_n<float>(std::size_t(3) * c);
  const cudaStream_t s = stream_of(ctx);
  EVO_LAUNCH(partial_sums_kernel<true>, dim3((c + kChannels - 1) / kChannels, blocks),
             dim3(kChannels, kLanes), 0, s, int(m), c, rows, x, y, dy, save_mean, save_invstd, relu,
             partial);
  EVO_LAUNCH(finalize_backward_kernel, c, kFinalizeThreads, 0, s, m, c, blocks, partial, gamma,
             save_invstd, dgamma, dbeta, coef);
  EVO_LAUNCH(apply_backward_kernel, blocks_for(m * c), kThreads, 0, s, int(m * c), make_fastdiv(c),
             x, y, dy, save_mean, coef, relu, dx);
}

}  // namespace evo::EVO_GPU_NS
