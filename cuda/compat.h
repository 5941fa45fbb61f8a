// Included first by every cuda/**/*.cu so that it compiles two ways: by nvcc for a real GPU
// (namespace evo::cuda) and by the C++ compiler against the CPU emulator (-DEVO_EMULATE, evo::emu).
// Not a CUDA abstraction layer: kernel code stays ordinary CUDA C++; only launches and dynamic
// shared memory go through the two macros below.
//
//   namespace evo::EVO_GPU_NS {            // evo::cuda under nvcc, evo::emu under emulation
//   __global__ void scale_kernel(float* x, float a, int n) {
//     EVO_EXTERN_SHARED(float, smem);      // extern __shared__ float smem[]
//     ...
//   }
//   void scale(float* x, float a, int n, cudaStream_t stream) {
//     EVO_LAUNCH(scale_kernel, (n + 255) / 256, 256, 0, stream, x, a, n);  // throws on failure
//   }
//   }
//
// A template kernel goes in parentheses: EVO_LAUNCH((gemm_kernel<64, 8>), grid, block, ...).
#pragma once

#if defined(__CUDACC__)

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "evo/error.h"

#define EVO_GPU_NS cuda

namespace evo::cuda::detail {

// kernel<<<grid, block, smem, stream>>>(args...) and the launch check every launch needs: an
// invalid configuration (too many threads, too much shared memory) only shows in cudaGetLastError.
template <typename... P, typename... A>
void launch_kernel(const char* name, const char* file, int line, void (*kernel)(P...), dim3 grid,
                   dim3 block, std::size_t smem, cudaStream_t stream, A&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    auto d = [](dim3 v) {
      return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) +
             ")";
    };
    throw ::evo::CudaError(std::string("launch of ") + name + " grid " + d(grid) + " block " +
                               d(block) + " smem " + std::to_string(smem),
                           cudaGetErrorString(err), file, line, static_cast<int>(err));
  }
}

}  // namespace evo::cuda::detail

#define EVO_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                   \
  ::evo::cuda::detail::launch_kernel(#kernel, __FILE__, __LINE__, kernel, grid, block, smem_bytes, \
                                     stream __VA_OPT__(, ) __VA_ARGS__)
#define EVO_EXTERN_SHARED(T, name) extern __shared__ T name[]

#elif defined(EVO_EMULATE)

#include "cuda/emu/emu.h"
#include "evo/error.h"

#define EVO_GPU_NS emu

// Runs the grid on the emulator before returning (or records it, on a capturing stream); throws
// evo::emu::EmuError naming the kernel and the block for what a GPU would fail, fault or hang on,
// and evo::CudaError with the code for what a GPU reports as one (a sticky or injected error, a
// launch that breaks the capture rules), as the CUDA branch above does.
#define EVO_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                          \
  ::evo::emu::launch_kernel(#kernel, __FILE__, __LINE__, kernel, grid, block, smem_bytes, \
                            stream __VA_OPT__(, ) __VA_ARGS__)
// A pointer to the running block's dynamic shared memory (the launch's smem_bytes), 256-byte
// aligned. Inside a kernel or device function only (it is a local variable here).
#define EVO_EXTERN_SHARED(T, name) T* const name = ::evo::emu::detail::dynamic_shared<T>()

#else
#error "cuda/compat.h: compile .cu files with nvcc, or with the C++ compiler and -DEVO_EMULATE"
#endif
