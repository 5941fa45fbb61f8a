// The convolution passes seen as GEMMs (what the implicit-GEMM versions 2 and 3 share): operand
// views over NHWC tensors, shared-memory tile loaders, split-K and the launch of a tiled GEMM.
// Not public: cuda/conv/*.cu only.
//
// Every pass is  C[M, N] = A[M, K] * B[K, N]  where A or B is an "implicit" im2col matrix, never
// materialised: element (m, k) is computed from indices and read straight from the activation.
//
//   pass             M (rows)             N (cols)        K (reduction)         A            B
//   forward          N*OH*OW out pixels   C_out           KH*KW*C_in            im2col(x)    w^T
//   backward data    N*H*W in pixels (*)  C_in            KH*KW*C_out (*)       im2col'(dy)  w
//   backward filter  C_out                KH*KW*C_in      N*OH*OW               dy^T im2col(x)
//
// (*) Backward data with stride s > 1 reads dy only at taps where (iy + pad - kh) is a multiple of
// s: for a given input pixel, just 1/s^2 of the KH*KW taps exist. Splitting the input pixels into
// s*s "phases" by (iy mod s, ix mod s) makes the set of live taps the same for every pixel of a
// phase, so each phase is a dense GEMM with K = ceil-ish(KH/s)*ceil-ish(KW/s)*C_out and no wasted
// multiply-adds. blockIdx.z picks the phase; with stride 1 there is one phase: a convolution of dy
// with the flipped filter.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>

#include "cuda/common.cuh"
#include "evo/ops.h"

namespace evo::EVO_GPU_NS::conv_detail {

// ---- the geometry, with divisors precomputed -------------------------------------------------

struct Dims {
  int n, h, w, c_in, c_out, kh, kw, stride, stride_log2, pad_h, pad_w, oh, ow;
  FastDiv div_c_in, div_c_out, div_kw, div_oh, div_ow;
};

// Throws evo::Error when a tensor is too large for the 32-bit index math of the kernels.
Dims make_dims(const ConvGeometry& g);

// ---- forward: y[M = N*OH*OW, C_out] = im2col(x)[M, K] * w[C_out, K]^T --------------------------

struct ForwardGemm {
  Dims d;
  const float* __restrict__ x;
  const float* __restrict__ wt;
  float* __restrict__ y;

  // A is read along k (a pixel's channels are contiguous), and so is B (a filter's K values).
  static constexpr bool kAAlongK = true;
  static constexpr bool kBAlongK = true;
  __host__ __device__ int phases() const { return 1; }

  struct View;
};

struct ForwardGemm::View {
  ForwardGemm p;  // by value: a kernel parameter whose address is taken would be copied anyway
  int rows, cols, depth;  // M, N, K

  struct ARow {
    const float* img;  // this output pixel's image in x, or null past the last row
    int iy0, ix0;      // the input pixel under filter tap (0, 0), maybe outside the image
  };
  struct BCol {
    const float* filter;  // w[co], or null past the last column
  };

  __device__ ARow a_row(int m) const {
    if (m >= rows) return {nullptr, 0, 0};
    uint32_t t, img;
    const int ox = int(fast_divmod(p.d.div_ow, uint32_t(m), t));
    const int oy = int(fast_divmod(p.d.div_oh, t, img));
    return {p.x + int64_t(img) * p.d.h * p.d.w * p.d.c_in, oy * p.d.stride - p.d.pad_h,
            ox * p.d.stride - p.d.pad_w};
  }
  __device__ float a(const ARow& r, int k) const {
    if (!r.img || k >= depth) return 0.f;
    uint32_t tap, fy;
    const int ci = int(fast_divmod(p.d.div_c_in, uint32_t(k), tap));
    const int fx = int(fast_divmod(p.d.div_kw, tap, fy));
    const int iy = r.iy0 + int(fy), ix = r.ix0 + fx;
    if (iy < 0 || iy >= p.d.h || ix < 0 || ix >= p.d.w) return 0.f;  // 'same' padding
    return r.img[(int64_t(iy) * p.d.w + ix) * p.d.c_in + ci];
  }
  __device__ BCol b_col(int n) const { return {n < cols ? p.wt + int64_t(n) * depth : nullptr}; }
  __device__ float b(const BCol& c, int k) const {
    return (c.filter && k < depth) ? c.filter[k] : 0.f;
  }
  // y[m, :], or null past the last row.
  __device__ float* out_row(int m) const { return m < rows ? p.y + int64_t(m) * cols : nullptr; }
};

// ---- backward data, one phase: dx[pixels of the phase, C_in] = dy-taps * w ---------------------

struct BackwardDataGemm {
  Dims d;
  const float* __restrict__ dy;
  const float* __restrict__ wt;
  float* __restrict__ dx;

