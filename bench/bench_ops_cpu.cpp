// Google Benchmark of every CPU op (src/cpu) over the shapes of evolved CIFAR-10 nets, with the
// ceilings measured in the same run: OpenBLAS SGEMM of each convolution's GEMM shape, and memcpy.
// Not a test (tests/ checks values) and not the CUDA benchmark.
//
//   bench_ops_cpu                                 # default set, batch 50, ~2 minutes on 2 cores
//   bench_ops_cpu --full  (or EVO_BENCH_FULL=1)   # every shape, batch 50 and 256 (long)
//   bench_ops_cpu --benchmark_out=ops.json --benchmark_out_format=json
//   python3 bench/to_markdown.py ops.json         # the README's table
//
// Every benchmark runs 3 repetitions and reports mean/median/stddev unless the command line
// says otherwise. Times are wall clock (the ops use every OpenMP thread); OMP_NUM_THREADS picks
// how many.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench/common.h"
#include "evo/ops.h"
#include "src/cpu/blas.h"
#include "src/cpu/conv.h"

using namespace evo;
using evo::bench::conv_geometry;
using evo::bench::conv_name;
using evo::bench::format;

namespace {

std::vector<float> random_floats(int64_t n, float lo = -1.f, float hi = 1.f) {
  static std::mt19937 gen(12345);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

Context& context() {
  static Context ctx(Device::cpu(), 1);
  return ctx;
}

using Clock = std::chrono::steady_clock;

// printf into a std::string (benchmark names).
// Times `op` per iteration (manual time = wall clock) and reports `work` per iteration as a rate
// in units of 1e9 (GFLOP/s for flops, GB/s for bytes) under `counter`.
void timed_loop(benchmark::State& state, double work, const char* counter,
                const std::function<void()>& op) {
  double total = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    op();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    state.SetIterationTime(s);
    total += s;
  }
  state.counters[counter] = work * double(state.iterations()) / total / 1e9;
}

// ---- ceilings ----------------------------------------------------------------------------

// OpenBLAS SGEMM of the forward pass's GEMM  [M, K] x [N, K]^T  with its own threads on every
// core: the ceiling for all three passes of a convolution of that shape (they are GEMMs of the
// same M, N, K, transposed). Measured once per shape: the best of >= 5 runs and >= 0.3 s.
// Rows are capped so A stays under 512 MiB (batch 256 of 32x32x256 5x5 would need 6.7 GB): SGEMM's
// rate is flat in M long before that many rows.
double sgemm_ceiling(int64_t full_m, int64_t n, int64_t k) {
  static std::map<std::tuple<int64_t, int64_t, int64_t>, double> cache;
  const auto key = std::make_tuple(full_m, n, k);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const int64_t m = std::min(full_m, (int64_t(512) << 20) / (4 * k));
  openblas_set_num_threads(omp_get_max_threads());
  const std::vector<float> a = random_floats(m * k), b = random_floats(n * k);
  std::vector<float> c(m * n);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.f, a.data(), k, b.data(), k,
                0.f, c.data(), n);
  };
  run();
  run();
  std::vector<double> times;
  double total = 0;
  while (times.size() < 5 || total < 0.3) {
    const auto t0 = Clock::now();
    run();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    total += times.back();
  }
  // The best run, not the median: the ceiling should be the hardest number to beat.
  const double best = *std::min_element(times.begin(), times.end());
  const double gflops = 2.0 * double(m) * double(n) * double(k) / best / 1e9;
  // Back to the ops' setting, and let OpenBLAS's idle workers (which spin for ~0.1 s after a
  // threaded call) go to sleep before the convolution is timed.
  cpu::use_single_threaded_blas();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  cache[key] = gflops;
  return gflops;
}

// DRAM streaming bandwidth with every thread: the ceiling of memory-bound ops on data that does
// not fit the cache. 2 bytes moved per byte copied (read + write); 64 MiB is past the 32 MiB L3.
void BM_memcpy(benchmark::State& state) {
  const int64_t bytes = int64_t(64) << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  timed_loop(state, 2.0 * double(bytes), "GB/s", [&] {
#pragma omp parallel
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t begin = bytes * t / nt, end = bytes * (t + 1) / nt;
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    }
  });
}

