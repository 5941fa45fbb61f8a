// libFuzzer target: what the population store reads from a run folder (src/search/population.cpp):
// an individual's metrics.json through the bounded JSON parser into an IndividualRecord. Not the
// store's protocol (test_population races and kills it).
#include <cstddef>
#include <cstdint>
#include <string>

#include "evo/io.h"
#include "evo/population.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  evo::fuzz::expect_value_or_error([&] {
    const evo::IndividualRecord r =
        evo::record_from_json(evo::parse_json_limited(text, "metrics.json"), "metrics.json");
    (void)evo::to_json(r).dump();
  });
  return 0;
}
