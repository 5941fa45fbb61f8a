// The emulator's execution model: a grid's blocks spread over a persistent pool of host threads;
// a block's threads are fibers switched at barriers and warp intrinsics, in the order the schedule
// (forward, reverse or random:SEED; runtime.h, EVO_EMU_SCHEDULE) picks. Not the runtime API.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "cuda/emu/device.h"
#include "cuda/emu/fiber.h"
#include "cuda/emu/internal.h"

namespace evo::emu {

long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace detail {

namespace {

// NotStarted fibers have no stack yet: a thread gets one when it first runs, and gives it back
// when it exits, so a block whose threads never wait needs two stacks, not one per thread.
enum class State : std::uint8_t { NotStarted, Ready, Running, AtBarrier, AtWarpOp, Exited };

struct Fiber : ThreadCtx {
  FiberContext ctx;
  FiberStack stack;
  State state = State::NotStarted;
  // The warp intrinsic this lane waits in, and its answer once the lanes of `op_mask` all arrive.
  WarpOp op = WarpOp::SyncWarp;
  unsigned op_mask = 0;
  int op_arg = 0;
  int op_width = 32;
  std::uint64_t op_value = 0;
  std::uint64_t op_result = 0;
  void* asan_fake_stack = nullptr;
};

struct WarpState {
  unsigned live = 0;     // lanes that exist in the block and have not exited
  unsigned waiting = 0;  // lanes waiting in a warp intrinsic
};

// What a shuffle returns from a lane that does not take part (exited, outside the mask, past the
// end of a partial warp): undefined on a GPU, all ones here (NaN as float), so that using it shows.
constexpr std::uint64_t kPoison = ~std::uint64_t(0);
static_assert((kMaxThreadsPerBlock & (kMaxThreadsPerBlock - 1)) == 0, "the ready ring masks");

std::atomic<std::uint64_t> g_kernels{0}, g_blocks{0}, g_threads{0}, g_switches{0};
std::atomic<int> g_running_blocks{0}, g_max_running_blocks{0};

std::size_t env_number(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  return (end && *end == 0) ? std::size_t(n) : fallback;
}

std::size_t fiber_stack_bytes() {
  // Address space is reserved, not memory: only the pages a fiber touches are ever backed.
  // AddressSanitizer's frames and its error reports need much more stack than plain code.
#if defined(__SANITIZE_ADDRESS__)
  constexpr std::size_t kDefaultKiB = 1024;
#else
  constexpr std::size_t kDefaultKiB = 256;
#endif
  return std::max<std::size_t>(env_number("EVO_EMU_STACK_KB", kDefaultKiB), 32) * 1024;
}

// SplitMix64's finaliser: every input bit flips about half of the output bits, so seeds that
// differ by one (random:1, random:2) or blocks next to each other get unrelated orders.
std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t name_hash(const char* s) {  // FNV-1a
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; ++s) h = (h ^ std::uint8_t(*s)) * 0x100000001b3ull;
  return h;
}

// Two barrier sites are the same call when file and line match (the file strings of one header
// may be separate copies in different places, so compare the text when the pointers differ).
bool same_site(const char* file_a, int line_a, const char* file_b, int line_b) {
  return line_a == line_b && (file_a == file_b || std::strcmp(file_a, file_b) == 0);
}

std::string dims(unsigned x, unsigned y, unsigned z) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", x, y, z);
  return buf;
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Shfl:
      return "__shfl_sync";
    case WarpOp::ShflUp:
      return "__shfl_up_sync";
    case WarpOp::ShflDown:
      return "__shfl_down_sync";
    case WarpOp::ShflXor:
      return "__shfl_xor_sync";
    case WarpOp::Ballot:
      return "__ballot_sync";
    case WarpOp::Any:
      return "__any_sync";
    case WarpOp::All:
      return "__all_sync";
    case WarpOp::SyncWarp:
      return "__syncwarp";
    case WarpOp::MatchAny:
      return "__match_any_sync";
    case WarpOp::ReduceAdd:
      return "__reduce_add_sync";
    case WarpOp::ReduceMinU:
    case WarpOp::ReduceMinS:
      return "__reduce_min_sync";
    case WarpOp::ReduceMaxU:
    case WarpOp::ReduceMaxS:
      return "__reduce_max_sync";
    case WarpOp::ReduceAnd:
      return "__reduce_and_sync";
    case WarpOp::ReduceOr:
      return "__reduce_or_sync";
    case WarpOp::ReduceXor:
      return "__reduce_xor_sync";
  }
  return "a warp intrinsic";
}

bool is_shuffle(WarpOp op) {
  return op == WarpOp::Shfl || op == WarpOp::ShflUp || op == WarpOp::ShflDown ||
         op == WarpOp::ShflXor;
}

// The lane a shuffle reads, as PTX's shfl.sync defines it: `width` splits the warp into segments;
// up/down never leave the caller's segment (the caller keeps its own value instead), xor may reach
// lower segments but not higher ones, idx wraps inside the segment. Only the low 5 bits of a
// delta or xor mask count, as in the instruction.
unsigned shuffle_source(WarpOp op, unsigned lane, int arg, int width) {
  const int l = int(lane);
  const int seg_start = l & ~(width - 1);
  const int seg_end = seg_start + width - 1;
  switch (op) {
    case WarpOp::Shfl:
      return unsigned(seg_start + (arg & (width - 1)));
    case WarpOp::ShflUp: {
      const int src = l - (arg & 31);
      return unsigned(src >= seg_start ? src : l);
    }
    case WarpOp::ShflDown: {
      const int src = l + (arg & 31);
      return unsigned(src <= seg_end ? src : l);
    }
    case WarpOp::ShflXor: {
      const int src = l ^ (arg & 31);
      return unsigned(src <= seg_end ? src : l);
    }
    default:
      return lane;
  }
}

