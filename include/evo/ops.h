// The layer ops every backend implements (CPU, emulated CUDA, CUDA), and the table that picks one.
// Not autograd: these are stateless kernels on raw device pointers; the model strings them together.
//
// Conventions shared by every backend:
// - Activations are NHWC, f32: x[n][h][w][c], channels fastest. "m" below is N*H*W (rows).
// - Conv filters are [C_out, KH, KW, C_in]; fully connected weights [out, in], bias [out].
// - All pointers are device pointers of the context's device (host pointers on the CPU backend).
// - Work is queued on ctx.stream(); nothing synchronises unless it says so.
// - Outputs are overwritten (never accumulated into) unless the name says "accumulate".
#pragma once

#include <cstdint>

#include "evo/context.h"
#include "evo/philox.h"

namespace evo {

// A 2-D convolution: odd filter sizes, stride a power of two, 'same' padding (kh/2, kw/2 on each
// side, as PyTorch's padding=k//2), no bias. Output size ceil(h / stride).
struct ConvGeometry {
  int n = 1, h = 1, w = 1, c_in = 1, c_out = 1, kh = 1, kw = 1, stride = 1;

  int pad_h() const { return kh / 2; }
  int pad_w() const { return kw / 2; }
  int out_h() const { return (h - 1) / stride + 1; }
  int out_w() const { return (w - 1) / stride + 1; }
  // The implicit GEMM of the forward pass: [M, K] x [K, N] with M = N*OH*OW, N = C_out,
  // K = KH*KW*C_in. Both backward passes are GEMMs of the same M, N, K, transposed.
  int64_t gemm_m() const { return int64_t(n) * out_h() * out_w(); }
  int64_t gemm_n() const { return c_out; }
  int64_t gemm_k() const { return int64_t(kh) * kw * c_in; }
  // Multiply-adds count 2 FLOPs (the convention of the paper and of GEMM benchmarks).
  double flops() const { return 2.0 * double(gemm_m()) * double(gemm_n()) * double(gemm_k()); }
};

// Checks what the comment above promises of a geometry (odd filters, power-of-two stride, positive
// sizes) and throws evo::Error naming `op` and the offending field otherwise. Every backend's
// convolutions call it (src/conv_geometry.cpp).
void check_conv_geometry(const ConvGeometry& g, const char* op);
// The same for next_batch's sizes (per_epoch, batch >= 1; first, n >= 0), for every backend.
void check_next_batch(int per_epoch, int batch, int first, int n);

// Batch-norm constants from the paper's setup (TensorFlow's defaults there).
inline constexpr float kBatchNormMomentum = 0.9f;  // running = 0.9 * running + 0.1 * batch
inline constexpr float kBatchNormEps = 1e-3f;

// What softmax_cross_entropy writes: the loss summed over the batch and the number of correct
// predictions (divide loss_sum by N for the mean).
struct LossResult {
  float loss_sum;  // sum over the batch of -log softmax(logits)[label]
  int32_t correct; // argmax(logits) == label, argmax taking the first of tied maxima
};

}  // namespace evo

