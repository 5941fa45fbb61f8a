// Google Benchmark of every CUDA op on cuda:0 beside cuBLAS SGEMM and device-copy ceilings. Not a
// test; on a machine without a GPU it prints "no GPU" and exits 0, so it builds and runs anywhere.
//
//   bench_ops_gpu                                 # default set (paired sizes), batch 50 and 256
//   bench_ops_gpu --full  (or EVO_BENCH_FULL=1)   # every channel count at every size (long)
//   bench_ops_gpu --benchmark_out=gpu.json --benchmark_out_format=json
//   python3 bench/to_markdown.py gpu.json         # the README's table
//
// Shapes: 32x32, 16x16 and 8x8 activations, 16..256 channels, batch 50 and 256; 1x1, 3x3, 5x5,
// 1x3 and 3x1 filters. Times come from CUDA events recorded on the context's stream around one op,
// so they are GPU time, not launch overhead. Convolutions run the library's own kernels: the
// default version everywhere, and every version by name on the 3x3 batch-50 shapes (what each
// step of cuda/conv/N_*.cu buys).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bench/common.h"
#include "evo/backend.h"
#include "evo/context.h"
#include "evo/device.h"
#include "evo/error.h"
#include "evo/ops.h"

#if defined(EVO_HAVE_CUDA)
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda/conv/conv.h"
#endif

using namespace evo;
using evo::bench::conv_geometry;
using evo::bench::conv_name;
using evo::bench::format;

#if defined(EVO_HAVE_CUDA)
namespace {

// Failures throw evo::CudaError (file, line, call): benchmark setup has no way to go on.
#define BENCH_CUDA(call) EVO_CUDA_CHECK(call)

Context& context() {
  static Context ctx(Device::cuda(0), 1);
  return ctx;
}
cudaStream_t stream() {
  return static_cast<cudaStream_t>(context().stream());
}

// printf into a std::string (benchmark names).
// A device buffer of random values (or given bytes); freed with the benchmark.
template <typename T = float>
struct Buffer {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Buffer(std::size_t count) : n(count) {
    BENCH_CUDA(cudaMalloc(&p, std::max<std::size_t>(1, n) * sizeof(T)));
  }
  Buffer(const Buffer&) = delete;
  ~Buffer() { cudaFree(p); }
  void upload(const std::vector<T>& host) {
    BENCH_CUDA(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    // A pageable upload may still be in flight when cudaMemcpy returns, and the context's
    // stream does not wait for the null stream.
    BENCH_CUDA(cudaDeviceSynchronize());
  }
};
// Random values: uniform in [lo, hi) from the host for small buffers (parameters, where the
// range matters: variances must be positive); normal(0, 1) drawn on the GPU by the library's own
// he_init for activations, where generating tens of millions of numbers on the host would take
// longer than the benchmark.
std::unique_ptr<Buffer<float>> random_buffer(int64_t n, float lo = -1.f, float hi = 1.f) {
  static std::mt19937 gen(12345);
  static PhiloxState rng{12345, 0, 0};
  auto b = std::make_unique<Buffer<float>>(n);
  if (n <= (int64_t(1) << 16)) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(gen);
    b->upload(v);
  } else {
    ops(DeviceKind::CUDA).he_init(context(), n, 2, rng.take((uint64_t(n) + 1) / 2), b->p);
    BENCH_CUDA(cudaStreamSynchronize(stream()));
  }
  return b;
}

// GPU milliseconds of one call of `op`, from events on the context's stream.
double gpu_ms(const std::function<void()>& op) {
  static cudaEvent_t start = nullptr, stop = nullptr;
  if (!start) {
    BENCH_CUDA(cudaEventCreate(&start));
    BENCH_CUDA(cudaEventCreate(&stop));
  }
  BENCH_CUDA(cudaEventRecord(start, stream()));
  op();
  BENCH_CUDA(cudaEventRecord(stop, stream()));
  BENCH_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
  return ms;
}

// Times `op` per iteration (manual time = GPU time) after two warm-up calls, and reports `work`
// per iteration as a rate in units of 1e9 (GFLOP/s for flops, GB/s for bytes) under `counter`.
void timed_loop(benchmark::State& state, double work, const char* counter,
                const std::function<void()>& op) {
  op();
  op();
  BENCH_CUDA(cudaStreamSynchronize(stream()));
  double total = 0;
  for (auto _ : state) {
    const double s = gpu_ms(op) / 1e3;
    state.SetIterationTime(s);
    total += s;
  }
  state.counters[counter] = work * double(state.iterations()) / total / 1e9;
}

// ---- ceilings ----------------------------------------------------------------------------

// cuBLAS SGEMM (FP32, no TF32: cuBLAS's default math mode) of the forward pass's GEMM
// [M, K] x [N, K]^T: the ceiling for all three passes of a convolution of that shape (they are
// GEMMs of the same M, N, K, transposed). H100 SXM FP32 peak: 67 TFLOP/s. Median of >= 10 runs.
double sgemm_ceiling(int64_t m, int64_t n, int64_t k) {
  static std::map<std::tuple<int64_t, int64_t, int64_t>, double> cache;
  const auto key = std::make_tuple(m, n, k);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  auto a = random_buffer(m * k), b = random_buffer(n * k);
  Buffer<float> c(m * n);
  cublasHandle_t h = static_cast<cublasHandle_t>(context().blas());
  const float one = 1.f, zero = 0.f;
  // Row-major C[M, N] = A[M, K] B[N, K]^T is column-major C^T[N, M] = B^T^T[N, K] A^T[K, M].
  auto run = [&] {
    if (cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &one, b->p, int(k), a->p,
                    int(k), &zero, c.p, int(n)) != CUBLAS_STATUS_SUCCESS)
      throw Error("cublasSgemm failed for the ceiling of M, N, K = " + std::to_string(m) + ", " +
                  std::to_string(n) + ", " + std::to_string(k));
  };
  run();
  run();
  std::vector<double> times;
  double total = 0;
  while (times.size() < 10 || total < 20) {
    times.push_back(gpu_ms(run));
    total += times.back();
    if (times.size() >= 200) break;
  }
  std::sort(times.begin(), times.end());
  const double gflops =
      2.0 * double(m) * double(n) * double(k) / (times[times.size() / 2] / 1e3) / 1e9;
  cache[key] = gflops;
  return gflops;
}

