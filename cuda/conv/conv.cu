// The convolution ops of ops.h on the GPU: geometry checks, the run-time choice of kernel version
// (cuda/conv/conv.h) and the split-K plan. Not kernels: those are in cuda/conv/N_*.cu.
#include "cuda/compat.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "cuda/common.cuh"
#include "cuda/conv/conv.h"
#include "cuda/conv/internal.cuh"
#include "evo/error.h"

namespace evo::EVO_GPU_NS {

namespace conv_detail {

Dims make_dims(const ConvGeometry& g) {
  // The kernels index rows and reduction positions with 32-bit ints (FastDiv needs < 2^31).
  const int64_t limit = int64_t(1) << 31;
  const int64_t x_size = int64_t(g.n) * g.h * g.w * g.c_in;
  const int64_t y_size = g.gemm_m() * g.c_out;
  if (x_size >= limit || y_size >= limit || g.gemm_m() >= limit || g.gemm_k() * g.c_out >= limit)
    throw Error("convolution n=" + std::to_string(g.n) + " " + std::to_string(g.h) + "x" +
                std::to_string(g.w) + " " + std::to_string(g.c_in) + "->" +
                std::to_string(g.c_out) +
                " is too large for the GPU kernels' 32-bit indices: split the batch");
  Dims d{};
  d.n = g.n, d.h = g.h, d.w = g.w, d.c_in = g.c_in, d.c_out = g.c_out, d.kh = g.kh, d.kw = g.kw;
  d.stride = g.stride;
  d.stride_log2 = 0;
  while ((1 << d.stride_log2) < g.stride) ++d.stride_log2;
  d.pad_h = g.pad_h(), d.pad_w = g.pad_w(), d.oh = g.out_h(), d.ow = g.out_w();
  d.div_c_in = make_fastdiv(uint32_t(g.c_in));
  d.div_c_out = make_fastdiv(uint32_t(g.c_out));
  d.div_kw = make_fastdiv(uint32_t(g.kw));
  d.div_oh = make_fastdiv(uint32_t(d.oh));
  d.div_ow = make_fastdiv(uint32_t(d.ow));
  return d;
}

GemmSize gemm_size(const ForwardGemm& p) {
  return {int64_t(p.d.n) * p.d.oh * p.d.ow, p.d.c_out, int64_t(p.d.kh) * p.d.kw * p.d.c_in};
}
GemmSize gemm_size(const BackwardDataGemm& p) {
  // Phase (0, 0) has the most pixels; its K is not the largest, but K only bounds a loop.
  const int s = p.d.stride;
  const int64_t hq = (p.d.h + s - 1) / s, wq = (p.d.w + s - 1) / s;
  const int64_t taps = int64_t((p.d.kh + s - 1) / s) * ((p.d.kw + s - 1) / s);
  return {int64_t(p.d.n) * hq * wq, p.d.c_in, taps * p.d.c_out};
}
GemmSize gemm_size(const BackwardFilterGemm& p) {
  return {p.d.c_out, int64_t(p.d.kh) * p.d.kw * p.d.c_in, int64_t(p.d.n) * p.d.oh * p.d.ow};
}

SplitPlan plan_split_k(int64_t tiles, int64_t depth, int bk) {
  // Two blocks per SM of a 132-SM H100 keep it busy; a constant (not the device's SM count) so
  // that the emulator and every GPU sum in the same order.
  constexpr int64_t kTargetBlocks = 264;
  // Below ~256 terms per split the partial sums' extra traffic costs more than the split buys.
  constexpr int64_t kMinDepthPerSplit = 256;
  constexpr int64_t kMaxSplits = 64;
  const int64_t steps = (depth + bk - 1) / bk;
  int64_t splits = 1;
  if (tiles < kTargetBlocks / 2) {
    splits = (kTargetBlocks + tiles - 1) / tiles;
    splits = splits < depth / kMinDepthPerSplit ? splits : depth / kMinDepthPerSplit;
    splits = splits < kMaxSplits ? splits : kMaxSplits;
    if (splits < 1) splits = 1;
  }
  const int64_t steps_per_split = (steps + splits - 1) / splits;
  splits = (steps + steps_per_split - 1) / steps_per_split;  // no empty split at the end
  return {int(splits > 0 ? splits : 1), int(steps_per_split * bk)};
}

}  // namespace conv_detail

namespace {

enum Pass { kForward, kBackwardData, kBackwardFilter };

std::atomic<int> g_version[3] = {0, 0, 0};  // 0: the default

void check_version(int version, int lo, const char* what) {
  if (version < lo || version > kConvTensorCoreVersion)
    throw Error(std::string(what) + ": convolution version " + std::to_string(version) +
                " does not exist; versions are 1 (direct), 2 (implicit_gemm), 3 "
                "(register_blocked), 4 (tensor_core_tf32)" +
                (lo == 0 ? ", or 0 for the default" : ""));
}

// Version 4 needs TF32 tensor cores (sm_80 and newer); the emulator has them.
void check_tensor_cores(const char* what) {
#if !defined(EVO_EMULATE)
  int device = 0, major = 0;
  EVO_CUDA_CHECK(cudaGetDevice(&device));
  EVO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8)
    throw Error(std::string(what) + ": convolution version 4 needs TF32 tensor cores (sm_80 or "
                "newer); GPU " + std::to_string(device) + " is sm_" + std::to_string(major) +
                "x: use versions 1-3");
#else
  (void)what;
#endif
}

int default_version() {
  static const int version = [] {
    const char* env = std::getenv("EVO_CONV_VERSION");
    if (!env || !*env) return kConvDefaultVersion;
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (*end != '\0' || v < 1 || v > kConvTensorCoreVersion)
      throw Error(std::string("EVO_CONV_VERSION=") + env +
                  " is not a convolution version: use 1 (direct), 2 (implicit_gemm), 3 "
                  "(register_blocked) or 4 (tensor_core_tf32, TF32 precision), or unset it");
    return int(v);
  }();
  return version;
}

int version_of(Pass pass) {
  const int v = g_version[pass].load(std::memory_order_relaxed);
  return v ? v : default_version();
}

}  // namespace

