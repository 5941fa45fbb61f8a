// Tests of every CUDA op and convolution kernel version, on the emulator and on cuda:0 when there
// is a GPU, against tests/reference.h and the CPU backend. Not speed, not the emulator itself.
//
//   test_ops_gpu "[gpu]"                           # what a GPU machine runs (emu, then cuda:0)
//   EVO_GPU_TEST_DEVICES=cuda test_ops_gpu "[gpu]"   # the GPU only
//   EVO_GPU_TEST_DEVICES=cuda compute-sanitizer --tool racecheck test_ops_gpu "[sanitize]"
//
// "[sanitize]" marks short tests that still launch every kernel that uses shared memory. Shapes
// are small enough for the emulator (the whole file takes seconds there).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/conv/conv.h"
#include "cuda/emu/runtime.h"
#include "evo/context.h"
#include "evo/error.h"
#include "evo/ops.h"
#include "reference.h"
#include "support.h"

using namespace evo;

namespace {

// emu always, cuda:0 when this build has CUDA and the machine a GPU; EVO_GPU_TEST_DEVICES=emu or
// =cuda keeps one of them.
std::vector<Device> gpu_devices() {
  std::vector<Device> devices;
  const char* only = std::getenv("EVO_GPU_TEST_DEVICES");
  const std::string keep = only ? only : "";
  if (keep.empty() || keep == "emu") devices.push_back(Device::emu());
#if defined(EVO_HAVE_CUDA)
  if ((keep.empty() || keep == "cuda") && discover_gpus().count > 0)
    devices.push_back(Device::cuda(0));
#endif
  return devices;
}

// A device buffer of the context's device. Copies go through the context's own stream (the
// worker stream does not wait for the null stream), and reads synchronise it first.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer(Context& ctx, std::size_t n) : ctx_(ctx), n_(n) {
    ptr_ = static_cast<T*>(ctx.backend().allocate(bytes(), ctx.device().ordinal));
  }
  DeviceBuffer(Context& ctx, const std::vector<T>& host) : DeviceBuffer(ctx, host.size()) {
    upload(host);
  }
  ~DeviceBuffer() { ctx_.backend().deallocate(ptr_, ctx_.device().ordinal); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    ctx_.backend().copy(ptr_, host.data(), bytes(), CopyKind::HostToDevice, ctx_.stream());
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    ctx_.backend().copy(host.data(), ptr_, bytes(), CopyKind::DeviceToHost, ctx_.stream());
    ctx_.synchronize();
    return host;
  }

 private:
  std::size_t bytes() const { return n_ * sizeof(T) > 0 ? n_ * sizeof(T) : 1; }
  Context& ctx_;
  std::size_t n_;
  T* ptr_ = nullptr;
};

using Floats = DeviceBuffer<float>;

// An output buffer full of NaN: all_close fails on every element the op does not write.
std::unique_ptr<Floats> poisoned(Context& ctx, std::size_t n) {
  auto b = std::make_unique<Floats>(ctx, n);
  b->upload(std::vector<float>(n, NAN));
  return b;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

int random_int(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(test::rng());
}

// The explicit-version convolution entry points of one GPU namespace.
struct ConvApi {
  decltype(&emu::conv2d_forward_version) forward;
  decltype(&emu::conv2d_backward_data_version) backward_data;
  decltype(&emu::conv2d_backward_filter_version) backward_filter;
  decltype(&emu::set_conv_forward_version) set_forward;
  decltype(&emu::set_conv_backward_data_version) set_backward_data;
  decltype(&emu::set_conv_backward_filter_version) set_backward_filter;
  decltype(&emu::conv_version_name) name;
};
ConvApi conv_api(Device device) {
#if defined(EVO_HAVE_CUDA)
  if (device.kind == DeviceKind::CUDA)
    return {cuda::conv2d_forward_version,
            cuda::conv2d_backward_data_version,
            cuda::conv2d_backward_filter_version,
            cuda::set_conv_forward_version,
            cuda::set_conv_backward_data_version,
            cuda::set_conv_backward_filter_version,
            cuda::conv_version_name};
#endif
  REQUIRE(device.kind == DeviceKind::EMU);
  return {emu::conv2d_forward_version,
          emu::conv2d_backward_data_version,
          emu::conv2d_backward_filter_version,
          emu::set_conv_forward_version,
          emu::set_conv_backward_data_version,
          emu::set_conv_backward_filter_version,
          emu::conv_version_name};
}

// ---- convolution shapes ----------------------------------------------------------------------

using ref::describe;
using ref::geometry;

// The shared shapes, then the shapes of the CUDA kernels' own paths: the split-K path (long
// reductions over few tiles) and both tile widths of version 3; then fresh random ones. Small
// enough for the emulator: the whole list runs in a few seconds there.
std::vector<ConvGeometry> conv_cases() {
  return ref::conv_cases(
      {
          geometry(2, 16, 16, 8, 4, 1, 1, 1),
          geometry(1, 2, 2, 130, 3, 7, 7, 1),
          geometry(3, 12, 12, 70, 90, 3, 3, 1),
          geometry(1, 9, 9, 5, 7, 1, 1, 4),
          geometry(2, 10, 6, 6, 5, 5, 3, 2),
          // Evolved-net shapes at a small batch: several 128 x 128 tiles, split-K backward filter.
          geometry(4, 16, 16, 32, 64, 3, 3, 1),
          geometry(8, 16, 16, 16, 16, 3, 3, 1),
          geometry(2, 32, 32, 16, 32, 5, 5, 2),
          geometry(4, 8, 8, 128, 128, 1, 3, 1),
      },
      test::rng(), 6, 12);
}

using ref::kConvRtol;
constexpr auto atol_for = ref::conv_atol;

}  // namespace

