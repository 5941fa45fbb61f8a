// CPU batch normalisation over the rows of x[m, c] (m = N*H*W): training and inference forward,
// backward, each optionally fused with ReLU. Not the running-statistics policy (that is ops.h's).
#include <algorithm>
#include <cmath>

#include "evo/ops.h"

namespace evo::cpu {

namespace {

// Channel sums are taken in fixed blocks of rows, each block summed in double and the blocks
// added in order: the same bits for any thread count, and no float cancellation in
// E[x^2] - E[x]^2 (double keeps ~1e-8 relative error even when |mean| is 1e4 x the std).
constexpr int64_t kRowBlock = 256;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// running = momentum * running + (1 - momentum) * batch
constexpr float kUpdate = 1.f - kBatchNormMomentum;

// sums[j][ch] for j < `terms`: the column sums of f_j(row, ch) over all rows, blocked as above.
// `f(r, out)` adds row r's contribution to out[0..terms*c).
template <int kTerms, typename RowFn>
void column_sums(Context& ctx, int64_t m, int c, RowFn f, double* sums) {
  const int64_t blocks = (m + kRowBlock - 1) / kRowBlock;
  Arena::Scope scope(ctx.arena());
  double* part = ctx.arena().allocate_n<double>(blocks * kTerms * c);
#pragma omp parallel for schedule(static) if (m * c >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    double* out = part + b * kTerms * c;
    std::fill(out, out + kTerms * c, 0.0);
    const int64_t end = std::min(m, (b + 1) * kRowBlock);
    for (int64_t r = b * kRowBlock; r < end; ++r) f(r, out);
  }
  std::fill(sums, sums + kTerms * c, 0.0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int j = 0; j < kTerms * c; ++j) sums[j] += part[b * kTerms * c + j];
}

// y = (x - center[ch]) * scale[ch] + beta[ch], then max(0, .) when relu. Centring first keeps
// float accuracy when |mean| >> std, where x * scale + shift would cancel.
void normalize(int64_t m, int c, const float* x, const float* center, const float* scale,
               const float* beta, bool relu, float* y) {
#pragma omp parallel for schedule(static) if (m * c >= kParallelMin)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * c;
    float* yr = y + r * c;
    if (relu) {
#pragma omp simd
      for (int ch = 0; ch < c; ++ch) {
        const float v = (xr[ch] - center[ch]) * scale[ch] + beta[ch];
        yr[ch] = v < 0.f ? 0.f : v;
      }
    } else {
#pragma omp simd
      for (int ch = 0; ch < c; ++ch) yr[ch] = (xr[ch] - center[ch]) * scale[ch] + beta[ch];
    }
  }
}

}  // namespace

void batchnorm_forward_train(Context& ctx, int64_t m, int c, const float* x, const float* gamma,
                             const float* beta, bool relu, float* y, float* save_mean,
                             float* save_invstd, float* running_mean, float* running_var) {
  Arena::Scope scope(ctx.arena());
  double* sums = ctx.arena().allocate_n<double>(2 * c);  // [sum x | sum x^2]
  column_sums<2>(
      ctx, m, c,
      [&](int64_t r, double* out) {
        const float* xr = x + r * c;
#pragma omp simd
        for (int ch = 0; ch < c; ++ch) {
          const double v = xr[ch];
          out[ch] += v;
          out[c + ch] += v * v;
        }
      },
      sums);
  float* scale = ctx.arena().allocate_n<float>(c);
  for (int ch = 0; ch < c; ++ch) {
    const double mean = sums[ch] / double(m);
    const double var = std::max(0.0, sums[c + ch] / double(m) - mean * mean);  // biased
    const double invstd = 1.0 / std::sqrt(var + double(kBatchNormEps));
    save_mean[ch] = float(mean);
    save_invstd[ch] = float(invstd);
    scale[ch] = float(double(gamma[ch]) * invstd);
    // The running variance is the unbiased estimate (ops.h); one row has none, keep the biased.
    const double unbiased = m > 1 ? var * double(m) / double(m - 1) : var;
    running_mean[ch] = kBatchNormMomentum * running_mean[ch] + kUpdate * float(mean);
    running_var[ch] = kBatchNormMomentum * running_var[ch] + kUpdate * float(unbiased);
  }
  normalize(m, c, x, save_mean, scale, beta, relu, y);
}

