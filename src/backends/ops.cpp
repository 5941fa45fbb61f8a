// The op dispatch table: one OpTable per backend, picked by device kind.
// Not the ops themselves: src/cpu/ (CPU) and cuda/ (CUDA and, compiled again, the emulator).
#include "evo/ops.h"
#include "evo/error.h"

namespace evo {

const OpTable& ops(DeviceKind kind) {
  static const OpTable cpu_table = EVO_OP_TABLE(cpu);
  static const OpTable emu_table = EVO_OP_TABLE(emu);
#if defined(EVO_HAVE_CUDA)
  static const OpTable cuda_table = EVO_OP_TABLE(cuda);
#endif
  switch (kind) {
    case DeviceKind::CPU:
      return cpu_table;
    case DeviceKind::EMU:
      return emu_table;
    case DeviceKind::CUDA:
#if defined(EVO_HAVE_CUDA)
      return cuda_table;
#else
      break;
#endif
  }
  throw Error(
      "the layer ops are not built for the cuda backend: this evo was built without CUDA "
      "(configure with -DEVO_CUDA=ON on a machine with nvcc), or use --device cpu or emu");
}

}  // namespace evo
