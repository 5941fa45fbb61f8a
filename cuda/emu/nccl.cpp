// The emulated NCCL (nccl.h): communicators sharing a clique, collectives as rendezvous of host
// threads numbered per rank, group calls, the checks that turn NCCL's hangs into error codes.
// Not a transport and not a model of NCCL's rings or trees: the reduction is one host loop.
#include "cuda/emu/nccl.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cuda/emu/internal.h"

namespace evo::emu {

namespace {

using Clock = std::chrono::steady_clock;

// The reason for this thread's last failure; NCCL keeps it until the next one, and so do we.
thread_local std::string t_last_error;

ncclResult_t fail(ncclResult_t code, std::string why) {
  t_last_error = std::move(why);
  return code;
}

// ---- what a call asks for ---------------------------------------------------------------------

enum class Kind : std::uint8_t { AllReduce, Broadcast };

const char* kind_name(Kind k) {
  return k == Kind::AllReduce ? "ncclAllReduce" : "ncclBroadcast";
}

// The element size, or 0 for a type the emulator does not reduce (half and bfloat16 would need
// their own rounding to be worth having; evo trains in float).
std::size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    default:
      return 0;
  }
}

std::string type_name(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
      return "ncclInt8";
    case ncclUint8:
      return "ncclUint8";
    case ncclInt32:
      return "ncclInt32";
    case ncclUint32:
      return "ncclUint32";
    case ncclInt64:
      return "ncclInt64";
    case ncclUint64:
      return "ncclUint64";
    case ncclFloat16:
      return "ncclFloat16";
    case ncclFloat32:
      return "ncclFloat32";
    case ncclFloat64:
      return "ncclFloat64";
    case ncclBfloat16:
      return "ncclBfloat16";
  }
  return "datatype " + std::to_string(int(t));
}

std::string op_name(ncclRedOp_t op) {
  switch (op) {
    case ncclSum:
      return "ncclSum";
    case ncclProd:
      return "ncclProd";
    case ncclMax:
      return "ncclMax";
    case ncclMin:
      return "ncclMin";
    case ncclAvg:
      return "ncclAvg";
  }
  return "op " + std::to_string(int(op));
}

// One rank's call of one collective.
struct Call {
  Kind kind = Kind::AllReduce;
  const void* send = nullptr;
  void* recv = nullptr;
  std::size_t count = 0;
  ncclDataType_t type = ncclFloat32;
  ncclRedOp_t op = ncclSum;  // AllReduce only
  int root = 0;              // Broadcast only
};

// "ncclAllReduce of 1000 x ncclFloat32, ncclSum", for messages.
std::string describe(const Call& c) {
  std::string s =
      std::string(kind_name(c.kind)) + " of " + std::to_string(c.count) + " x " + type_name(c.type);
  return s +
         (c.kind == Kind::AllReduce ? ", " + op_name(c.op) : ", root " + std::to_string(c.root));
}

// ---- cliques and collectives ------------------------------------------------------------------

// One collective of a clique: the k-th call of every rank. Pending until every rank has called,
// then Running (the last caller computes, outside the lock), then Done. A collective that times
// out or finds its ranks disagreeing is Done with an error and never touches a buffer.
struct Collective {
  enum class State : std::uint8_t { Pending, Running, Done };
  std::uint64_t number = 0;
  std::vector<std::optional<Call>> calls;  // [rank]
  int joined = 0;
  State state = State::Pending;
  ncclResult_t result = ncclSuccess;
  std::string why;  // for ncclGetLastError when result is an error
};

// What the communicators of one ncclCommInitAll share. Freed with the last of them (shared_ptr),
// or later: a call still waiting holds it too.
struct Clique {
  int nranks = 0;
  std::vector<int> devices;  // [rank]
  std::mutex mutex;
  std::condition_variable changed;  // a collective changed state, or the clique was aborted
  // Under mutex:
  std::vector<std::uint64_t> next_number;  // [rank]: the number its next collective gets
  std::map<std::uint64_t, std::shared_ptr<Collective>> open;  // not yet joined by every rank
  bool aborted = false;
  std::string abort_why;
};

}  // namespace

struct ncclComm {
  std::shared_ptr<Clique> clique;
  int rank = 0;
};

