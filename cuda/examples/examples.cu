// Example kernels that exercise the CUDA emulator, with host wrappers over host vectors; built by
// nvcc (evo::cuda::examples) and against the emulator (evo::emu::examples). Not used by evo itself.
#include "cuda/compat.h"

#include <algorithm>
#include <climits>
#include <cstddef>
#include <vector>

#include "cuda/examples/examples.h"
#include "evo/error.h"

namespace evo::EVO_GPU_NS::examples {

// ---- kernels ----------------------------------------------------------------------------------

// x: [n] -> block_sums: [gridDim.x]. The classic two-stage block reduction: a shared-memory tree
// halves the active threads until one warp's worth of partial sums is left, then that warp
// finishes in registers with shuffles, which need neither shared memory nor __syncthreads.
template <int kThreads>
__global__ void reduce_sum_kernel(const float* __restrict__ x, float* __restrict__ block_sums,
                                  int n) {
  __shared__ float partial[kThreads];
  const int tid = threadIdx.x;
  float v = 0.f;
  for (int i = blockIdx.x * kThreads + tid; i < n; i += gridDim.x * kThreads) v += x[i];
  partial[tid] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride >= 32; stride /= 2) {
    if (tid < stride) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (tid < 32) {
    v = partial[tid];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (tid == 0) block_sums[blockIdx.x] = v;
  }
}

// a: [m, k], b: [k, n] -> c: [m, n], row-major; block (16, 16) computes one 16 x 16 tile of c.
// Each step stages a tile of a and of b in shared memory, so every value fetched from global
// memory is reused by 16 threads; out-of-range elements are staged as zeros.
constexpr int kTile = 16;
__global__ void tiled_matmul_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                    float* __restrict__ c, int m, int n, int k) {
  __shared__ float as[kTile][kTile];
  __shared__ float bs[kTile][kTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  float acc = 0.f;
  for (int t = 0; t < k; t += kTile) {
    as[ty][tx] = (row < m && t + tx < k) ? a[row * k + t + tx] : 0.f;
    bs[ty][tx] = (t + ty < k && col < n) ? b[(t + ty) * n + col] : 0.f;
    __syncthreads();
    for (int i = 0; i < kTile; ++i) acc += as[ty][i] * bs[i][tx];
    __syncthreads();  // nobody may overwrite the tiles while others still read them
  }
  if (row < m && col < n) c[row * n + col] = acc;
}

// x: [n] values in [0, bins) -> counts: [bins]. Shared-memory atomics are cheap and contended only
// within a block; each block then adds its histogram to the global one once per bin.
__global__ void histogram_kernel(const unsigned* __restrict__ x, int n,
                                 unsigned* __restrict__ counts, int bins) {
  EVO_EXTERN_SHARED(unsigned, local);  // [bins]
  for (int i = threadIdx.x; i < bins; i += blockDim.x) local[i] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&local[x[i]], 1u);
  __syncthreads();
  for (int i = threadIdx.x; i < bins; i += blockDim.x)
    if (local[i]) atomicAdd(&counts[i], local[i]);
}

// One thread per element; threads past the end still vote (false): every lane named in a full
// mask must call the intrinsic.
__global__ void vote_kernel(const float* __restrict__ x, int n, float threshold,
                            unsigned* __restrict__ ballot, int* __restrict__ any,
                            int* __restrict__ all, int* __restrict__ block_count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int pred = i < n && x[i] > threshold;
  const unsigned mask = __ballot_sync(0xffffffffu, pred);
  const int some = __any_sync(0xffffffffu, pred);
  const int every = __all_sync(0xffffffffu, pred);
  const int count = __syncthreads_count(pred);
  if (threadIdx.x % 32 == 0) {
    ballot[i / 32] = mask;
    any[i / 32] = some;
    all[i / 32] = every;
  }
  if (threadIdx.x == 0) block_count[blockIdx.x] = count;
}

__global__ void shuffle_kernel(const float* __restrict__ x, float* __restrict__ out, int op,
                               int param, int width) {
  const int t = threadIdx.x;
  const float v = x[t];
  float r = 0.f;
  switch (op) {  // uniform across the block: every lane takes the same branch
    case 0:
      r = __shfl_sync(0xffffffffu, v, param, width);
      break;
    case 1:
      r = __shfl_up_sync(0xffffffffu, v, unsigned(param), width);
      break;
    case 2:
      r = __shfl_down_sync(0xffffffffu, v, unsigned(param), width);
      break;
    default:
      r = __shfl_xor_sync(0xffffffffu, v, param, width);
      break;
  }
  out[t] = r;
}