// The op list, written once: X(name, (arguments)) per op, every op returning void. From it come
// each backend's declarations (the same names and argument order in namespaces cpu, emu and
// cuda), the OpTable's members and each backend's table, so adding an op is one entry here and
// its three implementations.
// clang-format off
#define EVO_OP_LIST(X)                                                                              \
  /* y[N,OH,OW,Cout] = conv(x[N,H,W,Cin], w[Cout,KH,KW,Cin]) */                                     \
  X(conv2d_forward, (Context& ctx, const ConvGeometry& g, const float* x, const float* w,           \
      float* y))                                                                                    \
  /* dx[N,H,W,Cin] from dy[N,OH,OW,Cout] and w */                                                   \
  X(conv2d_backward_data, (Context& ctx, const ConvGeometry& g, const float* dy, const float* w,    \
      float* dx))                                                                                   \
  /* dw[Cout,KH,KW,Cin] from x and dy */                                                            \
  X(conv2d_backward_filter, (Context& ctx, const ConvGeometry& g, const float* x,                   \
      const float* dy, float* dw))                                                                  \
  /* Training-mode batch norm over rows m = N*H*W of x[m, c], optionally fused with ReLU.           \
    Saves the batch mean and 1/sqrt(var + eps) for the backward pass and updates the running        \
    statistics (unbiased variance) with kBatchNormMomentum. */                                      \
  X(batchnorm_forward_train, (Context& ctx, int64_t m, int c, const float* x,                       \
      const float* gamma, const float* beta, bool relu, float* y, float* save_mean,                 \
      float* save_invstd, float* running_mean, float* running_var))                                 \
  /* Inference-mode batch norm with the running statistics, optionally fused with ReLU. */          \
  X(batchnorm_forward_infer, (Context& ctx, int64_t m, int c, const float* x,                       \
      const float* gamma, const float* beta, const float* running_mean,                             \
      const float* running_var, bool relu, float* y))                                               \
  /* Backward of the training-mode pass. y is its output (for the ReLU mask; ignored when           \
    !relu). Writes dx[m, c], dgamma[c], dbeta[c]. */                                                \
  X(batchnorm_backward, (Context& ctx, int64_t m, int c, const float* x, const float* y,            \
      const float* dy, const float* gamma, const float* save_mean, const float* save_invstd,        \
      bool relu, float* dx, float* dgamma, float* dbeta))                                           \
  X(relu_forward, (Context& ctx, int64_t n, const float* x, float* y))                              \
  /* dx = dy where y > 0, else 0 (y is the forward output; x may alias y) */                        \
  X(relu_backward, (Context& ctx, int64_t n, const float* y, const float* dy, float* dx))           \
  /* y = sum of `count` inputs of n elements each (count >= 1); `inputs` is a host array of         \
    device pointers; y may alias any input (the model accumulates in place) */                      \
  X(add_n, (Context& ctx, int64_t n, const float* const* inputs, int count, float* y))              \
  /* Nearest-neighbour ("zeroth-order") resize of x[N,H,W,C] to y[N,OH,OW,C]: y[i][j] =             \
    x[floor(i*H/OH)][floor(j*W/OW)]. */                                                             \
  X(resize_nearest_forward, (Context& ctx, int n, int h, int w, int c, int oh, int ow,              \
      const float* x, float* y))                                                                    \
  /* dx[N,H,W,C] = sum of dy over the output pixels that read each input pixel: a gather, one       \
    thread per input element, deterministic (no atomics). */                                        \
  X(resize_nearest_backward, (Context& ctx, int n, int h, int w, int c, int oh, int ow,             \
      const float* dy, float* dx))                                                                  \
  /* y[m, c_out] = x[m, c_in] truncated (c_out < c_in) or zero-padded (c_out > c_in) */             \
  X(channel_resize_forward, (Context& ctx, int64_t m, int c_in, int c_out, const float* x,          \
      float* y))                                                                                    \
  /* dx[m, c_in] = dy[m, c_out] truncated or zero-padded back */                                    \
  X(channel_resize_backward, (Context& ctx, int64_t m, int c_in, int c_out, const float* dy,        \
      float* dx))                                                                                   \
  /* y[N, C] = mean over H*W of x[N, H*W, C] */                                                     \
  X(global_avg_pool_forward, (Context& ctx, int n, int hw, int c, const float* x, float* y))        \
  X(global_avg_pool_backward, (Context& ctx, int n, int hw, int c, const float* dy, float* dx))     \
  /* y[N, out] = x[N, in] * w[out, in]^T + b[out] (BLAS) */                                         \
  X(fc_forward, (Context& ctx, int n, int in, int out, const float* x, const float* w,              \
      const float* b, float* y))                                                                    \
  /* dx[N,in] = dy w (skipped when dx is null); dw[out,in] = dy^T x; db[out] = column sums of       \
    dy (dw and db must not be null) */                                                              \
  X(fc_backward, (Context& ctx, int n, int in, int out, const float* x, const float* w,             \
      const float* dy, float* dx, float* dw, float* db))                                            \
  /* Softmax cross-entropy of logits[N, classes] against int32 labels[N]. Writes *result on         \
    the device (loss summed over the batch, correct count). When dlogits is not null it             \
    receives the gradient of loss_sum / grad_n: (softmax - onehot) / grad_n. grad_n = n is the      \
    mean loss; data-parallel training passes the global batch, so that the replicas' gradients      \
    of their shards sum to the gradient of the global batch's mean. A label outside [0,             \
    classes) throws evo::Error on the CPU; on a GPU (no exceptions) that row's loss and             \
    gradient are NaN. */                                                                            \
  X(softmax_cross_entropy, (Context& ctx, int n, int classes, const float* logits,                  \
      const int32_t* labels, LossResult* result, float* dlogits, int grad_n))                       \
  /* SGD with momentum and L2 weight decay (PyTorch's form): v = momentum * v + (g +                \
    weight_decay * w); w -= lr * v */                                                               \
  X(sgd_update, (Context& ctx, int64_t n, float lr, float momentum, float weight_decay,             \
      float* w, const float* g, float* v))                                                          \
  /* He et al. 2015 initialisation: w[i] ~ Normal(0, sqrt(2 / fan_in)), from Philox counter i       \
    / 2 of `rng` (Box-Muller), so every backend draws the same numbers. */                          \
  X(he_init, (Context& ctx, int64_t n, int fan_in, PhiloxState rng, float* w))                      \
  /* Builds a batch out[N, H, W, C] from a device-resident uint8 data set images[*, H, W, C]:       \
    image indices[i]; zero-pad by `pad` and crop a random HxW window, flip horizontally with        \
    probability 1/2 when `flip`, then standardise per channel: (v/255 - mean[c]) * inv_std[c].      \
    pad = 0 and flip = false give the plain evaluation batch. Randomness: Philox counter i of        \
    `rng`, whose offset is advanced by *rng_offset (a device value) when rng_offset is not null:    \
    a step captured in a CUDA graph reads its counters from there (next_batch writes them). */      \
  X(augment_batch, (Context& ctx, const uint8_t* images, const int32_t* indices, int n, int h,      \
      int w, int c, int pad, bool flip, const float* mean, const float* inv_std,                    \
      PhiloxState rng, const uint64_t* rng_offset, float* out))                                     \
  /* The batch of the next training step, read from device memory so that a step captured in a     \
    CUDA graph draws a new batch at every replay (a replay reuses the captured arguments). With     \
    s = *step and slot = s % per_epoch: indices[i] = order[slot * batch + first + i] and            \
    labels[i] = order_labels[the same], i < n; *rng_offset = s * batch + first (augment_batch's     \
    counters: image first + i of the global batch draws counter s * batch + first + i); then        \
    *step = s + 1. One small kernel on GPUs. */                                                     \
  X(next_batch, (Context& ctx, int64_t* step, int per_epoch, int batch, int first, int n,           \
      const int32_t* order, const int32_t* order_labels, int32_t* indices, int32_t* labels,         \
      uint64_t* rng_offset))
