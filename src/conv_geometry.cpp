// What ops.h promises of a convolution's geometry (and of next_batch's sizes), checked in one place
// for every backend (the CPU ops, and the CUDA kernels compiled for a GPU or the emulator). Not
// the convolutions.
#include <string>

#include "evo/error.h"
#include "evo/ops.h"

namespace evo {

void check_conv_geometry(const ConvGeometry& g, const char* op) {
  auto fail = [&](const std::string& what) {
    throw Error(std::string(op) + ": bad ConvGeometry: " + what +
                " (ops.h: odd filter sizes, stride a power of two, all sizes >= 1)");
  };
  if (g.n < 1 || g.h < 1 || g.w < 1 || g.c_in < 1 || g.c_out < 1)
    fail("n, h, w, c_in and c_out must be >= 1, got n=" + std::to_string(g.n) +
         " h=" + std::to_string(g.h) + " w=" + std::to_string(g.w) +
         " c_in=" + std::to_string(g.c_in) + " c_out=" + std::to_string(g.c_out));
  if (g.kh < 1 || g.kh % 2 == 0) fail("kh=" + std::to_string(g.kh) + " is not odd");
  if (g.kw < 1 || g.kw % 2 == 0) fail("kw=" + std::to_string(g.kw) + " is not odd");
  if (g.stride < 1 || (g.stride & (g.stride - 1)) != 0)
    fail("stride=" + std::to_string(g.stride) + " is not a power of two");
}

void check_next_batch(int per_epoch, int batch, int first, int n) {
  if (per_epoch < 1 || batch < 1 || first < 0 || n < 0)
    throw Error("next_batch: per_epoch " + std::to_string(per_epoch) + ", batch " +
                std::to_string(batch) + ", first " + std::to_string(first) + ", n " +
                std::to_string(n) + ": per_epoch and batch must be >= 1, first and n >= 0");
}

}  // namespace evo
