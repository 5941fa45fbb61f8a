// Google Benchmark of every op of ops.h on one device, over the shapes of evolved CIFAR-10 nets,
// each beside its ceiling measured in the same run: the device's SGEMM (OpenBLAS on the CPU,
// cuBLAS on a GPU) of every convolution's GEMM shape, and its memory copy. Not a test (tests/
// checks values); on the emulator a smoke run of tiny shapes (its speed says nothing of a GPU's).
//
//   bench_ops                                   # CPU default set, batch 50, ~2 min on 2 cores
//   bench_ops --device cuda:0                   # GPU default set (paired sizes), batch 50, 256
//   bench_ops --full  (or EVO_BENCH_FULL=1)     # every shape (long)
//   bench_ops --device cuda:0 --conv-version 2  # one kernel of cuda/conv/N_*.cu, all its shapes
//   bench_ops --device emu --benchmark_min_time=0.01  # every benchmark, tiny, on the emulator
//   bench_ops --benchmark_out=ops.json --benchmark_out_format=json
//   python3 bench/to_markdown.py ops.json       # the README's table
//
// Times: the wall clock on the CPU (the ops use every OpenMP thread; OMP_NUM_THREADS picks how
// many) and on the emulator; CUDA events recorded on the context's stream around one op on a GPU,
// so GPU time, not launch overhead. The CPU runs 3 repetitions and reports mean/median/stddev
// unless the command line says otherwise. Convolutions run the library's own code: the ops table
// everywhere (what evo runs), beside it on the CPU both fast paths forced on evolved layers and
// the readable reference, on a GPU every kernel version (cuda/conv/N_*.cu) on the 3x3 batch-50
// shapes: what each step buys.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench/common.h"
#include "cuda/conv/conv.h"
#include "cuda/emu/runtime.h"
#include "evo/backend.h"
#include "evo/context.h"
#include "evo/device.h"
#include "evo/error.h"
#include "evo/ops.h"
#include "src/cpu/blas.h"
#include "src/cpu/conv.h"

#if defined(EVO_HAVE_CUDA)
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

using namespace evo;
using evo::bench::conv_geometry;
using evo::bench::conv_name;
using evo::bench::format;

namespace {

// ---- the device under measurement --------------------------------------------------------------

struct Options {
  Device device = Device::cpu();
  bool full = false;            // every shape instead of the default set
  int conv_version = 0;         // --conv-version N: only kernel version N's convolutions
  bool min_time_given = false;  // --benchmark_min_time on the command line wins over ours
};
Options& options() {
  static Options o;
  return o;
}
bool on_cpu() {
  return !options().device.is_gpu_like();
}

Context& context() {
  static Context ctx(options().device, 1);
  return ctx;
}

// A buffer on the device (host memory on the CPU), freed with the benchmark.
template <typename T = float>
struct Buffer {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Buffer(std::size_t count) : n(count) {
    p = static_cast<T*>(context().backend().allocate(std::max<std::size_t>(1, n) * sizeof(T),
                                                     context().device().ordinal));
  }
  Buffer(const Buffer&) = delete;
  ~Buffer() { context().backend().deallocate(p, context().device().ordinal); }
  void upload(const std::vector<T>& host) {
    context().backend().copy(p, host.data(), host.size() * sizeof(T), CopyKind::HostToDevice,
                             context().stream());
    context().synchronize();
  }
};

// Random values: uniform in [lo, hi) from the host on the CPU, and for small buffers anywhere
// (parameters, where the range matters: variances must be positive); on a GPU normal(0, 1) drawn
// by the library's own he_init for activations, where generating tens of millions of numbers on
// the host would take longer than the benchmark.
std::unique_ptr<Buffer<float>> random_buffer(int64_t n, float lo = -1.f, float hi = 1.f) {
  static std::mt19937 gen(12345);
  static PhiloxState rng{12345, 0, 0};
  auto b = std::make_unique<Buffer<float>>(n);
  if (on_cpu() || n <= (int64_t(1) << 16)) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(gen);
    b->upload(v);
  } else {
    ops(options().device.kind).he_init(context(), n, 2, rng.take((uint64_t(n) + 1) / 2), b->p);
    context().synchronize();
  }
  return b;
}

// ---- timing ------------------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

#if defined(EVO_HAVE_CUDA)
// GPU milliseconds of one call of `op`, from events on the context's stream.
double cuda_ms(const std::function<void()>& op) {
  static cudaEvent_t start = nullptr, stop = nullptr;
  if (!start) {
    EVO_CUDA_CHECK(cudaEventCreate(&start));
    EVO_CUDA_CHECK(cudaEventCreate(&stop));
  }
  const auto stream = static_cast<cudaStream_t>(context().stream());
  EVO_CUDA_CHECK(cudaEventRecord(start, stream));
  op();
  EVO_CUDA_CHECK(cudaEventRecord(stop, stream));
  EVO_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  EVO_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  return ms;
}
#endif