// Device-to-device copy of 256 MiB: the ceiling of the memory-bound ops (H100 SXM HBM3:
// 3.35 TB/s, of which a copy reaches ~90%). 2 bytes moved per byte copied.
void BM_memcpy(benchmark::State& state) {
  const std::size_t bytes = std::size_t(256) << 20;
  Buffer<char> src(bytes), dst(bytes);
  timed_loop(state, 2.0 * double(bytes), "GB/s", [&] {
    BENCH_CUDA(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, stream()));
  });
}

// ---- convolution -------------------------------------------------------------------------

enum class Pass { Forward, BackwardData, BackwardFilter };

// version 0: the ops table (the library's default); 1..3: that version explicitly.
void bench_conv(benchmark::State& state, ConvGeometry g, Pass pass, int version) {
  Context& ctx = context();
  auto x = random_buffer(int64_t(g.n) * g.h * g.w * g.c_in);
  auto w = random_buffer(g.c_out * g.gemm_k(), -0.1f, 0.1f);
  auto dy = random_buffer(g.gemm_m() * g.c_out);
  Buffer<float> out(pass == Pass::Forward ? dy->n : pass == Pass::BackwardData ? x->n : w->n);
  const double ceiling = sgemm_ceiling(g.gemm_m(), g.gemm_n(), g.gemm_k());
  const OpTable& table = ops(DeviceKind::CUDA);
  std::function<void()> op;
  switch (pass) {
    case Pass::Forward:
      op = [&] {
        if (version)
          cuda::conv2d_forward_version(version, ctx, g, x->p, w->p, out.p);
        else
          table.conv2d_forward(ctx, g, x->p, w->p, out.p);
      };
      break;
    case Pass::BackwardData:
      op = [&] {
        if (version)
          cuda::conv2d_backward_data_version(version, ctx, g, dy->p, w->p, out.p);
        else
          table.conv2d_backward_data(ctx, g, dy->p, w->p, out.p);
      };
      break;
    case Pass::BackwardFilter:
      op = [&] {
        if (version)
          cuda::conv2d_backward_filter_version(version, ctx, g, x->p, dy->p, out.p);
        else
          table.conv2d_backward_filter(ctx, g, x->p, dy->p, out.p);
      };
      break;
  }
  timed_loop(state, g.flops(), "GFLOP/s", op);
  state.counters["sgemm_GFLOP/s"] = ceiling;
  state.counters["ratio"] = state.counters["GFLOP/s"].value / ceiling;
}

