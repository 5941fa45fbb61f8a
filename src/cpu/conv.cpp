// CPU 2-D convolution (NHWC, filters [Cout, KH, KW, Cin]): the plain-loop reference and the fast
// path, im2col + OpenBLAS SGEMM over chunks of the batch. Not the CUDA kernels (cuda/conv/*.cu).
#include "src/cpu/conv.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "evo/error.h"
#include "src/cpu/blas.h"

namespace evo::cpu {


// ---- the reference: what a convolution is, one output element at a time ---------------------

void conv2d_forward_reference(Context&, const ConvGeometry& g, const float* x, const float* w,
                              float* y) {
  check_conv_geometry(g, "conv2d_forward_reference");
  const int oh = g.out_h(), ow = g.out_w();
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < g.n; ++n)
    for (int oy = 0; oy < oh; ++oy)
      for (int ox = 0; ox < ow; ++ox)
        for (int co = 0; co < g.c_out; ++co) {
          float sum = 0.f;
          for (int kh = 0; kh < g.kh; ++kh) {
            const int iy = oy * g.stride - g.pad_h() + kh;
            if (iy < 0 || iy >= g.h) continue;  // 'same' padding reads zeros
            for (int kw = 0; kw < g.kw; ++kw) {
              const int ix = ox * g.stride - g.pad_w() + kw;
              if (ix < 0 || ix >= g.w) continue;
              const float* xp = x + ((int64_t(n) * g.h + iy) * g.w + ix) * g.c_in;
              const float* wp = w + ((int64_t(co) * g.kh + kh) * g.kw + kw) * g.c_in;
              for (int ci = 0; ci < g.c_in; ++ci) sum += xp[ci] * wp[ci];
            }
          }
          y[((int64_t(n) * oh + oy) * ow + ox) * g.c_out + co] = sum;
        }
}

// Each input pixel gathers from the output pixels whose window covers it, so every dx element is
// written exactly once (no zero-fill, no scatter).
void conv2d_backward_data_reference(Context&, const ConvGeometry& g, const float* dy,
                                    const float* w, float* dx) {
  check_conv_geometry(g, "conv2d_backward_data_reference");
  const int oh = g.out_h(), ow = g.out_w();
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < g.n; ++n)
    for (int iy = 0; iy < g.h; ++iy)
      for (int ix = 0; ix < g.w; ++ix)
        for (int ci = 0; ci < g.c_in; ++ci) {
          float sum = 0.f;
          for (int kh = 0; kh < g.kh; ++kh) {
            // Output row oy reads input row oy * stride - pad_h + kh.
            const int t = iy + g.pad_h() - kh;
            if (t < 0 || t % g.stride != 0 || t / g.stride >= oh) continue;
            const int oy = t / g.stride;
            for (int kw = 0; kw < g.kw; ++kw) {
              const int u = ix + g.pad_w() - kw;
              if (u < 0 || u % g.stride != 0 || u / g.stride >= ow) continue;
              const int ox = u / g.stride;
              const float* dyp = dy + ((int64_t(n) * oh + oy) * ow + ox) * g.c_out;
              for (int co = 0; co < g.c_out; ++co)
                sum += dyp[co] * w[((int64_t(co) * g.kh + kh) * g.kw + kw) * g.c_in + ci];
            }
          }
          dx[((int64_t(n) * g.h + iy) * g.w + ix) * g.c_in + ci] = sum;
        }
}