// Thread indices as "3, 7-12, 40-63" (at most a few ranges: messages are for people).
std::string index_ranges(const std::vector<unsigned>& ids) {
  std::string out;
  std::size_t ranges = 0;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (++ranges > 6) {
      out += ", ...";
      break;
    }
    if (!out.empty()) out += ", ";
    out += std::to_string(ids[i]);
    if (j > i) {
      out += '-';
      out += std::to_string(ids[j]);
    }
    i = j + 1;
  }
  return out;
}

// Runs blocks on the host thread that owns it (one per host thread, created on its first block).
class BlockRunner {
 public:
  BlockRunner() : stacks_(fiber_stack_bytes()), fibers_(kMaxThreadsPerBlock) {
    ready_.resize(kMaxThreadsPerBlock);
    warps_.resize(kMaxThreadsPerBlock / 32);
    tls_block = &block_;
  }
  ~BlockRunner() { std::free(smem_); }
  BlockRunner(const BlockRunner&) = delete;
  BlockRunner& operator=(const BlockRunner&) = delete;

  // `launch_seed` mixes the random schedule's seed with the kernel (Random only).
  void run_block(const KernelLaunch& launch, uint3 block_idx, ScheduleOrder order,
                 std::uint64_t launch_seed);

  // ---- called on this runner's fibers ----
  void syncthreads(Fiber* self, int predicate, const char* file, int line);
  int barrier_result() const { return barrier_result_; }
  std::uint64_t warp_op(Fiber* self, WarpOp op, unsigned mask, std::uint64_t value, int arg,
                        int width);
  unsigned live_lanes(const Fiber* self) const { return warps_[self->warp].live; }
  void yield(Fiber* self);
  [[noreturn]] void fail(const std::string& what) const { throw EmuError(where() + what); }
  // "kernel 'k' block (1,0,0) thread 5": where the running fiber is, for crash reports.
  std::string current_position() const {
    return current_ ? where() + thread_name(*current_) : std::string();
  }

 private:
  static void fiber_entry();
  [[noreturn]] void finish(Fiber* self, std::exception_ptr error);
  void wait(Fiber* self);
  void transfer(Fiber* from, bool from_exits, Fiber* to);
  void release_stack(Fiber* f);
  void abandon();

  // A fiber is queued at most once, so 1024 slots (a power of two: a mask, not a division, on
  // this hot path) always suffice.
  void push_ready(Fiber* f) {
    ready_[(head_ + count_) & (kMaxThreadsPerBlock - 1)] = f;
    ++count_;
  }
  // Forward and reverse run fibers in the order they became ready (the order of the pushes is
  // what differs); random draws any of them. Any ready fiber may run next on a GPU too.
  Fiber* pop_ready() {
    if (count_ == 0) return nullptr;
    if (order_ == ScheduleOrder::Random && count_ > 1) {
      // Lemire's multiply-shift maps 32 random bits onto [0, count): no division, and a bias of
      // count / 2^32 < 3e-7 that no test could see.
      rng_ = mix(rng_);
      const std::size_t pick = std::size_t(((rng_ >> 32) * count_) >> 32);
      std::swap(ready_[head_], ready_[(head_ + pick) & (kMaxThreadsPerBlock - 1)]);
    }
    Fiber* f = ready_[head_];
    head_ = (head_ + 1) & (kMaxThreadsPerBlock - 1);
    --count_;
    return f;
  }
  // Makes the fibers of `ids` ready, ascending or (Reverse) descending: `ids` is a bit mask of
  // up to 32 fibers starting at `base`.
  void release(Fiber* base, unsigned ids, Fiber* self);

  bool complete_warp_group(unsigned warp, unsigned mask, Fiber* self);
  void compute_warp_results(Fiber* lanes, unsigned expected, WarpOp op);
  void prepare_shared(std::size_t bytes);

  std::string where() const;
  std::string thread_name(const Fiber& f) const;
  std::string describe_deadlock() const;
  void set_error(const std::string& what) {
    if (!error_) error_ = std::make_exception_ptr(EmuError(where() + what));
  }

  StackPool stacks_;
  std::vector<Fiber> fibers_;  // fixed size: fibers are referenced by address
  std::vector<Fiber*> ready_;  // ring buffer of runnable fibers, in the order they became ready
  std::size_t head_ = 0, count_ = 0;
  std::vector<WarpState> warps_;

  const KernelLaunch* launch_ = nullptr;
  ScheduleOrder order_ = ScheduleOrder::Forward;
  std::uint64_t rng_ = 0;  // Random's generator state, seeded per block
  BlockCtx block_{};
  unsigned n_ = 1;  // threads in the block
  unsigned n_exited_ = 0;
  int first_exited_ = -1;
  unsigned n_at_barrier_ = 0;
  const char* barrier_file_ = nullptr;  // where the threads waiting at the barrier called it
  int barrier_line_ = 0;
  int barrier_accum_ = 0, barrier_result_ = 0;
  std::exception_ptr error_;

  FiberContext sched_ctx_;
  Fiber* current_ = nullptr;
  Fiber* pending_release_ = nullptr;  // a fiber that exited: its stack is freed once off it
  std::uint64_t switches_ = 0;

  unsigned char* smem_ = nullptr;
  std::size_t smem_capacity_ = 0;

