// Tests of the workspace arena and the per-worker Context on every backend.
// Not a stress test of device memory.
#include <cstdint>
#include <set>

#include "evo/context.h"
#include "evo/error.h"
#include "support.h"

using namespace evo;

TEST_CASE("Arena hands out aligned, disjoint blocks and reuses them after a rewind", "[arena]") {
  for (Device dev : test::test_devices()) {
    DYNAMIC_SECTION(dev.str()) {
      Context ctx(dev, 1);
      Arena& arena = ctx.arena();
      std::vector<std::pair<char*, std::size_t>> blocks;
      std::uniform_int_distribution<std::size_t> size(1, 5000);
      for (int i = 0; i < 50; ++i) {
        const std::size_t n = size(test::rng());
        char* p = static_cast<char*>(arena.allocate(n));
        CHECK(reinterpret_cast<std::uintptr_t>(p) % Arena::kAlignment == 0);
        blocks.push_back({p, n});
      }
      // No two blocks overlap.
      std::sort(blocks.begin(), blocks.end());
      for (std::size_t i = 1; i < blocks.size(); ++i)
        CHECK(blocks[i - 1].first + blocks[i - 1].second <= blocks[i].first);

      const Arena::Mark m = arena.mark();
      void* a = arena.allocate(1000);
      arena.rewind(m);
      void* b = arena.allocate(1000);
      CHECK(a == b);  // the same memory comes back after a rewind
      {
        Arena::Scope scope(arena);
        arena.allocate(12345);
        CHECK(arena.in_use() >= 12345);
      }
      CHECK(arena.allocate(1000) == static_cast<char*>(b) + 1024);
    }
  }
}

TEST_CASE("Arena grows past its chunk and settles into one chunk after reset", "[arena]") {
  Context ctx(Device::emu(), 2);
  Arena& arena = ctx.arena();
  // A training step's worth of allocations, larger than the first chunk.
  auto step = [&] {
    for (int i = 0; i < 40; ++i) arena.allocate(100'000 + 256 * i);
  };
  step();
  CHECK(arena.device_allocations() >= 2);
  const std::size_t peak = arena.peak();
  arena.reset();
  CHECK(arena.in_use() == 0);
  CHECK(arena.capacity() >= peak);
  const std::size_t allocations = arena.device_allocations();
  for (int round = 0; round < 3; ++round) {
    step();
    arena.reset();
  }
  CHECK(arena.device_allocations() == allocations);  // steady state: no device allocation
  CHECK_THROWS_AS(arena.rewind({5, 0}), Error);
}

TEST_CASE("Context owns a stream and BLAS handle on GPU-like devices only", "[context]") {
  Context cpu(Device::cpu(), 7, 3);
  CHECK(cpu.stream() == nullptr);
  CHECK(cpu.blas() == nullptr);
  CHECK(cpu.rng().seed == 7);
  CHECK(cpu.rng().stream == 3);
  Context emu(Device::emu(), 7);
  CHECK(emu.stream() != nullptr);
  CHECK(emu.blas() != nullptr);
  emu.synchronize();

  // Stream-ordered copies through the context's stream land after a synchronize.
  const std::vector<float> values = test::random_vector(1000);
  float* d = emu.arena().allocate_n<float>(values.size());
  std::vector<float> back(values.size(), NAN);
  emu.backend().copy(d, values.data(), values.size() * 4, CopyKind::HostToDevice, emu.stream());
  emu.backend().copy(back.data(), d, values.size() * 4, CopyKind::DeviceToHost, emu.stream());
  emu.synchronize();
  CHECK(back == values);
}
