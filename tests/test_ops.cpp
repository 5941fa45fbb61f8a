// Tests of every op of ops.h but convolution (batch norm, ReLU, add_n, resizes, pooling, fully
// connected, loss, SGD, He init, augmentation), each written once and run on every device (cpu,
// emu, cuda:0: tests/op_test.h) against tests/reference.h and finite differences; the kernels
// also against the CPU backend, and on the emulator under every thread order. Not convolution
// (test_ops_conv.cpp), not speed (bench/).
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/emu/runtime.h"
#include "evo/error.h"
#include "evo/ops.h"
#include "op_test.h"
#include "reference.h"

using namespace evo;
using test::DeviceBuffer;
using test::Floats;
using test::poisoned;
using test::random_int;
using test::to_double;

namespace {

// Values in [-1, 1] whose magnitude is at least `gap`: away from ReLU's kink, where a finite
// difference straddling 0 would be meaningless.
std::vector<float> random_away_from_zero(std::size_t n, float gap = 0.05f) {
  std::vector<float> v = test::random_vector(n, gap, 1.f);
  std::bernoulli_distribution sign(0.5);
  for (float& x : v)
    if (sign(test::rng())) x = -x;
  return v;
}

// Restores the OpenMP thread count a test changed.
struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

// dx of an op whose loss is sum(forward(x) * dy), against finite differences of the double
// reference `forward`, on inputs small enough to perturb one at a time (h = 1e-3: these ops are
// linear in x, or piecewise so with x away from the kinks).
template <typename Forward>
void check_dx_by_finite_differences(const std::vector<float>& dx, const std::vector<float>& x,
                                    const std::vector<float>& dy, Forward forward,
                                    double rtol = 1e-6) {
  if (x.size() > 2000) return;
  const std::vector<double> fd = ref::numeric_gradient(
      to_double(x), [&](const std::vector<double>& v) { return ref::dot(forward(v), dy); }, 1e-3);
  CHECK(test::all_close(dx, fd, 1e-6, rtol, "dx vs finite differences"));
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// ---- batch norm ------------------------------------------------------------------------------

OP_TEST("batch norm forward (training and inference) and backward match double loops",
        "[batchnorm][sanitize]") {
  Context ctx(device, 4), cpu(Device::cpu());
  const OpTable& op = ops(device.kind);
  // (rows m = N*H*W, channels): odd sizes, 1/3/17/33/130 channels, one- and two-row batches, and
  // enough rows for several reduction blocks and threads.
  const std::pair<int64_t, int> shapes[] = {{2 * 5 * 5, 17}, {130, 3},        {7, 130},
                                            {50 * 7 * 7, 1}, {3 * 9 * 9, 64}, {20000, 5},
                                            {2, 3},          {1, 3},          {2, 33}};
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

      Floats xd(ctx, x), gd(ctx, gamma), bd(ctx, beta), rm(ctx, rm0), rv(ctx, rv0), dyd(ctx, dy);
      Floats y = poisoned(ctx, m * c), mean = poisoned(ctx, c), invstd = poisoned(ctx, c);
      op.batchnorm_forward_train(ctx, m, c, xd.get(), gd.get(), bd.get(), relu, y.get(), mean.get(),
                                 invstd.get(), rm.get(), rv.get());
      const std::vector<float> y_dev = y.download(), mean_dev = mean.download(),
                               invstd_dev = invstd.download(), rm_dev = rm.download(),
                               rv_dev = rv.download();
      const ref::BatchNormTrain r = ref::batchnorm_forward_train(
          m, c, x.data(), gamma.data(), beta.data(), relu, rm0.data(), rv0.data());
      // y is normalised around the float save_mean that ops.h stores, whose rounding
      // (|mean| * 2^-24) is magnified by gamma * invstd, and backward by another invstd: that is
      // float's limit, not an error. Tiny batches (m = 2 with two nearly equal rows: invstd up to
      // 1/sqrt(eps) = 32) make it large, so the tolerances carry each shape's own amplification.
      // The CPU is held to 2 such roundings, the kernels (fused multiply-adds on a GPU) to 4.
      double amp_y = 0, amp_dx = 0;
      for (int ch = 0; ch < c; ++ch) {
        const double a = std::fabs(r.mean[ch]) * gamma[ch] * r.invstd[ch];
        amp_y = std::max(amp_y, a);
        amp_dx = std::max(amp_dx, a * r.invstd[ch]);
      }
      const double roundings = device.is_gpu_like() ? 2.4e-7 : 2 / 16777216.0;
      const double atol_y = 1e-5 + roundings * amp_y, atol_dx = 1e-5 + 2.4e-7 * amp_dx;
      CHECK(test::all_close(y_dev, r.y, atol_y, 1e-5, "y"));
      CHECK(test::all_close(mean_dev, r.mean, 1e-6, 1e-6, "save_mean"));
      CHECK(test::all_close(invstd_dev, r.invstd, 1e-6, 1e-5, "save_invstd"));
      CHECK(test::all_close(rm_dev, r.running_mean, 1e-6, 1e-6, "running_mean"));
      CHECK(test::all_close(rv_dev, r.running_var, 1e-6, 1e-5, "running_var"));

      // Inference with the running statistics the training pass just updated.
      Floats yi = poisoned(ctx, m * c);
      op.batchnorm_forward_infer(ctx, m, c, xd.get(), gd.get(), bd.get(), rm.get(), rv.get(), relu,
                                 yi.get());
      const std::vector<float> yi_dev = yi.download();
      CHECK(test::all_close(yi_dev,
                            ref::batchnorm_forward_infer(m, c, x.data(), gamma.data(), beta.data(),
                                                         rm_dev.data(), rv_dev.data(), relu),
                            1e-5, 1e-5, "inference y"));

      // Backward from this device's own forward output and saved statistics.
      Floats dx = poisoned(ctx, m * c), dgamma = poisoned(ctx, c), dbeta = poisoned(ctx, c);
      auto backward = [&] {
        op.batchnorm_backward(ctx, m, c, xd.get(), y.get(), dyd.get(), gd.get(), mean.get(),
                              invstd.get(), relu, dx.get(), dgamma.get(), dbeta.get());
        return std::vector<std::vector<float>>{dx.download(), dgamma.download(), dbeta.download()};
      };
      const auto grads = backward();
      const ref::BatchNormGrads rg =
          ref::batchnorm_backward(m, c, x.data(), y_dev.data(), dy.data(), gamma.data(), relu);
      CHECK(test::all_close(grads[0], rg.dx, atol_dx, 1e-4, "dx"));
      CHECK(test::all_close(grads[1], rg.dgamma, 1e-4, 1e-5, "dgamma"));
      CHECK(test::all_close(grads[2], rg.dbeta, 1e-4, 1e-5, "dbeta"));
      CHECK(backward() == grads);  // deterministic: fixed-order reductions, no atomics
      CHECK(ctx.arena().in_use() == 0);

      if (!device.is_gpu_like()) continue;
      // The kernels against the CPU backend, fed the same inputs.
      std::vector<float> y_cpu(m * c), mean_cpu(c), invstd_cpu(c), rm_cpu = rm0, rv_cpu = rv0;
      cpu::batchnorm_forward_train(cpu, m, c, x.data(), gamma.data(), beta.data(), relu,
                                   y_cpu.data(), mean_cpu.data(), invstd_cpu.data(), rm_cpu.data(),
                                   rv_cpu.data());
      CHECK(test::all_close(y_dev, y_cpu, 2 * atol_y, 1e-5, "y vs CPU"));
      CHECK(test::all_close(mean_dev, mean_cpu, 1e-6, 1e-6, "save_mean vs CPU"));
      CHECK(test::all_close(invstd_dev, invstd_cpu, 1e-6, 1e-5, "save_invstd vs CPU"));
      CHECK(test::all_close(rm_dev, rm_cpu, 1e-6, 1e-6, "running_mean vs CPU"));
      CHECK(test::all_close(rv_dev, rv_cpu, 1e-6, 1e-5, "running_var vs CPU"));
      std::vector<float> yi_cpu(m * c);
      cpu::batchnorm_forward_infer(cpu, m, c, x.data(), gamma.data(), beta.data(), rm_cpu.data(),
                                   rv_cpu.data(), relu, yi_cpu.data());
      CHECK(test::all_close(yi_dev, yi_cpu, 1e-4, 1e-5, "inference y vs CPU"));
      std::vector<float> dx_cpu(m * c), dgamma_cpu(c), dbeta_cpu(c);
      cpu::batchnorm_backward(cpu, m, c, x.data(), y_dev.data(), dy.data(), gamma.data(),
                              mean_dev.data(), invstd_dev.data(), relu, dx_cpu.data(),
                              dgamma_cpu.data(), dbeta_cpu.data());
      CHECK(test::all_close(grads[0], dx_cpu, atol_dx, 1e-4, "dx vs CPU"));
      CHECK(test::all_close(grads[1], dgamma_cpu, 1e-4, 1e-5, "dgamma vs CPU"));
      CHECK(test::all_close(grads[2], dbeta_cpu, 1e-4, 1e-5, "dbeta vs CPU"));
    }
}

OP_TEST("batch norm backward matches double loops and finite differences", "[batchnorm]") {
  Context ctx(device, 16);
  const OpTable& op = ops(device.kind);
  for (bool relu : {false, true}) {
    // Large shapes against the reference backward; small ones also against finite differences.
    const std::tuple<int64_t, int, bool> shapes[] = {
        {2 * 5 * 5, 17, false}, {7, 130, false}, {50 * 8 * 8, 32, false}, {3 * 7 * 7, 3, false},
        {3 * 3 * 3, 2, true},   {5, 3, true},    {2 * 2 * 2, 1, true}};
    for (auto [m, c, fd] : shapes) {
      INFO(device.str() << " m " << m << " c " << c << " relu " << relu);
      const std::vector<float> x = test::random_vector(m * c, -2.f, 2.f);
      const std::vector<float> gamma = test::random_vector(c, 0.5f, 1.5f);
      const std::vector<float> beta = test::random_vector(c, -0.5f, 0.5f);
      const std::vector<float> dy = test::random_vector(m * c);
      const std::vector<float> rm0(c, 0.f), rv0(c, 1.f);
      Floats xd(ctx, x), gd(ctx, gamma), bd(ctx, beta), dyd(ctx, dy), rm(ctx, rm0), rv(ctx, rv0);
      Floats y(ctx, m * c), mean(ctx, c), invstd(ctx, c);
      op.batchnorm_forward_train(ctx, m, c, xd.get(), gd.get(), bd.get(), relu, y.get(), mean.get(),
                                 invstd.get(), rm.get(), rv.get());
      Floats dxd = poisoned(ctx, m * c), dgd = poisoned(ctx, c), dbd = poisoned(ctx, c);
      op.batchnorm_backward(ctx, m, c, xd.get(), y.get(), dyd.get(), gd.get(), mean.get(),
                            invstd.get(), relu, dxd.get(), dgd.get(), dbd.get());
      const std::vector<float> dx = dxd.download(), dgamma = dgd.download(), dbeta = dbd.download();
      const ref::BatchNormGrads r = ref::batchnorm_backward(m, c, x.data(), y.download().data(),
                                                            dy.data(), gamma.data(), relu);
      CHECK(test::all_close(dx, r.dx, 1e-5, 1e-4, "dx"));
      CHECK(test::all_close(dgamma, r.dgamma, 1e-4, 1e-5, "dgamma"));
      CHECK(test::all_close(dbeta, r.dbeta, 1e-4, 1e-5, "dbeta"));
      if (!fd) continue;
      // loss = sum(bn(x; gamma, beta) * dy) in double; the running statistics do not matter.
      const std::vector<double> xv = to_double(x), gv = to_double(gamma), bv = to_double(beta);
      auto loss = [&](const std::vector<double>& xs, const std::vector<double>& gs,
                      const std::vector<double>& bs) {
        return ref::dot(ref::batchnorm_forward_train(m, c, xs.data(), gs.data(), bs.data(), relu,
                                                     rm0.data(), rv0.data())
                            .y,
                        dy);
      };
      const double h = 1e-6;
      const std::vector<double> dx_fd = ref::numeric_gradient(
          xv, [&](const auto& v) { return loss(v, gv, bv); }, h);
      const std::vector<double> dgamma_fd = ref::numeric_gradient(
          gv, [&](const auto& v) { return loss(xv, v, bv); }, h);
      const std::vector<double> dbeta_fd = ref::numeric_gradient(
          bv, [&](const auto& v) { return loss(xv, gv, v); }, h);
      CHECK(test::all_close(dx, dx_fd, 1e-4, 1e-3, "dx vs finite differences"));
      CHECK(test::all_close(dgamma, dgamma_fd, 1e-4, 1e-3, "dgamma vs finite differences"));
      CHECK(test::all_close(dbeta, dbeta_fd, 1e-4, 1e-3, "dbeta vs finite differences"));
    }
  }
}

// The CPU's reductions split rows between OpenMP threads; the kernels' split depends on m alone.
TEST_CASE("cpu: batch norm statistics do not depend on the thread count", "[cpu][batchnorm]") {
  Context ctx(Device::cpu());
  const int64_t m = 50 * 16 * 16;
  const int c = 24;
  const std::vector<float> x = test::random_vector(m * c), gamma = test::random_vector(c),
                           beta = test::random_vector(c);
  auto run = [&](int threads) {
    ThreadCount scoped(threads);
    std::vector<float> rm(c, 0.f), rv(c, 1.f), y(m * c), mean(c), invstd(c);
    cpu::batchnorm_forward_train(ctx, m, c, x.data(), gamma.data(), beta.data(), true, y.data(),
                                 mean.data(), invstd.data(), rm.data(), rv.data());
    return std::vector<std::vector<float>>{y, mean, invstd, rm, rv};
  };
  CHECK(run(1) == run(std::max(2, omp_get_max_threads())));
}

// The CPU sums x - shift (a value of the batch) in float lanes: statistics of activations whose
// mean is 1e4 x their spread must not cancel (plain float sums of x and x^2 would lose every digit
// of the variance), over several reduction blocks and for a row count that is no whole tile.
TEST_CASE("cpu: batch norm statistics survive a mean far larger than the spread",
          "[cpu][batchnorm]") {
  Context ctx(Device::cpu());
  for (int c : {1, 7, 23}) {
    const int64_t m = 50 * 14 * 14 + 3;
    INFO("c " << c);
    std::vector<float> x = test::random_vector(m * c);
    for (int64_t i = 0; i < m * c; ++i) x[i] = 1e4f + float(i % c) + 0.5f * x[i];
    const std::vector<float> gamma(c, 1.f), beta(c, 0.f), rm0(c, 0.f), rv0(c, 1.f);
    std::vector<float> rm = rm0, rv = rv0, y(m * c), mean(c), invstd(c);
    cpu::batchnorm_forward_train(ctx, m, c, x.data(), gamma.data(), beta.data(), false, y.data(),
                                 mean.data(), invstd.data(), rm.data(), rv.data());
    const ref::BatchNormTrain r = ref::batchnorm_forward_train(
        m, c, x.data(), gamma.data(), beta.data(), false, rm0.data(), rv0.data());
    CHECK(test::all_close(mean, r.mean, 1e-6, 1e-7, "save_mean"));
    CHECK(test::all_close(invstd, r.invstd, 1e-6, 1e-5, "save_invstd"));
    CHECK(test::all_close(rv, r.running_var, 1e-6, 1e-5, "running_var"));
  }
}

// ---- ReLU, add_n, resizes, pooling -------------------------------------------------------------

OP_TEST("ReLU forward and backward, in place too", "[elementwise]") {
  Context ctx(device, 5);
  const OpTable& op = ops(device.kind);
  for (int64_t n : {1, 17, 130, 100003}) {
    INFO(device.str() << " n " << n);
    const std::vector<float> x = random_away_from_zero(n), dy = test::random_vector(n);
    Floats xd(ctx, x), dyd(ctx, dy), yd = poisoned(ctx, n), dxd = poisoned(ctx, n);
    op.relu_forward(ctx, n, xd.get(), yd.get());
    const std::vector<float> y = yd.download();
    // Exact against the double loops: the same bits as the CPU on every device.
    CHECK(test::all_close(y, ref::relu_forward(n, x.data()), 0, 0, "y"));
    op.relu_backward(ctx, n, yd.get(), dyd.get(), dxd.get());
    const std::vector<float> dx = dxd.download();
    CHECK(test::all_close(dx, ref::relu_backward(n, y.data(), dy.data()), 0, 0, "dx"));
    check_dx_by_finite_differences(
        dx, x, dy, [&](const std::vector<double>& v) { return ref::relu_forward(n, v.data()); });
    // In place, as the model runs it: x and y alias.
    op.relu_forward(ctx, n, xd.get(), xd.get());
    CHECK(xd.download() == y);
  }
}

OP_TEST("add_n sums any number of inputs, the output aliasing any input",
        "[elementwise][sanitize]") {
  Context ctx(device, 6), cpu(Device::cpu());
  const OpTable& op = ops(device.kind);
  // 20 inputs take the kernels' path with the pointer list in device memory.
  for (int count : {1, 2, 3, 7, 16, 20})
    for (int64_t n : {1, 130, 70001}) {
      INFO(device.str() << " count " << count << " n " << n);
      std::vector<std::vector<float>> host;
      std::vector<Floats> dev;
      std::vector<const float*> ptrs, host_ptrs;
      for (int j = 0; j < count; ++j) {
        host.push_back(test::random_vector(n));
        dev.emplace_back(ctx, host.back());
      }
      for (const Floats& d : dev) ptrs.push_back(d.get());
      for (const auto& v : host) host_ptrs.push_back(v.data());
      Floats y = poisoned(ctx, n);
      op.add_n(ctx, n, ptrs.data(), count, y.get());
      const std::vector<float> got = y.download();
      // count - 1 float additions of partial sums up to ~count in size; the few inputs an
      // evolved vertex usually has stay within 1e-6.
      const double atol = count <= 7 ? std::min(1e-6, 2e-7 * count) : 2e-7 * count;
      CHECK(test::all_close(got, ref::add_n(n, host_ptrs), atol, 1e-6));
      // The output may be any one of the inputs: the same bits.
      for (int j = 0; j < count; ++j) {
        op.add_n(ctx, n, ptrs.data(), count, dev[j].get());
        CHECK(dev[j].download() == got);
        dev[j].upload(host[j]);
      }
      if (!device.is_gpu_like()) continue;
      // The CPU adds in the same order (inputs[0] + inputs[1] + ...): the same bits.
      std::vector<float> y_cpu(n);
      cpu::add_n(cpu, n, host_ptrs.data(), count, y_cpu.data());
      CHECK(got == y_cpu);
    }
}

OP_TEST("nearest resize forward and its gather backward", "[resize]") {
  Context ctx(device, 7), cpu(Device::cpu());
  const OpTable& op = ops(device.kind);
  // (n, h, w, c, oh, ow): down, up, non-integer ratios, odd sizes, identity, to and from 1x1.
  const std::array<int, 6> shapes[] = {
      {2, 8, 8, 3, 4, 4}, {1, 7, 7, 17, 4, 4},  {2, 5, 5, 1, 7, 7},    {1, 4, 6, 130, 9, 5},
      {3, 7, 5, 3, 3, 2}, {1, 6, 6, 2, 6, 6},   {2, 32, 32, 17, 8, 8}, {1, 1, 1, 4, 5, 3},
      {2, 9, 9, 3, 1, 1}, {1, 5, 7, 17, 8, 3},  {2, 7, 7, 1, 7, 7},    {1, 3, 5, 2, 7, 11},
      {3, 1, 1, 4, 5, 5}, {1, 6, 6, 130, 1, 1}, {2, 9, 4, 5, 4, 9}};
  for (auto [n, h, w, c, oh, ow] : shapes) {
    INFO(device.str() << " " << n << "x" << h << "x" << w << "x" << c << " -> " << oh << "x" << ow);
    const std::vector<float> x = test::random_vector(int64_t(n) * h * w * c);
    const std::vector<float> dy = test::random_vector(int64_t(n) * oh * ow * c);
    Floats xd(ctx, x), dyd(ctx, dy), yd = poisoned(ctx, dy.size()), dxd = poisoned(ctx, x.size());
    op.resize_nearest_forward(ctx, n, h, w, c, oh, ow, xd.get(), yd.get());
    op.resize_nearest_backward(ctx, n, h, w, c, oh, ow, dyd.get(), dxd.get());
    const std::vector<float> y = yd.download(), dx = dxd.download();
    CHECK(test::all_close(y, ref::resize_nearest_forward(n, h, w, c, oh, ow, x.data()), 0, 0, "y"));
    // The reference scatters where the op gathers.
    CHECK(test::all_close(dx, ref::resize_nearest_backward(n, h, w, c, oh, ow, dy.data()), 1e-6,
                          1e-6, "dx"));
    check_dx_by_finite_differences(dx, x, dy, [&](const std::vector<double>& v) {
      return ref::resize_nearest_forward(n, h, w, c, oh, ow, v.data());
    });
    if (!device.is_gpu_like()) continue;
    // Same reads and the same summation order as the CPU: identical bits.
    std::vector<float> y_cpu(dy.size()), dx_cpu(x.size());
    cpu::resize_nearest_forward(cpu, n, h, w, c, oh, ow, x.data(), y_cpu.data());
    cpu::resize_nearest_backward(cpu, n, h, w, c, oh, ow, dy.data(), dx_cpu.data());
    CHECK(test::all_close(y, y_cpu, 0, 0, "y vs CPU"));
    CHECK(test::all_close(dx, dx_cpu, 0, 0, "dx vs CPU"));
  }
}

OP_TEST("channel truncate / zero-pad, forward and backward", "[resize]") {
  Context ctx(device, 8);
  const OpTable& op = ops(device.kind);
  const std::array<int, 3> shapes[] = {{50, 17, 3},  {7, 3, 17},   {13, 130, 130}, {1, 1, 130},
                                       {25, 130, 1}, {9, 5, 6},    {4096, 32, 64}, {50, 3, 17},
                                       {7, 130, 17}, {98, 16, 16}, {33, 17, 1}};
  for (auto [m, c_in, c_out] : shapes) {
    INFO(device.str() << " m " << m << " " << c_in << " -> " << c_out);
    const std::vector<float> x = test::random_vector(int64_t(m) * c_in);
    const std::vector<float> dy = test::random_vector(int64_t(m) * c_out);
    Floats xd(ctx, x), dyd(ctx, dy), yd = poisoned(ctx, dy.size()), dxd = poisoned(ctx, x.size());
    op.channel_resize_forward(ctx, m, c_in, c_out, xd.get(), yd.get());
    op.channel_resize_backward(ctx, m, c_in, c_out, dyd.get(), dxd.get());
    const std::vector<float> dx = dxd.download();
    CHECK(test::all_close(yd.download(), ref::channel_resize(m, c_in, c_out, x.data()), 0, 0, "y"));
    CHECK(test::all_close(dx, ref::channel_resize(m, c_out, c_in, dy.data()), 0, 0, "dx"));
    check_dx_by_finite_differences(dx, x, dy, [&](const std::vector<double>& v) {
      return ref::channel_resize(m, c_in, c_out, v.data());
    });
  }
}

OP_TEST("global average pool forward and backward", "[pool][sanitize]") {
  Context ctx(device, 9), cpu(Device::cpu());
  const OpTable& op = ops(device.kind);
  const std::array<int, 3> shapes[] = {{2, 25, 17}, {1, 49, 3},  {3, 1, 130}, {50, 64, 256},
                                       {2, 9, 1},   {3, 784, 1}, {2, 53, 8},  {2, 49, 17},
                                       {50, 64, 3}, {1, 1, 130}, {3, 25, 40}, {2, 1024, 1}};
  for (auto [n, hw, c] : shapes) {
    INFO(device.str() << " n " << n << " hw " << hw << " c " << c);
    const std::vector<float> x = test::random_vector(int64_t(n) * hw * c);
    const std::vector<float> dy = test::random_vector(int64_t(n) * c);
    Floats xd(ctx, x), dyd(ctx, dy), yd = poisoned(ctx, dy.size()), dxd = poisoned(ctx, x.size());
    op.global_avg_pool_forward(ctx, n, hw, c, xd.get(), yd.get());
    op.global_avg_pool_backward(ctx, n, hw, c, dyd.get(), dxd.get());
    const std::vector<float> y = yd.download(), dx = dxd.download();
    CHECK(test::all_close(y, ref::global_avg_pool_forward(n, hw, c, x.data()), 1e-6, 1e-5, "y"));
    CHECK(
        test::all_close(dx, ref::global_avg_pool_backward(n, hw, c, dy.data()), 1e-7, 1e-6, "dx"));
    check_dx_by_finite_differences(
        dx, x, dy,
        [&](const std::vector<double>& v) {
          return ref::global_avg_pool_forward(n, hw, c, v.data());
        },
        1e-5);
    if (!device.is_gpu_like()) continue;
    std::vector<float> y_cpu(dy.size()), dx_cpu(x.size());
    cpu::global_avg_pool_forward(cpu, n, hw, c, x.data(), y_cpu.data());
    cpu::global_avg_pool_backward(cpu, n, hw, c, dy.data(), dx_cpu.data());
    CHECK(test::all_close(y, y_cpu, 1e-6, 1e-5, "y vs CPU"));
    CHECK(test::all_close(dx, dx_cpu, 0, 0, "dx vs CPU"));
  }
}

// ---- fully connected, loss, SGD -------------------------------------------------------------

OP_TEST("fully connected forward and backward (BLAS, cuBLAS)", "[fc]") {
  Context ctx(device, 10), cpu(Device::cpu());
  const OpTable& op = ops(device.kind);
  constexpr auto atol_for = ref::conv_atol;  // sums of `terms` products in [-1, 1]
  const std::array<int, 3> shapes[] = {{50, 130, 10}, {1, 3, 17},      {7, 1, 1},
                                       {3, 17, 5},    {256, 256, 100}, {50, 256, 10},
                                       {1, 3, 1},     {7, 130, 17},    {256, 64, 100}};
  for (auto [n, in, out] : shapes) {
    INFO(device.str() << " n " << n << " " << in << " -> " << out);
    const std::vector<float> x = test::random_vector(int64_t(n) * in),
                             w = test::random_vector(int64_t(out) * in),
                             b = test::random_vector(out),
                             dy = test::random_vector(int64_t(n) * out);
    Floats xd(ctx, x), wd(ctx, w), bd(ctx, b), dyd(ctx, dy);
    Floats yd = poisoned(ctx, int64_t(n) * out), dxd = poisoned(ctx, x.size()),
           dwd = poisoned(ctx, w.size()), dbd = poisoned(ctx, out);
    op.fc_forward(ctx, n, in, out, xd.get(), wd.get(), bd.get(), yd.get());
    op.fc_backward(ctx, n, in, out, xd.get(), wd.get(), dyd.get(), dxd.get(), dwd.get(), dbd.get());
    const std::vector<float> y = yd.download(), dx = dxd.download(), dw = dwd.download(),
                             db = dbd.download();
    CHECK(test::all_close(y, ref::fc_forward(n, in, out, x.data(), w.data(), b.data()),
                          atol_for(in), ref::kConvRtol, "y"));
    const ref::FcGrads r = ref::fc_backward(n, in, out, x.data(), w.data(), dy.data());
    CHECK(test::all_close(dx, r.dx, atol_for(out), ref::kConvRtol, "dx"));
    CHECK(test::all_close(dw, r.dw, atol_for(n), ref::kConvRtol, "dw"));
    CHECK(test::all_close(db, r.db, atol_for(n), ref::kConvRtol, "db"));
    // Without dx (the first layer's input needs no gradient) the rest is unchanged.
    Floats dw2 = poisoned(ctx, w.size()), db2 = poisoned(ctx, out);
    op.fc_backward(ctx, n, in, out, xd.get(), wd.get(), dyd.get(), nullptr, dw2.get(), db2.get());
    CHECK(dw2.download() == dw);
    CHECK(db2.download() == db);
    if (x.size() + w.size() <= 3000) {
      const std::vector<double> xv = to_double(x), wv = to_double(w), bv = to_double(b);
      auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ws,
                      const std::vector<double>& bs) {
        return ref::dot(ref::fc_forward(n, in, out, xs.data(), ws.data(), bs.data()), dy);
      };
      const std::vector<double> dx_fd = ref::numeric_gradient(
          xv, [&](const auto& v) { return loss(v, wv, bv); }, 1e-3);
      const std::vector<double> dw_fd = ref::numeric_gradient(
          wv, [&](const auto& v) { return loss(xv, v, bv); }, 1e-3);
      const std::vector<double> db_fd = ref::numeric_gradient(
          bv, [&](const auto& v) { return loss(xv, wv, v); }, 1e-3);
      CHECK(test::all_close(dx, dx_fd, 1e-5, 1e-4, "dx vs finite differences"));
      CHECK(test::all_close(dw, dw_fd, 1e-5, 1e-4, "dw vs finite differences"));
      CHECK(test::all_close(db, db_fd, 1e-5, 1e-4, "db vs finite differences"));
    }
    if (!device.is_gpu_like()) continue;
    std::vector<float> y_cpu(y.size()), dx_cpu(x.size()), dw_cpu(w.size()), db_cpu(out);
    cpu::fc_forward(cpu, n, in, out, x.data(), w.data(), b.data(), y_cpu.data());
    cpu::fc_backward(cpu, n, in, out, x.data(), w.data(), dy.data(), dx_cpu.data(), dw_cpu.data(),
                     db_cpu.data());
    CHECK(test::all_close(y, y_cpu, atol_for(in), ref::kConvRtol, "y vs CPU"));
    CHECK(test::all_close(dx, dx_cpu, atol_for(out), ref::kConvRtol, "dx vs CPU"));
    CHECK(test::all_close(dw, dw_cpu, atol_for(n), ref::kConvRtol, "dw vs CPU"));
    CHECK(test::all_close(db, db_cpu, atol_for(n), ref::kConvRtol, "db vs CPU"));
  }
}