  // AddressSanitizer's view of the host thread's own stack, learnt on the first switch.
  void* sched_fake_stack_ = nullptr;
  const void* sched_stack_bottom_ = nullptr;
  std::size_t sched_stack_size_ = 0;
  bool sched_stack_known_ = false;
};

thread_local BlockRunner* tls_runner = nullptr;

BlockRunner& this_thread_runner() {
  // Owned by the host thread: its fibers' stacks and shared memory die with it.
  thread_local std::unique_ptr<BlockRunner> owner;
  if (!owner) {
    owner = std::make_unique<BlockRunner>();
    tls_runner = owner.get();
  }
  return *owner;
}

std::string BlockRunner::where() const {
  const uint3 b = block_.block_idx;
  return "kernel '" + std::string(launch_->name) + "' block " + dims(b.x, b.y, b.z) + ": ";
}

std::string BlockRunner::thread_name(const Fiber& f) const {
  const dim3 d = block_.block_dim;
  if (d.y == 1 && d.z == 1) return "thread " + std::to_string(f.linear);
  const uint3 t = f.thread_idx;
  return "thread " + dims(t.x, t.y, t.z);
}

void BlockRunner::prepare_shared(std::size_t bytes) {
  // At least one granule, so that a kernel reading dynamic shared memory it did not ask for reads
  // poisoned memory (an ASan report) rather than a null pointer.
  const std::size_t want = std::max<std::size_t>((bytes + 255) / 256 * 256, 256);
  if (want > smem_capacity_) {
    std::free(smem_);
    void* p = nullptr;
    if (posix_memalign(&p, 256, want) != 0) throw std::bad_alloc();
    smem_ = static_cast<unsigned char*>(p);
    smem_capacity_ = want;
  }
  asan_unpoison(smem_, smem_capacity_);
  // Shared memory starts with garbage on a GPU; 0xFF bytes (NaN, -1) make a missing write visible.
  std::memset(smem_, 0xff, bytes);
  asan_poison(smem_ + bytes, smem_capacity_ - bytes);
  block_.dynamic_smem = smem_;
}