void batchnorm_forward_infer(Context& ctx, int64_t m, int c, const float* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             bool relu, float* y) {
  Arena::Scope scope(ctx.arena());
  float* scale = ctx.arena().allocate_n<float>(c);
  for (int ch = 0; ch < c; ++ch) scale[ch] = gamma[ch] / std::sqrt(running_var[ch] + kBatchNormEps);
  normalize(m, c, x, running_mean, scale, beta, relu, y);
}

// With g = dy masked by the ReLU and xhat = (x - mean) * invstd:
//   dbeta = sum g,  dgamma = sum g * xhat,
//   dx = gamma * invstd * (g - dbeta / m - xhat * dgamma / m)
// (the last two terms are the gradient through the batch mean and variance).
void batchnorm_backward(Context& ctx, int64_t m, int c, const float* x, const float* y,
                        const float* dy, const float* gamma, const float* save_mean,
                        const float* save_invstd, bool relu, float* dx, float* dgamma,
                        float* dbeta) {
  Arena::Scope scope(ctx.arena());
  double* sums = ctx.arena().allocate_n<double>(2 * c);  // [sum g | sum g * xhat]
  column_sums<2>(
      ctx, m, c,
      [&](int64_t r, double* out) {
        const float* xr = x + r * c;
        const float* dyr = dy + r * c;
        const float* yr = y + r * c;
        // The ReLU mask as a multiply by 0 or 1, in its own loop: written as `y > 0 ? dy : 0`,
        // GCC 12 turned the sums into conditional stores and left the loop scalar (25x slower).
        if (relu) {
#pragma omp simd
          for (int ch = 0; ch < c; ++ch) {
            const double g = double(dyr[ch]) * double(yr[ch] > 0.f);
            out[ch] += g;
            out[c + ch] += g * ((double(xr[ch]) - save_mean[ch]) * save_invstd[ch]);
          }
        } else {
#pragma omp simd
          for (int ch = 0; ch < c; ++ch) {
            const double g = dyr[ch];
            out[ch] += g;
            out[c + ch] += g * ((double(xr[ch]) - save_mean[ch]) * save_invstd[ch]);
          }
        }
      },
      sums);
  // dx = a[ch] * g + b[ch] * (x - mean) + d[ch], the formula above per channel; centring x
  // first avoids the cancellation of b * x + d when |mean| >> std.
  float* a = ctx.arena().allocate_n<float>(c);
  float* b = ctx.arena().allocate_n<float>(c);
  float* d = ctx.arena().allocate_n<float>(c);
  for (int ch = 0; ch < c; ++ch) {
    dbeta[ch] = float(sums[ch]);
    dgamma[ch] = float(sums[c + ch]);
    const double k = double(gamma[ch]) * save_invstd[ch];
    a[ch] = float(k);
    b[ch] = float(-k * save_invstd[ch] * sums[c + ch] / double(m));
    d[ch] = float(-k * sums[ch] / double(m));
  }
#pragma omp parallel for schedule(static) if (m * c >= kParallelMin)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * c;
    const float* dyr = dy + r * c;
    const float* yr = y + r * c;
    float* dxr = dx + r * c;
#pragma omp simd
    for (int ch = 0; ch < c; ++ch) {
      const float dyv = dyr[ch], yv = yr[ch];
      const bool pass = !relu | (yv > 0.f);
      const float g = pass ? dyv : 0.f;
      dxr[ch] = a[ch] * g + b[ch] * (xr[ch] - save_mean[ch]) + d[ch];
    }
  }
}

}  // namespace evo::cpu