void conv2d_backward_filter_reference(Context&, const ConvGeometry& g, const float* x,
                                      const float* dy, float* dw) {
  check_conv_geometry(g, "conv2d_backward_filter_reference");
  const int oh = g.out_h(), ow = g.out_w();
#pragma omp parallel for collapse(2) schedule(static)
  for (int co = 0; co < g.c_out; ++co)
    for (int kh = 0; kh < g.kh; ++kh)
      for (int kw = 0; kw < g.kw; ++kw)
        for (int ci = 0; ci < g.c_in; ++ci) {
          float sum = 0.f;
          for (int n = 0; n < g.n; ++n)
            for (int oy = 0; oy < oh; ++oy) {
              const int iy = oy * g.stride - g.pad_h() + kh;
              if (iy < 0 || iy >= g.h) continue;
              for (int ox = 0; ox < ow; ++ox) {
                const int ix = ox * g.stride - g.pad_w() + kw;
                if (ix < 0 || ix >= g.w) continue;
                sum += dy[((int64_t(n) * oh + oy) * ow + ox) * g.c_out + co] *
                       x[((int64_t(n) * g.h + iy) * g.w + ix) * g.c_in + ci];
              }
            }
          dw[((int64_t(co) * g.kh + kh) * g.kw + kw) * g.c_in + ci] = sum;
        }
}

// ---- the fast path: im2col + SGEMM --------------------------------------------------------
//
// The forward pass is the GEMM  y[M, Cout] = col[M, K] * w[Cout, K]^T  where row m of col holds
// the KH x KW x Cin window under output pixel m (K = KH*KW*Cin, in the filter's own order), so
// the filter tensor is already the GEMM's B operand. Backward data is  dcol = dy * w  followed
// by col2im; backward filter is  dw = dy^T * col.  Materialising col for a whole batch of 50
// 32x32 images with 64 channels would take 59 MB and stream it through memory twice, so each
// thread takes its own slices of the batch through im2col + a single-threaded SGEMM with a col
// buffer that stays in its core's L2: no barrier between the two, and no second thread pool.

