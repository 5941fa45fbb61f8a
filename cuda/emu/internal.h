// What the emulator's .cpp files share: the allocation registry, stream checks, per-kernel limits.
// Not included by kernels or by users of the emulator.
#pragma once

#include <cstddef>
#include <string>

#include "cuda/emu/runtime.h"

namespace evo::emu::detail {

// True when a GPU kernel could dereference `p`: inside (or one past the end of) memory from
// cudaMalloc or cudaMallocHost.
bool device_accessible(const void* p);
// Empty when [p, p + bytes) lies inside one device-accessible allocation, else why not (for
// people).
std::string check_device_range(const void* p, std::size_t bytes);
bool stream_is_valid(cudaStream_t stream);
// The dynamic shared memory a launch of `kernel` may ask for (48 KiB unless raised by
// cudaFuncSetAttribute).
std::size_t dynamic_smem_limit(const void* kernel);
// Host threads that run blocks, the calling thread included (EVO_EMU_THREADS, else all cores).
int runner_count();
// Whether launches check that pointer arguments are device memory (EVO_EMU_CHECK_POINTERS=0: no).
bool pointer_checks_enabled();

}  // namespace evo::emu::detail
