// The emulated warp matrix functions (CUDA's nvcuda::wmma from <mma.h>) that the tensor-core
// convolution (cuda/conv/4_tensor_core.cu) uses: TF32 fragments of shape 16 x 16 x 8, fill, load,
// store, mma_sync and __float_to_tf32, computing what a tensor core computes. Not the other shapes
// and types (half, bf16, int8, double): evo's kernels use none of them.
//
// How a fragment is held. On a GPU the 32 lanes of a warp each hold a few elements of a
// fragment, in a layout CUDA leaves unspecified; here every lane holds the whole tile (x[] in
// row-major order, num_elements = rows * cols). Code that only applies the same operation to
// every x[i] (the documented use, e.g. rounding to TF32) cannot tell the difference. Every *_sync
// function is a warp-wide operation on a GPU, so each calls __syncwarp() first: a lane that skips
// one (divergent code) is the emulator's deadlock or barrier error instead of undefined results.
//
// What a tensor core does with TF32 (NVIDIA's PTX ISA, mma with .tf32 operands): it reads 19 bits
// of each 32-bit input (sign, 8-bit exponent, 10-bit mantissa; the low 13 bits are ignored, i.e.
// truncated), multiplies exactly (two 11-bit significands fit a float's 24) and accumulates in
// FP32. __float_to_tf32 rounds to nearest, ties away from zero (cvt.rna.tf32.f32), so code that
// converts its inputs first gets rounding instead of truncation. The order of the FP32 additions
// inside one mma is the hardware's secret; here it is k = 0, 1, ..., 7 after the accumulator.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda/emu/device.h"
#include "cuda/emu/runtime.h"

namespace evo::emu::nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

namespace detail {

inline uint32_t bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
inline float from_bits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
// What a tensor core reads of an FP32 register given as TF32: the top 19 bits.
inline float tf32_truncate(float v) { return from_bits(bits(v) & 0xFFFFE000u); }

// A GPU faults on a misaligned fragment pointer (the PTX wmma.load/store need 256-bit
// alignment and a leading dimension that is a multiple of 16 bytes): so does the emulator.
inline void check_pointer(const void* p, unsigned ldm, const char* call) {
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0)
    throw EmuError(std::string(call) + ": the pointer is not 256-bit (32-byte) aligned");
  if (ldm % 4 != 0)
    throw EmuError(std::string(call) + ": ldm " + std::to_string(ldm) +
                   " is not a multiple of 4 floats (16 bytes)");
}

}  // namespace detail

// m16n16k8 only: the one TF32 shape of CUDA's wmma.
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 8, "the emulator has the TF32 shape m16n16k8 only");
  static_assert(std::is_same_v<T, precision::tf32> || std::is_same_v<T, float>,
                "the emulator has TF32 inputs and float accumulators only");
  static constexpr int kRows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int kCols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = kRows * kCols;
  float x[num_elements];  // row-major within the tile, in every lane (see the top of the file)
};

// Rounds to the nearest TF32 (10-bit mantissa), ties away from zero; infinities and NaN pass.
inline float __float_to_tf32(float v) {
  const uint32_t u = detail::bits(v);
  if ((u & 0x7F800000u) == 0x7F800000u) return v;
  return detail::from_bits((u + 0x1000u) & 0xFFFFE000u);
}

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (float& e : f.x) e = v;
}

// Operand fragments: element (r, c) of the tile at p[r * ldm + c] (row_major) or p[c * ldm + r].
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const float* p, unsigned ldm) {
  static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>,
                "an operand fragment names its layout");
  __syncwarp();
  detail::check_pointer(p, ldm, "wmma::load_matrix_sync");
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::kRows; ++r)
    for (int c = 0; c < F::kCols; ++c)
      f.x[r * F::kCols + c] =
          std::is_same_v<L, row_major> ? p[int64_t(r) * ldm + c] : p[int64_t(c) * ldm + r];
}

// Accumulators name their memory layout at the call.
template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
  __syncwarp();
  detail::check_pointer(p, ldm, "wmma::load_matrix_sync");
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      f.x[r * N + c] = layout == mem_row_major ? p[int64_t(r) * ldm + c] : p[int64_t(c) * ldm + r];
}

// Every lane writes the whole tile (the same values): readers after a barrier see it all.
template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f,
                              unsigned ldm, layout_t layout) {
  __syncwarp();
  detail::check_pointer(p, ldm, "wmma::store_matrix_sync");
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      (layout == mem_row_major ? p[int64_t(r) * ldm + c] : p[int64_t(c) * ldm + r]) =
          f.x[r * N + c];
}

// d = a * b + c: TF32 inputs (truncated as the hardware reads them), exact products, FP32 sums.
template <int M, int N, int K, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                     const fragment<matrix_a, M, N, K, precision::tf32, LA>& a,
                     const fragment<matrix_b, M, N, K, precision::tf32, LB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
  __syncwarp();
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float sum = c.x[i * N + j];
      for (int k = 0; k < K; ++k)
        sum += detail::tf32_truncate(a.x[i * K + k]) * detail::tf32_truncate(b.x[k * N + j]);
      out[i * N + j] = sum;
    }
  std::memcpy(d.x, out, sizeof out);  // d may be c
}

}  // namespace evo::emu::nvcuda::wmma