void BlockRunner::run_block(const KernelLaunch& launch, uint3 block_idx, ScheduleOrder order,
                            std::uint64_t launch_seed) {
  launch_ = &launch;
  order_ = order;
  // Per block, from the block's own index: the orders do not depend on which host thread runs
  // which block, nor on how many there are.
  const dim3 g = launch.grid;
  rng_ = mix(launch_seed ^ mix(block_idx.x + std::uint64_t(g.x) *
                                                 (block_idx.y + std::uint64_t(g.y) * block_idx.z)));
  const dim3 b = launch.block;
  n_ = b.x * b.y * b.z;
  block_.block_idx = block_idx;
  block_.block_dim = b;
  block_.grid_dim = launch.grid;
  tls_block = &block_;
  prepare_shared(launch.smem);

  head_ = 0;
  count_ = 0;
  for (unsigned i = 0; i < n_; ++i) {
    Fiber& f = fibers_[i];
    f.thread_idx = {i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
    f.linear = i;
    f.lane = i % 32;
    f.warp = i / 32;
    f.state = State::NotStarted;
    f.asan_fake_stack = nullptr;
  }
  for (unsigned k = 0; k < n_; ++k)
    push_ready(&fibers_[order_ == ScheduleOrder::Reverse ? n_ - 1 - k : k]);
  const unsigned n_warps = (n_ + 31) / 32;
  for (unsigned w = 0; w < n_warps; ++w) {
    const unsigned lanes = std::min(32u, n_ - w * 32);
    warps_[w].live = lanes == 32 ? ~0u : (1u << lanes) - 1;
    warps_[w].waiting = 0;
  }
  n_exited_ = 0;
  first_exited_ = -1;
  n_at_barrier_ = 0;
  barrier_file_ = nullptr;
  barrier_line_ = 0;
  barrier_accum_ = 0;
  barrier_result_ = 0;
  error_ = nullptr;
  switches_ = 0;

  // Fibers hand the host thread to each other directly; it comes back here only when no fiber can
  // run (the block finished, or deadlocked) or when one failed.
  transfer(nullptr, false, pop_ready());

  g_switches.fetch_add(switches_, std::memory_order_relaxed);
  g_threads.fetch_add(n_, std::memory_order_relaxed);
  g_blocks.fetch_add(1, std::memory_order_relaxed);
  if (!error_ && n_exited_ != n_) set_error(describe_deadlock());
  if (error_) {
    abandon();
    std::rethrow_exception(std::exchange(error_, nullptr));
  }
}

void BlockRunner::transfer(Fiber* from, bool from_exits, Fiber* to) {
  ++switches_;
  const void* bottom = sched_stack_bottom_;
  std::size_t size = sched_stack_size_;
  if (to) {
    if (to->state == State::NotStarted) {
      to->stack = stacks_.acquire();
      fiber_init(to->ctx, to->stack, &fiber_entry);
    }
    to->state = State::Running;
    bottom = to->stack.base;
    size = to->stack.size;
  }
  current_ = to;
  tls_thread = to;
  void** fake_save = from ? (from_exits ? nullptr : &from->asan_fake_stack) : &sched_fake_stack_;
  asan_start_switch(fake_save, bottom, size);
  fiber_switch(from ? from->ctx : sched_ctx_, to ? to->ctx : sched_ctx_);

  // Resumed: some fiber (or the scheduler) transferred back to `from`.
  asan_finish_switch(from ? from->asan_fake_stack : sched_fake_stack_, nullptr, nullptr);
  if (pending_release_) {
    release_stack(pending_release_);
    pending_release_ = nullptr;
  }
}

void BlockRunner::release_stack(Fiber* f) {
  if (!f->stack.base) return;
  // Frames that never returned (the fiber's entry, or a whole kernel when a block is abandoned)
  // leave ASan redzones in the shadow; clear the part of the stack this fiber used.
  const char* top = f->stack.base + f->stack.size;
  const char* low = std::max<const char*>(fiber_stack_low(f->ctx, f->stack) - 256, f->stack.base);
  asan_unpoison(low, std::size_t(top - low));
  stacks_.release(f->stack);
  f->stack = {};
}

void BlockRunner::abandon() {
  // The block failed: its waiting fibers will never resume. Their frames are simply dropped (no
  // destructors run), which is fine for kernel code, and their stacks go back to the pool.
  for (unsigned i = 0; i < n_; ++i) {
    Fiber& f = fibers_[i];
    if (f.state != State::NotStarted && f.state != State::Exited) release_stack(&f);
    f.state = State::Exited;
  }
  count_ = 0;
}

void BlockRunner::fiber_entry() {
  BlockRunner* r = tls_runner;
  {
    const void* bottom = nullptr;
    std::size_t size = 0;
    asan_finish_switch(nullptr, &bottom, &size);
    if (!r->sched_stack_known_) {  // the very first fiber is always entered from the scheduler
      r->sched_stack_bottom_ = bottom;
      r->sched_stack_size_ = size;
      r->sched_stack_known_ = true;
    }
  }
  if (r->pending_release_) {
    r->release_stack(r->pending_release_);
    r->pending_release_ = nullptr;
  }
  Fiber* self = r->current_;
  std::exception_ptr error;
  try {
    r->launch_->invoke(r->launch_->closure);
  } catch (...) {
    // Keep the exception and leave the handler before switching away: a fiber abandoned inside a
    // catch block would leave the host thread's C++ exception state pointing at its stack.
    error = std::current_exception();
  }
  r->finish(self, std::move(error));
}

void BlockRunner::finish(Fiber* self, std::exception_ptr error) {
  self->state = State::Exited;
  ++n_exited_;
  if (first_exited_ < 0) first_exited_ = int(self->linear);
  WarpState& w = warps_[self->warp];
  w.live &= ~(1u << self->lane);
  if (error && !error_) error_ = std::move(error);
  if (!error_ && n_at_barrier_ > 0)
    set_error(thread_name(*self) + " exited while " + std::to_string(n_at_barrier_) +
              " threads wait at __syncthreads (every thread of a block must reach every "
              "barrier; on a GPU this hangs or corrupts the block)");
  if (!error_) {
    // An exited lane no longer holds up warp intrinsics: the others may complete without it.
    Fiber* lanes = &fibers_[self->warp * 32];
    for (unsigned pending = w.waiting; pending && !error_;) {
      const unsigned mask = lanes[__builtin_ctz(pending)].op_mask;
      complete_warp_group(self->warp, mask, nullptr);
      pending &= ~mask;
    }
  }
  pending_release_ = self;
  transfer(self, true, error_ ? nullptr : pop_ready());
  std::abort();  // unreachable: nobody switches back to an exited fiber
}

void BlockRunner::wait(Fiber* self) {
  Fiber* next = error_ ? nullptr : pop_ready();
  if (next == self) {  // yield() with nobody else ready
    self->state = State::Running;
    return;
  }
  transfer(self, false, next);
}

void BlockRunner::yield(Fiber* self) {
  self->state = State::Ready;
  push_ready(self);
  wait(self);
}

void BlockRunner::syncthreads(Fiber* self, int predicate, const char* file, int line) {
  if (n_exited_ > 0)
    fail(thread_name(*self) + " reached __syncthreads after " +
         thread_name(fibers_[unsigned(first_exited_)]) +
         " exited (every thread of a block must reach every barrier; on a GPU this hangs or "
         "corrupts the block)");
  if (n_at_barrier_ == 0) {
    barrier_file_ = file;
    barrier_line_ = line;
  } else if (!same_site(file, line, barrier_file_, barrier_line_)) {
    std::vector<unsigned> waiting;
    for (unsigned i = 0; i < n_; ++i)
      if (fibers_[i].state == State::AtBarrier) waiting.push_back(i);
    fail(thread_name(*self) + " reached the __syncthreads at " + file + ":" + std::to_string(line) +
         " while " + std::to_string(waiting.size()) + " threads (" + index_ranges(waiting) +
         ") wait at the one at " + barrier_file_ + ":" + std::to_string(barrier_line_) +
         ": threads of a block must all reach the same __syncthreads (CUDA leaves barriers in "
         "divergent code undefined: a GPU may hang or let the threads pass each other); move "
         "the barrier out of the branch so that every thread calls the same one");
  }
  barrier_accum_ += predicate != 0;
  if (++n_at_barrier_ == n_) {
    // The last thread to arrive releases the others and, in forward and reverse order, carries on
    // before them; in random order it is drawn with them.
    barrier_result_ = barrier_accum_;
    barrier_accum_ = 0;
    n_at_barrier_ = 0;
    for (unsigned i = 0; i < n_; ++i) {
      Fiber& f = fibers_[order_ == ScheduleOrder::Reverse ? n_ - 1 - i : i];
      if (f.state == State::AtBarrier) {
        f.state = State::Ready;
        push_ready(&f);
      }
    }
    if (order_ != ScheduleOrder::Random) return;
    self->state = State::Ready;
    push_ready(self);
  } else {
    self->state = State::AtBarrier;
  }
  wait(self);
}

std::uint64_t BlockRunner::warp_op(Fiber* self, WarpOp op, unsigned mask, std::uint64_t value,
                                   int arg, int width) {
  const unsigned bit = 1u << self->lane;
  if (!(mask & bit))
    fail(thread_name(*self) + " (lane " + std::to_string(self->lane) + ") calls " + op_name(op) +
         " with mask " + hex(mask) + ", which leaves out its own lane");
  if (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1))))
    fail(thread_name(*self) + " calls " + op_name(op) + " with width " + std::to_string(width) +
         "; it must be a power of two from 1 to 32");
  self->op = op;
  self->op_mask = mask;
  self->op_value = value;
  self->op_arg = arg;
  self->op_width = width;
  self->state = State::AtWarpOp;
  warps_[self->warp].waiting |= bit;
  // The last lane of the group to arrive computes every lane's answer and carries on (in random
  // order it is queued with the others instead: Ready).
  if (!complete_warp_group(self->warp, mask, self) || self->state == State::Ready) wait(self);
  return self->op_result;
}

