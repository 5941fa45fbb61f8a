// CPU direct convolution for the few-channel layers that evolved nets are made of (1 to ~16
// channels): no im2col, no GEMM call, eight output columns per vector. Not the large-channel path
// (conv.cpp's im2col + SGEMM wins there) nor small maps (conv_channels.cpp); conv2d_path()
// (conv.cpp) picks per layer and pass.
//
// Why: a 3x3 convolution of 4 channels into 4 at 28x28 is 56 KFLOPs per image. As im2col + SGEMM
// it copies 36 floats per output pixel to multiply them with a [36, 4] panel that OpenBLAS packs
// again on every call, and its micro-kernel (16 x 6 tiles of C) runs 4 of 6 columns: measured at
// ~1-2 GFLOP/s on one core. Here each output row is computed in registers straight from the
// input, vectorised over the output width, so the work is the arithmetic plus a transpose of each
// image into a planar layout (one read and one write per element, against K = 9*Cin FMAs).
//
// The planar layout of one image x[H, W, C] for a convolution of stride s with 'same' padding pw:
// xp[y][c][r][j] = x[y][j*s + r - pw][c] (zero outside the image), r in [0, s) the stride phase.
// Output column ox of filter tap kw reads padded column ox*s + kw = (ox + kw/s)*s + kw%s, i.e.
// xp[y][c][kw % s][ox + kw / s]: for a run of consecutive ox, a run of consecutive floats, for
// every stride. The rows of each phase are padded to a whole number of vectors plus the largest
// kw/s, so a vector may run past the image's width (its extra lanes are dropped or are zero).
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "evo/error.h"
#include "src/cpu/blas.h"
#include "src/cpu/conv.h"
#include "src/cpu/vec.h"

