// CPU batch normalisation over the rows of x[m, c] (m = N*H*W): training and inference forward,
// backward, each optionally fused with ReLU. Not the running-statistics policy (that is ops.h's).
#include <algorithm>
#include <cmath>

#include <omp.h>

#include "evo/ops.h"

namespace evo::cpu {

namespace {

// Channel sums are taken in fixed blocks of rows, each block summed in float lanes (one per float
// of a tile, below: kLaneTerms terms each) and the block totals added in double, in order: the
// same bits for any thread count. Float lanes take twice the elements of double ones per
// instruction and need no conversions (the BN passes of evolved nets ran ~1.5-2x faster than with
// double lanes); 32 terms a lane round to ~32 * 2^-24 relative at worst, far under the tests'
// tolerances. The forward pass sums x - shift[ch], the shift a value of the batch itself, so
// E[(x-shift)^2] - E[x-shift]^2 does not cancel even when |mean| is 1e4 x the std (the reason the
// lanes used to be double).
constexpr int kLaneTerms = 32;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// running = momentum * running + (1 - momentum) * batch
constexpr float kUpdate = 1.f - kBatchNormMomentum;

// The rows of x[m, c] are walked flat, in tiles of lcm(c, 8) floats (`rows` whole rows), so every
// inner loop is a plain vector loop whatever c is: with the 1 to 16 channels of evolved nets a
// loop over the channels of one row would be 1 to 16 iterations long and never vectorise. A
// per-channel array is tiled to the same length (element j belongs to channel j % c).
struct Tiling {
  int c, rows, len;  // channels, rows per tile, floats per tile = c * rows
  explicit Tiling(int channels) : c(channels) {
    int g = 8;
    while (c % g) g /= 2;  // gcd(c, 8)
    rows = 8 / g;
    // At least 64 floats a tile, so the vector loop is long enough to leave its scalar
    // remainder: 8-float tiles of a 4-channel map ran entirely in the remainder (GCC 12).
    // rows stays a power of two <= 64.
    while (c * rows < 64 && rows < 64) rows *= 2;
    len = c * rows;
  }
  // out[j] = v[j % c] for j < len
  template <typename T>
  void tile(const T* v, T* out) const {
    for (int j = 0; j < len; ++j) out[j] = v[j % c];
  }
};

// sums[k][ch] for k < kTerms: column sums over all rows of what `f(offset, n, acc)` adds for the
// n flat elements from `offset` on (a tile starting at channel 0) into the float acc[k * len + j],
// blocked as above; element j of a tile belongs to channel j % c.
template <int kTerms, typename ElemFn>
void column_sums(Context& ctx, int64_t m, const Tiling& t, ElemFn f, double* sums) {
  const int c = t.c, len = t.len;
  const int64_t block_rows = int64_t(t.rows) * kLaneTerms;  // depends on c alone, not on threads
  const int64_t blocks = (m + block_rows - 1) / block_rows;
  Arena::Scope scope(ctx.arena());
  double* part = ctx.arena().allocate_n<double>(blocks * kTerms * c);
  const int threads = m * c >= kParallelMin ? omp_get_max_threads() : 1;
  float* accs = ctx.arena().allocate_n<float>(std::size_t(threads) * kTerms * len);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    float* acc = accs + int64_t(omp_get_thread_num()) * kTerms * len;
    std::fill(acc, acc + kTerms * len, 0.f);
    const int64_t end = std::min(m, (b + 1) * block_rows);
    for (int64_t r = b * block_rows; r < end; r += t.rows) {
      // block_rows is a multiple of t.rows, so a tile starts at channel 0; the last may be short.
      const int n = int(std::min<int64_t>(t.rows, end - r)) * c;
      f(r * c, n, acc);
    }
    double* out = part + b * kTerms * c;
    std::fill(out, out + kTerms * c, 0.0);
    for (int k = 0; k < kTerms; ++k)
      for (int j = 0; j < len; ++j) out[k * c + j % c] += acc[k * len + j];
  }
  std::fill(sums, sums + kTerms * c, 0.0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int j = 0; j < kTerms * c; ++j) sums[j] += part[b * kTerms * c + j];
}

// y = (x - center[ch]) * scale[ch] + beta[ch], then max(0, .) when relu. Centring first keeps
// float accuracy when |mean| >> std, where x * scale + shift would cancel.
void normalize(Context& ctx, int64_t m, int c, const float* x, const float* center,
               const float* scale, const float* beta, bool relu, float* y) {
  const Tiling t(c);
  Arena::Scope scope(ctx.arena());
  float* ct = ctx.arena().allocate_n<float>(3 * std::size_t(t.len));
  float* st = ct + t.len;
  float* bt = st + t.len;
  t.tile(center, ct);
  t.tile(scale, st);
  t.tile(beta, bt);
  const int64_t tiles = (m + t.rows - 1) / t.rows;
  const int len = t.len;
#pragma omp parallel for schedule(static) if (m * c >= kParallelMin)
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t off = i * len;
    const int n = int(std::min<int64_t>(len, m * c - off));
    const float* xr = x + off;
    float* yr = y + off;
    if (relu) {
#pragma omp simd
      for (int j = 0; j < n; ++j) {
        const float v = (xr[j] - ct[j]) * st[j] + bt[j];
        yr[j] = v < 0.f ? 0.f : v;
      }
    } else {
#pragma omp simd
      for (int j = 0; j < n; ++j) yr[j] = (xr[j] - ct[j]) * st[j] + bt[j];
    }
  }
}

}  // namespace