// ---- convolution -------------------------------------------------------------------------

enum class Pass { Forward, BackwardData, BackwardFilter };

// Ceiling: sgemm_ceiling(M, N, K) of the same shape, reported beside the convolution's own
// GFLOP/s as "sgemm_GFLOP/s" and their ratio. Zen 4 peak is ~100 GFLOP/s per core (two 256-bit
// FMA pipes, 32 flop/cycle at ~3 GHz); OpenBLAS reaches ~200 on both cores for big squares and
// less for the skinny N = Cout shapes of small convolutions.
// Which CPU convolution a benchmark times: the ops.h entry point (its per-shape choice), the
// readable reference, or one of the two fast paths forced.
enum class Impl { Default, Reference, Gemm, Direct };

void bench_conv(benchmark::State& state, ConvGeometry g, Pass pass, Impl impl) {
  Context& ctx = context();
  const std::vector<float> x = random_floats(int64_t(g.n) * g.h * g.w * g.c_in);
  const std::vector<float> w = random_floats(g.c_out * g.gemm_k(), -0.1f, 0.1f);
  const std::vector<float> dy = random_floats(g.gemm_m() * g.c_out);
  std::vector<float> out(pass == Pass::Forward        ? dy.size()
                         : pass == Pass::BackwardData ? x.size()
                                                      : w.size());
  const double ceiling = sgemm_ceiling(g.gemm_m(), g.gemm_n(), g.gemm_k());
  const auto pick = [impl](auto def, auto ref, auto gemm, auto direct) {
    return impl == Impl::Reference ? ref
           : impl == Impl::Gemm    ? gemm
           : impl == Impl::Direct  ? direct
                                   : def;
  };
  std::function<void()> op;
  switch (pass) {
    case Pass::Forward:
      op = [&, f = pick(cpu::conv2d_forward, cpu::conv2d_forward_reference,
                        cpu::conv2d_forward_gemm, cpu::conv2d_forward_direct)] {
        f(ctx, g, x.data(), w.data(), out.data());
      };
      break;
    case Pass::BackwardData:
      op = [&, f = pick(cpu::conv2d_backward_data, cpu::conv2d_backward_data_reference,
                        cpu::conv2d_backward_data_gemm, cpu::conv2d_backward_data_direct)] {
        f(ctx, g, dy.data(), w.data(), out.data());
      };
      break;
    case Pass::BackwardFilter:
      op = [&, f = pick(cpu::conv2d_backward_filter, cpu::conv2d_backward_filter_reference,
                        cpu::conv2d_backward_filter_gemm, cpu::conv2d_backward_filter_direct)] {
        f(ctx, g, x.data(), dy.data(), out.data());
      };
      break;
  }
  timed_loop(state, g.flops(), "GFLOP/s", op);
  state.counters["sgemm_GFLOP/s"] = ceiling;
  state.counters["ratio"] = state.counters["GFLOP/s"].value / ceiling;
}

// ---- the memory-bound ops ----------------------------------------------------------------
// Ceiling: a batch-50 activation (at most 13 MB) stays in the 32 MiB L3 from one iteration to
// the next, so these run at cache speed (~150-200 GB/s on two Zen 4 cores, what relu reaches);
// batch-256 ones stream from DRAM, where BM_memcpy (~30 GB/s) is the ceiling. Bytes counted are
// the minimum traffic: each input read once, each output written once.

struct Act {
  int n, hw, c;  // activations [n, hw, hw, c]
  int64_t numel() const { return int64_t(n) * hw * hw * c; }
  std::string str() const { return format("n%d/%dx%dx%d", n, hw, hw, c); }
};

