// The weight file format ("evo-weights/1", documented in data/dna/README.md): magic, version,
// tensor count, then per tensor its key, shape and little-endian f32 values, and a CRC-32 of all
// that. Encoding and decoding on the host, and the check of a file against a DNA's plan. Not the
// device side (model.h's save_weights and load_weights use these) and not writing files (io.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "evo/dna.h"
#include "evo/error.h"

namespace evo {

// A weight file that is missing, truncated, corrupt, or written for another DNA.
class WeightsError : public Error {
 public:
  explicit WeightsError(const std::string& what) : Error(what) {}
};

struct HostTensor {
  std::vector<int64_t> dims;
  std::vector<float> values;
};
using HostWeights = std::map<std::string, HostTensor>;  // by ParamInfo::key

// The file's bytes for these tensors (keys in map order).
std::string encode_weight_file(const HostWeights& tensors);

// The tensors a file's bytes hold. Throws WeightsError naming `path` and the offset: bad magic or
// version, truncation, a dimension or element count the file cannot hold (checked before any
// allocation), a CRC-32 mismatch, bytes after the checksum.
HostWeights decode_weight_file(std::string bytes, const std::string& path);

// The exact size of the weight file of `plan`.
uint64_t weight_file_bytes(const CompiledDna& plan);

// Reads `path` (a regular file of at most weight_file_bytes(plan) + 1 MiB: a bigger one is
// refused before it is read), decodes it, and checks that it holds exactly plan's tensors with
// their shapes. Throws WeightsError naming the file and what is wrong.
HostWeights read_weight_file(const std::string& path, const CompiledDna& plan);

}  // namespace evo
