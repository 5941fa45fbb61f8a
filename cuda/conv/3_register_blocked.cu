// Convolution version 3, register-blocked implicit GEMM: a block computes a 64..128 x 64..128
// tile of C, each thread a 4..8 x 4..8 sub-tile kept in registers. The default. Not tensor cores.
//
// What it changes from version 2: in version 2 every multiply-add needed two shared-memory loads.
// Here thread (tr, tc) owns TM x TN outputs (rows tr + i*BM/TM, columns tc + j*BN/TN); at each
// step kk it loads TM values of A and TN values of B from shared memory into registers and does
// all TM*TN multiply-adds between them (an outer product). With 8 x 8 that is 16 loads for 64
// FMAs instead of 128 loads. Strided ownership (rather than TM consecutive rows) makes a warp's
// loads of bs hit 16 consecutive words (no bank conflicts) and its stores of C coalesce.
// Bigger tiles also fetch less from global memory per FMA: a 128 x 128 x 8 step loads 2,048
// floats for 131,072 FMAs (64 per float, against 8 in version 2). The tile shape is picked per
// problem, so narrow GEMMs (C_out = 16) do not waste 7/8 of a 128-wide tile.
//
// Napkin math of its ceiling (H100 SXM: 4 FFMA instructions and 1 shared-load instruction per SM
// per clock, 67 TFLOP/s FP32 peak): 8 x 8 sub-tiles issue 16 shared loads per 64 FFMA per thread,
// exactly the 1 : 4 the SM sustains, so shared memory no longer caps it below peak; 4 x 4 sub-tiles
// (8 loads per 16 FFMA) cap at half of peak. What is left between it and cuBLAS/cuDNN: the global
// loads are not overlapped with the math (no double buffering or cp.async: a block waits for its
// tile, other resident blocks fill the gap), loads are scalar (C_in can be odd, so no float4), the
// im2col index math costs a few integer instructions per loaded element, and FP32 FFMA is all it
// uses (cuDNN's FP32 convolutions may use TF32 tensor cores when allowed; bench compares with
// TF32 off). Expect well under peak; `bench_ops --device cuda:0 --conv-version 3` reports it beside
// cuBLAS SGEMM of the same shape.
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "cuda/conv/internal.cuh"

namespace evo::EVO_GPU_NS::conv_detail {

namespace {

// k-step: a 128 x 128 block stages 2 x 8 x 132 floats (8.4 KB) of shared memory per step, so
// shared memory never limits residency; registers do (~122 per thread at 8 x 8: two blocks/SM).
constexpr int kBK = 8;
constexpr int kThreadsRb = 256;
constexpr int kPad = 4;  // as[kk][m + pad]: along-k loaders store 8 different kk at one m
                         // without bank conflicts, and rows stay 16-byte aligned

// grid (ceil(M / BM), ceil(N / BN), phases * splits), block 256 = (BM/TM) * (BN/TN).
template <class P, int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__(kThreadsRb)
    gemm_register_blocked_kernel(P p, int k_per_split, float* __restrict__ partial) {
  static_assert((BM / TM) * (BN / TN) == kThreadsRb, "one thread per TM x TN sub-tile");
  using View = typename P::View;
  __shared__ float as[kBK][BM + kPad];  // as[k][m]
  __shared__ float bs[kBK][BN + kPad];  // bs[k][n]
  const int phases = p.phases();
  const View v = make_view(p, int(blockIdx.z) % phases);
  const int split = int(blockIdx.z) / phases;
  const int m0 = int(blockIdx.x) * BM, n0 = int(blockIdx.y) * BN;
  if (m0 >= v.rows) return;  // a phase smaller than phase 0: the whole block leaves together

  const int tid = threadIdx.x;
  constexpr int kCols = BN / TN;  // threads across a row of the tile
  const int tr = tid / kCols, tc = tid % kCols;
  const ALoader<View, BM, kBK, kThreadsRb, P::kAAlongK> load_a(v, m0, tid);
  const BLoader<View, BN, kBK, kThreadsRb, P::kBAlongK> load_b(v, n0, tid);
  const int k_begin = split * k_per_split;
  const int k_end = min(v.depth, k_begin + k_per_split);

  float acc[TM][TN];
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
    load_a.load(v, k0, as);
    load_b.load(v, k0, bs);
    __syncthreads();
    EVO_UNROLL
    for (int kk = 0; kk < kBK; ++kk) {
      float ra[TM], rb[TN];
      EVO_UNROLL
      for (int i = 0; i < TM; ++i) ra[i] = as[kk][tr + i * (BM / TM)];
      EVO_UNROLL
      for (int j = 0; j < TN; ++j) rb[j] = bs[kk][tc + j * kCols];
      EVO_UNROLL
      for (int i = 0; i < TM; ++i) {
        EVO_UNROLL
        for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
      }
    }
    __syncthreads();
  }

  EVO_UNROLL
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + tr + i * (BM / TM);
    if (m >= v.rows) break;  // rows grow with i
    float* row = partial ? partial + (int64_t(split) * v.rows + m) * v.cols : v.out_row(m);
    EVO_UNROLL
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + tc + j * kCols;
      if (n < v.cols) row[n] = acc[i][j];
    }
  }
}

template <class P, int BM, int BN, int TM, int TN>
void run_shape(Context& ctx, const P& p, const GemmSize& s) {
  launch_tiled_gemm<BM, BN, kBK>(ctx, p, s, [&](dim3 grid, int k_per_split, float* partial) {
    EVO_LAUNCH((gemm_register_blocked_kernel<P, BM, BN, TM, TN>), grid, kThreadsRb, 0,
               stream_of(ctx), p, k_per_split, partial);
  });
}

// 128-wide tiles where the GEMM has the rows or columns to fill them, 64 otherwise: a 16-column
// GEMM (C_out = 16) in a 128-wide tile would compute 7/8 zeros.
template <class P>
void run_register_blocked(Context& ctx, const P& p) {
  const GemmSize s = gemm_size(p);
  const bool wide_m = s.rows > 64, wide_n = s.cols > 64;
  if (wide_m && wide_n)
    run_shape<P, 128, 128, 8, 8>(ctx, p, s);
  else if (wide_m)
    run_shape<P, 128, 64, 8, 4>(ctx, p, s);
  else if (wide_n)
    run_shape<P, 64, 128, 4, 8>(ctx, p, s);
  else
    run_shape<P, 64, 64, 4, 4>(ctx, p, s);
}

}  // namespace

void forward_register_blocked(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                              float* y) {
  run_register_blocked(ctx, ForwardGemm{make_dims(g), x, w, y});
}

void backward_data_register_blocked(Context& ctx, const ConvGeometry& g, const float* dy,
                                    const float* w, float* dx) {
  run_register_blocked(ctx, BackwardDataGemm{make_dims(g), dy, w, dx});
}

void backward_filter_register_blocked(Context& ctx, const ConvGeometry& g, const float* x,
                                      const float* dy, float* dw) {
  run_register_blocked(ctx, BackwardFilterGemm{make_dims(g), x, dy, dw});
}

}  // namespace evo::EVO_GPU_NS::conv_detail