bool BlockRunner::complete_warp_group(unsigned warp, unsigned mask, Fiber* self) {
  WarpState& w = warps_[warp];
  // Lanes named in the mask that exited (or do not exist) are not waited for, as on a GPU.
  const unsigned expected = mask & w.live;
  if (expected == 0 || (w.waiting & expected) != expected) return false;
  Fiber* lanes = &fibers_[warp * 32];
  for (unsigned m = expected; m; m &= m - 1)
    if (lanes[__builtin_ctz(m)].op_mask != mask) return false;  // another group: may deadlock
  const Fiber& first = lanes[__builtin_ctz(expected)];
  for (unsigned m = expected; m; m &= m - 1) {
    const Fiber& f = lanes[__builtin_ctz(m)];
    if (f.op != first.op) {
      set_error("lanes " + std::to_string(first.lane) + " and " + std::to_string(f.lane) +
                " of warp " + std::to_string(warp) + " meet in different warp intrinsics (" +
                op_name(first.op) + ", " + op_name(f.op) + ") with mask " + hex(mask) +
                "; every lane named in the mask must call the same one");
      return false;
    }
  }
  compute_warp_results(lanes, expected, first.op);
  w.waiting &= ~expected;
  release(lanes, expected, self);
  return true;
}

void BlockRunner::release(Fiber* base, unsigned ids, Fiber* self) {
  const bool reverse = order_ == ScheduleOrder::Reverse;
  while (ids) {
    const unsigned i = reverse ? 31 - unsigned(__builtin_clz(ids)) : unsigned(__builtin_ctz(ids));
    ids &= ~(1u << i);
    Fiber& f = base[i];
    if (&f == self && order_ != ScheduleOrder::Random) {
      f.state = State::Running;
    } else {
      f.state = State::Ready;
      push_ready(&f);
    }
  }
}

void BlockRunner::compute_warp_results(Fiber* lanes, unsigned expected, WarpOp op) {
  unsigned ballot = 0;
  for (unsigned m = expected; m; m &= m - 1) {
    const unsigned l = __builtin_ctz(m);
    if (lanes[l].op_value) ballot |= 1u << l;
  }
  std::uint32_t acc = 0;
  switch (op) {
    case WarpOp::ReduceAnd:
      acc = ~0u;
      break;
    case WarpOp::ReduceMinU:
      acc = ~0u;
      break;
    case WarpOp::ReduceMinS:
      acc = 0x7fffffffu;
      break;
    case WarpOp::ReduceMaxS:
      acc = 0x80000000u;
      break;
    default:
      break;
  }
  for (unsigned m = expected; m; m &= m - 1) {
    const std::uint32_t v = std::uint32_t(lanes[__builtin_ctz(m)].op_value);
    switch (op) {
      case WarpOp::ReduceAdd:
        acc += v;
        break;
      case WarpOp::ReduceMinU:
        acc = std::min(acc, v);
        break;
      case WarpOp::ReduceMaxU:
        acc = std::max(acc, v);
        break;
      case WarpOp::ReduceMinS:
        acc = std::uint32_t(std::min(std::int32_t(acc), std::int32_t(v)));
        break;
      case WarpOp::ReduceMaxS:
        acc = std::uint32_t(std::max(std::int32_t(acc), std::int32_t(v)));
        break;
      case WarpOp::ReduceAnd:
        acc &= v;
        break;
      case WarpOp::ReduceOr:
        acc |= v;
        break;
      case WarpOp::ReduceXor:
        acc ^= v;
        break;
      default:
        break;
    }
  }
  for (unsigned m = expected; m; m &= m - 1) {
    const unsigned l = __builtin_ctz(m);
    Fiber& f = lanes[l];
    switch (op) {
      case WarpOp::Shfl:
      case WarpOp::ShflUp:
      case WarpOp::ShflDown:
      case WarpOp::ShflXor: {
        const unsigned src = shuffle_source(op, l, f.op_arg, f.op_width);
        f.op_result = (expected >> src) & 1 ? lanes[src].op_value : kPoison;
        break;
      }
      case WarpOp::Ballot:
        f.op_result = ballot;
        break;
      case WarpOp::Any:
        f.op_result = ballot != 0;
        break;
      case WarpOp::All:
        f.op_result = ballot == expected;
        break;
      case WarpOp::SyncWarp:
        f.op_result = 0;
        break;
      case WarpOp::MatchAny: {
        unsigned same = 0;
        for (unsigned k = expected; k; k &= k - 1)
          if (lanes[__builtin_ctz(k)].op_value == f.op_value) same |= 1u << __builtin_ctz(k);
        f.op_result = same;
        break;
      }
      default:
        f.op_result = acc;
        break;
    }
  }
}