  static constexpr bool kAAlongK = true;   // dy: a pixel's C_out gradients are contiguous
  static constexpr bool kBAlongK = false;  // w[co][kh][kw][:]: contiguous along C_in = N
  __host__ __device__ int phases() const { return d.stride * d.stride; }

  struct View;
};

struct BackwardDataGemm::View {
  BackwardDataGemm p;
  int rows, cols, depth;  // M (this phase's input pixels), N = C_in, K = live taps * C_out
  int py, px;             // the phase: input rows py, py + s, ...; columns px, px + s, ...
  int hq, wq;             // this phase's pixels per column and per row
  int kh0, kw0;           // first live filter tap: kh0, kh0 + s, ... (likewise kw)
  FastDiv div_wq, div_hq, div_nkw;

  __device__ View(const BackwardDataGemm& problem, int phase) : p(problem) {
    const int s = p.d.stride, lg = p.d.stride_log2;
    py = phase >> lg;
    px = phase & (s - 1);
    hq = py < p.d.h ? ((p.d.h - 1 - py) >> lg) + 1 : 0;
    wq = px < p.d.w ? ((p.d.w - 1 - px) >> lg) + 1 : 0;
    // Output row oy reads input row oy*s - pad + kh, so input row iy is reached by the taps
    // kh = iy + pad - oy*s: those congruent to (py + pad) mod s.
    kh0 = (py + p.d.pad_h) & (s - 1);
    kw0 = (px + p.d.pad_w) & (s - 1);
    const int nkh = kh0 < p.d.kh ? ((p.d.kh - 1 - kh0) >> lg) + 1 : 0;
    const int nkw = kw0 < p.d.kw ? ((p.d.kw - 1 - kw0) >> lg) + 1 : 0;
    rows = p.d.n * hq * wq;
    cols = p.d.c_in;
    depth = nkh * nkw * p.d.c_out;
    div_wq = make_fastdiv(uint32_t(wq > 0 ? wq : 1));
    div_hq = make_fastdiv(uint32_t(hq > 0 ? hq : 1));
    div_nkw = make_fastdiv(uint32_t(nkw > 0 ? nkw : 1));
  }

  struct ARow {
    const float* img;  // this input pixel's image in dy, or null past the last row
    int oy0, ox0;      // the output pixel that live tap (0, 0) reads from (maybe outside)
  };
  struct BCol {
    int ci;  // -1 past the last column
  };

  // Phase-local row m -> input pixel (img, py + qy*s, px + qx*s).
  __device__ void pixel(int m, int& img, int& iy, int& ix) const {
    uint32_t t, b;
    const int qx = int(fast_divmod(div_wq, uint32_t(m), t));
    const int qy = int(fast_divmod(div_hq, t, b));
    img = int(b);
    iy = py + (qy << p.d.stride_log2);
    ix = px + (qx << p.d.stride_log2);
  }
  __device__ ARow a_row(int m) const {
    if (m >= rows) return {nullptr, 0, 0};
    int img, iy, ix;
    pixel(m, img, iy, ix);
    // Live tap j is kh0 + j*s, reading output row (iy + pad - kh0)/s - j (an exact division).
    return {p.dy + int64_t(img) * p.d.oh * p.d.ow * p.d.c_out,
            (iy + p.d.pad_h - kh0) >> p.d.stride_log2, (ix + p.d.pad_w - kw0) >> p.d.stride_log2};
  }
  // k = (tap j, tap i, co), co fastest.
  __device__ float a(const ARow& r, int k) const {
    if (!r.img || k >= depth) return 0.f;
    uint32_t t, j;
    const int co = int(fast_divmod(p.d.div_c_out, uint32_t(k), t));
    const int i = int(fast_divmod(div_nkw, t, j));
    const int oy = r.oy0 - int(j), ox = r.ox0 - i;
    if (oy < 0 || oy >= p.d.oh || ox < 0 || ox >= p.d.ow) return 0.f;
    return r.img[(int64_t(oy) * p.d.ow + ox) * p.d.c_out + co];
  }
  __device__ BCol b_col(int n) const { return {n < cols ? n : -1}; }
  __device__ float b(const BCol& c, int k) const {
    if (c.ci < 0 || k >= depth) return 0.f;
    uint32_t t, j;
    const int co = int(fast_divmod(p.d.div_c_out, uint32_t(k), t));
    const int i = int(fast_divmod(div_nkw, t, j));
    const int fy = kh0 + (int(j) << p.d.stride_log2), fx = kw0 + (i << p.d.stride_log2);
    return p.wt[((int64_t(co) * p.d.kh + fy) * p.d.kw + fx) * p.d.c_in + c.ci];
  }
  __device__ float* out_row(int m) const {
    if (m >= rows) return nullptr;
    int img, iy, ix;
    pixel(m, img, iy, ix);
    return p.dx + ((int64_t(img) * p.d.h + iy) * p.d.w + ix) * p.d.c_in;
  }
};

// ---- backward filter: dw[C_out, KH*KW*C_in] = dy[R, C_out]^T * im2col(x)[R, K], R = N*OH*OW --

struct BackwardFilterGemm {
  Dims d;
  const float* __restrict__ x;
  const float* __restrict__ dy;
  float* __restrict__ dw;

