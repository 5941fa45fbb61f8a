// CPU direct convolution vectorised over channels: the kernels for the small maps of evolved nets
// (7x7 down to 1x1) and for stride 4, where conv_direct.cpp's vectors of eight output columns run
// mostly empty. Not the wide-map path (conv_direct.cpp) nor the many-channel one (conv.cpp's
// im2col + SGEMM); conv2d_path() (conv_direct.cpp) picks one per layer and pass.
//
// Why: the mid-search Fashion-MNIST nets go 28x28x7 -> 7x7x14 (stride 4) -> 4x4x14 -> 2x2x14 ->
// 1x1x21. A 7-pixel row fills 7 of conv_direct's 8 lanes only after a planar copy of the whole
// input, of which stride 4 reads 9 floats in 16; a 2x2 map fills 2. im2col + SGEMM copies every
// window (a 3x3 window of 7 channels is three memcpy calls of 84 bytes) and runs OpenBLAS tiles
// of 16 x 6 on 14 columns. Here a block of P output pixels x CV vectors of 8 output channels stays
// in registers: each filter tap broadcasts one input float per pixel and loads CV weight vectors,
// so P * CV FMAs cost P + CV loads (8 pixels x 2 vectors with AVX-512: 16 FMAs per 10 loads, near
// the two FMAs and two loads a core issues per cycle). The input is read in place from a
// zero-bordered copy of a few images (one memcpy per row); the pixels of one block may lie in
// different rows and images, so a 2x2 map still fills a block.
//
// Layouts: x and y NHWC, w[Cout][KH][KW][Cin] as everywhere (ops.h). Each pass rearranges the
// filter once per call into whole vectors of channels, the lanes past the channel count zero:
//   forward           wf[kh][kw][ci][CV * 8]  (the output channels of one tap, contiguous)
//   backward data     wd[kh][kw][co][CIV * 8] (the input channels of one tap and output channel)
//   backward filter   sums dwf[kh][kw][ci][CV * 8], transposed into dw at the end.
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

// At most this many pixels per block: their window pointers must stay in the 16 general
// registers beside the loop's own (16 spilled them and ran slower).
constexpr int kMaxPixels = 8;
// Channel vectors per block: more are done in blocks of this many.
constexpr int kMaxChannelVecs = 4;
// Output pixels per group of padded images, at least: small maps are padded many images at a time,
// so the per-group work (a block's accumulators loaded and stored once per group in backward
// filter, the last partial block) is spread over many pixels. 2x2 maps: 32 images per group.
constexpr int kGroupPixels = 128;

int vecs_for(int channels) {
  return (channels + kLanes - 1) / kLanes;
}

// The zero-bordered copy of a group of images, and where each output pixel's window starts in
// it. A padded image holds exactly the rows and columns the windows read: from -pad to
// (out - 1) * stride - pad + k - 1 (for stride 4 on 28 rows: -1 to 25, rows 26 and 27 are never
// read).
struct Layout {
  ConvGeometry g;
  int oh, ow;
  int hp, wp;     // rows and columns of a padded image
  int64_t image;  // floats per padded image
  int group;      // images padded together: at least kGroupPixels output pixels, or the batch
  int64_t pixels() const { return int64_t(oh) * ow; }
  // The padded input rows/columns that hold image rows/columns 0, 1, ... (the rest are zero).
  int rows_in() const { return std::min(hp - g.pad_h(), g.h); }
  int cols_in() const { return std::min(wp - g.pad_w(), g.w); }
  // Offset of the window of output pixel q of a group (pixels counted image by image, row by
  // row) in the group's padded buffer.
  int64_t window(int64_t q) const {
    const int64_t n = q / pixels(), r = q % pixels();
    const int64_t oy = r / ow, ox = r % ow;
    return n * image + (oy * wp + ox) * g.stride * g.c_in;
  }
};

Layout make_layout(const ConvGeometry& g) {
  Layout l;
  l.g = g;
  l.oh = g.out_h();
  l.ow = g.out_w();
  l.hp = (l.oh - 1) * g.stride + g.kh;
  l.wp = (l.ow - 1) * g.stride + g.kw;
  l.image = int64_t(l.hp) * l.wp * g.c_in;
  l.group = int(std::min<int64_t>(g.n, (kGroupPixels + l.pixels() - 1) / l.pixels()));
  return l;
}

