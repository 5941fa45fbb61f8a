// The emulated NCCL: the collective calls evo uses (communicators over several emulated devices in
// one process, group calls, all-reduce and broadcast), with NCCL's names, codes and semantics, so
// that data-parallel training runs in CI without a GPU. Not a transport, not multi-process: every
// rank lives in this process, and a collective is a rendezvous of host threads.
//
// How a collective runs. The emulator runs stream work when it is queued (a kernel launch returns
// when its grid is done), so a collective completes in the call that queues it, in stream order as
// on a GPU: ncclAllReduce(..., stream) returns when every rank of the communicator has called it
// and the result is in every rank's recvbuff. A rank's call therefore waits for the other ranks,
// and the ranks call from different host threads (one per device, as evo's trainer does), or from
// one thread inside ncclGroupStart/ncclGroupEnd (the calls queue, and ncclGroupEnd runs them and
// waits for them all), exactly the two ways NCCL allows.
//
// What it checks, where NCCL would hang or corrupt memory (each an error code, the reason from
// ncclGetLastError):
// - the ranks of one collective disagree (another operation, count, type, reduction or root):
//   ncclInvalidArgument on every rank, naming both values;
// - a rank never joins: after EVO_EMU_NCCL_TIMEOUT seconds (default 60) the waiting ranks get
//   ncclInvalidUsage naming the missing ranks (a GPU would hang for good);
// - a buffer that is not device memory of the emulator, or too small: ncclInvalidArgument;
// - a call on a capturing stream: ncclInvalidUsage (the emulator cannot record collectives into a
//   graph);
// - a device with a sticky CUDA error: ncclUnhandledCudaError;
// - ncclCommAbort of any rank: the others' waiting calls return ncclRemoteError.
//
// Sum order (what makes results reproducible): element by element, rank 0's value, plus rank 1's,
// plus rank 2's..., in that order, in the buffer's type (float sums in float); ncclAvg divides that
// sum by the rank count (integers: truncated). Integer sums and products wrap; float max and min
// are fmax and fmin (a NaN loses to a number). Real NCCL's order depends on its ring or tree, so
// its float results may differ from these in the last bits.
#pragma once

#include <cstddef>

#include "cuda/emu/runtime.h"

namespace evo::emu {

// Codes and values as in NCCL 2.x's nccl.h.
enum ncclResult_t {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
};

enum ncclDataType_t {
  ncclInt8 = 0,
  ncclChar = 0,
  ncclUint8 = 1,
  ncclInt32 = 2,
  ncclInt = 2,
  ncclUint32 = 3,
  ncclInt64 = 4,
  ncclUint64 = 5,
  ncclFloat16 = 6,  // not supported by the emulator (ncclInvalidArgument)
  ncclHalf = 6,
  ncclFloat32 = 7,
  ncclFloat = 7,
  ncclFloat64 = 8,
  ncclDouble = 8,
  ncclBfloat16 = 9,  // not supported by the emulator (ncclInvalidArgument)
};

enum ncclRedOp_t { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 };

// NCCL's version encoding (major * 10000 + minor * 100 + patch): the emulator says 2.21.0.
#define EVO_EMU_NCCL_VERSION 22100

struct ncclComm;
using ncclComm_t = ncclComm*;

ncclResult_t ncclGetVersion(int* version);
const char* ncclGetErrorString(ncclResult_t result);
// The reason for the last error this host thread got from the emulated NCCL ("" when none); the
// communicator argument is accepted and not needed.
const char* ncclGetLastError(ncclComm_t comm);

// One communicator per device of `devlist` (ordinals of emulated devices, each at most once; null
// means 0, 1, ..., ndev - 1); comm[i] is rank i. Destroy each with ncclCommDestroy.
ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
// Marks the communicator's group as aborted: calls waiting in any of its ranks return
// ncclRemoteError, later calls too. Then destroys this rank's communicator, as NCCL does.
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommCount(ncclComm_t comm, int* count);
ncclResult_t ncclCommCuDevice(ncclComm_t comm, int* device);
ncclResult_t ncclCommUserRank(ncclComm_t comm, int* rank);

// Calls between the two are queued (per host thread, nesting allowed) and run at the outermost
// ncclGroupEnd, which returns when all of them are done, with the first error. A call that fails
// its checks inside a group returns the error at once, and then ncclGroupEnd returns it too and
// runs none of the group (as NCCL does). EVO_EMU_NCCL_TIMEOUT bounds the whole group's wait.
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();

// recvbuff[i] = op over ranks of sendbuff[i], on every rank; sendbuff == recvbuff is in place.
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, std::size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);
// Every rank's recvbuff = root's sendbuff (sendbuff is read on the root only; in place allowed).
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, std::size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);

}  // namespace evo::emu
