// libFuzzer target: the DNA parser, validator and compiler (src/dna*.cpp). Bytes -> parse_dna ->
// compile for a 28x28x1 input -> describe and to_dot; a DNA that parses must write back to JSON
// that parses to the same DNA. Not the mutations (tests/test_mutation.cpp covers those).
#include <cstddef>
#include <cstdint>
#include <string>

#include "evo/dna.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  evo::fuzz::expect_value_or_error([&] {
    const evo::Dna dna = evo::parse_dna(text, "fuzz.json");
    // Round trip: what evo writes, it reads back unchanged.
    if (!(evo::parse_dna(evo::to_json(dna), "again.json") == dna)) std::abort();
    evo::Budget budget;
    budget.max_params = 50'000'000;  // keep compile's shape work small
    const evo::CompiledDna plan = evo::compile(dna, 28, 28, 1, 10, budget);
    (void)evo::describe(plan);
    (void)evo::to_dot(plan);
  });
  return 0;
}