// Images [0, count) of x (NHWC) into their zero-bordered copies at xp, row by row: the border
// columns zeroed, the image's columns copied. Rows no window reads (row r with r % stride >= KH:
// a quarter of the rows at stride 4 with 3x3 filters) are left as they are.
void pad_images(const Layout& l, const float* x, int count, float* xp) {
  const ConvGeometry& g = l.g;
  const int64_t row = int64_t(l.wp) * g.c_in, left = int64_t(g.pad_w()) * g.c_in;
  const int64_t used = int64_t(l.cols_in()) * g.c_in;
  for (int n = 0; n < count; ++n)
    for (int r = 0; r < l.hp; ++r) {
      if (r % g.stride >= g.kh) continue;
      float* out = xp + n * l.image + r * row;
      const int iy = r - g.pad_h();
      if (iy < 0 || iy >= l.rows_in()) {
        std::fill(out, out + row, 0.f);
        continue;
      }
      std::fill(out, out + left, 0.f);
      std::memcpy(out + left, x + (int64_t(n) * g.h + iy) * g.w * g.c_in,
                  sizeof(float) * std::size_t(used));
      std::fill(out + left + used, out + row, 0.f);
    }
}

// The filter taps that reach inside the image for some pixel of [q0, q0 + P): rows
// [kh_lo, kh_hi) and columns [kw_lo, kw_hi). On maps of 2x2 and 1x1 most taps of a 3x3 filter
// read only padding; skipping them keeps a 1x1 map from costing nine times its arithmetic.
struct TapRange {
  int kh_lo, kh_hi, kw_lo, kw_hi;
};

TapRange taps_inside(const Layout& l, int64_t q0, int count) {
  const ConvGeometry& g = l.g;
  TapRange r{g.kh, 0, g.kw, 0};
  for (int64_t q = q0; q < q0 + count; ++q) {
    const int64_t p = q % l.pixels();
    const int y0 = int(p / l.ow) * g.stride - g.pad_h(), x0 = int(p % l.ow) * g.stride - g.pad_w();
    r.kh_lo = std::min(r.kh_lo, std::max(0, -y0));
    r.kh_hi = std::max(r.kh_hi, std::min(g.kh, g.h - y0));
    r.kw_lo = std::min(r.kw_lo, std::max(0, -x0));
    r.kw_hi = std::max(r.kw_hi, std::min(g.kw, g.w - x0));
  }
  return r;
}

// Calls f(std::integral_constant<int, V>{}) for V = min(v, kMaxChannelVecs), and
// f(..., std::integral_constant<int, P>{}) for P = the pixels per block that leaves: the kernels
// take both as template parameters so their accumulators are registers.
template <int Max, typename F>
void with_count(int v, F&& f) {
  if constexpr (Max > 1) {
    if (v < Max) return with_count<Max - 1>(v, f);
  }
  f(std::integral_constant<int, Max>{});
}

template <int CV>
constexpr int pixels_per_block() {
  return std::max(1, std::min(kMaxPixels, kAccumulators / CV));
}

// Runs f(q0, std::integral_constant<int, P>{}) over [0, count) in blocks of Big pixels, the last
// block the rest.
template <int Big, typename F>
void for_pixel_blocks(int64_t count, F&& f) {
  int64_t q = 0;
  for (; q + Big <= count; q += Big) f(q, std::integral_constant<int, Big>{});
  if (q < count) with_count<Big>(int(count - q), [&](auto p) { f(q, p); });
}

// ---- forward ---------------------------------------------------------------------------------

// Output pixels [q0, q0 + P) of a group, channel vectors [v0, v0 + CV), into y (NHWC rows of the
// group's pixels): the in-image taps in (kh, kw, ci) order, each broadcasting one float of every
// pixel's window against CV vectors of weights.
template <int P, int CV>
void forward_block(const Layout& l, const float* xp, const float* wf, int cvw, int64_t q0, int v0,
                   float* y) {
  const ConvGeometry& g = l.g;
  const TapRange r = taps_inside(l, q0, P);
  const float* win[P];
  for (int p = 0; p < P; ++p) win[p] = xp + l.window(q0 + p) + r.kw_lo * g.c_in;
  Vec acc[P][CV] = {};
  const int row_taps = g.kw * g.c_in, taps = (r.kw_hi - r.kw_lo) * g.c_in;
  for (int kh = r.kh_lo; kh < r.kh_hi; ++kh) {
    const int64_t row = int64_t(kh) * l.wp * g.c_in;
    const float* wk = wf + (int64_t(kh) * row_taps + r.kw_lo * g.c_in) * cvw + v0 * kLanes;
    for (int t = 0; t < taps; ++t, wk += cvw) {
      Vec wv[CV];
      for (int v = 0; v < CV; ++v) wv[v] = load(wk + v * kLanes);
      for (int p = 0; p < P; ++p) {
        const Vec b = splat(win[p][row + t]);
        for (int v = 0; v < CV; ++v) acc[p][v] += b * wv[v];
      }
    }
  }
  // The last vector of a channel count that is not a multiple of 8 is written lane by lane.
  const int cout = g.c_out;
  for (int p = 0; p < P; ++p) {
    float* out = y + (q0 + p) * cout + v0 * kLanes;
    for (int v = 0; v < CV; ++v) {
      const int lanes = std::min(kLanes, cout - (v0 + v) * kLanes);
      if (lanes == kLanes) {
        store(out + v * kLanes, acc[p][v]);
      } else {
        for (int i = 0; i < lanes; ++i) out[v * kLanes + i] = acc[p][v][i];
      }
    }
  }
}

