// CPU fully connected layer, y = x w^T + b, forward and backward on OpenBLAS SGEMM.
// Not a general linear-algebra layer: f32, row-major, weights [out, in] as ops.h fixes them.
#include "evo/ops.h"
#include "src/cpu/blas.h"

namespace evo::cpu {

// x: [N, in], w: [out, in], b: [out] -> y: [N, out]
void fc_forward(Context&, int n, int in, int out, const float* x, const float* w, const float* b,
                float* y) {
  use_single_threaded_blas();
  // The bias goes in first and the GEMM adds onto it (beta = 1): one pass over y.
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < out; ++o) y[int64_t(r) * out + o] = b[o];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.f, x, in, w, in, 1.f, y, out);
}

// The layer after global pooling is tiny (50 x 256 x 10 at most in the paper's nets): one
// single-threaded GEMM each is far below a parallel region's cost to split.
void fc_backward(Context&, int n, int in, int out, const float* x, const float* w, const float* dy,
                 float* dx, float* dw, float* db) {
  use_single_threaded_blas();
  if (dx)  // dx[N, in] = dy[N, out] * w[out, in]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.f, dy, out, w, in, 0.f, dx,
                in);
  // dw[out, in] = dy[N, out]^T * x[N, in]
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.f, dy, out, x, in, 0.f, dw,
              in);
  // db[out] = column sums of dy, in row order
  for (int o = 0; o < out; ++o) db[o] = 0.f;
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < out; ++o) db[o] += dy[int64_t(r) * out + o];
}

}  // namespace evo::cpu
