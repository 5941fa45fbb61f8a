// Convolution version 1, direct: one GPU thread per output element, looping over its whole sum
// straight from global memory. Not fast: the baseline every later version is measured against.
//
// What it is: the CPU reference loops (src/cpu/conv.cpp) with the outer loops turned into threads.
//   forward          thread (m, co):        y[m, co]      = sum over (kh, kw, ci)  x * w
//   backward data    thread (pixel, ci):    dx[pixel, ci] = sum over (kh, kw, co)  dy * w  (gather)
//   backward filter  thread (co, kh, kw, ci): dw[...]     = sum over (n, oy, ox)   dy * x
// Every output is written exactly once by one thread: deterministic, no atomics, no zero-fill.
//
// Why it is slow (napkin math, H100 SXM: 67 TFLOP/s FP32 FMA peak, 3.35 TB/s HBM, ~33 TB/s
// L1/shared in aggregate): each multiply-add loads two floats (8 bytes) through L1 and reuses
// nothing from registers, so it moves 4 bytes per FLOP; at ~33 TB/s of L1 bandwidth that caps it
// near 8 TFLOP/s, and the strided filter reads (neighbouring threads read filters K floats apart)
// waste most of each 32-byte sector: expect a few TFLOP/s at best (`bench_ops --device cuda:0
// --conv-version 1` measures it).
// Backward filter is worse: only C_out*KH*KW*C_in threads (2,304 for 16 -> 16 channels 3x3),
// each summing N*OH*OW terms one after another, so most of the GPU idles. Versions 2 and 3 fix
// reuse and parallelism.
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "cuda/conv/internal.cuh"

namespace evo::EVO_GPU_NS::conv_detail {

namespace {

// x: [N, H, W, Cin], w: [Cout, KH, KW, Cin] -> y: [N, OH, OW, Cout]. Neighbouring threads take
// neighbouring output channels, so they read the same input pixel (a broadcast) and write
// neighbouring addresses (coalesced).
__global__ void forward_direct_kernel(Dims d, const float* __restrict__ x,
                                      const float* __restrict__ w, float* __restrict__ y) {
  const int64_t total = int64_t(d.n) * d.oh * d.ow * d.c_out;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int co = int(e % d.c_out);
    const int64_t m = e / d.c_out;
    const int ox = int(m % d.ow), oy = int(m / d.ow % d.oh), img = int(m / (int64_t(d.ow) * d.oh));
    float sum = 0.f;
    for (int fy = 0; fy < d.kh; ++fy) {
      const int iy = oy * d.stride - d.pad_h + fy;
      if (iy < 0 || iy >= d.h) continue;  // 'same' padding reads zeros
      for (int fx = 0; fx < d.kw; ++fx) {
        const int ix = ox * d.stride - d.pad_w + fx;
        if (ix < 0 || ix >= d.w) continue;
        const float* xp = x + ((int64_t(img) * d.h + iy) * d.w + ix) * d.c_in;
        const float* wp = w + ((int64_t(co) * d.kh + fy) * d.kw + fx) * d.c_in;
        for (int ci = 0; ci < d.c_in; ++ci) sum += xp[ci] * wp[ci];
      }
    }
    y[e] = sum;
  }
}

// dy: [N, OH, OW, Cout], w -> dx: [N, H, W, Cin]. Each input element gathers from the output
// pixels whose window covers it: output row oy reads input row oy*s - pad + kh, so input row iy
// is read through tap kh by oy = (iy + pad - kh) / s when that division is exact.
__global__ void backward_data_direct_kernel(Dims d, const float* __restrict__ dy,
                                            const float* __restrict__ w, float* __restrict__ dx) {
  const int64_t total = int64_t(d.n) * d.h * d.w * d.c_in;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int ci = int(e % d.c_in);
    const int64_t p = e / d.c_in;
    const int ix = int(p % d.w), iy = int(p / d.w % d.h), img = int(p / (int64_t(d.w) * d.h));
    float sum = 0.f;
    for (int fy = 0; fy < d.kh; ++fy) {
      const int ty = iy + d.pad_h - fy;
      if (ty < 0 || (ty & (d.stride - 1)) != 0) continue;
      const int oy = ty >> d.stride_log2;
      if (oy >= d.oh) continue;
      for (int fx = 0; fx < d.kw; ++fx) {
        const int tx = ix + d.pad_w - fx;
        if (tx < 0 || (tx & (d.stride - 1)) != 0) continue;
        const int ox = tx >> d.stride_log2;
        if (ox >= d.ow) continue;
        const float* dyp = dy + ((int64_t(img) * d.oh + oy) * d.ow + ox) * d.c_out;
        const float* wp = w + (int64_t(fy) * d.kw + fx) * d.c_in + ci;
        const int64_t w_step = int64_t(d.kh) * d.kw * d.c_in;  // from filter co to co + 1
        for (int co = 0; co < d.c_out; ++co) sum += dyp[co] * wp[co * w_step];
      }
    }
    dx[e] = sum;
  }
}

// x, dy -> dw: [Cout, KH, KW, Cin]. One thread per filter weight, summing over every output
// pixel in order.
__global__ void backward_filter_direct_kernel(Dims d, const float* __restrict__ x,
                                              const float* __restrict__ dy,
                                              float* __restrict__ dw) {
  const int64_t total = int64_t(d.c_out) * d.kh * d.kw * d.c_in;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int ci = int(e % d.c_in);
    const int64_t t = e / d.c_in;
    const int fx = int(t % d.kw), fy = int(t / d.kw % d.kh), co = int(t / (int64_t(d.kw) * d.kh));
    float sum = 0.f;
    for (int img = 0; img < d.n; ++img)
      for (int oy = 0; oy < d.oh; ++oy) {
        const int iy = oy * d.stride - d.pad_h + fy;
        if (iy < 0 || iy >= d.h) continue;
        for (int ox = 0; ox < d.ow; ++ox) {
          const int ix = ox * d.stride - d.pad_w + fx;
          if (ix < 0 || ix >= d.w) continue;
          sum += dy[((int64_t(img) * d.oh + oy) * d.ow + ox) * d.c_out + co] *
                 x[((int64_t(img) * d.h + iy) * d.w + ix) * d.c_in + ci];
        }
      }
    dw[e] = sum;
  }
}

}  // namespace

void forward_direct(Context& ctx, const ConvGeometry& g, const float* x, const float* w, float* y) {
  const Dims d = make_dims(g);
  const int64_t total = g.gemm_m() * g.c_out;
  EVO_LAUNCH(forward_direct_kernel, blocks_for(total), kThreads, 0, stream_of(ctx), d, x, w, y);
}

void backward_data_direct(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                          float* dx) {
  const Dims d = make_dims(g);
  const int64_t total = int64_t(g.n) * g.h * g.w * g.c_in;
  EVO_LAUNCH(backward_data_direct_kernel, blocks_for(total), kThreads, 0, stream_of(ctx), d, dy, w,
             dx);
}

void backward_filter_direct(Context& ctx, const ConvGeometry& g, const float* x, const float* dy,
                            float* dw) {
  const Dims d = make_dims(g);
  const int64_t total = int64_t(g.c_out) * g.gemm_k();
  // One thread per weight and few weights: small blocks spread them over more SMs.
  EVO_LAUNCH(backward_filter_direct_kernel, blocks_for(total, 64), 64, 0, stream_of(ctx), d, x, dy,
             dw);
}

}  // namespace evo::EVO_GPU_NS::conv_detail
