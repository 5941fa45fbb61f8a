// CPU direct convolution vectorised over channels: the kernels for the small maps of evolved nets
// (7x7 down to 1x1) and for stride 4, where conv_direct.cpp's vectors of eight output columns run
// mostly empty. Not the wide-map path (conv_direct.cpp) nor the many-channel one (conv.cpp's
// im2col + SGEMM); conv2d_path() (conv.cpp) picks one per layer and pass.
//
// Why: the mid-search Fashion-MNIST nets go 28x28x7 -> 7x7x14 (stride 4) -> 4x4x14 -> 2x2x14 ->
// 1x1x21. A 7-pixel row fills 7 of conv_direct's 8 lanes only after a planar copy of the whole
// input, of which stride 4 reads 9 floats in 16; a 2x2 map fills 2. im2col + SGEMM copies every
// window (a 3x3 window of 7 channels is three memcpy calls of 84 bytes) and runs OpenBLAS tiles
// of 16 x 6 on 14 columns. Here a block of P output pixels x CV vectors of 8 output channels stays
// in registers: each filter tap broadcasts one input float per pixel and loads CV weight vectors,
// so P * CV FMAs cost P + CV loads (8 pixels x 2 vectors with AVX-512: 16 FMAs per 10 loads, near
// the two FMAs and two loads a core issues per cycle). The forward and backward-filter passes
// read x in place: output pixels are sorted into classes whose filter taps fall inside the image
// alike (the interior, each kind of border), and a block takes pixels of one class, from any rows
// and images, so a 2x2 map still fills a block. Backward data scatters into a zero-bordered dx of
// a few images and copies its inside out.
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
// Output pixels per group of images, at least: small maps are taken many images at a time, so the
// per-group work (a block's accumulators loaded and stored once per group in backward filter, the
// last partial block of a class) is spread over many pixels. 2x2 maps: 32 images per group.
constexpr int kGroupPixels = 128;

int vecs_for(int channels) {
  return (channels + kLanes - 1) / kLanes;
}

// A group of images, and backward data's zero-bordered dx of them. A padded image holds exactly
// the rows and columns the windows touch: from -pad to (out - 1) * stride - pad + k - 1 (for
// stride 4 on 28 rows: -1 to 25, rows 26 and 27 get no gradient).
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

// The filter taps that reach inside the image: rows [kh_lo, kh_hi) and columns [kw_lo, kw_hi).
// On maps of 2x2 and 1x1 most taps of a 3x3 filter read only padding; skipping them keeps a 1x1
// map from costing nine times its arithmetic.
struct TapRange {
  int kh_lo, kh_hi, kw_lo, kw_hi;
};

// Backward data's pixels of a group (counted image by image, row by row): where each one's window
// starts in the group's padded dx, and its taps inside the image. Filled once per group by
// counting, so the blocks do no divisions (three per pixel cost as much as a block's FMAs on the
// 7x7 maps).
struct Pixels {
  int64_t* window;
  TapRange* inside;
};

Pixels make_pixels(Context& ctx, const Layout& l, int threads) {
  const std::size_t n = std::size_t(threads) * l.group * l.pixels();
  return {ctx.arena().allocate_n<int64_t>(n), ctx.arena().allocate_n<TapRange>(n)};
}

// Thread t's table, filled for `count` images.
Pixels describe_pixels(const Layout& l, const Pixels& all, int t, int count) {
  const ConvGeometry& g = l.g;
  const int64_t first = int64_t(t) * l.group * l.pixels();
  const Pixels p{all.window + first, all.inside + first};
  int64_t q = 0;
  for (int n = 0; n < count; ++n)
    for (int oy = 0; oy < l.oh; ++oy) {
      const int y0 = oy * g.stride - g.pad_h();
      const int kh_lo = std::max(0, -y0), kh_hi = std::min(g.kh, g.h - y0);
      for (int ox = 0; ox < l.ow; ++ox, ++q) {
        const int x0 = ox * g.stride - g.pad_w();
        p.window[q] = n * l.image + (int64_t(oy) * l.wp + ox) * g.stride * g.c_in;
        p.inside[q] = {kh_lo, kh_hi, std::max(0, -x0), std::min(g.kw, g.w - x0)};
      }
    }
  return p;
}

// The taps inside the image for some pixel of [q0, q0 + count).
TapRange taps_inside(const Pixels& px, int64_t q0, int count) {
  TapRange r = px.inside[q0];
  for (int64_t q = q0 + 1; q < q0 + count; ++q) {
    const TapRange& u = px.inside[q];
    r.kh_lo = std::min(r.kh_lo, u.kh_lo);
    r.kh_hi = std::max(r.kh_hi, u.kh_hi);
    r.kw_lo = std::min(r.kw_lo, u.kw_lo);
    r.kw_hi = std::max(r.kw_hi, u.kw_hi);
  }
  return r;
}