  static constexpr bool kAAlongK = false;  // dy^T: consecutive rows (C_out) are contiguous
  static constexpr bool kBAlongK = false;  // im2col(x): consecutive columns (C_in) are contiguous
  __host__ __device__ int phases() const { return 1; }

  struct View;
};

struct BackwardFilterGemm::View {
  BackwardFilterGemm p;
  int rows, cols, depth;  // C_out, KH*KW*C_in, N*OH*OW

  struct ARow {
    int co;  // -1 past the last row
  };
  struct BCol {
    int fy, fx, ci;  // filter tap and input channel; ci = -1 past the last column
  };

  __device__ ARow a_row(int m) const { return {m < rows ? m : -1}; }
  __device__ float a(const ARow& r, int k) const {
    return (r.co >= 0 && k < depth) ? p.dy[int64_t(k) * p.d.c_out + r.co] : 0.f;
  }
  __device__ BCol b_col(int n) const {
    if (n >= cols) return {0, 0, -1};
    uint32_t tap, fy;
    const int ci = int(fast_divmod(p.d.div_c_in, uint32_t(n), tap));
    const int fx = int(fast_divmod(p.d.div_kw, tap, fy));
    return {int(fy), fx, ci};
  }
  // k = output pixel (img, oy, ox).
  __device__ float b(const BCol& c, int k) const {
    if (c.ci < 0 || k >= depth) return 0.f;
    uint32_t t, img;
    const int ox = int(fast_divmod(p.d.div_ow, uint32_t(k), t));
    const int oy = int(fast_divmod(p.d.div_oh, t, img));
    const int iy = oy * p.d.stride - p.d.pad_h + c.fy, ix = ox * p.d.stride - p.d.pad_w + c.fx;
    if (iy < 0 || iy >= p.d.h || ix < 0 || ix >= p.d.w) return 0.f;
    return p.x[((int64_t(img) * p.d.h + iy) * p.d.w + ix) * p.d.c_in + c.ci];
  }
  __device__ float* out_row(int m) const { return m < rows ? p.dw + int64_t(m) * cols : nullptr; }
};

// The per-phase view a kernel works on (only backward data has more than one phase).
__device__ inline ForwardGemm::View make_view(const ForwardGemm& p, int) {
  const int64_t m = int64_t(p.d.n) * p.d.oh * p.d.ow;
  return {p, int(m), p.d.c_out, p.d.kh * p.d.kw * p.d.c_in};
}
__device__ inline BackwardDataGemm::View make_view(const BackwardDataGemm& p, int phase) {
  return BackwardDataGemm::View(p, phase);
}
__device__ inline BackwardFilterGemm::View make_view(const BackwardFilterGemm& p, int) {
  return {p, p.d.c_out, p.d.kh * p.d.kw * p.d.c_in, p.d.n * p.d.oh * p.d.ow};
}

// Host side: the GEMM sizes of phase 0 (the largest phase: it has the most rows), for grids.
struct GemmSize {
  int64_t rows, cols, depth;
};
GemmSize gemm_size(const ForwardGemm& p);
GemmSize gemm_size(const BackwardDataGemm& p);
GemmSize gemm_size(const BackwardFilterGemm& p);

// ---- shared-memory tile loading ----------------------------------------------------------------
//
// A block stages A[m0 : m0+BM, k0 : k0+BK) as as[BK][BM + pad] (k-major, so that the multiply
// loop reads consecutive m) and B[k0 : k0+BK, n0 : n0+BN) as bs[BK][BN + pad]. Which thread loads
// which element decides coalescing: neighbouring threads must read neighbouring addresses, which
// is along k for an operand "along k" and along m (or n) otherwise. Every thread keeps the same
// rows (columns) from one k-step to the next, so their index decoding happens once, up front.

template <class View, int BM, int BK, int kThreadsPerBlock, bool kAlongK>
struct ALoader {
  static_assert(kAlongK ? kThreadsPerBlock % BK == 0 : kThreadsPerBlock % BM == 0,
                "tile shape and thread count do not fit");
  // Along k: thread t loads k = t % BK of rows t / BK + i * (threads / BK).
  // Along m: thread t loads row t % BM at k = t / BM + i * (threads / BM).
  static constexpr int kStep = kAlongK ? kThreadsPerBlock / BK : kThreadsPerBlock / BM;
  static constexpr int kCount = (kAlongK ? BM : BK) / kStep;
  static_assert(kCount >= 1 && (kAlongK ? BM : BK) % kStep == 0, "tile shape and threads");
  typename View::ARow rows[kAlongK ? kCount : 1];
  int lane_k, lane_m;