// Seconds of one call of `op` on the device.
double seconds_of(const std::function<void()>& op) {
#if defined(EVO_HAVE_CUDA)
  if (options().device.kind == DeviceKind::CUDA) return cuda_ms(op) / 1e3;
#endif
  // The CPU's ops and the emulator's kernels have finished when they return.
  const auto t0 = Clock::now();
  op();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Times `op` per iteration (manual time) and reports `work` per iteration as a rate in units of
// 1e9 (GFLOP/s for flops, GB/s for bytes) under `counter`. On a GPU two calls first (lazy module
// loading, cuBLAS heuristics); the CPU warms up for 50 ms instead (add()).
void timed_loop(benchmark::State& state, double work, const char* counter,
                const std::function<void()>& op) {
  if (!on_cpu()) {
    op();
    op();
    context().synchronize();
  }
  double total = 0;
  for (auto _ : state) {
    const double s = seconds_of(op);
    state.SetIterationTime(s);
    total += s;
  }
  state.counters[counter] = work * double(state.iterations()) / total / 1e9;
}

// ---- ceilings ----------------------------------------------------------------------------------

// Row-major c[M, N] = a[M, K] b[N, K]^T with the device's BLAS: OpenBLAS on the CPU, cuBLAS (the
// emulator's, computed by OpenBLAS, on emu). For cuBLAS's column-major view that is
// c^T[N, M] = b[N, K] a^T[K, M].
void device_sgemm(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  const float one = 1.f, zero = 0.f;
  bool ok = true;
  switch (options().device.kind) {
    case DeviceKind::CPU:
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.f, a, k, b, k, 0.f, c, n);
      break;
    case DeviceKind::EMU:
// With CUDA, cublas_v2.h defines cublasSgemm as a macro for cublasSgemm_v2, which would rename
// the emulator's function too: the emulator keeps the plain name.
#pragma push_macro("cublasSgemm")
#undef cublasSgemm
      ok = emu::cublasSgemm(static_cast<emu::cublasHandle_t>(context().blas()), emu::CUBLAS_OP_T,
                            emu::CUBLAS_OP_N, int(n), int(m), int(k), &one, b, int(k), a, int(k),
                            &zero, c, int(n)) == emu::CUBLAS_STATUS_SUCCESS;
#pragma pop_macro("cublasSgemm")
      break;
    case DeviceKind::CUDA:
#if defined(EVO_HAVE_CUDA)
      ok = cublasSgemm(static_cast<cublasHandle_t>(context().blas()), CUBLAS_OP_T, CUBLAS_OP_N,
                       int(n), int(m), int(k), &one, b, int(k), a, int(k), &zero, c,
                       int(n)) == CUBLAS_STATUS_SUCCESS;
#endif
      break;
  }
  if (!ok)
    throw Error("SGEMM failed for the ceiling of M, N, K = " + std::to_string(m) + ", " +
                std::to_string(n) + ", " + std::to_string(k));
}

