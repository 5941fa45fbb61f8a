// Double-precision naive loops of every op in ops.h: what the ops must compute, for the tests of
// every backend (CPU, emulated CUDA, CUDA). Not fast and not production code; header-only.
//
// Each function takes inputs of any arithmetic type T (float data from a test, or double when a
// finite-difference check perturbs them) and returns its outputs as std::vector<double>, written
// from the definitions rather than from the kernels: backward data scatters where the kernels
// gather, resize backward scatters where the kernel gathers, and so on.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "evo/ops.h"

namespace evo::ref {

// ---- convolution -------------------------------------------------------------------------

// Calls f(n, oy, ox, kh, kw, iy, ix) for every (output pixel, filter tap) that reads an input
// pixel inside the image: the one definition of 'same' padding and stride all three share.
template <typename F>
void for_each_tap(const ConvGeometry& g, F f) {
  for (int n = 0; n < g.n; ++n)
    for (int oy = 0; oy < g.out_h(); ++oy)
      for (int ox = 0; ox < g.out_w(); ++ox)
        for (int kh = 0; kh < g.kh; ++kh)
          for (int kw = 0; kw < g.kw; ++kw) {
            const int iy = oy * g.stride - g.kh / 2 + kh, ix = ox * g.stride - g.kw / 2 + kw;
            if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) f(n, oy, ox, kh, kw, iy, ix);
          }
}

inline int64_t x_at(const ConvGeometry& g, int n, int iy, int ix) {
  return ((int64_t(n) * g.h + iy) * g.w + ix) * g.c_in;
}
inline int64_t y_at(const ConvGeometry& g, int n, int oy, int ox) {
  return ((int64_t(n) * g.out_h() + oy) * g.out_w() + ox) * g.c_out;
}
inline int64_t w_at(const ConvGeometry& g, int co, int kh, int kw) {
  return ((int64_t(co) * g.kh + kh) * g.kw + kw) * g.c_in;
}

// y[N, OH, OW, Cout] = sum over taps and input channels of x * w
template <typename T>
std::vector<double> conv2d_forward(const ConvGeometry& g, const T* x, const T* w) {
  std::vector<double> y(g.gemm_m() * g.c_out, 0.0);
  for_each_tap(g, [&](int n, int oy, int ox, int kh, int kw, int iy, int ix) {
    for (int co = 0; co < g.c_out; ++co)
      for (int ci = 0; ci < g.c_in; ++ci)
        y[y_at(g, n, oy, ox) + co] +=
            double(x[x_at(g, n, iy, ix) + ci]) * double(w[w_at(g, co, kh, kw) + ci]);
  });
  return y;
}

// dx[N, H, W, Cin]: every tap sends dy * w back to the input pixel it read.
template <typename T>
std::vector<double> conv2d_backward_data(const ConvGeometry& g, const T* dy, const T* w) {
  std::vector<double> dx(int64_t(g.n) * g.h * g.w * g.c_in, 0.0);
  for_each_tap(g, [&](int n, int oy, int ox, int kh, int kw, int iy, int ix) {
    for (int co = 0; co < g.c_out; ++co)
      for (int ci = 0; ci < g.c_in; ++ci)
        dx[x_at(g, n, iy, ix) + ci] +=
            double(dy[y_at(g, n, oy, ox) + co]) * double(w[w_at(g, co, kh, kw) + ci]);
  });
  return dx;
}

// dw[Cout, KH, KW, Cin]
template <typename T>
std::vector<double> conv2d_backward_filter(const ConvGeometry& g, const T* x, const T* dy) {
  std::vector<double> dw(int64_t(g.c_out) * g.kh * g.kw * g.c_in, 0.0);
  for_each_tap(g, [&](int n, int oy, int ox, int kh, int kw, int iy, int ix) {
    for (int co = 0; co < g.c_out; ++co)
      for (int ci = 0; ci < g.c_in; ++ci)
        dw[w_at(g, co, kh, kw) + ci] +=
            double(dy[y_at(g, n, oy, ox) + co]) * double(x[x_at(g, n, iy, ix) + ci]);
  });
  return dw;
}

// ---- batch norm --------------------------------------------------------------------------

struct BatchNormTrain {
  std::vector<double> y, mean, invstd, running_mean, running_var;
};