// y from x with the filter already in wf[kh][kw][ci][cvw] (cvw = whole vectors of g.c_out).
void forward_arranged(Context& ctx, const ConvGeometry& g, const float* x, const float* wf,
                      float* y) {
  const Layout l = make_layout(g);
  const int cv = vecs_for(g.c_out), cvw = cv * kLanes;
  const int groups = (g.n + l.group - 1) / l.group;
  const int threads = std::max(1, std::min(omp_get_max_threads(), groups));
  Arena::Scope scope(ctx.arena());
  const int64_t per_thread = (l.image * l.group + 63) / 64 * 64;
  float* scratch = ctx.arena().allocate_n<float>(std::size_t(threads * per_thread));
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = l.pixels() * g.c_out;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int grp = 0; grp < groups; ++grp) {
    const int n0 = grp * l.group, count = std::min(l.group, g.n - n0);
    float* xp = scratch + omp_get_thread_num() * per_thread;
    pad_images(l, x + n0 * in_image, count, xp);
    float* yg = y + n0 * out_image;
    for (int v0 = 0; v0 < cv; v0 += kMaxChannelVecs)
      with_count<kMaxChannelVecs>(cv - v0, [&](auto cv_) {
        constexpr int kCV = decltype(cv_)::value;
        for_pixel_blocks<pixels_per_block<kCV>()>(count * l.pixels(), [&](int64_t q0, auto p_) {
          forward_block<decltype(p_)::value, kCV>(l, xp, wf, cvw, q0, v0, yg);
        });
      });
  }
}

// ---- backward data ---------------------------------------------------------------------------

// Pixels [q0, q0 + P) of dy scattered into the padded dx of their group: for each in-image tap,
// the P pixels' sums over output channels (CIV vectors of input channels each) are added to the
// window's floats, pixel after pixel. A vector may run past Cin into the next pixel's channels (or
// past the last image, into a tail the buffer keeps): the weights' lanes past Cin are zero, so it
// adds zeros there.
template <int P, int CIV>
void backward_data_block(const Layout& l, const float* dy, const float* wd, int civw, int64_t q0,
                         int v0, float* dxp) {
  const ConvGeometry& g = l.g;
  const TapRange r = taps_inside(l, q0, P);
  const int cout = g.c_out;
  float* win[P];
  for (int p = 0; p < P; ++p) win[p] = dxp + l.window(q0 + p) + v0 * kLanes;
  const float* d = dy + q0 * cout;
  for (int kh = r.kh_lo; kh < r.kh_hi; ++kh)
    for (int kw = r.kw_lo; kw < r.kw_hi; ++kw) {
      Vec acc[P][CIV] = {};
      const float* wk = wd + (int64_t(kh) * g.kw + kw) * cout * civw + v0 * kLanes;
      for (int co = 0; co < cout; ++co, wk += civw) {
        Vec wv[CIV];
        for (int v = 0; v < CIV; ++v) wv[v] = load(wk + v * kLanes);
        for (int p = 0; p < P; ++p) {
          const Vec b = splat(d[p * cout + co]);
          for (int v = 0; v < CIV; ++v) acc[p][v] += b * wv[v];
        }
      }
      const int64_t tap = (int64_t(kh) * l.wp + kw) * g.c_in;
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < CIV; ++v) {
          float* t = win[p] + tap + v * kLanes;
          store(t, load(t) + acc[p][v]);
        }
    }
}