// ---- convolution -------------------------------------------------------------------------------

TEST_CASE("GPU conv2d: every kernel version, all three passes, match double-precision loops",
          "[gpu][conv]") {
  const std::vector<ConvGeometry> cases = conv_cases();
  for (Device device : gpu_devices()) {
    Context ctx(device, 1);
    const ConvApi api = conv_api(device);
    for (const ConvGeometry& g : cases) {
      const std::vector<float> x = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
      const std::vector<float> w = test::random_vector(g.c_out * g.gemm_k());
      const std::vector<float> dy = test::random_vector(g.gemm_m() * g.c_out);
      const std::vector<double> y_ref = ref::conv2d_forward(g, x.data(), w.data());
      const std::vector<double> dx_ref = ref::conv2d_backward_data(g, dy.data(), w.data());
      const std::vector<double> dw_ref = ref::conv2d_backward_filter(g, x.data(), dy.data());
      Floats xd(ctx, x), wd(ctx, w), dyd(ctx, dy);
      for (int version = 1; version <= kConvVersionCount; ++version) {
        const std::string what = device.str() + " v" + std::to_string(version) + " " +
                                 api.name(version) + " " + describe(g);
        INFO(what);
        auto y = poisoned(ctx, y_ref.size()), dx = poisoned(ctx, dx_ref.size()),
             dw = poisoned(ctx, dw_ref.size());
        api.forward(version, ctx, g, xd.get(), wd.get(), y->get());
        CHECK(test::all_close(y->download(), y_ref, atol_for(g.gemm_k()), kConvRtol, what + " y"));
        api.backward_data(version, ctx, g, dyd.get(), wd.get(), dx->get());
        CHECK(test::all_close(dx->download(), dx_ref, atol_for(int64_t(g.kh) * g.kw * g.c_out),
                              kConvRtol, what + " dx"));
        api.backward_filter(version, ctx, g, xd.get(), dyd.get(), dw->get());
        CHECK(
            test::all_close(dw->download(), dw_ref, atol_for(g.gemm_m()), kConvRtol, what + " dw"));
      }
      CHECK(ctx.arena().in_use() == 0);  // split-K workspaces go back to the arena
    }
  }
}

TEST_CASE("GPU conv2d backward passes match finite differences of the double forward",
          "[gpu][conv]") {
  const ConvGeometry cases[] = {geometry(1, 5, 5, 3, 2, 3, 3, 1), geometry(2, 5, 4, 2, 3, 1, 3, 2),
                                geometry(1, 7, 7, 1, 2, 7, 7, 4), geometry(1, 6, 6, 2, 3, 3, 3, 2)};
  for (Device device : gpu_devices()) {
    Context ctx(device, 2);
    const ConvApi api = conv_api(device);
    for (const ConvGeometry& g : cases) {
      const std::vector<float> xf = test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in);
      const std::vector<float> wf = test::random_vector(g.c_out * g.gemm_k());
      const std::vector<float> dyf = test::random_vector(g.gemm_m() * g.c_out);
      const std::vector<double> x = to_double(xf), w = to_double(wf);
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
      Floats xd(ctx, xf), wd(ctx, wf), dyd(ctx, dyf);
      for (int version = 1; version <= kConvVersionCount; ++version) {
        INFO(device.str() << " v" << version << " " << describe(g));
        auto dx = poisoned(ctx, dx_fd.size()), dw = poisoned(ctx, dw_fd.size());
        api.backward_data(version, ctx, g, dyd.get(), wd.get(), dx->get());
        api.backward_filter(version, ctx, g, xd.get(), dyd.get(), dw->get());
        CHECK(test::all_close(dx->download(), dx_fd, 1e-5, 1e-4, "dx vs finite differences"));
        CHECK(test::all_close(dw->download(), dw_fd, 1e-5, 1e-4, "dw vs finite differences"));
      }
    }
  }
}

TEST_CASE("GPU conv2d: the ops table runs the selected version, deterministically",
          "[gpu][conv][sanitize]") {
  // Split-K backward filter in both GEMM versions (4 output channels, 2,048-pixel reductions);
  // four phases in backward data.
  for (const ConvGeometry& g :
       {geometry(8, 16, 16, 8, 4, 3, 3, 1), geometry(4, 16, 16, 8, 4, 3, 3, 2)})
    for (Device device : gpu_devices()) {
      INFO(device.str() << " " << describe(g));
      Context ctx(device, 3);
      const ConvApi api = conv_api(device);
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
      auto run_version = [&](int v) {
        api.forward(v, ctx, g, xd.get(), wd.get(), y.get());
        api.backward_data(v, ctx, g, dyd.get(), wd.get(), dx.get());
        api.backward_filter(v, ctx, g, xd.get(), dyd.get(), dw.get());
        return std::vector<std::vector<float>>{y.download(), dx.download(), dw.download()};
      };
      // Same inputs, same bits: no atomics anywhere, and a split count that depends on the shape.
      const auto first = run_table();
      CHECK(run_table() == first);
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
      CHECK_THROWS_AS(api.set_forward(kConvVersionCount + 1), Error);
      CHECK_THROWS_AS(api.forward(0, ctx, g, xd.get(), wd.get(), y.get()), Error);
      // Geometries outside ops.h's contract are refused before any launch.
      ConvGeometry bad = g;
      bad.kh = 2;
      CHECK_THROWS_WITH(table.conv2d_forward(ctx, bad, xd.get(), wd.get(), y.get()),
                        Catch::Contains("kh=2 is not odd"));
      bad = g;
      bad.stride = 3;
      CHECK_THROWS_AS(table.conv2d_backward_filter(ctx, bad, xd.get(), dyd.get(), dw.get()), Error);
    }
}