namespace {

// Per-thread col buffer: half of a 1 MiB L2, leaving room for the GEMM's packed panels. A single
// core's SGEMM already runs at ~90% of its peak at a few hundred rows (measured on Zen 4).
constexpr int64_t kColChunkBytes = int64_t(512) << 10;

// 1x1 stride 1: x itself is col (NHWC rows of Cin), no copy at all.
bool is_pointwise(const ConvGeometry& g) {
  return g.kh == 1 && g.kw == 1 && g.stride == 1;
}

int64_t chunk_bytes() {
  // Tuning hook for the benchmarks; the default is what the library ships.
  static const int64_t bytes = [] {
    const char* env = std::getenv("EVO_CONV_CHUNK_BYTES");
    return env ? std::max<int64_t>(std::atoll(env), 1) : kColChunkBytes;
  }();
  return bytes;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// GEMM rows per im2col chunk: as many as fit the chunk, but at least kMinRows, below which each
// SGEMM call spends more time packing the [K, Cout] filter panel than multiplying with it
// (8x8x256 3x3 convolutions: 56 rows of K = 2304 fit 512 KiB; 256 rows ran ~15% faster).
constexpr int64_t kMinRows = 256;
int64_t rows_per_part(int64_t k) {
  return std::max(kMinRows, chunk_bytes() / (4 * k));
}

// col[r - r0, (kh, kw, ci)] for GEMM rows r in [r0, r0 + rows), row r = output pixel (n, oy, ox).
// One filter row of a window, KW pixels x Cin channels, is contiguous in NHWC, so each (output
// pixel, kh) is one copy of its in-bounds part plus zeros for the padding.
void im2col(const ConvGeometry& g, const float* x, int64_t r0, int64_t rows, float* col) {
  const int oh = g.out_h(), ow = g.out_w(), cin = g.c_in;
  const int64_t k = g.gemm_k(), span = int64_t(g.kw) * cin;
  int64_t n = r0 / (int64_t(oh) * ow);
  int oy = int(r0 / ow % oh), ox = int(r0 % ow);
  for (int64_t r = 0; r < rows; ++r, col += k) {
    const float* image = x + n * g.h * g.w * cin;
    const int ix0 = ox * g.stride - g.pad_w();
    const int kw_lo = std::max(0, -ix0), kw_hi = std::min(g.kw, g.w - ix0);
    for (int kh = 0; kh < g.kh; ++kh) {
      float* dst = col + kh * span;
      const int iy = oy * g.stride - g.pad_h() + kh;
      if (iy < 0 || iy >= g.h) {
        std::memset(dst, 0, span * sizeof(float));
        continue;
      }
      // Interior windows need neither memset: skipping the empty calls matters when a call
      // costs as much as the copy (the 3-channel first layer copies 36 bytes per call).
      const float* src = image + (int64_t(iy) * g.w + ix0 + kw_lo) * cin;
      if (kw_lo > 0) std::memset(dst, 0, int64_t(kw_lo) * cin * sizeof(float));
      std::memcpy(dst + int64_t(kw_lo) * cin, src, int64_t(kw_hi - kw_lo) * cin * sizeof(float));
      if (kw_hi < g.kw)
        std::memset(dst + int64_t(kw_hi) * cin, 0, int64_t(g.kw - kw_hi) * cin * sizeof(float));
    }
    if (++ox == ow) {
      ox = 0;
      if (++oy == oh) oy = 0, ++n;
    }
  }
}

// The adjoint of im2col, as a gather over `count` whole images: dx[n, iy, ix, :] = the sum of
// the dcol entries that im2col copies from (iy, ix), in (kh, kw) order. Each dx element is
// written once, by one thread: deterministic, and no zero-fill pass.
void col2im(const ConvGeometry& g, const float* dcol, int64_t count, float* dx) {
  const int oh = g.out_h(), ow = g.out_w(), cin = g.c_in;
  const int64_t k = g.gemm_k();
  for (int64_t n = 0; n < count; ++n)
    for (int iy = 0; iy < g.h; ++iy)
      for (int ix = 0; ix < g.w; ++ix) {
        float* d = dx + ((n * g.h + iy) * g.w + ix) * cin;
        for (int ci = 0; ci < cin; ++ci) d[ci] = 0.f;
        for (int kh = 0; kh < g.kh; ++kh) {
          const int ty = iy + g.pad_h() - kh;  // = oy * stride when output row oy reads row iy
          if (ty < 0 || (ty & (g.stride - 1)) != 0 || ty / g.stride >= oh) continue;
          const int64_t row0 = (n * oh + ty / g.stride) * ow;
          for (int kw = 0; kw < g.kw; ++kw) {
            const int tx = ix + g.pad_w() - kw;
            if (tx < 0 || (tx & (g.stride - 1)) != 0 || tx / g.stride >= ow) continue;
            const float* s = dcol + (row0 + tx / g.stride) * k + (int64_t(kh) * g.kw + kw) * cin;
#pragma omp simd
            for (int ci = 0; ci < cin; ++ci) d[ci] += s[ci];
          }
        }
      }
}

}  // namespace

void conv2d_forward_gemm(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                         float* y) {
  check_conv_geometry(g, "conv2d_forward");
  use_single_threaded_blas();
  const int64_t m = g.gemm_m(), k = g.gemm_k(), cout = g.c_out;
  const bool pointwise = is_pointwise(g);
  const int threads = omp_get_max_threads();
  // Pointwise needs no buffer, so its parts only have to balance the threads.
  const Split split = split_for_threads(m, pointwise ? m : rows_per_part(k), threads);
  const int64_t max_rows = ceil_div(m, split.parts);
  Arena::Scope scope(ctx.arena());
  float* cols = pointwise ? nullptr : ctx.arena().allocate_n<float>(threads * max_rows * k);
#pragma omp parallel num_threads(threads)
  {
    float* col = pointwise ? nullptr : cols + omp_get_thread_num() * max_rows * k;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < split.parts; ++p) {
      const int64_t r0 = split.begin(p), rows = split.begin(p + 1) - r0;
      if (rows == 0) continue;
      const float* a = x + r0 * k;
      if (!pointwise) {
        im2col(g, x, r0, rows, col);
        a = col;
      }
      // y[rows, Cout] = col[rows, K] * w[Cout, K]^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cout, k, 1.f, a, k, w, k, 0.f,
                  y + r0 * cout, cout);
    }
  }
}