// The image part of padded images [0, count) into dx (NHWC); what no window reads gets zero.
void unpad_images(const Layout& l, const float* dxp, int count, float* dx) {
  const ConvGeometry& g = l.g;
  const int64_t row = int64_t(g.w) * g.c_in, used = int64_t(l.cols_in()) * g.c_in;
  for (int n = 0; n < count; ++n)
    for (int iy = 0; iy < g.h; ++iy) {
      float* out = dx + (int64_t(n) * g.h + iy) * row;
      int64_t done = 0;
      if (iy < l.rows_in()) {
        std::memcpy(out, dxp + n * l.image + (int64_t(iy + g.pad_h()) * l.wp + g.pad_w()) * g.c_in,
                    sizeof(float) * std::size_t(used));
        done = used;
      }
      std::fill(out + done, out + row, 0.f);
    }
}

// ---- backward filter -------------------------------------------------------------------------

// Taps [t0, t0 + T) of filter row kh (t counts (kw, ci) pairs), channel vectors [v0, v0 + CV),
// summed over a group's `count` pixels into dwf: each pixel broadcasts T floats of its window
// against CV vectors of its dy.
template <int T, int CV>
void filter_block(const Layout& l, const float* xp, const int64_t* windows, const float* dyp,
                  int cvw, int64_t count, int kh, int t0, int v0, float* dwf) {
  const ConvGeometry& g = l.g;
  float* out = dwf + (int64_t(kh) * g.kw * g.c_in + t0) * cvw + v0 * kLanes;
  Vec acc[T][CV];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < CV; ++v) acc[t][v] = load(out + t * cvw + v * kLanes);
  const int64_t row = int64_t(kh) * l.wp * g.c_in + t0;
  const float* d = dyp + v0 * kLanes;
  for (int64_t q = 0; q < count; ++q, d += cvw) {
    const float* x = xp + windows[q] + row;
    Vec dv[CV];
    for (int v = 0; v < CV; ++v) dv[v] = load(d + v * kLanes);
    for (int t = 0; t < T; ++t) {
      const Vec b = splat(x[t]);
      for (int v = 0; v < CV; ++v) acc[t][v] += b * dv[v];
    }
  }
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < CV; ++v) store(out + t * cvw + v * kLanes, acc[t][v]);
}

// The output-channel vectors a thread's part adds up, a whole number of vectors per tap.
float* arrange_filter_forward(Context& ctx, const ConvGeometry& g, const float* w, int cvw) {
  const int64_t k_size = g.gemm_k();
  float* wf = ctx.arena().allocate_n<float>(std::size_t(k_size * cvw));
  std::fill(wf, wf + k_size * cvw, 0.f);
  for (int co = 0; co < g.c_out; ++co)
    for (int64_t k = 0; k < k_size; ++k) wf[k * cvw + co] = w[co * k_size + k];
  return wf;
}

}  // namespace

void conv2d_forward_channels(Context& ctx, const ConvGeometry& g, const float* x, const float* w,
                             float* y) {
  check_conv_geometry(g, "conv2d_forward_channels");
  Arena::Scope scope(ctx.arena());
  forward_arranged(ctx, g, x, arrange_filter_forward(ctx, g, w, vecs_for(g.c_out) * kLanes), y);
}

void conv2d_backward_data_channels(Context& ctx, const ConvGeometry& g, const float* dy,
                                   const float* w, float* dx) {
  check_conv_geometry(g, "conv2d_backward_data_channels");
  const Layout l = make_layout(g);
  const int civ = vecs_for(g.c_in), civw = civ * kLanes, cout = g.c_out;
  Arena::Scope scope(ctx.arena());
  // wd[kh][kw][co][civw] = w[co][kh][kw][ci]
  const int64_t taps = int64_t(g.kh) * g.kw;
  float* wd = ctx.arena().allocate_n<float>(std::size_t(taps * cout * civw));
  std::fill(wd, wd + taps * cout * civw, 0.f);
  for (int co = 0; co < cout; ++co)
    for (int64_t t = 0; t < taps; ++t)
      for (int ci = 0; ci < g.c_in; ++ci)
        wd[(t * cout + co) * civw + ci] = w[(co * taps + t) * g.c_in + ci];
  const int groups = (g.n + l.group - 1) / l.group;
  const int threads = std::max(1, std::min(omp_get_max_threads(), groups));
  // Each thread's padded dx, plus a tail for the vectors that run past the last image.
  const int64_t per_thread = (l.image * l.group + civw + 63) / 64 * 64;
  float* scratch = ctx.arena().allocate_n<float>(std::size_t(threads * per_thread));
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = l.pixels() * cout;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int grp = 0; grp < groups; ++grp) {
    const int n0 = grp * l.group, count = std::min(l.group, g.n - n0);
    float* dxp = scratch + omp_get_thread_num() * per_thread;
    std::fill(dxp, dxp + l.image * count + civw, 0.f);
    const float* dyg = dy + n0 * out_image;
    for (int v0 = 0; v0 < civ; v0 += kMaxChannelVecs)
      with_count<kMaxChannelVecs>(civ - v0, [&](auto civ_) {
        constexpr int kCIV = decltype(civ_)::value;
        for_pixel_blocks<pixels_per_block<kCIV>()>(count * l.pixels(), [&](int64_t q0, auto p_) {
          backward_data_block<decltype(p_)::value, kCIV>(l, dyg, wd, civw, q0, v0, dxp);
        });
      });
    unpad_images(l, dxp, count, dx + n0 * in_image);
  }
}

