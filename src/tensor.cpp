// Tensor and Shape: allocation on any backend, host round trips, reshape views.
// Not kernels: element-wise work on tensors belongs to the ops of src/cpu and cuda/.
#include "evo/tensor.h"

#include <cstring>
#include <sstream>

#include "evo/backend.h"
#include "evo/error.h"

namespace evo {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::U8: return 1;
    case DType::I32: return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::U8: return "u8";
    case DType::I32: return "i32";
  }
  return "?";
}

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  if (dims.size() > kMaxRank)
    throw Error("shape of rank " + std::to_string(dims.size()) + ": evo tensors have at most " +
                std::to_string(kMaxRank) + " dimensions");
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) throw Error("shape has a negative dimension: " + std::to_string(dims[i]));
    dims_[i] = dims[i];
  }
  rank_ = int(dims.size());
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[i];
  os << ']';
  return os.str();
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i)
    if (a.dims_[i] != b.dims_[i]) return false;
  return true;
}

struct Tensor::Storage {
  DeviceBackend* backend;
  Device device;
  void* ptr;
  ~Storage() { backend->deallocate(ptr, device.ordinal); }
};

Tensor Tensor::empty(const Shape& shape, Device device, DType dtype) {
  Tensor t;
  t.shape_ = shape;
  t.device_ = device;
  t.dtype_ = dtype;
  DeviceBackend& backend = backend_for(device.kind);
  backend.set_device(device.ordinal);
  void* ptr = backend.allocate(t.bytes(), device.ordinal);
  t.storage_ = std::shared_ptr<Storage>(new Storage{&backend, device, ptr});
  return t;
}

Tensor Tensor::zeros(const Shape& shape, Device device, DType dtype) {
  Tensor t = empty(shape, device, dtype);
  t.storage_->backend->fill_zero(t.raw(), t.bytes(), nullptr);
  t.storage_->backend->synchronize(nullptr);
  return t;
}

Tensor Tensor::from_host(const std::vector<float>& values, const Shape& shape, Device device) {
  if (int64_t(values.size()) != shape.numel())
    throw Error("Tensor::from_host: " + std::to_string(values.size()) +
                " values for shape " + shape.str());
  Tensor t = empty(shape, device);
  t.storage_->backend->copy(t.raw(), values.data(), t.bytes(), CopyKind::HostToDevice, nullptr);
  t.storage_->backend->synchronize(nullptr);
  return t;
}

Tensor Tensor::from_host_bytes(const void* data, const Shape& shape, Device device, DType dtype) {
  Tensor t = empty(shape, device, dtype);
  t.storage_->backend->copy(t.raw(), data, t.bytes(), CopyKind::HostToDevice, nullptr);
  t.storage_->backend->synchronize(nullptr);
  return t;
}

void* Tensor::raw() const {
  if (!storage_) throw Error("use of an undefined (empty) tensor");
  return storage_->ptr;
}

namespace {
template <typename T>
T* typed(const Tensor& t, DType want) {
  if (t.dtype() != want)
    throw Error(std::string("tensor holds ") + dtype_name(t.dtype()) + ", not " + dtype_name(want));
  return static_cast<T*>(t.raw());
}
}  // namespace

template <>
float* Tensor::data<float>() const {
  return typed<float>(*this, DType::F32);
}
template <>
uint16_t* Tensor::data<uint16_t>() const {
  return typed<uint16_t>(*this, DType::BF16);
}
template <>
uint8_t* Tensor::data<uint8_t>() const {
  return typed<uint8_t>(*this, DType::U8);
}
template <>
int32_t* Tensor::data<int32_t>() const {
  return typed<int32_t>(*this, DType::I32);
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (shape.numel() != numel())
    throw Error("cannot reshape " + shape_.str() + " (" + std::to_string(numel()) +
                " elements) to " + shape.str() + " (" + std::to_string(shape.numel()) + ")");
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  if (!(src.shape_ == shape_) || src.dtype_ != dtype_)
    throw Error("copy_from: source " + src.shape_.str() + " " + dtype_name(src.dtype_) +
                " does not match destination " + shape_.str() + " " + dtype_name(dtype_));
  const std::size_t n = bytes();
  if (n == 0) return;
  const bool src_host = src.device_.is_cpu(), dst_host = device_.is_cpu();
  if (src_host && dst_host) {
    backend_for(DeviceKind::CPU).copy(raw(), src.raw(), n, CopyKind::HostToDevice, nullptr);
  } else if (src_host) {
    storage_->backend->set_device(device_.ordinal);
    storage_->backend->copy(raw(), src.raw(), n, CopyKind::HostToDevice, nullptr);
    storage_->backend->synchronize(nullptr);
  } else if (dst_host) {
    src.storage_->backend->set_device(src.device_.ordinal);
    src.storage_->backend->copy(raw(), src.raw(), n, CopyKind::DeviceToHost, nullptr);
    src.storage_->backend->synchronize(nullptr);
  } else if (src.device_.kind == device_.kind) {
    storage_->backend->set_device(device_.ordinal);
    storage_->backend->copy(raw(), src.raw(), n, CopyKind::DeviceToDevice, nullptr);
    storage_->backend->synchronize(nullptr);
  } else {
    // Between two different GPU-like backends (emu <-> cuda): bounce through the host.
    copy_from(src.to(Device::cpu()));
  }
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, device, dtype_);
  t.copy_from(*this);
  return t;
}

std::vector<float> Tensor::to_host() const {
  const float* src = data<float>();
  std::vector<float> out(static_cast<std::size_t>(numel()));
  if (out.empty()) return out;
  storage_->backend->set_device(device_.ordinal);
  storage_->backend->copy(out.data(), src, bytes(), CopyKind::DeviceToHost, nullptr);
  storage_->backend->synchronize(nullptr);
  return out;
}

}  // namespace evo
