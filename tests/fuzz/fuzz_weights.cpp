// libFuzzer target: the weight-file reader (src/train/weight_file.cpp): bytes -> decode_weight_file,
// and the same bytes as a file read for the plan of data/dna/evolved/fmnist-01min-60p.json (the
// size bound and the match against the DNA). What decodes must survive encode -> decode unchanged,
// bit for bit (NaN payloads included). Not the device side (load_weights: test_model).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "evo/weight_file.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const evo::CompiledDna plan =
      evo::compile(evo::load_dna(EVO_SOURCE_DIR "/data/dna/evolved/fmnist-01min-60p.json"), 28, 28, 1, 10);
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  evo::fuzz::expect_value_or_error([&] {
    const evo::HostWeights w = evo::decode_weight_file(bytes, "w.evow");
    const evo::HostWeights again = evo::decode_weight_file(evo::encode_weight_file(w), "again");
    if (again.size() != w.size()) std::abort();
    for (const auto& [key, t] : w) {
      const evo::HostTensor& u = again.at(key);
      if (u.dims != t.dims || u.values.size() != t.values.size() ||
          std::memcmp(u.values.data(), t.values.data(), t.values.size() * sizeof(float)) != 0)
        std::abort();
    }
  });
  const std::string path = evo::fuzz::write_file("w.evow", data, size);
  evo::fuzz::expect_value_or_error([&] { (void)evo::read_weight_file(path, plan); });
  return 0;
}
