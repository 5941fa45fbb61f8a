// The backend registry and the CPU backend (plain aligned host memory, no streams).
// Not the CUDA or emulated backends: they live in cuda/backend.cu and register themselves.
#include "evo/backend.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>
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
  void* create_stream(int) override { return nullptr; }
  void destroy_stream(void*) noexcept override {}
  void* create_blas(void*, int) override { return nullptr; }
  void destroy_blas(void*) noexcept override {}
  GpuInventory inventory() override {
    GpuInventory inv;
    inv.count = 1;
    inv.names.push_back("host CPU (" + std::to_string(std::thread::hardware_concurrency()) +
                        " threads)");
    return inv;
  }
};

std::mutex g_registry_mutex;
std::array<DeviceBackend*, 3> g_registry{};

}  // namespace

void register_backend(DeviceKind kind, DeviceBackend* backend) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  g_registry[static_cast<int>(kind)] = backend;
}

DeviceBackend& backend_for(DeviceKind kind) {
  if (kind == DeviceKind::CPU) {
    static CpuBackend cpu;
    return cpu;
  }
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  DeviceBackend* b = g_registry[static_cast<int>(kind)];
  if (!b) {
    throw Error(kind == DeviceKind::CUDA
                    ? "the CUDA backend is not available: this evo was built without CUDA"
                    : "the emulated CUDA backend is not registered (call evo::register_backends())");
  }
  return *b;
}

}  // namespace evo