// SGEMM of the forward pass's GEMM [M, K] x [N, K]^T: the ceiling for all three passes of a
// convolution of that shape (they are GEMMs of the same M, N, K, transposed). Measured once per
// shape. CPU: OpenBLAS with its own threads on every core, the best of >= 5 runs and >= 0.3 s
// (the ceiling should be the hardest number to beat); Zen 4 peak is ~100 GFLOP/s per core (two
// 256-bit FMA pipes, 32 flop/cycle at ~3 GHz), OpenBLAS reaches ~200 on both cores for big
// squares and less for the skinny N = Cout shapes of small convolutions. GPU: cuBLAS FP32 (no
// TF32: cuBLAS's default math mode), the median of >= 10 runs and >= 20 ms; H100 SXM FP32 peak
// is 67 TFLOP/s. In host memory (CPU, emulator) rows are capped so A stays under 512 MiB (batch
// 256 of 32x32x256 5x5 would need 6.7 GB): SGEMM's rate is flat in M long before that many rows.
double sgemm_ceiling(int64_t full_m, int64_t n, int64_t k) {
  static std::map<std::tuple<int64_t, int64_t, int64_t>, double> cache;
  const auto key = std::make_tuple(full_m, n, k);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const bool cuda = options().device.kind == DeviceKind::CUDA;
  const int64_t m = cuda ? full_m : std::min(full_m, (int64_t(512) << 20) / (4 * k));
  if (on_cpu()) openblas_set_num_threads(omp_get_max_threads());
  auto a = random_buffer(m * k), b = random_buffer(n * k);
  Buffer<float> c(m * n);
  auto run = [&] { device_sgemm(m, n, k, a->p, b->p, c.p); };
  run();
  run();
  std::vector<double> times;
  double total = 0;
  const std::size_t min_runs = on_cpu() ? 5 : 10, max_runs = on_cpu() ? SIZE_MAX : 200;
  const double min_total = on_cpu() ? 0.3 : 0.02;
  while ((times.size() < min_runs || total < min_total) && times.size() < max_runs) {
    times.push_back(seconds_of(run));
    total += times.back();
  }
  std::sort(times.begin(), times.end());
  const double seconds = on_cpu() ? times.front() : times[times.size() / 2];
  const double gflops = 2.0 * double(m) * double(n) * double(k) / seconds / 1e9;
  if (on_cpu()) {
    // Back to the ops' setting, and let OpenBLAS's idle workers (which spin for ~0.1 s after a
    // threaded call) go to sleep before the convolution is timed.
    cpu::use_single_threaded_blas();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  cache[key] = gflops;
  return gflops;
}

// Memory bandwidth: the ceiling of the memory-bound ops; 2 bytes moved per byte copied (read +
// write). CPU: 64 MiB, past the 32 MiB L3, copied by every thread (DRAM streaming). GPU: a
// device-to-device copy of 256 MiB (H100 SXM HBM3: 3.35 TB/s, of which a copy reaches ~90%).
void bench_memcpy(benchmark::State& state, std::size_t bytes) {
  Buffer<char> src(bytes), dst(bytes);
  src.upload(std::vector<char>(bytes, 1));
  dst.upload(std::vector<char>(bytes, 0));
  if (on_cpu())
    timed_loop(state, 2.0 * double(bytes), "GB/s", [&] {
#pragma omp parallel
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const std::size_t begin = bytes * t / nt, end = bytes * (t + 1) / nt;
        std::memcpy(dst.p + begin, src.p + begin, end - begin);
      }
    });
  else
    timed_loop(state, 2.0 * double(bytes), "GB/s", [&] {
      context().backend().copy(dst.p, src.p, bytes, CopyKind::DeviceToDevice, context().stream());
    });
}

// ---- convolution -------------------------------------------------------------------------------

enum class Pass { Forward, BackwardData, BackwardFilter };

// Which CPU convolution a benchmark times: the ops table's per-shape choice, the readable
// reference, or one of the two fast paths forced.
enum class CpuPath { Table, Reference, Gemm, Direct, Channels };

using ConvFn = void (*)(Context&, const ConvGeometry&, const float*, const float*, float*);
ConvFn conv_fn(Pass pass, CpuPath path) {
  static const ConvFn cpu_paths[][3] = {
      {nullptr, nullptr, nullptr},
      {cpu::conv2d_forward_reference, cpu::conv2d_backward_data_reference,
       cpu::conv2d_backward_filter_reference},
      {cpu::conv2d_forward_gemm, cpu::conv2d_backward_data_gemm, cpu::conv2d_backward_filter_gemm},
      {cpu::conv2d_forward_direct, cpu::conv2d_backward_data_direct,
       cpu::conv2d_backward_filter_direct},
      {cpu::conv2d_forward_channels, cpu::conv2d_backward_data_channels,
       cpu::conv2d_backward_filter_channels},
  };
  if (path != CpuPath::Table) return cpu_paths[int(path)][int(pass)];
  const OpTable& t = ops(options().device.kind);
  return pass == Pass::Forward        ? t.conv2d_forward
         : pass == Pass::BackwardData ? t.conv2d_backward_data
                                      : t.conv2d_backward_filter;
}

// The kernel version the ops table runs on a GPU, for all three passes (0: the default, or
// EVO_CONV_VERSION), and its name.
void select_conv_version(int version) {
  if (options().device.kind == DeviceKind::EMU) {
    emu::set_conv_forward_version(version);
    emu::set_conv_backward_data_version(version);
    emu::set_conv_backward_filter_version(version);
  }
#if defined(EVO_HAVE_CUDA)
  if (options().device.kind == DeviceKind::CUDA) {
    cuda::set_conv_forward_version(version);
    cuda::set_conv_backward_data_version(version);
    cuda::set_conv_backward_filter_version(version);
  }
#endif
}
const char* conv_version_name(int version) {
#if defined(EVO_HAVE_CUDA)
  if (options().device.kind == DeviceKind::CUDA) return cuda::conv_version_name(version);
#endif
  return emu::conv_version_name(version);
}
int default_conv_version() {
#if defined(EVO_HAVE_CUDA)
  if (options().device.kind == DeviceKind::CUDA) return cuda::conv_forward_version();
#endif
  return emu::conv_forward_version();
}

