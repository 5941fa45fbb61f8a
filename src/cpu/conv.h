// The CPU convolutions beside the default ones of ops.h: the readable reference and the fast path.
// Not a dispatch table: conv2d_forward & co. (ops.h) pick a fast path per shape; tests and benches
// may call any version directly.
#pragma once

#include "evo/ops.h"

namespace evo::cpu {

// Plain loops, one output element at a time: the version to read first and the one to trust.
// Same arguments and layouts as the ops.h functions, so either can stand in for the other.
void conv2d_forward_reference(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                              float* y);
void conv2d_backward_data_reference(Context& ctx, const ConvGeometry& g, const float* dy,
                                    const float* w, float* dx);
void conv2d_backward_filter_reference(Context& ctx, const ConvGeometry& g, const float* x,
                                      const float* dy, float* dw);

// im2col + OpenBLAS SGEMM over chunks of the batch (1x1 stride-1 convolutions skip im2col): what
// conv2d_forward, conv2d_backward_data and conv2d_backward_filter run.
void conv2d_forward_gemm(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                         float* y);
void conv2d_backward_data_gemm(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                               float* dx);
void conv2d_backward_filter_gemm(Context& ctx, const ConvGeometry& g, const float* x,
                                 const float* dy, float* dw);

// Direct convolution for few channels (conv_direct.cpp): planar copies of each image, eight output
// columns per vector, no im2col or GEMM. Any geometry is accepted; it is only fast for few channels.
void conv2d_forward_direct(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                           float* y);
void conv2d_backward_data_direct(Context& ctx, const ConvGeometry& g, const float* dy,
                                 const float* w, float* dx);
void conv2d_backward_filter_direct(Context& ctx, const ConvGeometry& g, const float* x,
                                   const float* dy, float* dw);
// Direct convolution vectorised over channels (conv_channels.cpp): blocks of output pixels x
// vectors of 8 channels in registers, read in place from zero-bordered copies of a few images. Any
// geometry is accepted; it is fast for small maps (7x7 down to 1x1) and stride 4.
void conv2d_forward_channels(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                             float* y);
void conv2d_backward_data_channels(Context& ctx, const ConvGeometry& g, const float* dy,
                                   const float* w, float* dx);
void conv2d_backward_filter_channels(Context& ctx, const ConvGeometry& g, const float* x,
                                     const float* dy, float* dw);
// Which of the fast paths the ops.h entry points run for this shape and pass (conv.cpp says why).
enum class ConvPass { Forward, BackwardData, BackwardFilter };
enum class ConvPath { Gemm, Direct, Channels };
ConvPath conv2d_path(const ConvGeometry& g, ConvPass pass);
const char* conv_path_name(ConvPath path);


}  // namespace evo::cpu
