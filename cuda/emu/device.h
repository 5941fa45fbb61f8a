// The CUDA device built-ins under emulation: thread/block indices, barriers, warp intrinsics,
// atomics, fast-math intrinsics, and launch_kernel(). Not for host code: kernels only (via emu.h).
#pragma once

#include <math.h>  // expf, fmaxf... in the global namespace, where CUDA code expects them
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda/emu/runtime.h"

namespace evo::emu {

inline constexpr int warpSize = 32;

namespace detail {

// What the built-ins read. The scheduler points these at the running fiber and its block before it
// switches into the fiber; a block's fibers never leave the host thread that started the block, so
// a thread_local is exactly "the current GPU thread".
struct ThreadCtx {
  uint3 thread_idx;
  unsigned linear;  // x + y*bx + z*bx*by: the order CUDA assigns lanes and warps
  unsigned lane;
  unsigned warp;
};
struct BlockCtx {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned char* dynamic_smem;
};
inline thread_local ThreadCtx* tls_thread = nullptr;
inline thread_local BlockCtx* tls_block = nullptr;

inline const uint3& thread_idx() {
  return tls_thread->thread_idx;
}
inline const uint3& block_idx() {
  return tls_block->block_idx;
}
inline const dim3& block_dim() {
  return tls_block->block_dim;
}
inline const dim3& grid_dim() {
  return tls_block->grid_dim;
}
template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(tls_block->dynamic_smem);
}

enum class WarpOp : std::uint8_t {
  Shfl,
  ShflUp,
  ShflDown,
  ShflXor,
  Ballot,
  Any,
  All,
  SyncWarp,
  MatchAny,
  ReduceAdd,
  ReduceMinU,
  ReduceMaxU,
  ReduceMinS,
  ReduceMaxS,
  ReduceAnd,
  ReduceOr,
  ReduceXor,
};

// Implemented by the scheduler (scheduler.cpp). `file` and `line` name the barrier's call site:
// threads of a block waiting at two different __syncthreads calls are an error that names both.
void syncthreads(const char* file, int line);
int syncthreads_count(int predicate, const char* file, int line);
std::uint64_t warp_op(WarpOp op, unsigned mask, std::uint64_t value, int arg, int width);
unsigned live_lanes();
void fiber_yield();
[[noreturn]] void trap(const char* what);

template <typename T>
std::uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "warp shuffles move at most 8 bytes (as on a GPU)");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(std::uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace detail

// ---- barriers, warps, votes, shuffles ----------------------------------------------------------
// The defaulted arguments are the caller's file and line (GCC and Clang evaluate __builtin_FILE()
// and __builtin_LINE() at the call site), so kernels keep calling __syncthreads() as in CUDA and
// the scheduler still knows which barrier each thread waits at.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::syncthreads(file, line);
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  return detail::syncthreads_count(predicate, file, line);
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  const int n = int(detail::block_dim().x * detail::block_dim().y * detail::block_dim().z);
  return detail::syncthreads_count(predicate, file, line) == n;
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
  return detail::syncthreads_count(predicate, file, line) != 0;
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  detail::warp_op(detail::WarpOp::SyncWarp, mask, 0, 0, warpSize);
}
// The emulator cannot tell which lanes a GPU would have converged: it answers "every lane of the
// warp that has not exited", which is what convergent code sees.
inline unsigned __activemask() {
  return detail::live_lanes();
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return unsigned(detail::warp_op(detail::WarpOp::Ballot, mask, predicate != 0, 0, warpSize));
}
inline int __any_sync(unsigned mask, int predicate) {
  return int(detail::warp_op(detail::WarpOp::Any, mask, predicate != 0, 0, warpSize));
}
inline int __all_sync(unsigned mask, int predicate) {
  return int(detail::warp_op(detail::WarpOp::All, mask, predicate != 0, 0, warpSize));
}
template <typename T>
unsigned __match_any_sync(unsigned mask, T value) {
  return unsigned(
      detail::warp_op(detail::WarpOp::MatchAny, mask, detail::to_bits(value), 0, warpSize));
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return detail::from_bits<T>(
      detail::warp_op(detail::WarpOp::Shfl, mask, detail::to_bits(var), src_lane, width));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return detail::from_bits<T>(
      detail::warp_op(detail::WarpOp::ShflUp, mask, detail::to_bits(var), int(delta), width));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return detail::from_bits<T>(
      detail::warp_op(detail::WarpOp::ShflDown, mask, detail::to_bits(var), int(delta), width));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return detail::from_bits<T>(
      detail::warp_op(detail::WarpOp::ShflXor, mask, detail::to_bits(var), lane_mask, width));
}