void batchnorm_forward_train(Context& ctx, int64_t m, int c, const float* x, const float* gamma,
                             const float* beta, bool relu, float* y, float* save_mean,
                             float* save_invstd, float* running_mean, float* running_var) {
  Arena::Scope scope(ctx.arena());
  double* sums = ctx.arena().allocate_n<double>(2 * c);  // [sum x-k | sum (x-k)^2]
  const Tiling t(c);
  const int len = t.len;
  float* kt = ctx.arena().allocate_n<float>(len);  // the shift: the first row's values, tiled
  t.tile(x, kt);
  column_sums<2>(
      ctx, m, t,
      [&](int64_t off, int n, float* acc) {
        const float* xr = x + off;
#pragma omp simd
        for (int j = 0; j < n; ++j) {
          const float v = xr[j] - kt[j];
          acc[j] += v;
          acc[len + j] += v * v;
        }
      },
      sums);
  float* scale = ctx.arena().allocate_n<float>(c);
  for (int ch = 0; ch < c; ++ch) {
    const double shifted_mean = sums[ch] / double(m);
    const double mean = double(kt[ch]) + shifted_mean;
    const double var =
        std::max(0.0, sums[c + ch] / double(m) - shifted_mean * shifted_mean);  // biased
    const double invstd = 1.0 / std::sqrt(var + double(kBatchNormEps));
    save_mean[ch] = float(mean);
    save_invstd[ch] = float(invstd);
    scale[ch] = float(double(gamma[ch]) * invstd);
    // The running variance is the unbiased estimate (ops.h); one row has none, keep the biased.
    const double unbiased = m > 1 ? var * double(m) / double(m - 1) : var;
    running_mean[ch] = kBatchNormMomentum * running_mean[ch] + kUpdate * float(mean);
    running_var[ch] = kBatchNormMomentum * running_var[ch] + kUpdate * float(unbiased);
  }
  normalize(ctx, m, c, x, save_mean, scale, beta, relu, y);
}

void batchnorm_forward_infer(Context& ctx, int64_t m, int c, const float* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             bool relu, float* y) {
  Arena::Scope scope(ctx.arena());
  float* scale = ctx.arena().allocate_n<float>(c);
  for (int ch = 0; ch < c; ++ch) scale[ch] = gamma[ch] / std::sqrt(running_var[ch] + kBatchNormEps);
  normalize(ctx, m, c, x, running_mean, scale, beta, relu, y);
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
  const Tiling t(c);
  const int len = t.len;
  float* mt = ctx.arena().allocate_n<float>(2 * std::size_t(len));  // tiled save_mean, invstd
  float* it = mt + len;
  t.tile(save_mean, mt);
  t.tile(save_invstd, it);
  column_sums<2>(
      ctx, m, t,
      [&](int64_t off, int n, float* acc) {
        const float* xr = x + off;
        const float* dyr = dy + off;
        const float* yr = y + off;
        // The ReLU mask as a float select of values loaded unconditionally, before the widening
        // (GCC 12 keeps such a loop scalar unless -fno-trapping-math, set in CMakeLists.txt).
        if (relu) {
#pragma omp simd
          for (int j = 0; j < n; ++j) {
            const float dyv = dyr[j], yv = yr[j];  // both loaded: no conditional load
            const float g = yv > 0.f ? dyv : 0.f;
            acc[j] += g;
            acc[len + j] += g * ((xr[j] - mt[j]) * it[j]);
          }
        } else {
#pragma omp simd
          for (int j = 0; j < n; ++j) {
            const float g = dyr[j];
            acc[j] += g;
            acc[len + j] += g * ((xr[j] - mt[j]) * it[j]);
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
  float* at = ctx.arena().allocate_n<float>(3 * std::size_t(len));  // tiled a, b, d
  float* bt = at + len;
  float* dt = bt + len;
  t.tile(a, at);
  t.tile(b, bt);
  t.tile(d, dt);
  const int64_t tiles = (m + t.rows - 1) / t.rows;
#pragma omp parallel for schedule(static) if (m * c >= kParallelMin)
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t off = i * len;
    const int n = int(std::min<int64_t>(len, m * c - off));
    const float* xr = x + off;
    const float* dyr = dy + off;
    const float* yr = y + off;
    float* dxr = dx + off;
#pragma omp simd
    for (int j = 0; j < n; ++j) {
      const float dyv = dyr[j], yv = yr[j];
      const bool pass = !relu | (yv > 0.f);
      const float g = pass ? dyv : 0.f;
      dxr[j] = at[j] * g + bt[j] * (xr[j] - mt[j]) + dt[j];
    }
  }
}

}  // namespace evo::cpu
