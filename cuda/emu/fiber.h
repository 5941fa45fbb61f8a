// Fibers for the emulator: a context switch that makes no system call, stacks allocated once and
// reused, and the AddressSanitizer hooks a stack switch needs. Not a general coroutine library.
#pragma once

#include <cstddef>
#include <vector>

#if !defined(__x86_64__) || defined(EVO_EMU_UCONTEXT)
#define EVO_EMU_USE_UCONTEXT 1
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace evo::emu::detail {

#if defined(EVO_EMU_USE_UCONTEXT)
// Portable but slow: glibc's swapcontext saves the signal mask with a system call every switch.
struct FiberContext {
  ucontext_t uc;
};
#else
// x86-64: the switch pushes the System V callee-saved registers and swaps stack pointers (no
// signal mask, no system call; a few nanoseconds).
struct FiberContext {
  void* sp = nullptr;
};
extern "C" void evo_emu_switch(void** save_sp, void* load_sp);
#endif

struct FiberStack {
  char* base = nullptr;  // lowest usable byte; a guard page sits below it
  std::size_t size = 0;
};

// Prepares `ctx` so that switching to it runs entry() on `stack`. entry() must never return:
// a fiber ends by switching away for good.
void fiber_init(FiberContext& ctx, const FiberStack& stack, void (*entry)());

inline void fiber_switch(FiberContext& from, FiberContext& to) {
#if defined(EVO_EMU_USE_UCONTEXT)
  swapcontext(&from.uc, &to.uc);
#else
  evo_emu_switch(&from.sp, to.sp);
#endif
}

// The lowest address a suspended or finished fiber's stack has used (its saved stack pointer),
// so that AddressSanitizer's shadow is cleaned for that part only when the stack is reused.
inline const char* fiber_stack_low(const FiberContext& ctx, const FiberStack& stack) {
#if defined(EVO_EMU_USE_UCONTEXT)
  (void)ctx;
  return stack.base;
#else
  return static_cast<const char*>(ctx.sp);
#endif
}

// Stacks of one host thread's fibers. Stacks are mmap'ed with a guard page (an overflow faults
// instead of corrupting the neighbour) and MAP_NORESERVE, so only touched pages cost memory; they
// go back to the pool, never to the system, so a block's fibers reuse its predecessor's stacks.
class StackPool {
 public:
  explicit StackPool(std::size_t stack_bytes);
  ~StackPool();
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  FiberStack acquire();
  void release(const FiberStack& stack) { free_.push_back(stack); }
  std::size_t stack_bytes() const { return bytes_; }

 private:
  std::size_t bytes_;
  std::size_t page_;
  std::vector<FiberStack> free_;
  std::vector<FiberStack> mappings_;  // whole mappings, guard page included, for munmap
};

// AddressSanitizer must be told about every stack switch, or it reports false stack overflows and
// use-after-return (and mishandles exceptions thrown on a fiber). No-ops without ASan.
inline void asan_start_switch(void** fake_stack_save, const void* bottom, std::size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}
inline void asan_finish_switch(void* fake_stack, const void** old_bottom, std::size_t* old_size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#else
  (void)fake_stack, (void)old_bottom, (void)old_size;
#endif
}
// Clears the shadow that abandoned frames left on a stack about to be reused.
inline void asan_unpoison(const void* begin, std::size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __asan_unpoison_memory_region(begin, size);
#else
  (void)begin, (void)size;
#endif
}
inline void asan_poison(const void* begin, std::size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __asan_poison_memory_region(begin, size);
#else
  (void)begin, (void)size;
#endif
}

}  // namespace evo::emu::detail