// ---- the memory-bound ops ----------------------------------------------------------------
// Ceiling for all of these: BM_memcpy's GB/s. Bytes counted are the minimum traffic (each input
// read once, each output written once), as in bench_ops_cpu.

struct Act {
  int n, hw, c;  // activations [n, hw, hw, c]
  int64_t numel() const { return int64_t(n) * hw * hw * c; }
  std::string str() const { return format("n%d/%dx%dx%d", n, hw, hw, c); }
};

void bench_batchnorm(benchmark::State& state, Act a, int kind) {
  Context& ctx = context();
  const OpTable& t = ops(DeviceKind::CUDA);
  const int64_t m = int64_t(a.n) * a.hw * a.hw, size = a.numel();
  auto x = random_buffer(size), dy = random_buffer(size), y = random_buffer(size),
       dx = random_buffer(size);
  auto gamma = random_buffer(a.c, 0.5f, 1.5f), beta = random_buffer(a.c), mean = random_buffer(a.c),
       invstd = random_buffer(a.c, 0.5f, 1.f), rm = random_buffer(a.c),
       rv = random_buffer(a.c, 0.5f, 1.5f), dgamma = random_buffer(a.c), dbeta = random_buffer(a.c);
  if (kind == 0)
    timed_loop(state, 8.0 * size, "GB/s", [&] {
      t.batchnorm_forward_train(ctx, m, a.c, x->p, gamma->p, beta->p, true, y->p, mean->p,
                                invstd->p, rm->p, rv->p);
    });
  else if (kind == 1)
    timed_loop(state, 8.0 * size, "GB/s", [&] {
      t.batchnorm_forward_infer(ctx, m, a.c, x->p, gamma->p, beta->p, rm->p, rv->p, true, y->p);
    });
  else
    timed_loop(state, 16.0 * size, "GB/s", [&] {
      t.batchnorm_backward(ctx, m, a.c, x->p, y->p, dy->p, gamma->p, mean->p, invstd->p, true,
                           dx->p, dgamma->p, dbeta->p);
    });
}

void bench_relu(benchmark::State& state, Act a, bool backward) {
  Context& ctx = context();
  const int64_t n = a.numel();
  auto x = random_buffer(n), dy = random_buffer(n), y = random_buffer(n), dx = random_buffer(n);
  if (!backward)
    timed_loop(state, 8.0 * n, "GB/s",
               [&] { ops(DeviceKind::CUDA).relu_forward(ctx, n, x->p, y->p); });
  else
    timed_loop(state, 12.0 * n, "GB/s",
               [&] { ops(DeviceKind::CUDA).relu_backward(ctx, n, x->p, dy->p, dx->p); });
}

void bench_add_n(benchmark::State& state, Act a, int count) {
  Context& ctx = context();
  const int64_t n = a.numel();
  std::vector<std::unique_ptr<Buffer<float>>> inputs;
  std::vector<const float*> ptrs;
  for (int i = 0; i < count; ++i) {
    inputs.push_back(random_buffer(n));
    ptrs.push_back(inputs.back()->p);
  }
  Buffer<float> y(n);
  timed_loop(state, 4.0 * n * (count + 1), "GB/s",
             [&] { ops(DeviceKind::CUDA).add_n(ctx, n, ptrs.data(), count, y.p); });
}

void bench_resize(benchmark::State& state, Act a, int ohw, bool backward) {
  Context& ctx = context();
  const int64_t in = a.numel(), out = int64_t(a.n) * ohw * ohw * a.c;
  auto x = random_buffer(in), dy = random_buffer(out);
  Buffer<float> y(out), dx(in);
  timed_loop(state, 4.0 * double(in + out), "GB/s", [&] {
    if (!backward)
      ops(DeviceKind::CUDA).resize_nearest_forward(ctx, a.n, a.hw, a.hw, a.c, ohw, ohw, x->p, y.p);
    else
      ops(DeviceKind::CUDA)
          .resize_nearest_backward(ctx, a.n, a.hw, a.hw, a.c, ohw, ohw, dy->p, dx.p);
  });
}