namespace {
// One softmax_cross_entropy call on `ctx`'s device: the result, and dlogits when `with_grad`.
struct LossRun {
  LossResult result;
  std::vector<float> dlogits;
};
LossRun run_loss(Context& ctx, int n, int classes, const std::vector<float>& logits,
                 const std::vector<int32_t>& labels, bool with_grad, int grad_n = 0) {
  Floats ld(ctx, logits), d = test::poisoned(ctx, with_grad ? logits.size() : 0);
  DeviceBuffer<int32_t> labd(ctx, labels);
  DeviceBuffer<LossResult> result(ctx, std::vector<LossResult>{LossResult{NAN, -1}});
  ops(ctx.device().kind)
      .softmax_cross_entropy(ctx, n, classes, ld.get(), labd.get(), result.get(),
                             with_grad ? d.get() : nullptr, grad_n ? grad_n : n);
  return {result.download()[0], with_grad ? d.download() : std::vector<float>{}};
}
}  // namespace

OP_TEST("softmax cross-entropy: loss, correct count and gradient", "[loss][sanitize]") {
  Context ctx(device, 11), cpu(Device::cpu());
  const std::pair<int, int> shapes[] = {{50, 10}, {1, 3}, {7, 100}, {256, 10}, {3, 1}, {5, 33}};
  for (auto [n, classes] : shapes) {
    INFO(device.str() << " " << n << " x " << classes);
    std::vector<float> logits = test::random_vector(int64_t(n) * classes, -4.f, 4.f);
    std::vector<int32_t> labels(n);
    for (int32_t& l : labels) l = random_int(0, classes - 1);
    // Make some rows right on purpose so `correct` is neither 0 nor n by accident.
    for (int r = 0; r < n; r += 3) logits[int64_t(r) * classes + labels[r]] = 9.f;
    const LossRun got = run_loss(ctx, n, classes, logits, labels, true);
    const ref::SoftmaxCrossEntropy r =
        ref::softmax_cross_entropy(n, classes, logits.data(), labels.data());
    CHECK(test::all_close(std::vector<float>{got.result.loss_sum}, std::vector<double>{r.loss_sum},
                          1e-5, 1e-5, "loss"));
    CHECK(got.result.correct == r.correct);
    CHECK(test::all_close(got.dlogits, r.dlogits, 1e-7, 1e-5, "dlogits"));
    // The gradient of loss_sum / grad_n for another grad_n (a replica's shard of a global batch):
    // the mean-loss gradient scaled by n / grad_n.
    const int grad_n = 3 * n + 1;
    std::vector<double> want_scaled(r.dlogits.size());
    for (std::size_t i = 0; i < want_scaled.size(); ++i)
      want_scaled[i] = r.dlogits[i] * n / grad_n;
    CHECK(test::all_close(run_loss(ctx, n, classes, logits, labels, true, grad_n).dlogits,
                          want_scaled, 1e-8, 1e-5, "dlogits, grad_n = 3n + 1"));
    // Without dlogits: the same result, nothing else written.
    const LossRun only = run_loss(ctx, n, classes, logits, labels, false);
    CHECK(only.result.loss_sum == got.result.loss_sum);
    CHECK(only.result.correct == got.result.correct);
    if (n * classes <= 1000) {
      const std::vector<double> fd = ref::numeric_gradient(
          to_double(logits),
          [&](const std::vector<double>& v) {
            return ref::softmax_cross_entropy(n, classes, v.data(), labels.data()).loss_sum / n;
          },
          1e-5);
      CHECK(test::all_close(got.dlogits, fd, 1e-6, 1e-4, "dlogits vs finite differences"));
    }
    if (!device.is_gpu_like()) continue;
    LossResult want{};
    std::vector<float> d_cpu(logits.size());
    cpu::softmax_cross_entropy(cpu, n, classes, logits.data(), labels.data(), &want, d_cpu.data(),
                               n);
    CHECK(test::all_close(std::vector<float>{got.result.loss_sum},
                          std::vector<float>{want.loss_sum}, 1e-5, 1e-5, "loss vs CPU"));
    CHECK(got.result.correct == want.correct);
    CHECK(test::all_close(got.dlogits, d_cpu, 1e-7, 1e-5, "dlogits vs CPU"));
  }
  INFO(device.str());
  // Huge logits stay finite (the row maximum is subtracted before exp).
  const LossRun big = run_loss(ctx, 1, 3, {1000.f, -1000.f, 999.f}, {2}, true);
  CHECK(big.result.loss_sum == Approx(1.0 + std::log1p(std::exp(-1.0))).epsilon(1e-6));
  CHECK(big.result.correct == 0);
  CHECK(std::isfinite(big.dlogits[0]));
  // Ties go to the first maximum, on every device.
  for (int32_t l : {1, 2})
    CHECK(run_loss(ctx, 1, 3, {0.5f, 2.f, 2.f}, {l}, false).result.correct == (l == 1 ? 1 : 0));
  // Both in one batch, against the double loops (and the CPU).
  const std::vector<float> z = {1000.f, -1000.f, 999.f, 0.5f, 2.f, 2.f, 0.5f, 2.f, 2.f};
  const std::vector<int32_t> labels = {2, 1, 2};
  const LossRun batch = run_loss(ctx, 3, 3, z, labels, true);
  const ref::SoftmaxCrossEntropy r = ref::softmax_cross_entropy(3, 3, z.data(), labels.data());
  CHECK(batch.result.correct == 1);
  CHECK(batch.result.loss_sum == Approx(r.loss_sum).epsilon(1e-6));
  CHECK(test::all_close(batch.dlogits, r.dlogits, 1e-7, 1e-5, "dlogits"));
  if (device.is_gpu_like()) {
    LossResult want{};
    std::vector<float> d_cpu(z.size());
    cpu::softmax_cross_entropy(cpu, 3, 3, z.data(), labels.data(), &want, d_cpu.data(), 3);
    CHECK(batch.result.correct == want.correct);
    CHECK(batch.result.loss_sum == Approx(want.loss_sum).epsilon(1e-6));
    CHECK(test::all_close(batch.dlogits, d_cpu, 1e-7, 1e-5, "dlogits vs CPU"));
  }
  // A label outside the classes is an error with a message on the CPU, not a wild read; a kernel
  // cannot throw, so there the loss becomes NaN instead (ops.h).
  if (device.is_gpu_like())
    CHECK(std::isnan(run_loss(ctx, 3, 3, z, {2, 3, 0}, true).result.loss_sum));
  else
    CHECK_THROWS_WITH(run_loss(ctx, 1, 3, {1000.f, -1000.f, 999.f}, {3}, true),
                      Catch::Contains("label 3"));
}