// sm_80 warp reductions.
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
  return unsigned(detail::warp_op(detail::WarpOp::ReduceAdd, mask, v, 0, warpSize));
}
inline int __reduce_add_sync(unsigned mask, int v) {
  return int(detail::warp_op(detail::WarpOp::ReduceAdd, mask, unsigned(v), 0, warpSize));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v) {
  return unsigned(detail::warp_op(detail::WarpOp::ReduceMinU, mask, v, 0, warpSize));
}
inline int __reduce_min_sync(unsigned mask, int v) {
  return int(detail::warp_op(detail::WarpOp::ReduceMinS, mask, unsigned(v), 0, warpSize));
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
  return unsigned(detail::warp_op(detail::WarpOp::ReduceMaxU, mask, v, 0, warpSize));
}
inline int __reduce_max_sync(unsigned mask, int v) {
  return int(detail::warp_op(detail::WarpOp::ReduceMaxS, mask, unsigned(v), 0, warpSize));
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned v) {
  return unsigned(detail::warp_op(detail::WarpOp::ReduceAnd, mask, v, 0, warpSize));
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v) {
  return unsigned(detail::warp_op(detail::WarpOp::ReduceOr, mask, v, 0, warpSize));
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) {
  return unsigned(detail::warp_op(detail::WarpOp::ReduceXor, mask, v, 0, warpSize));
}

// ---- memory fences, timing, traps -------------------------------------------------------------
inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_block() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_system() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
// Nanoseconds of host time; kernels only ever compare differences.
long long clock64();
// Lets the block's other threads run: a spin-wait on another thread of the same block must call it
// (fibers are cooperative: a loop that never yields would spin forever).
inline void __nanosleep(unsigned) {
  detail::fiber_yield();
}
[[noreturn]] inline void __trap() {
  detail::trap("__trap() called");
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcs(const T* p) {
  return *p;
}
template <typename T>
void __stcs(T* p, T v) {
  *p = v;
}

// ---- atomics (real host atomics: blocks run in parallel on host threads) ----------------------
namespace detail {
template <typename T, typename F>
T atomic_update(T* address, F f) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load();
  while (!ref.compare_exchange_weak(old, f(old))) {
  }
  return old;
}
}  // namespace detail

inline int atomicAdd(int* a, int v) {
  return std::atomic_ref<int>(*a).fetch_add(v);
}
inline unsigned atomicAdd(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).fetch_add(v);
}
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_add(v);
}
inline float atomicAdd(float* a, float v) {
  return std::atomic_ref<float>(*a).fetch_add(v);
}
inline double atomicAdd(double* a, double v) {
  return std::atomic_ref<double>(*a).fetch_add(v);
}
inline int atomicSub(int* a, int v) {
  return std::atomic_ref<int>(*a).fetch_sub(v);
}
inline unsigned atomicSub(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).fetch_sub(v);
}

inline int atomicExch(int* a, int v) {
  return std::atomic_ref<int>(*a).exchange(v);
}
inline unsigned atomicExch(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).exchange(v);
}
inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).exchange(v);
}
inline float atomicExch(float* a, float v) {
  return std::atomic_ref<float>(*a).exchange(v);
}

#define EVO_EMU_ATOMIC_MINMAX(T)                                               \
  inline T atomicMin(T* a, T v) {                                              \
    return detail::atomic_update(a, [v](T old) { return v < old ? v : old; }); \
  }                                                                            \
  inline T atomicMax(T* a, T v) {                                              \
    return detail::atomic_update(a, [v](T old) { return v > old ? v : old; }); \
  }
EVO_EMU_ATOMIC_MINMAX(int)
EVO_EMU_ATOMIC_MINMAX(unsigned)
EVO_EMU_ATOMIC_MINMAX(long long)
EVO_EMU_ATOMIC_MINMAX(unsigned long long)
#undef EVO_EMU_ATOMIC_MINMAX

#define EVO_EMU_ATOMIC_BITS(T)                  \
  inline T atomicAnd(T* a, T v) {               \
    return std::atomic_ref<T>(*a).fetch_and(v); \
  }                                             \
  inline T atomicOr(T* a, T v) {                \
    return std::atomic_ref<T>(*a).fetch_or(v);  \
  }                                             \
  inline T atomicXor(T* a, T v) {               \
    return std::atomic_ref<T>(*a).fetch_xor(v); \
  }
