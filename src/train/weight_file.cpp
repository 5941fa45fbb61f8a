// The weight file ("evo-weights/1", data/dna/README.md): encoding host tensors, decoding a file
// with every check of its format, and matching it to a DNA's plan. No device and no Tensor (so the
// fuzzer of tests/fuzz/ links it alone); model.h's save_weights/load_weights move the values to
// and from a device. Not initialisation or inheritance (weights.cpp).
#include "evo/weight_file.h"

#include <zlib.h>

#include <cstring>
#include <sstream>

#include "evo/io.h"
#include "evo/tensor.h"  // Shape::kMaxRank (a constant: nothing of tensor.cpp is linked)

namespace evo {

namespace {

constexpr char kMagic[8] = {'E', 'V', 'O', 'W', 'E', 'I', 'G', 'H'};
constexpr uint32_t kVersion = 1;

std::string shape_str(const std::vector<int64_t>& dims) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
  os << ']';
  return os.str();
}


// Little-endian writer/reader with the running CRC-32 of what passed through.
struct Writer {
  std::string bytes;
  void put(const void* p, std::size_t n) {
    if (n) bytes.append(static_cast<const char*>(p), n);
  }
  template <typename T>
  void put(T v) {
    put(&v, sizeof v);
  }
};

class Reader {
 public:
  Reader(const std::string& path, std::string bytes) : path_(path), bytes_(std::move(bytes)) {}
  void get(void* p, std::size_t n, const char* what) {
    if (n == 0) return;  // an empty tensor: p may be null, and memcpy(null, ..., 0) is undefined
    if (pos_ + n > bytes_.size())
      throw WeightsError("weight file " + path_ + " is truncated at offset " +
                         std::to_string(bytes_.size()) + " (reading " + what + " at offset " +
                         std::to_string(pos_) + ", " + std::to_string(n) + " bytes)");
    std::memcpy(p, bytes_.data() + pos_, n);
    pos_ += n;
  }
  template <typename T>
  T get(const char* what) {
    T v;
    get(&v, sizeof v, what);
    return v;
  }
  std::size_t pos() const { return pos_; }
  std::size_t size() const { return bytes_.size(); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string path_, bytes_;
  std::size_t pos_ = 0;
};


}  // namespace

std::string encode_weight_file(const HostWeights& tensors) {
  Writer out;
  out.put(kMagic, sizeof kMagic);
  out.put<uint32_t>(kVersion);
  out.put<uint32_t>(uint32_t(tensors.size()));
  for (const auto& [key, t] : tensors) {
    if (key.size() > 65535) throw WeightsError("weight key '" + key.substr(0, 40) + "...' is too long");
    out.put<uint16_t>(uint16_t(key.size()));
    out.put(key.data(), key.size());
    out.put<uint8_t>(uint8_t(t.dims.size()));
    for (int64_t d : t.dims) out.put<int64_t>(d);
    out.put(t.values.data(), t.values.size() * sizeof(float));
  }
  const uint32_t crc = uint32_t(
      crc32(0L, reinterpret_cast<const Bytef*>(out.bytes.data()), uInt(out.bytes.size())));
  out.put<uint32_t>(crc);
  return std::move(out.bytes);
}

uint64_t weight_file_bytes(const CompiledDna& plan) {
  uint64_t expected = sizeof kMagic + 4 + 4 + 4;
  for (const ParamInfo& p : plan.params)
    expected += 2 + p.key.size() + 1 + 8 * p.shape.size() + 4 * uint64_t(p.elements());
  return expected;
}

HostWeights decode_weight_file(std::string bytes, const std::string& path) {
  Reader in(path, std::move(bytes));

  char magic[sizeof kMagic];
  in.get(magic, sizeof magic, "the magic number");
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    throw WeightsError("weight file " + path + " is not an evo weight file (bad magic at offset 0)");
  const uint32_t version = in.get<uint32_t>("the version");
  if (version != kVersion)
    throw WeightsError("weight file " + path + " has format version " + std::to_string(version) +
                       "; this evo reads version " + std::to_string(kVersion));
  const uint32_t count = in.get<uint32_t>("the tensor count");
  HostWeights file_tensors;
  for (uint32_t i = 0; i < count; ++i) {
    const uint16_t len = in.get<uint16_t>("a key length");
    std::string key(len, '\0');
    in.get(key.data(), len, "a key");
    const uint8_t rank = in.get<uint8_t>("a rank");
    if (rank > Shape::kMaxRank)
      throw WeightsError("weight file " + path + ": tensor '" + key + "' has rank " +
                         std::to_string(rank) + " at offset " + std::to_string(in.pos() - 1));
    std::vector<int64_t> dims(rank);
    int64_t n = 1;
    for (auto& d : dims) {
      d = in.get<int64_t>("a dimension");
      if (d < 0 || d > (int64_t(1) << 31))
        throw WeightsError("weight file " + path + ": tensor '" + key + "' has dimension " +
                           std::to_string(d) + " at offset " + std::to_string(in.pos() - 8));
      // n stays within what the file can hold (so no overflow: d <= 2^31 and n <= 2^62 / 4).
      const uint64_t room = (in.size() - in.pos()) / 4;
      if (d != 0 && uint64_t(n) > room / uint64_t(d))
        throw WeightsError("weight file " + path + " is truncated: tensor '" + key +
                           "' has more elements than the " + std::to_string(in.size()) +
                           "-byte file holds (dimensions up to offset " +
                           std::to_string(in.pos() - 8) + ")");
      n *= d;
    }
    // Check the size before allocating: a corrupt dimension must not ask for terabytes.
    if (uint64_t(n) * 4 > in.size() - in.pos())
      throw WeightsError("weight file " + path + " is truncated: tensor '" + key + "' needs " +
                         std::to_string(n * 4) + " bytes at offset " + std::to_string(in.pos()) +
                         ", the file ends at offset " + std::to_string(in.size()));
    std::vector<float> values(static_cast<std::size_t>(n));
    in.get(values.data(), values.size() * sizeof(float), "tensor values");
    file_tensors[key] = {dims, std::move(values)};
  }
  const std::size_t body = in.pos();
  const uint32_t stored = in.get<uint32_t>("the checksum");
  const uint32_t crc =
      uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(in.bytes().data()), uInt(body)));
  if (crc != stored)
    throw WeightsError("weight file " + path + " is corrupt: CRC-32 mismatch (stored " +
                       std::to_string(stored) + ", computed " + std::to_string(crc) + ")");
  if (in.pos() != in.size())
    throw WeightsError("weight file " + path + " has " + std::to_string(in.size() - in.pos()) +
                       " unexpected bytes after the checksum at offset " + std::to_string(in.pos()));

  return file_tensors;
}