OP_TEST("SGD with momentum and weight decay", "[sgd]") {
  Context ctx(device, 12), cpu(Device::cpu());
  for (int64_t n : {1, 17, 100003}) {
    INFO(device.str() << " n " << n);
    const std::vector<float> w = test::random_vector(n), v = test::random_vector(n),
                             g = test::random_vector(n);
    const float lr = 0.1f, momentum = 0.9f, decay = 1e-4f;
    Floats wd(ctx, w), vd(ctx, v), gd(ctx, g);
    ops(device.kind).sgd_update(ctx, n, lr, momentum, decay, wd.get(), gd.get(), vd.get());
    const ref::SgdState r = ref::sgd_update(n, lr, momentum, decay, w.data(), g.data(), v.data());
    CHECK(test::all_close(vd.download(), r.v, 1e-6, 1e-6, "v"));
    CHECK(test::all_close(wd.download(), r.w, 1e-6, 1e-6, "w"));
    if (!device.is_gpu_like()) continue;
    std::vector<float> w_cpu = w, v_cpu = v;
    cpu::sgd_update(cpu, n, lr, momentum, decay, w_cpu.data(), g.data(), v_cpu.data());
    CHECK(test::all_close(vd.download(), v_cpu, 1e-7, 1e-6, "v vs CPU"));
    CHECK(test::all_close(wd.download(), w_cpu, 1e-7, 1e-6, "w vs CPU"));
  }
}

