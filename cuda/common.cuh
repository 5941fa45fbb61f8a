// Device helpers shared by the op kernels (cuda/*.cu, cuda/conv/*.cu): launch sizing, the
// context's stream and cuBLAS handle, division by run-time constants. Not an op: no kernels here.
//
// Included after cuda/compat.h, inside nothing: it opens namespace evo::EVO_GPU_NS itself.
#pragma once

#include <cstdint>
#include <string>

#include "evo/context.h"
#include "evo/error.h"

// `#pragma unroll` for both compilers: g++ warns about CUDA's spelling (-Wunknown-pragmas) and
// spells it `#pragma GCC unroll N`. A full unroll in the emulator does not matter; 8 covers the
// register-blocked loops.
#if defined(__CUDACC__)
#define EVO_UNROLL _Pragma("unroll")
#else
#define EVO_UNROLL _Pragma("GCC unroll 8")
#endif

namespace evo::EVO_GPU_NS {

// The context's stream and cuBLAS handle, typed (context.h keeps them opaque so that public
// headers need no CUDA header).
inline cudaStream_t stream_of(Context& ctx) {
  return static_cast<cudaStream_t>(ctx.stream());
}
inline cublasHandle_t blas_of(Context& ctx) {
  return static_cast<cublasHandle_t>(ctx.blas());
}

// Element-wise kernels: 256 threads (8 warps) per block is enough to hide latency on every GPU
// since Kepler, and a grid-stride loop over at most kMaxBlocks blocks covers any size. The block
// cap depends on nothing but the size, so a kernel computes the same thing on every device.
inline constexpr int kThreads = 256;
inline constexpr int64_t kMaxBlocks = 4096;
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}

// Throws evo::CudaError naming the cuBLAS call when it fails (cuBLAS has its own status type).
// When the failure comes from a broken context, the error carries the runtime's sticky code, so
// that CudaError::sticky() tells a dead GPU from a bad argument after a cuBLAS call too.
#define EVO_CUBLAS_CHECK(call)                                                              \
  do {                                                                                      \
    const cublasStatus_t evo_status_ = (call);                                              \
    if (evo_status_ != CUBLAS_STATUS_SUCCESS)                                               \
      throw ::evo::CudaError(#call, ::evo::EVO_GPU_NS::cublas_failure_reason(evo_status_),  \
                             __FILE__, __LINE__, ::evo::EVO_GPU_NS::cublas_failure_code()); \
  } while (0)

// For EVO_CUBLAS_CHECK: the device's sticky error as an int, else CudaError::kNoCode (a stale
// non-sticky last error says nothing about this call, so it is not taken).
inline int cublas_failure_code() {
  const cudaError_t e = cudaPeekAtLastError();
  return ::evo::is_sticky_cuda_error(static_cast<int>(e)) ? static_cast<int>(e)
                                                          : ::evo::CudaError::kNoCode;
}
inline std::string cublas_failure_reason(cublasStatus_t status) {
  std::string reason = "cuBLAS status " + std::to_string(int(status));
  const int code = cublas_failure_code();
  if (code != ::evo::CudaError::kNoCode)
    reason +=
        std::string(" on a broken device: ") + cudaGetErrorString(static_cast<cudaError_t>(code));
  return reason;
}

// n / d and n % d for a divisor fixed at launch, without the ~20-instruction integer division a
// GPU runs in software: q = (mulhi(n, magic) + n) >> shift (Granlund & Montgomery 1994, the
// "round-up" method). Exact for every n < 2^31 and 1 <= d < 2^31: the 32-bit add cannot wrap.
struct FastDiv {
  uint32_t d = 1, magic = 0, shift = 0;
};
__host__ __device__ inline FastDiv make_fastdiv(uint32_t d) {
  FastDiv f;
  f.d = d;
  while ((uint64_t(1) << f.shift) < d) ++f.shift;  // shift = ceil(log2(d))
  f.magic = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << f.shift) - d)) / d + 1);
  return f;
}
__device__ __forceinline__ uint32_t fast_div(const FastDiv& f, uint32_t n) {
  return (__umulhi(n, f.magic) + n) >> f.shift;
}
// Sets q = n / d and returns n % d.
__device__ __forceinline__ uint32_t fast_divmod(const FastDiv& f, uint32_t n, uint32_t& q) {
  q = fast_div(f, n);
  return n - q * f.d;
}

// The element-wise kernels index with 32-bit FastDiv arithmetic (a 64-bit division per element
// would cost more than the memory traffic), with room for a grid stride past the end; throws
// evo::Error for larger tensors.
inline constexpr int64_t kMaxElements32 = (int64_t(1) << 31) - (int64_t(1) << 24);
inline void check_int32(int64_t n, const char* op) {
  if (n >= kMaxElements32 || n < 0)
    throw Error(std::string(op) + ": " + std::to_string(n) +
                " elements is more than the GPU kernels index (2^31 - 2^24): split the batch");
}

// y[b, col] = scale * sum over r of x[b, r, col], for x: [batches, rows, cols]: one block per
// 32 columns of one batch entry, rows summed in a fixed order (deterministic, no atomics).
// Global average pooling and the fully connected layer's bias gradient (elementwise.cu).
void column_sums(Context& ctx, int batches, int rows, int cols, float scale, const float* x,
                 float* y);

}  // namespace evo::EVO_GPU_NS