namespace evo::cpu {

namespace {

using namespace vec;

// Up to kMaxVecs vectors (32 output columns) are accumulated in registers at once; wider rows are
// done in chunks of that many.
constexpr int kMaxVecs = 4;

int round_up(int a, int b) {
  return (a + b - 1) / b * b;
}

// f(std::integral_constant<int, NV>{}) for a run of `vecs` vectors, NV = min(vecs, kMaxVecs):
// the kernels take the run's width as a template parameter so its accumulators are registers.
template <typename F>
void with_vecs(int vecs, F&& f) {
  switch (std::min(vecs, kMaxVecs)) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    default:
      return f(std::integral_constant<int, 4>{});
  }
}

// Splits channels [0, count) into blocks for runs of NV vectors: blocks of kAccumulators/NV
// channels (at least 2), then one block of the rest, calling
// f(first, std::integral_constant<int, CHANNELS>{}) for each. The blocks of one run reload its
// inputs, so fewer, bigger blocks load less per FMA: 7 channels in runs of 4 vectors are blocks of
// 4 and 3 with AVX-512 (2, 2, 2 and 1 with AVX2).
template <int Rest, int Big, typename F>
void rest_block(int c, int rest, F& f) {
  if constexpr (Rest < Big) {
    if (rest == Rest) return f(c, std::integral_constant<int, Rest>{});
    rest_block<Rest + 1, Big>(c, rest, f);
  }
}

template <int NV, int Acc = kAccumulators, typename F>
void for_channel_blocks(int count, F&& f) {
  constexpr int kBig = std::max(2, Acc / NV);
  int c = 0;
  for (; c + kBig <= count; c += kBig) f(c, std::integral_constant<int, kBig>{});
  if (c < count) rest_block<1, kBig>(c, count - c, f);
}

// The sizes of one convolution's planar buffers.
struct Plan {
  ConvGeometry g;
  int oh, ow;
  int shift;  // log2(stride): kw / s and kw % s as a shift and a mask
  int owv;    // ow rounded up to whole vectors: the planar dy row
  int jw;     // floats per phase row of the planar input: owv + the largest kw / s
  // The forward pass's taps t = (kh, kw, ci), in wt's order: where each reads, relative to
  // row(0, oy * s - ph, 0) (so one table serves every output row), set by forward_planar.
  const int64_t* taps = nullptr;
  int64_t in_size() const { return int64_t(g.c_in) * g.h * g.stride * jw; }
  int64_t dy_size() const { return int64_t(g.c_out) * oh * owv; }
  // Offset of xp[y][c][r][0] (one input row's channels and phases are one block).
  int64_t row(int c, int y, int r) const { return ((int64_t(y) * g.c_in + c) * g.stride + r) * jw; }
  // Rows oy whose filter tap kh lands inside the image: iy = oy*s - ph + kh in [0, h).
  int oy_lo(int kh) const {
    const int t = g.pad_h() - kh;
    return t <= 0 ? 0 : (t + g.stride - 1) / g.stride;
  }
  int oy_hi(int kh) const {  // exclusive
    const int t = g.h - 1 + g.pad_h() - kh;
    return t < 0 ? 0 : std::min(oh, t / g.stride + 1);
  }
};

Plan make_plan(const ConvGeometry& g) {
  Plan p;
  p.g = g;
  p.oh = g.out_h();
  p.ow = g.out_w();
  p.shift = 0;
  while ((1 << p.shift) < g.stride) ++p.shift;
  p.owv = round_up(p.ow, kLanes);
  p.jw = p.owv + (g.kw - 1) / g.stride;
  return p;
}

// One image x[H, W, Cin] (NHWC) into its planar, phase-split, zero-padded layout: each input row's
// block is zeroed (the padding columns and the vector tails), then its pixels are scattered in.
void to_planar(const Plan& p, const float* x, float* xp) {
  const ConvGeometry& g = p.g;
  const int s = g.stride, cin = g.c_in;
  const int64_t block = int64_t(cin) * s * p.jw;
  std::memset(xp, 0, sizeof(float) * std::size_t(block * g.h));
  if (cin == 1 && s == 1) {  // the image itself: one copy per row
    for (int y = 0; y < g.h; ++y)
      std::memcpy(xp + p.row(0, y, 0) + g.pad_w(), x + int64_t(y) * g.w, sizeof(float) * g.w);
    return;
  }
  for (int y = 0; y < g.h; ++y) {
    const float* xrow = x + int64_t(y) * g.w * cin;
    float* base = xp + p.row(0, y, 0);
    for (int ix = 0; ix < g.w; ++ix) {
      const int col = ix + g.pad_w();
      float* dst = base + int64_t(col & (s - 1)) * p.jw + (col >> p.shift);
      const float* src = xrow + int64_t(ix) * cin;
      for (int c = 0; c < cin; ++c) dst[int64_t(c) * s * p.jw] = src[c];
    }
  }
}

// dy[OH, OW, Cout] (NHWC) into dyp[Cout][OH][owv], the lanes past OW zero (the backward passes
// multiply them into real pixels).
void dy_to_planar(const Plan& p, const float* dy, float* dyp) {
  const int cout = p.g.c_out;
  for (int co = 0; co < cout; ++co)
    for (int oy = 0; oy < p.oh; ++oy) {
      float* dst = dyp + (int64_t(co) * p.oh + oy) * p.owv;
      const float* src = dy + int64_t(oy) * p.ow * cout + co;
      int ox = 0;
      for (; ox < p.ow; ++ox) dst[ox] = src[int64_t(ox) * cout];
      for (; ox < p.owv; ++ox) dst[ox] = 0.f;
    }
}

// Output columns [ox0, ox0 + 8*NV) of output row oy, channels [co0, co0 + CO), into
// out[CO][8*NV]: every in-image filter tap in (kh, kw, ci) order loads NV vectors of input once
// and multiplies them with the tap's CO weights (wt[kh][kw][ci][co], broadcast), so CO*NV
// accumulators stay in registers and each load feeds CO FMAs.
template <int NV, int CO>
void forward_run(const Plan& p, const float* xp, const float* wt, int co0, int oy, int ox0,
                 float* out) {
  const ConvGeometry& g = p.g;
  const int s = g.stride, cout = g.c_out;
  Vec acc[CO][NV] = {};
  // The taps of the filter rows inside the image are one range of the table: a single flat loop
  // (with one input channel, loops over kh, kw and ci cost more than the FMAs they feed).
  const int kh_lo = std::max(0, g.pad_h() - oy * s);
  const int kh_hi = std::min(g.kh, g.h + g.pad_h() - oy * s);
  const int64_t row_taps = int64_t(g.kw) * g.c_in;
  const int64_t base = p.row(0, oy * s - g.pad_h(), 0) + ox0;  // < 0 in the top padding
  const float* wk = wt + kh_lo * row_taps * cout + co0;
  for (int64_t t = kh_lo * row_taps; t < kh_hi * row_taps; ++t, wk += cout) {
    const float* src = xp + (base + p.taps[t]);
    Vec xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = load(src + v * kLanes);
    for (int c = 0; c < CO; ++c) {
      const Vec wv = splat(wk[c]);
      for (int v = 0; v < NV; ++v) acc[c][v] += wv * xv[v];
    }
  }
  for (int c = 0; c < CO; ++c)
    for (int v = 0; v < NV; ++v) store(out + (c * NV + v) * kLanes, acc[c][v]);
}

// Channels [co0, co0 + CO) of one run, written to y (NHWC: a stride of Cout between columns).
template <int NV, int CO>
void forward_block(const Plan& p, const float* xp, const float* wt, int co0, int oy, int ox0,
                   int cols, float* yrow) {
  alignas(32) float out[CO * NV * kLanes];
  forward_run<NV, CO>(p, xp, wt, co0, oy, ox0, out);
  const int cout = p.g.c_out;
  // Column by column, the block's CO channels side by side: one short contiguous run per column.
  float* d = yrow + co0;
  for (int i = 0; i < cols; ++i, d += cout)
    for (int c = 0; c < CO; ++c) d[c] = out[c * NV * kLanes + i];
}

// One image: y[OH, OW, Cout] from its planar input and the weights as wt[kh][kw][ci][co].
void forward_image(const Plan& p, const float* xp, const float* wt, float* y) {
  const int cout = p.g.c_out;
  for (int oy = 0; oy < p.oh; ++oy)
    for (int ox0 = 0; ox0 < p.ow; ox0 += kMaxVecs * kLanes) {
      const int cols = std::min(p.ow - ox0, kMaxVecs * kLanes);
      float* yrow = y + (int64_t(oy) * p.ow + ox0) * cout;
      with_vecs((cols + kLanes - 1) / kLanes, [&](auto nv_) {
        constexpr int nv = decltype(nv_)::value;
        for_channel_blocks<nv>(cout, [&](int co, auto block_) {
          constexpr int block = decltype(block_)::value;
          forward_block<nv, block>(p, xp, wt, co, oy, ox0, cols, yrow);
        });
      });
    }
}

// w[co][k] -> wt[k][co] (k = (kh, kw, ci)): one tap's weights for every co, contiguous.
float* transpose_filter(Context& ctx, const ConvGeometry& g, const float* w) {
  const int64_t k_size = g.gemm_k();
  float* wt = ctx.arena().allocate_n<float>(std::size_t(g.c_out * k_size));
  for (int co = 0; co < g.c_out; ++co)
    for (int64_t k = 0; k < k_size; ++k) wt[k * g.c_out + co] = w[co * k_size + k];
  return wt;
}

// The scratch one thread needs, carved from the context's arena before the parallel region.
struct Scratch {
  float* base;
  int64_t per_thread;
  float* at(int t) const { return base + int64_t(t) * per_thread; }
};

Scratch make_scratch(Context& ctx, int threads, int64_t floats) {
  const int64_t per = (floats + 63) / 64 * 64;  // each thread's part 256-byte aligned
  return Scratch{ctx.arena().allocate_n<float>(std::size_t(threads) * per), per};
}

// Images are split between threads; one image's planar copy stays in L1/L2 while it is used.
int team_size(const ConvGeometry& g) {
  return std::max(1, std::min(omp_get_max_threads(), g.n));
}

void forward_planar(Context& ctx, const ConvGeometry& g, const float* x, const float* wt, float* y);

// Stride-1 backward data as a forward pass: dx = conv(dy, w') with w'[ci][kh][kw][co] =
// w[co][KH-1-kh][KW-1-kw][ci] (the adjoint of a stride-1 'same' convolution with odd filters).
void backward_data_flipped(Context& ctx, const ConvGeometry& g, const float* dy, const float* w,
                           float* dx) {
  ConvGeometry fg = g;
  fg.c_in = g.c_out;
  fg.c_out = g.c_in;
  Arena::Scope scope(ctx.arena());
  // The flipped filter straight in forward_image's transposed layout: wt'[kh][kw][co][ci] =
  // w'[ci][kh][kw][co] = w[co][KH-1-kh][KW-1-kw][ci], a mirror of the taps and nothing else.
  float* wt = ctx.arena().allocate_n<float>(std::size_t(g.c_out * g.gemm_k()));
  const int64_t taps = int64_t(g.kh) * g.kw, tap_size = int64_t(g.c_in) * g.c_out;
  for (int co = 0; co < g.c_out; ++co)
    for (int64_t t = 0; t < taps; ++t)
      for (int ci = 0; ci < g.c_in; ++ci)
        wt[(taps - 1 - t) * tap_size + int64_t(co) * g.c_in + ci] =
            w[(int64_t(co) * taps + t) * g.c_in + ci];
  forward_planar(ctx, fg, dy, wt, dx);
}

// Strides > 1, as a gather by stride phase. Padded input column X = j*s + r is read by output
// column ox through tap kw exactly when kw = r + s*t and ox = j - t, and input row iy by output row
// oy through tap kh when iy + ph - kh = oy*s. So phase r of dx's row iy is a plain correlation of
// dy's rows with the taps kw = r, r + s, ... and one vector of dx columns j takes the dy vector at
// j - t: the forward pass's register scheme with the roles of Cin and Cout swapped. dy is laid
// out as dyg[oy][co][tmax + ox] (tmax = the largest t, zeros left and right), the weights are
// read in place (w[co][kh][kw][ci]: a tap's Cin weights are contiguous).
struct Gather {
  int tmax;  // (KW - 1) / s: the largest left shift of a dy run
  int jv;    // dx phase columns computed per row, whole vectors (covers every X < pw + W)
  int len;   // floats per (oy, co) row of dyg: tmax + jv
  int64_t dy_size(const Plan& p) const { return int64_t(p.oh) * p.g.c_out * len; }
};

Gather make_gather(const Plan& p) {
  Gather q;
  q.tmax = (p.g.kw - 1) >> p.shift;
  q.jv = round_up(((p.g.pad_w() + p.g.w - 1) >> p.shift) + 1, kLanes);
  q.len = q.tmax + q.jv;
  return q;
}

void dy_to_gather(const Plan& p, const Gather& q, const float* dy, float* dyg) {
  const int cout = p.g.c_out;
  std::memset(dyg, 0, sizeof(float) * std::size_t(q.dy_size(p)));
  for (int oy = 0; oy < p.oh; ++oy)
    for (int co = 0; co < cout; ++co) {
      float* dst = dyg + (int64_t(oy) * cout + co) * q.len + q.tmax;
      const float* src = dy + int64_t(oy) * p.ow * cout + co;
      for (int ox = 0; ox < p.ow; ++ox) dst[ox] = src[int64_t(ox) * cout];
    }
}

// dx phase r of row iy, columns [j0, j0 + 8*NV), channels [ci0, ci0 + CI), into out[CI][8*NV].
template <int NV, int CI>
void gather_run(const Plan& p, const Gather& q, const float* dyg, const float* w, int iy, int r,
                int ci0, int j0, float* out) {
  const ConvGeometry& g = p.g;
  const int s = g.stride, cin = g.c_in, cout = g.c_out;
  Vec acc[CI][NV] = {};
  for (int kh = 0; kh < g.kh; ++kh) {
    const int t = iy + g.pad_h() - kh;  // = oy * s when this tap reads row iy
    if (t < 0 || (t & (s - 1)) != 0 || (t >> p.shift) >= p.oh) continue;
    const float* dyrow = dyg + int64_t(t >> p.shift) * cout * q.len + q.tmax + j0;
    for (int kw = r, tt = 0; kw < g.kw; kw += s, ++tt) {
      const float* wk = w + (int64_t(kh) * g.kw + kw) * cin + ci0;
      const float* src = dyrow - tt;
      for (int co = 0; co < cout; ++co, src += q.len, wk += g.gemm_k()) {
        Vec dv[NV];
        for (int v = 0; v < NV; ++v) dv[v] = load(src + v * kLanes);
        for (int c = 0; c < CI; ++c) {
          const Vec wv = splat(wk[c]);
          for (int v = 0; v < NV; ++v) acc[c][v] += wv * dv[v];
        }
      }
    }
  }
  for (int c = 0; c < CI; ++c)
    for (int v = 0; v < NV; ++v) store(out + (c * NV + v) * kLanes, acc[c][v]);
}

// Channels [ci0, ci0 + CI) of one run, written to dx (NHWC) where the phase column is in the image.
template <int NV, int CI>
void gather_block(const Plan& p, const Gather& q, const float* dyg, const float* w, int iy, int r,
                  int ci0, int j0, float* dxrow) {
  alignas(32) float out[CI * NV * kLanes];
  gather_run<NV, CI>(p, q, dyg, w, iy, r, ci0, j0, out);
  const ConvGeometry& g = p.g;
  // Columns i with 0 <= ix = (j0 + i) * s + r - pw < W.
  const int s = g.stride, base = (j0 << p.shift) + r - g.pad_w();
  const int i_lo = base >= 0 ? 0 : (-base + s - 1) >> p.shift;
  const int i_hi = std::min(NV * kLanes, g.w - base <= 0 ? 0 : ((g.w - base - 1) >> p.shift) + 1);
  float* d = dxrow + int64_t(base + (i_lo << p.shift)) * g.c_in + ci0;
  const int64_t step = int64_t(s) * g.c_in;
  for (int i = i_lo; i < i_hi; ++i, d += step)
    for (int c = 0; c < CI; ++c) d[c] = out[c * NV * kLanes + i];
}

// One image's dx[H, W, Cin]: every input row, every stride phase, in runs of up to 32 columns.
// Every dx element is written exactly once (each X = ix + pw has one phase and one column).
void backward_data_image(const Plan& p, const Gather& q, const float* dyg, const float* w,
                         float* dx) {
  const ConvGeometry& g = p.g;
  const int s = g.stride;
  for (int iy = 0; iy < g.h; ++iy) {
    float* dxrow = dx + int64_t(iy) * g.w * g.c_in;
    // Rows no output row reads (stride > filter height) and phases no tap reads (r >= KW) get
    // no products at all: zeros, without the run machinery.
    bool read = false;
    for (int kh = 0; kh < g.kh; ++kh) {
      const int t = iy + g.pad_h() - kh;
      read |= t >= 0 && (t & (s - 1)) == 0 && (t >> p.shift) < p.oh;
    }
    if (!read) {
      std::fill(dxrow, dxrow + int64_t(g.w) * g.c_in, 0.f);
      continue;
    }
    for (int r = 0; r < s; ++r) {
      if (r >= g.kw) {
        for (int x = r; x < g.w + g.pad_w(); x += s)
          if (x >= g.pad_w()) std::fill_n(dxrow + int64_t(x - g.pad_w()) * g.c_in, g.c_in, 0.f);
        continue;
      }
      for (int j0 = 0; j0 < q.jv; j0 += kMaxVecs * kLanes)
        with_vecs((q.jv - j0) / kLanes, [&](auto nv_) {
          constexpr int nv = decltype(nv_)::value;
          for_channel_blocks<nv>(g.c_in, [&](int ci, auto block_) {
            constexpr int block = decltype(block_)::value;
            gather_block<nv, block>(p, q, dyg, w, iy, r, ci, j0, dxrow);
          });
        });
    }
  }
}

// dw[co0 + c][kh][kw][ci] for c < CO, of one image, output columns [ox0, ox0 + 8*NV): the dot
// products of dy's channels with the input run the tap reads, over every output row the tap lands
// in, kept in vector lanes (CO*NV accumulators); each input vector feeds CO FMAs.
template <int NV, int CO>
void backward_filter_taps(const Plan& p, const float* xp, const float* dyp, int co0, int kh, int kw,
                          int ci, int ox0, float* sums) {
  const ConvGeometry& g = p.g;
  const int64_t dy_channel = int64_t(p.oh) * p.owv, x_row = int64_t(g.c_in) * g.stride * p.jw;
  Vec acc[CO][NV] = {};
  const int lo = p.oy_lo(kh), hi = p.oy_hi(kh);
  const float* x =
      xp + p.row(ci, lo * g.stride - g.pad_h() + kh, kw & (g.stride - 1)) + (kw >> p.shift) + ox0;
  const float* d = dyp + int64_t(co0) * dy_channel + int64_t(lo) * p.owv + ox0;
  for (int oy = lo; oy < hi; ++oy, x += g.stride * x_row, d += p.owv) {
    Vec xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = load(x + v * kLanes);
    for (int c = 0; c < CO; ++c)
      for (int v = 0; v < NV; ++v) acc[c][v] += load(d + c * dy_channel + v * kLanes) * xv[v];
  }
  for (int c = 0; c < CO; ++c) {
    Vec t = acc[c][0];
    for (int v = 1; v < NV; ++v) t += acc[c][v];
    sums[c] += hsum(t);
  }
}

// dw[co0 + c][kh][kw][ci] for every kw < KW and c < CO, of one image: each vector of 8 output
// columns loads its KW input vectors (one per tap of the filter row) and CO dy vectors once and
// multiplies every pair, KW * CO FMAs per KW + CO loads (3x3 filters into 8 channels: 24 FMAs
// per 11 loads, against one load per FMA tap by tap). Sums go to sums[kw * CO + c].
template <int KW, int CO>
void backward_filter_row(const Plan& p, const float* xp, const float* dyp, int co0, int kh, int ci,
                         float* sums) {
  const ConvGeometry& g = p.g;
  const int64_t dy_channel = int64_t(p.oh) * p.owv;
  int64_t tap[KW];  // where tap kw of output column 0 reads, relative to the row's block
  for (int kw = 0; kw < KW; ++kw)
    tap[kw] = int64_t(kw & (g.stride - 1)) * p.jw + (kw >> p.shift);
  Vec acc[KW][CO] = {};
  for (int oy = p.oy_lo(kh), hi = p.oy_hi(kh); oy < hi; ++oy) {
    const float* x = xp + p.row(ci, oy * g.stride - g.pad_h() + kh, 0);
    const float* d = dyp + int64_t(co0) * dy_channel + int64_t(oy) * p.owv;
    for (int ox0 = 0; ox0 < p.owv; ox0 += kLanes) {
      Vec xv[KW];
      for (int kw = 0; kw < KW; ++kw) xv[kw] = load(x + tap[kw] + ox0);
      for (int c = 0; c < CO; ++c) {
        const Vec dv = load(d + c * dy_channel + ox0);
        for (int kw = 0; kw < KW; ++kw) acc[kw][c] += dv * xv[kw];
      }
    }
  }
  for (int kw = 0; kw < KW; ++kw)
    for (int c = 0; c < CO; ++c) sums[kw * CO + c] = hsum(acc[kw][c]);
}

// Output channels per backward_filter_row call: its KW * CO accumulators, KW inputs and one dy
// vector must fit the vector registers (32 with AVX-512VL, 16 with AVX2).
template <int KW>
constexpr int row_channels() {
  constexpr int regs = kAccumulators * 2;
  return std::max(1, std::min(16, (regs - KW - 1) / KW));
}

// dw of one image by whole filter rows (KW taps at once), for filters 1, 3, 5 or 7 wide.
template <int KW>
void backward_filter_rows(const Plan& p, const float* xp, const float* dyp, bool accumulate,
                          float* dw) {
  const ConvGeometry& g = p.g;
  const int64_t k_size = g.gemm_k();
  constexpr int kBig = row_channels<KW>();
  float sums[KW * kBig];
  for (int kh = 0; kh < g.kh; ++kh)
    for (int ci = 0; ci < g.c_in; ++ci) {
      auto block = [&](int co, auto co_) {
        constexpr int kCO = decltype(co_)::value;
        backward_filter_row<KW, kCO>(p, xp, dyp, co, kh, ci, sums);
        for (int kw = 0; kw < KW; ++kw)
          for (int c = 0; c < kCO; ++c) {
            float& out = dw[(co + c) * k_size + (int64_t(kh) * KW + kw) * g.c_in + ci];
            out = accumulate ? out + sums[kw * kCO + c] : sums[kw * kCO + c];
          }
      };
      int co = 0;
      for (; co + kBig <= g.c_out; co += kBig) block(co, std::integral_constant<int, kBig>{});
      if (co < g.c_out) rest_block<1, kBig>(co, g.c_out - co, block);
    }
}

// dw of one image (overwritten when !accumulate, else added to), tap by tap.
void backward_filter_image(const Plan& p, const float* xp, const float* dyp, bool accumulate,
                           float* dw, float* sums) {
  switch (p.g.kw) {  // whole filter rows where the filter width is a template parameter
    case 1:
      return backward_filter_rows<1>(p, xp, dyp, accumulate, dw);
    case 3:
      return backward_filter_rows<3>(p, xp, dyp, accumulate, dw);
    case 5:
      return backward_filter_rows<5>(p, xp, dyp, accumulate, dw);
    case 7:
      return backward_filter_rows<7>(p, xp, dyp, accumulate, dw);
  }
  const ConvGeometry& g = p.g;
  const int64_t k_size = g.gemm_k();
  for (int kh = 0; kh < g.kh; ++kh)
    for (int kw = 0; kw < g.kw; ++kw)
      for (int ci = 0; ci < g.c_in; ++ci) {
        std::fill(sums, sums + g.c_out, 0.f);
        for (int ox0 = 0; ox0 < p.ow; ox0 += kMaxVecs * kLanes)
          with_vecs((p.ow - ox0 + kLanes - 1) / kLanes, [&](auto nv_) {
            constexpr int nv = decltype(nv_)::value;
            // 8 accumulators: each needs its own dy load, so bigger blocks save no loads
            // here, and their horizontal sums cost more (measured slower with 16).
            for_channel_blocks<nv, 8>(g.c_out, [&](int co, auto block_) {
              constexpr int block = decltype(block_)::value;
              backward_filter_taps<nv, block>(p, xp, dyp, co, kh, kw, ci, ox0, sums + co);
            });
          });
        float* out = dw + (int64_t(kh) * g.kw + kw) * g.c_in + ci;
        for (int co = 0; co < g.c_out; ++co)
          out[co * k_size] = accumulate ? out[co * k_size] + sums[co] : sums[co];
      }
}

}  // namespace

