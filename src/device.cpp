// Device names, parsing of --device and --gpus values, and GPU discovery through the CUDA backend.
// Not device memory management: see backend.cpp and cuda/backend.cu.
#include "evo/device.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <stdexcept>

#include "evo/backend.h"
#include "evo/error.h"

namespace evo {

std::string Device::str() const {
  switch (kind) {
    case DeviceKind::CPU: return "cpu";
    case DeviceKind::EMU: return ordinal == 0 ? "emu" : "emu:" + std::to_string(ordinal);
    case DeviceKind::CUDA: return "cuda:" + std::to_string(ordinal);
  }
  return "?";
}

namespace {

// Parses a non-negative decimal integer that is the whole of `text`; -1 otherwise.
int parse_index(const std::string& text) {
  if (text.empty() || text.size() > 6) return -1;
  for (char c : text)
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
  return std::stoi(text);
}

}  // namespace

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "emu") return Device::emu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("emu:", 0) == 0) {
    const int n = parse_index(text.substr(4));
    if (n >= 0) return Device{DeviceKind::EMU, n};
  }
  if (text.rfind("cuda:", 0) == 0) {
    const int n = parse_index(text.substr(5));
    if (n >= 0) return Device::cuda(n);
  }
  throw UsageError("unknown device '" + text +
                   "': expected cpu, emu (the CPU emulator of CUDA), emu:N, cuda or cuda:N");
}

GpuInventory discover_gpus() {
  try {
    return backend_for(DeviceKind::CUDA).inventory();
  } catch (const Error&) {
    GpuInventory none;
    none.reason = "this evo was built without CUDA (nvcc was not found when it was configured)";
    return none;
  }
}

std::vector<int> parse_gpu_list(const std::string& text, const GpuInventory& available) {
  if (text == "none" || text == "cpu") return {};
  std::vector<int> gpus;
  if (text == "all") {
    for (int i = 0; i < available.count; ++i) gpus.push_back(i);
    if (gpus.empty())
      throw UsageError("--gpus all: no CUDA GPU is visible (" + available.reason +
                       "); use --gpus none to run on the CPU");
    return gpus;
  }
  std::set<int> seen;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(start, comma - start);
    const std::size_t dash = item.find('-');
    int lo = -1, hi = -1;
    if (dash == std::string::npos) {
      lo = hi = parse_index(item);
    } else {
      lo = parse_index(item.substr(0, dash));
      hi = parse_index(item.substr(dash + 1));
    }
    if (lo < 0 || hi < 0 || hi < lo)
      throw UsageError("--gpus '" + text + "': '" + item +
                       "' is not a GPU index or range; expected e.g. 0, 0-7, 0,2,5, all or none");
    for (int g = lo; g <= hi; ++g)
      if (seen.insert(g).second) gpus.push_back(g);
    start = comma + 1;
  }
  for (int g : gpus) {
    if (g >= available.count) {
      std::string msg = "--gpus " + text + ": GPU " + std::to_string(g) + " is not there (";
      msg += available.count == 0 ? "no CUDA GPU is visible: " + available.reason
                                  : std::to_string(available.count) + " visible";
      msg += "); use --gpus none to run on the CPU";
      throw UsageError(msg);
    }
  }
  return gpus;
}

}  // namespace evo