// What a convolution benchmark times: the ops table (version 0, CpuPath::Table), a CPU path, or
// a GPU kernel version through the table; `suffix` goes after the op in the name.
struct ConvImpl {
  std::string suffix;
  CpuPath path = CpuPath::Table;
  int version = 0;
};

// Ceiling: sgemm_ceiling(M, N, K) of the same shape, reported beside the convolution's own
// GFLOP/s as "sgemm_GFLOP/s" and their ratio.
void bench_conv(benchmark::State& state, ConvGeometry g, Pass pass, const ConvImpl& impl) {
  Context& ctx = context();
  auto x = random_buffer(int64_t(g.n) * g.h * g.w * g.c_in);
  auto w = random_buffer(g.c_out * g.gemm_k(), -0.1f, 0.1f);
  auto dy = random_buffer(g.gemm_m() * g.c_out);
  Buffer<float> out(pass == Pass::Forward ? dy->n : pass == Pass::BackwardData ? x->n : w->n);
  const double ceiling = sgemm_ceiling(g.gemm_m(), g.gemm_n(), g.gemm_k());
  // Inputs: forward (x, w), backward data (dy, w), backward filter (x, dy).
  const float* a = pass == Pass::BackwardData ? dy->p : x->p;
  const float* b = pass == Pass::BackwardFilter ? dy->p : w->p;
  const ConvFn f = conv_fn(pass, impl.path);
  if (impl.version) select_conv_version(impl.version);
  timed_loop(state, g.flops(), "GFLOP/s", [&] { f(ctx, g, a, b, out.p); });
  if (impl.version) select_conv_version(0);
  state.counters["sgemm_GFLOP/s"] = ceiling;
  state.counters["ratio"] = state.counters["GFLOP/s"].value / ceiling;
}

// ---- the memory-bound ops ----------------------------------------------------------------------
// Ceiling: on the CPU a batch-50 activation (at most 13 MB) stays in the 32 MiB L3 from one
// iteration to the next, so these run at cache speed (~150-200 GB/s on two Zen 4 cores, what relu
// reaches); batch-256 ones stream from DRAM, where memcpy (~30 GB/s) is the ceiling. On a GPU
// memcpy_d2d's GB/s for all of them. Bytes counted are the minimum traffic: each input read once,
// each output written once.

struct Act {
  int n, hw, c;  // activations [n, hw, hw, c]
  int64_t numel() const { return int64_t(n) * hw * hw * c; }
  std::string str() const { return format("n%d/%dx%dx%d", n, hw, hw, c); }
};

void bench_batchnorm(benchmark::State& state, Act a, int kind) {
  Context& ctx = context();
  const OpTable& t = ops(options().device.kind);
  const int64_t m = int64_t(a.n) * a.hw * a.hw, size = a.numel();
  auto x = random_buffer(size), dy = random_buffer(size);
  auto gamma = random_buffer(a.c, 0.5f, 1.5f), beta = random_buffer(a.c);
  Buffer<float> y(size), dx(size), mean(a.c), invstd(a.c), rm(a.c), rv(a.c), dgamma(a.c),
      dbeta(a.c);
  rm.upload(std::vector<float>(a.c, 0.f));
  rv.upload(std::vector<float>(a.c, 1.f));
  // Real statistics for inference and backward.
  t.batchnorm_forward_train(ctx, m, a.c, x->p, gamma->p, beta->p, true, y.p, mean.p, invstd.p, rm.p,
                            rv.p);
  if (kind == 0)  // train forward: read x, write y
    timed_loop(state, 8.0 * size, "GB/s", [&] {
      t.batchnorm_forward_train(ctx, m, a.c, x->p, gamma->p, beta->p, true, y.p, mean.p, invstd.p,
                                rm.p, rv.p);
    });
  else if (kind == 1)  // inference: read x, write y
    timed_loop(state, 8.0 * size, "GB/s", [&] {
      t.batchnorm_forward_infer(ctx, m, a.c, x->p, gamma->p, beta->p, rm.p, rv.p, true, y.p);
    });
  else  // backward: read x, y, dy, write dx
    timed_loop(state, 16.0 * size, "GB/s", [&] {
      t.batchnorm_backward(ctx, m, a.c, x->p, y.p, dy->p, gamma->p, mean.p, invstd.p, true, dx.p,
                           dgamma.p, dbeta.p);
    });
}