  __device__ ALoader(const View& v, int m0, int tid) {
    lane_k = kAlongK ? tid % BK : tid / BM;
    lane_m = kAlongK ? tid / BK : tid % BM;
    if constexpr (kAlongK) {
      for (int i = 0; i < kCount; ++i) rows[i] = v.a_row(m0 + lane_m + i * kStep);
    } else {
      rows[0] = v.a_row(m0 + lane_m);
    }
  }
  template <int kLd>
  __device__ void load(const View& v, int k0, float (*as)[kLd]) const {
    if constexpr (kAlongK) {
      for (int i = 0; i < kCount; ++i) as[lane_k][lane_m + i * kStep] = v.a(rows[i], k0 + lane_k);
    } else {
      for (int i = 0; i < kCount; ++i)
        as[lane_k + i * kStep][lane_m] = v.a(rows[0], k0 + lane_k + i * kStep);
    }
  }
};

template <class View, int BN, int BK, int kThreadsPerBlock, bool kAlongK>
struct BLoader {
  static_assert(kAlongK ? kThreadsPerBlock % BK == 0 : kThreadsPerBlock % BN == 0,
                "tile shape and thread count do not fit");
  static constexpr int kStep = kAlongK ? kThreadsPerBlock / BK : kThreadsPerBlock / BN;
  static constexpr int kCount = (kAlongK ? BN : BK) / kStep;
  static_assert(kCount >= 1 && (kAlongK ? BN : BK) % kStep == 0, "tile shape and threads");
  typename View::BCol cols[kAlongK ? kCount : 1];
  int lane_k, lane_n;

