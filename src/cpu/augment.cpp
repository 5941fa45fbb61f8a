// CPU batch assembly from a uint8 data set: pad, random crop, random mirror, standardisation.
// Not data loading or shuffling: the caller passes the images and picks the indices.
#include <algorithm>
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
                   PhiloxState rng, const uint64_t* rng_offset, float* out) {
  if (pad < 0) throw Error("augment_batch: pad " + std::to_string(pad) + " must be >= 0");
  if (rng_offset) rng.offset += *rng_offset;
  const int64_t image_size = int64_t(h) * w * c;
  // Every output value is (v / 255 - mean[ch]) * inv_std[ch], written exactly so (v = 0 in the
  // padding), the formula of every backend. The loops are arranged per row: rows outside the
  // image, and the padding columns of a row, are known before the pixels are visited, so the
  // pixels of a row run without a test each (one channel, no flip: a plain vector loop).
#pragma omp parallel for schedule(static) if (int64_t(n) * image_size >= (int64_t(1) << 16))
  for (int i = 0; i < n; ++i) {
    const AugmentDraw draw = augment_draw(rng, i, pad, flip);
    const uint8_t* src = images + int64_t(indices[i]) * image_size;
    float* dst = out + int64_t(i) * image_size;
    // Output column x reads source column sx = (flip ? w-1-x : x) + dx, inside when 0 <= sx < w.
    const int dx = draw.crop_x - pad;
    const int x_lo = draw.flip ? std::max(0, dx) : std::max(0, -dx);
    const int x_hi = draw.flip ? std::min(w, w + dx) : std::min(w, w - dx);
    for (int y = 0; y < h; ++y) {
      const int sy = y + draw.crop_y - pad;
      float* q = dst + int64_t(y) * w * c;
      const bool row_inside = sy >= 0 && sy < h;
      auto padding = [&](int x0, int x1) {
        for (int x = x0; x < x1; ++x)
          for (int ch = 0; ch < c; ++ch) q[int64_t(x) * c + ch] = (0.0f - mean[ch]) * inv_std[ch];
      };
      if (!row_inside || x_lo >= x_hi) {
        padding(0, w);
        continue;
      }
      padding(0, x_lo);
      const uint8_t* row = src + int64_t(sy) * w * c;
      if (c == 1 && !draw.flip) {
        const uint8_t* p = row + dx;
        const float m = mean[0], s = inv_std[0];
#pragma omp simd
        for (int x = x_lo; x < x_hi; ++x) q[x] = (float(p[x]) / 255.0f - m) * s;
      } else {
        for (int x = x_lo; x < x_hi; ++x) {
          const int sx = (draw.flip ? w - 1 - x : x) + dx;
          const uint8_t* p = row + int64_t(sx) * c;
          for (int ch = 0; ch < c; ++ch)
            q[int64_t(x) * c + ch] = (float(p[ch]) / 255.0f - mean[ch]) * inv_std[ch];
        }
      }
      padding(x_hi, w);
    }
  }
}

// The next step's batch from the epoch order (ops.h): here plain host memory.
void next_batch(Context&, int64_t* step, int per_epoch, int batch, int first, int n,
                const int32_t* order, const int32_t* order_labels, int32_t* indices,
                int32_t* labels, uint64_t* rng_offset) {
  check_next_batch(per_epoch, batch, first, n);
  const int64_t s = *step;
  const int64_t at = (s % per_epoch) * batch + first;
  for (int i = 0; i < n; ++i) {
    indices[i] = order[at + i];
    labels[i] = order_labels[at + i];
  }
  *rng_offset = uint64_t(s) * uint64_t(batch) + uint64_t(first);
  *step = s + 1;
}

}  // namespace evo::cpu