void bench_relu(benchmark::State& state, Act a, bool backward) {
  Context& ctx = context();
  const OpTable& t = ops(options().device.kind);
  const int64_t n = a.numel();
  auto x = random_buffer(n), dy = random_buffer(n);
  Buffer<float> y(n), dx(n);
  if (!backward)
    timed_loop(state, 8.0 * n, "GB/s", [&] { t.relu_forward(ctx, n, x->p, y.p); });
  else
    timed_loop(state, 12.0 * n, "GB/s", [&] { t.relu_backward(ctx, n, x->p, dy->p, dx.p); });
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
             [&] { ops(options().device.kind).add_n(ctx, n, ptrs.data(), count, y.p); });
}

void bench_resize(benchmark::State& state, Act a, int ohw, bool backward) {
  Context& ctx = context();
  const OpTable& t = ops(options().device.kind);
  const int64_t in = a.numel(), out = int64_t(a.n) * ohw * ohw * a.c;
  auto x = random_buffer(in), dy = random_buffer(out);
  Buffer<float> y(out), dx(in);
  timed_loop(state, 4.0 * double(in + out), "GB/s", [&] {
    if (!backward)
      t.resize_nearest_forward(ctx, a.n, a.hw, a.hw, a.c, ohw, ohw, x->p, y.p);
    else
      t.resize_nearest_backward(ctx, a.n, a.hw, a.hw, a.c, ohw, ohw, dy->p, dx.p);
  });
}

void bench_channel_resize(benchmark::State& state, Act a, int c_out, bool backward) {
  Context& ctx = context();
  const OpTable& t = ops(options().device.kind);
  const int64_t m = int64_t(a.n) * a.hw * a.hw;
  auto x = random_buffer(m * a.c), dy = random_buffer(m * c_out);
  Buffer<float> y(m * c_out), dx(m * a.c);
  timed_loop(state, 4.0 * double(m) * (a.c + c_out), "GB/s", [&] {
    if (!backward)
      t.channel_resize_forward(ctx, m, a.c, c_out, x->p, y.p);
    else
      t.channel_resize_backward(ctx, m, a.c, c_out, dy->p, dx.p);
  });
}

void bench_pool(benchmark::State& state, Act a, bool backward) {
  Context& ctx = context();
  const OpTable& t = ops(options().device.kind);
  const int hw = a.hw * a.hw;
  auto x = random_buffer(a.numel()), dy = random_buffer(int64_t(a.n) * a.c);
  Buffer<float> y(int64_t(a.n) * a.c), dx(a.numel());
  timed_loop(state, 4.0 * double(a.numel() + int64_t(a.n) * a.c), "GB/s", [&] {
    if (!backward)
      t.global_avg_pool_forward(ctx, a.n, hw, a.c, x->p, y.p);
    else
      t.global_avg_pool_backward(ctx, a.n, hw, a.c, dy->p, dx.p);
  });
}

// Ceiling: tiny GEMMs (50 x 256 x 10) are bound by call overhead on the CPU and by launch
// latency (~3 us) on a GPU, far from SGEMM's peak.
void bench_fc(benchmark::State& state, int n, int in, int out, bool backward) {
  Context& ctx = context();
  const OpTable& t = ops(options().device.kind);
  auto x = random_buffer(int64_t(n) * in), w = random_buffer(int64_t(out) * in),
       b = random_buffer(out), dy = random_buffer(int64_t(n) * out);
  Buffer<float> y(int64_t(n) * out), dx(x->n), dw(w->n), db(out);
  const double flops = 2.0 * n * in * out;
  if (!backward)
    timed_loop(state, flops, "GFLOP/s",
               [&] { t.fc_forward(ctx, n, in, out, x->p, w->p, b->p, y.p); });
  else
    timed_loop(state, 2 * flops, "GFLOP/s",
               [&] { t.fc_backward(ctx, n, in, out, x->p, w->p, dy->p, dx.p, dw.p, db.p); });
}

// Ceiling: ~exp() per logit on the CPU, launch latency on a GPU; 50 x 10 logits are 2 KB.
// Reported as logits read + gradient written.
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
    ops(options().device.kind)
        .softmax_cross_entropy(ctx, n, classes, logits->p, lab.p, result.p, d.p, n);
  });
}

// Ceiling: memcpy; reads w, g, v and writes w, v (20 bytes per parameter).
void bench_sgd(benchmark::State& state, int64_t n) {
  Context& ctx = context();
  auto w = random_buffer(n), v = random_buffer(n), g = random_buffer(n);
  timed_loop(state, 20.0 * double(n), "GB/s", [&] {
    ops(options().device.kind).sgd_update(ctx, n, 1e-6f, 0.9f, 1e-4f, w->p, g->p, v->p);
  });
}