std::string BlockRunner::describe_deadlock() const {
  std::vector<unsigned> at_barrier, exited;
  for (unsigned i = 0; i < n_; ++i) {
    if (fibers_[i].state == State::AtBarrier) at_barrier.push_back(i);
    if (fibers_[i].state == State::Exited) exited.push_back(i);
  }
  std::string msg = "deadlock, no thread can go on (a GPU would hang here):";
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string chains.
  if (!at_barrier.empty()) {
    msg += ' ';
    msg += std::to_string(at_barrier.size());
    msg += " threads wait at __syncthreads (threads ";
    msg += index_ranges(at_barrier);
    msg += ");";
  }
  for (unsigned w = 0; w * 32 < n_; ++w) {
    const WarpState& ws = warps_[w];
    const Fiber* lanes = &fibers_[w * 32];
    for (unsigned pending = ws.waiting; pending;) {
      const Fiber& f = lanes[__builtin_ctz(pending)];
      std::vector<unsigned> group, missing;
      for (unsigned l = 0; l < 32; ++l) {
        const bool in_group = (pending >> l & 1) && lanes[l].op_mask == f.op_mask;
        if (in_group)
          group.push_back(w * 32 + l);
        else if ((f.op_mask & ws.live) >> l & 1)
          missing.push_back(w * 32 + l);
      }
      msg += " threads ";
      msg += index_ranges(group);
      msg += " wait in ";
      msg += op_name(f.op);
      msg += "(mask ";
      msg += hex(f.op_mask);
      msg += ") for threads ";
      msg += index_ranges(missing);
      msg += ", which never arrive;";
      pending &= ~f.op_mask;
    }
  }
  if (!exited.empty()) {
    msg += ' ';
    msg += std::to_string(exited.size());
    msg += " threads exited (threads ";
    msg += index_ranges(exited);
    msg += ");";
  }
  msg +=
      " every thread of a block must reach each __syncthreads, and every lane named in a "
      "warp intrinsic's mask must call it";
  return msg;
}

#if defined(__SANITIZE_ADDRESS__)
// ASan's report shows the kernel's source line but not which GPU thread ran it; add that.
void report_emulated_thread() {
  if (tls_runner && tls_thread)
    std::fprintf(stderr, "evo CUDA emulator: the error above happened in %s\n",
                 tls_runner->current_position().c_str());
}
#endif

// ---- the grid: blocks over a persistent pool of host threads ----------------------------------

class GridPool {
 public:
  // Never destroyed: its workers may sit blocked in a condition variable when the process exits.
  static GridPool& get() {
    static GridPool* pool = new GridPool();
    return *pool;
  }
  int runners() const { return int(workers_.size()) + 1; }

  void run(const KernelLaunch& launch, const Schedule& schedule) {
    Job job;
    job.launch = &launch;
    job.order = schedule.order;
    job.seed = mix(schedule.seed ^ name_hash(launch.name));
    job.total = std::uint64_t(launch.grid.x) * launch.grid.y * launch.grid.z;
    const bool share = !workers_.empty() && job.total > 1;
    if (share) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        jobs_.push_back(&job);
      }
      work_cv_.notify_all();
    }
    work(job);  // the launching thread runs blocks too
    if (share) {
      std::unique_lock<std::mutex> lock(mutex_);
      remove_job(&job);
      done_cv_.wait(lock, [&] { return job.attached == 0; });
    }
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  struct Job {
    const KernelLaunch* launch = nullptr;
    ScheduleOrder order = ScheduleOrder::Forward;
    std::uint64_t seed = 0;
    std::uint64_t total = 0;
    std::atomic<std::uint64_t> next{0};
    std::atomic<bool> failed{false};
    int attached = 0;  // workers working on it (guarded by the pool's mutex)
    std::mutex error_mutex;
    std::exception_ptr error;
    std::uint64_t error_block = ~std::uint64_t(0);
  };

  GridPool() {
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_set_death_callback(&report_emulated_thread);
#endif
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const std::size_t n = std::max<std::size_t>(1, env_number("EVO_EMU_THREADS", cores));
    for (std::size_t i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  void remove_job(Job* job) {
    auto it = std::find(jobs_.begin(), jobs_.end(), job);
    if (it != jobs_.end()) jobs_.erase(it);
  }

  void worker_loop() {
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_cv_.wait(lock, [&] { return !jobs_.empty(); });
        job = jobs_.front();
        ++job->attached;
      }
      work(*job);
      std::lock_guard<std::mutex> lock(mutex_);
      remove_job(job);  // every block is claimed: nobody else needs to look at it
      if (--job->attached == 0) done_cv_.notify_all();
    }
  }

  static void work(Job& job) {
    BlockRunner& runner = this_thread_runner();
    const dim3 g = job.launch->grid;
    while (!job.failed.load(std::memory_order_relaxed)) {
      const std::uint64_t b = job.next.fetch_add(1, std::memory_order_relaxed);
      if (b >= job.total) break;
      const uint3 idx{unsigned(b % g.x), unsigned(b / g.x % g.y),
                      unsigned(b / (std::uint64_t(g.x) * g.y))};
      const int running = g_running_blocks.fetch_add(1, std::memory_order_relaxed) + 1;
      int seen = g_max_running_blocks.load(std::memory_order_relaxed);
      while (running > seen && !g_max_running_blocks.compare_exchange_weak(seen, running)) {
      }
      try {
        runner.run_block(*job.launch, idx, job.order, job.seed);
      } catch (...) {
        // Report the lowest failing block that ran, so that messages do not depend on timing
        // more than they must.
        std::lock_guard<std::mutex> lock(job.error_mutex);
        if (b < job.error_block) {
          job.error = std::current_exception();
          job.error_block = b;
        }
        job.failed.store(true, std::memory_order_relaxed);
      }
      g_running_blocks.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job*> jobs_;
  std::vector<std::thread> workers_;
};

Fiber* current_fiber(const char* what) {
  if (!tls_thread)
    throw EmuError(std::string(what) +
                   " called outside a kernel (the CUDA emulator runs device "
                   "built-ins only on its fibers)");
  return static_cast<Fiber*>(tls_thread);
}

}  // namespace