// ---- batch norm ------------------------------------------------------------------------------

TEST_CASE("GPU batch norm forward (training and inference) and backward match the CPU",
          "[gpu][batchnorm][sanitize]") {
  Context cpu(Device::cpu());
  // (rows, channels): odd sizes, 1/3/17/130 channels, rows spanning several row blocks.
  const std::pair<int64_t, int> shapes[] = {{2 * 5 * 5, 17}, {130, 3},   {7, 130}, {50 * 7 * 7, 1},
                                            {3 * 9 * 9, 64}, {20000, 5}, {1, 3},   {2, 33}};
  for (Device device : gpu_devices()) {
    Context ctx(device, 4);
    for (auto [m, c] : shapes)
      for (bool relu : {false, true}) {
        INFO(device.str() << " m " << m << " c " << c << " relu " << relu);
        // A mean far from zero checks that the variance does not cancel away.
        std::vector<float> x = test::random_vector(m * c, -2.f, 2.f);
        for (int64_t r = 0; r < m; ++r)
          for (int ch = 0; ch < c; ++ch) x[r * c + ch] += float(ch % 5) * 3.f;
        const std::vector<float> gamma = test::random_vector(c, 0.5f, 1.5f);
        const std::vector<float> beta = test::random_vector(c);
        const std::vector<float> rm0 = test::random_vector(c),
                                 rv0 = test::random_vector(c, 0.5f, 2.f);
        const std::vector<float> dy = test::random_vector(m * c);

        std::vector<float> y_cpu(m * c), mean_cpu(c), invstd_cpu(c), rm_cpu = rm0, rv_cpu = rv0;
        cpu::batchnorm_forward_train(cpu, m, c, x.data(), gamma.data(), beta.data(), relu,
                                     y_cpu.data(), mean_cpu.data(), invstd_cpu.data(),
                                     rm_cpu.data(), rv_cpu.data());
        Floats xd(ctx, x), gd(ctx, gamma), bd(ctx, beta), rm(ctx, rm0), rv(ctx, rv0), dyd(ctx, dy);
        auto y = poisoned(ctx, m * c), mean = poisoned(ctx, c), invstd = poisoned(ctx, c);
        ops(device.kind)
            .batchnorm_forward_train(ctx, m, c, xd.get(), gd.get(), bd.get(), relu, y->get(),
                                     mean->get(), invstd->get(), rm.get(), rv.get());
        const std::vector<float> y_gpu = y->download();
        const ref::BatchNormTrain r = ref::batchnorm_forward_train(
            m, c, x.data(), gamma.data(), beta.data(), relu, rm0.data(), rv0.data());
        // Any float implementation rounds the mean (|mean| up to 12 here) to ~6e-8 relative, and
        // y = (x - mean) * gamma * invstd amplifies that by gamma * invstd; backward by another
        // invstd. Tiny batches (m = 2 with two nearly equal rows: invstd up to 1/sqrt(eps) = 32)
        // make that large, so the tolerances carry each shape's own amplification.
        double amp_y = 0, amp_dx = 0;
        for (int ch = 0; ch < c; ++ch) {
          const double a = std::fabs(r.mean[ch]) * gamma[ch] * r.invstd[ch];
          amp_y = std::max(amp_y, a);
          amp_dx = std::max(amp_dx, a * r.invstd[ch]);
        }
        const double atol_y = 1e-5 + 2.4e-7 * amp_y, atol_dx = 1e-5 + 2.4e-7 * amp_dx;
        CHECK(test::all_close(y_gpu, r.y, atol_y, 1e-5, "y"));
        // The CPU folds mean and beta into one shift (x * scale + shift): twice the rounding.
        CHECK(test::all_close(y_gpu, y_cpu, 2 * atol_y, 1e-5, "y vs CPU"));
        CHECK(test::all_close(mean->download(), mean_cpu, 1e-6, 1e-6, "save_mean"));
        CHECK(test::all_close(invstd->download(), invstd_cpu, 1e-6, 1e-5, "save_invstd"));
        CHECK(test::all_close(rm.download(), rm_cpu, 1e-6, 1e-6, "running_mean"));
        CHECK(test::all_close(rv.download(), rv_cpu, 1e-6, 1e-5, "running_var"));

        // Inference with the updated running statistics.
        std::vector<float> yi_cpu(m * c);
        cpu::batchnorm_forward_infer(cpu, m, c, x.data(), gamma.data(), beta.data(), rm_cpu.data(),
                                     rv_cpu.data(), relu, yi_cpu.data());
        const std::vector<float> rm_gpu = rm.download(), rv_gpu = rv.download();
        auto yi = poisoned(ctx, m * c);
        ops(device.kind)
            .batchnorm_forward_infer(ctx, m, c, xd.get(), gd.get(), bd.get(), rm.get(), rv.get(),
                                     relu, yi->get());
        CHECK(
            test::all_close(yi->download(),
                            ref::batchnorm_forward_infer(m, c, x.data(), gamma.data(), beta.data(),
                                                         rm_gpu.data(), rv_gpu.data(), relu),
                            1e-5, 1e-5, "inference y"));
        CHECK(test::all_close(yi->download(), yi_cpu, 1e-4, 1e-5, "inference y vs CPU"));

        // Backward from the GPU's own forward output and saved statistics.
        Floats yg(ctx, y_gpu);
        std::vector<float> dx_cpu(m * c), dgamma_cpu(c), dbeta_cpu(c);
        const std::vector<float> mean_gpu = mean->download(), invstd_gpu = invstd->download();
        cpu::batchnorm_backward(cpu, m, c, x.data(), y_gpu.data(), dy.data(), gamma.data(),
                                mean_gpu.data(), invstd_gpu.data(), relu, dx_cpu.data(),
                                dgamma_cpu.data(), dbeta_cpu.data());
        auto dx = poisoned(ctx, m * c), dgamma = poisoned(ctx, c), dbeta = poisoned(ctx, c);
        auto backward = [&] {
          ops(device.kind)
              .batchnorm_backward(ctx, m, c, xd.get(), yg.get(), dyd.get(), gd.get(), mean->get(),
                                  invstd->get(), relu, dx->get(), dgamma->get(), dbeta->get());
          return std::vector<std::vector<float>>{dx->download(), dgamma->download(),
                                                 dbeta->download()};
        };
        const auto grads = backward();
        CHECK(test::all_close(grads[0], dx_cpu, atol_dx, 1e-4, "dx"));
        CHECK(test::all_close(grads[1], dgamma_cpu, 1e-4, 1e-5, "dgamma"));
        CHECK(test::all_close(grads[2], dbeta_cpu, 1e-4, 1e-5, "dbeta"));
        const ref::BatchNormGrads rg =
            ref::batchnorm_backward(m, c, x.data(), y_gpu.data(), dy.data(), gamma.data(), relu);
        CHECK(test::all_close(grads[0], rg.dx, atol_dx, 1e-4, "dx vs double"));
        CHECK(backward() == grads);  // deterministic: fixed-order reductions, no atomics
        CHECK(ctx.arena().in_use() == 0);
      }
  }
}