// ---- randomness: the documented Philox numbers on every device ---------------------------------

OP_TEST("He init draws the documented Philox numbers with the right moments", "[init]") {
  Context ctx(device, 13), cpu(Device::cpu());
  const OpTable& op = ops(device.kind);
  PhiloxState rng{std::uniform_int_distribution<uint64_t>()(test::rng()), 7, 0};
  for (auto [n, fan_in] : {std::pair<int64_t, int>{1, 1}, {3, 27}, {4608, 288}, {200001, 1152}}) {
    INFO(device.str() << " n " << n << " fan_in " << fan_in);
    const PhiloxState state = rng.take((uint64_t(n) + 1) / 2);
    Floats wd = poisoned(ctx, n);
    op.he_init(ctx, n, fan_in, state, wd.get());
    const std::vector<float> w = wd.download();
    // logf, sinf and cosf may differ by an ulp between glibc and CUDA: ~1e-6 relative to the
    // distribution's scale (the CPU's float draws are themselves ~1e-7 from the double ones).
    const double scale = std::sqrt(2.0 / fan_in);
    const double atol = device.is_gpu_like() ? 4e-6 * scale : 1e-6;
    CHECK(test::all_close(w, ref::he_init(n, fan_in, state), atol, 1e-5));
    if (n > 100000) {
      double sum = 0, sq = 0;
      for (float v : w) sum += v, sq += double(v) * v;
      const double mean = sum / n, std = std::sqrt(sq / n - mean * mean), want = scale;
      CHECK(std::fabs(mean) < 5 * want / std::sqrt(double(n)));
      CHECK(std::fabs(std / want - 1) < 0.01);
    }
    // A pure function of (state, i): same state, same bits; the next state, other numbers.
    op.he_init(ctx, n, fan_in, state, wd.get());
    CHECK(wd.download() == w);
    if (n > 1) {
      Floats other(ctx, n);
      op.he_init(ctx, n, fan_in, rng, other.get());
      CHECK(other.download() != w);
    }
    if (!device.is_gpu_like()) continue;
    std::vector<float> w_cpu(n);
    cpu::he_init(cpu, n, fan_in, state, w_cpu.data());
    CHECK(test::all_close(w, w_cpu, 2e-6 * scale, 1e-6, "w vs CPU"));
  }
  Floats w = poisoned(ctx, 4);
  CHECK_THROWS_WITH(op.he_init(ctx, 4, 0, rng, w.get()), Catch::Contains("fan_in 0"));
}

