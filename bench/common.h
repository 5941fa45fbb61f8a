// What the benchmark programs share: printf-style names, convolution shapes and their names (the
// names bench/torch_conv_baseline.py uses too: tools/gpu_check.sh joins the tables on them).
// Not a benchmark itself; header-only.
#pragma once

#include <cstdio>
#include <string>

#include "evo/ops.h"

namespace evo::bench {

template <typename... Args>
std::string format(const char* fmt, Args... args) {
  char text[160];
  std::snprintf(text, sizeof text, fmt, args...);
  return text;
}

// A square convolution shape: batch n, hw x hw images.
inline ConvGeometry conv_geometry(int n, int hw, int c_in, int c_out, int kh, int kw, int stride) {
  ConvGeometry g;
  g.n = n, g.h = hw, g.w = hw, g.c_in = c_in, g.c_out = c_out, g.kh = kh, g.kw = kw;
  g.stride = stride;
  return g;
}

// "conv_fwd/3x3/n50/32x32/64-64/s1"
inline std::string conv_name(const char* op, const ConvGeometry& g) {
  return format("%s/%dx%d/n%d/%dx%d/%d-%d/s%d", op, g.kh, g.kw, g.n, g.h, g.w, g.c_in, g.c_out,
                g.stride);
}

}  // namespace evo::bench
