// Tests of the small core pieces: error macros, Philox, device parsing and GPU discovery.
// Not backend memory tests (test_tensor.cpp, test_arena.cpp).
#include <set>

#include "evo/device.h"
#include "evo/error.h"
#include "evo/philox.h"
#include "support.h"

using namespace evo;

namespace {
// A stand-in runtime so the macro can be tested without any GPU: the same unqualified names the
// macro uses inside evo::cuda and evo::emu.
namespace fake_runtime {
enum FakeError { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
const char* cudaGetErrorString(FakeError e) {
  return e == cudaErrorMemoryAllocation ? "out of memory" : "no error";
}
FakeError fail() { return cudaErrorMemoryAllocation; }
FakeError succeed() { return cudaSuccess; }
void check_fail() { EVO_CUDA_CHECK(fail()); }
void check_succeed() { EVO_CUDA_CHECK(succeed()); }
}  // namespace fake_runtime
}  // namespace

TEST_CASE("EVO_CUDA_CHECK throws CudaError with the call, reason, file and line", "[error]") {
  CHECK_NOTHROW(fake_runtime::check_succeed());
  try {
    fake_runtime::check_fail();
    FAIL("no exception");
  } catch (const CudaError& e) {
    CHECK(e.call() == "fail()");
    CHECK(e.reason() == "out of memory");
    CHECK(e.file().find("test_core.cpp") != std::string::npos);
    CHECK(e.line() > 0);
    const std::string what = e.what();
    CHECK(what.find("test_core.cpp:" + std::to_string(e.line())) != std::string::npos);
    CHECK(what.find("'fail()' failed: out of memory") != std::string::npos);
  }
}

TEST_CASE("Philox4x32-10 matches the published known-answer vectors", "[philox]") {
  // Known-answer tests of Salmon et al.'s Random123 distribution (kat_vectors).
  const Philox4 zero = philox4x32(Philox4{{0, 0, 0, 0}}, 0, 0);
  CHECK(zero.v[0] == 0x6627e8d5u);
  CHECK(zero.v[1] == 0xe169c58du);
  CHECK(zero.v[2] == 0xbc57ac4cu);
  CHECK(zero.v[3] == 0x9b00dbd8u);
  const Philox4 ones = philox4x32(Philox4{{~0u, ~0u, ~0u, ~0u}}, ~0u, ~0u);
  CHECK(ones.v[0] == 0x408f276du);
  CHECK(ones.v[1] == 0x41c83b0eu);
  CHECK(ones.v[2] == 0xa20bc7c6u);
  CHECK(ones.v[3] == 0x6d5451fdu);
  const Philox4 pi = philox4x32(Philox4{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                                0xa4093822u, 0x299f31d0u);
  CHECK(pi.v[0] == 0xd16cfe09u);
  CHECK(pi.v[1] == 0x94fdccebu);
  CHECK(pi.v[2] == 0x5001e420u);
  CHECK(pi.v[3] == 0x24126ea1u);
}

TEST_CASE("PhiloxState streams are independent and take() advances the offset", "[philox]") {
  PhiloxState a{42, 0, 0}, b{42, 1, 0};
  std::set<uint32_t> seen;
  for (int i = 0; i < 1000; ++i) {
    seen.insert(a.block(i).v[0]);
    seen.insert(b.block(i).v[0]);
  }
  CHECK(seen.size() == 2000);  // collisions among 2000 random 32-bit words are ~5e-4 likely
  const PhiloxState first = a.take(10);
  CHECK(first.offset == 0);
  CHECK(a.offset == 10);
  CHECK(a.block(0).v[0] == first.block(10).v[0]);
  // uniform01 covers [0, 1) with a mean near 1/2.
  double sum = 0;
  for (int i = 0; i < 4000; ++i) {
    const float u = uniform01(a.block(i).v[i % 4]);
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    sum += u;
  }
  CHECK(std::abs(sum / 4000 - 0.5) < 0.02);
}

TEST_CASE("parse_device accepts the documented forms and explains the rest", "[device]") {
  CHECK(parse_device("cpu") == Device::cpu());
  CHECK(parse_device("emu") == Device::emu());
  CHECK(parse_device("cuda") == Device::cuda(0));
  CHECK(parse_device("cuda:3") == Device::cuda(3));
  CHECK(Device::cuda(3).str() == "cuda:3");
  CHECK_THROWS_AS(parse_device("gpu"), UsageError);
  CHECK_THROWS_WITH(parse_device("cuda:x"), Catch::Contains("expected cpu, emu"));
}

TEST_CASE("parse_gpu_list expands ranges and rejects GPUs that are not there", "[device]") {
  GpuInventory eight;
  eight.count = 8;
  CHECK(parse_gpu_list("0-7", eight) == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(parse_gpu_list("0,2,5", eight) == std::vector<int>{0, 2, 5});
  CHECK(parse_gpu_list("0-2,6,1", eight) == std::vector<int>{0, 1, 2, 6});
  CHECK(parse_gpu_list("all", eight).size() == 8);
  CHECK(parse_gpu_list("none", eight).empty());
  CHECK_THROWS_WITH(parse_gpu_list("8", eight), Catch::Contains("GPU 8 is not there (8 visible)"));
  CHECK_THROWS_AS(parse_gpu_list("3-1", eight), UsageError);
  CHECK_THROWS_AS(parse_gpu_list("a", eight), UsageError);
  CHECK_THROWS_AS(parse_gpu_list("", eight), UsageError);

  GpuInventory none;
  none.reason = "no CUDA-capable device is detected";
  CHECK_THROWS_WITH(parse_gpu_list("0", none),
                    Catch::Contains("no CUDA GPU is visible: no CUDA-capable device"));
  CHECK_THROWS_AS(parse_gpu_list("all", none), UsageError);
}

TEST_CASE("GPU discovery falls back to the CPU with a reason when there is no GPU", "[device]") {
  const GpuInventory inv = discover_gpus();
  CHECK(inv.count == int(inv.names.size()));
  if (inv.count == 0) {
    CHECK_FALSE(inv.reason.empty());
  } else {
    for (const std::string& name : inv.names) CHECK(name.find("sm_") != std::string::npos);
  }
}