namespace {
// A batch augment_batch builds on `ctx`'s device from host images and indices.
std::vector<float> augment_on(Context& ctx, const std::vector<uint8_t>& images,
                              const std::vector<int32_t>& indices, int h, int w, int c, int pad,
                              bool flip, const std::vector<float>& mean,
                              const std::vector<float>& inv_std, const PhiloxState& rng) {
  DeviceBuffer<uint8_t> imd(ctx, images);
  DeviceBuffer<int32_t> ind(ctx, indices);
  Floats md(ctx, mean), sd(ctx, inv_std);
  const int n = int(indices.size());
  Floats out = test::poisoned(ctx, int64_t(n) * h * w * c);
  ops(ctx.device().kind)
      .augment_batch(ctx, imd.get(), ind.get(), n, h, w, c, pad, flip, md.get(), sd.get(), rng,
                     nullptr, out.get());
  return out.download();
}

// Every (pad, flip) setting against the reference, on a fresh set of `count` random images; the
// kernels also bit for bit against the CPU.
void check_augment_against_reference(Context& ctx, int count, int h, int w, int c,
                                     const std::vector<float>& mean,
                                     const std::vector<float>& inv_std, const PhiloxState& rng,
                                     const std::vector<int32_t>& indices) {
  Context cpu(Device::cpu());
  std::vector<uint8_t> images(int64_t(count) * h * w * c);
  for (uint8_t& p : images) p = uint8_t(random_int(0, 255));
  const int n = int(indices.size());
  for (auto [pad, flip] : {std::pair{4, true}, {0, false}, {2, false}, {0, true}, {1, true}}) {
    INFO(ctx.device().str() << " c " << c << " pad " << pad << " flip " << flip);
    const std::vector<float> out =
        augment_on(ctx, images, indices, h, w, c, pad, flip, mean, inv_std, rng);
    CHECK(test::all_close(out,
                          ref::augment_batch(images.data(), indices.data(), n, h, w, c, pad, flip,
                                             mean.data(), inv_std.data(), rng),
                          1e-5, 1e-6));
    if (!ctx.device().is_gpu_like()) continue;
    std::vector<float> out_cpu(out.size());
    cpu::augment_batch(cpu, images.data(), indices.data(), n, h, w, c, pad, flip, mean.data(),
                       inv_std.data(), rng, nullptr, out_cpu.data());
    CHECK(same_bits(out, out_cpu));
  }
}
}  // namespace