// ---- ReLU, add_n, resizes, pooling -----------------------------------------------------------

TEST_CASE("GPU ReLU forward and backward, in place too", "[gpu][elementwise]") {
  Context cpu(Device::cpu());
  for (Device device : gpu_devices()) {
    Context ctx(device, 5);
    for (int64_t n : {1, 17, 130, 100003}) {
      INFO(device.str() << " n " << n);
      const std::vector<float> x = test::random_vector(n), dy = test::random_vector(n);
      std::vector<float> y_cpu(n), dx_cpu(n);
      cpu::relu_forward(cpu, n, x.data(), y_cpu.data());
      cpu::relu_backward(cpu, n, y_cpu.data(), dy.data(), dx_cpu.data());
      Floats xd(ctx, x), dyd(ctx, dy);
      auto y = poisoned(ctx, n), dx = poisoned(ctx, n);
      ops(device.kind).relu_forward(ctx, n, xd.get(), y->get());
      CHECK(test::all_close(y->download(), y_cpu, 0, 0, "y"));
      ops(device.kind).relu_backward(ctx, n, y->get(), dyd.get(), dx->get());
      CHECK(test::all_close(dx->download(), dx_cpu, 0, 0, "dx"));
      ops(device.kind).relu_forward(ctx, n, xd.get(), xd.get());
      CHECK(xd.download() == y_cpu);
    }
  }
}

TEST_CASE("GPU add_n sums any number of inputs, the output aliasing any input",
          "[gpu][elementwise][sanitize]") {
  Context cpu(Device::cpu());
  for (Device device : gpu_devices()) {
    Context ctx(device, 6);
    // 20 inputs take the path with the pointer list in device memory.
    for (int count : {1, 2, 3, 7, 16, 20})
      for (int64_t n : {1, 130, 70001}) {
        INFO(device.str() << " count " << count << " n " << n);
        std::vector<std::vector<float>> host;
        std::vector<std::unique_ptr<Floats>> dev;
        std::vector<const float*> ptrs, host_ptrs;
        for (int j = 0; j < count; ++j) {
          host.push_back(test::random_vector(n));
          dev.push_back(std::make_unique<Floats>(ctx, host.back()));
          ptrs.push_back(dev.back()->get());
        }
        for (const auto& v : host) host_ptrs.push_back(v.data());
        const std::vector<double> want = ref::add_n(n, host_ptrs);
        auto y = poisoned(ctx, n);
        ops(device.kind).add_n(ctx, n, ptrs.data(), count, y->get());
        const std::vector<float> got = y->download();
        // count - 1 float additions of partial sums up to ~count in size.
        CHECK(test::all_close(got, want, 2e-7 * count, 1e-6));
        // The CPU adds in the same order (inputs[0] + inputs[1] + ...): the same bits.
        std::vector<float> y_cpu(n);
        cpu::add_n(cpu, n, host_ptrs.data(), count, y_cpu.data());
        CHECK(got == y_cpu);
        // In place into the first and into the last input: the same bits.
        for (int target : {0, count - 1}) {
          dev[target]->upload(host[target]);
          ops(device.kind).add_n(ctx, n, ptrs.data(), count, dev[target]->get());
          CHECK(dev[target]->download() == got);
          dev[target]->upload(host[target]);
        }
      }
  }
}