  __device__ BLoader(const View& v, int n0, int tid) {
    lane_k = kAlongK ? tid % BK : tid / BN;
    lane_n = kAlongK ? tid / BK : tid % BN;
    if constexpr (kAlongK) {
      for (int i = 0; i < kCount; ++i) cols[i] = v.b_col(n0 + lane_n + i * kStep);
    } else {
      cols[0] = v.b_col(n0 + lane_n);
    }
  }
  template <int kLd>
  __device__ void load(const View& v, int k0, float (*bs)[kLd]) const {
    if constexpr (kAlongK) {
      for (int i = 0; i < kCount; ++i) bs[lane_k][lane_n + i * kStep] = v.b(cols[i], k0 + lane_k);
    } else {
      for (int i = 0; i < kCount; ++i)
        bs[lane_k + i * kStep][lane_n] = v.b(cols[0], k0 + lane_k + i * kStep);
    }
  }
};

// ---- split-K ---------------------------------------------------------------------------------
//
// Backward filter is a short, wide GEMM with a very long reduction (C_out x KH*KW*C_in outputs,
// N*OH*OW terms each): 16 -> 16 channels 1x1 gives one 64 x 64 tile and 51,200 terms per output
// for a batch of 50 32x32 images, i.e. one busy SM out of 132. Split-K cuts the reduction into
// `splits` ranges, run by separate blocks (blockIdx.z) into a workspace [splits, M, N]; a second
// kernel adds the ranges in a fixed order. Deterministic (no atomics), and the same bits on every
// run; the split count depends only on the problem, never on the GPU.

struct SplitPlan {
  int splits;       // 1: no split, the GEMM writes its output directly
  int k_per_split;  // a multiple of the tile's BK
};
// `tiles`: blocks the GEMM has without splitting; `bk`: its k-step. Only for single-phase GEMMs.
SplitPlan plan_split_k(int64_t tiles, int64_t depth, int bk);

// out[m, n] = sum over s of partial[s][m][n], s in order.
template <class P>
__global__ void __launch_bounds__(256)
    split_k_reduce_kernel(P p, const float* __restrict__ partial, int splits) {
  const auto v = make_view(p, 0);
  const int64_t total = int64_t(v.rows) * v.cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += partial[s * total + e];
    const int m = int(e / v.cols), n = int(e % v.cols);
    v.out_row(m)[n] = sum;
  }
}

// Launches a GEMM kernel that computes BM x BN tiles of C stepping k by BK, over the grid
// (ceil(M / BM), ceil(N / BN), phases * splits), with split-K when the plan asks for it: then the
// kernel writes partial sums to an arena workspace [splits, M, N] and split_k_reduce_kernel adds
// them. `launch(grid, k_per_split, partial)` launches the version's own kernel (partial null: it
// writes C directly); a callback rather than a kernel pointer, so that EVO_LAUNCH's errors name
// that kernel and the line that launches it.
template <int BM, int BN, int BK, class P, class Launch>
void launch_tiled_gemm(Context& ctx, const P& p, const GemmSize& s, Launch&& launch) {
  const int64_t tiles_m = (s.rows + BM - 1) / BM, tiles_n = (s.cols + BN - 1) / BN;
  const SplitPlan plan =
      p.phases() == 1 ? plan_split_k(tiles_m * tiles_n, s.depth, BK) : SplitPlan{1, INT_MAX / 2};
  const dim3 grid(unsigned(tiles_m), unsigned(tiles_n), unsigned(p.phases() * plan.splits));
  if (plan.splits == 1) {
    launch(grid, plan.k_per_split, static_cast<float*>(nullptr));
    return;
  }
  Arena::Scope scope(ctx.arena());  // stream-ordered: the reduce below is queued before reuse
  float* partial = ctx.arena().allocate_n<float>(std::size_t(plan.splits) * s.rows * s.cols);
  launch(grid, plan.k_per_split, partial);
  EVO_LAUNCH((split_k_reduce_kernel<P>), blocks_for(s.rows * s.cols), kThreads, 0, stream_of(ctx),
             p, partial, plan.splits);
}

// ---- the versions (cuda/conv/N_*.cu): each runs one pass on ctx's stream ----------------------

void forward_direct(Context& ctx, const ConvGeometry& g, const float* x, const float* w, float* y);
void backward_data_direct(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                          float* dx);
void backward_filter_direct(Context& ctx, const ConvGeometry& g, const float* x, const float* dy,
                            float* dw);

void forward_tiled(Context& ctx, const ConvGeometry& g, const float* x, const float* w, float* y);
void backward_data_tiled(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                         float* dx);
void backward_filter_tiled(Context& ctx, const ConvGeometry& g, const float* x, const float* dy,
                           float* dw);

void forward_register_blocked(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                              float* y);
void backward_data_register_blocked(Context& ctx, const ConvGeometry& g, const float* dy,
                                    const float* w, float* dx);
void backward_filter_register_blocked(Context& ctx, const ConvGeometry& g, const float* x,
                                      const float* dy, float* dw);

void forward_tensor_core(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                         float* y);
void backward_data_tensor_core(Context& ctx, const ConvGeometry& g, const float* dy,
                               const float* w, float* dx);
void backward_filter_tensor_core(Context& ctx, const ConvGeometry& g, const float* x,
                                 const float* dy, float* dw);

}  // namespace evo::EVO_GPU_NS::conv_detail