OP_TEST("augmentation: pad, random crop, random flip, standardisation", "[augment]") {
  Context ctx(device, 14);
  const int count = 20, h = 8, w = 7, c = 3;
  std::vector<uint8_t> images(int64_t(count) * h * w * c);
  for (uint8_t& p : images) p = uint8_t(random_int(0, 255));
  const std::vector<float> mean = {0.49f, 0.48f, 0.45f},
                           inv_std = {1 / 0.25f, 1 / 0.24f, 1 / 0.26f};
  const PhiloxState rng{std::uniform_int_distribution<uint64_t>()(test::rng()), 3, 11};
  std::vector<int32_t> indices(2000);
  for (int32_t& i : indices) i = random_int(0, count - 1);
  const int n = int(indices.size());
  check_augment_against_reference(ctx, count, h, w, c, mean, inv_std, rng, indices);
  // One channel (Fashion-MNIST, MNIST) has its own vector loop for unflipped rows on the CPU.
  check_augment_against_reference(ctx, count, 11, 13, 1, {0.29f}, {1 / 0.35f}, rng, indices);

  // Properties that do not lean on the draw mapping: every crop offset and both flips occur, and
  // pad 0 without flip is the plain standardised image.
  INFO(device.str());
  const std::vector<float> plain =
      augment_on(ctx, images, indices, h, w, c, 0, false, mean, inv_std, rng);
  for (int i = 0; i < 3; ++i)
    for (int64_t p = 0; p < int64_t(h) * w * c; ++p)
      CHECK(plain[i * int64_t(h) * w * c + p] ==
            Approx((images[indices[i] * int64_t(h) * w * c + p] / 255.0 - mean[p % c]) *
                   inv_std[p % c])
                .margin(1e-5));
  const std::vector<float> flipped =
      augment_on(ctx, images, indices, h, w, c, 0, true, mean, inv_std, rng);
  int mirrored = 0;
  for (int i = 0; i < n; ++i) {
    bool same = true, mirror = true;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < c; ++ch) {
          const float f = flipped[((int64_t(i) * h + y) * w + x) * c + ch];
          same &= f == plain[((int64_t(i) * h + y) * w + x) * c + ch];
          mirror &= f == plain[((int64_t(i) * h + y) * w + (w - 1 - x)) * c + ch];
        }
    CHECK((same || mirror));
    mirrored += mirror && !same;
  }
  CHECK(mirrored > n * 4 / 10);
  CHECK(mirrored < n * 6 / 10);
  // With pad 4, the shift of each image shows in where its black (padded) border lies.
  const int pad = 4;
  const std::vector<float> shifted =
      augment_on(ctx, images, indices, h, w, c, pad, false, mean, inv_std, rng);
  std::set<std::pair<int, int>> offsets;
  for (int i = 0; i < n; ++i) {
    // Find the offset (dy, dx) in [-pad, pad]^2 that explains image i.
    for (int dy = -pad; dy <= pad; ++dy)
      for (int dx = -pad; dx <= pad; ++dx) {
        bool match = true;
        for (int y = 0; y < h && match; ++y)
          for (int x = 0; x < w && match; ++x)
            for (int ch = 0; ch < c && match; ++ch) {
              const int sy = y + dy, sx = x + dx;
              const double v = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                                   ? images[((int64_t(indices[i]) * h + sy) * w + sx) * c + ch]
                                   : 0.0;
              match = std::fabs(shifted[((int64_t(i) * h + y) * w + x) * c + ch] -
                                (v / 255.0 - mean[ch]) * inv_std[ch]) < 1e-4;
            }
        if (match) offsets.insert({dy, dx});
      }
  }
  CHECK(offsets.size() == std::size_t((2 * pad + 1) * (2 * pad + 1)));
  CHECK_THROWS_AS(augment_on(ctx, images, {indices[0]}, h, w, c, -1, false, mean, inv_std, rng),
                  Error);
}