const char* conv_version_name(int version) {
  check_version(version, 1, "conv_version_name");
  static const char* const kNames[] = {"direct", "implicit_gemm", "register_blocked",
                                       "tensor_core_tf32"};
  return kNames[version - 1];
}

void set_conv_forward_version(int version) {
  check_version(version, 0, "set_conv_forward_version");
  g_version[kForward] = version;
}
void set_conv_backward_data_version(int version) {
  check_version(version, 0, "set_conv_backward_data_version");
  g_version[kBackwardData] = version;
}
void set_conv_backward_filter_version(int version) {
  check_version(version, 0, "set_conv_backward_filter_version");
  g_version[kBackwardFilter] = version;
}
int conv_forward_version() {
  return version_of(kForward);
}
int conv_backward_data_version() {
  return version_of(kBackwardData);
}
int conv_backward_filter_version() {
  return version_of(kBackwardFilter);
}

void conv2d_forward_version(int version, Context& ctx, const ConvGeometry& g, const float* x,
                            const float* w, float* y) {
  check_version(version, 1, "conv2d_forward");
  check_conv_geometry(g, "conv2d_forward");
  switch (version) {
    case 1:
      conv_detail::forward_direct(ctx, g, x, w, y);
      break;
    case 2:
      conv_detail::forward_tiled(ctx, g, x, w, y);
      break;
    case 4:
      check_tensor_cores("conv2d_forward");
      conv_detail::forward_tensor_core(ctx, g, x, w, y);
      break;
    default:
      conv_detail::forward_register_blocked(ctx, g, x, w, y);
      break;
  }
}

void conv2d_backward_data_version(int version, Context& ctx, const ConvGeometry& g, const float* dy,
                                  const float* w, float* dx) {
  check_version(version, 1, "conv2d_backward_data");
  check_conv_geometry(g, "conv2d_backward_data");
  switch (version) {
    case 1:
      conv_detail::backward_data_direct(ctx, g, dy, w, dx);
      break;
    case 2:
      conv_detail::backward_data_tiled(ctx, g, dy, w, dx);
      break;
    case 4:
      check_tensor_cores("conv2d_backward_data");
      conv_detail::backward_data_tensor_core(ctx, g, dy, w, dx);
      break;
    default:
      conv_detail::backward_data_register_blocked(ctx, g, dy, w, dx);
      break;
  }
}

void conv2d_backward_filter_version(int version, Context& ctx, const ConvGeometry& g,
                                    const float* x, const float* dy, float* dw) {
  check_version(version, 1, "conv2d_backward_filter");
  check_conv_geometry(g, "conv2d_backward_filter");
  switch (version) {
    case 1:
      conv_detail::backward_filter_direct(ctx, g, x, dy, dw);
      break;
    case 2:
      conv_detail::backward_filter_tiled(ctx, g, x, dy, dw);
      break;
    case 4:
      check_tensor_cores("conv2d_backward_filter");
      conv_detail::backward_filter_tensor_core(ctx, g, x, dy, dw);
      break;
    default:
      conv_detail::backward_filter_register_blocked(ctx, g, x, dy, dw);
      break;
  }
}

// ---- ops.h ---------------------------------------------------------------------------------

void conv2d_forward(Context& ctx, const ConvGeometry& g, const float* x, const float* w, float* y) {
  conv2d_forward_version(conv_forward_version(), ctx, g, x, w, y);
}

void conv2d_backward_data(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                          float* dx) {
  conv2d_backward_data_version(conv_backward_data_version(), ctx, g, dy, w, dx);
}

void conv2d_backward_filter(Context& ctx, const ConvGeometry& g, const float* x, const float* dy,
                            float* dw) {
  conv2d_backward_filter_version(conv_backward_filter_version(), ctx, g, x, dy, dw);
}

}  // namespace evo::EVO_GPU_NS
