// The CPU backend (plain aligned host memory, no streams). Not the CUDA or emulated backends (they
// live in cuda/backend.cu) and not backend_for(), which picks among all three where all three are
// linked (src/backends/backends.cpp).
#include "evo/backend.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "evo/arena.h"
#include "evo/error.h"

namespace evo {

namespace {

class CpuBackend final : public DeviceBackend {
 public:
  DeviceKind kind() const override { return DeviceKind::CPU; }
  std::string name() const override { return "cpu"; }
  void set_device(int) override {}
  void* allocate(std::size_t bytes, int) override {
    const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + Arena::kAlignment - 1) /
                                Arena::kAlignment * Arena::kAlignment;
    void* p = std::aligned_alloc(Arena::kAlignment, rounded);
    if (!p)
      throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void deallocate(void* ptr, int) noexcept override { std::free(ptr); }
  void copy(void* dst, const void* src, std::size_t bytes, CopyKind, void*) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void fill_zero(void* dst, std::size_t bytes, void*) override {
    if (bytes) std::memset(dst, 0, bytes);
  }
  void synchronize(void*) override {}
  void* allocate_pinned(std::size_t bytes) override { return allocate(bytes, 0); }
  void deallocate_pinned(void* ptr) noexcept override { std::free(ptr); }
  void* create_stream(int) override { return nullptr; }
  void destroy_stream(void*) noexcept override {}
  void* create_blas(void*, int) override { return nullptr; }
  void destroy_blas(void*) noexcept override {}
  void begin_capture(void*) override {
    throw Error("CUDA graphs are for GPU-like devices; the CPU backend runs ops as they come");
  }
  void* end_capture(void*) override { throw Error("end_capture: the CPU backend captures nothing"); }
  void launch_graph(void*, void*) override { throw Error("launch_graph: the CPU has no graphs"); }
  void destroy_graph(void*) noexcept override {}
  std::unique_ptr<Communicator> create_communicator(const std::vector<int>&) override {
    // One process's threads already share the CPU's memory and cores: `--threads N` is the CPU's
    // data parallelism (each op splits its batch over the cores), with no gradients to sum.
    throw UsageError("data-parallel training runs on GPUs (--gpus 0-7) or on emulated ones "
                     "(--device emu --gpus 0-3); on the CPU, --threads N uses the cores");
  }
  GpuInventory inventory() override {
    GpuInventory inv;
    inv.count = 1;
    inv.names.push_back("host CPU (" + std::to_string(std::thread::hardware_concurrency()) +
                        " threads)");
    return inv;
  }
};

}  // namespace

DeviceBackend& cpu_backend() {
  static CpuBackend cpu;
  return cpu;
}

}  // namespace evo
