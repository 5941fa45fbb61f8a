// The eight-float vector the CPU direct convolutions compute with (conv_direct.cpp,
// conv_channels.cpp), and how many accumulators a register-blocked kernel may keep. Not a SIMD
// library: GCC/Clang vector extensions, so the same source compiles to AVX2, AVX-512VL or SSE.
#pragma once

#include <cstring>

namespace evo::cpu::vec {

constexpr int kLanes = 8;
// Eight floats: one AVX register (two SSE registers on a machine without AVX; GCC splits it).
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, Vec v) {
  std::memcpy(p, &v, sizeof v);
}
inline Vec splat(float s) {
  return Vec{s, s, s, s, s, s, s, s};  // one vbroadcastss
}
inline float hsum(Vec v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Accumulator registers a kernel keeps: half of the vector registers, leaving the rest for the
// loaded inputs and the broadcast weights (16 of AVX2's 16 ymm would spill; AVX-512VL gives 32).
#if defined(__AVX512VL__)
constexpr int kAccumulators = 16;
#else
constexpr int kAccumulators = 8;
#endif

}  // namespace evo::cpu::vec