namespace {

// Every communicator ncclCommInitAll made and nobody destroyed, so that a destroyed or made-up
// handle is an error rather than a use after free.
std::mutex g_comms_mutex;
std::unordered_set<const ncclComm*> g_comms;

// The calling rank, as a call sees it once it has checked the handle.
struct Rank {
  std::shared_ptr<Clique> clique;
  int rank = 0;
  int device = 0;
};

ncclResult_t find_comm(ncclComm_t comm, const char* call, Rank* out) {
  if (!comm) return fail(ncclInvalidArgument, std::string(call) + ": comm is null");
  std::lock_guard<std::mutex> lock(g_comms_mutex);
  if (!g_comms.count(comm))
    return fail(ncclInvalidArgument,
                std::string(call) +
                    ": comm is not a live communicator (destroyed, aborted, or "
                    "never made by ncclCommInitAll)");
  *out = {comm->clique, comm->rank, comm->clique->devices[std::size_t(comm->rank)]};
  return ncclSuccess;
}

// The sticky CUDA error of `device` (cudaSuccess while healthy; cudaErrorInvalidDevice when the
// device no longer exists). The runtime answers for the calling thread's current device, so this
// switches to `device` and back: cudaSetDevice and cudaGetDevice work on a poisoned device, and
// leave the thread's last CUDA error alone when they succeed.
cudaError_t device_sticky_error(int device) {
  int saved = 0;
  (void)cudaGetDevice(&saved);
  if (cudaSetDevice(device) != cudaSuccess) return cudaErrorInvalidDevice;
  const cudaError_t e = detail::sticky_error();
  (void)cudaSetDevice(saved);
  return e;
}

// EVO_EMU_NCCL_TIMEOUT in seconds (fractions allowed), default 60; nullopt when malformed.
std::optional<double> timeout_seconds() {
  const char* v = std::getenv("EVO_EMU_NCCL_TIMEOUT");
  if (!v || !*v) return 60.0;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  if (*end != '\0' || !(s > 0) || s > 1e7) return std::nullopt;
  return s;
}

ncclResult_t read_timeout(double* seconds, const std::string& where) {
  const std::optional<double> t = timeout_seconds();
  if (!t)
    return fail(ncclInvalidUsage, where + ": EVO_EMU_NCCL_TIMEOUT='" +
                                      std::getenv("EVO_EMU_NCCL_TIMEOUT") +
                                      "' is not a number of seconds above 0 (unset it for 60)");
  *seconds = *t;
  return ncclSuccess;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

// ---- the reduction ----------------------------------------------------------------------------

// a op b in T. Integers wrap as on a GPU (computed unsigned, since signed overflow is undefined in
// C++); floats max/min as fmax/fmin.
template <typename T>
T combine(T a, T b, ncclRedOp_t op) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    switch (op) {
      case ncclSum:
      case ncclAvg:
        return T(U(U(a) + U(b)));
      case ncclProd:
        return T(U(U(a) * U(b)));
      case ncclMax:
        return std::max(a, b);
      case ncclMin:
        return std::min(a, b);
    }
  } else {
    switch (op) {
      case ncclSum:
      case ncclAvg:
        return a + b;
      case ncclProd:
        return a * b;
      case ncclMax:
        return std::fmax(a, b);
      case ncclMin:
        return std::fmin(a, b);
    }
  }
  return a;
}

// result[i] = ((rank 0 op rank 1) op rank 2) ..., divided by the rank count for ncclAvg. Loads go
// through memcpy: NCCL does not require buffers aligned to their type.
template <typename T>
void reduce(const Collective& c, std::vector<unsigned char>* result) {
  const std::size_t n = c.calls[0]->count;
  const ncclRedOp_t op = c.calls[0]->op;
  std::vector<T> acc(n);
  std::memcpy(acc.data(), c.calls[0]->send, n * sizeof(T));
  for (std::size_t r = 1; r < c.calls.size(); ++r) {
    const auto* src = static_cast<const unsigned char*>(c.calls[r]->send);
    for (std::size_t i = 0; i < n; ++i) {
      T x;
      std::memcpy(&x, src + i * sizeof(T), sizeof(T));
      acc[i] = combine(acc[i], x, op);
    }
  }
  if (op == ncclAvg) {
    const T ranks = T(c.calls.size());
    for (T& v : acc) v = T(v / ranks);
  }
  result->resize(n * sizeof(T));
  std::memcpy(result->data(), acc.data(), result->size());
}