TEST_CASE("GPU nearest resize forward and its gather backward match the CPU", "[gpu][resize]") {
  Context cpu(Device::cpu());
  // (n, h, w, c, oh, ow): up, down, non-integer ratios, identity, to and from 1x1.
  const std::array<int, 6> shapes[] = {
      {2, 8, 8, 3, 4, 4}, {1, 5, 7, 17, 8, 3},  {2, 7, 7, 1, 7, 7}, {1, 3, 5, 2, 7, 11},
      {3, 1, 1, 4, 5, 5}, {1, 6, 6, 130, 1, 1}, {2, 9, 4, 5, 4, 9}};
  for (Device device : gpu_devices()) {
    Context ctx(device, 7);
    for (auto [n, h, w, c, oh, ow] : shapes) {
      INFO(device.str() << " " << n << "x" << h << "x" << w << "x" << c << " -> " << oh << "x"
                        << ow);
      const std::vector<float> x = test::random_vector(int64_t(n) * h * w * c);
      const std::vector<float> dy = test::random_vector(int64_t(n) * oh * ow * c);
      std::vector<float> y_cpu(dy.size()), dx_cpu(x.size());
      cpu::resize_nearest_forward(cpu, n, h, w, c, oh, ow, x.data(), y_cpu.data());
      cpu::resize_nearest_backward(cpu, n, h, w, c, oh, ow, dy.data(), dx_cpu.data());
      Floats xd(ctx, x), dyd(ctx, dy);
      auto y = poisoned(ctx, dy.size()), dx = poisoned(ctx, x.size());
      ops(device.kind).resize_nearest_forward(ctx, n, h, w, c, oh, ow, xd.get(), y->get());
      ops(device.kind).resize_nearest_backward(ctx, n, h, w, c, oh, ow, dyd.get(), dx->get());
      // Same reads and the same summation order as the CPU: identical bits.
      CHECK(test::all_close(y->download(), y_cpu, 0, 0, "y"));
      CHECK(test::all_close(dx->download(), dx_cpu, 0, 0, "dx"));
      CHECK(test::all_close(dx->download(),
                            ref::resize_nearest_backward(n, h, w, c, oh, ow, dy.data()), 1e-6, 1e-6,
                            "dx vs scatter"));
    }
  }
}

TEST_CASE("GPU channel truncate / zero-pad, forward and backward", "[gpu][resize]") {
  for (Device device : gpu_devices()) {
    Context ctx(device, 8);
    for (auto [m, c_in, c_out] : {std::tuple<int64_t, int, int>{50, 3, 17},
                                  {7, 130, 17},
                                  {98, 16, 16},
                                  {1, 1, 130},
                                  {33, 17, 1}}) {
      INFO(device.str() << " m " << m << " " << c_in << " -> " << c_out);
      const std::vector<float> x = test::random_vector(m * c_in),
                               dy = test::random_vector(m * c_out);
      Floats xd(ctx, x), dyd(ctx, dy);
      auto y = poisoned(ctx, m * c_out), dx = poisoned(ctx, m * c_in);
      ops(device.kind).channel_resize_forward(ctx, m, c_in, c_out, xd.get(), y->get());
      ops(device.kind).channel_resize_backward(ctx, m, c_in, c_out, dyd.get(), dx->get());
      CHECK(
          test::all_close(y->download(), ref::channel_resize(m, c_in, c_out, x.data()), 0, 0, "y"));
      CHECK(test::all_close(dx->download(), ref::channel_resize(m, c_out, c_in, dy.data()), 0, 0,
                            "dx"));
    }
  }
}

TEST_CASE("GPU global average pool forward and backward", "[gpu][pool][sanitize]") {
  Context cpu(Device::cpu());
  for (Device device : gpu_devices()) {
    Context ctx(device, 9);
    for (auto [n, hw, c] :
         {std::tuple{2, 49, 17}, {50, 64, 3}, {1, 1, 130}, {3, 25, 40}, {2, 1024, 1}}) {
      INFO(device.str() << " n " << n << " hw " << hw << " c " << c);
      const std::vector<float> x = test::random_vector(int64_t(n) * hw * c);
      const std::vector<float> dy = test::random_vector(int64_t(n) * c);
      std::vector<float> y_cpu(dy.size()), dx_cpu(x.size());
      cpu::global_avg_pool_forward(cpu, n, hw, c, x.data(), y_cpu.data());
      cpu::global_avg_pool_backward(cpu, n, hw, c, dy.data(), dx_cpu.data());
      Floats xd(ctx, x), dyd(ctx, dy);
      auto y = poisoned(ctx, dy.size()), dx = poisoned(ctx, x.size());
      ops(device.kind).global_avg_pool_forward(ctx, n, hw, c, xd.get(), y->get());
      ops(device.kind).global_avg_pool_backward(ctx, n, hw, c, dyd.get(), dx->get());
      CHECK(test::all_close(y->download(), ref::global_avg_pool_forward(n, hw, c, x.data()), 1e-6,
                            1e-5, "y"));
      CHECK(test::all_close(y->download(), y_cpu, 1e-6, 1e-5, "y vs CPU"));
      CHECK(test::all_close(dx->download(), dx_cpu, 0, 0, "dx"));
    }
  }
}

// ---- fully connected, loss, optimiser ----------------------------------------------------------