void bench_batchnorm(benchmark::State& state, Act a, int kind) {
  Context& ctx = context();
  const int64_t m = int64_t(a.n) * a.hw * a.hw, size = a.numel();
  const std::vector<float> x = random_floats(size), dy = random_floats(size);
  const std::vector<float> gamma = random_floats(a.c, 0.5f, 1.5f), beta = random_floats(a.c);
  std::vector<float> y(size), dx(size), mean(a.c), invstd(a.c), rm(a.c, 0.f), rv(a.c, 1.f),
      dgamma(a.c), dbeta(a.c);
  cpu::batchnorm_forward_train(ctx, m, a.c, x.data(), gamma.data(), beta.data(), true, y.data(),
                               mean.data(), invstd.data(), rm.data(), rv.data());
  if (kind == 0)  // train forward: read x, write y
    timed_loop(state, 8.0 * size, "GB/s", [&] {
      cpu::batchnorm_forward_train(ctx, m, a.c, x.data(), gamma.data(), beta.data(), true, y.data(),
                                   mean.data(), invstd.data(), rm.data(), rv.data());
    });
  else if (kind == 1)  // inference: read x, write y
    timed_loop(state, 8.0 * size, "GB/s", [&] {
      cpu::batchnorm_forward_infer(ctx, m, a.c, x.data(), gamma.data(), beta.data(), rm.data(),
                                   rv.data(), true, y.data());
    });
  else  // backward: read x, y, dy, write dx
    timed_loop(state, 16.0 * size, "GB/s", [&] {
      cpu::batchnorm_backward(ctx, m, a.c, x.data(), y.data(), dy.data(), gamma.data(), mean.data(),
                              invstd.data(), true, dx.data(), dgamma.data(), dbeta.data());
    });
}

void bench_relu(benchmark::State& state, Act a, bool backward) {
  Context& ctx = context();
  const int64_t n = a.numel();
  const std::vector<float> x = random_floats(n), dy = random_floats(n);
  std::vector<float> y(n), dx(n);
  if (!backward)
    timed_loop(state, 8.0 * n, "GB/s", [&] { cpu::relu_forward(ctx, n, x.data(), y.data()); });
  else
    timed_loop(state, 12.0 * n, "GB/s",
               [&] { cpu::relu_backward(ctx, n, x.data(), dy.data(), dx.data()); });
}

void bench_add_n(benchmark::State& state, Act a, int count) {
  Context& ctx = context();
  const int64_t n = a.numel();
  std::vector<std::vector<float>> inputs;
  std::vector<const float*> ptrs;
  for (int i = 0; i < count; ++i) inputs.push_back(random_floats(n));
  for (const auto& v : inputs) ptrs.push_back(v.data());
  std::vector<float> y(n);
  timed_loop(state, 4.0 * n * (count + 1), "GB/s",
             [&] { cpu::add_n(ctx, n, ptrs.data(), count, y.data()); });
}

void bench_resize(benchmark::State& state, Act a, int ohw, bool backward) {
  Context& ctx = context();
  const int64_t in = a.numel(), out = int64_t(a.n) * ohw * ohw * a.c;
  const std::vector<float> x = random_floats(in), dy = random_floats(out);
  std::vector<float> y(out), dx(in);
  if (!backward)
    timed_loop(state, 4.0 * double(in + out), "GB/s", [&] {
      cpu::resize_nearest_forward(ctx, a.n, a.hw, a.hw, a.c, ohw, ohw, x.data(), y.data());
    });
  else
    timed_loop(state, 4.0 * double(in + out), "GB/s", [&] {
      cpu::resize_nearest_backward(ctx, a.n, a.hw, a.hw, a.c, ohw, ohw, dy.data(), dx.data());
    });
}

void bench_channel_resize(benchmark::State& state, Act a, int c_out, bool backward) {
  Context& ctx = context();
  const int64_t m = int64_t(a.n) * a.hw * a.hw;
  const std::vector<float> x = random_floats(m * a.c), dy = random_floats(m * c_out);
  std::vector<float> y(m * c_out), dx(m * a.c);
  const double bytes = 4.0 * double(m) * (a.c + c_out);
  if (!backward)
    timed_loop(state, bytes, "GB/s",
               [&] { cpu::channel_resize_forward(ctx, m, a.c, c_out, x.data(), y.data()); });
  else
    timed_loop(state, bytes, "GB/s",
               [&] { cpu::channel_resize_backward(ctx, m, a.c, c_out, dy.data(), dx.data()); });
}