namespace {

// Stride 1 only: the adjoint of a 'same' convolution is then another 'same' convolution,
// dx = conv(dy, w') with w'[ci, kh, kw, co] = w[co, KH-1-kh, KW-1-kw, ci] (taps mirrored, channel
// roles swapped), so it runs as the forward pass: im2col of dy and one GEMM, no dcol to gather.
void backward_data_by_flipped_forward(Context& ctx, const ConvGeometry& g, const float* dy,
                                      const float* w, float* dx) {
  ConvGeometry flipped_g = g;
  flipped_g.c_in = g.c_out;
  flipped_g.c_out = g.c_in;
  Arena::Scope scope(ctx.arena());
  float* flipped = ctx.arena().allocate_n<float>(g.c_out * g.gemm_k());
#pragma omp parallel for collapse(2) schedule(static)
  for (int ci = 0; ci < g.c_in; ++ci)
    for (int kh = 0; kh < g.kh; ++kh)
      for (int kw = 0; kw < g.kw; ++kw) {
        float* dst = flipped + ((int64_t(ci) * g.kh + kh) * g.kw + kw) * g.c_out;
        const float* src = w + ((int64_t(g.kh - 1 - kh)) * g.kw + (g.kw - 1 - kw)) * g.c_in + ci;
        for (int co = 0; co < g.c_out; ++co) dst[co] = src[int64_t(co) * g.gemm_k()];
      }
  conv2d_forward_gemm(ctx, flipped_g, dy, flipped, dx);
}

// Any stride: dcol = dy * w, then col2im. col2im gathers every contribution to a pixel of dx, so
// a thread's part of the batch is whole images.
void backward_data_by_col2im(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                             float* dx) {
  const int64_t k = g.gemm_k(), cout = g.c_out;
  const int threads = omp_get_max_threads();
  const int64_t rows_per_image = int64_t(g.out_h()) * g.out_w();
  const int64_t image = int64_t(g.h) * g.w * g.c_in;
  const Split split = split_for_threads(g.n, ceil_div(rows_per_part(k), rows_per_image), threads);
  const int64_t max_images = ceil_div(g.n, split.parts);
  Arena::Scope scope(ctx.arena());
  float* dcols = ctx.arena().allocate_n<float>(threads * max_images * rows_per_image * k);
#pragma omp parallel num_threads(threads)
  {
    float* dcol = dcols + omp_get_thread_num() * max_images * rows_per_image * k;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < split.parts; ++p) {
      const int64_t n0 = split.begin(p), count = split.begin(p + 1) - n0;
      if (count == 0) continue;
      // dcol[rows, K] = dy[rows, Cout] * w[Cout, K]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, count * rows_per_image, k, cout, 1.f,
                  dy + n0 * rows_per_image * cout, cout, w, k, 0.f, dcol, k);
      col2im(g, dcol, count, dx + n0 * image);
    }
  }
}

// The col2im GEMM multiplies over Cout only: with few output channels it writes K floats of dcol
// per 2*Cout flops and is bound by memory, not by the FMA units. Below this many the flipped
// forward wins (32x32x16 3x3: ~1.3x); above it col2im does (8x8x256 3x3: ~1.15x), measured.
constexpr int kFlipBelowChannels = 64;
// ...but the flipped forward's GEMM has N = Cin columns, so a narrow input (the 3-channel image)
// starves it instead: col2im was 1.6x faster for 32x32 3->32 3x3.
constexpr int kFlipMinInputChannels = 16;

}  // namespace

