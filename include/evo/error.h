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

// Whether a cudaError_t code poisons the CUDA context: CUDA 13's driver_types.h documents each of
// these as "leaves the process in an inconsistent state and any further CUDA work will return the
// same error. To continue using CUDA, the process must be terminated and relaunched". A worker that
// catches one must give up its GPU (or the process); any other code is an error of that one call.
// An int so that this header needs no CUDA header (the values are cudaError_t's).
inline bool is_sticky_cuda_error(int code) {
  switch (code) {
    case 226:  // cudaErrorContained (hardware error contained by the GPU)
    case 700:  // cudaErrorIllegalAddress
    case 702:  // cudaErrorLaunchTimeout
    case 710:  // cudaErrorAssert (device-side assert)
    case 714:  // cudaErrorHardwareStackError
    case 715:  // cudaErrorIllegalInstruction
    case 716:  // cudaErrorMisalignedAddress
    case 717:  // cudaErrorInvalidAddressSpace
    case 718:  // cudaErrorInvalidPc
    case 719:  // cudaErrorLaunchFailure
    case 721:  // cudaErrorTensorMemoryLeak
    case 810:  // cudaErrorMpsClientTerminated
    case 911:  // cudaErrorExternalDevice
      return true;
    default:
      return false;
  }
}

// A CUDA runtime (or emulated runtime) call that did not return cudaSuccess, or a cuBLAS call that
// did not return CUBLAS_STATUS_SUCCESS.
class CudaError : public Error {
 public:
  // code() of an error that has no cudaError_t (a cuBLAS status on a healthy context).
  static constexpr int kNoCode = -1;

  CudaError(std::string call, std::string reason, const char* file, int line, int code = kNoCode)
      : Error(std::string(file) + ":" + std::to_string(line) + ": CUDA call '" + call +
              "' failed: " + reason),
        call_(std::move(call)), reason_(std::move(reason)), file_(file), line_(line), code_(code) {}
  const std::string& call() const { return call_; }
  const std::string& reason() const { return reason_; }
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  // The cudaError_t the call returned, as an int; kNoCode when there is none.
  int code() const { return code_; }
  // True when the GPU's context is broken for good (is_sticky_cuda_error): every later CUDA call in
  // this process fails the same way, so retrying on this GPU is pointless; out of memory
  // (cudaErrorMemoryAllocation) and other errors of one call are not sticky.
  bool sticky() const { return is_sticky_cuda_error(code_); }

 private:
  std::string call_, reason_, file_;
  int line_;
  int code_;
};

}  // namespace evo

// Names are unqualified on purpose: inside namespace evo::cuda they resolve to the real runtime,
// inside namespace evo::emu to the emulator's shims (see cuda/compat.h).
#define EVO_CUDA_CHECK(call)                                                          \
  do {                                                                                \
    auto evo_err_ = (call);                                                           \
    if (evo_err_ != cudaSuccess)                                                      \
      throw ::evo::CudaError(#call, cudaGetErrorString(evo_err_), __FILE__, __LINE__, \
                             static_cast<int>(evo_err_));                             \
  } while (0)

// Print-only variant for destructors and other places that must not throw. Silent for a sticky
// error: the call that hit it has reported it, and on a dead context every later free fails by
// design (a worker's teardown would print one line per buffer).
#define EVO_CUDA_CHECK_PRINT(call)                                                         \
  do {                                                                                     \
    auto evo_err_ = (call);                                                                \
    if (evo_err_ != cudaSuccess && !::evo::is_sticky_cuda_error(static_cast<int>(evo_err_))) \
      std::fprintf(stderr, "%s:%d: CUDA call '%s' failed: %s\n", __FILE__, __LINE__, #call, \
                   cudaGetErrorString(evo_err_));                                          \
  } while (0)