OP_TEST("next_batch: the step's slice of the epoch order, and augment_batch's device offset",
        "[augment]") {
  Context ctx(device, 5);
  const int n_order = 60;
  std::vector<int32_t> order(n_order), order_labels(n_order);
  for (int i = 0; i < n_order; ++i) {
    order[i] = random_int(0, 999);
    order_labels[i] = random_int(0, 9);
  }
  DeviceBuffer<int32_t> od(ctx, order), ld(ctx, order_labels);
  // (per_epoch, batch, first, n, step): a whole batch, a replica's shard, the last slot of an
  // epoch and the wrap to the next one.
  const int cases[][5] = {{6, 10, 0, 10, 0}, {6, 10, 3, 4, 2}, {6, 10, 7, 3, 5}, {6, 10, 0, 10, 6},
                          {5, 12, 5, 7, 123457}};
  for (const auto& k : cases) {
    const int per_epoch = k[0], batch = k[1], first = k[2], n = k[3];
    const int64_t s = k[4];
    INFO(device.str() << " per_epoch " << per_epoch << " batch " << batch << " first " << first
                      << " n " << n << " step " << s);
    DeviceBuffer<int64_t> step(ctx, std::vector<int64_t>{s});
    DeviceBuffer<uint64_t> offset(ctx, std::vector<uint64_t>{~uint64_t(0)});
    DeviceBuffer<int32_t> idx(ctx, std::vector<int32_t>(std::size_t(n), -1)),
        lab(ctx, std::vector<int32_t>(std::size_t(n), -1));
    ops(device.kind).next_batch(ctx, step.get(), per_epoch, batch, first, n, od.get(), ld.get(),
                                idx.get(), lab.get(), offset.get());
    std::vector<int32_t> want_idx, want_lab;
    for (int i = 0; i < n; ++i) {
      want_idx.push_back(order[std::size_t((s % per_epoch) * batch + first + i)]);
      want_lab.push_back(order_labels[std::size_t((s % per_epoch) * batch + first + i)]);
    }
    CHECK(idx.download() == want_idx);
    CHECK(lab.download() == want_lab);
    CHECK(offset.download()[0] == uint64_t(s) * batch + first);
    CHECK(step.download()[0] == s + 1);
  }
  // augment_batch with the offset in device memory draws what it draws with rng.offset moved.
  const int h = 6, w = 5, c = 2, n = 4;
  std::vector<uint8_t> images(std::size_t(10) * h * w * c);
  for (uint8_t& p : images) p = uint8_t(random_int(0, 255));
  DeviceBuffer<uint8_t> imd(ctx, images);
  DeviceBuffer<int32_t> ind(ctx, std::vector<int32_t>{3, 0, 9, 3});
  Floats md(ctx, std::vector<float>{0.5f, 0.4f}), sd(ctx, std::vector<float>{3.f, 4.f});
  const PhiloxState rng{77, 2, 11};
  const uint64_t moved = 1234567;
  DeviceBuffer<uint64_t> off(ctx, std::vector<uint64_t>{moved});
  Floats a = test::poisoned(ctx, int64_t(n) * h * w * c), b = test::poisoned(ctx, int64_t(n) * h * w * c);
  PhiloxState shifted = rng;
  shifted.offset += moved;
  ops(device.kind).augment_batch(ctx, imd.get(), ind.get(), n, h, w, c, 2, true, md.get(), sd.get(),
                                 rng, off.get(), a.get());
  ops(device.kind).augment_batch(ctx, imd.get(), ind.get(), n, h, w, c, 2, true, md.get(), sd.get(),
                                 shifted, nullptr, b.get());
  CHECK(same_bits(a.download(), b.download()));
  CHECK(test::all_close(a.download(),
                        ref::augment_batch(images.data(), std::vector<int32_t>{3, 0, 9, 3}.data(),
                                           n, h, w, c, 2, true, std::vector<float>{0.5f, 0.4f}.data(),
                                           std::vector<float>{3.f, 4.f}.data(), shifted),
                        1e-5, 1e-6));
}