HostWeights read_weight_file(const std::string& path, const CompiledDna& plan) {
  // The file `plan` expects has a known size; a bigger one is the wrong file (or /dev/zero), and
  // is refused before it is read. The slack lets a file with a few stray bytes reach the precise
  // errors of decode_weight_file.
  const uint64_t expected = weight_file_bytes(plan);
  std::string bytes;
  try {
    bytes = read_file_limited(path, expected + (uint64_t(1) << 20), "weight file");
  } catch (const Error& e) {
    throw WeightsError(std::string(e.what()) + " (" + std::to_string(expected) +
                       " bytes expected for this DNA)");
  }
  HostWeights file_tensors = decode_weight_file(std::move(bytes), path);
  for (const ParamInfo& p : plan.params) {
    const auto it = file_tensors.find(p.key);
    if (it == file_tensors.end())
      throw WeightsError("weight file " + path + " was written for another DNA: it has no tensor '" +
                         p.key + "' (" + to_string(p.kind) + ", shape " + shape_str(p.shape) + ")");
    if (it->second.dims != p.shape)
      throw WeightsError("weight file " + path + " was written for another DNA: tensor '" + p.key +
                         "' has shape " + shape_str(it->second.dims) + " in the file, " +
                         shape_str(p.shape) + " in this DNA");
  }
  if (file_tensors.size() != plan.params.size()) {
    for (const auto& [key, t] : file_tensors)
      if (!plan.find_param(key))
        throw WeightsError("weight file " + path + " was written for another DNA: its tensor '" +
                           key + "' has no place in this DNA");
  }
  return file_tensors;
}

}  // namespace evo