// Calls f(std::integral_constant<int, V>{}) for V = min(v, Max): the kernels take their channel
// vectors and pixels (or taps) per block as template parameters so their accumulators are
// registers.
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

// ---- pixels in classes: the forward and backward-filter passes read x in place ---------------

// The output pixels of one image sorted into classes of equal in-image tap ranges (the interior,
// then each kind of border row and column), so that a block of pixels of one class reads x where
// it is (NHWC, no padded copy): every tap it reads is inside the image for all of its pixels.
// Padded copies of the 28x28x7 input cost as much as the stride-4 convolution's FMAs: reading in
// place took its forward pass from 0.12 to 0.09 ms and backward filter from 0.13 to 0.08 ms.
struct PixelClass {
  int begin, end;   // in the image's sorted pixels; in a group of n images the class's table
                    // entries are [begin * n, end * n)
  TapRange inside;  // the taps inside the image, the same for every pixel of the class
};

struct ImageOrder {
  int* pixel;          // [pixels]: oy * ow + ox, class by class
  int64_t* window;     // [pixels]: x offset of the window's (kh_lo, kw_lo) tap, sorted likewise
  PixelClass* classes;
  int count = 0;
};

ImageOrder order_pixels(Context& ctx, const Layout& l) {
  const ConvGeometry& g = l.g;
  const int pixels = int(l.pixels());
  ImageOrder o;
  o.pixel = ctx.arena().allocate_n<int>(std::size_t(pixels));
  o.window = ctx.arena().allocate_n<int64_t>(std::size_t(pixels));
  o.classes = ctx.arena().allocate_n<PixelClass>(std::size_t(pixels));
  // Rows (columns) with equal tap ranges get one class number each, in order of appearance.
  auto classify = [](int n, int s, int pad, int k, int size, int* cls, std::pair<int, int>* range) {
    int count = 0;
    for (int i = 0; i < n; ++i) {
      const int o0 = i * s - pad;
      const std::pair<int, int> r{std::max(0, -o0), std::min(k, size - o0)};
      int c = 0;
      while (c < count && range[c] != r) ++c;
      if (c == count) range[count++] = r;
      cls[i] = c;
    }
    return count;
  };
  int* row_cls = ctx.arena().allocate_n<int>(std::size_t(l.oh));
  int* col_cls = ctx.arena().allocate_n<int>(std::size_t(l.ow));
  auto* row_range = ctx.arena().allocate_n<std::pair<int, int>>(std::size_t(l.oh));
  auto* col_range = ctx.arena().allocate_n<std::pair<int, int>>(std::size_t(l.ow));
  const int rows = classify(l.oh, g.stride, g.pad_h(), g.kh, g.h, row_cls, row_range);
  const int cols = classify(l.ow, g.stride, g.pad_w(), g.kw, g.w, col_cls, col_range);
  int i = 0;
  for (int rc = 0; rc < rows; ++rc)
    for (int cc = 0; cc < cols; ++cc) {
      const TapRange r{row_range[rc].first, row_range[rc].second, col_range[cc].first,
                       col_range[cc].second};
      const int begin = i;
      for (int oy = 0; oy < l.oh; ++oy) {
        if (row_cls[oy] != rc) continue;
        for (int ox = 0; ox < l.ow; ++ox) {
          if (col_cls[ox] != cc) continue;
          o.pixel[i] = oy * l.ow + ox;
          o.window[i] = (int64_t(oy * g.stride - g.pad_h() + r.kh_lo) * g.w +
                         (ox * g.stride - g.pad_w() + r.kw_lo)) *
                        g.c_in;
          ++i;
        }
      }
      if (i > begin) o.classes[o.count++] = PixelClass{begin, i, r};
    }
  return o;
}

// A group's table: for `count` images, class by class, each pixel's window offset in x (from the
// group's first image) and its index among the group's output pixels.
void fill_group(const Layout& l, const ImageOrder& o, int count, int64_t* window, int64_t* out) {
  const int64_t in_image = int64_t(l.g.h) * l.g.w * l.g.c_in;
  int64_t e = 0;
  for (int c = 0; c < o.count; ++c) {
    const PixelClass& k = o.classes[c];
    for (int n = 0; n < count; ++n)
      for (int i = k.begin; i < k.end; ++i, ++e) {
        window[e] = n * in_image + o.window[i];
        out[e] = n * l.pixels() + o.pixel[i];
      }
  }
}

