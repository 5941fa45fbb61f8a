// evo doctor: what this build can do here: each backend probed with a real round trip through
// its memory, the GPUs seen, the default data set. Not a benchmark, and it changes nothing; not
// a run's status (status.cpp: `evo status RUN`).
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "cli.h"
#include "evo/backend.h"
#include "evo/data.h"
#include "evo/device.h"
#include "evo/tensor.h"

namespace evo::cli {

namespace {

struct BackendStatus {
  std::string device;
  bool ready = false;
  std::string detail;
};

// Allocates a small tensor on `device` and round-trips random-looking values through it: a
// backend counts as ready only when its memory really works.
BackendStatus probe_backend(Device device, const std::string& detail) {
  BackendStatus st{device.str(), false, detail};
  try {
    std::vector<float> values(257);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(i * 7919 % 263) - 131.5f;
    const Tensor t = Tensor::from_host(values, {257}, device);
    st.ready = t.to_host() == values;
    if (!st.ready) st.detail += " (round trip returned wrong values)";
  } catch (const std::exception& e) {
    st.detail += std::string(" (") + e.what() + ")";
  }
  return st;
}

}  // namespace

int run_doctor(bool json) {
  const GpuInventory gpus = discover_gpus();
  std::vector<BackendStatus> backends;
  backends.push_back(
      probe_backend(Device::cpu(), backend_for(DeviceKind::CPU).inventory().names[0]));
  backends.push_back(probe_backend(Device::emu(), "CPU emulator of the CUDA kernels"));
  for (int i = 0; i < gpus.count; ++i) backends.push_back(probe_backend(Device::cuda(i), gpus.names[i]));

  const bool have_data = std::filesystem::exists(std::filesystem::path(kFashionMnistDefaultDir) /
                                                 "train-images-idx3-ubyte.gz");

  if (json) {
    nlohmann::json j;
    j["version"] = EVO_VERSION;
    j["gpus"] = {{"count", gpus.count}, {"names", gpus.names}, {"reason", gpus.reason}};
    for (const auto& b : backends)
      j["backends"].push_back({{"device", b.device}, {"ready", b.ready}, {"detail", b.detail}});
    j["data"] = {{"fashion-mnist", have_data}};
    print_json(j);
    return 0;
  }
  std::printf("evo %s: Large-Scale Evolution of Image Classifiers (Real et al. 2017), from scratch\n\n",
              EVO_VERSION);
  std::printf("devices\n");
  for (const auto& b : backends)
    std::printf("  %-8s %-6s %s\n", b.device.c_str(), b.ready ? "ready" : "FAILED",
                b.detail.c_str());
  if (gpus.count == 0)
    std::printf("  %-8s %-6s no GPU: %s; evo runs on the CPU\n", "cuda", "-",
                gpus.reason.c_str());
  std::printf("\ndata\n  fashion-mnist  %s\n",
              have_data ? kFashionMnistDefaultDir : "missing (tools/setup.sh installs it)");
  std::printf("\n`evo` with no arguments runs the search; `evo --help` lists the subcommands.\n");
  return 0;
}

Command add_doctor_command(CLI::App& app, const Globals& globals) {
  CLI::App* doctor =
      app.add_subcommand("doctor", "What this build can do here: devices, data sets");
  return {doctor, [&globals] { return run_doctor(globals.json); }};
}

}  // namespace evo::cli