EVO_EMU_ATOMIC_BITS(int)
EVO_EMU_ATOMIC_BITS(unsigned)
EVO_EMU_ATOMIC_BITS(unsigned long long)
#undef EVO_EMU_ATOMIC_BITS

namespace detail {
// Returns the old value whether or not it swapped, like CUDA (not a bool like compare_exchange).
template <typename T>
T atomic_cas(T* a, T compare, T v) {
  std::atomic_ref<T>(*a).compare_exchange_strong(compare, v);
  return compare;
}
}  // namespace detail
inline int atomicCAS(int* a, int compare, int v) {
  return detail::atomic_cas(a, compare, v);
}
inline unsigned atomicCAS(unsigned* a, unsigned compare, unsigned v) {
  return detail::atomic_cas(a, compare, v);
}
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long compare,
                                    unsigned long long v) {
  return detail::atomic_cas(a, compare, v);
}
inline unsigned short atomicCAS(unsigned short* a, unsigned short compare, unsigned short v) {
  return detail::atomic_cas(a, compare, v);
}
inline unsigned atomicInc(unsigned* a, unsigned limit) {
  return detail::atomic_update(a, [limit](unsigned old) { return old >= limit ? 0u : old + 1; });
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {
  return detail::atomic_update(
      a, [limit](unsigned old) { return (old == 0 || old > limit) ? limit : old - 1; });
}

// ---- math: CUDA's names that C++ lacks; expf, fmaxf, sqrtf... come from <math.h> ----------------
// The fast-math intrinsics compute the exact function: the emulator checks indexing and
// synchronisation, not the last ulp, so tests compare with a tolerance.
inline float __expf(float x) {
  return expf(x);
}
inline float __exp10f(float x) {
  return powf(10.f, x);
}
inline float __logf(float x) {
  return logf(x);
}
inline float __log2f(float x) {
  return log2f(x);
}
inline float __log10f(float x) {
  return log10f(x);
}
inline float __sinf(float x) {
  return sinf(x);
}
inline float __cosf(float x) {
  return cosf(x);
}
inline float __tanf(float x) {
  return tanf(x);
}
inline float __powf(float x, float y) {
  return powf(x, y);
}
inline void __sincosf(float x, float* s, float* c) {
  *s = sinf(x);
  *c = cosf(x);
}
inline float __tanhf(float x) {
  return tanhf(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float fdividef(float a, float b) {
  return a / b;
}
inline float rsqrtf(float x) {
  return 1.f / sqrtf(x);
}
inline double rsqrt(double x) {
  return 1.0 / sqrt(x);
}
inline float rcbrtf(float x) {
  return 1.f / cbrtf(x);
}
inline float __frsqrt_rn(float x) {
  return 1.f / sqrtf(x);
}
inline float __fsqrt_rn(float x) {
  return sqrtf(x);
}
inline float __frcp_rn(float x) {
  return 1.f / x;
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline float __fmaf_rn(float a, float b, float c) {
  return fmaf(a, b, c);
}
inline double __dadd_rn(double a, double b) {
  return a + b;
}
inline double __dmul_rn(double a, double b) {
  return a * b;
}
inline double __fma_rn(double a, double b, double c) {
  return fma(a, b, c);
}
inline float __saturatef(float x) {
  return x > 0.f ? (x < 1.f ? x : 1.f) : 0.f;
}  // NaN -> 0
inline float normcdff(float x) {
  return 0.5f * erfcf(-x * 0.70710678118654752f);
}
inline float sinpif(float x) {
  return sinf(3.14159265358979323846f * x);
}
inline float cospif(float x) {
  return cosf(3.14159265358979323846f * x);
}

inline int __float2int_rn(float x) {
  return int(nearbyintf(x));
}
inline int __float2int_rz(float x) {
  return int(x);
}
inline int __float2int_rd(float x) {
  return int(floorf(x));
}
inline int __float2int_ru(float x) {
  return int(ceilf(x));
}
inline unsigned __float2uint_rn(float x) {
  return unsigned(nearbyintf(x));
}
inline float __int2float_rn(int x) {
  return float(x);
}
inline float __uint2float_rn(unsigned x) {
  return float(x);
}
inline int __float_as_int(float x) {
  return detail::from_bits<int>(detail::to_bits(x));
}
inline unsigned __float_as_uint(float x) {
  return detail::from_bits<unsigned>(detail::to_bits(x));
}
inline float __int_as_float(int x) {
  return detail::from_bits<float>(detail::to_bits(x));
}
inline float __uint_as_float(unsigned x) {
  return detail::from_bits<float>(detail::to_bits(x));
}
inline long long __double_as_longlong(double x) {
  return detail::from_bits<long long>(detail::to_bits(x));
}
inline double __longlong_as_double(long long x) {
  return detail::from_bits<double>(detail::to_bits(x));
}

inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __popcll(unsigned long long x) {
  return __builtin_popcountll(x);
}
inline int __clz(int x) {
  return x ? __builtin_clz(unsigned(x)) : 32;
}
inline int __clzll(long long x) {
  return x ? __builtin_clzll((unsigned long long)x) : 64;
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
inline int __ffsll(long long x) {
  return __builtin_ffsll(x);
}
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(unsigned(x))) << 32) | __brev(unsigned(x >> 32));
}
inline int __mul24(int a, int b) {
  return (a << 8 >> 8) * (b << 8 >> 8);
}
inline unsigned __umul24(unsigned a, unsigned b) {
  return (a & 0xffffffu) * (b & 0xffffffu);
}
inline int __mulhi(int a, int b) {
  return int((long long)a * b >> 32);
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return unsigned((unsigned long long)a * b >> 32);
}
__extension__ typedef __int128 evo_emu_int128;
__extension__ typedef unsigned __int128 evo_emu_uint128;
inline long long __mul64hi(long long a, long long b) {
  return (long long)((evo_emu_int128)a * b >> 64);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)((evo_emu_uint128)a * b >> 64);
}

// CUDA's overloaded min/max for mixed integer and floating arguments.
template <typename A, typename B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(b) < T(a) ? T(b) : T(a);
}
template <typename A, typename B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(a) < T(b) ? T(b) : T(a);
}

