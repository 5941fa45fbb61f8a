// Catch2's main for every test executable: registers the backends, then runs the tests.
// Not a test itself.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "evo/backend.h"

int main(int argc, char** argv) {
  evo::register_backends();
  return Catch::Session().run(argc, argv);
}

#include "support.h"

namespace evo::test {
std::vector<Device> test_devices() {
  std::vector<Device> devices = {Device::cpu(), Device::emu()};
  if (discover_gpus().count > 0) devices.push_back(Device::cuda(0));
  return devices;
}
}  // namespace evo::test