void conv2d_backward_data_gemm(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                               float* dx) {
  check_conv_geometry(g, "conv2d_backward_data");
  use_single_threaded_blas();
  if (is_pointwise(g)) {
    const int64_t cin = g.c_in, cout = g.c_out;
    const int threads = omp_get_max_threads();
    const Split split = split_for_threads(g.gemm_m(), g.gemm_m(), threads);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t p = 0; p < split.parts; ++p) {
      const int64_t r0 = split.begin(p), rows = split.begin(p + 1) - r0;
      if (rows == 0) continue;
      // dx[rows, Cin] = dy[rows, Cout] * w[Cout, Cin]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cin, cout, 1.f, dy + r0 * cout,
                  cout, w, cin, 0.f, dx + r0 * cin, cin);
    }
  } else if (g.stride == 1 && g.c_out < kFlipBelowChannels && g.c_in >= kFlipMinInputChannels) {
    backward_data_by_flipped_forward(ctx, g, dy, w, dx);
  } else {
    backward_data_by_col2im(ctx, g, dy, w, dx);
  }
}

void conv2d_backward_filter_gemm(Context& ctx, const ConvGeometry& g, const float* x,
                                 const float* dy, float* dw) {
  check_conv_geometry(g, "conv2d_backward_filter");
  use_single_threaded_blas();
  const int64_t m = g.gemm_m(), k = g.gemm_k(), cout = g.c_out, wsize = cout * k;
  const bool pointwise = is_pointwise(g);
  const int threads = omp_get_max_threads();
  const Split split = split_for_threads(m, pointwise ? m : rows_per_part(k), threads);
  const int64_t max_rows = ceil_div(m, split.parts);
  Arena::Scope scope(ctx.arena());
  float* cols = pointwise ? nullptr : ctx.arena().allocate_n<float>(threads * max_rows * k);
  // Each thread sums its rows' dw into its own buffer (thread 0 straight into dw); the buffers
  // are then added in thread order, so the result is reproducible for a given thread count.
  float* partials = ctx.arena().allocate_n<float>(std::max(threads - 1, 1) * wsize);
  int* wrote = ctx.arena().allocate_n<int>(threads);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    float* col = pointwise ? nullptr : cols + t * max_rows * k;
    float* mine = t == 0 ? dw : partials + (t - 1) * wsize;
    wrote[t] = 0;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < split.parts; ++p) {
      const int64_t r0 = split.begin(p), rows = split.begin(p + 1) - r0;
      if (rows == 0) continue;
      const float* b = x + r0 * k;
      if (!pointwise) {
        im2col(g, x, r0, rows, col);
        b = col;
      }
      // mine[Cout, K] (+)= dy[rows, Cout]^T * col[rows, K]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cout, k, rows, 1.f, dy + r0 * cout, cout,
                  b, k, wrote[t] ? 1.f : 0.f, mine, k);
      wrote[t] = 1;
    }
    // (the implicit barrier of the loop above makes every partial complete here)
    const int team = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < wsize; ++i) {
      float sum = wrote[0] ? dw[i] : 0.f;
      for (int u = 1; u < team; ++u)
        if (wrote[u]) sum += partials[(u - 1) * wsize + i];
      dw[i] = sum;
    }
  }
}

// ---- the ops.h entry points --------------------------------------------------------------