// ---- forward ---------------------------------------------------------------------------------

// P output pixels of one class (their windows and output indices at win[0..P), out[0..P)), channel
// vectors [v0, v0 + CV), into y: the class's taps in (kh, kw, ci) order, each broadcasting one
// float of every pixel's window against CV vectors of weights.
template <int P, int CV>
void forward_block(const ConvGeometry& g, const TapRange& r, const float* x, const int64_t* window,
                   const int64_t* out_index, const float* wf, int cvw, int v0, float* y) {
  const float* win[P];
  for (int p = 0; p < P; ++p) win[p] = x + window[p];
  Vec acc[P][CV] = {};
  const int row_taps = g.kw * g.c_in, taps = (r.kw_hi - r.kw_lo) * g.c_in;
  const int64_t x_row = int64_t(g.w) * g.c_in;
  for (int kh = r.kh_lo; kh < r.kh_hi; ++kh) {
    const int64_t row = (kh - r.kh_lo) * x_row;
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
    float* o = y + out_index[p] * cout + v0 * kLanes;
    for (int v = 0; v < CV; ++v) {
      const int lanes = std::min(kLanes, cout - (v0 + v) * kLanes);
      if (lanes == kLanes) {
        store(o + v * kLanes, acc[p][v]);
      } else {
        for (int i = 0; i < lanes; ++i) o[v * kLanes + i] = acc[p][v][i];
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
  const ImageOrder order = order_pixels(ctx, l);
  const int64_t table = l.group * l.pixels();
  int64_t* windows = ctx.arena().allocate_n<int64_t>(std::size_t(2 * threads * table));
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = l.pixels() * g.c_out;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int grp = 0; grp < groups; ++grp) {
    const int n0 = grp * l.group, count = std::min(l.group, g.n - n0);
    const int t = omp_get_thread_num();
    int64_t* window = windows + 2 * t * table;
    int64_t* out = window + table;
    fill_group(l, order, count, window, out);
    const float* xg = x + n0 * in_image;
    float* yg = y + n0 * out_image;
    for (int c = 0; c < order.count; ++c) {
      const PixelClass& k = order.classes[c];
      const int64_t first = int64_t(k.begin) * count, len = int64_t(k.end - k.begin) * count;
      for (int v0 = 0; v0 < cv; v0 += kMaxChannelVecs)
        with_count<kMaxChannelVecs>(cv - v0, [&](auto cv_) {
          constexpr int kCV = decltype(cv_)::value;
          for_pixel_blocks<pixels_per_block<kCV>()>(len, [&](int64_t q0, auto p_) {
            forward_block<decltype(p_)::value, kCV>(g, k.inside, xg, window + first + q0,
                                                    out + first + q0, wf, cvw, v0, yg);
          });
        });
    }
  }
}

// ---- backward data ---------------------------------------------------------------------------

// Pixels [q0, q0 + P) of dy scattered into the padded dx of their group: for each in-image tap,
// the P pixels' sums over output channels (CIV vectors of input channels each) are added to the
// window's floats, pixel after pixel. A vector may run past Cin into the next pixel's channels (or
// past the last image, into a tail the buffer keeps): the weights' lanes past Cin are zero, so it
// adds zeros there.
template <int P, int CIV>
void backward_data_block(const Layout& l, const Pixels& px, const float* dy, const float* wd,
                         int civw, int64_t q0, int v0, float* dxp) {
  const ConvGeometry& g = l.g;
  const TapRange r = taps_inside(px, q0, P);
  const int cout = g.c_out;
  float* win[P];
  for (int p = 0; p < P; ++p) win[p] = dxp + px.window[q0 + p] + v0 * kLanes;
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

// Taps [t0, t0 + T) of filter row kh (t counts (kw, ci) pairs from the class's kw_lo), channel
// vectors [v0, v0 + CV), summed over `count` pixels of one class into dwf: each pixel broadcasts
// T floats of its window (read in place) against CV vectors of its dy (dyp, in the class's order).
template <int T, int CV>
void filter_block(const ConvGeometry& g, const TapRange& r, const float* x, const int64_t* window,
                  const float* dyp, int cvw, int64_t count, int kh, int t0, int v0, float* dwf) {
  float* out = dwf + (int64_t(kh) * g.kw * g.c_in + r.kw_lo * g.c_in + t0) * cvw + v0 * kLanes;
  Vec acc[T][CV];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < CV; ++v) acc[t][v] = load(out + t * cvw + v * kLanes);
  const int64_t row = int64_t(kh - r.kh_lo) * g.w * g.c_in + t0;
  const float* d = dyp + v0 * kLanes;
  for (int64_t q = 0; q < count; ++q, d += cvw) {
    const float* xq = x + window[q] + row;
    Vec dv[CV];
    for (int v = 0; v < CV; ++v) dv[v] = load(d + v * kLanes);
    for (int t = 0; t < T; ++t) {
      const Vec b = splat(xq[t]);
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
  const Pixels pixels = make_pixels(ctx, l, threads);
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = l.pixels() * cout;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int grp = 0; grp < groups; ++grp) {
    const int n0 = grp * l.group, count = std::min(l.group, g.n - n0);
    const int t = omp_get_thread_num();
    float* dxp = scratch + t * per_thread;
    std::fill(dxp, dxp + l.image * count + civw, 0.f);
    const Pixels px = describe_pixels(l, pixels, t, count);
    const float* dyg = dy + n0 * out_image;
    for (int v0 = 0; v0 < civ; v0 += kMaxChannelVecs)
      with_count<kMaxChannelVecs>(civ - v0, [&](auto civ_) {
        constexpr int kCIV = decltype(civ_)::value;
        for_pixel_blocks<pixels_per_block<kCIV>()>(count * l.pixels(), [&](int64_t q0, auto p_) {
          backward_data_block<decltype(p_)::value, kCIV>(l, px, dyg, wd, civw, q0, v0, dxp);
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
  const int64_t k_size = g.gemm_k(), table = l.group * l.pixels();
  const int groups = (g.n + l.group - 1) / l.group;
  const int threads = std::max(1, std::min(omp_get_max_threads(), groups));
  Arena::Scope scope(ctx.arena());
  const ImageOrder order = order_pixels(ctx, l);
  // Per thread: its sums dwf[k][cvw] and one group's dy rows (whole vectors, in class order).
  const int64_t sums = k_size * cvw, dys = table * cvw;
  const int64_t per_thread = (sums + dys + 63) / 64 * 64;
  float* scratch = ctx.arena().allocate_n<float>(std::size_t(threads * per_thread));
  int64_t* windows = ctx.arena().allocate_n<int64_t>(std::size_t(2 * threads * table));
  const int64_t in_image = int64_t(g.h) * g.w * g.c_in, out_image = l.pixels() * cout;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int th = omp_get_thread_num(), team = omp_get_num_threads();
    float* dwf = scratch + th * per_thread;
    float* dyp = dwf + sums;
    int64_t* window = windows + 2 * th * table;
    int64_t* out = window + table;
    std::fill(dwf, dwf + sums, 0.f);
    // Static contiguous ranges of groups, so thread t's sums are the same every call.
    const int g0 = int(int64_t(groups) * th / team), g1 = int(int64_t(groups) * (th + 1) / team);
    for (int grp = g0; grp < g1; ++grp) {
      const int n0 = grp * l.group, count = std::min(l.group, g.n - n0);
      fill_group(l, order, count, window, out);
      const float* xg = x + n0 * in_image;
      const float* d = dy + n0 * out_image;
      for (int64_t q = 0; q < count * l.pixels(); ++q) {
        float* row = dyp + q * cvw;
        std::copy(d + out[q] * cout, d + (out[q] + 1) * cout, row);
        std::fill(row + cout, row + cvw, 0.f);
      }
      for (int c = 0; c < order.count; ++c) {
        const PixelClass& k = order.classes[c];
        const TapRange& r = k.inside;
        const int64_t first = int64_t(k.begin) * count, len = int64_t(k.end - k.begin) * count;
        const int taps = (r.kw_hi - r.kw_lo) * g.c_in;
        for (int kh = r.kh_lo; kh < r.kh_hi; ++kh)
          for (int v0 = 0; v0 < cv; v0 += kMaxChannelVecs)
            with_count<kMaxChannelVecs>(cv - v0, [&](auto cv_) {
              constexpr int kCV = decltype(cv_)::value;
              constexpr int kT = pixels_per_block<kCV>();
              const int64_t* wq = window + first;
              const float* dq = dyp + first * cvw;
              int t0 = 0;
              for (; t0 + kT <= taps; t0 += kT)
                filter_block<kT, kCV>(g, r, xg, wq, dq, cvw, len, kh, t0, v0, dwf);
              if (t0 < taps)
                with_count<kT>(taps - t0, [&](auto t_) {
                  filter_block<decltype(t_)::value, kCV>(g, r, xg, wq, dq, cvw, len, kh, t0, v0,
                                                         dwf);
                });
            });
      }
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
