// GPU fully connected layer, y = x w^T + b, forward and backward on cuBLAS SGEMM (the context's
// handle, on its stream). Not a general linear-algebra layer: f32, row-major, weights [out, in].
//
// cuBLAS is column-major: a row-major [r, c] matrix is the column-major [c, r] matrix, its
// transpose. So each row-major product P = A B is computed as the column-major P^T = B^T A^T,
// whose operands are the buffers as they lie. The bias gradient is a fixed-order column sum
// (deterministic, no atomics).
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "evo/ops.h"

namespace evo::EVO_GPU_NS {

namespace {

// y[r, o] = b[o]: the GEMM then adds x w^T onto it (beta = 1), one pass over y.
__global__ void broadcast_bias_kernel(int total, FastDiv out, const float* __restrict__ b,
                                      float* __restrict__ y) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    uint32_t r;
    y[e] = b[fast_divmod(out, uint32_t(e), r)];
  }
}

}  // namespace

// x: [N, in], w: [out, in], b: [out] -> y: [N, out]
void fc_forward(Context& ctx, int n, int in, int out, const float* x, const float* w,
                const float* b, float* y) {
  check_int32(int64_t(n) * out, "fc_forward");
  if (int64_t(n) * out == 0) return;
  EVO_LAUNCH(broadcast_bias_kernel, blocks_for(int64_t(n) * out), kThreads, 0, stream_of(ctx),
             n * out, make_fastdiv(out), b, y);
  // Column-major: y^T[out, N] = (w^T)^T [out, in] * x^T[in, N] + y^T.
  const float one = 1.f;
  EVO_CUBLAS_CHECK(cublasSgemm(blas_of(ctx), CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, in, x,
                               in, &one, y, out));
}

void fc_backward(Context& ctx, int n, int in, int out, const float* x, const float* w,
                 const float* dy, float* dx, float* dw, float* db) {
  const float one = 1.f, zero = 0.f;
  cublasHandle_t h = blas_of(ctx);
  // dx[N, in] = dy[N, out] w[out, in];  column-major: dx^T[in, N] = w^T[in, out] dy^T[out, N].
  if (dx)
    EVO_CUBLAS_CHECK(
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w, in, dy, out, &zero, dx, in));
  // dw[out, in] = dy^T x;  column-major: dw^T[in, out] = x^T[in, N] (dy^T[out, N])^T.
  EVO_CUBLAS_CHECK(
      cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x, in, dy, out, &zero, dw, in));
  // db[out] = column sums of dy[N, out]
  column_sums(ctx, 1, n, out, 1.f, dy, db);
}

}  // namespace evo::EVO_GPU_NS