void bench_channel_resize(benchmark::State& state, Act a, int c_out, bool backward) {
  Context& ctx = context();
  const int64_t m = int64_t(a.n) * a.hw * a.hw;
  auto x = random_buffer(m * a.c), dy = random_buffer(m * c_out);
  Buffer<float> y(m * c_out), dx(m * a.c);
  timed_loop(state, 4.0 * double(m) * (a.c + c_out), "GB/s", [&] {
    if (!backward)
      ops(DeviceKind::CUDA).channel_resize_forward(ctx, m, a.c, c_out, x->p, y.p);
    else
      ops(DeviceKind::CUDA).channel_resize_backward(ctx, m, a.c, c_out, dy->p, dx.p);
  });
}

void bench_pool(benchmark::State& state, Act a, bool backward) {
  Context& ctx = context();
  const int hw = a.hw * a.hw;
  auto x = random_buffer(a.numel()), dy = random_buffer(int64_t(a.n) * a.c);
  Buffer<float> y(int64_t(a.n) * a.c), dx(a.numel());
  timed_loop(state, 4.0 * double(a.numel() + int64_t(a.n) * a.c), "GB/s", [&] {
    if (!backward)
      ops(DeviceKind::CUDA).global_avg_pool_forward(ctx, a.n, hw, a.c, x->p, y.p);
    else
      ops(DeviceKind::CUDA).global_avg_pool_backward(ctx, a.n, hw, a.c, dy->p, dx.p);
  });
}

// Ceiling: tiny GEMMs (50 x 256 x 10) are bound by launch latency (~3 us), far from SGEMM's peak.
void bench_fc(benchmark::State& state, int n, int in, int out, bool backward) {
  Context& ctx = context();
  auto x = random_buffer(int64_t(n) * in), w = random_buffer(int64_t(out) * in),
       b = random_buffer(out), dy = random_buffer(int64_t(n) * out);
  Buffer<float> y(int64_t(n) * out), dx(x->n), dw(w->n), db(out);
  const double flops = 2.0 * n * in * out;
  if (!backward)
    timed_loop(state, flops, "GFLOP/s",
               [&] { ops(DeviceKind::CUDA).fc_forward(ctx, n, in, out, x->p, w->p, b->p, y.p); });
  else
    timed_loop(state, 2 * flops, "GFLOP/s", [&] {
      ops(DeviceKind::CUDA).fc_backward(ctx, n, in, out, x->p, w->p, dy->p, dx.p, dw.p, db.p);
    });
}

// Ceiling: launch latency; 50 x 10 logits are 2 KB. Reported as logits read + gradient written.
void bench_softmax(benchmark::State& state, int n, int classes) {
  Context& ctx = context();
  auto logits = random_buffer(int64_t(n) * classes, -4.f, 4.f);
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = i % classes;
  Buffer<int32_t> lab(n);
  lab.upload(labels);
  Buffer<float> d(logits->n);
  Buffer<LossResult> result(1);
  timed_loop(state, 8.0 * double(logits->n), "GB/s", [&] {
    ops(DeviceKind::CUDA).softmax_cross_entropy(ctx, n, classes, logits->p, lab.p, result.p, d.p);
  });
}

// Ceiling: memcpy; reads w, g, v and writes w, v (20 bytes per parameter).
void bench_sgd(benchmark::State& state, int64_t n) {
  Context& ctx = context();
  auto w = random_buffer(n), v = random_buffer(n), g = random_buffer(n);
  timed_loop(state, 20.0 * double(n), "GB/s", [&] {
    ops(DeviceKind::CUDA).sgd_update(ctx, n, 1e-6f, 0.9f, 1e-4f, w->p, g->p, v->p);
  });
}

// Ceiling: Philox (10 rounds) + log/sqrt/sincos per pair of weights; reported as bytes written.
void bench_he_init(benchmark::State& state, int64_t n) {
  Context& ctx = context();
  Buffer<float> w(n);
  PhiloxState rng{42, 0, 0};
  timed_loop(state, 4.0 * double(n), "GB/s", [&] {
    ops(DeviceKind::CUDA).he_init(ctx, n, 9 * 256, rng.take((uint64_t(n) + 1) / 2), w.p);
  });
}