// clang-format on

#define EVO_OP_DECLARE(name, args) void name args;
#define EVO_OP_MEMBER(name, args) void(*name) args;

namespace evo {
namespace cpu {
EVO_OP_LIST(EVO_OP_DECLARE)
}
namespace emu {
EVO_OP_LIST(EVO_OP_DECLARE)
}
#if defined(EVO_HAVE_CUDA)
namespace cuda {
EVO_OP_LIST(EVO_OP_DECLARE)
}
#endif

// One entry per op: the backend's implementation. `ops(device)` picks the table.
struct OpTable {
  EVO_OP_LIST(EVO_OP_MEMBER)
};

// The table of backend namespace cpu, emu or cuda, in the list's order.
#define EVO_OP_TABLE(ns) ::evo::OpTable{EVO_OP_LIST(EVO_OP_ENTRY_##ns)}
#define EVO_OP_ENTRY_cpu(name, args) &::evo::cpu::name,
#define EVO_OP_ENTRY_emu(name, args) &::evo::emu::name,
#define EVO_OP_ENTRY_cuda(name, args) &::evo::cuda::name,

// The table for `kind` (defined in evo_backends, which links every backend). Throws evo::Error
// for CUDA in a build without it.
const OpTable& ops(DeviceKind kind);

}  // namespace evo