void bench_pool(benchmark::State& state, Act a, bool backward) {
  Context& ctx = context();
  const int hw = a.hw * a.hw;
  const std::vector<float> x = random_floats(a.numel()), dy = random_floats(int64_t(a.n) * a.c);
  std::vector<float> y(int64_t(a.n) * a.c), dx(a.numel());
  const double bytes = 4.0 * double(a.numel() + int64_t(a.n) * a.c);
  if (!backward)
    timed_loop(state, bytes, "GB/s",
               [&] { cpu::global_avg_pool_forward(ctx, a.n, hw, a.c, x.data(), y.data()); });
  else
    timed_loop(state, bytes, "GB/s",
               [&] { cpu::global_avg_pool_backward(ctx, a.n, hw, a.c, dy.data(), dx.data()); });
}

// Ceiling: tiny GEMMs (50 x 256 x 10) are bound by call overhead, far from SGEMM's peak.
void bench_fc(benchmark::State& state, int n, int in, int out, bool backward) {
  Context& ctx = context();
  const std::vector<float> x = random_floats(int64_t(n) * in), w = random_floats(int64_t(out) * in),
                           b = random_floats(out), dy = random_floats(int64_t(n) * out);
  std::vector<float> y(int64_t(n) * out), dx(x.size()), dw(w.size()), db(out);
  const double flops = 2.0 * n * in * out;
  if (!backward)
    timed_loop(state, flops, "GFLOP/s",
               [&] { cpu::fc_forward(ctx, n, in, out, x.data(), w.data(), b.data(), y.data()); });
  else
    timed_loop(state, 2 * flops, "GFLOP/s", [&] {
      cpu::fc_backward(ctx, n, in, out, x.data(), w.data(), dy.data(), dx.data(), dw.data(),
                       db.data());
    });
}

// Ceiling: ~exp() per logit; 50 x 10 takes about a microsecond, reported as logits read.
void bench_softmax(benchmark::State& state, int n, int classes) {
  Context& ctx = context();
  const std::vector<float> logits = random_floats(int64_t(n) * classes, -4.f, 4.f);
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = i % classes;
  std::vector<float> d(logits.size());
  LossResult result{};
  timed_loop(state, 8.0 * double(logits.size()), "GB/s", [&] {
    cpu::softmax_cross_entropy(ctx, n, classes, logits.data(), labels.data(), &result, d.data());
  });
}

// Ceiling: memcpy; reads w, g, v and writes w, v (20 bytes per parameter).
void bench_sgd(benchmark::State& state, int64_t n) {
  Context& ctx = context();
  std::vector<float> w = random_floats(n), v = random_floats(n);
  const std::vector<float> g = random_floats(n);
  timed_loop(state, 20.0 * double(n), "GB/s",
             [&] { cpu::sgd_update(ctx, n, 1e-6f, 0.9f, 1e-4f, w.data(), g.data(), v.data()); });
}

// Ceiling: compute, ~10 Philox rounds + log/sqrt/sincos per pair of weights; reported as bytes
// written.
void bench_he_init(benchmark::State& state, int64_t n) {
  Context& ctx = context();
  std::vector<float> w(n);
  PhiloxState rng{42, 0, 0};
  timed_loop(state, 4.0 * double(n), "GB/s",
             [&] { cpu::he_init(ctx, n, 9 * 256, rng.take((uint64_t(n) + 1) / 2), w.data()); });
}

// Ceiling: memcpy; reads uint8 pixels, writes floats (5 bytes per value).
void bench_augment(benchmark::State& state, int n, int pad, bool flip) {
  Context& ctx = context();
  const int h = 32, w = 32, c = 3, images = 1000;
  std::vector<uint8_t> data(int64_t(images) * h * w * c);
  std::mt19937 gen(7);
  for (uint8_t& p : data) p = uint8_t(gen());
  std::vector<int32_t> indices(n);
  for (int i = 0; i < n; ++i) indices[i] = int32_t(gen() % images);
  const float mean[3] = {0.49f, 0.48f, 0.45f}, inv_std[3] = {4.f, 4.f, 4.f};
  std::vector<float> out(int64_t(n) * h * w * c);
  PhiloxState rng{42, 0, 0};
  timed_loop(state, 5.0 * double(out.size()), "GB/s", [&] {
    cpu::augment_batch(ctx, data.data(), indices.data(), n, h, w, c, pad, flip, mean, inv_std,
                       rng.take(n), out.data());
  });
}

// ---- the shape lists ---------------------------------------------------------------------

