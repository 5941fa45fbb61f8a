// What a .cu file sees under -DEVO_EMULATE: the CUDA keywords and built-in variables as C++ that
// runs on the emulator's fibers. Not for ordinary C++ files: it defines macros such as threadIdx.
#pragma once

#if defined(__CUDACC__)
#error "cuda/emu/emu.h is for the C++ compiler (-DEVO_EMULATE); nvcc uses the real CUDA headers"
#endif

#include <cstdio>  // device-side printf is the host's printf

#include "cuda/emu/device.h"
#include "cuda/emu/runtime.h"

// Kernels and device functions are plain functions; the launch helper is what makes them kernels.
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline
// No __noinline__: libstdc++ spells __attribute__((__noinline__)), which such a macro would break
// in every standard header included after this one. Use __attribute__((noinline)) directly.
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// Static shared memory: all fibers of a block run on one host thread and a host thread runs one
// block at a time, so one copy per host thread is exactly one copy per running block. Like a GPU's,
// it is not cleared between blocks (it holds whatever the previous block on that host thread left).
#define __shared__ static thread_local

// The built-in variables, read from the running fiber's context.
#define threadIdx (::evo::emu::detail::thread_idx())
#define blockIdx (::evo::emu::detail::block_idx())
#define blockDim (::evo::emu::detail::block_dim())
#define gridDim (::evo::emu::detail::grid_dim())
