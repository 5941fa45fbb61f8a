// GPU memory-bound ops: ReLU, the N-way skip sum, nearest resize, channel truncate/zero-pad and
// global average pooling, forward and backward. Not batch norm's fused ReLU (batchnorm.cu).
//
// All of these move a few bytes per element and do almost no arithmetic: their ceiling is memory
// bandwidth (H100 SXM: 3.35 TB/s, i.e. ~0.3 ms per GB read plus written). The kernels therefore
// only care about coalescing (neighbouring threads touch neighbouring addresses) and cheap index
// math (FastDiv instead of 64-bit division). Every output element is written by exactly one
// thread: the resize backward is a gather, pooling a fixed-order block reduction, so results are
// deterministic and nothing needs zeroing first.
#include "cuda/compat.h"

#include <string>

#include "cuda/common.cuh"
#include "evo/ops.h"

namespace evo::EVO_GPU_NS {

namespace {

// NaN passes through (as in the CPU's std::max(x, 0.f)), so a diverging net shows as NaN.
__global__ void relu_forward_kernel(int n, const float* x, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float v = x[i];
    y[i] = v < 0.f ? 0.f : v;
  }
}

__global__ void relu_backward_kernel(int n, const float* y, const float* dy, float* dx) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

// Up to kMaxByValue input pointers travel in the kernel's parameters (no copy to the device).
constexpr int kMaxByValue = 16;
struct InputList {
  const float* p[kMaxByValue];
};

// Summed in input order, the order every backend uses. y may alias an input: each element is
// read from every input before it is written, by the same thread.
__global__ void add_n_kernel(int n, InputList inputs, int count, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float sum = inputs.p[0][i];
    for (int j = 1; j < count; ++j) sum += inputs.p[j][i];
    y[i] = sum;
  }
}

// The same with the pointer list in device memory, for vertices with many incoming edges.
__global__ void add_n_many_kernel(int n, const float* const* inputs, int count, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float sum = inputs[0][i];
    for (int j = 1; j < count; ++j) sum += inputs[j][i];
    y[i] = sum;
  }
}

// x: [N, H, W, C] -> y: [N, OH, OW, C], one thread per output element.
__global__ void resize_nearest_forward_kernel(int total, int h, int w, int oh, int ow, FastDiv c,
                                              FastDiv ow_div, FastDiv oh_div, const float* x,
                                              float* y) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    uint32_t t, u, b;
    const int ch = int(fast_divmod(c, uint32_t(e), t));
    const int j = int(fast_divmod(ow_div, t, u));
    const int i = int(fast_divmod(oh_div, u, b));
    const int sy = int(int64_t(i) * h / oh), sx = int(int64_t(j) * w / ow);
    y[e] = x[((int64_t(b) * h + sy) * w + sx) * c.d + ch];
  }
}

// dy: [N, OH, OW, C] -> dx: [N, H, W, C]. Output row i reads input row floor(i*H/OH), so input
// row r is read by output rows [ceil(r*OH/H), ceil((r+1)*OH/H)); each thread sums its input
// element's readers in (i, j) order: a gather, deterministic, the CPU's order.
__global__ void resize_nearest_backward_kernel(int total, int h, int w, int oh, int ow, FastDiv c,
                                               FastDiv w_div, FastDiv h_div, const float* dy,
                                               float* dx) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    uint32_t t, u, b;
    const int ch = int(fast_divmod(c, uint32_t(e), t));
    const int s = int(fast_divmod(w_div, t, u));
    const int r = int(fast_divmod(h_div, u, b));
    const int i0 = int((int64_t(r) * oh + h - 1) / h), i1 = int((int64_t(r + 1) * oh + h - 1) / h);
    const int j0 = int((int64_t(s) * ow + w - 1) / w), j1 = int((int64_t(s + 1) * ow + w - 1) / w);
    float sum = 0.f;
    for (int i = i0; i < i1; ++i)
      for (int j = j0; j < j1; ++j) sum += dy[((int64_t(b) * oh + i) * ow + j) * c.d + ch];
    dx[e] = sum;
  }
}

// dst[m, dst_c] = src[m, src_c] for the first min(src_c, dst_c) channels, zeros after them.
__global__ void copy_channels_kernel(int total, int src_c, FastDiv dst_c, const float* src,
                                     float* dst) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    uint32_t r;
    const int ch = int(fast_divmod(dst_c, uint32_t(e), r));
    dst[e] = ch < src_c ? src[int64_t(r) * src_c + ch] : 0.f;
  }
}

// grid (ceil(cols / 32), batches), block (32, 8): thread (tx, ty) sums rows ty, ty + 8, ... of
// column 32*bx + tx (a warp reads 32 consecutive columns of a row: coalesced), then the eight
// partial sums are added in ty order.
constexpr int kColsPerBlock = 32, kRowLanes = 8;
constexpr int kColumnSumThreads = kColsPerBlock * kRowLanes;
__global__ void __launch_bounds__(kColumnSumThreads)
    column_sums_kernel(int rows, int cols, float scale, const float* x, float* y) {
  __shared__ float part[kRowLanes][kColsPerBlock + 1];
  const int col = blockIdx.x * kColsPerBlock + threadIdx.x;
  const float* xb = x + int64_t(blockIdx.y) * rows * cols;
  float sum = 0.f;
  if (col < cols)
    for (int r = threadIdx.y; r < rows; r += kRowLanes) sum += xb[int64_t(r) * cols + col];
  part[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    for (int l = 1; l < kRowLanes; ++l) sum += part[l][threadIdx.x];
    y[int64_t(blockIdx.y) * cols + col] = sum * scale;
  }
}

