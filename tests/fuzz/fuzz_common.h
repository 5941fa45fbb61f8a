// Shared by the libFuzzer targets of tests/fuzz/: a scratch folder for targets whose API reads
// files, and the rule every target checks. Not a test framework: tools/fuzz.sh builds and runs
// these with clang's -fsanitize=fuzzer,address,undefined.
//
// The rule: whatever the bytes, evo either returns a value or throws evo::Error (an error message
// for people). Anything else (a crash, a sanitizer report, another exception type, a hang, memory
// past libFuzzer's -rss_limit_mb) is a bug the fuzzer reports with the input that caused it.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "evo/error.h"

namespace evo::fuzz {

// One scratch folder per fuzzing process, removed at exit. The path lives on the heap for good:
// a static std::string would be destroyed before an atexit handler registered after it runs.
inline const std::string& scratch() {
  static const std::string* dir = [] {
    auto* d = new std::string((std::filesystem::temp_directory_path() /
                               ("evo-fuzz-" + std::to_string(::getpid())))
                                  .string());
    std::filesystem::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch(), ec);
    });
    return d;
  }();
  return *dir;
}

inline std::string write_file(const std::string& name, const uint8_t* data, std::size_t n) {
  const std::string path = scratch() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), std::streamsize(n));
  return path;
}

// Runs f; evo::Error is the expected outcome for bad input, anything else aborts (a finding).
template <typename F>
void expect_value_or_error(F&& f) {
  try {
    f();
  } catch (const evo::Error&) {
  }
}

}  // namespace evo::fuzz
