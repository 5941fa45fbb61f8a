// The emulated CUDA graphs: stream capture (the gate every stream operation passes, the capture
// rules and their error codes), graphs, executable graphs and their replay. Not the graph-building
// API (cudaGraphAddKernelNode...), not multi-stream capture (event fork/join), not graph update.
//
// Where each rule comes from (cuda/README.md has the table): the CUDA Programming Guide, "CUDA
// Graphs: Stream Capture" (Prohibited and Unhandled Operations; Invalidation), the comments of
// cudaStreamBeginCapture, cudaStreamEndCapture, cudaStreamIsCapturing and
// cudaThreadExchangeStreamCaptureMode in CUDA 13's cuda_runtime_api.h, and the error codes'
// comments in driver_types.h.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cuda/emu/internal.h"
#include "cuda/emu/runtime.h"

namespace evo::emu {

using detail::GraphNode;
using Nodes = std::vector<GraphNode>;

// A graph is its nodes in capture order: one stream, so the order is the dependency chain.
// Instantiation shares them (nodes never change after capture), so a graph may be destroyed while
// its executable graphs live on, as in CUDA.
struct CUgraph_st {
  std::shared_ptr<const Nodes> nodes;
};
struct CUgraphExec_st {
  std::shared_ptr<const Nodes> nodes;
};

namespace {

const char* mode_name(cudaStreamCaptureMode mode) {
  switch (mode) {
    case cudaStreamCaptureModeGlobal:
      return "cudaStreamCaptureModeGlobal";
    case cudaStreamCaptureModeThreadLocal:
      return "cudaStreamCaptureModeThreadLocal";
    case cudaStreamCaptureModeRelaxed:
      return "cudaStreamCaptureModeRelaxed";
  }
  return "an unknown cudaStreamCaptureMode";
}

std::string pointer_text(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

struct Capture {
  std::uint64_t id;
  cudaStream_t stream;
  cudaStreamCaptureMode mode;
  bool blocking;  // the stream was created without cudaStreamNonBlocking
  std::thread::id owner;
  bool invalidated = false;
  std::string why;  // what invalidated it, for cudaStreamEndCapture's message
  Nodes nodes;

  std::string name() const {
    return "the capture of stream " + pointer_text(stream) + " (" + mode_name(mode) + ")";
  }
  void invalidate(const std::string& reason) {
    if (invalidated) return;
    invalidated = true;
    why = reason;
    nodes.clear();  // never replayed: free the captured arguments now
  }
};

std::mutex g_mutex;
// Captures in progress, by stream. g_active mirrors its size so that the operations of a process
// that never captures (every launch passes issue()) cost one atomic load, not a lock.
std::unordered_map<cudaStream_t, std::unique_ptr<Capture>> g_captures;
std::atomic<int> g_active{0};
std::uint64_t g_next_id = 1;
std::unordered_set<const void*> g_graphs, g_execs;
thread_local cudaStreamCaptureMode t_mode = cudaStreamCaptureModeGlobal;

// Captures that forbid the calling thread's unsafe calls, per cudaThreadExchangeStreamCaptureMode:
// its own captures that are not relaxed, and, while its mode is global, other threads' global ones.
std::vector<Capture*> forbidding_captures() {
  std::vector<Capture*> out;
  if (t_mode == cudaStreamCaptureModeRelaxed) return out;
  const std::thread::id me = std::this_thread::get_id();
  for (auto& [stream, c] : g_captures) {
    const bool own = c->owner == me && c->mode != cudaStreamCaptureModeRelaxed;
    const bool other_global = t_mode == cudaStreamCaptureModeGlobal && c->owner != me &&
                              c->mode == cudaStreamCaptureModeGlobal;
    if (own || other_global) out.push_back(c.get());
  }
  return out;
}

// The legacy stream orders itself after every blocking stream, so using it while one of them
// captures would make uncaptured work depend on captured work: CUDA refuses
// (cudaErrorStreamCaptureImplicit) and invalidates those captures. Call with g_mutex held.
cudaError_t legacy_use_locked(const char* call) {
  std::string names;
  for (auto& [stream, c] : g_captures) {
    if (!c->blocking) continue;
    c->invalidate(std::string(call) + " used the legacy stream");
    names += (names.empty() ? "" : ", ") + c->name();
  }
  if (names.empty()) return cudaSuccess;
  return detail::set_error(
      cudaErrorStreamCaptureImplicit,
      std::string(call) + " uses the legacy stream while a blocking stream is capturing (" + names +
          "), which would make it wait for work that is only being recorded; the capture is "
          "invalidated. Use a stream created with cudaStreamNonBlocking, or an async call on the "
          "capturing stream");
}

// Replays a graph's nodes in order; the first failure stops it (a GPU's graph stops at a fault).
cudaError_t run_nodes(const Nodes& nodes) {
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    cudaError_t e = cudaSuccess;
    try {
      e = nodes[i].run();
    } catch (const CudaError& error) {  // a kernel node's injected or sticky fault
      e = static_cast<cudaError_t>(error.code());
    }
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

// ---- the gates (internal.h) -------------------------------------------------------------------

namespace detail {

Issued issue(cudaStream_t stream, const char* call, const std::function<GraphNode()>& make_node) {
  if (const cudaError_t e = sticky_error()) return {Issue::Failed, e, 0};
  if (!stream_is_valid(stream))
    return {Issue::Failed,
            set_error(cudaErrorInvalidResourceHandle,
                      std::string(call) + " on a stream that was destroyed or never created"),
            0};
  if (g_active.load(std::memory_order_acquire) == 0) return {};
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!stream) {
    const cudaError_t e = legacy_use_locked(call);
    return e == cudaSuccess ? Issued{} : Issued{Issue::Failed, e, 0};
  }
  auto it = g_captures.find(stream);
  if (it == g_captures.end()) return {};
  Capture& c = *it->second;
  if (c.invalidated)
    return {Issue::Failed,
            set_error(cudaErrorStreamCaptureInvalidated,
                      std::string(call) + " on stream " + pointer_text(stream) + ": " + c.name() +
                          " was invalidated by " + c.why +
                          "; end it with cudaStreamEndCapture (which fails too) and capture again"),
            0};
  c.nodes.push_back(make_node());
  return {Issue::Recorded, cudaSuccess, c.id};
}

cudaError_t unsafe_call(const char* call) {
  if (g_active.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  const std::vector<Capture*> forbidding = forbidding_captures();
  if (forbidding.empty()) return cudaSuccess;
  std::string names;
  for (Capture* c : forbidding) {
    c->invalidate(std::string(call) + ", which this capture mode forbids");
    names +=
        (names.empty() ? "" : ", ") + c->name() +
        (c->owner == std::this_thread::get_id() ? ", begun by this thread" : ", by another thread");
  }
  return set_error(cudaErrorStreamCaptureUnsupported,
                   std::string(call) + " during " + names +
                       ": memory is not allocated or freed in stream order, so a replay of the "
                       "graph would not redo it; the capture is invalidated. Allocate before "
                       "cudaStreamBeginCapture, or capture with cudaStreamCaptureModeRelaxed "
                       "(cudaStreamCaptureModeThreadLocal ignores other threads' captures)");
}

cudaError_t legacy_stream_call(const char* call) {
  if (g_active.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  return legacy_use_locked(call);
}

cudaError_t stream_sync_gate(cudaStream_t stream, const char* call) {
  if (const cudaError_t e = sticky_error()) return e;
  if (!stream_is_valid(stream))
    return set_error(cudaErrorInvalidResourceHandle, std::string(call) + ": not a live stream");
  if (g_active.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!stream) return legacy_use_locked(call);
  auto it = g_captures.find(stream);
  if (it == g_captures.end()) return cudaSuccess;
  Capture& c = *it->second;
  if (c.invalidated)
    return set_error(cudaErrorStreamCaptureInvalidated,
                     std::string(call) + ": " + c.name() + " was invalidated by " + c.why);
  c.invalidate(std::string(call) + " on the capturing stream");
  return set_error(cudaErrorStreamCaptureUnsupported,
                   std::string(call) + " on stream " + pointer_text(stream) +
                       ", which is being captured: its work is only recorded, so there is "
                       "nothing to wait for; the capture is invalidated. Synchronise after "
                       "cudaGraphLaunch instead");
}

cudaError_t device_sync_gate(const char* call) {
  if (const cudaError_t e = sticky_error()) return e;
  if (g_active.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_captures.empty()) return cudaSuccess;
  std::string names;
  for (auto& [stream, c] : g_captures) {
    c->invalidate(std::string(call) + ", which waits for every stream of the device");
    names += (names.empty() ? "" : ", ") + c->name();
  }
  return set_error(cudaErrorStreamCaptureUnsupported,
                   std::string(call) + " waits for every stream of the device while " + names +
                       " is in progress (whichever thread began it, whatever its mode); the "
                       "capture is invalidated. Synchronise the streams you need instead, or "
                       "synchronise before cudaStreamBeginCapture");
}

std::uint64_t capture_of(cudaStream_t stream) {
  if (!stream || g_active.load(std::memory_order_acquire) == 0) return 0;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_captures.find(stream);
  return it == g_captures.end() ? 0 : it->second->id;
}

bool capture_active(std::uint64_t id) {
  if (id == 0 || g_active.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard<std::mutex> lock(g_mutex);
  return std::any_of(g_captures.begin(), g_captures.end(),
                     [id](const auto& entry) { return entry.second->id == id; });
}

cudaError_t captured_event_use(std::uint64_t id, const char* call) {
  if (id == 0 || g_active.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& [stream, c] : g_captures) {
    if (c->id != id) continue;
    c->invalidate(std::string(call) + " on an event recorded in it");
    return set_error(cudaErrorCapturedEvent,
                     std::string(call) + " on an event last recorded in " + c->name() +
                         ": it stands for a point of the graph, not for work that runs; the "
                         "capture is invalidated. Record it again outside the capture");
  }
  return cudaSuccess;
}

cudaError_t wait_event_gate(cudaStream_t stream, std::uint64_t event_capture, unsigned flags) {
  if (g_active.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!stream) return legacy_use_locked("cudaStreamWaitEvent");
  Capture* waiter = nullptr;
  Capture* recorder = nullptr;
  for (auto& [s, c] : g_captures) {
    if (s == stream) waiter = c.get();
    if (event_capture != 0 && c->id == event_capture) recorder = c.get();
  }
  if (waiter && waiter->invalidated)
    return set_error(cudaErrorStreamCaptureInvalidated, "cudaStreamWaitEvent: " + waiter->name() +
                                                            " was invalidated by " + waiter->why);
  if (waiter && recorder == waiter) return cudaSuccess;  // stream order already implies it
  if (waiter && recorder) {
    waiter->invalidate("cudaStreamWaitEvent on an event of another capture");
    recorder->invalidate("cudaStreamWaitEvent on one of its events from another capture");
    return set_error(cudaErrorStreamCaptureMerge,
                     "cudaStreamWaitEvent: " + waiter->name() + " would wait on an event of " +
                         recorder->name() + ", merging two captures; both are invalidated");
  }
  if (waiter) {
    if (flags & cudaEventWaitExternal) return cudaSuccess;  // an external wait node: a no-op here
    waiter->invalidate("cudaStreamWaitEvent on an event recorded outside the capture");
    return set_error(cudaErrorStreamCaptureIsolation,
                     "cudaStreamWaitEvent: " + waiter->name() +
                         " would wait on an event recorded outside it, a dependency across the "
                         "capture's boundary; the capture is invalidated. Wait before "
                         "cudaStreamBeginCapture, or pass cudaEventWaitExternal");
  }
  if (recorder) {
    recorder->invalidate("a fork into another stream (not emulated)");
    return set_error(cudaErrorNotSupported,
                     "cudaStreamWaitEvent: stream " + pointer_text(stream) + " would join " +
                         recorder->name() +
                         " through an event (a fork); the emulator captures one stream only, "
                         "so the capture is invalidated. Issue the work on the capturing stream");
  }
  return cudaSuccess;
}

bool stream_capturing(cudaStream_t stream) {
  return capture_of(stream) != 0;
}

}  // namespace detail

// ---- the API ------------------------------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (!stream)
    return detail::set_error(cudaErrorStreamCaptureUnsupported,
                             "cudaStreamBeginCapture on the legacy stream (nullptr), which cannot "
                             "be captured; create a stream with cudaStreamCreateWithFlags");
  if (!detail::stream_is_valid(stream))
    return detail::set_error(cudaErrorInvalidResourceHandle,
                             "cudaStreamBeginCapture: not a live stream");
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return detail::set_error(cudaErrorInvalidValue,
                             "cudaStreamBeginCapture: mode " + std::to_string(int(mode)) +
                                 " is not a cudaStreamCaptureMode (Global, ThreadLocal, Relaxed)");
  const bool blocking = (detail::stream_flags(stream) & cudaStreamNonBlocking) == 0;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& slot = g_captures[stream];
  if (slot)
    return detail::set_error(cudaErrorIllegalState,
                             "cudaStreamBeginCapture: stream " + pointer_text(stream) +
                                 " is already capturing; end that capture first");
  slot = std::make_unique<Capture>(
      Capture{g_next_id++, stream, mode, blocking, std::this_thread::get_id(), false, {}, {}});
  g_active.fetch_add(1, std::memory_order_release);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!graph) return detail::set_error(cudaErrorInvalidValue, "cudaStreamEndCapture: null graph");
  *graph = nullptr;
  std::unique_ptr<Capture> capture;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = stream ? g_captures.find(stream) : g_captures.end();
    if (it == g_captures.end())
      return detail::set_error(cudaErrorIllegalState,
                               "cudaStreamEndCapture: stream " + pointer_text(stream) +
                                   " is not capturing (no cudaStreamBeginCapture on it)");
    if (it->second->mode != cudaStreamCaptureModeRelaxed &&
        it->second->owner != std::this_thread::get_id())
      return detail::set_error(cudaErrorStreamCaptureWrongThread,
                               "cudaStreamEndCapture: " + it->second->name() +
                                   " was begun by another thread, which must end it (only "
                                   "cudaStreamCaptureModeRelaxed captures may end elsewhere)");
    capture = std::move(it->second);
    g_captures.erase(it);
    g_active.fetch_sub(1, std::memory_order_release);
  }
  // A poisoned device still takes the stream out of capture mode, but makes no graph.
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (capture->invalidated)
    return detail::set_error(cudaErrorStreamCaptureInvalidated,
                             "cudaStreamEndCapture: " + capture->name() + " was invalidated by " +
                                 capture->why + "; no graph (the stream is out of capture mode)");
  auto* g = new CUgraph_st{std::make_shared<const Nodes>(std::move(capture->nodes))};
  std::lock_guard<std::mutex> lock(g_mutex);
  g_graphs.insert(g);
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  if (!status)
    return detail::set_error(cudaErrorInvalidValue, "cudaStreamIsCapturing: null status");
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (!detail::stream_is_valid(stream))
    return detail::set_error(cudaErrorInvalidResourceHandle,
                             "cudaStreamIsCapturing: not a live stream");
  *status = cudaStreamCaptureStatusNone;
  if (g_active.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!stream) {
    // Documented: the legacy stream's status is cudaErrorStreamCaptureImplicit while a blocking
    // stream captures, and that capture is not invalidated by asking.
    for (auto& [s, c] : g_captures)
      if (c->blocking)
        return detail::set_error(cudaErrorStreamCaptureImplicit,
                                 "cudaStreamIsCapturing on the legacy stream while " + c->name() +
                                     " is in progress (a blocking stream)");
    return cudaSuccess;
  }
  auto it = g_captures.find(stream);
  if (it != g_captures.end())
    *status = it->second->invalidated ? cudaStreamCaptureStatusInvalidated
                                      : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  if (!mode)
    return detail::set_error(cudaErrorInvalidValue, "cudaThreadExchangeStreamCaptureMode: null");
  if (*mode != cudaStreamCaptureModeGlobal && *mode != cudaStreamCaptureModeThreadLocal &&
      *mode != cudaStreamCaptureModeRelaxed)
    return detail::set_error(cudaErrorInvalidValue, "cudaThreadExchangeStreamCaptureMode: mode " +
                                                        std::to_string(int(*mode)));
  std::swap(*mode, t_mode);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags) {
  if (!exec) return detail::set_error(cudaErrorInvalidValue, "cudaGraphInstantiate: null result");
  *exec = nullptr;
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (flags & cudaGraphInstantiateFlagUpload)
    return detail::set_error(cudaErrorInvalidValue,
                             "cudaGraphInstantiate: cudaGraphInstantiateFlagUpload is for "
                             "cudaGraphInstantiateWithParams only");
  if (flags & cudaGraphInstantiateFlagDeviceLaunch)
    return detail::set_error(cudaErrorNotSupported,
                             "cudaGraphInstantiate: device-launchable graphs are not emulated");
  if (flags & ~static_cast<unsigned long long>(cudaGraphInstantiateFlagAutoFreeOnLaunch |
                                               cudaGraphInstantiateFlagUseNodePriority))
    return detail::set_error(cudaErrorInvalidValue,
                             "cudaGraphInstantiate: unknown flags " + std::to_string(flags));
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!graph || !g_graphs.count(graph))
    return detail::set_error(cudaErrorInvalidValue,
                             "cudaGraphInstantiate: not a live graph (from cudaStreamEndCapture)");
  auto* x = new CUgraphExec_st{graph->nodes};
  g_execs.insert(x);
  *exec = x;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  std::shared_ptr<const Nodes> nodes;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!exec || !g_execs.count(exec))
      return detail::set_error(cudaErrorInvalidValue,
                               "cudaGraphLaunch: not a live executable graph (from "
                               "cudaGraphInstantiate)");
    nodes = exec->nodes;
  }
  // Launched into a capturing stream, the whole graph becomes one node of the new capture (CUDA
  // makes it a child-graph node).
  const detail::Issued issued = detail::issue(stream, "cudaGraphLaunch", [&nodes] {
    return GraphNode{"a graph of " + std::to_string(nodes->size()) + " nodes",
                     [nodes] { return run_nodes(*nodes); }};
  });
  if (issued.what != detail::Issue::Run) return issued.error;
  return run_nodes(*nodes);
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!exec || !g_execs.erase(exec))
      return detail::set_error(cudaErrorInvalidValue,
                               "cudaGraphExecDestroy: not a live executable graph (destroyed "
                               "twice?)");
  }
  delete exec;
  return detail::sticky_error();
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!graph || !g_graphs.erase(graph))
      return detail::set_error(cudaErrorInvalidValue,
                               "cudaGraphDestroy: not a live graph (destroyed twice?)");
  }
  delete graph;
  return detail::sticky_error();
}

}  // namespace evo::emu