// Batch statistics over the m rows of x[m, c]; the running statistics are updated from the
// values passed in (unbiased variance, momentum kBatchNormMomentum).
template <typename T>
BatchNormTrain batchnorm_forward_train(int64_t m, int c, const T* x, const T* gamma, const T* beta,
                                       bool relu, const float* running_mean,
                                       const float* running_var) {
  BatchNormTrain out;
  out.y.resize(m * c);
  const double momentum = kBatchNormMomentum, eps = kBatchNormEps;
  for (int ch = 0; ch < c; ++ch) {
    double mean = 0, var = 0;
    for (int64_t r = 0; r < m; ++r) mean += double(x[r * c + ch]);
    mean /= double(m);
    for (int64_t r = 0; r < m; ++r)
      var += (double(x[r * c + ch]) - mean) * (double(x[r * c + ch]) - mean);
    var /= double(m);
    const double invstd = 1.0 / std::sqrt(var + eps);
    for (int64_t r = 0; r < m; ++r) {
      const double v =
          double(gamma[ch]) * (double(x[r * c + ch]) - mean) * invstd + double(beta[ch]);
      out.y[r * c + ch] = relu ? std::max(v, 0.0) : v;
    }
    out.mean.push_back(mean);
    out.invstd.push_back(invstd);
    const double unbiased = m > 1 ? var * double(m) / double(m - 1) : var;
    out.running_mean.push_back(momentum * running_mean[ch] + (1 - momentum) * mean);
    out.running_var.push_back(momentum * running_var[ch] + (1 - momentum) * unbiased);
  }
  return out;
}

template <typename T>
std::vector<double> batchnorm_forward_infer(int64_t m, int c, const T* x, const T* gamma,
                                            const T* beta, const T* running_mean,
                                            const T* running_var, bool relu) {
  std::vector<double> y(m * c);
  for (int64_t r = 0; r < m; ++r)
    for (int ch = 0; ch < c; ++ch) {
      const double v = double(gamma[ch]) * (double(x[r * c + ch]) - double(running_mean[ch])) /
                           std::sqrt(double(running_var[ch]) + double(kBatchNormEps)) +
                       double(beta[ch]);
      y[r * c + ch] = relu ? std::max(v, 0.0) : v;
    }
  return y;
}

struct BatchNormGrads {
  std::vector<double> dx, dgamma, dbeta;
};

// The batch statistics are recomputed from x in double; `y` (the forward output, as ops.h passes
// it) only supplies the ReLU mask, so a test can hand in the very y the backend produced.
template <typename T, typename U>
BatchNormGrads batchnorm_backward(int64_t m, int c, const T* x, const U* y, const T* dy,
                                  const T* gamma, bool relu) {
  BatchNormGrads out{std::vector<double>(m * c), std::vector<double>(c), std::vector<double>(c)};
  for (int ch = 0; ch < c; ++ch) {
    double mean = 0, var = 0;
    for (int64_t r = 0; r < m; ++r) mean += double(x[r * c + ch]);
    mean /= double(m);
    for (int64_t r = 0; r < m; ++r)
      var += (double(x[r * c + ch]) - mean) * (double(x[r * c + ch]) - mean);
    var /= double(m);
    const double invstd = 1.0 / std::sqrt(var + double(kBatchNormEps));
    auto g = [&](int64_t r) {
      return (!relu || double(y[r * c + ch]) > 0) ? double(dy[r * c + ch]) : 0.0;
    };
    double sum_g = 0, sum_gx = 0;
    for (int64_t r = 0; r < m; ++r) {
      sum_g += g(r);
      sum_gx += g(r) * (double(x[r * c + ch]) - mean) * invstd;
    }
    out.dbeta[ch] = sum_g;
    out.dgamma[ch] = sum_gx;
    for (int64_t r = 0; r < m; ++r) {
      const double xhat = (double(x[r * c + ch]) - mean) * invstd;
      out.dx[r * c + ch] =
          double(gamma[ch]) * invstd * (g(r) - sum_g / double(m) - xhat * sum_gx / double(m));
    }
  }
  return out;
}

// ---- element-wise, resizing, pooling -----------------------------------------------------

template <typename T>
std::vector<double> relu_forward(int64_t n, const T* x) {
  std::vector<double> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = std::max(double(x[i]), 0.0);
  return y;
}

template <typename T>
std::vector<double> relu_backward(int64_t n, const T* y, const T* dy) {
  std::vector<double> dx(n);
  for (int64_t i = 0; i < n; ++i) dx[i] = double(y[i]) > 0 ? double(dy[i]) : 0.0;
  return dx;
}

