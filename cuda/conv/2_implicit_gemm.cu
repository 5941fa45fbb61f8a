// Convolution version 2, implicit GEMM with shared-memory tiles: each block computes a 16 x 16
// tile of the pass's GEMM (internal.cuh), one output per thread. Not register-blocked (version 3).
//
// What it changes from version 1: the convolution is read as the GEMM C[M, N] = A[M, K] * B[K, N]
// of internal.cuh (A or B an im2col matrix that is never materialised), and a block of 16 x 16
// threads walks K in steps of 16. At each step the block copies a 16 x 16 tile of A and one of B
// into shared memory, once, with neighbouring threads reading neighbouring addresses (coalesced),
// and then every thread reads 16 values of each from shared memory. Each value fetched from
// global memory now serves 16 multiply-adds instead of 1, and with split-K (internal.cuh) backward
// filter gets enough blocks to fill the GPU.
//
// Napkin math of its ceiling (H100 SXM, 132 SMs at ~1.98 GHz, FP32 peak 67 TFLOP/s): global
// traffic is no longer the limit (a 16-wide tile does 8 FMAs per float loaded, 4 FLOP/byte, so
// even ~5 TB/s of L2 bandwidth would allow 20 TFLOP/s). Shared memory is: per multiply-add each
// thread issues two shared loads (as[kk][ty] is a broadcast, bs[kk][tx] 16 consecutive words),
// and an SM executes one shared-load instruction per clock for a warp against four FFMA
// instructions. So at most 1 FFMA per 2 loads: 1/8 of the FMA pipes, ~8 TFLOP/s, whatever the
// tile size. Version 3 breaks that bound by keeping a small tile of C in registers per thread.
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "cuda/conv/internal.cuh"

namespace evo::EVO_GPU_NS::conv_detail {

namespace {

constexpr int kTile = 16;                    // BM = BN = BK
constexpr int kTileThreads = kTile * kTile;  // one per element of the C tile

// grid (ceil(M / 16), ceil(N / 16), phases * splits), block (16, 16). Thread (tx, ty) computes
// C[m0 + ty, n0 + tx]: neighbouring threads write neighbouring columns (coalesced).
template <class P>
__global__ void __launch_bounds__(kTileThreads)
    gemm_tiled_kernel(P p, int k_per_split, float* __restrict__ partial) {
  using View = typename P::View;
  // The +1 column keeps the stores of an along-k loader (16 different kk, same m) off one bank.
  __shared__ float as[kTile][kTile + 1];  // as[k][m]
  __shared__ float bs[kTile][kTile + 1];  // bs[k][n]
  const int phases = p.phases();
  const View v = make_view(p, int(blockIdx.z) % phases);
  const int split = int(blockIdx.z) / phases;
  const int m0 = int(blockIdx.x) * kTile, n0 = int(blockIdx.y) * kTile;
  if (m0 >= v.rows) return;  // a phase smaller than phase 0: the whole block leaves together

  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTile + tx;
  const ALoader<View, kTile, kTile, kTileThreads, P::kAAlongK> load_a(v, m0, tid);
  const BLoader<View, kTile, kTile, kTileThreads, P::kBAlongK> load_b(v, n0, tid);
  const int k_begin = split * k_per_split;
  const int k_end = min(v.depth, k_begin + k_per_split);

  float acc = 0.f;
  for (int k0 = k_begin; k0 < k_end; k0 += kTile) {
    load_a.load(v, k0, as);
    load_b.load(v, k0, bs);
    __syncthreads();  // the tiles are complete
    for (int kk = 0; kk < kTile; ++kk) acc += as[kk][ty] * bs[kk][tx];
    __syncthreads();  // nobody overwrites the tiles while others still read them
  }

  const int m = m0 + ty, n = n0 + tx;
  if (partial) {
    if (m < v.rows && n < v.cols) partial[(int64_t(split) * v.rows + m) * v.cols + n] = acc;
  } else if (float* row = v.out_row(m); row && n < v.cols) {
    row[n] = acc;
  }
}

template <class P>
void run_tiled(Context& ctx, const P& p) {
  launch_tiled_gemm<kTile, kTile, kTile>(
      ctx, p, gemm_size(p), [&](dim3 grid, int k_per_split, float* partial) {
        EVO_LAUNCH((gemm_tiled_kernel<P>), grid, dim3(kTile, kTile), 0, stream_of(ctx), p,
                   k_per_split, partial);
      });
}

}  // namespace

void forward_tiled(Context& ctx, const ConvGeometry& g, const float* x, const float* w, float* y) {
  run_tiled(ctx, ForwardGemm{make_dims(g), x, w, y});
}

void backward_data_tiled(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                         float* dx) {
  run_tiled(ctx, BackwardDataGemm{make_dims(g), dy, w, dx});
}

void backward_filter_tiled(Context& ctx, const ConvGeometry& g, const float* x, const float* dy,
                           float* dw) {
  run_tiled(ctx, BackwardFilterGemm{make_dims(g), x, dy, dw});
}

}  // namespace evo::EVO_GPU_NS::conv_detail