// Checks that the ranks agree, then computes into a temporary (so that in-place and aliased
// buffers read only inputs) and copies it to every rank's recvbuff. Runs outside the clique's
// lock, on the thread of the last rank to join; every buffer stays valid meanwhile, since no
// waiter leaves a Running collective.
void run(Collective& c) {
  const Call& first = *c.calls[0];
  for (std::size_t r = 1; r < c.calls.size(); ++r) {
    const Call& other = *c.calls[r];
    std::string field, a, b;
    if (other.kind != first.kind) {
      field = "operation", a = kind_name(first.kind), b = kind_name(other.kind);
    } else if (other.count != first.count) {
      field = "count", a = std::to_string(first.count), b = std::to_string(other.count);
    } else if (other.type != first.type) {
      field = "datatype", a = type_name(first.type), b = type_name(other.type);
    } else if (first.kind == Kind::AllReduce && other.op != first.op) {
      field = "reduction", a = op_name(first.op), b = op_name(other.op);
    } else if (first.kind == Kind::Broadcast && other.root != first.root) {
      field = "root", a = std::to_string(first.root), b = std::to_string(other.root);
    }
    if (!field.empty()) {
      c.result = ncclInvalidArgument;
      c.why = "collective " + std::to_string(c.number) + " of the communicator: rank 0 calls " +
              describe(first) + ", rank " + std::to_string(r) + " calls " + describe(other) + " (" +
              field + " " + a + " vs " + b +
              "); every rank must make the same calls in the same order (NCCL would hang or "
              "corrupt memory)";
      return;
    }
  }
  if (first.count == 0) return;
  std::vector<unsigned char> result;
  if (first.kind == Kind::Broadcast) {
    const Call& root = *c.calls[std::size_t(first.root)];
    const auto* src = static_cast<const unsigned char*>(root.send);
    result.assign(src, src + first.count * type_size(first.type));
  } else {
    switch (first.type) {
      case ncclInt8:
        reduce<std::int8_t>(c, &result);
        break;
      case ncclUint8:
        reduce<std::uint8_t>(c, &result);
        break;
      case ncclInt32:
        reduce<std::int32_t>(c, &result);
        break;
      case ncclUint32:
        reduce<std::uint32_t>(c, &result);
        break;
      case ncclInt64:
        reduce<std::int64_t>(c, &result);
        break;
      case ncclUint64:
        reduce<std::uint64_t>(c, &result);
        break;
      case ncclFloat32:
        reduce<float>(c, &result);
        break;
      case ncclFloat64:
        reduce<double>(c, &result);
        break;
      default:
        break;  // refused by check_call
    }
  }
  for (const std::optional<Call>& call : c.calls)
    std::memcpy(call->recv, result.data(), result.size());
}

// ---- submitting and waiting -------------------------------------------------------------------

// A submitted call: the collective it joined, or the error it got at once.
struct Ticket {
  std::shared_ptr<Clique> clique;
  std::shared_ptr<Collective> collective;
  int rank = 0;
  ncclResult_t error = ncclSuccess;
  std::string why;
};

// Joins the rank's next collective; never waits for other ranks (so that one thread can submit
// every rank's call inside a group), but the last rank to join computes the result before
// returning.
Ticket submit(const Rank& who, const Call& call) {
  Clique& q = *who.clique;
  Ticket t;
  t.clique = who.clique;
  t.rank = who.rank;
  std::unique_lock<std::mutex> lock(q.mutex);
  if (q.aborted) {
    t.error = ncclRemoteError;
    t.why = std::string(kind_name(call.kind)) + " on rank " + std::to_string(who.rank) +
            ": the communicator was aborted (" + q.abort_why + ")";
    return t;
  }
  const std::uint64_t number = q.next_number[std::size_t(who.rank)]++;
  std::shared_ptr<Collective>& slot = q.open[number];
  if (!slot) {
    slot = std::make_shared<Collective>();
    slot->number = number;
    slot->calls.resize(std::size_t(q.nranks));
  }
  std::shared_ptr<Collective> c = slot;
  c->calls[std::size_t(who.rank)] = call;
  t.collective = c;
  const bool last = ++c->joined == q.nranks;
  if (last) q.open.erase(number);
  if (c->state == Collective::State::Done) {  // failed (timed out) before this rank came
    t.error = c->result;
    t.why = "rank " + std::to_string(who.rank) + " joined too late: " + c->why;
    return t;
  }
  if (!last) return t;
  c->state = Collective::State::Running;
  lock.unlock();
  run(*c);
  lock.lock();
  c->state = Collective::State::Done;
  q.changed.notify_all();
  return t;
}