__global__ void split_warp_shuffle_kernel(const float* __restrict__ x, float* __restrict__ out) {
  const int t = threadIdx.x;
  const float v = x[t];
  if (t % 32 < 16)
    out[t] = __shfl_xor_sync(0x0000ffffu, v, 1);
  else
    out[t] = __shfl_xor_sync(0xffff0000u, v, 2);
}

__global__ void partial_warp_shuffle_kernel(const float* __restrict__ x, float* __restrict__ out,
                                            int delta) {
  const int t = threadIdx.x;
  out[t] = __shfl_down_sync(0xffffffffu, x[t], unsigned(delta));
}

// out: [blocks * threads, 7]. The last value, taken from lane 0 of the warp by a shuffle, checks
// that lanes and warps are numbered as on the hardware: by the linear thread index, x fastest.
__global__ void thread_indices_kernel(int* __restrict__ out) {
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int warp_first = __shfl_sync(__activemask(), t, 0);
  int* o = out + (std::size_t(block) * threads + t) * 7;
  o[0] = threadIdx.x;
  o[1] = threadIdx.y;
  o[2] = threadIdx.z;
  o[3] = blockIdx.x;
  o[4] = blockIdx.y;
  o[5] = blockIdx.z;
  o[6] = warp_first;
}

__global__ void atomics_kernel(const int* __restrict__ x, int n, int* sum, int* max_value,
                               int* min_value, unsigned long long* cas_sum, float* float_sum,
                               unsigned* wrap_count) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int v = x[i];
    atomicAdd(sum, v);
    atomicMax(max_value, v);
    atomicMin(min_value, v);
    // Any read-modify-write can be made atomic with a compare-and-swap loop: retry until nobody
    // changed the value between our read and our swap.
    unsigned long long old = 0, assumed = 0;
    do {
      assumed = old;
      old = atomicCAS(cas_sum, assumed, assumed + static_cast<unsigned long long>(v));
    } while (old != assumed);
    atomicAdd(float_sum, v / 8.f);
    atomicInc(wrap_count, 999u);
  }
}

__global__ void shared_isolation_kernel(int* __restrict__ ok, long long spin) {
  __shared__ int owner[1024];
  const int t = threadIdx.x;
  owner[t] = blockIdx.x;
  __syncthreads();
  if (t == 0) {
    const long long start = clock64();
    while (clock64() - start < spin) {
    }
  }
  __syncthreads();
  int good = 1;
  for (int i = 0; i < int(blockDim.x); ++i) good &= owner[i] == int(blockIdx.x);
  ok[blockIdx.x * blockDim.x + t] = good;
}

// Records the order in which the threads of a block pass `phases` points separated by barriers:
// order: [gridDim.x][phases][blockDim.x] = the thread's place at that point (0 = first).
// tickets: [gridDim.x], zero, hands out the places (global atomics, so that no barrier is needed
// before the first point); the barrier after each point keeps the phases apart: every ticket of
// phase p is taken before any of phase p + 1.
__global__ void arrival_order_kernel(int phases, int* __restrict__ tickets,
                                     int* __restrict__ order) {
  const int t = threadIdx.x, n = blockDim.x;
  for (int p = 0; p < phases; ++p) {
    order[(std::size_t(blockIdx.x) * phases + p) * n + t] =
        atomicAdd(&tickets[blockIdx.x], 1) - p * n;
    __syncthreads();
  }
}

// out[i] = x[i - 1] + x[i] within each block of x (the first thread of a block: x[i]), through
// shared memory. With `barrier` false the __syncthreads between the writes and the reads is left
// out: a race, wrong on purpose. Under the emulator's forward order it still gives the right
// answer (thread t - 1 runs to its end before thread t starts, so s[t - 1] is written when t reads
// it); in reverse order every read sees the 0xFF bytes of fresh shared memory (NaN); on a GPU,
// whatever the warps' timing gives.
__global__ void neighbour_sum_kernel(const float* __restrict__ x, float* __restrict__ out, int n,
                                     bool barrier) {
  EVO_EXTERN_SHARED(float, s);  // [blockDim.x]
  const int t = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.f;
  if (barrier) __syncthreads();  // uniform across the grid: legal
  if (i < n) out[i] = t > 0 ? s[t - 1] + s[t] : s[t];
}