// Ceiling: memcpy; reads uint8 pixels, writes floats (5 bytes per value).
void bench_augment(benchmark::State& state, int n, int pad, bool flip) {
  Context& ctx = context();
  const int h = 32, w = 32, c = 3, images = 1000;
  std::mt19937 gen(7);
  std::vector<uint8_t> data(int64_t(images) * h * w * c);
  for (uint8_t& p : data) p = uint8_t(gen());
  std::vector<int32_t> indices(n);
  for (int i = 0; i < n; ++i) indices[i] = int32_t(gen() % images);
  Buffer<uint8_t> data_d(data.size());
  data_d.upload(data);
  Buffer<int32_t> idx(n);
  idx.upload(indices);
  Buffer<float> mean(c), inv_std(c), out(int64_t(n) * h * w * c);
  mean.upload({0.49f, 0.48f, 0.45f});
  inv_std.upload({4.f, 4.f, 4.f});
  PhiloxState rng{42, 0, 0};
  timed_loop(state, 5.0 * double(out.n), "GB/s", [&] {
    ops(DeviceKind::CUDA)
        .augment_batch(ctx, data_d.p, idx.p, n, h, w, c, pad, flip, mean.p, inv_std.p, rng.take(n),
                       out.p);
  });
}

// ---- the shape lists ---------------------------------------------------------------------

template <typename F>
void add(const std::string& name, F f, double min_time = 0.05) {
  benchmark::RegisterBenchmark(name.c_str(), f)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(min_time);
}

void register_conv(const ConvGeometry& g, bool all_versions) {
  const std::pair<const char*, Pass> passes[] = {{"conv_fwd", Pass::Forward},
                                                 {"conv_bwd_data", Pass::BackwardData},
                                                 {"conv_bwd_filter", Pass::BackwardFilter}};
  for (auto [op, pass] : passes) {
    add(conv_name(op, g), [g, pass](benchmark::State& s) { bench_conv(s, g, pass, 0); });
    if (!all_versions) continue;
    for (int v = 1; v <= kConvVersionCount; ++v) {
      const std::string name = format("%s_v%d_%s", op, v, cuda::conv_version_name(v));
      add(conv_name(name.c_str(), g),
          [g, pass, v](benchmark::State& s) { bench_conv(s, g, pass, v); });
    }
  }
}

void register_all(bool full) {
  add("memcpy_d2d/256MiB", BM_memcpy);

  // Convolutions. Evolved CIFAR-10 nets shrink space while they grow channels, so the default
  // set pairs 32x32 with 16-64 channels, 16x16 with 32-128 and 8x8 with 64-256; --full takes
  // every channel count 16..256 at every size.
  const std::pair<int, int> kernels[] = {{1, 1}, {3, 3}, {5, 5}, {1, 3}, {3, 1}};
  std::vector<std::pair<int, int>> sizes;  // (hw, channels)
  for (int hw : {32, 16, 8})
    for (int c : {16, 32, 64, 128, 256}) {
      const bool paired =
          (hw == 32 && c <= 64) || (hw == 16 && c >= 32 && c <= 128) || (hw == 8 && c >= 64);
      if (full || paired) sizes.push_back({hw, c});
    }
  for (int n : {50, 256}) {
    for (auto [kh, kw] : kernels)
      for (auto [hw, c] : sizes)
        register_conv(conv_geometry(n, hw, c, c, kh, kw, 1), n == 50 && kh == 3 && kw == 3);
    // A reduction: the stride-2 3x3 that INSERT-CONVOLUTION draws half the time.
    register_conv(conv_geometry(n, 32, 32, 64, 3, 3, 2), n == 50);
  }

  // Memory-bound ops on the activations of the three stages.
  for (int n : {50, 256})
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
  for (int n : {50, 256}) {
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
#endif  // EVO_HAVE_CUDA

int main(int argc, char** argv) {
#if defined(EVO_HAVE_CUDA)
  const GpuInventory gpus = discover_gpus();
  if (gpus.count == 0) {
    std::printf("bench_ops_gpu: no GPU (%s); nothing to measure\n", gpus.reason.c_str());
    return 0;
  }
  bool full = false;
  if (const char* env = std::getenv("EVO_BENCH_FULL")) full = std::string(env) == "1";
  std::vector<char*> args = {argv[0]};
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
  benchmark::AddCustomContext("gpu", gpus.names.empty() ? "?" : gpus.names[0]);
  benchmark::AddCustomContext("conv_default_version",
                              cuda::conv_version_name(cuda::conv_forward_version()));
  benchmark::AddCustomContext("shape_list", full ? "full" : "default (paired sizes)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
#else
  (void)argc;
  (void)argv;
  std::printf("bench_ops_gpu: no GPU (this evo was built without CUDA); nothing to measure\n");
  return 0;
#endif
}