void conv2d_forward_direct(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                           float* y) {
  check_conv_geometry(g, "conv2d_forward_direct");
  Arena::Scope scope(ctx.arena());
  forward_planar(ctx, g, x, transpose_filter(ctx, g, w), y);
}

namespace {

// The forward pass with the filter already transposed to wt[kh][kw][ci][co].
void forward_planar(Context& ctx, const ConvGeometry& g, const float* x, const float* wt,
                    float* y) {
  Plan p = make_plan(g);
  const int threads = team_size(g);
  Arena::Scope scope(ctx.arena());
  int64_t* taps = ctx.arena().allocate_n<int64_t>(std::size_t(g.gemm_k()));
  for (int kh = 0, t = 0; kh < g.kh; ++kh)
    for (int kw = 0; kw < g.kw; ++kw)
      for (int ci = 0; ci < g.c_in; ++ci, ++t)
        taps[t] = p.row(ci, kh, kw & (g.stride - 1)) + (kw >> p.shift);
  p.taps = taps;
  const Scratch scratch = make_scratch(ctx, threads, p.in_size());
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = int64_t(p.oh) * p.ow * g.c_out;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int n = 0; n < g.n; ++n) {
    float* xp = scratch.at(omp_get_thread_num());
    to_planar(p, x + n * in_image, xp);
    forward_image(p, xp, wt, y + n * out_image);
  }
}

}  // namespace