// Waits until the ticket's collective is done, the clique is aborted, or `deadline` passes (then
// fails the collective for every rank, so that a late rank neither waits nor writes).
ncclResult_t wait(Ticket& t, Clock::time_point deadline, double timeout) {
  if (t.error) return fail(t.error, t.why);
  Clique& q = *t.clique;
  Collective& c = *t.collective;
  std::unique_lock<std::mutex> lock(q.mutex);
  for (;;) {
    if (c.state == Collective::State::Done) {
      if (c.result) return fail(c.result, c.why);
      return ncclSuccess;
    }
    if (c.state == Collective::State::Running) {  // finite work, on another thread: let it end
      q.changed.wait(lock);
      continue;
    }
    const Call& mine = *c.calls[std::size_t(t.rank)];
    if (q.aborted)
      return fail(ncclRemoteError, "collective " + std::to_string(c.number) + " (" +
                                       describe(mine) + ") on rank " + std::to_string(t.rank) +
                                       ": the communicator was aborted (" + q.abort_why + ")");
    if (Clock::now() >= deadline) {
      std::vector<int> missing, present;
      for (int r = 0; r < q.nranks; ++r) (c.calls[std::size_t(r)] ? present : missing).push_back(r);
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", timeout);
      c.state = Collective::State::Done;
      c.result = ncclInvalidUsage;
      c.why = "collective " + std::to_string(c.number) + " of the communicator (" + describe(mine) +
              "): rank" + (missing.size() > 1 ? "s " : " ") + rank_list(missing) +
              " never joined within " + secs + " s (rank" + (present.size() > 1 ? "s " : " ") +
              rank_list(present) +
              " did); a rank that skips a collective hangs a real GPU. Every rank must call it: "
              "from its own thread, or all from one thread inside ncclGroupStart/ncclGroupEnd "
              "(EVO_EMU_NCCL_TIMEOUT sets the wait)";
      q.changed.notify_all();
      return fail(c.result, c.why);
    }
    q.changed.wait_until(lock, deadline);
  }
}

Clock::time_point deadline_after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// ---- groups -----------------------------------------------------------------------------------

struct Queued {
  Rank who;
  Call call;
};

// This thread's group: calls between ncclGroupStart and the outermost ncclGroupEnd.
struct Group {
  int depth = 0;
  std::vector<Queued> queued;
  ncclResult_t error = ncclSuccess;  // the first call that failed its checks inside the group
  std::string why;
};
thread_local Group t_group;