void conv2d_backward_filter_channels(Context& ctx, const ConvGeometry& g, const float* x,
                                     const float* dy, float* dw) {
  check_conv_geometry(g, "conv2d_backward_filter_channels");
  const Layout l = make_layout(g);
  const int cv = vecs_for(g.c_out), cvw = cv * kLanes, cout = g.c_out;
  const int64_t k_size = g.gemm_k(), group_pixels = l.group * l.pixels();
  const int groups = (g.n + l.group - 1) / l.group;
  const int threads = std::max(1, std::min(omp_get_max_threads(), groups));
  Arena::Scope scope(ctx.arena());
  // Per thread: its sums dwf[k][cvw], the padded images and dy rows of one group, the windows.
  const int64_t sums = k_size * cvw, images = l.image * l.group, dys = group_pixels * cvw;
  const int64_t per_thread = (sums + images + dys + 63) / 64 * 64;
  float* scratch = ctx.arena().allocate_n<float>(std::size_t(threads * per_thread));
  int64_t* windows = ctx.arena().allocate_n<int64_t>(std::size_t(threads * group_pixels));
  // Taps no pixel of any group reads inside the image (a 1x1 map's outer ring) add nothing.
  const TapRange r = taps_inside(l, 0, l.pixels());
  const int t_lo = r.kw_lo * g.c_in, t_hi = r.kw_hi * g.c_in;
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = l.pixels() * cout;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int th = omp_get_thread_num(), team = omp_get_num_threads();
    float* dwf = scratch + th * per_thread;
    float* xp = dwf + sums;
    float* dyp = xp + images;
    int64_t* wins = windows + th * group_pixels;
    std::fill(dwf, dwf + sums, 0.f);
    // Static contiguous ranges of groups, so thread t's sums are the same every call.
    const int g0 = int(int64_t(groups) * th / team), g1 = int(int64_t(groups) * (th + 1) / team);
    for (int grp = g0; grp < g1; ++grp) {
      const int n0 = grp * l.group, count = std::min(l.group, g.n - n0);
      const int64_t pixels = count * l.pixels();
      pad_images(l, x + n0 * in_image, count, xp);
      const float* d = dy + n0 * out_image;
      for (int64_t q = 0; q < pixels; ++q) {
        wins[q] = l.window(q);
        float* row = dyp + q * cvw;
        std::copy(d + q * cout, d + (q + 1) * cout, row);
        std::fill(row + cout, row + cvw, 0.f);
      }
      for (int kh = r.kh_lo; kh < r.kh_hi; ++kh)
        for (int v0 = 0; v0 < cv; v0 += kMaxChannelVecs)
          with_count<kMaxChannelVecs>(cv - v0, [&](auto cv_) {
            constexpr int kCV = decltype(cv_)::value;
            constexpr int kT = pixels_per_block<kCV>();
            int t0 = t_lo;
            for (; t0 + kT <= t_hi; t0 += kT)
              filter_block<kT, kCV>(l, xp, wins, dyp, cvw, pixels, kh, t0, v0, dwf);
            if (t0 < t_hi)
              with_count<kT>(t_hi - t0, [&](auto t_) {
                filter_block<decltype(t_)::value, kCV>(l, xp, wins, dyp, cvw, pixels, kh, t0, v0,
                                                       dwf);
              });
          });
    }
#pragma omp barrier
    // dw[co][k] = the threads' sums in thread order (reproducible for a given thread count).
#pragma omp for schedule(static)
    for (int64_t k = 0; k < k_size; ++k)
      for (int co = 0; co < cout; ++co) {
        float s = scratch[k * cvw + co];
        for (int u = 1; u < team; ++u) s += scratch[u * per_thread + k * cvw + co];
        dw[co * k_size + k] = s;
      }
  }
}

}  // namespace evo::cpu
