// The exact maps from Philox blocks to He-normal weights and to augmentation choices (ops.h's
// he_init and augment_batch). Not a random-number library: it pins down which bits mean what.
//
// Every backend calls these (EVO_HD: host and device), so that CPU, emulated and real CUDA
// draw the same raw bits for the same element. The floats then agree to a few ulps, not bit for
// bit: logf, sinf and cosf of glibc and of CUDA's libdevice round differently.
#pragma once

#include <math.h>

#include <cstdint>

#include "evo/philox.h"

namespace evo {

// Element i of a He-initialised tensor: block i/2 of `rng` holds one Box-Muller pair,
// u1 = 1 - uniform01(v[0]) in (0, 1] (so the log is finite), u2 = uniform01(v[1]);
// even i takes r cos(2 pi u2), odd i takes r sin(2 pi u2), with r = sqrt(-2 ln u1); words v[2]
// and v[3] are unused. The result is scaled by `std` = sqrt(2 / fan_in).
EVO_HD float he_normal_draw(const PhiloxState& rng, int64_t i, float std) {
  const Philox4 b = rng.block(uint64_t(i) >> 1);
  const float u1 = 1.0f - uniform01(b.v[0]);
  const float u2 = uniform01(b.v[1]);
  const float r = sqrtf(-2.0f * logf(u1));
  const float theta = 6.28318530717958647692f * u2;
  return (i & 1) ? r * sinf(theta) * std : r * cosf(theta) * std;
}

// Image i of an augmented batch: block i of `rng`. The crop window's corner in the padded
// image is (v[0] % (2 pad + 1), v[1] % (2 pad + 1)); the crop is mirrored when `flip` and
// v[2] is odd.
struct AugmentDraw {
  int crop_y, crop_x;
  bool flip;
};
EVO_HD AugmentDraw augment_draw(const PhiloxState& rng, int64_t i, int pad, bool flip) {
  const Philox4 b = rng.block(uint64_t(i));
  const uint32_t span = uint32_t(2 * pad + 1);
  return AugmentDraw{int(b.v[0] % span), int(b.v[1] % span), flip && (b.v[2] & 1u) != 0};
}

}  // namespace evo