template <typename T>
std::vector<double> add_n(int64_t n, const std::vector<const T*>& inputs) {
  std::vector<double> y(n, 0.0);
  for (const T* in : inputs)
    for (int64_t i = 0; i < n; ++i) y[i] += double(in[i]);
  return y;
}

template <typename T>
std::vector<double> resize_nearest_forward(int n, int h, int w, int c, int oh, int ow, const T* x) {
  std::vector<double> y(int64_t(n) * oh * ow * c);
  for (int b = 0; b < n; ++b)
    for (int i = 0; i < oh; ++i)
      for (int j = 0; j < ow; ++j)
        for (int ch = 0; ch < c; ++ch) {
          const int sy = int(std::floor(double(i) * h / oh)),
                    sx = int(std::floor(double(j) * w / ow));
          y[((int64_t(b) * oh + i) * ow + j) * c + ch] =
              double(x[((int64_t(b) * h + sy) * w + sx) * c + ch]);
        }
  return y;
}

// The adjoint of the forward, as a scatter: each output pixel sends dy to the pixel it read.
template <typename T>
std::vector<double> resize_nearest_backward(int n, int h, int w, int c, int oh, int ow,
                                            const T* dy) {
  std::vector<double> dx(int64_t(n) * h * w * c, 0.0);
  for (int b = 0; b < n; ++b)
    for (int i = 0; i < oh; ++i)
      for (int j = 0; j < ow; ++j)
        for (int ch = 0; ch < c; ++ch) {
          const int sy = int(std::floor(double(i) * h / oh)),
                    sx = int(std::floor(double(j) * w / ow));
          dx[((int64_t(b) * h + sy) * w + sx) * c + ch] +=
              double(dy[((int64_t(b) * oh + i) * ow + j) * c + ch]);
        }
  return dx;
}

template <typename T>
std::vector<double> channel_resize(int64_t m, int c_from, int c_to, const T* x) {
  std::vector<double> y(m * c_to, 0.0);
  for (int64_t r = 0; r < m; ++r)
    for (int ch = 0; ch < std::min(c_from, c_to); ++ch)
      y[r * c_to + ch] = double(x[r * c_from + ch]);
  return y;
}
// Forward: channel_resize(m, c_in, c_out, x); backward: channel_resize(m, c_out, c_in, dy).

template <typename T>
std::vector<double> global_avg_pool_forward(int n, int hw, int c, const T* x) {
  std::vector<double> y(int64_t(n) * c, 0.0);
  for (int b = 0; b < n; ++b)
    for (int p = 0; p < hw; ++p)
      for (int ch = 0; ch < c; ++ch)
        y[int64_t(b) * c + ch] += double(x[(int64_t(b) * hw + p) * c + ch]) / hw;
  return y;
}

template <typename T>
std::vector<double> global_avg_pool_backward(int n, int hw, int c, const T* dy) {
  std::vector<double> dx(int64_t(n) * hw * c);
  for (int b = 0; b < n; ++b)
    for (int p = 0; p < hw; ++p)
      for (int ch = 0; ch < c; ++ch)
        dx[(int64_t(b) * hw + p) * c + ch] = double(dy[int64_t(b) * c + ch]) / hw;
  return dx;
}

// ---- fully connected, loss, optimiser ----------------------------------------------------

// y[N, out] = x[N, in] w[out, in]^T + b
template <typename T>
std::vector<double> fc_forward(int n, int in, int out, const T* x, const T* w, const T* b) {
  std::vector<double> y(int64_t(n) * out);
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < out; ++o) {
      double s = double(b[o]);
      for (int i = 0; i < in; ++i)
        s += double(x[int64_t(r) * in + i]) * double(w[int64_t(o) * in + i]);
      y[int64_t(r) * out + o] = s;
    }
  return y;
}

struct FcGrads {
  std::vector<double> dx, dw, db;
};

template <typename T>
FcGrads fc_backward(int n, int in, int out, const T* x, const T* w, const T* dy) {
  FcGrads g{std::vector<double>(int64_t(n) * in, 0.0), std::vector<double>(int64_t(out) * in, 0.0),
            std::vector<double>(out, 0.0)};
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < out; ++o) {
      const double d = double(dy[int64_t(r) * out + o]);
      g.db[o] += d;
      for (int i = 0; i < in; ++i) {
        g.dx[int64_t(r) * in + i] += d * double(w[int64_t(o) * in + i]);
        g.dw[int64_t(o) * in + i] += d * double(x[int64_t(r) * in + i]);
      }
    }
  return g;
}