// Wrong on purpose (see examples.inc): a GPU may hang on these.
__global__ void broken_barrier_kernel(int mode, int active) {
  const int t = threadIdx.x;
  if (mode == 0) {
    if (t >= active) return;
    __syncthreads();
  } else if (mode == 1) {
    if (t < active) __syncthreads();
  } else if (mode == 2) {
    if (t < active) {
      const float v = __shfl_sync(0xffffffffu, float(t), 0);
      (void)v;
    } else {
      __syncthreads();
    }
  } else if (mode == 4) {
    // Every thread reaches a barrier, but not the same one: the emulator names both lines.
    if (t < active) {
      __syncthreads();
    } else {
      __syncthreads();
    }
  } else {
    if (t < active) return;
    __syncthreads();
  }
}

__global__ void empty_kernel() {}

// For the graph examples: z[i] = a * x[i] + y[i] where i % 3 != 0 (z keeps what was there before
// elsewhere, so a memset before it shows), grid-stride.
__global__ void axpy_masked_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                   float* __restrict__ z, float a, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    if (i % 3 != 0) z[i] = a * x[i] + y[i];
}

// acc[i] += scale * v[i]: integers, so that n replays give exactly n times the step.
__global__ void accumulate_kernel(int* __restrict__ acc, const int* __restrict__ v, int scale,
                                  int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    acc[i] += scale * v[i];
}

// ---- host wrappers ------------------------------------------------------------------------------