// ---- launches ---------------------------------------------------------------------------------
namespace detail {

// One launch, type-erased for the scheduler: `invoke` runs the kernel body with the launch's
// arguments for whichever emulated GPU thread is current; `check_pointers` throws EmuError for a
// pointer argument a GPU could not dereference; `clone` copies the arguments to the heap, for a
// graph that replays the launch later (CUDA copies them at capture too).
struct KernelLaunch {
  const char* name;
  const char* file;
  int line;
  const void* kernel;
  dim3 grid;
  dim3 block;
  std::size_t smem;
  void (*invoke)(const void* closure);
  const void* closure;
  void (*check_pointers)(const KernelLaunch& launch);
  std::shared_ptr<const void> (*clone)(const void* closure);
};

// Checks the pointer arguments and the configuration (throws EmuError as a GPU would fail the
// launch), then, by the capture rules (graph.cpp): records the launch into the stream's capture,
// or runs every block, spread over the emulator's host threads, returning when the grid is done.
// A sticky or injected error, a capture the launch may not join: throws evo::CudaError with the
// code, as EVO_LAUNCH does on a GPU.
void run_kernel(const KernelLaunch& launch, cudaStream_t stream);
// Throws EmuError when kernel argument `index` is a pointer a GPU could not dereference.
void check_kernel_pointer(const KernelLaunch& launch, int index, const void* p);

template <typename T>
void check_argument(const KernelLaunch& launch, int index, const T& value) {
  if constexpr (std::is_pointer_v<T> && !std::is_function_v<std::remove_pointer_t<T>>) {
    const volatile void* p = value;
    check_kernel_pointer(launch, index, const_cast<const void*>(p));
  }
}

}  // namespace detail

// What EVO_LAUNCH expands to under emulation. Arguments are converted to the kernel's parameter
// types once, as the CUDA runtime does; every emulated thread then gets its own copy of them.
template <typename... P, typename... A>
void launch_kernel(const char* name, const char* file, int line, void (*kernel)(P...), dim3 grid,
                   dim3 block, std::size_t smem, cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  struct Closure {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
  };
  const Closure closure{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  const detail::KernelLaunch launch{
      name,
      file,
      line,
      reinterpret_cast<const void*>(kernel),
      grid,
      block,
      smem,
      [](const void* c) {
        const Closure& cl = *static_cast<const Closure*>(c);
        std::apply(cl.kernel, cl.params);
      },
      &closure,
      [](const detail::KernelLaunch& l) {
        std::apply(
            [&l](const auto&... p) {
              int index = 0;
              (detail::check_argument(l, index++, p), ...);
            },
            static_cast<const Closure*>(l.closure)->params);
      },
      [](const void* c) -> std::shared_ptr<const void> {
        return std::make_shared<const Closure>(*static_cast<const Closure*>(c));
      }};
  detail::run_kernel(launch, stream);
}

}  // namespace evo::emu