// Ceiling: compute, Philox (10 rounds) + log/sqrt/sincos per pair of weights; reported as bytes
// written.
void bench_he_init(benchmark::State& state, int64_t n) {
  Context& ctx = context();
  Buffer<float> w(n);
  PhiloxState rng{42, 0, 0};
  timed_loop(state, 4.0 * double(n), "GB/s", [&] {
    ops(options().device.kind).he_init(ctx, n, 9 * 256, rng.take((uint64_t(n) + 1) / 2), w.p);
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
    ops(options().device.kind)
        .augment_batch(ctx, data_d.p, idx.p, n, h, w, c, pad, flip, mean.p, inv_std.p, rng.take(n),
                       nullptr, out.p);
  });
}

// ---- the shape lists ---------------------------------------------------------------------------

// `min_time`: the CPU's default is long enough for its 3 repetitions to agree; a GPU op takes
// microseconds. A --benchmark_min_time on the command line wins.
template <typename F>
void add(const std::string& name, F f, double cpu_min_time = 0.3) {
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(name.c_str(), f);
  b->UseManualTime()->Unit(benchmark::kMillisecond);
  if (!options().min_time_given) b->MinTime(on_cpu() ? cpu_min_time : 0.05);
  if (on_cpu()) b->MinWarmUpTime(0.05);
}

void register_conv(const ConvGeometry& g, const std::vector<ConvImpl>& impls) {
  const std::pair<const char*, Pass> passes[] = {{"conv_fwd", Pass::Forward},
                                                 {"conv_bwd_data", Pass::BackwardData},
                                                 {"conv_bwd_filter", Pass::BackwardFilter}};
  for (auto [op, pass] : passes)
    for (const ConvImpl& impl : impls)
      add(conv_name((op + impl.suffix).c_str(), g),
          [g, pass, impl](benchmark::State& s) { bench_conv(s, g, pass, impl); });
}

// Version v of cuda/conv/N_*.cu, named "_v2_implicit_gemm" after the op.
ConvImpl version_impl(int v) {
  return {format("_v%d_%s", v, conv_version_name(v)), CpuPath::Table, v};
}

// A convolution of a device's list; `versions`: also every GPU kernel version by name.
struct ConvShape {
  ConvGeometry g;
  bool versions = false;
};

// Evolved CIFAR-10 nets shrink space while they grow channels, so the default sets pair 32x32
// with 16-64 channels, 16x16 with 32-128 and 8x8 with 64-256; --full takes every channel count
// 16..256 at every size. Each batch ends with a reduction: the stride-2 3x3 that
// INSERT-CONVOLUTION draws half the time.
std::vector<ConvShape> conv_shapes(const std::vector<int>& batches) {
  const bool full = options().full;
  const std::pair<int, int> kernels[] = {{1, 1}, {3, 3}, {5, 5}, {1, 3}, {3, 1}};
  std::vector<ConvShape> shapes;
  if (options().device.kind == DeviceKind::EMU) {
    // A smoke run: one small shape of each kind, every version.
    for (int n : batches) {
      shapes.push_back({conv_geometry(n, 16, 16, 16, 3, 3, 1), true});
      shapes.push_back({conv_geometry(n, 16, 16, 32, 3, 3, 2), true});
    }
    return shapes;
  }
  if (on_cpu()) {
    for (int n : batches) {
      if (full) {
        for (auto [kh, kw] : kernels)
          for (int hw : {32, 16, 8})
            for (int c : {16, 32, 64, 128, 256})
              shapes.push_back({conv_geometry(n, hw, c, c, kh, kw, 1)});
      } else {
        const std::pair<int, int> sizes_3x3[] = {{32, 16},  {32, 32}, {32, 64}, {16, 32}, {16, 64},
                                                 {16, 128}, {8, 64},  {8, 128}, {8, 256}};
        for (auto [hw, c] : sizes_3x3) shapes.push_back({conv_geometry(n, hw, c, c, 3, 3, 1)});
        for (auto [hw, c] : {std::pair{32, 32}, {16, 128}, {8, 256}})
          shapes.push_back({conv_geometry(n, hw, c, c, 1, 1, 1)});
        for (auto [hw, c] : {std::pair{32, 32}, {16, 64}})
          shapes.push_back({conv_geometry(n, hw, c, c, 5, 5, 1)});
        for (auto [hw, c] : {std::pair{32, 32}, {16, 128}}) {
          shapes.push_back({conv_geometry(n, hw, c, c, 1, 3, 1)});
          shapes.push_back({conv_geometry(n, hw, c, c, 3, 1, 1)});
        }
      }
      shapes.push_back({conv_geometry(n, 32, 32, 64, 3, 3, 2)});
      // A first layer, on the 3-channel image.
      shapes.push_back({conv_geometry(n, 32, 3, 32, 3, 3, 1)});
    }
    return shapes;
  }
  // GPU: these names and this order are bench/torch_conv_baseline.py's too.
  std::vector<std::pair<int, int>> sizes;  // (hw, channels)
  for (int hw : {32, 16, 8})
    for (int c : {16, 32, 64, 128, 256}) {
      const bool paired =
          (hw == 32 && c <= 64) || (hw == 16 && c >= 32 && c <= 128) || (hw == 8 && c >= 64);
      if (full || paired) sizes.push_back({hw, c});
    }
  for (int n : batches) {
    for (auto [kh, kw] : kernels)
      for (auto [hw, c] : sizes)
        shapes.push_back({conv_geometry(n, hw, c, c, kh, kw, 1), n == 50 && kh == 3 && kw == 3});
    shapes.push_back({conv_geometry(n, 32, 32, 64, 3, 3, 2), n == 50});
  }
  return shapes;
}