// ---- the device built-ins' entry points (device.h) ------------------------------------------

void syncthreads(const char* file, int line) {
  tls_runner->syncthreads(current_fiber("__syncthreads"), 1, file, line);
}

int syncthreads_count(int predicate, const char* file, int line) {
  tls_runner->syncthreads(current_fiber("__syncthreads_count"), predicate, file, line);
  return tls_runner->barrier_result();
}

std::uint64_t warp_op(WarpOp op, unsigned mask, std::uint64_t value, int arg, int width) {
  return tls_runner->warp_op(current_fiber(op_name(op)), op, mask, value, arg, width);
}

unsigned live_lanes() {
  return tls_runner->live_lanes(current_fiber("__activemask"));
}

void fiber_yield() {
  tls_runner->yield(current_fiber("__nanosleep"));
}

void trap(const char* what) {
  current_fiber(what);
  tls_runner->fail(what);
}

int runner_count() {
  return GridPool::get().runners();
}

namespace {

// What EVO_LAUNCH throws on a GPU when cudaGetLastError reports the launch (compat.h), with the
// code, so that CudaError::sticky() reads the same under emulation.
[[noreturn]] void throw_launch_error(const KernelLaunch& launch, cudaError_t code) {
  const dim3 b = launch.block, g = launch.grid;
  const std::string reason = cudaGetErrorString(code);
  (void)cudaGetLastError();  // consumed, as compat.h's check consumes it on a GPU
  throw CudaError(std::string("launch of ") + launch.name + " grid " + dims(g.x, g.y, g.z) +
                      " block " + dims(b.x, b.y, b.z) + " smem " + std::to_string(launch.smem),
                  reason, launch.file, launch.line, int(code));
}

// Runs a launch that passed every check: now (run_kernel) or at a graph's replay.
void execute_kernel(const KernelLaunch& launch) {
  if (const cudaError_t e = execution_fault(launch.name, launch.file, launch.line))
    throw_launch_error(launch, e);
  Schedule schedule;
  try {
    schedule = current_schedule();
  } catch (const EmuError& e) {
    throw EmuError("kernel '" + std::string(launch.name) + "' launched at " + launch.file + ":" +
                   std::to_string(launch.line) + ": " + e.what());
  }
  g_kernels.fetch_add(1, std::memory_order_relaxed);
  try {
    GridPool::get().run(launch, schedule);
  } catch (const EmuError& e) {
    throw EmuError(std::string(e.what()) + " [launched at " + launch.file + ":" +
                   std::to_string(launch.line) + "]");
  }
}

}  // namespace

void run_kernel(const KernelLaunch& launch, cudaStream_t stream) {
  const std::string prefix = "kernel '" + std::string(launch.name) + "' launched at " +
                             launch.file + ":" + std::to_string(launch.line) + ": ";
  if (tls_thread)
    throw EmuError(prefix + "launched from device code; dynamic parallelism is not emulated");
  if (const cudaError_t e = sticky_error()) throw_launch_error(launch, e);
  launch.check_pointers(launch);
  const dim3 b = launch.block, g = launch.grid;
  const std::string block = dims(b.x, b.y, b.z), grid = dims(g.x, g.y, g.z);
  // What a GPU rejects with cudaErrorInvalidConfiguration.
  if (b.x == 0 || b.y == 0 || b.z == 0)
    throw EmuError(prefix + "block " + block + " has a zero dimension");
  if (b.x > unsigned(kMaxThreadsPerBlock) || b.y > unsigned(kMaxThreadsPerBlock) ||
      b.z > unsigned(kMaxBlockDimZ))
    throw EmuError(prefix + "block " + block +
                   " exceeds the per-dimension limits (1024, 1024, 64)");
  const std::uint64_t threads = std::uint64_t(b.x) * b.y * b.z;
  if (threads > std::uint64_t(kMaxThreadsPerBlock))
    throw EmuError(prefix + "block " + block + " has " + std::to_string(threads) +
                   " threads; a block holds at most 1024 (a GPU fails the launch with "
                   "cudaErrorInvalidConfiguration)");
  if (g.x == 0 || g.y == 0 || g.z == 0)
    throw EmuError(prefix + "grid " + grid + " has a zero dimension");
  if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
    throw EmuError(prefix + "grid " + grid + " exceeds the limits (2^31-1, 65535, 65535)");
  const std::size_t limit = dynamic_smem_limit(launch.kernel);
  if (launch.smem > limit) {
    std::string msg = prefix + "asks for " + std::to_string(launch.smem) +
                      " bytes of dynamic shared memory; the limit is " + std::to_string(limit) +
                      " bytes per block";
    if (limit < kSharedMemPerBlockOptin && launch.smem <= kSharedMemPerBlockOptin)
      msg += " (raise it, up to " + std::to_string(kSharedMemPerBlockOptin) +
             ", with cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, "
             "bytes))";
    throw EmuError(msg);
  }
  if (!stream_is_valid(stream))
    throw EmuError(prefix + "launched on a stream that was destroyed or never created");
  // On a capturing stream the node owns a copy of the arguments (the caller's closure dies with
  // this call) and checks the pointers again at every replay: a buffer freed after the capture
  // is caught there, as a GPU would fault on it.
  const Issued issued = issue(stream, launch.name, [&launch, &prefix] {
    std::shared_ptr<const void> arguments = launch.clone(launch.closure);
    KernelLaunch copy = launch;
    copy.closure = arguments.get();
    return GraphNode{prefix.substr(0, prefix.size() - 2), [copy, arguments] {
                       copy.check_pointers(copy);
                       execute_kernel(copy);
                       return cudaSuccess;
                     }};
  });
  if (issued.what == Issue::Failed) throw_launch_error(launch, issued.error);
  if (issued.what == Issue::Recorded) return;
  execute_kernel(launch);
}

