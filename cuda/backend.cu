// The device services (memory, copies, streams, cuBLAS handles) over the CUDA runtime. Built twice:
// by nvcc as evo::cuda, and by the C++ compiler against the emulator as evo::emu. Not kernels.
#include "cuda/compat.h"

#include <memory>
#include <string>
#include <vector>

#include "cuda/backend.h"
#include "evo/error.h"

namespace evo::EVO_GPU_NS {

// NCCL (or the emulator's), in cuda/collective.cu.
std::unique_ptr<Communicator> make_communicator(const std::vector<int>& ordinals);

namespace {

cudaMemcpyKind to_cuda(CopyKind kind) {
  switch (kind) {
    case CopyKind::HostToDevice: return cudaMemcpyHostToDevice;
    case CopyKind::DeviceToHost: return cudaMemcpyDeviceToHost;
    case CopyKind::DeviceToDevice: return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

class GpuBackend final : public DeviceBackend {
 public:
#if defined(EVO_EMULATE)
  DeviceKind kind() const override { return DeviceKind::EMU; }
  std::string name() const override { return "emu"; }
#else
  DeviceKind kind() const override { return DeviceKind::CUDA; }
  std::string name() const override { return "cuda"; }
#endif

  void set_device(int ordinal) override { EVO_CUDA_CHECK(cudaSetDevice(ordinal)); }

  void* allocate(std::size_t bytes, int ordinal) override {
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clears an out-of-memory error (a sticky one stays: sticky())
      throw CudaError("cudaMalloc(" + std::to_string(bytes) + " bytes) on device " +
                          std::to_string(ordinal),
                      cudaGetErrorString(err), __FILE__, __LINE__, static_cast<int>(err));
    }
    return p;
  }
  void deallocate(void* ptr, int) noexcept override { EVO_CUDA_CHECK_PRINT(cudaFree(ptr)); }

  void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind, void* stream) override {
    if (bytes == 0) return;
    EVO_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, to_cuda(kind), as_stream(stream)));
  }
  void fill_zero(void* dst, std::size_t bytes, void* stream) override {
    if (bytes == 0) return;
    EVO_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, as_stream(stream)));
  }
  void synchronize(void* stream) override {
    EVO_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
  }

  void* allocate_pinned(std::size_t bytes) override {
    void* p = nullptr;
    EVO_CUDA_CHECK(cudaMallocHost(&p, bytes ? bytes : 1));
    return p;
  }
  void deallocate_pinned(void* ptr) noexcept override {
    if (ptr) EVO_CUDA_CHECK_PRINT(cudaFreeHost(ptr));
  }

  void* create_stream(int) override {
    cudaStream_t s = nullptr;
    EVO_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  void destroy_stream(void* stream) noexcept override {
    if (stream) EVO_CUDA_CHECK_PRINT(cudaStreamDestroy(as_stream(stream)));
  }
  void* create_blas(void* stream, int) override {
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw Error("cublasCreate failed");
    if (cublasSetStream(h, as_stream(stream)) != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(h);
      throw Error("cublasSetStream failed");
    }
    return h;
  }
  void destroy_blas(void* blas) noexcept override {
    if (blas) cublasDestroy(static_cast<cublasHandle_t>(blas));
  }

  void begin_capture(void* stream) override {
    EVO_CUDA_CHECK(cudaStreamBeginCapture(as_stream(stream), cudaStreamCaptureModeThreadLocal));
  }
  void* end_capture(void* stream) override {
    cudaGraph_t graph = nullptr;
    EVO_CUDA_CHECK(cudaStreamEndCapture(as_stream(stream), &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);  // the executable graph keeps what it needs
    if (err != cudaSuccess)
      throw CudaError("cudaGraphInstantiate", cudaGetErrorString(err), __FILE__, __LINE__,
                      static_cast<int>(err));
    return exec;
  }
  void launch_graph(void* graph, void* stream) override {
    EVO_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), as_stream(stream)));
  }
  void destroy_graph(void* graph) noexcept override {
    if (graph) EVO_CUDA_CHECK_PRINT(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph)));
  }

  std::unique_ptr<Communicator> create_communicator(const std::vector<int>& ordinals) override {
    return make_communicator(ordinals);
  }

  GpuInventory inventory() override {
    GpuInventory inv;
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      inv.reason = cudaGetErrorString(err);
      return inv;
    }
    if (count == 0) inv.reason = "the CUDA runtime reports no device";
    for (int i = 0; i < count; ++i) {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
      inv.names.push_back(std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                          std::to_string(prop.minor) + ", " +
                          std::to_string(prop.totalGlobalMem >> 30) + " GiB)");
    }
    inv.count = int(inv.names.size());
    return inv;
  }

 private:
  static cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
};

}  // namespace

DeviceBackend& gpu_backend() {
  static GpuBackend backend;
  return backend;
}

}  // namespace evo::EVO_GPU_NS
