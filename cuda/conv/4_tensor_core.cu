// Convolution version 4, the implicit GEMM on tensor cores in TF32: each warp of a 4-warp block
// computes a 16 x 16 tile of C with wmma m16n16k8 instructions. Opt-in (EVO_CONV_VERSION=4 or
// set_conv_*_version(4)): its inputs are rounded to TF32, a 10-bit mantissa, so its results differ
// from the FP32 versions by up to ~1e-3 relative. Not FP32, not the default.
//
// What it changes from version 3: the multiply-adds move from the FP32 pipes to the tensor cores.
// The block still stages a 32 x 8 tile of A and an 8 x 32 tile of B in shared memory with the
// loaders of internal.cuh (the same implicit im2col views, the same split-K), but instead of
// outer products in registers each warp loads its 16 x 8 and 8 x 16 operand fragments
// (wmma::load_matrix_sync from shared memory), rounds them to TF32 (__float_to_tf32), and one
// wmma::mma_sync does 16 * 16 * 8 = 2,048 multiply-adds. The accumulator fragment stays in
// registers for the whole k loop; at the end it goes through shared memory (store_matrix_sync)
// so that the bounds checks and the split-K partial sums are written as in versions 2 and 3.
//
// Napkin math of its ceiling (H100 SXM: dense TF32 ~495 TFLOP/s against 67 TFLOP/s FP32 FMA, on
// 132 SMs at ~1.98 GHz): a tensor core is ~7x the FP32 pipes, so the math is no longer the limit
// for any shape evo trains. The shared-memory loads are: per k-step of 8 a warp reads two
// fragments (16 x 8 + 8 x 16 floats = 1 KB) for 2,048 multiply-adds, 2 FMAs per byte, where an SM
// delivers ~128 bytes per clock against ~1,900 TF32 FMAs per clock: shared memory caps it near
// 128 * 2 / 1,900 ~ 1/7 of the tensor peak, ~70 TFLOP/s, about FP32 peak. Bigger warp tiles (each
// warp 32 x 32 from the same fragments, reusing each A fragment for two B fragments) and
// cp.async double buffering are what a production kernel adds; here the lesson is the instruction
// itself. For the few-channel layers of evolved nets (C_out = 4..16) a 32-wide tile is mostly
// padding, and launch cost dominates whatever the version: version 4 pays off from ~64 channels.
#include "cuda/compat.h"

#if defined(__CUDACC__)
#include <mma.h>
#else
#include "cuda/emu/wmma.h"
#endif

#include "cuda/common.cuh"
#include "cuda/conv/internal.cuh"

namespace evo::EVO_GPU_NS::conv_detail {

namespace {

using namespace nvcuda;  // ::nvcuda under nvcc, evo::emu::nvcuda (cuda/emu/wmma.h) on the emulator

constexpr int kBM = 32, kBN = 32, kBK = 8;  // block tile; wmma m16n16k8 per warp
constexpr int kWarps = 4;                   // 2 x 2 warps of 16 x 16
constexpr int kThreadsTc = kWarps * 32;
// Leading dimensions: multiples of 4 floats (wmma's 16-byte rule) whose rows start 32-byte
// aligned (40 * 4 = 160 bytes, 36 * 4 = 144: every 16-float column offset stays aligned).
constexpr int kLdAB = kBM + 8;
constexpr int kLdC = kBN + 4;

// grid (ceil(M / 32), ceil(N / 32), phases * splits), block 128 = 4 warps. Warp w owns rows
// 16 * (w / 2) and columns 16 * (w % 2) of the block's 32 x 32 tile.
template <class P>
__global__ void __launch_bounds__(kThreadsTc)
    gemm_tensor_core_kernel(P p, int k_per_split, float* __restrict__ partial) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // TF32 tensor cores need sm_80 or newer (conv.cu refuses the version before launch)
#else
  using View = typename P::View;
  // as[k][m] is A's tile in column-major order (element (m, k) at k * ld + m), bs[k][n] is B's in
  // row-major order: the layouts the loaders write, named to wmma as such.
  __shared__ __align__(32) float as[kBK][kLdAB];
  __shared__ __align__(32) float bs[kBK][kLdAB];
  __shared__ __align__(32) float cs[kBM][kLdC];
  const int phases = p.phases();
  const View v = make_view(p, int(blockIdx.z) % phases);
  const int split = int(blockIdx.z) / phases;
  const int m0 = int(blockIdx.x) * kBM, n0 = int(blockIdx.y) * kBN;
  if (m0 >= v.rows) return;  // a phase smaller than phase 0: the whole block leaves together

  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = (warp / 2) * 16, wn = (warp % 2) * 16;
  const ALoader<View, kBM, kBK, kThreadsTc, P::kAAlongK> load_a(v, m0, tid);
  const BLoader<View, kBN, kBK, kThreadsTc, P::kBAlongK> load_b(v, n0, tid);
  const int k_begin = split * k_per_split;
  const int k_end = min(v.depth, k_begin + k_per_split);

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
  for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
    load_a.load(v, k0, as);
    load_b.load(v, k0, bs);
    __syncthreads();  // the tiles are complete
    wmma::load_matrix_sync(a, &as[0][wm], kLdAB);
    wmma::load_matrix_sync(b, &bs[0][wn], kLdAB);
    for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
    for (int i = 0; i < b.num_elements; ++i) b.x[i] = wmma::__float_to_tf32(b.x[i]);
    wmma::mma_sync(acc, a, b, acc);
    __syncthreads();  // nobody overwrites the tiles while other warps still read them
  }

  wmma::store_matrix_sync(&cs[wm][wn], acc, kLdC, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kBM * kBN; e += kThreadsTc) {
    const int m = m0 + e / kBN, n = n0 + e % kBN;
    const float value = cs[e / kBN][e % kBN];
    if (partial) {
      if (m < v.rows && n < v.cols) partial[(int64_t(split) * v.rows + m) * v.cols + n] = value;
    } else if (float* row = v.out_row(m); row && n < v.cols) {
      row[n] = value;
    }
  }
#endif
}

template <class P>
void run_tensor_core(Context& ctx, const P& p) {
  launch_tiled_gemm<kBM, kBN, kBK>(
      ctx, p, gemm_size(p), [&](dim3 grid, int k_per_split, float* partial) {
        EVO_LAUNCH((gemm_tensor_core_kernel<P>), grid, kThreadsTc, 0, stream_of(ctx), p,
                   k_per_split, partial);
      });
}

}  // namespace

void forward_tensor_core(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                         float* y) {
  run_tensor_core(ctx, ForwardGemm{make_dims(g), x, w, y});
}

void backward_data_tensor_core(Context& ctx, const ConvGeometry& g, const float* dy,
                               const float* w, float* dx) {
  run_tensor_core(ctx, BackwardDataGemm{make_dims(g), dy, w, dx});
}

void backward_filter_tensor_core(Context& ctx, const ConvGeometry& g, const float* x,
                                 const float* dy, float* dw) {
  run_tensor_core(ctx, BackwardFilterGemm{make_dims(g), x, dy, dw});
}

}  // namespace evo::EVO_GPU_NS::conv_detail
