// CPU memory-bound ops: ReLU, the N-way skip sum, nearest resize, channel truncate/zero-pad and
// global average pooling, forward and backward. Not batch norm's fused ReLU (batchnorm.cpp).
#include <algorithm>
#include <cstring>

#include "evo/ops.h"

namespace evo::cpu {

namespace {
// Below this many elements a parallel region costs more than it saves (~1 us of fork/join).
constexpr int64_t kParallelMin = int64_t(1) << 15;
}  // namespace

void relu_forward(Context&, int64_t n, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  // Written as a select (std::max's reference return kept GCC 12 on a scalar, branchy loop);
  // NaN passes through, so a diverging net shows up instead of turning into zeros.
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.f ? 0.f : x[i];
}

void relu_backward(Context&, int64_t n, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

// Summed in input order (inputs[0] + inputs[1] + ...), the order every backend uses. Each block
// is summed in a buffer in L1, so every inner loop is a plain vector loop, and then stored: y may
// be any of the inputs.
void add_n(Context&, int64_t n, const float* const* inputs, int count, float* y) {
  // One or two inputs (an identity edge's copy, one more in-edge added to a sum): one pass, no
  // block on the stack. Element i is read before it is written, so y may be either input.
  if (count == 1) {
    if (y != inputs[0]) std::memcpy(y, inputs[0], sizeof(float) * std::size_t(n));
    return;
  }
  if (count == 2) {
    const float* a = inputs[0];
    const float* b = inputs[1];
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
    return;
  }
  constexpr int64_t kBlock = 1024;  // 4 KiB on the stack
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * count >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlock, len = std::min(n - begin, kBlock);
    float sum[kBlock];
    const float* first = inputs[0] + begin;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) sum[i] = first[i];
    for (int j = 1; j < count; ++j) {
      const float* in = inputs[j] + begin;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) sum[i] += in[i];
    }
    std::memcpy(y + begin, sum, len * sizeof(float));
  }
}

// y[n, i, j, :] = x[n, i*H/OH, j*W/OW, :] (integer division = floor for these non-negatives).
void resize_nearest_forward(Context& ctx, int n, int h, int w, int c, int oh, int ow,
                            const float* x, float* y) {
  // The source column of each output column, once per call: a 64-bit division per pixel cost as
  // much as the copy on the 4x4 maps of evolved nets.
  Arena::Scope scope(ctx.arena());
  int64_t* src_col = ctx.arena().allocate_n<int64_t>(std::size_t(ow));
  for (int j = 0; j < ow; ++j) src_col[j] = int64_t(j) * w / ow * c;
  const int64_t rows = int64_t(n) * oh;
#pragma omp parallel for schedule(static) if (rows * ow * c >= kParallelMin)
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t b = t / oh;
    const int i = int(t % oh);
    const int64_t sy = int64_t(i) * h / oh;
    const float* xrow = x + (b * h + sy) * w * c;
    float* yrow = y + t * ow * c;
    // A plain loop, not memcpy: evolved nets have 1 to 16 channels, and a library call per
    // pixel for 4 to 64 bytes cost more than the copy.
    for (int j = 0; j < ow; ++j) {
      const float* src = xrow + src_col[j];
      float* dst = yrow + int64_t(j) * c;
      for (int ch = 0; ch < c; ++ch) dst[ch] = src[ch];
    }
  }
}

// Output row i reads input row floor(i*H/OH), so input row r is read by the output rows
// i in [ceil(r*OH/H), ceil((r+1)*OH/H)): the gather's bounds, summed in (i, j) order.
void resize_nearest_backward(Context& ctx, int n, int h, int w, int c, int oh, int ow,
                             const float* dy, float* dx) {
  auto first_reader = [](int64_t r, int64_t in, int64_t out) { return (r * out + in - 1) / in; };
  // The output columns [j0[s], j0[s + 1]) that read input column s, once per call (two 64-bit
  // divisions per pixel cost more than the adds on the small maps of evolved nets).
  Arena::Scope scope(ctx.arena());
  int64_t* j0 = ctx.arena().allocate_n<int64_t>(std::size_t(w) + 1);
  for (int s = 0; s <= w; ++s) j0[s] = first_reader(s, w, ow);
  const int64_t rows = int64_t(n) * h;
#pragma omp parallel for schedule(static) if (rows * w * c >= kParallelMin)
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t b = t / h;
    const int r = int(t % h);
    const int64_t i0 = first_reader(r, h, oh), i1 = first_reader(r + 1, h, oh);
    for (int s = 0; s < w; ++s) {
      float* d = dx + (t * w + s) * c;
      for (int ch = 0; ch < c; ++ch) d[ch] = 0.f;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0[s]; j < j0[s + 1]; ++j) {
          const float* g = dy + ((b * oh + i) * ow + j) * c;
#pragma omp simd
          for (int ch = 0; ch < c; ++ch) d[ch] += g[ch];
        }
    }
  }
}