void check_kernel_pointer(const KernelLaunch& launch, int index, const void* p) {
  if (!p || !pointer_checks_enabled() || device_accessible(p)) return;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  throw EmuError("kernel '" + std::string(launch.name) + "' launched at " + launch.file + ":" +
                 std::to_string(launch.line) + ": argument " + std::to_string(index) + " is " +
                 buf +
                 ", which is not device memory (not from cudaMalloc or cudaMallocHost); a "
                 "GPU would fault on it. Copy the data to the device first "
                 "(EVO_EMU_CHECK_POINTERS=0 turns this check off)");
}

}  // namespace detail

EmuStats emu_stats() {
  using namespace detail;
  EmuStats s;
  s.kernels = g_kernels.load();
  s.blocks = g_blocks.load();
  s.threads = g_threads.load();
  s.context_switches = g_switches.load();
  s.host_threads = runner_count();
  s.max_concurrent_blocks = g_max_running_blocks.load();
  return s;
}

void reset_emu_stats() {
  using namespace detail;
  g_kernels = 0;
  g_blocks = 0;
  g_threads = 0;
  g_switches = 0;
  g_max_running_blocks = 0;
}

// ---- the schedule (runtime.h) -----------------------------------------------------------------

namespace {

constexpr const char* kScheduleChoices =
    "use forward (the default), reverse, random:SEED (SEED a decimal number up to 2^64-1) or "
    "random (a seed from the clock, printed)";

struct ScheduleSetting {
  std::mutex mutex;
  bool known = false;  // false until EVO_EMU_SCHEDULE was read or set_schedule called
  Schedule schedule;
};

ScheduleSetting& schedule_setting() {
  static ScheduleSetting* setting = new ScheduleSetting();  // never destroyed: launches may come
  return *setting;                                          // from threads that outlive main
}

}  // namespace

Schedule parse_schedule(const std::string& text) {
  Schedule s;
  if (text == "forward") return s;
  if (text == "reverse") {
    s.order = ScheduleOrder::Reverse;
    return s;
  }
  if (text == "random") {
    s.order = ScheduleOrder::Random;
    s.seed =
        detail::mix(std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
    // Seeds below 2^32 are easier to copy from a log, and as good for telling orders apart.
    s.seed &= 0xffffffffu;
    return s;
  }
  if (text.rfind("random:", 0) == 0) {
    const std::string digits = text.substr(7);
    char* end = nullptr;
    errno = 0;
    const unsigned long long seed = std::strtoull(digits.c_str(), &end, 10);
    if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos && end &&
        *end == 0 && errno == 0) {
      s.order = ScheduleOrder::Random;
      s.seed = seed;
      return s;
    }
  }
  throw EmuError("schedule '" + text + "' is not one the emulator knows; " + kScheduleChoices);
}

std::string schedule_name(const Schedule& schedule) {
  switch (schedule.order) {
    case ScheduleOrder::Forward:
      return "forward";
    case ScheduleOrder::Reverse:
      return "reverse";
    case ScheduleOrder::Random:
      return "random:" + std::to_string(schedule.seed);
  }
  return "forward";
}

Schedule current_schedule() {
  ScheduleSetting& setting = schedule_setting();
  std::lock_guard<std::mutex> lock(setting.mutex);  // ~20 ns a launch: nothing next to a block
  if (!setting.known) {
    const char* env = std::getenv("EVO_EMU_SCHEDULE");
    if (env && *env) {
      try {
        setting.schedule = parse_schedule(env);
        // A drawn seed is said once, so that a failing run can be repeated.
        if (std::strcmp(env, "random") == 0)
          std::fprintf(stderr, "evo CUDA emulator: schedule %s (EVO_EMU_SCHEDULE=%s repeats it)\n",
                       schedule_name(setting.schedule).c_str(),
                       schedule_name(setting.schedule).c_str());
      } catch (const EmuError& e) {
        // Not remembered: every launch fails the same way until the variable is fixed.
        throw EmuError(std::string("EVO_EMU_SCHEDULE: ") + e.what());
      }
    }
    setting.known = true;
  }
  return setting.schedule;
}

void set_schedule(const Schedule& schedule) {
  ScheduleSetting& setting = schedule_setting();
  std::lock_guard<std::mutex> lock(setting.mutex);
  setting.schedule = schedule;
  setting.known = true;
}

}  // namespace evo::emu
