// What the op tests (tests/test_ops*.cpp, one executable) share: OP_TEST, which registers one test
// body once per device, device buffers, the convolution versions' entry points, small input
// helpers. Not a test; not for other suites.
//
// OP_TEST("name", "[tags]") { ... } defines a body that sees `Device device` and is registered as
// three Catch2 test cases, "cpu: name" [cpu], "emu: name" [emu] and "cuda: name" [cuda]. A tag
// picks a device:
//   test_ops "[cpu]"     # the CPU backend
//   test_ops "[emu]"     # the CUDA kernels on the emulator (tools/test.sh's ASan pass)
//   test_ops "[cuda]"    # the same kernels on cuda:0 (a GPU machine)
//   compute-sanitizer --tool racecheck test_ops "[cuda][sanitize]"
// Without a GPU (or in a build without CUDA) the [cuda] cases pass without checking anything, and
// the program says so once. "[sanitize]" marks short tests that still launch every kernel that
// uses shared memory, for compute-sanitizer's slow tools. ctest runs each device as its own test:
// test_ops_cpu, test_ops_emu, test_ops_cuda (tests/CMakeLists.txt).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "cuda/conv/conv.h"
#include "evo/backend.h"
#include "evo/context.h"
#include "evo/device.h"
#include "evo/ops.h"
#include "support.h"

namespace evo::test {

// cuda:0 when this build has CUDA and the machine a GPU; otherwise nothing, said once.
inline std::optional<Device> cuda_under_test() {
  static const GpuInventory gpus = discover_gpus();
#if defined(EVO_HAVE_CUDA)
  if (gpus.count > 0) return Device::cuda(0);
#endif
  static bool said = false;
  if (!said)
    std::printf("no CUDA GPU (%s): the [cuda] test cases check nothing here\n",
                gpus.reason.c_str());
  said = true;
  return std::nullopt;
}

// A buffer on the context's device (plain host memory on the CPU backend). Copies go through the
// context's own stream (a worker stream does not wait for the null stream), and reads synchronise
// it first, so a test reads what the op wrote whatever the device.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer(Context& ctx, std::size_t n) : ctx_(&ctx), n_(n) {
    ptr_ = static_cast<T*>(ctx.backend().allocate(bytes(), ctx.device().ordinal));
  }
  DeviceBuffer(Context& ctx, const std::vector<T>& host) : DeviceBuffer(ctx, host.size()) {
    upload(host);
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ctx_(other.ctx_), n_(other.n_), ptr_(std::exchange(other.ptr_, nullptr)) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) ctx_->backend().deallocate(ptr_, ctx_->device().ordinal);
  }

  T* get() const { return ptr_; }
  std::size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    if (n_ > 0)
      ctx_->backend().copy(ptr_, host.data(), n_ * sizeof(T), CopyKind::HostToDevice,
                           ctx_->stream());
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_ > 0)
      ctx_->backend().copy(host.data(), ptr_, n_ * sizeof(T), CopyKind::DeviceToHost,
                           ctx_->stream());
    ctx_->synchronize();
    return host;
  }

 private:
  // Never 0 bytes: an empty buffer still gets a pointer of its own.
  std::size_t bytes() const { return n_ * sizeof(T) > 0 ? n_ * sizeof(T) : 1; }
  Context* ctx_;
  std::size_t n_;
  T* ptr_ = nullptr;
};

using Floats = DeviceBuffer<float>;

// An output buffer full of NaN: all_close fails on every element the op does not write.
inline Floats poisoned(Context& ctx, std::size_t n) {
  return Floats(ctx, std::vector<float>(n, NAN));
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

inline int random_int(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(rng());
}

// The explicit-version convolution entry points of one GPU namespace (emu or cuda).
struct ConvApi {
  decltype(&emu::conv2d_forward_version) forward;
  decltype(&emu::conv2d_backward_data_version) backward_data;
  decltype(&emu::conv2d_backward_filter_version) backward_filter;
  decltype(&emu::set_conv_forward_version) set_forward;
  decltype(&emu::set_conv_backward_data_version) set_backward_data;
  decltype(&emu::set_conv_backward_filter_version) set_backward_filter;
  decltype(&emu::conv_version_name) name;
};
inline ConvApi conv_api(Device device) {
#if defined(EVO_HAVE_CUDA)
  if (device.kind == DeviceKind::CUDA)
    return {cuda::conv2d_forward_version,
            cuda::conv2d_backward_data_version,
            cuda::conv2d_backward_filter_version,
            cuda::set_conv_forward_version,
            cuda::set_conv_backward_data_version,
            cuda::set_conv_backward_filter_version,
            cuda::conv_version_name};
#endif
  REQUIRE(device.kind == DeviceKind::EMU);
  return {emu::conv2d_forward_version,
          emu::conv2d_backward_data_version,
          emu::conv2d_backward_filter_version,
          emu::set_conv_forward_version,
          emu::set_conv_backward_data_version,
          emu::set_conv_backward_filter_version,
          emu::conv_version_name};
}

}  // namespace evo::test

#define EVO_OP_TEST_CASES(body, name, tags)                          \
  static void body(::evo::Device device);                            \
  TEST_CASE("cpu: " name, "[cpu]" tags) {                            \
    body(::evo::Device::cpu());                                      \
  }                                                                  \
  TEST_CASE("emu: " name, "[emu]" tags) {                            \
    body(::evo::Device::emu());                                      \
  }                                                                  \
  TEST_CASE("cuda: " name, "[cuda]" tags) {                          \
    if (const auto gpu = ::evo::test::cuda_under_test()) body(*gpu); \
  }                                                                  \
  static void body([[maybe_unused]] ::evo::Device device)

// One test body, registered once per device (see the top of this file).
#define OP_TEST(name, tags) EVO_OP_TEST_CASES(INTERNAL_CATCH_UNIQUE_NAME(op_test_), name, tags)
