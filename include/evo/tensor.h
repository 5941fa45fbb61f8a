// Tensor: a shape, a dtype and a device buffer. Layout is NHWC, row-major (channels fastest),
// because tensor-core convolutions want it. Not an autograd node: gradients live in the model.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "evo/device.h"

namespace evo {

// F32 for everything learned; BF16 reserved for mixed precision; U8 and I32 for data sets
// (images and labels resident on the device).
enum class DType { F32, BF16, U8, I32 };
std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

// Up to 4 dimensions. Activations are [N, H, W, C]; conv filters [C_out, KH, KW, C_in];
// fully connected weights [out, in].
class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t numel() const;
  std::string str() const;  // "[50, 32, 32, 16]"
  friend bool operator==(const Shape& a, const Shape& b);

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// Reference-counted storage: copies of a Tensor alias one buffer, like views. The buffer is
// released on the device it came from when the last reference goes.
class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, Device device, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, Device device, DType dtype = DType::F32);
  static Tensor from_host(const std::vector<float>& values, const Shape& shape, Device device);
  // shape.numel() elements of `dtype` copied from host memory at `data`.
  static Tensor from_host_bytes(const void* data, const Shape& shape, Device device, DType dtype);

  const Shape& shape() const { return shape_; }
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_.numel(); }
  std::size_t bytes() const { return std::size_t(numel()) * dtype_size(dtype_); }
  bool defined() const { return storage_ != nullptr; }

  void* raw() const;
  // Typed device pointer; throws when T does not match the dtype.
  template <typename T>
  T* data() const;

  // Same buffer, new shape with the same element count (throws otherwise).
  Tensor reshape(const Shape& shape) const;
  // The copies below are synchronous and use the device's default stream: a worker that queued
  // kernels on its own (non-blocking) stream calls ctx.synchronize() before reading results.
  // A new buffer on `device` holding a copy.
  Tensor to(Device device) const;
  // Copies `src` (same shape and dtype, any device) into this tensor's buffer (synchronous).
  void copy_from(const Tensor& src);
  // f32 only: the values on the host.
  std::vector<float> to_host() const;

 private:
  struct Storage;
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Device device_;
  DType dtype_ = DType::F32;
};

}  // namespace evo

namespace evo {
// f32 tensors hand out float*, bf16 tensors their raw 16-bit words, u8 and i32 their own.
template <>
float* Tensor::data<float>() const;
template <>
uint16_t* Tensor::data<uint16_t>() const;
template <>
uint8_t* Tensor::data<uint8_t>() const;
template <>
int32_t* Tensor::data<int32_t>() const;
}  // namespace evo