// dy: [N, C] -> dx: [N, HW, C] = dy / HW broadcast over the pixels.
__global__ void global_avg_pool_backward_kernel(int total, FastDiv hwc, FastDiv c, float inv,
                                                const float* dy, float* dx) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    uint32_t b, unused;
    const int ch = int(fast_divmod(c, uint32_t(e), unused));
    fast_divmod(hwc, uint32_t(e), b);
    dx[e] = dy[int64_t(b) * c.d + ch] * inv;
  }
}

}  // namespace

void column_sums(Context& ctx, int batches, int rows, int cols, float scale, const float* x,
                 float* y) {
  const dim3 grid((cols + kColsPerBlock - 1) / kColsPerBlock, batches);
  EVO_LAUNCH(column_sums_kernel, grid, dim3(kColsPerBlock, kRowLanes), 0, stream_of(ctx), rows,
             cols, scale, x, y);
}

void relu_forward(Context& ctx, int64_t n, const float* x, float* y) {
  check_int32(n, "relu_forward");
  if (n == 0) return;
  EVO_LAUNCH(relu_forward_kernel, blocks_for(n), kThreads, 0, stream_of(ctx), int(n), x, y);
}

void relu_backward(Context& ctx, int64_t n, const float* y, const float* dy, float* dx) {
  check_int32(n, "relu_backward");
  if (n == 0) return;
  EVO_LAUNCH(relu_backward_kernel, blocks_for(n), kThreads, 0, stream_of(ctx), int(n), y, dy, dx);
}

// `inputs` is a host array of `count` device pointers (what the model holds).
void add_n(Context& ctx, int64_t n, const float* const* inputs, int count, float* y) {
  check_int32(n, "add_n");
  if (count < 1) throw Error("add_n: count is " + std::to_string(count) + ", needs >= 1 input");
  if (n == 0) return;
  if (count <= kMaxByValue) {
    InputList list{};
    for (int j = 0; j < count; ++j) list.p[j] = inputs[j];
    EVO_LAUNCH(add_n_kernel, blocks_for(n), kThreads, 0, stream_of(ctx), int(n), list, count, y);
    return;
  }
  Arena::Scope scope(ctx.arena());
  const float** list = ctx.arena().allocate_n<const float*>(count);
  EVO_CUDA_CHECK(cudaMemcpyAsync(list, inputs, sizeof(const float*) * count, cudaMemcpyHostToDevice,
                                 stream_of(ctx)));
  EVO_LAUNCH(add_n_many_kernel, blocks_for(n), kThreads, 0, stream_of(ctx), int(n),
             static_cast<const float* const*>(list), count, y);
  // The copy reads pageable host memory, so it has finished when cudaMemcpyAsync returns; the
  // list itself is reused only by work queued after this kernel (the arena is stream-ordered).
}

void resize_nearest_forward(Context& ctx, int n, int h, int w, int c, int oh, int ow,
                            const float* x, float* y) {
  const int64_t total = int64_t(n) * oh * ow * c;
  check_int32(total, "resize_nearest_forward");
  if (total == 0) return;
  EVO_LAUNCH(resize_nearest_forward_kernel, blocks_for(total), kThreads, 0, stream_of(ctx),
             int(total), h, w, oh, ow, make_fastdiv(c), make_fastdiv(ow), make_fastdiv(oh), x, y);
}

void resize_nearest_backward(Context& ctx, int n, int h, int w, int c, int oh, int ow,
                             const float* dy, float* dx) {
  const int64_t total = int64_t(n) * h * w * c;
  check_int32(total, "resize_nearest_backward");
  if (total == 0) return;
  EVO_LAUNCH(resize_nearest_backward_kernel, blocks_for(total), kThreads, 0, stream_of(ctx),
             int(total), h, w, oh, ow, make_fastdiv(c), make_fastdiv(w), make_fastdiv(h), dy, dx);
}

void channel_resize_forward(Context& ctx, int64_t m, int c_in, int c_out, const float* x,
                            float* y) {
  const int64_t total = m * c_out;
  check_int32(total, "channel_resize_forward");
  if (total == 0) return;
  EVO_LAUNCH(copy_channels_kernel, blocks_for(total), kThreads, 0, stream_of(ctx), int(total), c_in,
             make_fastdiv(c_out), x, y);
}

// The adjoint: kept channels pass their gradient back, truncated ones receive zero, and the
// gradient of padding channels is dropped.
void channel_resize_backward(Context& ctx, int64_t m, int c_in, int c_out, const float* dy,
                             float* dx) {
  const int64_t total = m * c_in;
  check_int32(total, "channel_resize_backward");
  if (total == 0) return;
  EVO_LAUNCH(copy_channels_kernel, blocks_for(total), kThreads, 0, stream_of(ctx), int(total),
             c_out, make_fastdiv(c_in), dy, dx);
}

// x: [N, HW, C] -> y: [N, C]. Summed, then scaled by 1/HW (the CPU's order of operations).
void global_avg_pool_forward(Context& ctx, int n, int hw, int c, const float* x, float* y) {
  check_int32(int64_t(n) * hw * c, "global_avg_pool_forward");
  if (int64_t(n) * c == 0) return;
  column_sums(ctx, n, hw, c, 1.f / float(hw), x, y);
}

void global_avg_pool_backward(Context& ctx, int n, int hw, int c, const float* dy, float* dx) {
  const int64_t total = int64_t(n) * hw * c;
  check_int32(total, "global_avg_pool_backward");
  if (total == 0) return;
  EVO_LAUNCH(global_avg_pool_backward_kernel, blocks_for(total), kThreads, 0, stream_of(ctx),
             int(total), make_fastdiv(uint32_t(int64_t(hw) * c)), make_fastdiv(c), 1.f / float(hw),
             dy, dx);
}

}  // namespace evo::EVO_GPU_NS