void conv2d_backward_data_direct(Context& ctx, const ConvGeometry& g, const float* dy,
                                 const float* w, float* dx) {
  check_conv_geometry(g, "conv2d_backward_data_direct");
  if (g.stride == 1) return backward_data_flipped(ctx, g, dy, w, dx);
  const Plan p = make_plan(g);
  const Gather q = make_gather(p);
  const int threads = team_size(g);
  Arena::Scope scope(ctx.arena());
  const Scratch scratch = make_scratch(ctx, threads, q.dy_size(p));
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = int64_t(p.oh) * p.ow * g.c_out;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int n = 0; n < g.n; ++n) {
    float* dyg = scratch.at(omp_get_thread_num());
    dy_to_gather(p, q, dy + n * out_image, dyg);
    backward_data_image(p, q, dyg, w, dx + n * in_image);
  }
}

void conv2d_backward_filter_direct(Context& ctx, const ConvGeometry& g, const float* x,
                                   const float* dy, float* dw) {
  check_conv_geometry(g, "conv2d_backward_filter_direct");
  const Plan p = make_plan(g);
  const int threads = team_size(g);
  const int64_t wsize = g.c_out * g.gemm_k();
  Arena::Scope scope(ctx.arena());
  const Scratch scratch = make_scratch(ctx, threads, p.in_size() + p.dy_size() + g.c_out);
  // Thread t sums its images into its own buffer (thread 0 into dw), then the buffers are added
  // in thread order: reproducible for a given thread count.
  float* partials = ctx.arena().allocate_n<float>(std::size_t(std::max(threads - 1, 1) * wsize));
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = int64_t(p.oh) * p.ow * g.c_out;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    float* xp = scratch.at(t);
    float* dyp = xp + p.in_size();
    float* sums = dyp + p.dy_size();
    float* mine = t == 0 ? dw : partials + (t - 1) * wsize;
    // Static contiguous ranges of images, so thread t's images are the same every call.
    const int team = omp_get_num_threads();
    const int n0 = int(int64_t(g.n) * t / team), n1 = int(int64_t(g.n) * (t + 1) / team);
    if (n0 == n1) std::fill(mine, mine + wsize, 0.f);
    for (int n = n0; n < n1; ++n) {
      to_planar(p, x + n * in_image, xp);
      dy_to_planar(p, dy + n * out_image, dyp);
      backward_filter_image(p, xp, dyp, n > n0, mine, sums);
    }
#pragma omp barrier
    if (team > 1) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < wsize; ++i) {
        float sum = dw[i];
        for (int u = 1; u < team; ++u) sum += partials[(u - 1) * wsize + i];
        dw[i] = sum;
      }
    }
  }
}

}  // namespace evo::cpu