// What every collective checks before joining; the rank it was called on in *who, and how long
// it may wait in *timeout.
ncclResult_t check_call(const char* name, const Call& call, ncclComm_t comm, cudaStream_t stream,
                        Rank* who, double* timeout) {
  if (const ncclResult_t e = find_comm(comm, name, who)) return e;
  const std::string where = std::string(name) + " on rank " + std::to_string(who->rank);
  const std::size_t size = type_size(call.type);
  if (size == 0)
    return fail(ncclInvalidArgument,
                where + ": " + type_name(call.type) +
                    " is not supported by the emulated NCCL (int8/uint8, int32/uint32, "
                    "int64/uint64, float32 and float64 are)");
  if (call.kind == Kind::AllReduce && (int(call.op) < int(ncclSum) || int(call.op) > int(ncclAvg)))
    return fail(ncclInvalidArgument,
                where + ": " + op_name(call.op) + " is not a reduction (ncclSum..ncclAvg)");
  if (call.kind == Kind::Broadcast && (call.root < 0 || call.root >= who->clique->nranks))
    return fail(ncclInvalidArgument,
                where + ": root " + std::to_string(call.root) + " is not a rank of this " +
                    std::to_string(who->clique->nranks) + "-rank communicator");
  if (call.count > SIZE_MAX / size)
    return fail(ncclInvalidArgument,
                where + ": count " + std::to_string(call.count) + " overflows the buffer size");
  // A zero-count collective touches no memory, so its pointers are not looked at.
  if (call.count > 0) {
    const std::size_t bytes = call.count * size;
    const bool reads_send = call.kind == Kind::AllReduce || who->rank == call.root;
    if (reads_send) {
      if (!call.send) return fail(ncclInvalidArgument, where + ": sendbuff is null");
      const std::string problem = detail::check_device_range(call.send, bytes);
      if (!problem.empty()) return fail(ncclInvalidArgument, where + ": sendbuff: " + problem);
    }
    if (!call.recv) return fail(ncclInvalidArgument, where + ": recvbuff is null");
    const std::string problem = detail::check_device_range(call.recv, bytes);
    if (!problem.empty()) return fail(ncclInvalidArgument, where + ": recvbuff: " + problem);
  }
  if (!detail::stream_is_valid(stream))
    return fail(ncclInvalidArgument, where + ": the stream is not a live stream (destroyed?)");
  if (detail::stream_capturing(stream))
    return fail(ncclInvalidUsage,
                where +
                    ": the stream is being captured into a CUDA graph, and the emulator "
                    "cannot record collectives; call it outside the capture");
  const cudaError_t e = device_sticky_error(who->device);
  if (e == cudaErrorInvalidDevice)
    return fail(ncclInvalidUsage, where + ": emulated device " + std::to_string(who->device) +
                                      " is gone (set_device_count made fewer since "
                                      "ncclCommInitAll)");
  if (e)
    return fail(ncclUnhandledCudaError, where + ": emulated device " + std::to_string(who->device) +
                                            " has the sticky "
                                            "CUDA error " +
                                            cudaGetErrorName(e) +
                                            " (a faulted GPU runs no "
                                            "collective; only a new process recovers it)");
  return read_timeout(timeout, where);
}

ncclResult_t collective(const char* name, const Call& call, ncclComm_t comm, cudaStream_t stream) {
  Rank who;
  double timeout = 0;
  const ncclResult_t e = check_call(name, call, comm, stream, &who, &timeout);
  if (t_group.depth > 0) {
    // NCCL reports a bad call at once and fails the whole group at ncclGroupEnd, launching none
    // of it.
    if (e && !t_group.error) {
      t_group.error = e;
      t_group.why = t_last_error;
    }
    if (!e) t_group.queued.push_back({who, call});
    return e;
  }
  if (e) return e;
  Ticket t = submit(who, call);
  return wait(t, deadline_after(timeout), timeout);
}

}  // namespace

// ---- the API ----------------------------------------------------------------------------------

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return fail(ncclInvalidArgument, "ncclGetVersion: version is null");
  *version = EVO_EMU_NCCL_VERSION;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled CUDA error (ncclGetLastError says which)";
    case ncclSystemError:
      return "system error";
    case ncclInternalError:
      return "internal error in the emulated NCCL";
    case ncclInvalidArgument:
      return "invalid argument (ncclGetLastError says which)";
    case ncclInvalidUsage:
      return "invalid usage (ncclGetLastError says how)";
    case ncclRemoteError:
      return "remote error: another rank aborted the communicator";
    case ncclInProgress:
      return "operation in progress";
  }
  return "unknown NCCL result code";
}

