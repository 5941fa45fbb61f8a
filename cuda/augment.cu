// GPU batch assembly from a device-resident uint8 data set: pad, random crop, random mirror,
// standardisation. Not data loading or shuffling: the caller uploads images and picks indices.
//
// Image i's crop and flip come from augment_draw(rng, i) (evo/draws.h, shared with the CPU), and
// the arithmetic is the CPU's, operation for operation: the batches are bit-identical.
// Ceiling: memory bandwidth (1 byte read, 4 written per value); recomputing the 10-round Philox
// block per thread costs ~100 integer instructions, hidden behind the writes.
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "evo/ops.h"
#include "evo/draws.h"

namespace evo::EVO_GPU_NS {

namespace {

// grid (ceil(H*W*C / 256), N): blockIdx.y is the image, threads walk its H x W x C values.
// Output pixel (y, x) reads the padded image at (y + crop_y, x' + crop_x), x' = flip ? W-1-x : x,
// i.e. the original at (y + crop_y - pad, x' + crop_x - pad), and 0 outside it: the padding is
// black before standardisation, as in He et al.'s pipeline.
__global__ void augment_kernel(const uint8_t* __restrict__ images,
                               const int32_t* __restrict__ indices, int h, int w, FastDiv c,
                               FastDiv w_div, int pad, bool flip, const float* __restrict__ mean,
                               const float* __restrict__ inv_std, PhiloxState rng,
                               const uint64_t* __restrict__ rng_offset, float* __restrict__ out) {
  const int image_size = h * w * int(c.d);
  const int i = blockIdx.y;
  if (rng_offset) rng.offset += *rng_offset;
  const AugmentDraw draw = augment_draw(rng, i, pad, flip);
  const uint8_t* src = images + int64_t(indices[i]) * image_size;
  float* dst = out + int64_t(i) * image_size;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < image_size; e += gridDim.x * blockDim.x) {
    uint32_t t, y;
    const int ch = int(fast_divmod(c, uint32_t(e), t));
    const int x = int(fast_divmod(w_div, t, y));
    const int sy = int(y) + draw.crop_y - pad;
    const int sx = (draw.flip ? w - 1 - x : x) + draw.crop_x - pad;
    const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
    const float v = inside ? float(src[(int64_t(sy) * w + sx) * c.d + ch]) : 0.0f;
    dst[e] = (v / 255.0f - mean[ch]) * inv_std[ch];
  }
}

}  // namespace

void augment_batch(Context& ctx, const uint8_t* images, const int32_t* indices, int n, int h, int w,
                   int c, int pad, bool flip, const float* mean, const float* inv_std,
                   PhiloxState rng, const uint64_t* rng_offset, float* out) {
  if (pad < 0) throw Error("augment_batch: pad " + std::to_string(pad) + " must be >= 0");
  if (n == 0) return;
  const int64_t image_size = int64_t(h) * w * c;
  check_int32(image_size * n, "augment_batch");
  if (image_size == 0) return;
  if (n > 65535)
    throw Error("augment_batch: " + std::to_string(n) + " images; at most 65535 per call");
  const dim3 grid(blocks_for(image_size), n);
  EVO_LAUNCH(augment_kernel, grid, kThreads, 0, stream_of(ctx), images, indices, h, w,
             make_fastdiv(c), make_fastdiv(w), pad, flip, mean, inv_std, rng, rng_offset, out);
}

namespace {

// One block: every thread reads the step before thread 0 advances it (the barrier between), so
// the kernel is a pure function of the step it found. Batches are at most a few thousand
// indices: one block is plenty, and a launch is what this costs anyway.
__global__ void next_batch_kernel(int64_t* step, int per_epoch, int batch, int first, int n,
                                  const int32_t* __restrict__ order,
                                  const int32_t* __restrict__ order_labels,
                                  int32_t* __restrict__ indices, int32_t* __restrict__ labels,
                                  uint64_t* rng_offset) {
  const int64_t s = *step;
  const int64_t at = (s % per_epoch) * batch + first;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    indices[i] = order[at + i];
    labels[i] = order_labels[at + i];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    *rng_offset = uint64_t(s) * uint64_t(batch) + uint64_t(first);
    *step = s + 1;
  }
}

}  // namespace

void next_batch(Context& ctx, int64_t* step, int per_epoch, int batch, int first, int n,
                const int32_t* order, const int32_t* order_labels, int32_t* indices,
                int32_t* labels, uint64_t* rng_offset) {
  check_next_batch(per_epoch, batch, first, n);
  EVO_LAUNCH(next_batch_kernel, 1, 256, 0, stream_of(ctx), step, per_epoch, batch, first, n, order,
             order_labels, indices, labels, rng_offset);
}

}  // namespace evo::EVO_GPU_NS
