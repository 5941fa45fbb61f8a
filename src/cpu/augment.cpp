// CPU batch assembly from a uint8 data set: pad, random crop, random mirror, standardisation.
// Not data loading or shuffling: the caller passes the images and picks the indices.
#include <string>

#include "evo/draws.h"
#include "evo/error.h"
#include "evo/ops.h"

namespace evo::cpu {

// images: [*, H, W, C] uint8, indices: [N] -> out: [N, H, W, C]. Output pixel (y, x) of image i
// reads the padded image at (y + crop_y, x' + crop_x), x' = flip ? W-1-x : x, i.e. the original
// at (y + crop_y - pad, x' + crop_x - pad), and 0 outside it: the padding is black before
// standardisation, as in He et al.'s pipeline.
void augment_batch(Context&, const uint8_t* images, const int32_t* indices, int n, int h, int w,
                   int c, int pad, bool flip, const float* mean, const float* inv_std,
                   PhiloxState rng, float* out) {
  if (pad < 0) throw Error("augment_batch: pad " + std::to_string(pad) + " must be >= 0");
  const int64_t image_size = int64_t(h) * w * c;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const AugmentDraw draw = augment_draw(rng, i, pad, flip);
    const uint8_t* src = images + int64_t(indices[i]) * image_size;
    float* dst = out + int64_t(i) * image_size;
    for (int y = 0; y < h; ++y) {
      const int sy = y + draw.crop_y - pad;
      for (int x = 0; x < w; ++x) {
        const int sx = (draw.flip ? w - 1 - x : x) + draw.crop_x - pad;
        const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
        const uint8_t* p = inside ? src + (int64_t(sy) * w + sx) * c : nullptr;
        float* q = dst + (int64_t(y) * w + x) * c;
        for (int ch = 0; ch < c; ++ch) {
          const float v = inside ? float(p[ch]) : 0.0f;
          q[ch] = (v / 255.0f - mean[ch]) * inv_std[ch];
        }
      }
    }
  }
}

}  // namespace evo::cpu
