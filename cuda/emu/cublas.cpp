// The emulated cuBLAS: handles and SGEMM with cuBLAS's column-major semantics and argument checks,
// computed by OpenBLAS, recorded like a kernel launch on a capturing stream, failing like one on a
// broken device. Not a BLAS: only the calls the CUDA backend makes.
#include <cblas.h>

#include <algorithm>
#include <string>

#include "cuda/emu/internal.h"
#include "cuda/emu/runtime.h"

namespace evo::emu {

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
};

namespace {

bool valid_op(cublasOperation_t op) {
  return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

// A GPU's SGEMM would fault on (or silently read past) a matrix that is not all in device memory;
// the emulator says so, naming the operand.
void check_matrix(const char* name, const float* p, int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return;
  const std::size_t floats = std::size_t(ld) * std::size_t(cols - 1) + std::size_t(rows);
  const std::string problem = detail::check_device_range(p, floats * sizeof(float));
  if (!problem.empty())
    throw EmuError(std::string("cublasSgemm: matrix ") + name + " (" + std::to_string(rows) + "x" +
                   std::to_string(cols) + ", leading dimension " + std::to_string(ld) +
                   "): " + problem);
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  if (detail::sticky_error()) return CUBLAS_STATUS_NOT_INITIALIZED;  // no context to work in
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!detail::stream_is_valid(stream)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math_mode = mode;  // the emulator always computes in FP32
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->pointer_mode = mode;  // device and host memory are one here: both modes read *alpha
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
  }
  return "unknown error";
}

namespace {

// One SGEMM call's arguments, by value: what a captured call keeps for its replays. alpha and beta
// are read at the call in CUBLAS_POINTER_MODE_HOST (cuBLAS copies host scalars when called, so a
// graph keeps the values of capture time), at execution in CUBLAS_POINTER_MODE_DEVICE.
struct Gemm {
  bool ta, tb;
  int m, n, k;
  float alpha, beta;
  const float* alpha_ptr;  // device pointer mode: dereferenced when the product runs
  const float* beta_ptr;
  const float* A;
  int lda;
  long long stride_a;
  const float* B;
  int ldb;
  long long stride_b;
  float* C;
  int ldc;
  long long stride_c;
  int batch;
};

// The checks cuBLAS makes, in its order: op(A) is m x k, op(B) is k x n, C is m x n.
cublasStatus_t check_arguments(cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                               int k, int lda, int ldb, int ldc) {
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  if (!valid_op(transa) || !valid_op(transb) || m < 0 || n < 0 || k < 0 ||
      lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

// Throws EmuError for an operand a GPU would fault on (checked at the call and at every replay).
void check_operands(const Gemm& g) {
  for (int i = 0; i < g.batch; ++i) {
    check_matrix("C", g.C + i * g.stride_c, g.m, g.n, g.ldc);
    if (g.k == 0 || (!g.alpha_ptr && g.alpha == 0.f)) continue;  // A and B are not read
    check_matrix("A", g.A + i * g.stride_a, g.ta ? g.k : g.m, g.ta ? g.m : g.k, g.lda);
    check_matrix("B", g.B + i * g.stride_b, g.tb ? g.n : g.k, g.tb ? g.k : g.n, g.ldb);
  }
}

void compute(const Gemm& g) {
  const float a = g.alpha_ptr ? *g.alpha_ptr : g.alpha;
  const float b = g.beta_ptr ? *g.beta_ptr : g.beta;
  for (int i = 0; i < g.batch; ++i) {
    const float* A = g.A + i * g.stride_a;
    const float* B = g.B + i * g.stride_b;
    float* C = g.C + i * g.stride_c;
    if (g.k == 0 || a == 0.f) {
      // Only C = beta * C is left; beta == 0 writes zeros without reading C (NaN there included).
      for (int j = 0; j < g.n; ++j)
        for (int r = 0; r < g.m; ++r) {
          float& c = C[std::size_t(j) * g.ldc + r];
          c = b == 0.f ? 0.f : b * c;
        }
      continue;
    }
    if (b == 0.f) {
      // cuBLAS never reads C when beta is 0; BLAS implementations may compute 0 * NaN = NaN.
      for (int j = 0; j < g.n; ++j)
        for (int r = 0; r < g.m; ++r) C[std::size_t(j) * g.ldc + r] = 0.f;
    }
    cblas_sgemm(CblasColMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans,
                g.m, g.n, g.k, a, A, g.lda, B, g.ldb, b, C, g.ldc);
  }
}

// The product as one kernel execution (one launch for the injected faults, however many batch
// entries), recorded instead when the handle's stream is capturing.
cublasStatus_t gemm(cublasHandle_t handle, const Gemm& g) {
  if (detail::sticky_error()) return CUBLAS_STATUS_EXECUTION_FAILED;
  if (!detail::stream_is_valid(handle->stream)) return CUBLAS_STATUS_EXECUTION_FAILED;
  check_operands(g);
  const detail::Issued issued = detail::issue(handle->stream, "cublasSgemm", [&g] {
    return detail::GraphNode{
        "cublasSgemm " + std::to_string(g.m) + "x" + std::to_string(g.n) + "x" +
            std::to_string(g.k),
        [g] {
          check_operands(g);
          if (const cudaError_t e = detail::execution_fault(
                  "cublasSgemm (replayed by cudaGraphLaunch)", __FILE__, __LINE__))
            return e;
          compute(g);
          return cudaSuccess;
        }};
  });
  // On a GPU cuBLAS's own kernel launch fails: the runtime's error stays for cudaGetLastError.
  if (issued.what == detail::Issue::Failed) return CUBLAS_STATUS_EXECUTION_FAILED;
  if (issued.what == detail::Issue::Recorded) return CUBLAS_STATUS_SUCCESS;
  if (detail::execution_fault("cublasSgemm", __FILE__, __LINE__) != cudaSuccess)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  compute(g);
  return CUBLAS_STATUS_SUCCESS;
}

Gemm make_gemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
               int n, int k, const float* alpha, const float* A, int lda, long long stride_a,
               const float* B, int ldb, long long stride_b, const float* beta, float* C, int ldc,
               long long stride_c, int batch) {
  const bool device_scalars = handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  return Gemm{transa != CUBLAS_OP_N,
              transb != CUBLAS_OP_N,
              m,
              n,
              k,
              device_scalars ? 0.f : *alpha,
              device_scalars ? 0.f : *beta,
              device_scalars ? alpha : nullptr,
              device_scalars ? beta : nullptr,
              A,
              lda,
              stride_a,
              B,
              ldb,
              stride_b,
              C,
              ldc,
              stride_c,
              batch};
}

}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (const cublasStatus_t s = check_arguments(transa, transb, m, n, k, lda, ldb, ldc)) return s;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  return gemm(handle, make_gemm(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta,
                                C, ldc, 0, 1));
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda,
                                         long long stride_a, const float* B, int ldb,
                                         long long stride_b, const float* beta, float* C, int ldc,
                                         long long stride_c, int batch_count) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (batch_count < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (const cublasStatus_t s = check_arguments(transa, transb, m, n, k, lda, ldb, ldc)) return s;
  if (m == 0 || n == 0 || batch_count == 0) return CUBLAS_STATUS_SUCCESS;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  return gemm(handle, make_gemm(handle, transa, transb, m, n, k, alpha, A, lda, stride_a, B, ldb,
                                stride_b, beta, C, ldc, stride_c, batch_count));
}

}  // namespace evo::emu