TEST_CASE("GPU fully connected forward and backward (cuBLAS) match the CPU", "[gpu][fc]") {
  Context cpu(Device::cpu());
  for (Device device : gpu_devices()) {
    Context ctx(device, 10);
    for (auto [n, in, out] : {std::tuple{50, 256, 10}, {1, 3, 1}, {7, 130, 17}, {256, 64, 100}}) {
      INFO(device.str() << " n " << n << " " << in << " -> " << out);
      const std::vector<float> x = test::random_vector(int64_t(n) * in),
                               w = test::random_vector(int64_t(out) * in),
                               b = test::random_vector(out),
                               dy = test::random_vector(int64_t(n) * out);
      std::vector<float> y_cpu(int64_t(n) * out), dx_cpu(x.size()), dw_cpu(w.size()), db_cpu(out);
      cpu::fc_forward(cpu, n, in, out, x.data(), w.data(), b.data(), y_cpu.data());
      cpu::fc_backward(cpu, n, in, out, x.data(), w.data(), dy.data(), dx_cpu.data(), dw_cpu.data(),
                       db_cpu.data());
      Floats xd(ctx, x), wd(ctx, w), bd(ctx, b), dyd(ctx, dy);
      auto y = poisoned(ctx, y_cpu.size()), dx = poisoned(ctx, x.size()),
           dw = poisoned(ctx, w.size()), db = poisoned(ctx, out);
      ops(device.kind).fc_forward(ctx, n, in, out, xd.get(), wd.get(), bd.get(), y->get());
      CHECK(test::all_close(y->download(), y_cpu, atol_for(in), kConvRtol, "y"));
      ops(device.kind)
          .fc_backward(ctx, n, in, out, xd.get(), wd.get(), dyd.get(), dx->get(), dw->get(),
                       db->get());
      CHECK(test::all_close(dx->download(), dx_cpu, atol_for(out), kConvRtol, "dx"));
      CHECK(test::all_close(dw->download(), dw_cpu, atol_for(n), kConvRtol, "dw"));
      CHECK(test::all_close(db->download(), db_cpu, atol_for(n), kConvRtol, "db"));
      const ref::FcGrads r = ref::fc_backward(n, in, out, x.data(), w.data(), dy.data());
      CHECK(test::all_close(dw->download(), r.dw, atol_for(n), kConvRtol, "dw vs double"));
      // dx may be skipped (the first layer's input needs no gradient).
      auto dw2 = poisoned(ctx, w.size()), db2 = poisoned(ctx, out);
      ops(device.kind)
          .fc_backward(ctx, n, in, out, xd.get(), wd.get(), dyd.get(), nullptr, dw2->get(),
                       db2->get());
      CHECK(dw2->download() == dw->download());
      CHECK(db2->download() == db->download());
    }
  }
}

TEST_CASE("GPU softmax cross-entropy: loss, correct count and gradient", "[gpu][loss][sanitize]") {
  Context cpu(Device::cpu());
  for (Device device : gpu_devices()) {
    Context ctx(device, 11);
    const std::pair<int, int> shapes[] = {{50, 10}, {1, 3}, {7, 100}, {256, 10}, {3, 1}, {5, 33}};
    for (auto [n, classes] : shapes) {
      INFO(device.str() << " " << n << " x " << classes);
      std::vector<float> logits = test::random_vector(int64_t(n) * classes, -4.f, 4.f);
      std::vector<int32_t> labels(n);
      for (int32_t& l : labels) l = random_int(0, classes - 1);
      // Some rows right on purpose so `correct` is neither 0 nor n by accident.
      for (int r = 0; r < n; r += 3) logits[int64_t(r) * classes + labels[r]] = 9.f;
      LossResult want{};
      std::vector<float> d_cpu(logits.size());
      cpu::softmax_cross_entropy(cpu, n, classes, logits.data(), labels.data(), &want,
                                 d_cpu.data());
      Floats ld(ctx, logits);
      DeviceBuffer<int32_t> labd(ctx, labels);
      DeviceBuffer<LossResult> result(ctx, std::vector<LossResult>{LossResult{NAN, -1}});
      auto d = poisoned(ctx, logits.size());
      ops(device.kind)
          .softmax_cross_entropy(ctx, n, classes, ld.get(), labd.get(), result.get(), d->get());
      const LossResult got = result.download()[0];
      CHECK(test::all_close(std::vector<float>{got.loss_sum}, std::vector<float>{want.loss_sum},
                            1e-5, 1e-5, "loss"));
      CHECK(got.correct == want.correct);
      CHECK(test::all_close(d->download(), d_cpu, 1e-7, 1e-5, "dlogits"));
      // Without dlogits: the same result.
      result.upload({LossResult{NAN, -1}});
      ops(device.kind)
          .softmax_cross_entropy(ctx, n, classes, ld.get(), labd.get(), result.get(), nullptr);
      CHECK(result.download()[0].loss_sum == got.loss_sum);
      CHECK(result.download()[0].correct == got.correct);
    }
    // Huge logits stay finite; ties go to the first maximum, as on the CPU.
    std::vector<float> z = {1000.f, -1000.f, 999.f, 0.5f, 2.f, 2.f, 0.5f, 2.f, 2.f};
    std::vector<int32_t> labels = {2, 1, 2};
    Floats zd(ctx, z);
    DeviceBuffer<int32_t> labd(ctx, labels);
    DeviceBuffer<LossResult> result(ctx, 1);
    auto d = poisoned(ctx, z.size());
    ops(device.kind).softmax_cross_entropy(ctx, 3, 3, zd.get(), labd.get(), result.get(), d->get());
    LossResult want{};
    std::vector<float> d_cpu(z.size());
    cpu::softmax_cross_entropy(cpu, 3, 3, z.data(), labels.data(), &want, d_cpu.data());
    CHECK(result.download()[0].correct == 1);
    CHECK(result.download()[0].correct == want.correct);
    CHECK(result.download()[0].loss_sum == Approx(want.loss_sum).epsilon(1e-6));
    CHECK(test::all_close(d->download(), d_cpu, 1e-7, 1e-5, "dlogits"));
    // A label outside the classes cannot throw from a kernel: the loss becomes NaN instead.
    labd.upload({2, 3, 0});
    ops(device.kind).softmax_cross_entropy(ctx, 3, 3, zd.get(), labd.get(), result.get(), d->get());
    CHECK(std::isnan(result.download()[0].loss_sum));
  }
}