const char* ncclGetLastError(ncclComm_t /*comm*/) {
  return t_last_error.c_str();
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (!comms) return fail(ncclInvalidArgument, "ncclCommInitAll: comms is null");
  if (ndev < 1)
    return fail(ncclInvalidArgument, "ncclCommInitAll: ndev " + std::to_string(ndev) +
                                         " (a communicator has 1 or more "
                                         "ranks)");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  auto clique = std::make_shared<Clique>();
  clique->nranks = ndev;
  clique->next_number.assign(std::size_t(ndev), 0);
  for (int r = 0; r < ndev; ++r) {
    const int d = devlist ? devlist[r] : r;
    const std::string where =
        "ncclCommInitAll: rank " + std::to_string(r) + "'s device " + std::to_string(d);
    if (d < 0 || d >= count)
      return fail(ncclInvalidArgument,
                  where + " is not one of the " + std::to_string(count) +
                      " emulated devices (EVO_EMU_DEVICES or evo::emu::set_device_count "
                      "make more)");
    for (int s = 0; s < r; ++s)
      if (clique->devices[std::size_t(s)] == d)
        return fail(ncclInvalidArgument,
                    where + " is rank " + std::to_string(s) + "'s too; each device at most once");
    if (const cudaError_t e = device_sticky_error(d))
      return fail(ncclUnhandledCudaError,
                  where + " has the sticky CUDA error " + cudaGetErrorName(e));
    clique->devices.push_back(d);
  }
  std::lock_guard<std::mutex> lock(g_comms_mutex);
  for (int r = 0; r < ndev; ++r) {
    comms[r] = new ncclComm{clique, r};
    g_comms.insert(comms[r]);
  }
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;  // as NCCL: nothing to destroy
  {
    std::lock_guard<std::mutex> lock(g_comms_mutex);
    if (!g_comms.erase(comm))
      return fail(ncclInvalidArgument,
                  "ncclCommDestroy: comm is not a live communicator (destroyed twice?)");
  }
  delete comm;  // the clique goes with the last rank (or the last call still waiting on it)
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  Rank who;
  if (const ncclResult_t e = find_comm(comm, "ncclCommAbort", &who)) return e;
  {
    std::lock_guard<std::mutex> lock(who.clique->mutex);
    if (!who.clique->aborted) {
      who.clique->aborted = true;
      who.clique->abort_why = "ncclCommAbort on rank " + std::to_string(who.rank);
    }
    who.clique->changed.notify_all();
  }
  return ncclCommDestroy(comm);
}

ncclResult_t ncclCommCount(ncclComm_t comm, int* count) {
  Rank who;
  if (const ncclResult_t e = find_comm(comm, "ncclCommCount", &who)) return e;
  if (!count) return fail(ncclInvalidArgument, "ncclCommCount: count is null");
  *count = who.clique->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(ncclComm_t comm, int* device) {
  Rank who;
  if (const ncclResult_t e = find_comm(comm, "ncclCommCuDevice", &who)) return e;
  if (!device) return fail(ncclInvalidArgument, "ncclCommCuDevice: device is null");
  *device = who.device;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(ncclComm_t comm, int* rank) {
  Rank who;
  if (const ncclResult_t e = find_comm(comm, "ncclCommUserRank", &who)) return e;
  if (!rank) return fail(ncclInvalidArgument, "ncclCommUserRank: rank is null");
  *rank = who.rank;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++t_group.depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group.depth == 0)
    return fail(ncclInvalidUsage, "ncclGroupEnd without a matching ncclGroupStart");
  if (--t_group.depth > 0) return ncclSuccess;
  Group group = std::move(t_group);
  t_group = Group{};
  if (group.error) return fail(group.error, group.why + " (so the group ran none of its calls)");
  double timeout = 0;
  if (const ncclResult_t e = read_timeout(&timeout, "ncclGroupEnd")) return e;
  // Submit everything first (the last rank's call completes each collective), then wait: one
  // deadline for the whole group, so a missing rank costs one timeout, not one per collective.
  std::vector<Ticket> tickets;
  tickets.reserve(group.queued.size());
  for (const Queued& q : group.queued) tickets.push_back(submit(q.who, q.call));
  const Clock::time_point deadline = deadline_after(timeout);
  ncclResult_t first = ncclSuccess;
  std::string why;
  for (Ticket& t : tickets) {
    const ncclResult_t e = wait(t, deadline, timeout);
    if (e && !first) {
      first = e;
      why = t_last_error;
    }
  }
  return first ? fail(first, why) : ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, std::size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  Call call;
  call.kind = Kind::AllReduce;
  call.send = sendbuff;
  call.recv = recvbuff;
  call.count = count;
  call.type = datatype;
  call.op = op;
  return collective("ncclAllReduce", call, comm, stream);
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, std::size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  Call call;
  call.kind = Kind::Broadcast;
  call.send = sendbuff;
  call.recv = recvbuff;
  call.count = count;
  call.type = datatype;
  call.root = root;
  return collective("ncclBroadcast", call, comm, stream);
}

}  // namespace evo::emu