// Which path runs a layer, from bench_ops's CPU evolved set at one thread (the search's setting),
// batch 50 (AMD EPYC, AVX-512, 2026-12-03; bench/results/cpu_evolved.md). Per pass:
// - Past 512 channel pairs (Cin * Cout) the GEMM's register tiles fill up and win: the rules of
//   before the channel kernels (direct from 7 output columns up to 32x32 channels, else GEMM).
// - Forward: the width-vectorised direct kernel where a row fills its vectors and a vector of
//   output channels would not: stride 1 with under 12 output channels (28x28 1->7 3.8x the
//   channel kernel, 14x14 4->5 2.1x, 28x28 8->8 1.2x), or one or two input channels (5x5 1->16
//   1.7x). Everywhere else the channel kernel: 7x7 14->14 s2 1.5x the GEMM, 4x4 14->14 s2 1.4x,
//   2x2 14->23 1.8x, 28x28 7->14 s4 1.2x, 14x14 16->16 1.3x the direct kernel.
// - Backward data: the channel kernel vectorises over input channels, so it needs 7 or more
//   (28x28 7->14 s4 1.6x the direct kernel, 7x7 14->14 s2 1.9x the GEMM, 28x28 8->8 1.15x);
//   under 7 the direct kernel (14x14 4->5: 7.7x the channel kernel), or the GEMM under 7 columns.
// - Backward filter: the channel kernel once a filter row has 5 or more taps (KW * Cin; 5x5 1->16
//   2.4x, 28x28 8->8 2.0x, 14x14 16->16 2.7x the direct kernel; 7x7 16->16 1.35x, 2x2 14->23
//   1.15x the GEMM); the 3x3 one-channel first layer keeps the direct kernel (1.6x).
ConvPath conv2d_path(const ConvGeometry& g, ConvPass pass) {
  const int64_t channels = int64_t(g.c_in) * g.c_out;
  const bool wide = g.out_w() >= 7;
  if (channels > 512) {
    switch (pass) {
      case ConvPass::Forward:
        return wide && g.stride <= 2 && channels <= 1024 ? ConvPath::Direct : ConvPath::Gemm;
      case ConvPass::BackwardData:
        return g.w >= 7 && channels <= 1024 ? ConvPath::Direct : ConvPath::Gemm;
      case ConvPass::BackwardFilter:
        return ConvPath::Gemm;
    }
  }
  switch (pass) {
    case ConvPass::Forward:
      return wide && g.stride <= 2 && (g.c_in <= 2 || (g.stride == 1 && g.c_out < 12))
                 ? ConvPath::Direct
                 : ConvPath::Channels;
    case ConvPass::BackwardData:
      return g.c_in >= 7 ? ConvPath::Channels : g.w >= 7 ? ConvPath::Direct : ConvPath::Gemm;
    case ConvPass::BackwardFilter:
      return g.kw * g.c_in >= 5 ? ConvPath::Channels
             : g.out_w() >= 12  ? ConvPath::Direct
                                : ConvPath::Gemm;
  }
  return ConvPath::Gemm;
}

const char* conv_path_name(ConvPath path) {
  switch (path) {
    case ConvPath::Gemm:
      return "im2col+sgemm";
    case ConvPath::Direct:
      return "direct";
    case ConvPath::Channels:
      return "channels";
  }
  return "?";
}

void conv2d_forward(Context& ctx, const ConvGeometry& g, const float* x, const float* w, float* y) {
  switch (conv2d_path(g, ConvPass::Forward)) {
    case ConvPath::Direct:
      return conv2d_forward_direct(ctx, g, x, w, y);
    case ConvPath::Channels:
      return conv2d_forward_channels(ctx, g, x, w, y);
    case ConvPath::Gemm:
      return conv2d_forward_gemm(ctx, g, x, w, y);
  }
}

void conv2d_backward_data(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                          float* dx) {
  switch (conv2d_path(g, ConvPass::BackwardData)) {
    case ConvPath::Direct:
      return conv2d_backward_data_direct(ctx, g, dy, w, dx);
    case ConvPath::Channels:
      return conv2d_backward_data_channels(ctx, g, dy, w, dx);
    case ConvPath::Gemm:
      return conv2d_backward_data_gemm(ctx, g, dy, w, dx);
  }
}

void conv2d_backward_filter(Context& ctx, const ConvGeometry& g, const float* x, const float* dy,
                            float* dw) {
  switch (conv2d_path(g, ConvPass::BackwardFilter)) {
    case ConvPath::Direct:
      return conv2d_backward_filter_direct(ctx, g, x, dy, dw);
    case ConvPath::Channels:
      return conv2d_backward_filter_channels(ctx, g, x, dy, dw);
    case ConvPath::Gemm:
      return conv2d_backward_filter_gemm(ctx, g, x, dy, dw);
  }
}

}  // namespace evo::cpu
