// The fiber context switch (x86-64 assembly, ucontext elsewhere) and the fiber stack pool.
// Not the scheduler: which fiber runs when is decided in scheduler.cpp.
#include "cuda/emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "cuda/emu/runtime.h"

#if !defined(EVO_EMU_USE_UCONTEXT)
// evo_emu_switch(save_sp, load_sp): pushes rbp, rbx, r12-r15 (what the System V ABI says a callee
// must preserve; the caller already saved the rest), stores rsp in *save_sp, loads load_sp and pops
// the other fiber's registers; `ret` then resumes that fiber where it called evo_emu_switch.
// MXCSR and the x87 control word are not switched: no kernel changes rounding modes.
//
// evo_emu_fiber_start is where a new fiber's first `ret` lands: r13 holds its entry function. The
// CFI marks it as the outermost frame so that gdb and unwinders stop there.
asm(R"(
    .text
    .globl evo_emu_switch
    .hidden evo_emu_switch
    .type evo_emu_switch, @function
    .p2align 4
evo_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size evo_emu_switch, .-evo_emu_switch

    .globl evo_emu_fiber_start
    .hidden evo_emu_fiber_start
    .type evo_emu_fiber_start, @function
    .p2align 4
evo_emu_fiber_start:
    .cfi_startproc
    .cfi_undefined rip
    callq *%r13
    ud2
    .cfi_endproc
    .size evo_emu_fiber_start, .-evo_emu_fiber_start
)");
extern "C" void evo_emu_fiber_start();
#endif

namespace evo::emu::detail {

void fiber_init(FiberContext& ctx, const FiberStack& stack, void (*entry)()) {
#if defined(EVO_EMU_USE_UCONTEXT)
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.base;
  ctx.uc.uc_stack.ss_size = stack.size;
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
#else
  // The frame evo_emu_switch pops: six registers, then the return address. After the `ret`,
  // rsp = top - 16, 16-byte aligned at the `call` as the ABI requires.
  auto top = reinterpret_cast<std::uintptr_t>(stack.base + stack.size) & ~std::uintptr_t(15);
  auto* frame = reinterpret_cast<std::uintptr_t*>(top) - 9;
  frame[0] = 0;                                        // r15
  frame[1] = 0;                                        // r14
  frame[2] = reinterpret_cast<std::uintptr_t>(entry);  // r13
  frame[3] = 0;                                        // r12
  frame[4] = 0;                                        // rbx
  frame[5] = 0;                                        // rbp: ends frame-pointer walks
  frame[6] = reinterpret_cast<std::uintptr_t>(&evo_emu_fiber_start);  // return address
  frame[7] = 0;
  frame[8] = 0;
  ctx.sp = frame;
#endif
}

StackPool::StackPool(std::size_t stack_bytes) : page_(std::size_t(sysconf(_SC_PAGESIZE))) {
  bytes_ = (stack_bytes + page_ - 1) / page_ * page_;
}

StackPool::~StackPool() {
  for (const FiberStack& m : mappings_) munmap(m.base, m.size);
}

FiberStack StackPool::acquire() {
  if (!free_.empty()) {
    const FiberStack s = free_.back();
    free_.pop_back();
    return s;
  }
  const std::size_t total = bytes_ + page_;
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (p == MAP_FAILED)
    throw EmuError("CUDA emulator: cannot map a " + std::to_string(total >> 10) +
                   " KiB fiber stack (set EVO_EMU_STACK_KB lower, or raise vm.max_map_count)");
  mprotect(p, page_, PROT_NONE);
  mappings_.push_back({static_cast<char*>(p), total});
  return {static_cast<char*>(p) + page_, bytes_};
}

}  // namespace evo::emu::detail