namespace {
// dst[m, dst_c] = src[m, src_c] for the first min(src_c, dst_c) channels, zeros after them.
void copy_channels(int64_t m, int src_c, int dst_c, const float* src, float* dst) {
  const int keep = std::min(src_c, dst_c);
#pragma omp parallel for schedule(static) if (m * dst_c >= kParallelMin)
  for (int64_t r = 0; r < m; ++r) {
    // Loops, not memcpy/memset per row: rows of evolved nets are 4 to 64 bytes.
    const float* s = src + r * src_c;
    float* d = dst + r * dst_c;
    for (int ch = 0; ch < keep; ++ch) d[ch] = s[ch];
    for (int ch = keep; ch < dst_c; ++ch) d[ch] = 0.f;
  }
}
}  // namespace

void channel_resize_forward(Context&, int64_t m, int c_in, int c_out, const float* x, float* y) {
  copy_channels(m, c_in, c_out, x, y);
}

// The adjoint: kept channels pass their gradient back, truncated ones receive zero, and the
// gradient of padding channels is dropped.
void channel_resize_backward(Context&, int64_t m, int c_in, int c_out, const float* dy, float* dx) {
  copy_channels(m, c_out, c_in, dy, dx);
}

// With few channels the pixel loop is a chain of dependent scalar adds (a 28x28 one-channel
// image: 784 adds at 3-4 cycles each). So pixels are summed kLanes at a time, pixel p into lane
// p % kLanes of a [kLanes, c] block, and the lanes added at the end: the order is fixed by the
// shape alone, the same on every call.
void global_avg_pool_forward(Context&, int n, int hw, int c, const float* x, float* y) {
  constexpr int kLanes = 8;
  const float inv = 1.f / float(hw);
#pragma omp parallel for schedule(static) if (int64_t(n) * hw * c >= kParallelMin)
  for (int b = 0; b < n; ++b) {
    float* yb = y + int64_t(b) * c;
    const float* xb = x + int64_t(b) * hw * c;
    if (c <= 8) {
      float acc[kLanes * 8] = {};  // [kLanes][c] in the first kLanes * c
      const int span = kLanes * c, full = hw / kLanes * kLanes;
      for (int p = 0; p < full; p += kLanes) {
        const float* xp = xb + int64_t(p) * c;
#pragma omp simd
        for (int j = 0; j < span; ++j) acc[j] += xp[j];
      }
      for (int j = 0; j < (hw - full) * c; ++j) acc[j] += xb[int64_t(full) * c + j];
      for (int ch = 0; ch < c; ++ch) {
        float sum = 0.f;
        for (int l = 0; l < kLanes; ++l) sum += acc[l * c + ch];
        yb[ch] = sum * inv;
      }
      continue;
    }
    for (int ch = 0; ch < c; ++ch) yb[ch] = 0.f;
    for (int p = 0; p < hw; ++p) {
#pragma omp simd
      for (int ch = 0; ch < c; ++ch) yb[ch] += xb[int64_t(p) * c + ch];
    }
    for (int ch = 0; ch < c; ++ch) yb[ch] *= inv;
  }
}

void global_avg_pool_backward(Context&, int n, int hw, int c, const float* dy, float* dx) {
  const float inv = 1.f / float(hw);
  const int64_t rows = int64_t(n) * hw;
#pragma omp parallel for schedule(static) if (rows * c >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = dy + (r / hw) * c;
    float* d = dx + r * c;
#pragma omp simd
    for (int ch = 0; ch < c; ++ch) d[ch] = g[ch] * inv;
  }
}

}  // namespace evo::cpu
