// Tests of the convolutions, written once and run on every device (tests/op_test.h): each of a
// device's implementations (CPU: reference loops, im2col + SGEMM, direct, the per-shape default;
// emu and cuda:0: every kernel version of cuda/conv/) against tests/reference.h and finite
// differences, the ops table's choice and determinism, the geometry contract. Part of test_ops;
// not speed (bench/).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cuda/emu/runtime.h"
#include "evo/error.h"
#include "evo/ops.h"
#include "op_test.h"
#include "reference.h"
#include "src/cpu/conv.h"

using namespace evo;
using ref::describe;
using ref::geometry;
using test::conv_api;
using test::ConvApi;
using test::Floats;
using test::poisoned;

namespace {

// The shared shapes, the shapes of this device's own paths, and fresh random ones. Each path
// shape is tagged with the backend it exercises: on the CPU batches that split into several
// per-thread parts and both backward-data algorithms; in the kernels the split-K path (long
// reductions over few tiles) and both tile widths of version 3. A device runs only its own: the
// CPU's would double the emulator's time (which CI pays three times over under ASan), and the
// kernels' add nothing to the CPU's paths.
std::vector<ConvGeometry> conv_cases(Device device) {
  const std::pair<bool, ConvGeometry> own[] = {
      {false, geometry(3, 20, 20, 17, 32, 3, 3, 1)},
      {false, geometry(2, 32, 32, 8, 16, 3, 3, 1)},
      {false, geometry(5, 16, 16, 32, 32, 5, 5, 2)},
      // Stride 1 with >= 64 output channels: backward data by col2im instead of the flipped
      // forward (see kFlipBelowChannels in conv.cpp).
      {false, geometry(2, 9, 9, 17, 130, 3, 3, 1)},
      {false, geometry(1, 5, 7, 3, 64, 1, 3, 1)},
      {false, geometry(6, 8, 8, 64, 64, 3, 3, 1)},
      // The channel kernels' groups of padded images (conv_channels.cpp): small maps over several
      // groups with a partial last one (2x2 outputs: 32 images a group), and stride 4 on 28x28.
      {false, geometry(40, 4, 4, 14, 14, 3, 3, 2)},
      {false, geometry(9, 7, 7, 7, 14, 3, 3, 1)},
      {false, geometry(3, 28, 28, 7, 14, 3, 3, 4)},
      {true, geometry(2, 16, 16, 8, 4, 1, 1, 1)},
      {true, geometry(1, 2, 2, 130, 3, 7, 7, 1)},
      {true, geometry(3, 12, 12, 70, 90, 3, 3, 1)},
      {true, geometry(1, 9, 9, 5, 7, 1, 1, 4)},
      {true, geometry(2, 10, 6, 6, 5, 5, 3, 2)},
      // Evolved-net shapes at a small batch: several 128 x 128 tiles, split-K backward filter.
      {true, geometry(4, 16, 16, 32, 64, 3, 3, 1)},
      {true, geometry(8, 16, 16, 16, 16, 3, 3, 1)},
      {true, geometry(2, 32, 32, 16, 32, 5, 5, 2)},
      {true, geometry(4, 8, 8, 128, 128, 1, 3, 1)},
  };
  const bool kernels = device.is_gpu_like();
  std::vector<ConvGeometry> cases =
      kernels ? ref::conv_cases({}, test::rng(), 6, 12) : ref::conv_cases({}, test::rng(), 8, 14);
  for (const auto& [for_kernels, g] : own)
    if (for_kernels == kernels) cases.push_back(g);
  return cases;
}

// The three passes of one implementation, so that every implementation of a device shares a test.
using ConvPass =
    std::function<void(Context&, const ConvGeometry&, const float*, const float*, float*)>;
struct ConvImpl {
  std::string name;
  ConvPass forward, backward_data, backward_filter;
};

// CPU: the readable reference, both fast paths forced, and ops.h's per-shape choice between
// them. Kernels: every version of cuda/conv/N_*.cu (the ops table runs one of them).
std::vector<ConvImpl> conv_impls(Device device) {
  if (!device.is_gpu_like())
    return {
        {"reference", cpu::conv2d_forward_reference, cpu::conv2d_backward_data_reference,
         cpu::conv2d_backward_filter_reference},
        {"im2col+sgemm", cpu::conv2d_forward_gemm, cpu::conv2d_backward_data_gemm,
         cpu::conv2d_backward_filter_gemm},
        {"direct", cpu::conv2d_forward_direct, cpu::conv2d_backward_data_direct,
         cpu::conv2d_backward_filter_direct},
        {"channels", cpu::conv2d_forward_channels, cpu::conv2d_backward_data_channels,
         cpu::conv2d_backward_filter_channels},
        {"ops.h default", cpu::conv2d_forward, cpu::conv2d_backward_data,
         cpu::conv2d_backward_filter},
    };
  const ConvApi api = conv_api(device);
  std::vector<ConvImpl> impls;
  for (int v = 1; v <= kConvVersionCount; ++v) {
    using namespace std::placeholders;
    impls.push_back({"v" + std::to_string(v) + " " + api.name(v),
                     std::bind(api.forward, v, _1, _2, _3, _4, _5),
                     std::bind(api.backward_data, v, _1, _2, _3, _4, _5),
                     std::bind(api.backward_filter, v, _1, _2, _3, _4, _5)});
  }
  return impls;
}

// The CPU paths split work between OpenMP threads, so they run with one thread and with several;
// the kernels do not use OpenMP.
std::vector<int> thread_counts(Device device) {
  const int max_threads = omp_get_max_threads();
  if (device.is_gpu_like()) return {max_threads};
  return {1, std::max(2, max_threads)};
}

// Restores the OpenMP thread count a test changed.
struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

using ref::kConvRtol;
constexpr auto atol_for = ref::conv_atol;

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace

OP_TEST("conv2d forward and both backward passes match double-precision loops", "[conv]") {
  Context ctx(device, 1);
  const std::vector<ConvImpl> impls = conv_impls(device);
  for (const ConvGeometry& g : conv_cases(device)) {
    const std::vector<float> x = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
    const std::vector<float> w = test::random_vector(g.c_out * g.gemm_k());
    const std::vector<float> dy = test::random_vector(g.gemm_m() * g.c_out);
    const std::vector<double> y_ref = ref::conv2d_forward(g, x.data(), w.data());
    const std::vector<double> dx_ref = ref::conv2d_backward_data(g, dy.data(), w.data());
    const std::vector<double> dw_ref = ref::conv2d_backward_filter(g, x.data(), dy.data());
    Floats xd(ctx, x), wd(ctx, w), dyd(ctx, dy);
    for (const ConvImpl& impl : impls)
      for (int threads : thread_counts(device)) {
        const std::string what = device.str() + " " + impl.name + " " + describe(g) + " threads " +
                                 std::to_string(threads);
        INFO(what);
        ThreadCount scoped(threads);
        Floats y = poisoned(ctx, y_ref.size()), dx = poisoned(ctx, dx_ref.size()),
               dw = poisoned(ctx, dw_ref.size());
        impl.forward(ctx, g, xd.get(), wd.get(), y.get());
        CHECK(test::all_close(y.download(), y_ref, atol_for(g.gemm_k()), kConvRtol, what + " y"));
        impl.backward_data(ctx, g, dyd.get(), wd.get(), dx.get());
        CHECK(test::all_close(dx.download(), dx_ref, atol_for(int64_t(g.kh) * g.kw * g.c_out),
                              kConvRtol, what + " dx"));
        impl.backward_filter(ctx, g, xd.get(), dyd.get(), dw.get());
        CHECK(
            test::all_close(dw.download(), dw_ref, atol_for(g.gemm_m()), kConvRtol, what + " dw"));
      }
    CHECK(ctx.arena().in_use() == 0);  // workspaces (im2col, split-K) go back to the arena
  }
}

// TF32 as a tensor core rounds its inputs (cuda/emu/wmma.h): to nearest, 10-bit mantissa, ties
// away from zero. Written here from the format's definition, independently of the emulator.
float round_tf32(float v) {
  if (!std::isfinite(v) || v == 0) return v;
  int e = 0;
  const double m = std::frexp(double(v), &e);       // |m| in [0.5, 1): 11 significant bits
  const double scaled = std::ldexp(std::fabs(m), 11);  // [1024, 2048)
  const double r = std::floor(scaled + 0.5);           // ties away from zero
  return float(std::copysign(std::ldexp(r, e - 11), double(v)));
}

std::vector<float> rounded_tf32(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = round_tf32(v[i]);
  return out;
}

OP_TEST("conv version 4 (TF32 tensor cores) computes the convolution of TF32-rounded inputs",
        "[conv][tf32]") {
  if (!device.is_gpu_like()) return;  // a kernel version: the emulator and GPUs only
  Context ctx(device, 4);
  const ConvApi api = conv_api(device);
  CHECK(std::string(api.name(kConvTensorCoreVersion)) == "tensor_core_tf32");
  // Evolved-net shapes (few channels, strides 2 and 4, 1x1 maps), a 64-channel 3x3 layer, a
  // split-K backward filter, odd sizes that leave partial 32 x 32 tiles.
  const ConvGeometry cases[] = {
      geometry(3, 28, 28, 1, 7, 3, 3, 1),  geometry(4, 7, 7, 16, 16, 3, 3, 1),
      geometry(2, 28, 28, 7, 14, 3, 3, 4), geometry(5, 4, 4, 14, 14, 3, 3, 2),
      geometry(2, 8, 8, 64, 64, 3, 3, 1),  geometry(2, 10, 6, 6, 5, 5, 3, 2),
      geometry(1, 1, 1, 33, 9, 1, 1, 1),   geometry(8, 16, 16, 16, 16, 3, 3, 1),
  };
  for (const ConvGeometry& g : cases) {
    INFO(device.str() << " " << describe(g));
    const std::vector<float> x = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
    const std::vector<float> w = test::random_vector(g.c_out * g.gemm_k());
    const std::vector<float> dy = test::random_vector(g.gemm_m() * g.c_out);
    Floats xd(ctx, x), wd(ctx, w), dyd(ctx, dy);
    Floats y = poisoned(ctx, size_t(g.gemm_m() * g.c_out)),
           dx = poisoned(ctx, x.size()), dw = poisoned(ctx, w.size());
    api.forward(kConvTensorCoreVersion, ctx, g, xd.get(), wd.get(), y.get());
    api.backward_data(kConvTensorCoreVersion, ctx, g, dyd.get(), wd.get(), dx.get());
    api.backward_filter(kConvTensorCoreVersion, ctx, g, xd.get(), dyd.get(), dw.get());
    const std::vector<float> xr = rounded_tf32(x), wr = rounded_tf32(w), dyr = rounded_tf32(dy);
    auto abs_of = [](std::vector<float> v) {
      for (float& e : v) e = std::fabs(e);
      return v;
    };
    const std::vector<float> xa = abs_of(x), wa = abs_of(w), dya = abs_of(dy);
    struct Pass {
      const char* name;
      std::vector<float> got;
      std::vector<double> exact, of_rounded, magnitude;  // magnitude: sum of |a||b| per output
      int64_t terms;
    };
    const Pass passes[] = {
        {"y", y.download(), ref::conv2d_forward(g, x.data(), w.data()),
         ref::conv2d_forward(g, xr.data(), wr.data()), ref::conv2d_forward(g, xa.data(), wa.data()),
         g.gemm_k()},
        {"dx", dx.download(), ref::conv2d_backward_data(g, dy.data(), w.data()),
         ref::conv2d_backward_data(g, dyr.data(), wr.data()),
         ref::conv2d_backward_data(g, dya.data(), wa.data()), int64_t(g.kh) * g.kw * g.c_out},
        {"dw", dw.download(), ref::conv2d_backward_filter(g, x.data(), dy.data()),
         ref::conv2d_backward_filter(g, xr.data(), dyr.data()),
         ref::conv2d_backward_filter(g, xa.data(), dya.data()), g.gemm_m()},
    };
    int beyond_fp32 = 0;
    for (const Pass& p : passes) {
      INFO(p.name);
      REQUIRE(p.got.size() == p.exact.size());
      for (std::size_t i = 0; i < p.got.size(); ++i) {
        // Against the exact convolution: each input's relative rounding error is at most 2^-11,
        // so each product's at most ~2^-10, hence |error| <= 2^-10 * sum |a||b| (plus the FP32
        // accumulation's terms * 2^-24 * sum |a||b|, well inside the margin of 1.5).
        const double bound = 1.5 * std::ldexp(p.magnitude[i], -10) + 1e-30;
        if (!(std::fabs(p.got[i] - p.exact[i]) <= bound)) {
          FAIL_CHECK(p.name << "[" << i << "] = " << p.got[i] << ", exact " << p.exact[i]
                            << ", TF32 bound " << bound);
          break;
        }
        // Against the convolution of the TF32-rounded inputs (products exact in FP32): only the
        // FP32 sums differ, terms * 2^-24 * sum |a||b| at most.
        const double fp32 = double(p.terms + 2) * std::ldexp(p.magnitude[i], -24) + 1e-30;
        if (!(std::fabs(p.got[i] - p.of_rounded[i]) <= fp32)) {
          FAIL_CHECK(p.name << "[" << i << "] = " << p.got[i] << ", of TF32 inputs "
                            << p.of_rounded[i] << ", FP32 bound " << fp32);
          break;
        }
        beyond_fp32 += std::fabs(p.got[i] - p.exact[i]) >
                       double(p.terms + 2) * std::ldexp(p.magnitude[i], -24);
      }
    }
    // The inputs really were rounded: some outputs are off the exact ones by more than FP32
    // arithmetic could be (an FP32 kernel mislabelled as version 4 fails here).
    CHECK(beyond_fp32 > 0);
  }
  // Through the ops table, as EVO_CONV_VERSION=4 selects it.
  const ConvGeometry g = geometry(2, 6, 6, 8, 8, 3, 3, 1);
  const std::vector<float> x = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
  const std::vector<float> w = test::random_vector(g.c_out * g.gemm_k());
  Floats xd(ctx, x), wd(ctx, w), y4 = poisoned(ctx, size_t(g.gemm_m() * g.c_out)),
                                 yt = poisoned(ctx, size_t(g.gemm_m() * g.c_out));
  api.forward(kConvTensorCoreVersion, ctx, g, xd.get(), wd.get(), y4.get());
  api.set_forward(kConvTensorCoreVersion);
  ops(device.kind).conv2d_forward(ctx, g, xd.get(), wd.get(), yt.get());
  api.set_forward(0);
  CHECK(y4.download() == yt.download());
}

OP_TEST("conv2d backward passes match finite differences of the double forward", "[conv]") {
  Context ctx(device, 2);
  const ConvGeometry cases[] = {
      geometry(1, 5, 5, 3, 2, 3, 3, 1), geometry(2, 5, 4, 2, 3, 1, 3, 2),
      geometry(1, 7, 7, 1, 2, 7, 7, 4), geometry(1, 5, 6, 2, 2, 5, 1, 1),
      geometry(2, 4, 4, 3, 2, 1, 1, 1), geometry(1, 6, 6, 2, 3, 3, 3, 2),
  };
  for (const ConvGeometry& g : cases) {
    INFO(device.str() << " " << describe(g));
    const std::vector<float> xf = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
    const std::vector<float> wf = test::random_vector(g.c_out * g.gemm_k());
    const std::vector<float> dyf = test::random_vector(g.gemm_m() * g.c_out);
    const std::vector<double> x = test::to_double(xf), w = test::to_double(wf);
    // loss = sum(conv(x, w) * dy): its gradients are exactly what the backward passes compute.
    const std::vector<double> dx_fd = ref::numeric_gradient(
        x,
        [&](const std::vector<double>& v) {
          return ref::dot(ref::conv2d_forward(g, v.data(), w.data()), dyf);
        },
        1e-3);
    const std::vector<double> dw_fd = ref::numeric_gradient(
        w,
        [&](const std::vector<double>& v) {
          return ref::dot(ref::conv2d_forward(g, x.data(), v.data()), dyf);
        },
        1e-3);
    // The double reference backward is exact up to rounding...
    CHECK(max_abs_diff(ref::conv2d_backward_data(g, dyf.data(), wf.data()), dx_fd) < 1e-8);
    CHECK(max_abs_diff(ref::conv2d_backward_filter(g, xf.data(), dyf.data()), dw_fd) < 1e-8);
    // ...and every float backward agrees with it to float accuracy.
    Floats xd(ctx, xf), wd(ctx, wf), dyd(ctx, dyf);
    for (const ConvImpl& impl : conv_impls(device)) {
      INFO(impl.name);
      Floats dx = poisoned(ctx, dx_fd.size()), dw = poisoned(ctx, dw_fd.size());
      impl.backward_data(ctx, g, dyd.get(), wd.get(), dx.get());
      impl.backward_filter(ctx, g, xd.get(), dyd.get(), dw.get());
      CHECK(test::all_close(dx.download(), dx_fd, 1e-5, 1e-4, "dx vs finite differences"));
      CHECK(test::all_close(dw.download(), dw_fd, 1e-5, 1e-4, "dw vs finite differences"));
    }
  }
}

OP_TEST("conv2d: the ops table gives the same bits run after run, with the selected version",
        "[conv][sanitize]") {
  // Split-K backward filter in both GEMM kernel versions (4 output channels, 2,048-pixel
  // reductions); four phases in backward data; on the CPU also a shape of its im2col + SGEMM path
  // (too slow for the emulator, and the kernels have no such path).
  std::vector<ConvGeometry> shapes = {geometry(8, 16, 16, 8, 4, 3, 3, 1),
                                      geometry(4, 16, 16, 8, 4, 3, 3, 2)};
  if (!device.is_gpu_like()) shapes.push_back(geometry(4, 16, 16, 24, 40, 3, 3, 1));
  for (const ConvGeometry& g : shapes) {
    INFO(device.str() << " " << describe(g));
    Context ctx(device, 3);
    const OpTable& table = ops(device.kind);
    const std::vector<float> x = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
    const std::vector<float> w = test::random_vector(g.c_out * g.gemm_k());
    const std::vector<float> dy = test::random_vector(g.gemm_m() * g.c_out);
    Floats xd(ctx, x), wd(ctx, w), dyd(ctx, dy);
    Floats y(ctx, dy.size()), dx(ctx, x.size()), dw(ctx, w.size());
    auto run_table = [&] {
      table.conv2d_forward(ctx, g, xd.get(), wd.get(), y.get());
      table.conv2d_backward_data(ctx, g, dyd.get(), wd.get(), dx.get());
      table.conv2d_backward_filter(ctx, g, xd.get(), dyd.get(), dw.get());
      return std::vector<std::vector<float>>{y.download(), dx.download(), dw.download()};
    };
    // Same inputs, same bits: no atomics anywhere, and splits that depend on the shape alone.
    const auto first = run_table();
    CHECK(run_table() == first);
    // The workspace comes from the context's arena and goes back to it.
    CHECK(ctx.arena().in_use() == 0);
    if (!device.is_gpu_like()) continue;

    const ConvApi api = conv_api(device);
    auto run_version = [&](int v) {
      api.forward(v, ctx, g, xd.get(), wd.get(), y.get());
      api.backward_data(v, ctx, g, dyd.get(), wd.get(), dx.get());
      api.backward_filter(v, ctx, g, xd.get(), dyd.get(), dw.get());
      return std::vector<std::vector<float>>{y.download(), dx.download(), dw.download()};
    };
    CHECK(first == run_version(kConvDefaultVersion));
    if (device.kind == DeviceKind::EMU && g.stride == 1)
      for (int v : {2, 3}) {
        // The long reduction takes the split-K path: the GEMM, then the fixed-order sum.
        INFO("version " << v);
        emu::reset_emu_stats();
        api.backward_filter(v, ctx, g, xd.get(), dyd.get(), dw.get());
        CHECK(emu::emu_stats().kernels == 2);
      }
    for (int v = 1; v <= kConvVersionCount; ++v) {
      INFO("version " << v);
      api.set_forward(v);
      api.set_backward_data(v);
      api.set_backward_filter(v);
      CHECK(run_table() == run_version(v));
    }
    api.set_forward(0);
    api.set_backward_data(0);
    api.set_backward_filter(0);
    CHECK(run_table() == first);
    CHECK_THROWS_AS(api.set_forward(kConvTensorCoreVersion + 1), Error);
    CHECK_THROWS_AS(api.forward(0, ctx, g, xd.get(), wd.get(), y.get()), Error);
  }
}

OP_TEST("conv2d rejects geometries outside ops.h's contract", "[conv]") {
  Context ctx(device, 4);
  const OpTable& table = ops(device.kind);
  // Refused before any work, so the buffers' contents and sizes never matter.
  Floats buf(ctx, std::vector<float>(4096, 1.f));
  auto forward = [&](ConvGeometry g) {
    table.conv2d_forward(ctx, g, buf.get(), buf.get(), buf.get());
  };
  INFO(device.str());
  CHECK_THROWS_WITH(forward(geometry(1, 4, 4, 2, 2, 2, 3, 1)), Catch::Contains("kh=2 is not odd"));
  CHECK_THROWS_AS(forward(geometry(1, 4, 4, 2, 2, 3, 4, 1)), Error);  // even kw
  CHECK_THROWS_AS(forward(geometry(1, 4, 4, 2, 2, 3, 3, 3)), Error);  // stride not 2^s
  CHECK_THROWS_AS(forward(geometry(1, 4, 4, 0, 2, 3, 3, 1)), Error);  // no channels
  CHECK_THROWS_WITH(forward(geometry(1, 4, 4, 2, 2, 3, 3, 6)),
                    Catch::Contains("stride=6 is not a power of two"));
  // The backward passes check too.
  CHECK_THROWS_AS(table.conv2d_backward_data(ctx, geometry(1, 4, 4, 2, 2, 2, 3, 1), buf.get(),
                                             buf.get(), buf.get()),
                  Error);
  CHECK_THROWS_AS(table.conv2d_backward_filter(ctx, geometry(1, 4, 4, 2, 2, 3, 3, 3), buf.get(),
                                               buf.get(), buf.get()),
                  Error);
}
