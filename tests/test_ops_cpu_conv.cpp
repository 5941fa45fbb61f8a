// Tests of the CPU convolutions (reference loops and im2col + SGEMM) against tests/reference.h,
// and of their backward passes by finite differences. Not speed: bench/ measures that.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "evo/error.h"
#include "evo/ops.h"
#include "reference.h"
#include "src/cpu/conv.h"
#include "support.h"

using namespace evo;

namespace {

using ref::describe;
using ref::geometry;

// The shared shapes, then the fast path's own: batches that split into several per-thread parts,
// both backward-data algorithms; then fresh random ones each run.
std::vector<ConvGeometry> conv_cases() {
  return ref::conv_cases(
      {
          geometry(3, 20, 20, 17, 32, 3, 3, 1),
          geometry(2, 32, 32, 8, 16, 3, 3, 1),
          geometry(5, 16, 16, 32, 32, 5, 5, 2),
          // Stride 1 with >= 64 output channels: backward data by col2im instead of the flipped
          // forward (see kFlipBelowChannels in conv.cpp).
          geometry(2, 9, 9, 17, 130, 3, 3, 1),
          geometry(1, 5, 7, 3, 64, 1, 3, 1),
          geometry(6, 8, 8, 64, 64, 3, 3, 1),
      },
      test::rng(), 8, 14);
}

// The three passes of one implementation, so the reference loops and the fast path share a test.
struct ConvImpl {
  const char* name;
  decltype(&cpu::conv2d_forward) forward;
  decltype(&cpu::conv2d_backward_data) backward_data;
  decltype(&cpu::conv2d_backward_filter) backward_filter;
};
const ConvImpl kImpls[] = {
    {"reference", cpu::conv2d_forward_reference, cpu::conv2d_backward_data_reference,
     cpu::conv2d_backward_filter_reference},
    {"im2col+sgemm", cpu::conv2d_forward_gemm, cpu::conv2d_backward_data_gemm,
     cpu::conv2d_backward_filter_gemm},
    {"direct", cpu::conv2d_forward_direct, cpu::conv2d_backward_data_direct,
     cpu::conv2d_backward_filter_direct},
    {"ops.h default", cpu::conv2d_forward, cpu::conv2d_backward_data, cpu::conv2d_backward_filter},
};

using ref::kConvRtol;
constexpr auto atol_for = ref::conv_atol;

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Restores the OpenMP thread count a test changed.
struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

TEST_CASE("CPU conv2d forward and both backward passes match double-precision loops", "[conv]") {
  Context ctx(Device::cpu());
  const int max_threads = omp_get_max_threads();
  for (const ConvGeometry& g : conv_cases()) {
    const std::vector<float> x = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
    const std::vector<float> w = test::random_vector(g.c_out * g.gemm_k());
    const std::vector<float> dy = test::random_vector(g.gemm_m() * g.c_out);
    const std::vector<double> y_ref = ref::conv2d_forward(g, x.data(), w.data());
    const std::vector<double> dx_ref = ref::conv2d_backward_data(g, dy.data(), w.data());
    const std::vector<double> dw_ref = ref::conv2d_backward_filter(g, x.data(), dy.data());
    for (const ConvImpl& impl : kImpls)
      for (int threads : {1, std::max(2, max_threads)}) {
        const std::string what = std::string(impl.name)
                                     .append(" ")
                                     .append(describe(g))
                                     .append(" threads ")
                                     .append(std::to_string(threads));
        INFO(what);
        ThreadCount scoped(threads);
        // NaN poison: all_close fails on any element the op did not write.
        std::vector<float> y(y_ref.size(), NAN), dx(dx_ref.size(), NAN), dw(dw_ref.size(), NAN);
        impl.forward(ctx, g, x.data(), w.data(), y.data());
        CHECK(test::all_close(y, y_ref, atol_for(g.gemm_k()), kConvRtol, what + " y"));
        impl.backward_data(ctx, g, dy.data(), w.data(), dx.data());
        CHECK(test::all_close(dx, dx_ref, atol_for(int64_t(g.kh) * g.kw * g.c_out), kConvRtol,
                              what + " dx"));
        impl.backward_filter(ctx, g, x.data(), dy.data(), dw.data());
        CHECK(test::all_close(dw, dw_ref, atol_for(g.gemm_m()), kConvRtol, what + " dw"));
      }
  }
}

TEST_CASE("CPU conv2d backward passes match finite differences of the double forward", "[conv]") {
  Context ctx(Device::cpu());
  const ConvGeometry cases[] = {
      geometry(1, 5, 5, 3, 2, 3, 3, 1), geometry(2, 5, 4, 2, 3, 1, 3, 2),
      geometry(1, 7, 7, 1, 2, 7, 7, 4), geometry(1, 5, 6, 2, 2, 5, 1, 1),
      geometry(2, 4, 4, 3, 2, 1, 1, 1), geometry(1, 6, 6, 2, 3, 3, 3, 2),
  };
  for (const ConvGeometry& g : cases) {
    INFO(describe(g));
    const std::vector<float> xf = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
    const std::vector<float> wf = test::random_vector(g.c_out * g.gemm_k());
    const std::vector<float> dyf = test::random_vector(g.gemm_m() * g.c_out);
    const std::vector<double> x(xf.begin(), xf.end()), w(wf.begin(), wf.end());
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
    for (const ConvImpl& impl : kImpls) {
      INFO(impl.name);
      std::vector<float> dx(dx_fd.size(), NAN), dw(dw_fd.size(), NAN);
      impl.backward_data(ctx, g, dyf.data(), wf.data(), dx.data());
      impl.backward_filter(ctx, g, xf.data(), dyf.data(), dw.data());
      CHECK(test::all_close(dx, dx_fd, 1e-5, 1e-4, "dx vs finite differences"));
      CHECK(test::all_close(dw, dw_fd, 1e-5, 1e-4, "dw vs finite differences"));
    }
  }
}

TEST_CASE("CPU conv2d fast path gives the same bits run after run", "[conv]") {
  Context ctx(Device::cpu());
  const ConvGeometry g = geometry(4, 16, 16, 24, 40, 3, 3, 1);
  const std::vector<float> x = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
  const std::vector<float> w = test::random_vector(g.c_out * g.gemm_k());
  const std::vector<float> dy = test::random_vector(g.gemm_m() * g.c_out);
  auto run = [&] {
    std::vector<float> y(g.gemm_m() * g.c_out), dx(x.size()), dw(w.size());
    cpu::conv2d_forward(ctx, g, x.data(), w.data(), y.data());
    cpu::conv2d_backward_data(ctx, g, dy.data(), w.data(), dx.data());
    cpu::conv2d_backward_filter(ctx, g, x.data(), dy.data(), dw.data());
    return std::vector<std::vector<float>>{y, dx, dw};
  };
  const auto first = run();
  CHECK(run() == first);
  // The workspace comes from the context's arena and goes back to it.
  CHECK(ctx.arena().in_use() == 0);
}

TEST_CASE("CPU conv2d rejects geometries outside ops.h's contract", "[conv]") {
  Context ctx(Device::cpu());
  std::vector<float> buf(4096, 1.f);
  auto forward = [&](ConvGeometry g) {
    cpu::conv2d_forward(ctx, g, buf.data(), buf.data(), buf.data());
  };
  CHECK_THROWS_AS(forward(geometry(1, 4, 4, 2, 2, 2, 3, 1)), Error);  // even kh
  CHECK_THROWS_AS(forward(geometry(1, 4, 4, 2, 2, 3, 4, 1)), Error);  // even kw
  CHECK_THROWS_AS(forward(geometry(1, 4, 4, 2, 2, 3, 3, 3)), Error);  // stride not 2^s
  CHECK_THROWS_AS(forward(geometry(1, 4, 4, 0, 2, 3, 3, 1)), Error);  // no channels
  CHECK_THROWS_WITH(forward(geometry(1, 4, 4, 2, 2, 3, 3, 6)),
                    Catch::Contains("stride=6 is not a power of two"));
}
