// Catch2's main for every test executable: prints the random seed, then runs the tests.
// Not a test itself.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <random>


int main(int argc, char** argv) {
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv)) return rc;
  // Random inputs differ from run to run; the seed is printed so a failure can be replayed.
  if (session.configData().rngSeed == 0) session.configData().rngSeed = std::random_device{}() | 1u;
  std::printf("random seed %u (replay with --rng-seed %u)\n", session.configData().rngSeed,
              session.configData().rngSeed);
  return session.run();
}

#include "support.h"

namespace evo::test {
std::vector<Device> test_devices() {
  std::vector<Device> devices = {Device::cpu(), Device::emu()};
  if (discover_gpus().count > 0) devices.push_back(Device::cuda(0));
  return devices;
}
}  // namespace evo::test