void register_all() {
  const Options& o = options();
  const DeviceKind kind = o.device.kind;
  // Batches: the CPU default set is batch 50 alone (~2 minutes on 2 cores); the emulator's is a
  // smoke run.
  const std::vector<int> batches = kind == DeviceKind::EMU              ? std::vector<int>{2}
                                   : kind == DeviceKind::CUDA || o.full ? std::vector<int>{50, 256}
                                                                        : std::vector<int>{50};
  const std::vector<ConvShape> shapes = conv_shapes(batches);

  // One kernel version alone, on every shape of the list: what cuda/conv/N_*.cu reaches beside
  // cuBLAS, as llm.c's dev/cuda programs take a kernel number.
  if (o.conv_version) {
    for (const ConvShape& s : shapes) register_conv(s.g, {version_impl(o.conv_version)});
    return;
  }

  if (on_cpu())
    add("memcpy/64MiB", [](benchmark::State& s) { bench_memcpy(s, std::size_t(64) << 20); });
  else if (kind == DeviceKind::EMU)
    add("memcpy_d2d/64MiB", [](benchmark::State& s) { bench_memcpy(s, std::size_t(64) << 20); });
  else
    add("memcpy_d2d/256MiB", [](benchmark::State& s) { bench_memcpy(s, std::size_t(256) << 20); });

  for (const ConvShape& s : shapes) {
    std::vector<ConvImpl> impls = {ConvImpl{}};
    if (s.versions)
      for (int v = 1; v <= kConvTensorCoreVersion; ++v) impls.push_back(version_impl(v));
    register_conv(s.g, impls);
  }
  if (on_cpu()) {
    // The readable reference, to show what the fast path buys (one small shape; it is slow).
    const ConvGeometry small = conv_geometry(50, 16, 32, 32, 3, 3, 1);
    const ConvImpl reference{"_reference", CpuPath::Reference, 0};
    add(
        conv_name("conv_fwd_reference", small),
        [small, reference](benchmark::State& s) { bench_conv(s, small, Pass::Forward, reference); },
        0.1);
    // The layers of evolved Fashion-MNIST nets (data/dna/evolved/: 1 to 23 channels, maps of
    // 28x28 down to 2x2), each through the three fast paths: where conv2d_path() draws its
    // line.
    const ConvGeometry evolved[] = {
        conv_geometry(50, 28, 1, 7, 3, 3, 1),   conv_geometry(50, 28, 7, 14, 3, 3, 4),
        conv_geometry(50, 28, 4, 4, 3, 3, 2),   conv_geometry(50, 14, 4, 5, 3, 3, 1),
        conv_geometry(50, 14, 8, 8, 5, 3, 2),   conv_geometry(50, 7, 14, 14, 3, 3, 2),
        conv_geometry(50, 7, 16, 16, 3, 3, 1),  conv_geometry(50, 4, 14, 14, 3, 3, 2),
        conv_geometry(50, 2, 14, 23, 3, 3, 1),  conv_geometry(50, 14, 32, 32, 3, 3, 1),
        conv_geometry(50, 28, 8, 8, 3, 3, 1),   conv_geometry(50, 14, 8, 16, 3, 3, 1),
        conv_geometry(50, 28, 16, 16, 3, 3, 1), conv_geometry(50, 14, 16, 16, 3, 3, 1),
        conv_geometry(50, 28, 1, 16, 5, 5, 1),  conv_geometry(50, 28, 3, 8, 3, 3, 2),
    };
    for (const ConvGeometry& g : evolved)
      register_conv(g, {{"_direct", CpuPath::Direct, 0},
                        {"_channels", CpuPath::Channels, 0},
                        {"_gemm", CpuPath::Gemm, 0}});
    // Batch norm + ReLU on the activations of the same nets: few channels, so the per-channel
    // sums run over rows of 1 to 23 floats (the CPU kernels tile them, batchnorm.cpp).
    for (Act a : {Act{50, 28, 7}, Act{50, 28, 4}, Act{50, 14, 5}, Act{50, 7, 14}, Act{50, 2, 23}}) {
      const std::string s = a.str();
      add(format("bn_relu_fwd_train/%s", s.c_str()),
          [a](benchmark::State& st) { bench_batchnorm(st, a, 0); });
      add(format("bn_relu_bwd/%s", s.c_str()),
          [a](benchmark::State& st) { bench_batchnorm(st, a, 2); });
    }
  }

  // Memory-bound ops on the activations of the three stages.
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

// ---- the command line --------------------------------------------------------------------------

int usage_error(const std::string& message) {
  std::fprintf(stderr,
               "bench_ops: %s\nusage: bench_ops [--device cpu|emu|cuda:N] [--full] "
               "[--conv-version 1..%d] [--benchmark_* flags]\n",
               message.c_str(), kConvTensorCoreVersion);
  return 2;
}

// The value of `--name VALUE` or `--name=VALUE` at argv[i] (advancing i), or null.
const char* option_value(int argc, char** argv, int& i, const std::string& name) {
  const std::string arg = argv[i];
  if (arg.rfind(name + "=", 0) == 0) return argv[i] + name.size() + 1;
  if (arg == name) {
    if (i + 1 >= argc) throw Error(name + " needs a value");
    return argv[++i];
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  Options& o = options();
  if (const char* env = std::getenv("EVO_BENCH_FULL")) o.full = std::string(env) == "1";
  std::vector<char*> args = {argv[0]};
  try {
    for (int i = 1; i < argc; ++i) {
      if (const char* device = option_value(argc, argv, i, "--device")) {
        o.device = parse_device(device);
      } else if (const char* version = option_value(argc, argv, i, "--conv-version")) {
        o.conv_version = std::atoi(version);
        if (o.conv_version < 1 || o.conv_version > kConvTensorCoreVersion)
          return usage_error(std::string("--conv-version ") + version + ": the versions are 1.." +
                             std::to_string(kConvTensorCoreVersion) + " (cuda/conv/N_*.cu; 4 is "
                             "TF32)");
      } else if (std::string(argv[i]) == "--full") {
        o.full = true;
      } else {
        o.min_time_given |= std::string(argv[i]).rfind("--benchmark_min_time", 0) == 0;
        args.push_back(argv[i]);
      }
    }
  } catch (const Error& e) {
    return usage_error(e.what());
  }
  if (o.conv_version && on_cpu())
    return usage_error(
        "--conv-version picks a CUDA kernel (cuda/conv/N_*.cu): use it with "
        "--device emu or --device cuda:N");
  const GpuInventory gpus = discover_gpus();
  if (o.device.kind == DeviceKind::CUDA && o.device.ordinal >= gpus.count) {
    std::fprintf(stderr, "bench_ops: --device %s: GPU %d is not there (%s)\n",
                 o.device.str().c_str(), o.device.ordinal,
                 gpus.count ? (std::to_string(gpus.count) + " GPU(s) visible").c_str()
                            : gpus.reason.c_str());
    return 2;
  }
  // The CPU's repetitions first, so the user's own flags (parsed later) win.
  if (on_cpu()) {
    args.insert(args.begin() + 1, {const_cast<char*>("--benchmark_repetitions=3"),
                                   const_cast<char*>("--benchmark_report_aggregates_only=true")});
  }
  register_all();
  int count = int(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  benchmark::AddCustomContext("device", o.device.str());
  if (on_cpu()) {
    benchmark::AddCustomContext("openblas_core", openblas_get_corename());
    benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
  } else {
    if (o.device.kind == DeviceKind::CUDA)
      benchmark::AddCustomContext(
          "gpu", o.device.ordinal < int(gpus.names.size()) ? gpus.names[o.device.ordinal] : "?");
    benchmark::AddCustomContext("conv_default_version", conv_version_name(default_conv_version()));
  }
  if (o.conv_version)
    benchmark::AddCustomContext("conv_version", conv_version_name(o.conv_version));
  benchmark::AddCustomContext("shape_list", o.device.kind == DeviceKind::EMU ? "emulator (tiny)"
                                            : o.full                         ? "full"
                                            : on_cpu()                       ? "default (batch 50)"
                                                       : "default (paired sizes)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
