// Devices evo can run on (CPU, a CUDA GPU, or the CPU emulator of CUDA) and how to find them.
// Not the memory or stream API: that is backend.h; this file only names and discovers devices.
#pragma once

#include <string>
#include <vector>

namespace evo {

enum class DeviceKind { CPU, CUDA, EMU };

// A place where tensors live and kernels run. `ordinal` is the GPU index for CUDA, 0 otherwise.
struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int ordinal = 0;

  static Device cpu() { return {DeviceKind::CPU, 0}; }
  static Device cuda(int ordinal) { return {DeviceKind::CUDA, ordinal}; }
  static Device emu() { return {DeviceKind::EMU, 0}; }

  bool is_cpu() const { return kind == DeviceKind::CPU; }
  // CUDA and EMU share one code path (the same kernels, compiled twice).
  bool is_gpu_like() const { return kind != DeviceKind::CPU; }
  std::string str() const;  // "cpu", "emu" (emulated device 0), "emu:2", "cuda:3"
  friend bool operator==(const Device&, const Device&) = default;
};

// Parses "cpu", "emu" (= emu:0), "emu:N", "cuda" (= cuda:0) or "cuda:N"; throws evo::Error with the accepted forms.
Device parse_device(const std::string& text);

// What the CUDA runtime reports on this machine. With no GPU or no driver: count 0 and a reason.
struct GpuInventory {
  int count = 0;
  std::string reason;              // why count is 0 ("no CUDA driver", "built without CUDA", ...)
  std::vector<std::string> names;  // one per GPU: "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)"
};
GpuInventory discover_gpus();

// Parses a --gpus value against `available` GPUs: "none", "all", "3", "0-7", "0,2,5", "0-3,6".
// Throws evo::UsageError (exit code 2) naming the missing GPU when one asked for is not there.
std::vector<int> parse_gpu_list(const std::string& text, const GpuInventory& available);

}  // namespace evo