TEST_CASE("GPU SGD with momentum and weight decay", "[gpu][sgd]") {
  Context cpu(Device::cpu());
  for (Device device : gpu_devices()) {
    Context ctx(device, 12);
    for (int64_t n : {1, 17, 100003}) {
      INFO(device.str() << " n " << n);
      const std::vector<float> w = test::random_vector(n), v = test::random_vector(n),
                               g = test::random_vector(n);
      const float lr = 0.1f, momentum = 0.9f, decay = 1e-4f;
      std::vector<float> w_cpu = w, v_cpu = v;
      cpu::sgd_update(cpu, n, lr, momentum, decay, w_cpu.data(), g.data(), v_cpu.data());
      Floats wd(ctx, w), vd(ctx, v), gd(ctx, g);
      ops(device.kind).sgd_update(ctx, n, lr, momentum, decay, wd.get(), gd.get(), vd.get());
      CHECK(test::all_close(vd.download(), v_cpu, 1e-7, 1e-6, "v"));
      CHECK(test::all_close(wd.download(), w_cpu, 1e-7, 1e-6, "w"));
    }
  }
}

// ---- randomness: the same Philox bits as the CPU ------------------------------------------------

TEST_CASE("GPU He init draws the CPU's numbers", "[gpu][init]") {
  Context cpu(Device::cpu());
  for (Device device : gpu_devices()) {
    Context ctx(device, 13);
    PhiloxState rng{std::uniform_int_distribution<uint64_t>()(test::rng()), 7, 0};
    for (auto [n, fan_in] : {std::pair<int64_t, int>{1, 1}, {3, 27}, {4608, 288}, {200001, 1152}}) {
      INFO(device.str() << " n " << n << " fan_in " << fan_in);
      const PhiloxState state = rng.take((uint64_t(n) + 1) / 2);
      std::vector<float> w_cpu(n);
      cpu::he_init(cpu, n, fan_in, state, w_cpu.data());
      auto w = poisoned(ctx, n);
      ops(device.kind).he_init(ctx, n, fan_in, state, w->get());
      // logf, sinf and cosf may differ by an ulp between glibc and CUDA: ~1e-6 relative to the
      // distribution's scale (the CPU's float draws are themselves ~1e-7 from the double ones).
      const double scale = std::sqrt(2.0 / fan_in);
      CHECK(test::all_close(w->download(), w_cpu, 2e-6 * scale, 1e-6, "w"));
      CHECK(test::all_close(w->download(), ref::he_init(n, fan_in, state), 4e-6 * scale, 1e-5,
                            "w vs double"));
    }
    auto w = poisoned(ctx, 4);
    CHECK_THROWS_WITH(ops(device.kind).he_init(ctx, 4, 0, rng, w->get()),
                      Catch::Contains("fan_in 0"));
  }
}

TEST_CASE("GPU augmentation is bit-identical to the CPU's", "[gpu][augment]") {
  Context cpu(Device::cpu());
  const int count = 20, h = 8, w = 7, c = 3;
  std::vector<uint8_t> images(int64_t(count) * h * w * c);
  for (uint8_t& p : images) p = uint8_t(random_int(0, 255));
  const std::vector<float> mean = {0.49f, 0.48f, 0.45f},
                           inv_std = {1 / 0.25f, 1 / 0.24f, 1 / 0.26f};
  const PhiloxState rng{std::uniform_int_distribution<uint64_t>()(test::rng()), 3, 11};
  std::vector<int32_t> indices(500);
  for (int32_t& i : indices) i = random_int(0, count - 1);
  const int n = int(indices.size());
  for (Device device : gpu_devices()) {
    Context ctx(device, 14);
    DeviceBuffer<uint8_t> imd(ctx, images);
    DeviceBuffer<int32_t> ind(ctx, indices);
    Floats md(ctx, mean), sd(ctx, inv_std);
    for (auto [pad, flip] : {std::pair{4, true}, {0, false}, {2, false}, {0, true}, {1, true}}) {
      INFO(device.str() << " pad " << pad << " flip " << flip);
      std::vector<float> out_cpu(int64_t(n) * h * w * c);
      cpu::augment_batch(cpu, images.data(), indices.data(), n, h, w, c, pad, flip, mean.data(),
                         inv_std.data(), rng, out_cpu.data());
      auto out = poisoned(ctx, out_cpu.size());
      ops(device.kind)
          .augment_batch(ctx, imd.get(), ind.get(), n, h, w, c, pad, flip, md.get(), sd.get(), rng,
                         out->get());
      const std::vector<float> got = out->download();
      CHECK(test::all_close(got, out_cpu, 0, 0, "batch"));
      CHECK(std::memcmp(got.data(), out_cpu.data(), got.size() * sizeof(float)) == 0);
    }
    auto out = poisoned(ctx, 16);
    CHECK_THROWS_AS(ops(device.kind)
                        .augment_batch(ctx, imd.get(), ind.get(), 1, h, w, c, -1, false, md.get(),
                                       sd.get(), rng, out->get()),
                    Error);
  }
}

// ---- the emulator's thread orders ------------------------------------------------------------