struct SoftmaxCrossEntropy {
  double loss_sum = 0;
  int correct = 0;
  std::vector<double> dlogits;  // gradient of the mean loss
};

template <typename T>
SoftmaxCrossEntropy softmax_cross_entropy(int n, int classes, const T* logits,
                                          const int32_t* labels) {
  SoftmaxCrossEntropy out;
  out.dlogits.resize(int64_t(n) * classes);
  for (int r = 0; r < n; ++r) {
    const T* z = logits + int64_t(r) * classes;
    double zmax = double(z[0]);
    int arg = 0;
    for (int k = 1; k < classes; ++k)
      if (double(z[k]) > zmax) zmax = double(z[k]), arg = k;
    double sum = 0;
    for (int k = 0; k < classes; ++k) sum += std::exp(double(z[k]) - zmax);
    out.loss_sum += -(double(z[labels[r]]) - zmax - std::log(sum));
    out.correct += arg == labels[r];
    for (int k = 0; k < classes; ++k)
      out.dlogits[int64_t(r) * classes + k] =
          (std::exp(double(z[k]) - zmax) / sum - (k == labels[r] ? 1.0 : 0.0)) / n;
  }
  return out;
}

struct SgdState {
  std::vector<double> w, v;
};

template <typename T>
SgdState sgd_update(int64_t n, double lr, double momentum, double weight_decay, const T* w,
                    const T* g, const T* v) {
  SgdState s{std::vector<double>(n), std::vector<double>(n)};
  for (int64_t i = 0; i < n; ++i) {
    s.v[i] = momentum * double(v[i]) + (double(g[i]) + weight_decay * double(w[i]));
    s.w[i] = double(w[i]) - lr * s.v[i];
  }
  return s;
}

// ---- randomness (the mapping documented in evo/draws.h, computed in double) ---------------

inline std::vector<double> he_init(int64_t n, int fan_in, const PhiloxState& rng) {
  std::vector<double> w(n);
  const double kPi = 3.14159265358979323846;
  for (int64_t i = 0; i < n; ++i) {
    const Philox4 b = rng.block(uint64_t(i / 2));
    const double u1 = 1.0 - double(b.v[0] >> 8) / 16777216.0;
    const double u2 = double(b.v[1] >> 8) / 16777216.0;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double z = i % 2 == 0 ? r * std::cos(2 * kPi * u2) : r * std::sin(2 * kPi * u2);
    w[i] = z * std::sqrt(2.0 / fan_in);
  }
  return w;
}

inline std::vector<double> augment_batch(const uint8_t* images, const int32_t* indices, int n,
                                         int h, int w, int c, int pad, bool flip, const float* mean,
                                         const float* inv_std, const PhiloxState& rng) {
  std::vector<double> out(int64_t(n) * h * w * c);
  for (int i = 0; i < n; ++i) {
    const Philox4 b = rng.block(uint64_t(i));
    const int crop_y = int(b.v[0] % uint32_t(2 * pad + 1));
    const int crop_x = int(b.v[1] % uint32_t(2 * pad + 1));
    const bool mirror = flip && b.v[2] % 2 == 1;
    // The padded image is (H + 2 pad) x (W + 2 pad) with the original at (pad, pad).
    const int ph = h + 2 * pad, pw = w + 2 * pad;
    std::vector<double> padded(int64_t(ph) * pw * c, 0.0);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < c; ++ch)
          padded[(int64_t(y + pad) * pw + x + pad) * c + ch] =
              images[((int64_t(indices[i]) * h + y) * w + x) * c + ch];
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int cx = mirror ? w - 1 - x : x;  // mirror the cropped window
        for (int ch = 0; ch < c; ++ch) {
          const double v = padded[(int64_t(y + crop_y) * pw + cx + crop_x) * c + ch];
          out[((int64_t(i) * h + y) * w + x) * c + ch] = (v / 255.0 - mean[ch]) * inv_std[ch];
        }
      }
  }
  return out;
}

// ---- finite differences ------------------------------------------------------------------