template <typename F>
void add(const std::string& name, F f, double min_time = 0.3) {
  benchmark::RegisterBenchmark(name.c_str(), f)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(min_time)
      ->MinWarmUpTime(0.05);
}

void register_conv(const ConvGeometry& g, Impl impl = Impl::Default, const char* suffix = "") {
  add(conv_name((std::string("conv_fwd") + suffix).c_str(), g),
      [g, impl](benchmark::State& s) { bench_conv(s, g, Pass::Forward, impl); });
  add(conv_name((std::string("conv_bwd_data") + suffix).c_str(), g),
      [g, impl](benchmark::State& s) { bench_conv(s, g, Pass::BackwardData, impl); });
  add(conv_name((std::string("conv_bwd_filter") + suffix).c_str(), g),
      [g, impl](benchmark::State& s) { bench_conv(s, g, Pass::BackwardFilter, impl); });
}

void register_all(bool full) {
  add("memcpy/64MiB", BM_memcpy);

  // Convolutions. Evolved CIFAR-10 nets shrink space while they grow channels, so the default
  // set pairs 32x32 with 16-64 channels, 16x16 with 32-128 and 8x8 with 64-256.
  const std::vector<int> batches = full ? std::vector<int>{50, 256} : std::vector<int>{50};
  const std::pair<int, int> kernels[] = {{1, 1}, {3, 3}, {5, 5}, {1, 3}, {3, 1}};
  for (int n : batches) {
    if (full) {
      for (auto [kh, kw] : kernels)
        for (int hw : {32, 16, 8})
          for (int c : {16, 32, 64, 128, 256}) register_conv(conv_geometry(n, hw, c, c, kh, kw, 1));
    } else {
      const std::pair<int, int> sizes_3x3[] = {{32, 16},  {32, 32}, {32, 64}, {16, 32}, {16, 64},
                                               {16, 128}, {8, 64},  {8, 128}, {8, 256}};
      for (auto [hw, c] : sizes_3x3) register_conv(conv_geometry(n, hw, c, c, 3, 3, 1));
      for (auto [hw, c] : {std::pair{32, 32}, {16, 128}, {8, 256}})
        register_conv(conv_geometry(n, hw, c, c, 1, 1, 1));
      for (auto [hw, c] : {std::pair{32, 32}, {16, 64}})
        register_conv(conv_geometry(n, hw, c, c, 5, 5, 1));
      for (auto [hw, c] : {std::pair{32, 32}, {16, 128}}) {
        register_conv(conv_geometry(n, hw, c, c, 1, 3, 1));
        register_conv(conv_geometry(n, hw, c, c, 3, 1, 1));
      }
    }
    // A reduction: the stride-2 3x3 that INSERT-CONVOLUTION draws half the time; and a first
    // layer, on the 3-channel image.
    register_conv(conv_geometry(n, 32, 32, 64, 3, 3, 2));
    register_conv(conv_geometry(n, 32, 3, 32, 3, 3, 1));
  }
  // The readable reference, to show what the fast path buys (one small shape; it is slow).
  {
    const ConvGeometry g = conv_geometry(50, 16, 32, 32, 3, 3, 1);
    add(
        conv_name("conv_fwd_reference", g),
        [g](benchmark::State& s) { bench_conv(s, g, Pass::Forward, Impl::Reference); }, 0.1);
  }
  // The layers of evolved Fashion-MNIST nets (data/dna/evolved/: 1 to 23 channels, maps of 28x28
  // down to 2x2), each through both fast paths: where conv2d_prefers_direct() draws its line.
  {
    const ConvGeometry evolved[] = {
        conv_geometry(50, 28, 1, 7, 3, 3, 1),  conv_geometry(50, 28, 7, 14, 3, 3, 4),
        conv_geometry(50, 28, 4, 4, 3, 3, 2),  conv_geometry(50, 14, 4, 5, 3, 3, 1),
        conv_geometry(50, 14, 8, 8, 5, 3, 2),  conv_geometry(50, 7, 14, 14, 3, 3, 2),
        conv_geometry(50, 7, 16, 16, 3, 3, 1), conv_geometry(50, 4, 14, 14, 3, 3, 2),
        conv_geometry(50, 2, 14, 23, 3, 3, 1), conv_geometry(50, 14, 32, 32, 3, 3, 1),
        conv_geometry(50, 28, 8, 8, 3, 3, 1),  conv_geometry(50, 14, 8, 16, 3, 3, 1),
        conv_geometry(50, 28, 16, 16, 3, 3, 1), conv_geometry(50, 14, 16, 16, 3, 3, 1),
        conv_geometry(50, 28, 1, 16, 5, 5, 1), conv_geometry(50, 28, 3, 8, 3, 3, 2),
    };
    for (const ConvGeometry& g : evolved) {
      register_conv(g, Impl::Direct, "_direct");
      register_conv(g, Impl::Gemm, "_gemm");
    }
  }

  // Memory-bound ops on the activations of the default list's three stages.
  for (int n : batches)
    for (Act a : {Act{n, 32, 32}, Act{n, 16, 128}, Act{n, 8, 256}}) {
      const std::string s = a.str();
      const char* shape = s.c_str();
      add(format("bn_relu_fwd_train/%s", shape),
          [a](benchmark::State& st) { bench_batchnorm(st, a, 0); });
      add(format("bn_relu_fwd_infer/%s", shape),
          [a](benchmark::State& st) { bench_batchnorm(st, a, 1); });
      add(format("bn_relu_bwd/%s", shape),
          [a](benchmark::State& st) { bench_batchnorm(st, a, 2); });
      add(format("relu_fwd/%s", shape), [a](benchmark::State& st) { bench_relu(st, a, false); });
      add(format("relu_bwd/%s", shape), [a](benchmark::State& st) { bench_relu(st, a, true); });
      add(format("add_n3/%s", shape), [a](benchmark::State& st) { bench_add_n(st, a, 3); });
      add(format("channel_pad_fwd/%s-%d", shape, 2 * a.c),
          [a](benchmark::State& st) { bench_channel_resize(st, a, 2 * a.c, false); });
      add(format("channel_pad_bwd/%s-%d", shape, 2 * a.c),
          [a](benchmark::State& st) { bench_channel_resize(st, a, 2 * a.c, true); });
      add(format("resize_down_fwd/%s-%d", shape, a.hw / 2),
          [a](benchmark::State& st) { bench_resize(st, a, a.hw / 2, false); });
      add(format("resize_down_bwd/%s-%d", shape, a.hw / 2),
          [a](benchmark::State& st) { bench_resize(st, a, a.hw / 2, true); });
    }
  for (int n : batches) {
    const Act last{n, 8, 256};
    const std::string s = last.str();
    add(format("global_avg_pool_fwd/%s", s.c_str()),
        [last](benchmark::State& st) { bench_pool(st, last, false); });
    add(format("global_avg_pool_bwd/%s", s.c_str()),
        [last](benchmark::State& st) { bench_pool(st, last, true); });
    add(format("fc_fwd/n%d/256-10", n),
        [n](benchmark::State& st) { bench_fc(st, n, 256, 10, false); });
    add(format("fc_bwd/n%d/256-10", n),
        [n](benchmark::State& st) { bench_fc(st, n, 256, 10, true); });
    add(format("softmax_xent/n%d/10", n), [n](benchmark::State& st) { bench_softmax(st, n, 10); });
    add(format("augment/n%d/32x32x3/pad4_flip", n),
        [n](benchmark::State& st) { bench_augment(st, n, 4, true); });
  }
  // One step's optimiser update and a RESET-WEIGHTS of a mid-sized evolved net (~1.2 M weights).
  add("sgd_update/1.2M", [](benchmark::State& s) { bench_sgd(s, 1200000); });
  add("he_init/1.2M", [](benchmark::State& s) { bench_he_init(s, 1200000); });
}

}  // namespace

int main(int argc, char** argv) {
  bool full = false;
  if (const char* env = std::getenv("EVO_BENCH_FULL")) full = std::string(env) == "1";
  // Defaults first, so the user's own flags (parsed later) win.
  std::vector<char*> args = {argv[0], const_cast<char*>("--benchmark_repetitions=3"),
                             const_cast<char*>("--benchmark_report_aggregates_only=true")};
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--full")
      full = true;
    else
      args.push_back(argv[i]);
  }
  register_all(full);
  int count = int(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
  benchmark::AddCustomContext("shape_list",
                              full ? "full (batch 50 and 256)" : "default (batch 50)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