TEST_CASE("emulated ops give the same bits in every thread order", "[gpu][schedule]") {
  // Forward, reverse and random (cuda/README.md, EVO_EMU_SCHEDULE) are all orders a GPU may run
  // the threads of a block in, so an op whose bits change between them has a race. tools/test.sh
  // runs the whole file under each order too; this checks bits where those tests allow rounding.
  const std::uint64_t seed = std::uniform_int_distribution<std::uint64_t>()(test::rng());
  const emu::Schedule orders[] = {{emu::ScheduleOrder::Forward, 0},
                                  {emu::ScheduleOrder::Reverse, 0},
                                  {emu::ScheduleOrder::Random, seed}};
  Context ctx(Device::emu(), 15);
  const OpTable& table = ops(DeviceKind::EMU);
  const ConvApi api = conv_api(Device::emu());
  // Split-K backward filter (long reduction, few tiles) and four backward-data phases.
  const ConvGeometry convs[] = {geometry(8, 16, 16, 8, 4, 3, 3, 1),
                                geometry(2, 9, 9, 5, 7, 3, 3, 2)};
  std::vector<std::vector<float>> conv_in;  // x, w, dy per geometry
  for (const ConvGeometry& g : convs) {
    conv_in.push_back(test::random_vector(int64_t(g.n) * g.h * g.w * g.c_in));
    conv_in.push_back(test::random_vector(g.c_out * g.gemm_k()));
    conv_in.push_back(test::random_vector(g.gemm_m() * g.c_out));
  }
  const int64_t m = 3 * 9 * 9 + random_int(0, 300);
  const int c = random_int(1, 40), rows = random_int(1, 90), classes = 10, hw = random_int(1, 30);
  const std::vector<float> x = test::random_vector(m * c), dy = test::random_vector(m * c);
  const std::vector<float> gamma = test::random_vector(c, 0.5f, 1.5f);
  const std::vector<float> beta = test::random_vector(c);
  const std::vector<float> logits = test::random_vector(int64_t(rows) * classes, -3.f, 3.f);
  std::vector<int32_t> labels(static_cast<std::size_t>(rows));
  for (int32_t& l : labels) l = random_int(0, classes - 1);
  INFO("random seed " << seed << "; batch norm m " << m << " c " << c << "; loss rows " << rows
                      << "; pool hw " << hw);

  // Every output of every op that synchronises threads (shared memory, shuffles), as bits.
  auto run = [&](const emu::Schedule& s) {
    emu::set_schedule(s);
    std::vector<std::vector<float>> out;
    for (std::size_t i = 0; i < std::size(convs); ++i) {
      const ConvGeometry& g = convs[i];
      Floats xd(ctx, conv_in[3 * i]), wd(ctx, conv_in[3 * i + 1]), dyd(ctx, conv_in[3 * i + 2]);
      for (int v = 1; v <= kConvVersionCount; ++v) {
        auto y = poisoned(ctx, conv_in[3 * i + 2].size());
        auto dx = poisoned(ctx, conv_in[3 * i].size());
        auto dw = poisoned(ctx, conv_in[3 * i + 1].size());
        api.forward(v, ctx, g, xd.get(), wd.get(), y->get());
        api.backward_data(v, ctx, g, dyd.get(), wd.get(), dx->get());
        api.backward_filter(v, ctx, g, xd.get(), dyd.get(), dw->get());
        out.insert(out.end(), {y->download(), dx->download(), dw->download()});
      }
    }
    Floats xd(ctx, x), dyd(ctx, dy), gd(ctx, gamma), bd(ctx, beta);
    Floats rm(ctx, std::vector<float>(std::size_t(c), 0.f));
    Floats rv(ctx, std::vector<float>(std::size_t(c), 1.f));
    auto y = poisoned(ctx, x.size()), mean = poisoned(ctx, std::size_t(c)),
         invstd = poisoned(ctx, std::size_t(c));
    table.batchnorm_forward_train(ctx, m, c, xd.get(), gd.get(), bd.get(), true, y->get(),
                                  mean->get(), invstd->get(), rm.get(), rv.get());
    auto dx = poisoned(ctx, x.size()), dgamma = poisoned(ctx, std::size_t(c)),
         dbeta = poisoned(ctx, std::size_t(c));
    table.batchnorm_backward(ctx, m, c, xd.get(), y->get(), dyd.get(), gd.get(), mean->get(),
                             invstd->get(), true, dx->get(), dgamma->get(), dbeta->get());
    out.insert(out.end(), {y->download(), mean->download(), invstd->download(), rm.download(),
                           rv.download(), dx->download(), dgamma->download(), dbeta->download()});
    const int n_pool = int(m / hw);
    auto pooled = poisoned(ctx, std::size_t(n_pool) * c);
    table.global_avg_pool_forward(ctx, n_pool, hw, c, xd.get(), pooled->get());
    out.push_back(pooled->download());
    Floats ld(ctx, logits);
    DeviceBuffer<int32_t> labd(ctx, labels);
    DeviceBuffer<LossResult> result(ctx, std::vector<LossResult>{LossResult{NAN, -1}});
    auto dlogits = poisoned(ctx, logits.size());
    table.softmax_cross_entropy(ctx, rows, classes, ld.get(), labd.get(), result.get(),
                                dlogits->get());
    const LossResult r = result.download()[0];
    out.push_back(dlogits->download());
    out.push_back({r.loss_sum, float(r.correct)});
    return out;
  };
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };

  const emu::Schedule saved = emu::current_schedule();
  std::vector<std::vector<std::vector<float>>> results;
  try {
    for (const emu::Schedule& s : orders) results.push_back(run(s));
  } catch (...) {
    emu::set_schedule(saved);
    throw;
  }
  emu::set_schedule(saved);
  for (std::size_t o = 1; o < results.size(); ++o) {
    INFO("schedule " << emu::schedule_name(orders[o]) << " against forward");
    REQUIRE(results[o].size() == results[0].size());
    for (std::size_t k = 0; k < results[0].size(); ++k) {
      INFO("output " << k);
      CHECK(same_bits(results[o][k], results[0][k]));
    }
  }
}
