// The safetensors container (the format of Hugging Face's `safetensors` package, the common way
// to ship PyTorch weights without pickle): an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw little-endian bytes. Written for
// `evo export --format pytorch`; not a reader (the exported Python file carries its own).
#include "evo/export.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

namespace evo {

std::string safetensors_bytes(const std::vector<NamedTensor>& tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata) {
  // Data order: 8-byte types first, then 4-byte ones, each by name (the order the safetensors
  // package itself writes), so every tensor starts aligned to its element size once the header
  // is padded to a multiple of 8.
  std::vector<const NamedTensor*> order;
  for (const NamedTensor& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const NamedTensor* a, const NamedTensor* b) {
    if (a->is_int != b->is_int) return a->is_int;
    return a->name < b->name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::string data;
  for (const NamedTensor* t : order) {
    int64_t count = 1;
    for (int64_t d : t->shape) count *= d;
    const std::size_t begin = data.size();
    if (t->is_int) {
      if (int64_t(t->ints.size()) != count)
        throw ExportError("tensor '" + t->name + "': " + std::to_string(t->ints.size()) +
                          " values for its shape");
      data.append(reinterpret_cast<const char*>(t->ints.data()), t->ints.size() * 8);
    } else {
      if (int64_t(t->values.size()) != count)
        throw ExportError("tensor '" + t->name + "': " + std::to_string(t->values.size()) +
                          " values for its shape");
      data.append(reinterpret_cast<const char*>(t->values.data()), t->values.size() * 4);
    }
    header[t->name] = {{"dtype", t->is_int ? "I64" : "F32"},
                       {"shape", t->shape},
                       {"data_offsets", {begin, data.size()}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the format allows trailing spaces
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
  return out + text + data;
}

}  // namespace evo