namespace {

// Device memory for one wrapper call, freed on every path (a launch that throws must not leak).
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    EVO_CUDA_CHECK(cudaMalloc(&p_, std::max<std::size_t>(n, 1) * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    if (n_) EVO_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { EVO_CUDA_CHECK_PRINT(cudaFree(p_)); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return p_; }
  std::vector<T> to_host() const {
    std::vector<T> h(n_);
    if (n_) EVO_CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

// Pinned host memory (cudaMallocHost) for copies that a graph replays: the staging buffers of the
// graph examples.
template <typename T>
class PinnedBuffer {
 public:
  explicit PinnedBuffer(std::size_t n) : n_(n) {
    EVO_CUDA_CHECK(cudaMallocHost(&p_, std::max<std::size_t>(n, 1) * sizeof(T)));
  }
  explicit PinnedBuffer(const std::vector<T>& host) : PinnedBuffer(host.size()) {
    std::copy(host.begin(), host.end(), p_);
  }
  ~PinnedBuffer() { EVO_CUDA_CHECK_PRINT(cudaFreeHost(p_)); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  T* get() const { return p_; }
  std::vector<T> to_vector() const { return std::vector<T>(p_, p_ + n_); }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

class Stream {
 public:
  explicit Stream(unsigned flags) { EVO_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, flags)); }
  ~Stream() { EVO_CUDA_CHECK_PRINT(cudaStreamDestroy(s_)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  operator cudaStream_t() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// A captured graph and its executable form, destroyed on every path.
class Graph {
 public:
  explicit Graph(cudaGraph_t g) : graph_(g) {
    EVO_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  ~Graph() {
    if (exec_) EVO_CUDA_CHECK_PRINT(cudaGraphExecDestroy(exec_));
    EVO_CUDA_CHECK_PRINT(cudaGraphDestroy(graph_));
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void launch(cudaStream_t s) const { EVO_CUDA_CHECK(cudaGraphLaunch(exec_, s)); }

 private:
  cudaGraph_t graph_;
  cudaGraphExec_t exec_ = nullptr;
};

// Runs `work` between cudaStreamBeginCapture and cudaStreamEndCapture on `s`; when work throws,
// the capture is ended (and its graph dropped) before the exception goes on, so that the stream
// can be destroyed.
template <typename F>
cudaGraph_t capture(cudaStream_t s, cudaStreamCaptureMode mode, F&& work) {
  EVO_CUDA_CHECK(cudaStreamBeginCapture(s, mode));
  try {
    work();
  } catch (...) {
    cudaGraph_t g = nullptr;
    if (cudaStreamEndCapture(s, &g) == cudaSuccess && g) (void)cudaGraphDestroy(g);
    (void)cudaGetLastError();
    throw;
  }
  cudaGraph_t g = nullptr;
  EVO_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  return g;
}

template <int kThreads>
void launch_reduce(int blocks, const float* x, float* sums, int n) {
  EVO_LAUNCH(reduce_sum_kernel<kThreads>, blocks, kThreads, 0, nullptr, x, sums, n);
}

}  // namespace

std::vector<float> reduce_sum(const std::vector<float>& x, int blocks, int threads) {
  DeviceBuffer<float> dx(x), sums(static_cast<std::size_t>(blocks));
  const int n = int(x.size());
  switch (threads) {
    case 64:
      launch_reduce<64>(blocks, dx.get(), sums.get(), n);
      break;
    case 128:
      launch_reduce<128>(blocks, dx.get(), sums.get(), n);
      break;
    case 256:
      launch_reduce<256>(blocks, dx.get(), sums.get(), n);
      break;
    case 512:
      launch_reduce<512>(blocks, dx.get(), sums.get(), n);
      break;
    case 1024:
      launch_reduce<1024>(blocks, dx.get(), sums.get(), n);
      break;
    default:
      throw Error("reduce_sum: threads must be 64, 128, 256, 512 or 1024");
  }
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return sums.to_host();
}

std::vector<float> tiled_matmul(const std::vector<float>& a, const std::vector<float>& b, int m,
                                int n, int k) {
  DeviceBuffer<float> da(a), db(b), dc(std::size_t(m) * n);
  const dim3 block(kTile, kTile);
  const dim3 grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile);
  EVO_LAUNCH(tiled_matmul_kernel, grid, block, 0, nullptr, da.get(), db.get(), dc.get(), m, n, k);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return dc.to_host();
}

std::vector<unsigned> histogram(const std::vector<unsigned>& x, int bins, int blocks, int threads,
                                bool opt_in) {
  DeviceBuffer<unsigned> dx(x), counts(std::vector<unsigned>(std::size_t(bins), 0u));
  const std::size_t smem = std::size_t(bins) * sizeof(unsigned);
  if (opt_in)
    EVO_CUDA_CHECK(cudaFuncSetAttribute(histogram_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  EVO_LAUNCH(histogram_kernel, blocks, threads, smem, nullptr, dx.get(), int(x.size()),
             counts.get(), bins);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return counts.to_host();
}

void vote(const std::vector<float>& x, float threshold, int threads, std::vector<unsigned>& ballot,
          std::vector<int>& any, std::vector<int>& all, std::vector<int>& block_count) {
  const int n = int(x.size());
  const int blocks = (n + threads - 1) / threads;
  const std::size_t warps = std::size_t(blocks) * std::size_t(threads / 32);
  DeviceBuffer<float> dx(x);
  DeviceBuffer<unsigned> dballot(warps);
  DeviceBuffer<int> dany(warps), dall(warps), dcount(static_cast<std::size_t>(blocks));
  EVO_LAUNCH(vote_kernel, blocks, threads, 0, nullptr, dx.get(), n, threshold, dballot.get(),
             dany.get(), dall.get(), dcount.get());
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  ballot = dballot.to_host();
  any = dany.to_host();
  all = dall.to_host();
  block_count = dcount.to_host();
}

std::vector<float> shuffle(const std::vector<float>& x, int op, int param, int width) {
  DeviceBuffer<float> dx(x), out(x.size());
  EVO_LAUNCH(shuffle_kernel, 1, int(x.size()), 0, nullptr, dx.get(), out.get(), op, param, width);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return out.to_host();
}

std::vector<float> split_warp_shuffle(const std::vector<float>& x) {
  DeviceBuffer<float> dx(x), out(x.size());
  EVO_LAUNCH(split_warp_shuffle_kernel, 1, int(x.size()), 0, nullptr, dx.get(), out.get());
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return out.to_host();
}

std::vector<float> partial_warp_shuffle(const std::vector<float>& x, int delta) {
  DeviceBuffer<float> dx(x), out(x.size());
  EVO_LAUNCH(partial_warp_shuffle_kernel, 1, int(x.size()), 0, nullptr, dx.get(), out.get(), delta);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return out.to_host();
}

std::vector<int> thread_indices(int gx, int gy, int gz, int bx, int by, int bz) {
  const std::size_t threads = std::size_t(gx) * gy * gz * bx * by * bz;
  DeviceBuffer<int> out(threads * 7);
  EVO_LAUNCH(thread_indices_kernel, dim3(unsigned(gx), unsigned(gy), unsigned(gz)),
             dim3(unsigned(bx), unsigned(by), unsigned(bz)), 0, nullptr, out.get());
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return out.to_host();
}

std::vector<double> atomics(const std::vector<int>& x, int blocks, int threads) {
  DeviceBuffer<int> dx(x), sum(std::vector<int>{0}), max_value(std::vector<int>{INT_MIN}),
      min_value(std::vector<int>{INT_MAX});
  DeviceBuffer<unsigned long long> cas_sum(std::vector<unsigned long long>{0});
  DeviceBuffer<float> float_sum(std::vector<float>{0.f});
  DeviceBuffer<unsigned> wrap_count(std::vector<unsigned>{0});
  EVO_LAUNCH(atomics_kernel, blocks, threads, 0, nullptr, dx.get(), int(x.size()), sum.get(),
             max_value.get(), min_value.get(), cas_sum.get(), float_sum.get(), wrap_count.get());
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return {double(sum.to_host()[0]),       double(max_value.to_host()[0]),
          double(min_value.to_host()[0]), double(static_cast<long long>(cas_sum.to_host()[0])),
          double(float_sum.to_host()[0]), double(wrap_count.to_host()[0])};
}

std::vector<int> shared_isolation(int blocks, int threads, long long spin) {
  DeviceBuffer<int> ok(std::size_t(blocks) * std::size_t(threads));
  EVO_LAUNCH(shared_isolation_kernel, blocks, threads, 0, nullptr, ok.get(), spin);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return ok.to_host();
}

std::vector<int> arrival_order(int blocks, int threads, int phases) {
  DeviceBuffer<int> tickets(std::vector<int>(std::size_t(blocks), 0));
  DeviceBuffer<int> order(std::size_t(blocks) * std::size_t(phases) * std::size_t(threads));
  EVO_LAUNCH(arrival_order_kernel, blocks, threads, 0, nullptr, phases, tickets.get(), order.get());
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return order.to_host();
}

std::vector<float> neighbour_sum(const std::vector<float>& x, int threads, bool barrier) {
  const int n = int(x.size());
  DeviceBuffer<float> dx(x), out(x.size());
  EVO_LAUNCH(neighbour_sum_kernel, (n + threads - 1) / threads, threads,
             std::size_t(threads) * sizeof(float), nullptr, dx.get(), out.get(), n, barrier);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
  return out.to_host();
}

void broken_barrier(int mode, int blocks, int threads, int active) {
  EVO_LAUNCH(broken_barrier_kernel, blocks, threads, 0, nullptr, mode, active);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
}

void empty_launch(int bx, int by, int bz, std::size_t smem_bytes) {
  EVO_LAUNCH(empty_kernel, 1, dim3(unsigned(bx), unsigned(by), unsigned(bz)), smem_bytes, nullptr);
  EVO_CUDA_CHECK(cudaDeviceSynchronize());
}

std::vector<float> stream_sequence(const std::vector<float>& x, const std::vector<float>& y,
                                   float a, int blocks, bool captured) {
  const int n = int(x.size());
  const std::size_t bytes = x.size() * sizeof(float);
  Stream s(cudaStreamNonBlocking);
  PinnedBuffer<float> hx(x), hy(y);
  PinnedBuffer<float> out(std::vector<float>(x.size() + std::size_t(blocks), -1.f));
  DeviceBuffer<float> dx(x.size()), dy(x.size()), dz(x.size()),
      sums(static_cast<std::size_t>(blocks));
  auto work = [&] {
    EVO_CUDA_CHECK(cudaMemcpyAsync(dx.get(), hx.get(), bytes, cudaMemcpyHostToDevice, s));
    EVO_CUDA_CHECK(cudaMemcpyAsync(dy.get(), hy.get(), bytes, cudaMemcpyHostToDevice, s));
    EVO_CUDA_CHECK(cudaMemsetAsync(dz.get(), 0, bytes, s));
    EVO_LAUNCH(axpy_masked_kernel, blocks, 256, 0, s, dx.get(), dy.get(), dz.get(), a, n);
    EVO_LAUNCH(reduce_sum_kernel<256>, blocks, 256, 0, s, dz.get(), sums.get(), n);
    EVO_CUDA_CHECK(cudaMemcpyAsync(out.get(), dz.get(), bytes, cudaMemcpyDeviceToHost, s));
    EVO_CUDA_CHECK(cudaMemcpyAsync(out.get() + n, sums.get(), std::size_t(blocks) * sizeof(float),
                                   cudaMemcpyDeviceToHost, s));
  };
  if (captured) {
    const Graph graph(capture(s, cudaStreamCaptureModeThreadLocal, work));
    graph.launch(s);
  } else {
    work();
  }
  EVO_CUDA_CHECK(cudaStreamSynchronize(s));
  return out.to_vector();
}

std::vector<int> graph_accumulate(const std::vector<int>& v_capture,
                                  const std::vector<int>& v_replay, int scale, int replays) {
  const int n = int(v_capture.size());
  Stream s(cudaStreamNonBlocking);
  DeviceBuffer<int> v(v_capture), acc(std::vector<int>(v_capture.size(), 0));
  int host_scale = scale;
  const Graph graph(capture(s, cudaStreamCaptureModeThreadLocal, [&] {
    EVO_LAUNCH(accumulate_kernel, (n + 255) / 256, 256, 0, s, acc.get(), v.get(), host_scale, n);
  }));
  // Too late for the graph: it holds the argument values of capture time.
  host_scale = scale * 1000 + 7;
  // In time: the kernel reads v through its pointer when the graph runs.
  EVO_CUDA_CHECK(
      cudaMemcpy(v.get(), v_replay.data(), v_replay.size() * sizeof(int), cudaMemcpyHostToDevice));
  for (int r = 0; r < replays; ++r) graph.launch(s);
  EVO_CUDA_CHECK(cudaStreamSynchronize(s));
  return acc.to_host();
}

std::vector<int> capture_rule(int rule, int mode, bool blocking_stream) {
  Stream s(blocking_stream ? cudaStreamDefault : cudaStreamNonBlocking);
  DeviceBuffer<int> acc(std::vector<int>(64, 1)), v(std::vector<int>(64, 2));
  const std::vector<int> host(64, 3);
  cudaEvent_t event = nullptr;
  EVO_CUDA_CHECK(cudaEventCreate(&event));
  EVO_CUDA_CHECK(cudaStreamBeginCapture(s, static_cast<cudaStreamCaptureMode>(mode)));
  // Every error below is an answer, not a failure: collect them, end the capture whatever
  // happened, and let the caller compare.
  auto launch = [&](cudaStream_t stream) {
    try {
      EVO_LAUNCH(accumulate_kernel, 1, 64, 0, stream, acc.get(), v.get(), 1, 64);
      return cudaSuccess;
    } catch (const CudaError& e) {
      return static_cast<cudaError_t>(e.code());
    }
  };
  const cudaError_t first = launch(s);
  cudaError_t call = cudaSuccess;
  void* extra = nullptr;
  switch (rule) {
    case kRuleSyncStream:
      call = cudaStreamSynchronize(s);
      break;
    case kRuleQueryStream:
      call = cudaStreamQuery(s);
      break;
    case kRuleDeviceSync:
      call = cudaDeviceSynchronize();
      break;
    case kRuleMalloc:
      call = cudaMalloc(&extra, 256);
      break;
    case kRuleLegacyLaunch:
      call = launch(nullptr);
      break;
    case kRuleSyncMemcpy:
      call = cudaMemcpy(acc.get(), host.data(), 64 * sizeof(int), cudaMemcpyHostToDevice);
      break;
    case kRuleEventQuery:
      call = cudaEventRecord(event, s);
      if (call == cudaSuccess) call = cudaEventQuery(event);
      break;
    default:
      break;
  }
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t status_call = cudaStreamIsCapturing(s, &status);
  const cudaError_t next = cudaMemsetAsync(acc.get(), 0, 64 * sizeof(int), s);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(s, &graph);
  const bool made = graph != nullptr;
  if (graph) EVO_CUDA_CHECK_PRINT(cudaGraphDestroy(graph));
  if (extra) EVO_CUDA_CHECK_PRINT(cudaFree(extra));
  EVO_CUDA_CHECK_PRINT(cudaEventDestroy(event));
  (void)cudaGetLastError();
  return {int(first), int(call), status_call == cudaSuccess ? int(status) : -int(status_call),
          int(next),  int(end),  made ? 1 : 0};
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace evo::EVO_GPU_NS::examples
