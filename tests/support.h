// Test helpers: the one comparison helper (atol + rtol, NaN never passes), random inputs, and the
// list of backends a test can run on. Not production code.
#pragma once

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "evo/data.h"
#include "evo/device.h"

namespace evo::test {

// Whether Debian's dataset-fashion-mnist is installed (tests that need it skip without it).
inline bool have_fashion_mnist() {
  return std::filesystem::exists(std::string(kFashionMnistDefaultDir) +
                                 "/train-images-idx3-ubyte.gz");
}

// Passes when |out[i] - ref[i]| <= atol + rtol * |ref[i]| for every i. NaN or infinity in `out`
// never passes. On failure, prints the first few mismatches and the largest error (capped).
template <typename Ref>
bool all_close(const std::vector<float>& out, const std::vector<Ref>& ref, double atol, double rtol,
               const std::string& what = "output") {
  if (out.size() != ref.size()) {
    std::printf("%s: size %zu, expected %zu\n", what.c_str(), out.size(), ref.size());
    return false;
  }
  std::size_t bad = 0, worst = 0;
  double max_err = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double o = out[i], r = double(ref[i]);
    const double err = std::fabs(o - r);
    const bool ok = std::isfinite(o) && err <= atol + rtol * std::fabs(r);
    if (!std::isfinite(o) || err > max_err) {
      max_err = std::isfinite(o) ? err : INFINITY;
      worst = i;
    }
    if (!ok) {
      if (bad < 5)
        std::printf("%s mismatch at %zu: got %.8g, expected %.8g (err %.3g)\n", what.c_str(), i, o,
                    r, err);
      ++bad;
    }
  }
  if (bad)
    std::printf("%s: %zu of %zu elements mismatch; max error %.3g at %zu\n", what.c_str(), bad,
                out.size(), max_err, worst);
  return bad == 0;
}

// Fresh random values each run, from Catch's --rng-seed (tests/main.cpp draws and prints one when
// none is given).
inline std::mt19937_64& rng() {
  static std::mt19937_64 gen(Catch::rngSeed());
  return gen;
}

inline std::vector<float> random_vector(std::size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng());
  return v;
}

// A fresh empty folder under the system's temp folder, unique per process and call (the caller
// removes it).
inline std::string temp_dir(const std::string& tag) {
  static int calls = 0;
  const std::filesystem::path p = std::filesystem::temp_directory_path() /
      ("evo_test_" + tag + "_" + std::to_string(rng()()) + "_" + std::to_string(++calls));
  std::filesystem::create_directories(p);
  return p.string();
}

// A path for a run folder under the system's temp folder, unique per process (the pid: two test
// programs given the same --rng-seed draw the same numbers), removed when the test leaves its
// scope, passed or failed: a folder a failed run left behind would be resumed by the next run.
// Not created here (a test may check that evo does not create it).
struct TempPath {
  std::string path;
  explicit TempPath(const std::string& tag)
      : path((std::filesystem::temp_directory_path() /
              ("evo_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(rng()())))
                 .string()) {}
  ~TempPath() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
};

// The devices this machine can test on: cpu and emu always, cuda:0 when a GPU is visible.
std::vector<Device> test_devices();

// Whether an independent reference (PyTorch, ONNX Runtime, a data set) must be there: under CI
// and tools/test.sh (EVO_REQUIRE_REFERENCES=1), a test that needs one fails rather than skips.
inline bool references_required() {
  return std::getenv("CI") != nullptr || std::getenv("EVO_REQUIRE_REFERENCES") != nullptr;
}

// Runs a shell command; its exit status (128 when it did not exit normally, -1 when it could not
// start).
inline int shell(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

#ifdef EVO_BINARY
// What the evo binary printed and its exit code, for tests of the command line.
struct Run {
  int code;
  std::string output;  // stdout and stderr together
};

// Runs `evo ARGS`; `redirect` says where stderr goes: by default into the output, after stdout's
// lines as printed.
inline Run run_evo(const std::string& args, const std::string& redirect = "2>&1") {
  const std::string cmd = std::string(EVO_BINARY) + " " + args + " " + redirect;
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  std::array<char, 4096> buf;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}
#endif

}  // namespace evo::test
