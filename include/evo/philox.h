// Philox4x32-10, the counter-based generator every random number in evo comes from (Salmon et al.,
// SC'11). One header for host and device, so CPU, emulated and real CUDA draw identical bits.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define EVO_HD __host__ __device__ __forceinline__
#else
#define EVO_HD inline
#endif

namespace evo {

struct Philox4 {
  uint32_t v[4];
};

// Ten rounds of the Philox bijection: (counter, key) -> four independent 32-bit words. Stateless,
// so element i of a tensor can draw from counter i on any thread of any device.
EVO_HD Philox4 philox4x32(Philox4 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kMul0) * ctr.v[0];
    const uint64_t p1 = uint64_t(kMul1) * ctr.v[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return ctr;
}

// 24 random mantissa bits -> a float uniform in [0, 1).
EVO_HD float uniform01(uint32_t bits) { return float(bits >> 8) * (1.0f / 16777216.0f); }

// A (seed, stream) pair names an independent sequence; `offset` is how many 4-word blocks of it
// have been consumed. Copying the struct is how a kernel receives its randomness.
struct PhiloxState {
  uint64_t seed = 0;
  uint32_t stream = 0;
  uint64_t offset = 0;  // in blocks of 4 words

  // Block `i` (absolute, relative to the current offset) of this sequence.
  EVO_HD Philox4 block(uint64_t i) const {
    const uint64_t c = offset + i;
    return philox4x32(Philox4{{uint32_t(c), uint32_t(c >> 32), stream, 0u}}, uint32_t(seed),
                      uint32_t(seed >> 32));
  }
  // Reserves `blocks` blocks and returns the state a kernel should use for them.
  PhiloxState take(uint64_t blocks) {
    PhiloxState s = *this;
    offset += blocks;
    return s;
  }
};

}  // namespace evo