// Central differences of a scalar function f at x, in double: what every backward is checked
// against on small shapes. h = 1e-3 is exact up to rounding for the linear ops; smooth
// non-linear ones (batch norm, softmax) want ~1e-5.
template <typename F>
std::vector<double> numeric_gradient(std::vector<double> x, F f, double h) {
  std::vector<double> grad(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = f(x);
    x[i] = saved - h;
    const double minus = f(x);
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

// sum_i a[i] * b[i]: turns an op's output into the scalar loss sum(y * dy), whose gradient with
// respect to the op's inputs is what the backward pass computes for upstream gradient dy.
template <typename T>
double dot(const std::vector<double>& a, const std::vector<T>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * double(b[i]);
  return s;
}

// ---- convolution shapes the CPU and GPU tests share ---------------------------------------

inline ConvGeometry geometry(int n, int h, int w, int c_in, int c_out, int kh, int kw, int stride) {
  ConvGeometry g;
  g.n = n, g.h = h, g.w = w, g.c_in = c_in, g.c_out = c_out, g.kh = kh, g.kw = kw,
  g.stride = stride;
  return g;
}

inline std::string describe(const ConvGeometry& g) {
  char text[96];
  std::snprintf(text, sizeof text, "n%d %dx%d %d->%d k%dx%d s%d", g.n, g.h, g.w, g.c_in, g.c_out,
                g.kh, g.kw, g.stride);
  return text;
}

// Fixed shapes covering what every convolution must handle: 1x1, 1xK, Kx1 and 7x7 filters;
// strides 1, 2, 4; odd spatial sizes; 1, 3, 17 and 130 channels; filters wider than the image.
// Each test appends the shapes of its own implementation's paths.
inline std::vector<ConvGeometry> common_conv_cases() {
  return {
      geometry(2, 7, 7, 3, 17, 3, 3, 1),   geometry(1, 5, 5, 17, 3, 1, 1, 1),
      geometry(2, 9, 7, 1, 5, 1, 3, 1),    geometry(2, 7, 9, 4, 6, 3, 1, 2),
      geometry(1, 7, 7, 130, 17, 7, 7, 1), geometry(2, 11, 11, 17, 130, 3, 3, 2),
      geometry(2, 7, 7, 3, 8, 5, 5, 4),    geometry(1, 5, 5, 3, 2, 7, 7, 1),
      geometry(3, 1, 1, 5, 4, 3, 3, 1),    geometry(2, 8, 8, 16, 16, 1, 7, 1),
      geometry(2, 9, 9, 17, 3, 7, 1, 2),   geometry(1, 6, 5, 130, 130, 1, 1, 2),
      geometry(1, 13, 13, 1, 1, 3, 3, 4),
  };
}

// `count` fresh random shapes (batch 1-3, sides 1..max_side, channels from 1 to 130, filters
// 1-7, strides 1-4) drawn with `gen`, so every run also tries shapes nobody listed.
template <typename Gen>
std::vector<ConvGeometry> random_conv_cases(Gen& gen, int count, int max_side) {
  const int channels[] = {1, 2, 3, 8, 17, 32, 130};
  const int kernels[] = {1, 3, 5, 7};
  const int strides[] = {1, 2, 4};
  auto pick = [&](const auto& options) {
    return options[std::uniform_int_distribution<std::size_t>(0, std::size(options) - 1)(gen)];
  };
  std::uniform_int_distribution<int> batch(1, 3), side(1, max_side);
  std::vector<ConvGeometry> cases;
  for (int i = 0; i < count; ++i) {
    const int n = batch(gen), h = side(gen), w = side(gen);
    const int c_in = pick(channels), c_out = pick(channels);
    const int kh = pick(kernels), kw = pick(kernels);
    cases.push_back(geometry(n, h, w, c_in, c_out, kh, kw, pick(strides)));
  }
  return cases;
}

// The shapes a convolution test runs: the common ones, then `own` (the shapes of that
// implementation's own paths), then `random_count` fresh random ones.
template <typename Gen>
std::vector<ConvGeometry> conv_cases(std::initializer_list<ConvGeometry> own, Gen& gen,
                                     int random_count, int max_side) {
  std::vector<ConvGeometry> cases = common_conv_cases();
  cases.insert(cases.end(), own);
  for (const ConvGeometry& g : random_conv_cases(gen, random_count, max_side)) cases.push_back(g);
  return cases;
}

// Float sums of `terms` products of values in [-1, 1], in any order: errors grow like sqrt(terms).
inline double conv_atol(int64_t terms) {
  return 2e-5 * std::sqrt(double(terms));
}
constexpr double kConvRtol = 1e-4;

}  // namespace evo::ref
