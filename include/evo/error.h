// evo's exception types and the EVO_CUDA_CHECK macros that turn a failed CUDA call into one.
// Not a logging facility: errors are thrown, never exit(), so one bad child cannot kill a search.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>

namespace evo {

// Base of every error evo throws on purpose; the message is written for people.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A mistake in how evo was invoked (bad option value, a GPU that is not there). Exit code 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(what) {}
};

// A CUDA runtime (or emulated runtime) call that did not return cudaSuccess.
class CudaError : public Error {
 public:
  CudaError(std::string call, std::string reason, const char* file, int line)
      : Error(std::string(file) + ":" + std::to_string(line) + ": CUDA call '" + call +
              "' failed: " + reason),
        call_(std::move(call)), reason_(std::move(reason)), file_(file), line_(line) {}
  const std::string& call() const { return call_; }
  const std::string& reason() const { return reason_; }
  const std::string& file() const { return file_; }
  int line() const { return line_; }

 private:
  std::string call_, reason_, file_;
  int line_;
};

}  // namespace evo

// Names are unqualified on purpose: inside namespace evo::cuda they resolve to the real runtime,
// inside namespace evo::emu to the emulator's shims (see cuda/compat.h).
#define EVO_CUDA_CHECK(call)                                                          \
  do {                                                                                \
    auto evo_err_ = (call);                                                           \
    if (evo_err_ != cudaSuccess)                                                      \
      throw ::evo::CudaError(#call, cudaGetErrorString(evo_err_), __FILE__, __LINE__); \
  } while (0)

// Print-only variant for destructors and other places that must not throw.
#define EVO_CUDA_CHECK_PRINT(call)                                                         \
  do {                                                                                     \
    auto evo_err_ = (call);                                                                \
    if (evo_err_ != cudaSuccess)                                                           \
      std::fprintf(stderr, "%s:%d: CUDA call '%s' failed: %s\n", __FILE__, __LINE__, #call, \
                   cudaGetErrorString(evo_err_));                                          \
  } while (0)
