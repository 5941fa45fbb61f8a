// Tests of the CPU ops other than convolution (batch norm, ReLU, add_n, resizes, pooling, fully
// connected, loss, SGD, He init, augmentation) against tests/reference.h and finite differences.
// Not convolution (test_ops_cpu_conv.cpp) and not speed (bench/).
#include <omp.h>

#include <cmath>
#include <map>
#include <set>
#include <string>

#include "evo/error.h"
#include "evo/ops.h"
#include "reference.h"
#include "support.h"

using namespace evo;

namespace {

std::vector<float> poisoned(std::size_t n) {
  return std::vector<float>(n, NAN);
}

std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

// Values in [-1, 1] whose magnitude is at least `gap`: away from ReLU's kink, where a finite
// difference straddling 0 would be meaningless.
std::vector<float> random_away_from_zero(std::size_t n, float gap = 0.05f) {
  std::vector<float> v = test::random_vector(n, gap, 1.f);
  std::bernoulli_distribution sign(0.5);
  for (float& x : v)
    if (sign(test::rng())) x = -x;
  return v;
}

int random_int(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(test::rng());
}

struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

// ---- batch norm ------------------------------------------------------------------------------

TEST_CASE("CPU batch norm forward (training and inference) matches double loops", "[batchnorm]") {
  Context ctx(Device::cpu());
  // (rows m = N*H*W, channels): odd sizes, 1/3/17/130 channels, and enough rows for several
  // reduction blocks and threads.
  const std::pair<int64_t, int> shapes[] = {{2 * 5 * 5, 17}, {130, 3},   {7, 130}, {50 * 7 * 7, 1},
                                            {3 * 9 * 9, 64}, {20000, 5}, {2, 3}};
  for (auto [m, c] : shapes)
    for (bool relu : {false, true}) {
      INFO("m " << m << " c " << c << " relu " << relu);
      // A mean far from zero checks that the variance does not cancel away.
      std::vector<float> x = test::random_vector(m * c, -2.f, 2.f);
      for (int64_t r = 0; r < m; ++r)
        for (int ch = 0; ch < c; ++ch) x[r * c + ch] += float(ch % 5) * 3.f;
      const std::vector<float> gamma = test::random_vector(c, 0.5f, 1.5f);
      const std::vector<float> beta = test::random_vector(c);
      const std::vector<float> rm0 = test::random_vector(c),
                               rv0 = test::random_vector(c, 0.5f, 2.f);
      std::vector<float> rm = rm0, rv = rv0;
      std::vector<float> y = poisoned(m * c), mean = poisoned(c), invstd = poisoned(c);
      cpu::batchnorm_forward_train(ctx, m, c, x.data(), gamma.data(), beta.data(), relu, y.data(),
                                   mean.data(), invstd.data(), rm.data(), rv.data());
      const ref::BatchNormTrain r = ref::batchnorm_forward_train(
          m, c, x.data(), gamma.data(), beta.data(), relu, rm0.data(), rv0.data());
      // y is normalised around the float save_mean that ops.h stores, whose rounding
      // (|mean| * 2^-24) is magnified by gamma * invstd: that is float's limit, not an error.
      double amplification = 0;
      for (int ch = 0; ch < c; ++ch)
        amplification = std::max(amplification, std::fabs(r.mean[ch] * r.invstd[ch] * gamma[ch]));
      const double y_atol = 1e-5 + 2 * amplification / 16777216.0;
      CHECK(test::all_close(y, r.y, y_atol, 1e-5, "y"));
      CHECK(test::all_close(mean, r.mean, 1e-6, 1e-6, "save_mean"));
      CHECK(test::all_close(invstd, r.invstd, 1e-6, 1e-5, "save_invstd"));
      CHECK(test::all_close(rm, r.running_mean, 1e-6, 1e-6, "running_mean"));
      CHECK(test::all_close(rv, r.running_var, 1e-6, 1e-5, "running_var"));

      std::vector<float> yi = poisoned(m * c);
      cpu::batchnorm_forward_infer(ctx, m, c, x.data(), gamma.data(), beta.data(), rm.data(),
                                   rv.data(), relu, yi.data());
      CHECK(test::all_close(yi,
                            ref::batchnorm_forward_infer(m, c, x.data(), gamma.data(), beta.data(),
                                                         rm.data(), rv.data(), relu),
                            1e-5, 1e-5, "inference y"));
    }
}

TEST_CASE("CPU batch norm backward matches double loops and finite differences", "[batchnorm]") {
  Context ctx(Device::cpu());
  for (bool relu : {false, true}) {
    // Large shapes against the reference backward; small ones also against finite differences.
    const std::tuple<int64_t, int, bool> shapes[] = {
        {2 * 5 * 5, 17, false}, {7, 130, false}, {50 * 8 * 8, 32, false}, {3 * 7 * 7, 3, false},
        {3 * 3 * 3, 2, true},   {5, 3, true},    {2 * 2 * 2, 1, true}};
    for (auto [m, c, fd] : shapes) {
      INFO("m " << m << " c " << c << " relu " << relu);
      const std::vector<float> x = test::random_vector(m * c, -2.f, 2.f);
      const std::vector<float> gamma = test::random_vector(c, 0.5f, 1.5f);
      const std::vector<float> beta = test::random_vector(c, -0.5f, 0.5f);
      const std::vector<float> dy = test::random_vector(m * c);
      std::vector<float> rm(c, 0.f), rv(c, 1.f), y(m * c), mean(c), invstd(c);
      cpu::batchnorm_forward_train(ctx, m, c, x.data(), gamma.data(), beta.data(), relu, y.data(),
                                   mean.data(), invstd.data(), rm.data(), rv.data());
      std::vector<float> dx = poisoned(m * c), dgamma = poisoned(c), dbeta = poisoned(c);
      cpu::batchnorm_backward(ctx, m, c, x.data(), y.data(), dy.data(), gamma.data(), mean.data(),
                              invstd.data(), relu, dx.data(), dgamma.data(), dbeta.data());
      const ref::BatchNormGrads r =
          ref::batchnorm_backward(m, c, x.data(), y.data(), dy.data(), gamma.data(), relu);
      CHECK(test::all_close(dx, r.dx, 1e-5, 1e-4, "dx"));
      CHECK(test::all_close(dgamma, r.dgamma, 1e-4, 1e-5, "dgamma"));
      CHECK(test::all_close(dbeta, r.dbeta, 1e-4, 1e-5, "dbeta"));
      if (!fd) continue;
      // loss = sum(bn(x; gamma, beta) * dy) in double; the running statistics do not matter.
      const std::vector<double> xd = to_double(x), gd = to_double(gamma), bd = to_double(beta);
      auto loss = [&](const std::vector<double>& xv, const std::vector<double>& gv,
                      const std::vector<double>& bv) {
        return ref::dot(ref::batchnorm_forward_train(m, c, xv.data(), gv.data(), bv.data(), relu,
                                                     rm.data(), rv.data())
                            .y,
                        dy);
      };
      const double h = 1e-6;
      const std::vector<double> dx_fd = ref::numeric_gradient(
          xd, [&](const auto& v) { return loss(v, gd, bd); }, h);
      const std::vector<double> dgamma_fd = ref::numeric_gradient(
          gd, [&](const auto& v) { return loss(xd, v, bd); }, h);
      const std::vector<double> dbeta_fd = ref::numeric_gradient(
          bd, [&](const auto& v) { return loss(xd, gd, v); }, h);
      CHECK(test::all_close(dx, dx_fd, 1e-4, 1e-3, "dx vs finite differences"));
      CHECK(test::all_close(dgamma, dgamma_fd, 1e-4, 1e-3, "dgamma vs finite differences"));
      CHECK(test::all_close(dbeta, dbeta_fd, 1e-4, 1e-3, "dbeta vs finite differences"));
    }
  }
}

TEST_CASE("CPU batch norm statistics do not depend on the thread count", "[batchnorm]") {
  Context ctx(Device::cpu());
  const int64_t m = 50 * 16 * 16;
  const int c = 24;
  const std::vector<float> x = test::random_vector(m * c), gamma = test::random_vector(c),
                           beta = test::random_vector(c);
  auto run = [&](int threads) {
    ThreadCount scoped(threads);
    std::vector<float> rm(c, 0.f), rv(c, 1.f), y(m * c), mean(c), invstd(c);
    cpu::batchnorm_forward_train(ctx, m, c, x.data(), gamma.data(), beta.data(), true, y.data(),
                                 mean.data(), invstd.data(), rm.data(), rv.data());
    return std::vector<std::vector<float>>{y, mean, invstd, rm, rv};
  };
  CHECK(run(1) == run(std::max(2, omp_get_max_threads())));
}

// ---- ReLU, add_n, resizes, pooling -------------------------------------------------------------

TEST_CASE("CPU ReLU forward and backward", "[elementwise]") {
  Context ctx(Device::cpu());
  for (int64_t n : {1, 17, 130, 100003}) {
    INFO("n " << n);
    const std::vector<float> x = random_away_from_zero(n), dy = test::random_vector(n);
    std::vector<float> y = poisoned(n), dx = poisoned(n);
    cpu::relu_forward(ctx, n, x.data(), y.data());
    CHECK(test::all_close(y, ref::relu_forward(n, x.data()), 0, 0, "y"));
    cpu::relu_backward(ctx, n, y.data(), dy.data(), dx.data());
    CHECK(test::all_close(dx, ref::relu_backward(n, y.data(), dy.data()), 0, 0, "dx"));
    if (n <= 130) {
      const std::vector<double> fd = ref::numeric_gradient(
          to_double(x),
          [&](const std::vector<double>& v) {
            return ref::dot(ref::relu_forward(n, v.data()), dy);
          },
          1e-3);
      CHECK(test::all_close(dx, fd, 1e-6, 1e-6, "dx vs finite differences"));
    }
    // In place, as the model runs it: x and y alias.
    std::vector<float> inplace = x;
    cpu::relu_forward(ctx, n, inplace.data(), inplace.data());
    CHECK(inplace == y);
  }
}

TEST_CASE("CPU add_n sums any number of inputs", "[elementwise]") {
  Context ctx(Device::cpu());
  for (int count : {1, 2, 3, 7})
    for (int64_t n : {1, 130, 70001}) {
      INFO("count " << count << " n " << n);
      std::vector<std::vector<float>> inputs;
      std::vector<const float*> ptrs;
      for (int j = 0; j < count; ++j) inputs.push_back(test::random_vector(n));
      for (const auto& v : inputs) ptrs.push_back(v.data());
      std::vector<float> y = poisoned(n);
      cpu::add_n(ctx, n, ptrs.data(), count, y.data());
      CHECK(test::all_close(y, ref::add_n(n, ptrs), 1e-6, 1e-6));
      // The output may be any one of the inputs.
      for (int j = 0; j < count; ++j) {
        std::vector<float> alias = inputs[j];
        std::vector<const float*> with_alias = ptrs;
        with_alias[j] = alias.data();
        cpu::add_n(ctx, n, with_alias.data(), count, alias.data());
        CHECK(alias == y);
      }
    }
}

TEST_CASE("CPU nearest resize forward and its gather backward", "[resize]") {
  Context ctx(Device::cpu());
  // (n, h, w, c, oh, ow): down, up, non-integer ratios, odd sizes, identity.
  const std::array<int, 6> shapes[] = {
      {2, 8, 8, 3, 4, 4},    {1, 7, 7, 17, 4, 4}, {2, 5, 5, 1, 7, 7},
      {1, 4, 6, 130, 9, 5},  {3, 7, 5, 3, 3, 2},  {1, 6, 6, 2, 6, 6},
      {2, 32, 32, 17, 8, 8}, {1, 1, 1, 4, 5, 3},  {2, 9, 9, 3, 1, 1}};
  for (auto [n, h, w, c, oh, ow] : shapes) {
    INFO(n << "x" << h << "x" << w << "x" << c << " -> " << oh << "x" << ow);
    const std::vector<float> x = test::random_vector(int64_t(n) * h * w * c);
    const std::vector<float> dy = test::random_vector(int64_t(n) * oh * ow * c);
    std::vector<float> y = poisoned(dy.size()), dx = poisoned(x.size());
    cpu::resize_nearest_forward(ctx, n, h, w, c, oh, ow, x.data(), y.data());
    CHECK(test::all_close(y, ref::resize_nearest_forward(n, h, w, c, oh, ow, x.data()), 0, 0, "y"));
    cpu::resize_nearest_backward(ctx, n, h, w, c, oh, ow, dy.data(), dx.data());
    CHECK(test::all_close(dx, ref::resize_nearest_backward(n, h, w, c, oh, ow, dy.data()), 1e-6,
                          1e-6, "dx"));
    if (x.size() <= 2000) {
      const std::vector<double> fd = ref::numeric_gradient(
          to_double(x),
          [&](const std::vector<double>& v) {
            return ref::dot(ref::resize_nearest_forward(n, h, w, c, oh, ow, v.data()), dy);
          },
          1e-3);
      CHECK(test::all_close(dx, fd, 1e-6, 1e-6, "dx vs finite differences"));
    }
  }
}

TEST_CASE("CPU channel truncate / zero-pad, forward and backward", "[resize]") {
  Context ctx(Device::cpu());
  const std::array<int, 3> shapes[] = {{50, 17, 3},  {7, 3, 17}, {13, 130, 130}, {1, 1, 130},
                                       {25, 130, 1}, {9, 5, 6},  {4096, 32, 64}};
  for (auto [m, c_in, c_out] : shapes) {
    INFO("m " << m << " " << c_in << " -> " << c_out);
    const std::vector<float> x = test::random_vector(int64_t(m) * c_in);
    const std::vector<float> dy = test::random_vector(int64_t(m) * c_out);
    std::vector<float> y = poisoned(dy.size()), dx = poisoned(x.size());
    cpu::channel_resize_forward(ctx, m, c_in, c_out, x.data(), y.data());
    CHECK(test::all_close(y, ref::channel_resize(m, c_in, c_out, x.data()), 0, 0, "y"));
    cpu::channel_resize_backward(ctx, m, c_in, c_out, dy.data(), dx.data());
    CHECK(test::all_close(dx, ref::channel_resize(m, c_out, c_in, dy.data()), 0, 0, "dx"));
    if (x.size() <= 2000) {
      const std::vector<double> fd = ref::numeric_gradient(
          to_double(x),
          [&](const std::vector<double>& v) {
            return ref::dot(ref::channel_resize(m, c_in, c_out, v.data()), dy);
          },
          1e-3);
      CHECK(test::all_close(dx, fd, 1e-6, 1e-6, "dx vs finite differences"));
    }
  }
}

TEST_CASE("CPU global average pool forward and backward", "[pool]") {
  Context ctx(Device::cpu());
  const std::array<int, 3> shapes[] = {
      {2, 25, 17}, {1, 49, 3}, {3, 1, 130}, {50, 64, 256}, {2, 9, 1}, {3, 784, 1}, {2, 53, 8}};
  for (auto [n, hw, c] : shapes) {
    INFO(n << " x " << hw << " x " << c);
    const std::vector<float> x = test::random_vector(int64_t(n) * hw * c);
    const std::vector<float> dy = test::random_vector(int64_t(n) * c);
    std::vector<float> y = poisoned(dy.size()), dx = poisoned(x.size());
    cpu::global_avg_pool_forward(ctx, n, hw, c, x.data(), y.data());
    CHECK(test::all_close(y, ref::global_avg_pool_forward(n, hw, c, x.data()), 1e-6, 1e-5, "y"));
    cpu::global_avg_pool_backward(ctx, n, hw, c, dy.data(), dx.data());
    CHECK(
        test::all_close(dx, ref::global_avg_pool_backward(n, hw, c, dy.data()), 1e-7, 1e-6, "dx"));
    if (x.size() <= 2000) {
      const std::vector<double> fd = ref::numeric_gradient(
          to_double(x),
          [&](const std::vector<double>& v) {
            return ref::dot(ref::global_avg_pool_forward(n, hw, c, v.data()), dy);
          },
          1e-3);
      CHECK(test::all_close(dx, fd, 1e-6, 1e-5, "dx vs finite differences"));
    }
  }
}

// ---- fully connected, loss, SGD -------------------------------------------------------------

TEST_CASE("CPU fully connected forward and backward", "[fc]") {
  Context ctx(Device::cpu());
  const std::array<int, 3> shapes[] = {
      {50, 130, 10}, {1, 3, 17}, {7, 1, 1}, {3, 17, 5}, {256, 256, 100}};
  for (auto [n, in, out] : shapes) {
    INFO(n << " x " << in << " -> " << out);
    const std::vector<float> x = test::random_vector(int64_t(n) * in),
                             w = test::random_vector(int64_t(out) * in),
                             b = test::random_vector(out),
                             dy = test::random_vector(int64_t(n) * out);
    std::vector<float> y = poisoned(int64_t(n) * out);
    cpu::fc_forward(ctx, n, in, out, x.data(), w.data(), b.data(), y.data());
    const double atol = 2e-5 * std::sqrt(double(in)), atol_n = 2e-5 * std::sqrt(double(n));
    CHECK(test::all_close(y, ref::fc_forward(n, in, out, x.data(), w.data(), b.data()), atol, 1e-4,
                          "y"));
    std::vector<float> dx = poisoned(x.size()), dw = poisoned(w.size()), db = poisoned(out);
    cpu::fc_backward(ctx, n, in, out, x.data(), w.data(), dy.data(), dx.data(), dw.data(),
                     db.data());
    const ref::FcGrads r = ref::fc_backward(n, in, out, x.data(), w.data(), dy.data());
    CHECK(test::all_close(dx, r.dx, 2e-5 * std::sqrt(double(out)), 1e-4, "dx"));
    CHECK(test::all_close(dw, r.dw, atol_n, 1e-4, "dw"));
    CHECK(test::all_close(db, r.db, atol_n, 1e-4, "db"));
    // Without dx (the first layer's input needs no gradient) the rest is unchanged.
    std::vector<float> dw2 = poisoned(w.size()), db2 = poisoned(out);
    cpu::fc_backward(ctx, n, in, out, x.data(), w.data(), dy.data(), nullptr, dw2.data(),
                     db2.data());
    CHECK(dw2 == dw);
    CHECK(db2 == db);
    if (x.size() + w.size() <= 3000) {
      const std::vector<double> xd = to_double(x), wd = to_double(w), bd = to_double(b);
      auto loss = [&](const std::vector<double>& xv, const std::vector<double>& wv,
                      const std::vector<double>& bv) {
        return ref::dot(ref::fc_forward(n, in, out, xv.data(), wv.data(), bv.data()), dy);
      };
      const std::vector<double> dx_fd = ref::numeric_gradient(
          xd, [&](const auto& v) { return loss(v, wd, bd); }, 1e-3);
      const std::vector<double> dw_fd = ref::numeric_gradient(
          wd, [&](const auto& v) { return loss(xd, v, bd); }, 1e-3);
      const std::vector<double> db_fd = ref::numeric_gradient(
          bd, [&](const auto& v) { return loss(xd, wd, v); }, 1e-3);
      CHECK(test::all_close(dx, dx_fd, 1e-5, 1e-4, "dx vs finite differences"));
      CHECK(test::all_close(dw, dw_fd, 1e-5, 1e-4, "dw vs finite differences"));
      CHECK(test::all_close(db, db_fd, 1e-5, 1e-4, "db vs finite differences"));
    }
  }
}

TEST_CASE("CPU softmax cross-entropy: loss, correct count and gradient", "[loss]") {
  Context ctx(Device::cpu());
  const std::pair<int, int> shapes[] = {{50, 10}, {1, 3}, {7, 100}, {256, 10}, {3, 1}};
  for (auto [n, classes] : shapes) {
    INFO(n << " x " << classes);
    std::vector<float> logits = test::random_vector(int64_t(n) * classes, -4.f, 4.f);
    std::vector<int32_t> labels(n);
    for (int32_t& l : labels) l = random_int(0, classes - 1);
    // Make some rows right on purpose so `correct` is neither 0 nor n by accident.
    for (int r = 0; r < n; r += 3) logits[int64_t(r) * classes + labels[r]] = 9.f;
    LossResult result{NAN, -1};
    std::vector<float> dlogits = poisoned(logits.size());
    cpu::softmax_cross_entropy(ctx, n, classes, logits.data(), labels.data(), &result,
                               dlogits.data());
    const ref::SoftmaxCrossEntropy r =
        ref::softmax_cross_entropy(n, classes, logits.data(), labels.data());
    CHECK(test::all_close(std::vector<float>{result.loss_sum}, std::vector<double>{r.loss_sum},
                          1e-5, 1e-5, "loss"));
    CHECK(result.correct == r.correct);
    CHECK(test::all_close(dlogits, r.dlogits, 1e-7, 1e-5, "dlogits"));
    // Without dlogits: the same result, nothing else written.
    LossResult only{NAN, -1};
    cpu::softmax_cross_entropy(ctx, n, classes, logits.data(), labels.data(), &only, nullptr);
    CHECK(only.loss_sum == result.loss_sum);
    CHECK(only.correct == result.correct);
    if (n * classes <= 1000) {
      const std::vector<double> fd = ref::numeric_gradient(
          to_double(logits),
          [&](const std::vector<double>& v) {
            return ref::softmax_cross_entropy(n, classes, v.data(), labels.data()).loss_sum / n;
          },
          1e-5);
      CHECK(test::all_close(dlogits, fd, 1e-6, 1e-4, "dlogits vs finite differences"));
    }
  }
  // Huge logits stay finite (the row maximum is subtracted before exp).
  std::vector<float> big = {1000.f, -1000.f, 999.f};
  std::vector<int32_t> label = {2};
  LossResult result{};
  std::vector<float> d(3);
  cpu::softmax_cross_entropy(ctx, 1, 3, big.data(), label.data(), &result, d.data());
  CHECK(result.loss_sum == Approx(1.0 + std::log1p(std::exp(-1.0))).epsilon(1e-6));
  CHECK(result.correct == 0);
  CHECK(std::isfinite(d[0]));
  // Ties go to the first maximum, on every backend (the CUDA kernels must break them the same way).
  std::vector<float> tie = {0.5f, 2.f, 2.f};
  for (int32_t l : {1, 2}) {
    label = {l};
    cpu::softmax_cross_entropy(ctx, 1, 3, tie.data(), label.data(), &result, nullptr);
    CHECK(result.correct == (l == 1 ? 1 : 0));
  }
  // A label outside the classes is an error with a message, not a wild read.
  label = {3};
  CHECK_THROWS_WITH(
      cpu::softmax_cross_entropy(ctx, 1, 3, big.data(), label.data(), &result, d.data()),
      Catch::Contains("label 3"));
}

TEST_CASE("CPU SGD with momentum and weight decay", "[sgd]") {
  Context ctx(Device::cpu());
  for (int64_t n : {1, 17, 100003}) {
    INFO("n " << n);
    std::vector<float> w = test::random_vector(n), v = test::random_vector(n);
    const std::vector<float> g = test::random_vector(n);
    const float lr = 0.1f, momentum = 0.9f, decay = 1e-4f;
    const ref::SgdState r = ref::sgd_update(n, lr, momentum, decay, w.data(), g.data(), v.data());
    cpu::sgd_update(ctx, n, lr, momentum, decay, w.data(), g.data(), v.data());
    CHECK(test::all_close(v, r.v, 1e-6, 1e-6, "v"));
    CHECK(test::all_close(w, r.w, 1e-6, 1e-6, "w"));
  }
}

// ---- randomness ------------------------------------------------------------------------------

TEST_CASE("CPU He init draws the documented Philox numbers with the right moments", "[init]") {
  Context ctx(Device::cpu());
  PhiloxState rng{std::uniform_int_distribution<uint64_t>()(test::rng()), 7, 0};
  for (auto [n, fan_in] : {std::pair<int64_t, int>{1, 1}, {3, 27}, {4608, 288}, {200001, 1152}}) {
    INFO("n " << n << " fan_in " << fan_in);
    const PhiloxState state = rng.take((uint64_t(n) + 1) / 2);
    std::vector<float> w = poisoned(n);
    cpu::he_init(ctx, n, fan_in, state, w.data());
    CHECK(test::all_close(w, ref::he_init(n, fan_in, state), 1e-6, 1e-5));
    if (n > 100000) {
      double sum = 0, sq = 0;
      for (float v : w) sum += v, sq += double(v) * v;
      const double mean = sum / n, std = std::sqrt(sq / n - mean * mean),
                   want = std::sqrt(2.0 / fan_in);
      CHECK(std::fabs(mean) < 5 * want / std::sqrt(double(n)));
      CHECK(std::fabs(std / want - 1) < 0.01);
    }
    // A pure function of (state, i): same state, same bits; the next state, other numbers.
    std::vector<float> again(n);
    cpu::he_init(ctx, n, fan_in, state, again.data());
    CHECK(again == w);
    if (n > 1) {
      std::vector<float> other(n);
      cpu::he_init(ctx, n, fan_in, rng, other.data());
      CHECK(other != w);
    }
  }
  std::vector<float> w(4);
  CHECK_THROWS_WITH(cpu::he_init(ctx, 4, 0, rng, w.data()), Catch::Contains("fan_in 0"));
}

namespace {
// Every (pad, flip) setting against the reference, on a fresh set of `count` random images.
void check_augment_against_reference(Context& ctx, int count, int h, int w, int c,
                                     const std::vector<float>& mean,
                                     const std::vector<float>& inv_std, const PhiloxState& rng,
                                     const std::vector<int32_t>& indices) {
  std::vector<uint8_t> images(int64_t(count) * h * w * c);
  for (uint8_t& p : images) p = uint8_t(random_int(0, 255));
  const int n = int(indices.size());
  for (auto [pad, flip] : {std::pair{4, true}, {0, false}, {2, false}, {0, true}, {1, true}}) {
    INFO("c " << c << " pad " << pad << " flip " << flip);
    std::vector<float> out = poisoned(int64_t(n) * h * w * c);
    cpu::augment_batch(ctx, images.data(), indices.data(), n, h, w, c, pad, flip, mean.data(),
                       inv_std.data(), rng, out.data());
    CHECK(test::all_close(out,
                          ref::augment_batch(images.data(), indices.data(), n, h, w, c, pad, flip,
                                             mean.data(), inv_std.data(), rng),
                          1e-5, 1e-6));
  }
}
}  // namespace

TEST_CASE("CPU augmentation: pad, random crop, random flip, standardisation", "[augment]") {
  Context ctx(Device::cpu());
  const int count = 20, h = 8, w = 7, c = 3;
  std::vector<uint8_t> images(int64_t(count) * h * w * c);
  for (uint8_t& p : images) p = uint8_t(random_int(0, 255));
  const std::vector<float> mean = {0.49f, 0.48f, 0.45f},
                           inv_std = {1 / 0.25f, 1 / 0.24f, 1 / 0.26f};
  const PhiloxState rng{std::uniform_int_distribution<uint64_t>()(test::rng()), 3, 11};
  std::vector<int32_t> indices(2000);
  for (int32_t& i : indices) i = random_int(0, count - 1);
  const int n = int(indices.size());
  check_augment_against_reference(ctx, count, h, w, c, mean, inv_std, rng, indices);
  // One channel (Fashion-MNIST, MNIST) has its own vector loop for unflipped rows.
  check_augment_against_reference(ctx, count, 11, 13, 1, {0.29f}, {1 / 0.35f}, rng, indices);

  // Properties that do not lean on the draw mapping: every crop offset and both flips occur, and
  // pad 0 without flip is the plain standardised image.
  std::vector<float> plain(int64_t(n) * h * w * c);
  cpu::augment_batch(ctx, images.data(), indices.data(), n, h, w, c, 0, false, mean.data(),
                     inv_std.data(), rng, plain.data());
  for (int i = 0; i < 3; ++i)
    for (int64_t p = 0; p < int64_t(h) * w * c; ++p)
      CHECK(plain[i * int64_t(h) * w * c + p] ==
            Approx((images[indices[i] * int64_t(h) * w * c + p] / 255.0 - mean[p % c]) *
                   inv_std[p % c])
                .margin(1e-5));
  std::vector<float> flipped(plain.size());
  cpu::augment_batch(ctx, images.data(), indices.data(), n, h, w, c, 0, true, mean.data(),
                     inv_std.data(), rng, flipped.data());
  int mirrored = 0;
  for (int i = 0; i < n; ++i) {
    bool same = true, mirror = true;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < c; ++ch) {
          const float f = flipped[((int64_t(i) * h + y) * w + x) * c + ch];
          same &= f == plain[((int64_t(i) * h + y) * w + x) * c + ch];
          mirror &= f == plain[((int64_t(i) * h + y) * w + (w - 1 - x)) * c + ch];
        }
    CHECK((same || mirror));
    mirrored += mirror && !same;
  }
  CHECK(mirrored > n * 4 / 10);
  CHECK(mirrored < n * 6 / 10);
  // With pad 4, the shift of each image shows in where its black (padded) border lies.
  std::vector<float> shifted(plain.size());
  const int pad = 4;
  cpu::augment_batch(ctx, images.data(), indices.data(), n, h, w, c, pad, false, mean.data(),
                     inv_std.data(), rng, shifted.data());
  std::set<std::pair<int, int>> offsets;
  for (int i = 0; i < n; ++i) {
    // Find the offset (dy, dx) in [-pad, pad]^2 that explains image i.
    for (int dy = -pad; dy <= pad; ++dy)
      for (int dx = -pad; dx <= pad; ++dx) {
        bool match = true;
        for (int y = 0; y < h && match; ++y)
          for (int x = 0; x < w && match; ++x)
            for (int ch = 0; ch < c && match; ++ch) {
              const int sy = y + dy, sx = x + dx;
              const double v = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                                   ? images[((int64_t(indices[i]) * h + sy) * w + sx) * c + ch]
                                   : 0.0;
              match = std::fabs(shifted[((int64_t(i) * h + y) * w + x) * c + ch] -
                                (v / 255.0 - mean[ch]) * inv_std[ch]) < 1e-4;
            }
        if (match) offsets.insert({dy, dx});
      }
  }
  CHECK(offsets.size() == std::size_t((2 * pad + 1) * (2 * pad + 1)));
  CHECK_THROWS_AS(cpu::augment_batch(ctx, images.data(), indices.data(), 1, h, w, c, -1, false,
                                     mean.data(), inv_std.data(), rng, shifted.data()),
                  Error);
}
