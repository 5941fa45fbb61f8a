// The Communicator of the GPU-like backends (include/evo/backend.h) over NCCL: the real library
// under nvcc, the emulator's NCCL (cuda/emu/nccl.h) under -DEVO_EMULATE. Built twice, like every
// .cu file. Not the training loop that calls it (src/train/parallel.cpp) and no kernels.
//
// One ncclCommInitAll for all ranks (one process drives every GPU, one host thread per GPU), so
// no unique id has to travel. Gradients go through one all-reduce per step over one flat buffer
// (Model::gradients()): a step of an evolved net has 10-40 weight tensors of a few hundred to a
// few thousand floats each, and NCCL's cost per call (~10 us launch and ring set-up) would dwarf
// the bytes if each went alone.
#include "cuda/compat.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "evo/backend.h"
#include "evo/error.h"

#if defined(EVO_EMULATE)
#include "cuda/emu/nccl.h"
#define EVO_NCCL_API 1
#elif defined(EVO_HAVE_NCCL)
#include <nccl.h>
#define EVO_NCCL_API 1
#else
#define EVO_NCCL_API 0
#endif

namespace evo::EVO_GPU_NS {

#if EVO_NCCL_API

namespace {

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const std::vector<int>& ordinals) : comms_(ordinals.size()) {
    if (ordinals.empty()) throw Error("a communicator needs at least one device");
    check(ncclCommInitAll(comms_.data(), int(ordinals.size()), ordinals.data()),
          "ncclCommInitAll over " + std::to_string(ordinals.size()) + " devices", nullptr);
  }
  ~NcclCommunicator() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (ncclComm_t& c : comms_)
      if (c) (void)ncclCommDestroy(c);
  }

  int size() const override { return int(comms_.size()); }
  void group_start() override { check(ncclGroupStart(), "ncclGroupStart", nullptr); }
  void group_end() override { check(ncclGroupEnd(), "ncclGroupEnd", nullptr); }

  void all_reduce(int rank, float* buf, std::size_t count, bool mean, void* stream) override {
    ncclComm_t c = comm(rank);
    check(ncclAllReduce(buf, buf, count, ncclFloat32, mean ? ncclAvg : ncclSum, c,
                        static_cast<cudaStream_t>(stream)),
          "ncclAllReduce of " + std::to_string(count) + " floats on rank " + std::to_string(rank),
          c);
  }
  void broadcast(int rank, float* buf, std::size_t count, int root, void* stream) override {
    ncclComm_t c = comm(rank);
    check(ncclBroadcast(buf, buf, count, ncclFloat32, root, c, static_cast<cudaStream_t>(stream)),
          "ncclBroadcast of " + std::to_string(count) + " floats from rank " +
              std::to_string(root) + " on rank " + std::to_string(rank),
          c);
  }

  void abort() noexcept override {
    // Every rank, from this thread: NCCL's way to release the ranks waiting for a failed one.
    std::lock_guard<std::mutex> lock(mutex_);
    for (ncclComm_t& c : comms_) {
      if (c) (void)ncclCommAbort(c);
      c = nullptr;
    }
  }

 private:
  ncclComm_t comm(int rank) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (rank < 0 || rank >= int(comms_.size()))
      throw Error("communicator rank " + std::to_string(rank) + " of " +
                  std::to_string(comms_.size()));
    if (!comms_[std::size_t(rank)])
      throw Error("the communicator was aborted after another rank failed");
    return comms_[std::size_t(rank)];
  }
  static void check(ncclResult_t r, const std::string& call, ncclComm_t c) {
    if (r == ncclSuccess) return;
    std::string why = ncclGetErrorString(r);
    const char* detail = ncclGetLastError(c);
    if (detail && *detail) why += std::string(": ") + detail;
    throw Error(call + " failed: " + why);
  }

  std::mutex mutex_;  // comms_ against abort() from another thread
  std::vector<ncclComm_t> comms_;
};

}  // namespace

std::unique_ptr<Communicator> make_communicator(const std::vector<int>& ordinals) {
  return std::make_unique<NcclCommunicator>(ordinals);
}

#else

std::unique_ptr<Communicator> make_communicator(const std::vector<int>&) {
  throw Error("this evo was built without NCCL (libnccl and nccl.h were not found next to the CUDA "
              "toolkit when it was configured): install NCCL (Debian: libnccl-dev) and rebuild "
              "for data-parallel training on several GPUs");
}

#endif

}  // namespace evo::EVO_GPU_NS