// ---- the emulator's thread orders ------------------------------------------------------------

// Emulator only: a GPU runs its own orders, which the test cannot choose.
TEST_CASE("emu: ops give the same bits in every thread order", "[emu][schedule]") {
  // Forward, reverse and random (cuda/README.md, EVO_EMU_SCHEDULE) are all orders a GPU may run
  // the threads of a block in, so an op whose bits change between them has a race. tools/test.sh
  // runs every [emu] case under each order too; this checks bits where those allow rounding.
  const std::uint64_t seed = std::uniform_int_distribution<std::uint64_t>()(test::rng());
  const emu::Schedule orders[] = {{emu::ScheduleOrder::Forward, 0},
                                  {emu::ScheduleOrder::Reverse, 0},
                                  {emu::ScheduleOrder::Random, seed}};
  Context ctx(Device::emu(), 15);
  const OpTable& table = ops(DeviceKind::EMU);
  const test::ConvApi api = test::conv_api(Device::emu());
  // Split-K backward filter (long reduction, few tiles) and four backward-data phases.
  const ConvGeometry convs[] = {ref::geometry(8, 16, 16, 8, 4, 3, 3, 1),
                                ref::geometry(2, 9, 9, 5, 7, 3, 3, 2)};
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
        Floats y = poisoned(ctx, conv_in[3 * i + 2].size());
        Floats dx = poisoned(ctx, conv_in[3 * i].size());
        Floats dw = poisoned(ctx, conv_in[3 * i + 1].size());
        api.forward(v, ctx, g, xd.get(), wd.get(), y.get());
        api.backward_data(v, ctx, g, dyd.get(), wd.get(), dx.get());
        api.backward_filter(v, ctx, g, xd.get(), dyd.get(), dw.get());
        out.insert(out.end(), {y.download(), dx.download(), dw.download()});
      }
    }
    Floats xd(ctx, x), dyd(ctx, dy), gd(ctx, gamma), bd(ctx, beta);
    Floats rm(ctx, std::vector<float>(std::size_t(c), 0.f));
    Floats rv(ctx, std::vector<float>(std::size_t(c), 1.f));
    Floats y = poisoned(ctx, x.size()), mean = poisoned(ctx, std::size_t(c)),
           invstd = poisoned(ctx, std::size_t(c));
    table.batchnorm_forward_train(ctx, m, c, xd.get(), gd.get(), bd.get(), true, y.get(),
                                  mean.get(), invstd.get(), rm.get(), rv.get());
    Floats dx = poisoned(ctx, x.size()), dgamma = poisoned(ctx, std::size_t(c)),
           dbeta = poisoned(ctx, std::size_t(c));
    table.batchnorm_backward(ctx, m, c, xd.get(), y.get(), dyd.get(), gd.get(), mean.get(),
                             invstd.get(), true, dx.get(), dgamma.get(), dbeta.get());
    out.insert(out.end(), {y.download(), mean.download(), invstd.download(), rm.download(),
                           rv.download(), dx.download(), dgamma.download(), dbeta.download()});
    const int n_pool = int(m / hw);
    Floats pooled = poisoned(ctx, std::size_t(n_pool) * c);
    table.global_avg_pool_forward(ctx, n_pool, hw, c, xd.get(), pooled.get());
    out.push_back(pooled.download());
    Floats ld(ctx, logits);
    DeviceBuffer<int32_t> labd(ctx, labels);
    DeviceBuffer<LossResult> result(ctx, std::vector<LossResult>{LossResult{NAN, -1}});
    Floats dlogits = poisoned(ctx, logits.size());
    table.softmax_cross_entropy(ctx, rows, classes, ld.get(), labd.get(), result.get(),
                                dlogits.get(), rows);
    const LossResult r = result.download()[0];
    out.push_back(dlogits.download());
    out.push_back({r.loss_sum, float(r.correct)});
    return out;
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
